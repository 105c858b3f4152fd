//! Issue #12 point 2, exactly as reported: approve attempt 1 times out (it may have been
//! applied), attempt 2 meets a refused connection ("certainly not applied"). The payment
//! must stay `APPROVING` — unknown — until Kakao Pay's record settles it; it used to go
//! back to `READY`, forgetting a charge that may have gone through.
//!
//! Against a real PostgreSQL (`POSTGRES_URL`) and a Kakao Pay that holds the first
//! connection without answering and then stops listening.

use diesel::Connection;
use kakaopay::{KakaoPayClient, KakaoPayConfig};
use payment::checkout::{Checkout, CheckoutError};
use payment::gateway::{CallbackUrls, Gateway};
use payment::persistence::PaymentDb;
use payment::store::PaymentStatements;
use shared_events::outbox::Outbox;
use shared_events::retry::Backoff;
use shared_events::{LineItem, OrderSnapshot, Topics};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use uuid::Uuid;

fn order() -> OrderSnapshot {
    OrderSnapshot {
        customer_id: "kim".into(),
        customer_email: "kim@example.com".into(),
        locale: "ko".into(),
        items: vec![LineItem {
            name: "커피".into(),
            quantity: 1,
            unit_price: 4500,
        }],
        total_amount: 4500,
    }
}

/// A Kakao Pay that accepts one connection, reads the request and never answers, and
/// stops listening at once: every later connection is refused.
async fn answers_never_then_refuses() -> url::Url {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let address = listener.local_addr().expect("an address");
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.expect("attempt 1 connects");
        drop(listener);
        let mut request = [0u8; 8192];
        let _ = socket.read(&mut request).await;
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    format!("http://{address}").parse().expect("a URL")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_then_a_refused_connection_leaves_the_approval_unknown() {
    let server = std::env::var("POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned());
    let name = format!("payments_unclear_{}", Uuid::new_v4().simple());
    shared_events::db::create_database(&format!("{server}/postgres"), &name)
        .expect("a test database");
    let url = format!("{server}/{name}");
    let pool = shared_events::db::build_pool(&url, 4);
    shared_events::db::migrate(&pool, payment::MIGRATIONS)
        .await
        .expect("migrations");

    let payment_id = {
        let mut conn = diesel::PgConnection::establish(&url).expect("connects");
        let created = conn
            .create_requested(Uuid::now_v7(), &order(), "커피", 1)
            .await
            .expect("a payment");
        conn.mark_ready(created.id, "T0000000000000000001", "u", "m")
            .await
            .expect("ready")
            .expect("was REQUESTED");
        created.id
    };

    let db = PaymentDb::blocking(pool.clone());
    let client = KakaoPayClient::new(KakaoPayConfig {
        base_url: answers_never_then_refuses().await,
        secret_key: "DEV-test".to_owned().into(),
        cid: kakaopay::TEST_CID.to_owned(),
        timeout: Duration::from_millis(500),
    })
    .expect("a client");
    let checkout = Checkout {
        db: db.clone(),
        outbox: Outbox::new(Topics::with_prefix("unclear.")),
        gateway: Gateway::new(client, db.clone(), 2, Duration::from_millis(10)),
        urls: CallbackUrls::new(
            "http://127.0.0.1:1".parse().expect("a URL"),
            "http://127.0.0.1:2".parse().expect("a URL"),
        ),
        recheck: Backoff::default(),
    };

    let answer = checkout.approve(payment_id, "token").await;
    assert!(
        matches!(answer, Err(CheckoutError::OutcomePending)),
        "the shopper is told to wait: {answer:?}"
    );
    let payment = db.find(payment_id).await.expect("reads").expect("exists");
    assert_eq!(
        payment.status,
        payment::domain::PaymentStatus::Approving,
        "still unknown, not READY"
    );
    assert!(payment.approval_unclear_at.is_some(), "marked unclear");
    let outcomes: Vec<(String, String)> = checkout
        .gateway_calls(payment_id)
        .await
        .expect("gateway calls")
        .into_iter()
        .map(|c| (c.kind, c.outcome))
        .collect();
    assert_eq!(
        &outcomes[..2],
        [
            ("approve".to_owned(), "unknown".to_owned()),
            ("approve".to_owned(), "transient".to_owned())
        ],
        "attempt 1 timed out, attempt 2 was refused: {outcomes:?}"
    );

    drop(pool);
    let mut admin =
        diesel::PgConnection::establish(&format!("{server}/postgres")).expect("connects");
    let _ = diesel::RunQueryDsl::execute(
        diesel::sql_query(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")),
        &mut admin,
    );
}
