//! Case 4: order and payment run their request and event paths on the async PostgreSQL
//! driver (diesel-async + deadpool, `SAGA_CASE=4`); Kafka and the Tokio notifier as in
//! the product. The same shop must behave the same: paid, declined, refunded, and a
//! redelivered event changes nothing.

use diesel::sql_types::{Text, Uuid as SqlUuid};
use diesel::{Connection, PgConnection, QueryableByName, RunQueryDsl};
use e2e::{eventually, Options, Stack};
use kakaopay::sim::{Faults, SimConfig};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde_json::Value;
use shared_events::kafka::event_headers;
use shared_events::Case;
use std::time::Duration;
use uuid::Uuid;

fn case4() -> Options {
    Options {
        case: Case::AsyncDb,
        ..Options::default()
    }
}

async fn sent_mail_types(stack: &Stack, id: Uuid, count: usize) -> Vec<String> {
    eventually(
        &format!("{count} SENT history records for {id}"),
        || async {
            let mut sent: Vec<String> = stack
                .notifications(id)
                .await
                .iter()
                .filter(|n| n["status"] == "SENT")
                .filter_map(|n| n["type"].as_str().map(str::to_owned))
                .collect();
            sent.sort();
            (sent.len() >= count).then_some(sent)
        },
    )
    .await
}

/// Work the async driver did for order and payment so far, as `saga_db_work_total` on
/// `/metrics` shows it. The recorder is the test process's, shared by every stack it
/// runs, so a test compares before and after: if case 4 silently ran the blocking
/// driver, no stack's async count would move.
async fn async_work(stack: &Stack) -> [f64; 2] {
    let text = stack
        .http
        .get(format!("{}/metrics", stack.order.url()))
        .send()
        .await
        .expect("the order service answers")
        .text()
        .await
        .expect("metrics text");
    ["order", "payment"].map(|service| {
        text.lines()
            .filter(|line| line.starts_with("saga_db_work_total{"))
            .filter(|line| line.contains("driver=\"async\""))
            .filter(|line| line.contains(&format!("service=\"{service}\"")))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    })
}

/// Order's and payment's request and event paths ran on the async pool in this test.
async fn assert_the_async_driver_served(stack: &Stack, before: [f64; 2]) {
    let after = async_work(stack).await;
    for (service, (before, after)) in ["order", "payment"].iter().zip(before.iter().zip(after)) {
        assert!(
            after - before >= 2.0,
            "{service}: the async driver did {} units of work in this test",
            after - before
        );
    }
}

fn ledger_entry(stack: &Stack, id: Uuid) -> kakaopay::sim::LedgerEntry {
    stack
        .sim
        .ledger()
        .payments
        .values()
        .find(|p| p.partner_order_id == id.to_string())
        .cloned()
        .expect("a tid for the order")
}

