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
        .payment_lookup(format!("{}/payments/{paid_payment}", stack.payment.url()))
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

async fn get(stack: &Stack, path: &str, token: Option<&str>) -> reqwest::Response {
    let mut request = stack.http.get(format!("{}{path}", stack.order.url()));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("order-service answers")
}

async fn cancel_with(stack: &Stack, id: Uuid, token: Option<&str>) -> reqwest::Response {
    let mut request = stack
        .http
        .post(format!("{}/orders/{id}/cancel", stack.order.url()));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("order-service answers")
}

/// The personal data of a paid order none of `body` may contain.
fn assert_nothing_personal(body: &str, personal: &[&str]) {
    for secret in personal {
        assert!(!body.contains(secret), "{secret:?} shown in {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_order_shows_personal_data_and_can_be_cancelled_only_with_its_token() {
    let stack = Stack::spawn(SimConfig::default())
        .await
        .expect("stack starts");
    let email = stack.shopper_email("capability");
    let request = stack.order_request(&email);
    let customer = request["customer_id"].as_str().expect("id").to_owned();
    let accepted: Value = stack.post_order(&request).await.json().await.expect("JSON");
    let id = uuid_at(&accepted, "/id");
    let token = accepted["access_token"].as_str().expect("access_token");
    assert!(token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(token, stack.token(id));
    let redirect = stack.redirect_url(id).await;
    assert_eq!(stack.shopper_visits(&redirect, None).await.status(), 200);
    let full = stack.wait_for_status(id, "COMPLETED").await;
    assert_eq!(
        full["customer_email"],
        email.as_str(),
        "the shopper sees it all"
    );
    let payment_id = uuid_at(&full, "/payment/id").to_string();
    // (The tid is not among them: the simulator's redirect URL, which the contract keeps
    // public, names it; only the `tid` field is left out.)
    let personal = [email.as_str(), customer.as_str(), &payment_id, "아메리카노"];

    // Anyone with the id: the minimal contract's fields, nothing personal.
    let public = get(&stack, &format!("/orders/{id}"), None).await;
    assert_eq!(public.status(), 200);
    let public_body = public.text().await.expect("body");
    assert_nothing_personal(&public_body, &personal);
    let public: Value = serde_json::from_str(&public_body).expect("JSON");
    assert_eq!(public["id"], id.to_string());
    assert_eq!(public["status"], "COMPLETED");
    assert_eq!(public["total_amount"], 12_000);
    assert!(public["payment"]["redirect_url"].is_string());
    let mut payment_fields: Vec<&String> = public["payment"]
        .as_object()
        .expect("payment")
        .keys()
        .collect();
    payment_fields.sort();
    assert_eq!(payment_fields, ["redirect_url", "status"]);
    let waited = get(&stack, &format!("/orders/{id}?wait=1"), None).await;
    assert_nothing_personal(&waited.text().await.expect("body"), &personal);
    // The order is settled: the stream sends it once and ends.
    let stream = get(&stack, &format!("/orders/{id}/events"), None).await;
    assert_eq!(stream.status(), 200);
    assert_nothing_personal(&stream.text().await.expect("stream"), &personal);

    // A wrong token is refused, not ignored; the timeline is the shopper's.
    let stranger = "0".repeat(64);
    let wrong = get(&stack, &format!("/orders/{id}"), Some(&stranger)).await;
    assert_eq!(wrong.status(), 403);
    assert_eq!(
        get(&stack, &format!("/orders/{id}/timeline"), None)
            .await
            .status(),
        401
    );
    let timeline = get(&stack, &format!("/orders/{id}/timeline"), Some(token)).await;
    assert_eq!(timeline.status(), 200);

    // Payment's look-ups are the operators': the order's id (or its token) shows a
    // stranger no payment id, tid or gateway record there either.
    let lookups = [
        format!("{}/payments?order_id={id}", stack.payment.url()),
        format!("{}/payments/{payment_id}", stack.payment.url()),
    ];
    for url in &lookups {
        for (authorization, status) in [
            (None, 401),
            (Some(token), 403),
            (Some(stranger.as_str()), 403),
        ] {
            let mut request = stack.http.get(url);
            if let Some(authorization) = authorization {
                request = request.bearer_auth(authorization);
            }
            let refused = request.send().await.expect("payment answers");
            assert_eq!(refused.status(), status, "{url} with {authorization:?}");
            assert_eq!(
                refused.headers()["content-type"],
                "application/problem+json"
            );
            assert_nothing_personal(&refused.text().await.expect("body"), &personal);
        }
        let operator = stack.payment_lookup(url).send().await.expect("answers");
        assert_eq!(operator.status(), 200, "{url} with the operators' token");
        assert!(operator.text().await.expect("body").contains(&payment_id));
    }

    // Cancelling: 401 without a token, 403 with another, and nothing changes.
    let missing = cancel_with(&stack, id, None).await;
    assert_eq!(missing.status(), 401);
    assert_eq!(
        missing.headers()["content-type"],
        "application/problem+json"
    );
    assert_eq!(cancel_with(&stack, id, Some(&stranger)).await.status(), 403);
    let unchanged = stack.get_order(id).await;
    assert_eq!(unchanged["status"], "COMPLETED");
    assert!(unchanged["refunded_amount"].is_null());
    assert_eq!(unchanged["updated_at"], full["updated_at"]);

    // The shopper's link (`?token=`) cancels: refunded once.
    let url = format!("{}/orders/{id}/cancel?token={token}", stack.order.url());
    let cancelled = stack.http.post(url).send().await.expect("answers");
    assert_eq!(cancelled.status(), 202);
    let refunded = stack.wait_for_status(id, "CANCELLED").await;
    assert_eq!(refunded["refunded_amount"], 12_000);
    stack.stop().await;
}
