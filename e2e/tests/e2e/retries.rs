//! A shopper's checkout retried — twice in a row, and a third time concurrently, with one
//! `Idempotency-Key` — is one order, one `OrderPlaced` and one payment, through the whole
//! saga (case 3: Kafka, payment-service and the Kakao Pay simulator).

use crate::bad_input::{count, published_order_events};
use e2e::{eventually, Stack};
use kakaopay::sim::SimConfig;
use serde_json::{json, Value};
use uuid::Uuid;

async fn checkout(stack: &Stack, body: &Value, key: &str) -> (Uuid, Option<String>) {
    let response = stack
        .http
        .post(format!("{}/orders", stack.order.url()))
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
        .expect("order-service answers");
    assert_eq!(response.status(), 202);
    let replayed = response
        .headers()
        .get("idempotent-replayed")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let order: Value = response.json().await.expect("order JSON");
    let id = order["id"].as_str().expect("id").parse().expect("uuid");
    (id, replayed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retried_checkout_is_one_order_one_event_one_payment() {
    let stack = Stack::spawn(SimConfig::default())
        .await
        .expect("stack starts");
    let email = stack.shopper_email("retry");
    let body = json!({
        "customer_id": format!("shopper-{}", stack.id),
        "customer_email": email,
        "items": [{"sku": "house-blend-200g", "quantity": 1}, {"sku": "drip-bags-10", "quantity": 2}]
    });
    let key = Uuid::new_v4().to_string();
    let (first, replayed) = checkout(&stack, &body, &key).await;
    assert_eq!(replayed, None);
    let (again, replayed) = checkout(&stack, &body, &key).await;
    assert_eq!((again, replayed.as_deref()), (first, Some("true")));
    let (a, b) = tokio::join!(checkout(&stack, &body, &key), checkout(&stack, &body, &key));
    assert_eq!(
        (a.0, b.0),
        (first, first),
        "concurrent retries answer the first order"
    );

    // The payment starts once: wait for it, then count everything the saga made.
    let redirect = eventually("the order's payment page", || async {
        let order = stack
            .http
            .get(format!("{}/orders/{first}", stack.order.url()))
            .send()
            .await
            .ok()?
            .json::<Value>()
            .await
            .ok()?;
        order["payment"]["redirect_url"].as_str().map(str::to_owned)
    })
    .await;
    assert!(!redirect.is_empty());
    let orders_db = stack.order_database_url();
    assert_eq!(
        count(
            &orders_db,
            &format!("orders WHERE customer_email = '{email}'")
        ),
        1
    );
    let placed = format!("outbox WHERE event_type = 'OrderPlaced' AND message_key = '{first}'");
    assert_eq!(count(&orders_db, &placed), 1, "one OrderPlaced");
    assert_eq!(
        count(&orders_db, "outbox WHERE event_type = 'OrderPlaced'"),
        1
    );
    assert!(published_order_events(&stack) >= 1);
    let payments = count(
        &stack.payment_database_url(),
        &format!("payments WHERE order_id = '{first}'"),
    );
    assert_eq!(payments, 1, "one payment");
    let tids = stack
        .sim
        .ledger()
        .payments
        .values()
        .filter(|p| p.partner_order_id == first.to_string())
        .count();
    assert_eq!(tids, 1, "Kakao Pay was asked for one payment");
    stack.stop().await;
}
