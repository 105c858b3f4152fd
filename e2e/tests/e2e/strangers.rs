//! No way in for a stranger: what only the shop's own services, or the shopper holding
//! the order, may do is refused to anyone else, and changes nothing.

use chrono::Utc;
use e2e::{Options, Stack};
use kakaopay::sim::SimConfig;
use serde_json::Value;
use shared_events::chain::{EventSigner, EVENTS_PATH, SIGNATURE_HEADER};
use shared_events::{
    CancelReason, Case, Event, LineItem, OrderCompleted, OrderSnapshot, PaymentApproved,
    RefundRequested,
};
use uuid::Uuid;

async fn spawn(case: Case) -> Stack {
    Stack::spawn_with(
        SimConfig::default(),
        Options {
            case,
            ..Options::default()
        },
    )
    .await
    .unwrap_or_else(|error| panic!("case {case}: the stack starts: {error:#}"))
}

fn snapshot(email: &str) -> OrderSnapshot {
    OrderSnapshot {
        customer_id: "mallory".into(),
        customer_email: email.into(),
        locale: "en".into(),
        items: vec![LineItem {
            name: "Free lunch".into(),
            quantity: 1,
            unit_price: 12_000,
        }],
        total_amount: 12_000,
    }
}

fn uuid_at(value: &Value, pointer: &str) -> Uuid {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("{pointer} in {value}"))
}

/// POSTs `event` to `base`'s event input unsigned and signed with a stranger's secret;
/// both must be refused with 401 problem+json.
async fn assert_forgeries_refused(stack: &Stack, base: &str, event: &Event) {
    let body = event.to_json();
    let stranger = EventSigner::new("a-strangers-guessed-secret").expect("long enough");
    let signatures = [
        None,
        Some(stranger.sign(body.as_bytes())),
        Some(format!("sha256={}", "0".repeat(64))),
    ];
    for signature in signatures {
        let mut request = stack
            .http
            .post(format!("{base}{EVENTS_PATH}"))
            .header("content-type", "application/json")
            .body(body.clone());
        if let Some(signature) = &signature {
            request = request.header(SIGNATURE_HEADER, signature);
        }
        let response = request.send().await.expect("the service answers");
        assert_eq!(
            response.status(),
            401,
            "{} to {base} with {signature:?}",
            event.event_type().as_str()
        );
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let problem: Value = response.json().await.expect("problem JSON");
        assert_eq!(problem["type"], "/problems/unauthenticated");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn case_1_refuses_forged_internal_events_and_nothing_changes() {
    let stack = spawn(Case::SyncChain).await;
    // A paid order (the services' own, signed deliveries work) and an unpaid one.
    let paid_email = stack.shopper_email("paid");
    let paid = stack.place_order(&paid_email).await;
    let redirect = stack.redirect_url(paid).await;
    assert_eq!(stack.shopper_visits(&redirect, None).await.status(), 200);
    let paid_order = stack.wait_for_status(paid, "COMPLETED").await;
    stack.mails_to(&paid_email, 2).await;
    let unpaid_email = stack.shopper_email("unpaid");
    let unpaid = stack.place_order(&unpaid_email).await;
    let unpaid_order = stack.get_order(unpaid).await;
    assert_eq!(unpaid_order["status"], "PENDING_PAYMENT");

    let mallory = stack.shopper_email("mallory");
    let approve_unpaid = Event::new(
        unpaid,
        None,
        PaymentApproved {
            payment_id: uuid_at(&unpaid_order, "/payment/id"),
            tid: unpaid_order["payment"]["tid"]
                .as_str()
                .unwrap_or("T0")
                .into(),
            amount: unpaid_order["total_amount"].as_i64().unwrap_or(0),
            payment_method: Some("MONEY".into()),
            approved_at: Utc::now(),
            order: snapshot(&unpaid_email),
        },
    );
    let paid_payment = uuid_at(&paid_order, "/payment/id");
    let refund_paid = Event::new(
        paid,
        None,
        RefundRequested {
            payment_id: paid_payment,
            amount: paid_order["total_amount"].as_i64().unwrap_or(0),
            reason: CancelReason::CancelledByShopper,
        },
    );
    let mail_mallory = Event::new(
        unpaid,
        None,
        OrderCompleted {
            order: snapshot(&mallory),
            payment_id: Uuid::now_v7(),
            completed_at: Utc::now(),
        },
    );
    assert_forgeries_refused(&stack, &stack.order.url(), &approve_unpaid).await;
    assert_forgeries_refused(&stack, &stack.payment.url(), &refund_paid).await;
    assert_forgeries_refused(&stack, &stack.notifier.url(), &mail_mallory).await;

    // Case 1 handles a delivery before it answers, so the 401s above are final.
    assert_eq!(
        stack.get_order(unpaid).await["status"],
        "PENDING_PAYMENT",
        "a forged PaymentApproved completes nothing"
    );
    let paid_now = stack.get_order(paid).await;
    assert_eq!(
        paid_now["status"], "COMPLETED",
        "a forged refund refunds nothing"
    );
    assert!(paid_now["refunded_amount"].is_null());
    let payment: Value = stack
        .http
        .get(format!("{}/payments/{paid_payment}", stack.payment.url()))
        .send()
        .await
        .expect("payment answers")
        .json()
        .await
        .expect("payment JSON");
    assert_eq!(payment["status"], "APPROVED");
    assert!(
        stack.infra.maildir.to(&mallory).is_empty(),
        "a forged OrderCompleted mails no one"
    );
    assert!(stack.notifications(unpaid).await.is_empty());
    stack.stop().await;
}
