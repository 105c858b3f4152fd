//! The seed's experiment: the same shop in each of its architectures (`shared_events::Case`),
//! walked through the paid and the declined ending. Each run asserts what the shopper
//! sees — the order's final state, the mails in the Maildir — and the mail history in
//! the case's own store: PostgreSQL for the blocking mail service (cases 1 and 2),
//! MongoDB for the Tokio notifier (cases 3 and 4). Case 1 also shows it is one synchronous
//! chain: `POST /orders` already carries the redirect URL, and when the approval page
//! answers, the order is completed and both mails are in the Maildir.
//!
//! Add a case with one line in `cases!` at the bottom. Case 4's own tests (redelivery,
//! the reconciler, an unpaid cancel on the async adapter) are in `case4.rs`.

use e2e::{eventually, Options, Stack};
use kakaopay::sim::{Faults, SimConfig};
use notifier::domain::{DeliveryStatus, Notification};
use notifier::store::{HistoryStore, ListQuery};
use serde_json::Value;
use shared_events::Case;
use uuid::Uuid;

async fn spawn(case: Case, sim: SimConfig) -> Stack {
    Stack::spawn_with(
        sim,
        Options {
            case,
            ..Options::default()
        },
    )
    .await
    .unwrap_or_else(|error| panic!("case {case}: the stack starts: {error:#}"))
}

/// The order's mail history, read from the case's store itself (not through the API).
async fn stored_history(stack: &Stack, case: Case, order_id: Uuid) -> Vec<Notification> {
    let query = ListQuery {
        order_id: Some(order_id),
        limit: 50,
        ..ListQuery::default()
    };
    let page = if case.blocking_mail() {
        let url = stack.mail_database_url();
        shared_events::db::blocking(move || {
            use diesel::Connection;
            let mut conn = diesel::PgConnection::establish(&url).expect("mail database");
            mailer_blocking::store::list(&mut conn, &query)
        })
        .await
        .expect("query task")
    } else {
        let store = notifier::store::MongoHistoryStore::connect(
            &stack.infra.mongodb_uri,
            &stack.notifier_mongodb_database(),
            notifier::store::BatchConfig::default(),
        )
        .await
        .expect("MongoDB");
        store.list(&query).await
    };
    page.expect("history readable").items
}

/// Waits until the store holds `count` finished mails for the order; returns their
/// types, sorted, after checking each was sent to `email`.
async fn sent_mail_types(
    stack: &Stack,
    case: Case,
    order_id: Uuid,
    email: &str,
    count: usize,
) -> Vec<String> {
    let history = eventually(&format!("{count} SENT record(s) in the store"), || async {
        let history = stored_history(stack, case, order_id).await;
        (history.len() == count && history.iter().all(|n| n.status == DeliveryStatus::Sent))
            .then_some(history)
    })
    .await;
    assert!(history
        .iter()
        .all(|n| n.recipient == email && n.attempts == 1));
    let mut types: Vec<String> = history.iter().map(|n| n.kind.to_string()).collect();
    types.sort();
    // The history API serves the same records from the same store.
    let api = stack.notifications(order_id).await;
    let mut api_types: Vec<&str> = api.iter().filter_map(|n| n["type"].as_str()).collect();
    api_types.sort();
    assert_eq!(api_types, types, "the API shows the stored history");
    types
}

