//! Waiting for an order to change, against the real service and a real PostgreSQL: the
//! long poll of `GET /orders/{id}` and the change stream of `GET /orders/{id}/events`.
//!
//! A shopper's cancel changes an unpaid order without any other service.

use crate::support::*;
use serde_json::Value;
use std::time::Duration;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread")]
async fn without_a_wait_the_order_is_answered_at_once_with_its_etag() {
    let app = App::start(10).await;
    let id = app.place_order().await;
    let response = app.get(id).send().await.expect("answers");
    assert_eq!(response.status(), 200);
    assert!(etag(&response).starts_with('"'), "a strong, quoted tag");
    assert_eq!(header(&response, "preference-applied"), None);
    let stale = app
        .get(id)
        .header("If-None-Match", etag(&response))
        .send()
        .await
        .expect("answers");
    assert_eq!(stale.status(), 200, "no wait asked: answered as before");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_waiting_request_returns_with_the_change() {
    let app = App::start(10).await;
    let id = app.place_order().await;
    let (before, _) = app.current(id).await;
    let waiting = app
        .get(id)
        .header("Prefer", "wait=30")
        .header("If-None-Match", &before)
        .send();
    let waiting = tokio::spawn(waiting);
    app.cancel(id).await;
    // The client gives up long before the server's 30 s: an answer means the change did.
    let response = waiting.await.expect("joins").expect("answered before 20 s");
    assert_eq!(response.status(), 200);
    assert_eq!(
        header(&response, "preference-applied").as_deref(),
        Some("wait=30")
    );
    assert_ne!(etag(&response), before);
    let order: Value = response.json().await.expect("JSON");
    assert_eq!(order["status"], "CANCELLED");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn at_its_timeout_a_wait_answers_with_the_unchanged_order() {
    let app = App::start(10).await;
    let id = app.place_order().await;
    let (before, body) = app.current(id).await;
    for request in [
        app.get(id)
            .header("Prefer", "wait=1")
            .header("If-None-Match", &before),
        app.get(id).query(&[("wait", "1s")]),
    ] {
        let response = request.send().await.expect("answers");
        assert_eq!(response.status(), 200);
        assert_eq!(etag(&response), before);
        assert_eq!(response.text().await.expect("body"), body);
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stale_etag_is_answered_at_once() {
    let app = App::start(10).await;
    let id = app.place_order().await;
    let (current, _) = app.current(id).await;
    let response = app
        .get(id)
        .query(&[("wait", "30")])
        .header("If-None-Match", "\"stale\", W/\"older\"")
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("answered long before the 30 s wait");
    assert_eq!(response.status(), 200);
    assert_eq!(etag(&response), current);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_wait_is_refused_naming_the_parameter_and_changes_nothing() {
    let app = App::start(10).await;
    let id = app.place_order().await;
    let (before, _) = app.current(id).await;
    let cases = [
        (app.get(id).query(&[("wait", "abc")]), "wait"),
        (app.get(id).query(&[("wait", "-1")]), "wait"),
        (app.get(id).query(&[("wait", "31")]), "wait"),
        (app.get(id).header("Prefer", "wait=abc"), "Prefer: wait"),
        (app.get(id).header("Prefer", "wait=3600"), "Prefer: wait"),
    ];
    for (request, name) in cases {
        let response = request.send().await.expect("answers");
        assert_eq!(response.status(), 400);
        assert_eq!(
            header(&response, "content-type").as_deref(),
            Some("application/problem+json")
        );
        let problem: Value = response.json().await.expect("problem JSON");
        assert_eq!(problem["type"], "/problems/invalid-parameter");
        assert_eq!(problem["invalid_params"][0]["name"], name, "{problem}");
    }
    assert_eq!(app.current(id).await.0, before, "the order is as it was");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn waits_beyond_the_bound_are_refused_with_retry_after() {
    let app = App::start(1).await;
    let (id, other) = (app.place_order().await, app.place_order().await);
    let mut stream = Events::new(app.events(id).await);
    stream
        .next()
        .await
        .expect("the first event: the stream holds the only wait");

    let refused = app
        .get(other)
        .query(&[("wait", "1")])
        .send()
        .await
        .expect("answers");
    assert_eq!(refused.status(), 503);
    assert_eq!(header(&refused, "retry-after").as_deref(), Some("1"));
    let problem: Value = refused.json().await.expect("problem JSON");
    assert_eq!(problem["type"], "/problems/too-many-waits");
    assert_eq!(app.events(other).await.status(), 503, "streams count too");
    assert_eq!(
        app.get(other).send().await.expect("answers").status(),
        200,
        "plain reads do not"
    );

    drop(stream);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let status = app
            .get(other)
            .query(&[("wait", "1")])
            .send()
            .await
            .expect("answers")
            .status();
        if status == 200 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the wait was never given back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_event_stream_sends_the_order_then_its_changes_and_ends_when_settled() {
    let app = App::start(10).await;
    let id = app.place_order().await;
    let mut events = Events::new(app.events(id).await);
    let first = events.next().await.expect("the current order at once");
    assert_eq!(first["status"], "PENDING_PAYMENT");
    assert!(first["payment"].is_null());

    // As payment's PaymentReady would, but from outside this process.
    app.update_elsewhere(format!(
        "UPDATE orders SET payment_status = 'READY', payment_redirect_url = 'http://127.0.0.1:1/pay' WHERE id = '{id}'"
    ))
    .await;
    let ready = events.next().await.expect("the change");
    assert_eq!(ready["payment"]["redirect_url"], "http://127.0.0.1:1/pay");

    app.cancel(id).await;
    let cancelled = events.next().await.expect("the cancellation");
    assert_eq!(cancelled["status"], "CANCELLED");
    assert_eq!(events.next().await, None, "a settled order ends the stream");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_orders_are_not_found_for_waits_and_streams() {
    let app = App::start(10).await;
    let unknown = Uuid::now_v7();
    let waited = app
        .get(unknown)
        .query(&[("wait", "5")])
        .send()
        .await
        .expect("answers");
    assert_eq!(waited.status(), 404);
    let streamed = app.events(unknown).await;
    assert_eq!(streamed.status(), 404);
    assert_eq!(
        header(&streamed, "content-type").as_deref(),
        Some("application/problem+json")
    );
    app.stop().await;
}
