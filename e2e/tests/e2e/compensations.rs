//! Compensations: what gives the shopper's money back or stops them being charged.

use chrono::{DateTime, Utc};
use e2e::{eventually, Options, Stack};
use kakaopay::sim::{Faults, SimConfig};
use serde_json::Value;
use std::time::Duration;
use uuid::Uuid;

async fn cancel(stack: &Stack, id: Uuid) -> reqwest::Response {
    stack.cancel_order(id).await
}

async fn history_types(stack: &Stack, id: Uuid, count: usize) -> Vec<String> {
    eventually(&format!("{count} SENT mails for {id}"), || async {
        let history = stack.notifications(id).await;
        let sent: Vec<String> = history
            .iter()
            .filter(|n| n["status"] == "SENT")
            .filter_map(|n| n["type"].as_str().map(str::to_owned))
            .collect();
        (sent.len() >= count).then(|| {
            let mut sent = sent;
            sent.sort();
            sent
        })
    })
    .await
}

fn ledger_entry(stack: &Stack, id: Uuid) -> kakaopay::sim::LedgerEntry {
    let ledger = stack.sim.ledger();
    ledger
        .payments
        .values()
        .find(|p| p.partner_order_id == id.to_string())
        .cloned()
        .expect("a tid for the order")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_shopper_cancelling_a_paid_order_is_refunded_once_and_mailed() {
    let stack = Stack::spawn(SimConfig::default())
        .await
        .expect("stack starts");
    let email = stack.shopper_email("refund");
    let id = stack.place_order(&email).await;
    let redirect = stack.redirect_url(id).await;
    assert_eq!(stack.shopper_visits(&redirect, None).await.status(), 200);
    stack.wait_for_status(id, "COMPLETED").await;

    let response = cancel(&stack, id).await;
    assert_eq!(response.status(), 202);
    let order: Value = response.json().await.expect("order JSON");
    assert_eq!(order["status"], "CANCELLING", "waits for the refund");
    assert_eq!(
        cancel(&stack, id).await.status(),
        202,
        "asking twice is harmless"
    );

    let order = stack.wait_for_status(id, "CANCELLED").await;
    assert_eq!(order["refunded_amount"], 12_000);
    assert_eq!(order["cancel_reason"], "cancelled_by_shopper");
    let types = history_types(&stack, id, 3).await;
    assert_eq!(
        types,
        ["order_completed", "order_refunded", "payment_completed"]
    );
    let refund_mail = stack.mails_to(&email, 3).await;
    assert_eq!(refund_mail.len(), 3);

    let entry = ledger_entry(&stack, id);
    assert_eq!(
        entry.cancel_calls, 1,
        "refunded with exactly one cancel call"
    );
    assert_eq!(entry.canceled_amount, 12_000);
    let timeline = stack.timeline(id).await;
    let steps: Vec<&str> = timeline["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter_map(|s| s["event_type"].as_str())
        .collect();
    assert_eq!(steps.first(), Some(&"OrderPlaced"));
    for step in [
        "OrderPlaced",
        "PaymentReady",
        "PaymentApproved",
        "OrderCompleted",
        "RefundRequested",
        "PaymentRefunded",
        "OrderCancelled",
    ] {
        assert!(steps.contains(&step), "timeline has {step}: {steps:?}");
    }
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unpaid_order_cancelled_by_the_shopper_cannot_be_paid_afterwards() {
    let stack = Stack::spawn(SimConfig::default())
        .await
        .expect("stack starts");
    let email = stack.shopper_email("unpaid-cancel");
    let id = stack.place_order(&email).await;
    let redirect = stack.redirect_url(id).await;

    let response = cancel(&stack, id).await;
    assert_eq!(response.status(), 202);
    let order: Value = response.json().await.expect("order JSON");
    assert_eq!(order["status"], "CANCELLED");
    assert_eq!(history_types(&stack, id, 1).await, ["order_cancelled"]);

    // The payment is closed once payment-service learns of the cancellation; a shopper
    // who then finishes on Kakao Pay is not charged.
    let payments_url = format!("{}/payments?order_id={id}", stack.payment.url());
    eventually("the payment to be closed", || async {
        let payments: Value = stack
            .payment_lookup(&payments_url)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (payments[0]["status"] == "FAILED").then_some(())
    })
    .await;
    let late: Value = stack
        .shopper_visits(&redirect, None)
        .await
        .json()
        .await
        .expect("payment JSON");
    assert_eq!(late["status"], "FAILED");
    let entry = ledger_entry(&stack, id);
    assert_eq!(entry.approve_calls, 0, "approve was never called");
    assert!(!entry.approved);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_order_unpaid_at_its_deadline_is_cancelled_even_across_a_restart() {
    let options = Options {
        payment_deadline: Some(Duration::from_secs(2)),
        ..Options::default()
    };
    let mut stack = Stack::spawn_with(SimConfig::default(), options)
        .await
        .expect("stack starts");
    let email = stack.shopper_email("deadline");
    let id = stack.place_order(&email).await;
    let deadline: DateTime<Utc> = stack.get_order(id).await["payment_deadline"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .expect("a deadline");

    // order-service is down when the deadline passes; it catches up when it is back.
    stack.order.stop().await;
    eventually("the deadline to pass", || async {
        (Utc::now() > deadline).then_some(())
    })
    .await;
    stack.order.start_again().await.expect("order restarts");

    let order = stack.wait_for_status(id, "CANCELLED").await;
    assert_eq!(order["cancel_reason"], "deadline_expired");
    assert_eq!(history_types(&stack, id, 1).await, ["order_cancelled"]);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_payment_approved_as_the_deadline_passes_completes_the_order() {
    let options = Options {
        payment_deadline: Some(Duration::from_secs(3)),
        ..Options::default()
    };
    let stack = Stack::spawn_with(SimConfig::default(), options)
        .await
        .expect("stack starts");
    let email = stack.shopper_email("late-approval");
    let id = stack.place_order(&email).await;
    let redirect = stack.redirect_url(id).await;

    // Kakao Pay is slow: the deadline passes while the approve is under way. The order
    // asks payment to close the payment and waits; payment answers with the approval.
    stack.sim.set_faults(Faults {
        latency_ms: 5_000,
        ..Faults::default()
    });
    let approval: Value = stack
        .shopper_visits(&redirect, None)
        .await
        .json()
        .await
        .expect("payment JSON");
    assert_eq!(
        approval["status"], "APPROVED",
        "the gateway charged the shopper"
    );
    stack.sim.set_faults(Faults::default());

    let order = stack.wait_for_status(id, "COMPLETED").await;
    assert_eq!(order["refunded_amount"], Value::Null);
    let entry = ledger_entry(&stack, id);
    assert!(entry.approved);
    assert_eq!(entry.cancel_calls, 0, "a paid order is kept, not refunded");
    let types = history_types(&stack, id, 2).await;
    assert_eq!(types, ["order_completed", "payment_completed"]);
    let timeline = stack.timeline(id).await;
    let steps: Vec<&str> = timeline["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter_map(|s| s["event_type"].as_str())
        .collect();
    assert!(
        steps.contains(&"PaymentCloseRequested"),
        "the deadline asked payment: {steps:?}"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_charge_whose_answer_was_lost_is_found_and_the_order_completes() {
    let options = Options {
        fast_reconcile: true,
        ..Options::default()
    };
    let stack = Stack::spawn_with(SimConfig::default(), options)
        .await
        .expect("stack starts");
    let email = stack.shopper_email("lost-answer");
    let id = stack.place_order(&email).await;
    let redirect = stack.redirect_url(id).await;

    // Kakao Pay approves, but every answer is lost on the way back (and so is the
    // status lookup): payment-service cannot know the shopper was charged.
    stack.sim.set_faults(Faults {
        lost_response_rate: 1.0,
        ..Faults::default()
    });
    let response = stack.shopper_visits(&redirect, None).await;
    assert_eq!(
        response.status(),
        503,
        "the shopper is told to wait, not that it failed"
    );
    assert!(ledger_entry(&stack, id).approved, "the gateway did charge");
    assert_eq!(stack.get_order(id).await["status"], "PENDING_PAYMENT");
    stack.sim.set_faults(Faults::default());

    // The reconciler asks Kakao Pay, finds the charge, and the saga goes on.
    let order = stack.wait_for_status(id, "COMPLETED").await;
    assert_eq!(order["payment"]["status"], "APPROVED");
    assert_eq!(
        history_types(&stack, id, 2).await,
        ["order_completed", "payment_completed"]
    );
    let entry = ledger_entry(&stack, id);
    assert_eq!(entry.cancel_calls, 0, "nothing refunded");
    stack.stop().await;
}
