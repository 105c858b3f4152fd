//! The history API: authentication, filters, pagination, one record, stats, health.

use crate::helpers::*;
use serde_json::Value;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread")]
async fn health_readiness_and_metrics() {
    let app = spawn_app().await;
    assert_eq!(
        app.get("/healthz").send().await.expect("healthz").status(),
        200
    );
    assert_eq!(
        app.get("/readyz").send().await.expect("readyz").status(),
        200
    );

    // One mail and one dead letter, so their metrics exist.
    let recipient = unique_recipient("metrics");
    let order_id = Uuid::now_v7();
    let poison = format!("poison {}", Uuid::new_v4());
    app.publish_raw(&app.topics.orders, &order_id.to_string(), poison.as_bytes())
        .await;
    app.publish(&order_completed(
        order_id,
        &snapshot(&recipient, "ko", "Bun"),
    ))
    .await;
    app.wait_for_final_documents(order_id, 1).await;
    app.wait_for_dead_letter(poison.as_bytes()).await;

    let text = eventually(
        "the metrics to show the mail, the dead letter and the consumer lag",
        || async {
            let metrics = app.get("/metrics").send().await.expect("metrics");
            assert_eq!(metrics.status(), 200);
            assert!(metrics
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("text/plain")));
            let text = metrics.text().await.expect("text");
            let dead_letters = text
                .lines()
                .find_map(|line| {
                    line.strip_prefix(r#"saga_dead_letters_total{consumer="notifier"} "#)
                })
                .and_then(|value| value.trim().parse::<f64>().ok())
                .unwrap_or_default();
            // The lag comes with librdkafka's statistics, every 5 s.
            (dead_letters >= 1.0 && text.contains("saga_consumer_lag_messages{")).then_some(text)
        },
    )
    .await;
    for name in [
        "notifier_mails_sent_total",
        "notifier_mail_send_duration_seconds",
        "notifier_mongodb_write_duration_seconds",
        "saga_dead_letters_total",
        "saga_consumer_lag_messages",
        "saga_http_requests_total",
        "notifier_events_total",
    ] {
        assert!(text.contains(name), "/metrics lacks {name}:\n{text}");
    }
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_history_needs_the_bearer_token() {
    let app = spawn_app().await;
    let path = format!("/notifications?order_id={}", Uuid::now_v7());

    let response = app.get(&path).send().await.expect("request");
    assert_eq!(response.status(), 401);
    let challenge = response
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(challenge.starts_with("Bearer"), "{challenge}");
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json")
    );
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["status"], 401);
    assert!(body["title"].is_string() && body["type"].is_string() && body["detail"].is_string());

    let response = app
        .get(&path)
        .bearer_auth("wrong-token")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 403);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["status"], 403);

    let response = app.get_authed(&path).send().await.expect("request");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["items"], Value::Array(vec![]));
    assert_eq!(body["next_cursor"], Value::Null);

    for path in [
        "/notifications/stats",
        &format!("/notifications/{}", Uuid::now_v7()),
    ] {
        let response = app.get(path).send().await.expect("request");
        assert_eq!(response.status(), 401, "{path}");
    }
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_parameters_are_named_in_a_problem() {
    let app = spawn_app().await;
    let response = app
        .get_authed("/notifications?order_id=nope&status=LOST&from=yesterday&limit=0")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 400);
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json")
    );
    let body: Value = response.json().await.expect("json");
    let names: Vec<&str> = body["invalid_params"]
        .as_array()
        .expect("invalid_params")
        .iter()
        .map(|p| {
            assert!(p["reason"].is_string(), "{p}");
            p["name"].as_str().expect("name")
        })
        .collect();
    assert_eq!(names, ["order_id", "status", "from", "limit"]);

    let response = app
        .get_authed("/notifications/stats?window=forever")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["invalid_params"][0]["name"], "window");

    let response = app
        .get_authed("/notifications/not-an-id")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 400);
    let response = app
        .get_authed(&format!("/notifications/{}", Uuid::now_v7()))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 404);
    app.finish().await;
}

