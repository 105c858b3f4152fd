//! The saga's three endings: paid, declined, abandoned by the shopper.

use e2e::{eventually, Stack};
use kakaopay::sim::{Faults, SimConfig};
use serde_json::Value;

fn mail_types(history: &[Value]) -> Vec<String> {
    let mut types: Vec<String> = history
        .iter()
        .filter_map(|n| n["type"].as_str().map(str::to_owned))
        .collect();
    types.sort();
    types
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paid_order_completes_and_the_shopper_gets_both_mails() {
    let stack = Stack::spawn(SimConfig::default())
        .await
        .expect("stack starts");
    let email = stack.shopper_email("happy");

    let response = stack.post_order(&stack.order_request(&email)).await;
    assert_eq!(response.status(), 202);
    let location = response.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    let accepted: Value = response.json().await.expect("order JSON");
    let id = accepted["id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .expect("order id");
    assert_eq!(location, format!("/orders/{id}"));
    assert_eq!(accepted["status"], "PENDING_PAYMENT");
    assert_eq!(
        accepted["total_amount"], 12_000,
        "2 × 4,500 + 3,000, computed by the server"
    );

    let redirect = stack.redirect_url(id).await;
    let approval = stack.shopper_visits(&redirect, None).await;
    assert_eq!(
        approval.status(),
        200,
        "the redirect chain ends at payment's approval callback"
    );
    let payment: Value = approval.json().await.expect("payment JSON");
    assert_eq!(payment["status"], "APPROVED");

    let order = stack.wait_for_status(id, "COMPLETED").await;
    assert_eq!(order["payment"]["status"], "APPROVED");
    assert!(order["completed_at"].is_string());

    let mails = stack.mails_to(&email, 2).await;
    assert_eq!(mails.len(), 2, "one payment mail and one order mail");
    for mail in &mails {
        assert!(
            mail.subject.contains(&id.to_string()),
            "subject names the order: {}",
            mail.subject
        );
        assert!(mail.text.contains("아메리카노"), "the mail lists the items");
        assert!(mail.message_id.is_some() && mail.has_date);
    }
    let history = eventually("two SENT history records", || async {
        let history = stack.notifications(id).await;
        (history.len() == 2 && history.iter().all(|n| n["status"] == "SENT")).then_some(history)
    })
    .await;
    assert_eq!(
        mail_types(&history),
        ["order_completed", "payment_completed"]
    );
    assert!(history
        .iter()
        .all(|n| n["recipient"] == email.as_str() && n["order_id"] == id.to_string()));

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

async fn assert_cancelled_with_one_mail(
    stack: &Stack,
    action: Option<&str>,
    reason: &str,
    failure: &str,
) {
    let email = stack.shopper_email(reason);
    let id = stack.place_order(&email).await;
    let redirect = stack.redirect_url(id).await;
    let response = stack.shopper_visits(&redirect, action).await;
    assert_eq!(response.status(), 200);
    let payment: Value = response.json().await.expect("payment JSON");
    assert_eq!(payment["status"], "FAILED");
    assert_eq!(payment["failure_reason"], failure);

    let order = stack.wait_for_status(id, "CANCELLED").await;
    assert_eq!(order["cancel_reason"], reason);
    let mails = stack.mails_to(&email, 1).await;
    let history = eventually("the cancellation record", || async {
        let history = stack.notifications(id).await;
        history
            .iter()
            .any(|n| n["status"] == "SENT")
            .then_some(history)
    })
    .await;
    assert_eq!(
        mail_types(&history),
        ["order_cancelled"],
        "a cancellation mail and no completion mail"
    );
    assert_eq!(mails.len(), 1);
    assert!(mails[0].subject.contains(&id.to_string()));
    let ledger = stack.sim.ledger();
    let entry = ledger
        .payments
        .values()
        .find(|p| p.partner_order_id == id.to_string())
        .expect("a tid");
    assert!(!entry.approved, "nothing was charged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_declined_payment_cancels_the_order_with_one_mail() {
    let sim = SimConfig {
        faults: Faults {
            decline_rate: 1.0,
            ..Faults::default()
        },
        ..SimConfig::default()
    };
    let stack = Stack::spawn(sim).await.expect("stack starts");
    assert_cancelled_with_one_mail(&stack, None, "payment_declined", "declined").await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_shopper_cancelling_on_the_payment_page_cancels_the_order() {
    let stack = Stack::spawn(SimConfig::default())
        .await
        .expect("stack starts");
    assert_cancelled_with_one_mail(
        &stack,
        Some("cancel"),
        "payment_cancelled_by_shopper",
        "shopper_cancelled",
    )
    .await;
    stack.stop().await;
}
