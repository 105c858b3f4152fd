//! `Idempotency-Key` on `POST /orders`: a retried or doubled request gets the first
//! order, never a second one.

use crate::support::*;
use serde_json::{json, Value};

fn order_for(email: &str, quantity: u32) -> Value {
    json!({
        "customer_id": "lee",
        "customer_email": email,
        "items": [{"sku": "ethiopia-yirgacheffe-200g", "quantity": quantity}]
    })
}

async fn placed(response: reqwest::Response) -> (Option<String>, Value) {
    assert_eq!(response.status(), 202);
    let replayed = header(&response, "idempotent-replayed");
    (replayed, response.json().await.expect("order JSON"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_request_with_the_same_key_answers_the_first_order() {
    let app = App::start_with(&[]).await;
    let key = uuid::Uuid::new_v4().to_string();
    let body = order_for("lee@example.com", 1);
    let (first_replayed, first) = placed(app.post_order(&body, Some(&key)).await).await;
    let (again_replayed, again) = placed(app.post_order(&body, Some(&key)).await).await;
    assert_eq!(first_replayed, None);
    assert_eq!(again_replayed.as_deref(), Some("true"));
    assert_eq!(first["id"], again["id"]);
    assert_eq!(
        first["access_token"], again["access_token"],
        "the same token"
    );
    // The token shown again is the order's: it opens the shopper's view.
    let id = first["id"].as_str().expect("id");
    let token = again["access_token"].as_str().expect("token");
    let response = app
        .http
        .get(format!("{}/orders/{id}/timeline", app.url))
        .bearer_auth(token)
        .send()
        .await
        .expect("answers");
    assert_eq!(response.status(), 200);
    assert_eq!(app.count("orders").await, 1);
    assert_eq!(
        app.count("outbox WHERE event_type = 'OrderPlaced'").await,
        1
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_twins_make_one_order() {
    let app = App::start_with(&[]).await;
    let key = uuid::Uuid::new_v4().to_string();
    let body = order_for("twins@example.com", 2);
    let answers =
        futures::future::join_all((0..3).map(|_| app.post_order(&body, Some(&key)))).await;
    let mut ids = Vec::new();
    for response in answers {
        ids.push(placed(response).await.1["id"].clone());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "one order for three requests: {ids:?}");
    assert_eq!(app.count("orders").await, 1);
    assert_eq!(
        app.count("outbox WHERE event_type = 'OrderPlaced'").await,
        1
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_key_with_another_request_is_refused_and_changes_nothing() {
    let app = App::start_with(&[]).await;
    let key = uuid::Uuid::new_v4().to_string();
    placed(
        app.post_order(&order_for("kim@example.com", 1), Some(&key))
            .await,
    )
    .await;
    let other = app
        .post_order(&order_for("kim@example.com", 3), Some(&key))
        .await;
    assert_eq!(other.status(), 422);
    let problem: Value = other.json().await.expect("problem");
    assert_eq!(problem["type"], "/problems/idempotency-key-reused");
    // A key too short to be secret is refused, naming the header.
    let short = app
        .post_order(&order_for("kim@example.com", 1), Some("abc"))
        .await;
    assert_eq!(short.status(), 400);
    let problem: Value = short.json().await.expect("problem");
    assert_eq!(problem["invalid_params"][0]["name"], "Idempotency-Key");
    assert_eq!(app.count("orders").await, 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_are_forgotten_only_after_their_time() {
    let app = App::start_with(&[]).await;
    let key = uuid::Uuid::new_v4().to_string();
    let body = order_for("old@example.com", 1);
    placed(app.post_order(&body, Some(&key)).await).await;
    let day = std::time::Duration::from_secs(86_400);
    let pool = shared_events::db::build_pool(&app.database_url(), 1);
    assert_eq!(
        order::retention::forget_expired_keys(&pool, day)
            .await
            .expect("runs"),
        0
    );
    app.update_elsewhere(
        "UPDATE order_idempotency_keys SET created_at = now() - interval '25 hours'".into(),
    )
    .await;
    assert_eq!(
        order::retention::forget_expired_keys(&pool, day)
            .await
            .expect("runs"),
        1
    );
    // Forgotten: the same key now places a new order.
    let (_, second) = placed(app.post_order(&body, Some(&key)).await).await;
    assert_eq!(app.count("orders").await, 2, "{second}");
    app.stop().await;
}