async fn place(stack: &Stack, case: Case, email: &str) -> (Uuid, String) {
    let response = stack.post_order(&stack.order_request(email)).await;
    assert_eq!(response.status(), 202);
    let accepted: Value = response.json().await.expect("order JSON");
    let id: Uuid = accepted["id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .expect("order id");
    assert_eq!(accepted["total_amount"], 12_000);
    let redirect = if case.uses_kafka() {
        assert_eq!(accepted["status"], "PENDING_PAYMENT");
        stack.redirect_url(id).await
    } else {
        // One synchronous chain: payment `ready` happened inside this request.
        accepted["payment"]["redirect_url"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("case 1 answers with the redirect URL: {accepted}"))
    };
    (id, redirect)
}

async fn paid_order(case: Case) {
    let stack = spawn(case, SimConfig::default()).await;
    let email = stack.shopper_email(&format!("case{case}-paid"));
    let (id, redirect) = place(&stack, case, &email).await;

    let approval = stack.shopper_visits(&redirect, None).await;
    assert_eq!(approval.status(), 200);
    let payment: Value = approval.json().await.expect("payment JSON");
    assert_eq!(payment["status"], "APPROVED");

    if !case.uses_kafka() {
        // The approval page answered after the order completed and both mails went out.
        assert_eq!(stack.get_order(id).await["status"], "COMPLETED");
        assert_eq!(
            stack.infra.maildir.to(&email).len(),
            2,
            "both mails already sent"
        );
    }
    let order = stack.wait_for_status(id, "COMPLETED").await;
    assert_eq!(order["payment"]["status"], "APPROVED");
    let mails = stack.mails_to(&email, 2).await;
    assert!(mails
        .iter()
        .all(|mail| mail.subject.contains(&id.to_string()) && mail.text.contains("아메리카노")));
    assert_eq!(
        sent_mail_types(&stack, case, id, &email, 2).await,
        ["order_completed", "payment_completed"]
    );
    assert_eq!(stack.infra.maildir.to(&email).len(), 2, "no mail twice");

    let ledger = stack.sim.ledger();
    let entry = ledger
        .payments
        .values()
        .find(|p| p.partner_order_id == id.to_string())
        .expect("a tid for the order");
    assert!(entry.approved);
    assert_eq!(entry.approve_calls, 1, "approved exactly once");
    stack.stop().await;
}

async fn declined_payment(case: Case) {
    let sim = SimConfig {
        faults: Faults {
            decline_rate: 1.0,
            ..Faults::default()
        },
        ..SimConfig::default()
    };
    let stack = spawn(case, sim).await;
    let email = stack.shopper_email(&format!("case{case}-declined"));
    let (id, redirect) = place(&stack, case, &email).await;

    let response = stack.shopper_visits(&redirect, None).await;
    assert_eq!(response.status(), 200);
    let payment: Value = response.json().await.expect("payment JSON");
    assert_eq!(payment["status"], "FAILED");
    assert_eq!(payment["failure_reason"], "declined");

    if !case.uses_kafka() {
        // Compensation ran inside the shopper's request.
        assert_eq!(stack.get_order(id).await["status"], "CANCELLED");
        assert_eq!(stack.infra.maildir.to(&email).len(), 1);
    }
    let order = stack.wait_for_status(id, "CANCELLED").await;
    assert_eq!(order["cancel_reason"], "payment_declined");
    let mails = stack.mails_to(&email, 1).await;
    assert!(mails[0].subject.contains(&id.to_string()));
    assert_eq!(
        sent_mail_types(&stack, case, id, &email, 1).await,
        ["order_cancelled"]
    );
    assert_eq!(
        stack.infra.maildir.to(&email).len(),
        1,
        "no completion mail"
    );
    let ledger = stack.sim.ledger();
    let entry = ledger
        .payments
        .values()
        .find(|p| p.partner_order_id == id.to_string())
        .expect("a tid");
    assert!(!entry.approved, "nothing was charged");
    stack.stop().await;
}

/// Case 1: a mail service outage does not fail the order: the approval completes it, and
/// the mails follow once the mail service is back (the HTTP relay retries the outbox).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn case_1_a_mail_service_outage_does_not_fail_the_order_and_the_mails_follow() {
    let mut stack = spawn(Case::SyncChain, SimConfig::default()).await;
    let email = stack.shopper_email("case1-outage");
    let (id, redirect) = place(&stack, Case::SyncChain, &email).await;

    stack.notifier.stop().await;
    let approval = stack.shopper_visits(&redirect, None).await;
    assert_eq!(approval.status(), 200, "the shopper's payment succeeds");
    assert_eq!(stack.get_order(id).await["status"], "COMPLETED");
    assert!(stack.infra.maildir.to(&email).is_empty());

    stack
        .notifier
        .start_again()
        .await
        .expect("mail service restarts");
    stack.mails_to(&email, 2).await;
    assert_eq!(
        sent_mail_types(&stack, Case::SyncChain, id, &email, 2).await,
        ["order_completed", "payment_completed"]
    );
    assert_eq!(stack.infra.maildir.to(&email).len(), 2, "each mail once");
    stack.stop().await;
}

/// Case 1: the shopper cancelling a paid order is refunded, and mailed, within the
/// request.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn case_1_a_shopper_cancelling_a_paid_order_is_refunded_within_the_request() {
    let stack = spawn(Case::SyncChain, SimConfig::default()).await;
    let email = stack.shopper_email("case1-refund");
    let (id, redirect) = place(&stack, Case::SyncChain, &email).await;
    assert_eq!(stack.shopper_visits(&redirect, None).await.status(), 200);

    let response = stack
        .http
        .post(format!("{}/orders/{id}/cancel", stack.order.url()))
        .bearer_auth(stack.token(id))
        .send()
        .await
        .expect("order-service answers");
    assert_eq!(response.status(), 202);
    let order: Value = response.json().await.expect("order JSON");
    assert_eq!(order["status"], "CANCELLED", "refunded before the answer");
    assert_eq!(order["refunded_amount"], 12_000);
    assert_eq!(stack.infra.maildir.to(&email).len(), 3);
    assert_eq!(
        sent_mail_types(&stack, Case::SyncChain, id, &email, 3).await,
        ["order_completed", "order_refunded", "payment_completed"]
    );
    let ledger = stack.sim.ledger();
    let entry = ledger
        .payments
        .values()
        .find(|p| p.partner_order_id == id.to_string())
        .expect("a tid");
    assert_eq!((entry.cancel_calls, entry.canceled_amount), (1, 12_000));
    stack.stop().await;
}

fn case(number: u8) -> Case {
    Case::from_number(number).expect("a case of the seed")
}

macro_rules! cases {
    ($($name:ident: $number:literal),+ $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn a_paid_order_completes_and_both_mails_are_in_the_history() {
                super::paid_order(super::case($number)).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn a_declined_payment_cancels_the_order_with_one_mail() {
                super::declined_payment(super::case($number)).await;
            }
        }
    )+};
}

cases!(case_1: 1, case_2: 2, case_3: 3, case_4: 4);