async fn list(app: &TestApp, query: &str) -> (Vec<Value>, Option<String>) {
    let response = app
        .get_authed(&format!("/notifications?{query}"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200, "{query}");
    let body: Value = response.json().await.expect("json");
    (
        body["items"].as_array().cloned().expect("items"),
        body["next_cursor"].as_str().map(str::to_owned),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn filters_pagination_one_record_and_stats() {
    let app = spawn_app().await;
    let alice = unique_recipient("alice");
    let bob = unique_recipient("bob");
    let rejected = unique_recipient("reject");
    let started = chrono::Utc::now() - chrono::Duration::seconds(1);

    let a_order = Uuid::now_v7();
    let a = snapshot(&alice, "ko", "Tea");
    app.publish(&payment_approved(a_order, &a)).await;
    app.publish(&order_completed(a_order, &a)).await;
    let b_order = Uuid::now_v7();
    let b = snapshot(&bob, "en", "Cake");
    app.publish(&order_cancelled(b_order, &b, Some(32_000)))
        .await;
    let r_order = Uuid::now_v7();
    app.publish(&order_completed(r_order, &snapshot(&rejected, "en", "Pie")))
        .await;

    app.wait_for_final_documents(a_order, 2).await;
    app.wait_for_final_documents(b_order, 1).await;
    app.wait_for_final_documents(r_order, 1).await;

    // Everything, newest first.
    let (all, next) = list(&app, "").await;
    assert_eq!(all.len(), 4);
    assert_eq!(next, None);
    // Compared as instants: a whole second is written without a fraction ("…:22Z"),
    // which sorts before "…:22.033Z" as text.
    let created: Vec<chrono::DateTime<chrono::FixedOffset>> = all
        .iter()
        .map(|r| r["created_at"].as_str().expect("created_at"))
        .map(|at| chrono::DateTime::parse_from_rfc3339(at).expect("an RFC 3339 created_at"))
        .collect();
    let mut sorted = created.clone();
    sorted.sort_by(|x, y| y.cmp(x));
    assert_eq!(created, sorted, "newest first");

    // Each filter.
    let (items, _) = list(&app, &format!("recipient={}", urlencode(&alice))).await;
    assert_eq!(items.len(), 2);
    assert!(items.iter().all(|r| r["recipient"] == alice.as_str()));
    let (items, _) = list(&app, "type=order_refunded").await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["recipient"], bob.as_str());
    let (items, _) = list(&app, "status=FAILED").await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["recipient"], rejected.as_str());
    assert_eq!(items[0]["attempts"], 1);
    assert!(
        items[0]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("550")),
        "{}",
        items[0]
    );
    let (items, _) = list(&app, &format!("order_id={a_order}&type=payment_completed")).await;
    assert_eq!(items.len(), 1);
    let from = urlencode(&started.to_rfc3339());
    let (items, _) = list(&app, &format!("from={from}")).await;
    assert_eq!(items.len(), 4);
    let (items, _) = list(&app, &format!("to={from}")).await;
    assert_eq!(items.len(), 0);

    // Pagination: pages of one, following next_cursor, give every record once.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let query = match &cursor {
            Some(c) => format!("limit=1&cursor={}", urlencode(c)),
            None => "limit=1".to_owned(),
        };
        let (items, next) = list(&app, &query).await;
        assert!(items.len() <= 1);
        seen.extend(
            items
                .into_iter()
                .map(|r| r["id"].as_str().expect("id").to_owned()),
        );
        match next {
            Some(next) => cursor = Some(next),
            None => break,
        }
        assert!(seen.len() <= 4, "pagination does not end");
    }
    let all_ids: Vec<String> = all
        .iter()
        .map(|r| r["id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(seen, all_ids);

    // One record.
    let id = all_ids[0].clone();
    let response = app
        .get_authed(&format!("/notifications/{id}"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    let record: Value = response.json().await.expect("json");
    assert_eq!(record, all[0]);

    // Stats over this test's database.
    let response = app
        .get_authed("/notifications/stats?window=15m")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    let stats: Value = response.json().await.expect("json");
    assert_eq!(stats["total"], 4, "{stats}");
    assert_eq!(stats["by_status"]["SENT"], 3, "{stats}");
    assert_eq!(stats["by_status"]["FAILED"], 1, "{stats}");
    assert_eq!(stats["by_type"]["order_completed"]["SENT"], 1, "{stats}");
    assert_eq!(stats["by_type"]["order_completed"]["FAILED"], 1, "{stats}");
    assert_eq!(stats["by_type"]["payment_completed"]["SENT"], 1, "{stats}");
    assert_eq!(stats["by_type"]["order_refunded"]["SENT"], 1, "{stats}");
    assert_eq!(stats["send_latency_ms"]["count"], 3, "{stats}");
    let p50 = stats["send_latency_ms"]["p50"].as_i64().expect("p50");
    let p99 = stats["send_latency_ms"]["p99"].as_i64().expect("p99");
    assert!(0 <= p50 && p50 <= p99, "{stats}");
    assert_eq!(stats["window_seconds"], 900);
    app.finish().await;
}

fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// The API in front of a MongoDB that does not answer: readiness and history say so.
#[tokio::test(flavor = "multi_thread")]
async fn without_mongodb_readiness_fails_and_the_history_is_unavailable() {
    use actix_web::{test, web, App};
    use notifier::api::{configure, ApiState};
    use notifier::store::MongoHistoryStore;
    use std::sync::Arc;

    // Nothing listens on port 1; the real driver finds no server within 300 ms.
    let store = MongoHistoryStore::connect(
        "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=300&connectTimeoutMS=300",
        "notifier_unreachable",
        notifier::store::BatchConfig::default(),
    )
    .await
    .expect("a lazy client");
    let state = web::Data::new(ApiState {
        store: Arc::new(store),
    });
    let token = notifier::api::auth::required_token(Some(&TOKEN.into())).expect("a token");
    let app = test::init_service(
        App::new()
            .app_data(state)
            .app_data(web::Data::new(token))
            .configure(configure),
    )
    .await;

    let response =
        test::call_service(&app, test::TestRequest::get().uri("/healthz").to_request()).await;
    assert_eq!(response.status(), 200);
    let response =
        test::call_service(&app, test::TestRequest::get().uri("/readyz").to_request()).await;
    assert_eq!(response.status(), 503);

    let request = test::TestRequest::get()
        .uri(&format!("/notifications?order_id={}", Uuid::now_v7()))
        .insert_header(("Authorization", format!("Bearer {TOKEN}")))
        .to_request();
    let response = test::call_service(&app, request).await;
    assert_eq!(response.status(), 503);
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json")
    );
    let body: Value = test::read_body_json(response).await;
    assert_eq!(body["status"], 503);
}