async fn payment_json(stack: &Stack, url: String) -> Value {
    stack
        .payment_lookup(url)
        .send()
        .await
        .expect("the service answers")
        .json()
        .await
        .expect("JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn case4_a_paid_order_completes_with_both_mails_and_its_history() {
    let stack = Stack::spawn_with(SimConfig::default(), case4())
        .await
        .expect("stack starts");
    let async_work_before = async_work(&stack).await;
    let email = stack.shopper_email("case4-happy");

    let response = stack.post_order(&stack.order_request(&email)).await;
    assert_eq!(response.status(), 202);
    let accepted: Value = response.json().await.expect("order JSON");
    let id: Uuid = accepted["id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .expect("order id");
    assert_eq!(accepted["status"], "PENDING_PAYMENT");
    assert_eq!(accepted["total_amount"], 12_000);

    let redirect = stack.redirect_url(id).await;
    let approval = stack.shopper_visits(&redirect, None).await;
    assert_eq!(approval.status(), 200);
    let payment: Value = approval.json().await.expect("payment JSON");
    assert_eq!(payment["status"], "APPROVED");

    let order = stack.wait_for_status(id, "COMPLETED").await;
    assert_eq!(order["payment"]["status"], "APPROVED");

    let mails = stack.mails_to(&email, 2).await;
    assert_eq!(mails.len(), 2, "one payment mail and one order mail");
    assert!(mails.iter().all(|m| m.subject.contains(&id.to_string())));
    assert_eq!(
        sent_mail_types(&stack, id, 2).await,
        ["order_completed", "payment_completed"],
        "the history in MongoDB"
    );

    let timeline = stack.timeline(id).await;
    let events: Vec<&str> = timeline["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter_map(|s| s["event_type"].as_str())
        .collect();
    assert_eq!(
        events,
        // The event an order emits is recorded before the payment event that caused it
        // (as in case 3: `saga::consume` records its own step after `apply`).
        [
            "OrderPlaced",
            "PaymentReady",
            "OrderCompleted",
            "PaymentApproved"
        ],
        "every step of the saga, written by the async adapter"
    );
    let detail = payment_json(
        &stack,
        format!(
            "{}/payments/{}",
            stack.payment.url(),
            payment["id"].as_str().expect("payment id")
        ),
    )
    .await;
    let kinds: Vec<&str> = detail["gateway_calls"]
        .as_array()
        .expect("gateway calls")
        .iter()
        .filter_map(|c| c["kind"].as_str())
        .collect();
    assert_eq!(kinds, ["ready", "approve"], "every gateway call recorded");

    let entry = ledger_entry(&stack, id);
    assert!(entry.approved);
    assert_eq!(entry.approve_calls, 1, "approved exactly once");
    assert_the_async_driver_served(&stack, async_work_before).await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn case4_a_declined_payment_cancels_the_order_with_one_mail() {
    let sim = SimConfig {
        faults: Faults {
            decline_rate: 1.0,
            ..Faults::default()
        },
        ..SimConfig::default()
    };
    let stack = Stack::spawn_with(sim, case4()).await.expect("stack starts");
    let async_work_before = async_work(&stack).await;
    let email = stack.shopper_email("case4-declined");
    let id = stack.place_order(&email).await;
    let redirect = stack.redirect_url(id).await;
    let response = stack.shopper_visits(&redirect, None).await;
    assert_eq!(response.status(), 200);
    let payment: Value = response.json().await.expect("payment JSON");
    assert_eq!(payment["status"], "FAILED");
    assert_eq!(payment["failure_reason"], "declined");

    let order = stack.wait_for_status(id, "CANCELLED").await;
    assert_eq!(order["cancel_reason"], "payment_declined");
    assert_eq!(
        sent_mail_types(&stack, id, 1).await,
        ["order_cancelled"],
        "a cancellation mail and no completion mail"
    );
    let mails = stack.mails_to(&email, 1).await;
    assert_eq!(mails.len(), 1);
    assert!(!ledger_entry(&stack, id).approved, "nothing was charged");
    assert_the_async_driver_served(&stack, async_work_before).await;
    stack.stop().await;
}

/// One outbox row as it was published.
#[derive(QueryableByName)]
struct Published {
    #[diesel(sql_type = SqlUuid)]
    event_id: Uuid,
    #[diesel(sql_type = Text)]
    topic: String,
    #[diesel(sql_type = Text)]
    message_key: String,
    #[diesel(sql_type = Text)]
    event_type: String,
    #[diesel(sql_type = Text)]
    payload: String,
}

fn published_events(database_url: &str) -> Vec<Published> {
    let mut conn = PgConnection::establish(database_url).expect("database");
    diesel::sql_query(
        "SELECT event_id, topic, message_key, event_type, payload FROM outbox \
         WHERE published_at IS NOT NULL ORDER BY id",
    )
    .load(&mut conn)
    .expect("outbox rows")
}

/// What a redelivery must not change, as the shopper and the operator see it.
async fn observable(stack: &Stack, id: Uuid, email: &str) -> Value {
    let timeline = stack.timeline(id).await;
    let payments = payment_json(
        stack,
        format!("{}/payments?order_id={id}", stack.payment.url()),
    )
    .await;
    let payment_id = payments[0]["id"].as_str().expect("a payment").to_owned();
    let detail = payment_json(
        stack,
        format!("{}/payments/{payment_id}", stack.payment.url()),
    )
    .await;
    serde_json::json!({
        "order": stack.get_order(id).await,
        "timeline": timeline,
        "payment": detail,
        "ledger": serde_json::to_value(ledger_entry(stack, id)).expect("ledger JSON"),
        "mails": stack.infra.maildir.to(email).len(),
        "history": stack.notifications(id).await.len(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn case4_a_refunded_order_stays_refunded_once_when_every_event_is_redelivered() {
    let stack = Stack::spawn_with(SimConfig::default(), case4())
        .await
        .expect("stack starts");
    let async_work_before = async_work(&stack).await;
    let email = stack.shopper_email("case4-redelivery");
    let id = stack.place_order(&email).await;
    let redirect = stack.redirect_url(id).await;
    assert_eq!(stack.shopper_visits(&redirect, None).await.status(), 200);
    stack.wait_for_status(id, "COMPLETED").await;

    // The shopper cancels the paid order: refunded through the async adapters.
    let cancel = format!("{}/orders/{id}/cancel", stack.order.url());
    let response = stack
        .http
        .post(&cancel)
        .bearer_auth(stack.token(id))
        .send()
        .await
        .expect("cancel");
    assert_eq!(response.status(), 202);
    let order = eventually("the refund to complete", || async {
        let order = stack.get_order(id).await;
        (order["status"] == "CANCELLED" && order["refunded_amount"] == 12_000).then_some(order)
    })
    .await;
    assert_eq!(order["cancel_reason"], "cancelled_by_shopper");
    assert_eq!(
        sent_mail_types(&stack, id, 3).await,
        ["order_completed", "order_refunded", "payment_completed"]
    );
    stack.mails_to(&email, 3).await;
    let before = observable(&stack, id, &email).await;

    // Every event of the saga, delivered again: the same ids, keys and payloads.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &stack.infra.kafka_brokers)
        .create()
        .expect("producer");
    let mut events = published_events(&stack.order_database_url());
    events.extend(published_events(&stack.payment_database_url()));
    let types: std::collections::BTreeSet<&str> =
        events.iter().map(|e| e.event_type.as_str()).collect();
    assert!(
        [
            "OrderPlaced",
            "PaymentReady",
            "PaymentApproved",
            "OrderCompleted",
            "RefundRequested",
            "PaymentRefunded",
            "OrderCancelled"
        ]
        .iter()
        .all(|t| types.contains(t)),
        "the whole saga is redelivered: {types:?}"
    );
    for event in &events {
        let event_id = event.event_id.to_string();
        producer
            .send(
                FutureRecord::to(&event.topic)
                    .key(&event.message_key)
                    .payload(&event.payload)
                    .headers(event_headers(&event.event_type, &event_id)),
                Duration::from_secs(10),
            )
            .await
            .expect("redelivered");
    }

    // Every consumer group has read past the duplicates (and committed after handling).
    crate::guarantees::wait_until_consumed(&stack, 0).await;

    let after = observable(&stack, id, &email).await;
    assert_eq!(after, before, "a redelivered event changed something");
    let entry = ledger_entry(&stack, id);
    assert_eq!(
        (entry.approve_calls, entry.cancel_calls),
        (1, 1),
        "charged once, refunded once"
    );
    assert_the_async_driver_served(&stack, async_work_before).await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn case4_a_charge_whose_answer_was_lost_is_found_by_the_reconciler() {
    let options = Options {
        fast_reconcile: true,
        ..case4()
    };
    let stack = Stack::spawn_with(SimConfig::default(), options)
        .await
        .expect("stack starts");
    let async_work_before = async_work(&stack).await;
    let email = stack.shopper_email("case4-lost-answer");
    let id = stack.place_order(&email).await;
    let redirect = stack.redirect_url(id).await;

    // Kakao Pay charges, but every answer (and status lookup) is lost on the way back.
    stack.sim.set_faults(Faults {
        lost_response_rate: 1.0,
        ..Faults::default()
    });
    let response = stack.shopper_visits(&redirect, None).await;
    assert_eq!(response.status(), 503, "the shopper is told to wait");
    assert!(ledger_entry(&stack, id).approved, "the gateway did charge");
    assert_eq!(stack.get_order(id).await["status"], "PENDING_PAYMENT");
    stack.sim.set_faults(Faults::default());

    // The reconciler finds the payment stuck APPROVING, asks Kakao Pay, and settles it.
    let order = stack.wait_for_status(id, "COMPLETED").await;
    assert_eq!(order["payment"]["status"], "APPROVED");
    assert_eq!(
        sent_mail_types(&stack, id, 2).await,
        ["order_completed", "payment_completed"]
    );
    assert_eq!(ledger_entry(&stack, id).cancel_calls, 0, "nothing refunded");
    assert_the_async_driver_served(&stack, async_work_before).await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn case4_an_unpaid_order_cancelled_by_the_shopper_cannot_be_paid_afterwards() {
    let stack = Stack::spawn_with(SimConfig::default(), case4())
        .await
        .expect("stack starts");
    let async_work_before = async_work(&stack).await;
    let email = stack.shopper_email("case4-unpaid-cancel");
    let id = stack.place_order(&email).await;
    let redirect = stack.redirect_url(id).await;

    let cancel = format!("{}/orders/{id}/cancel", stack.order.url());
    let response = stack
        .http
        .post(&cancel)
        .bearer_auth(stack.token(id))
        .send()
        .await
        .expect("cancel");
    assert_eq!(response.status(), 202);
    let order: Value = response.json().await.expect("order JSON");
    assert_eq!(order["status"], "CANCELLED");
    assert_eq!(sent_mail_types(&stack, id, 1).await, ["order_cancelled"]);

    let payments_url = format!("{}/payments?order_id={id}", stack.payment.url());
    eventually("the payment to be closed", || async {
        let payments = payment_json(&stack, payments_url.clone()).await;
        (payments[0]["status"] == "FAILED").then_some(())
    })
    .await;
    let late: Value = stack
        .shopper_visits(&redirect, None)
        .await
        .json()
        .await
        .expect("payment JSON");
    assert_eq!(late["status"], "FAILED", "a late shopper is not charged");
    let entry = ledger_entry(&stack, id);
    assert_eq!(entry.approve_calls, 0, "approve was never called");
    assert_the_async_driver_served(&stack, async_work_before).await;
    stack.stop().await;
}
