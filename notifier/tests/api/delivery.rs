//! The delivery policy against the SMTP sink's failure rules: `tempfail…` recipients get
//! 451 (retried, then FAILED), `reject…` recipients 550 (FAILED at once).

use crate::helpers::*;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread")]
async fn a_permanent_rejection_is_recorded_failed_without_retry() {
    let app = spawn_app().await;
    let recipient = unique_recipient("reject");
    let order_id = Uuid::now_v7();
    app.publish(&order_completed(
        order_id,
        &snapshot(&recipient, "ko", "Pie"),
    ))
    .await;
    let docs = app.wait_for_final_documents(order_id, 1).await;
    let d = &docs[0];
    assert_eq!(d.get_str("status").ok(), Some("FAILED"), "{d:?}");
    assert_eq!(
        d.get_i32("attempts")
            .ok()
            .map(i64::from)
            .or(d.get_i64("attempts").ok()),
        Some(1)
    );
    assert!(
        d.get_str("last_error").is_ok_and(|e| e.contains("550")),
        "{d:?}"
    );
    assert!(app.mails_to(&recipient).is_empty());
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn transient_failures_are_retried_then_failed_while_other_mails_flow() {
    let app = spawn_app_with(|s| {
        s.mail_max_attempts = 4;
        s.mail_retry_initial_ms = 400;
        s.mail_retry_max_ms = 1_000;
    })
    .await;
    let flaky = unique_recipient("tempfail");
    let flaky_order = Uuid::now_v7();
    app.publish(&payment_approved(
        flaky_order,
        &snapshot(&flaky, "en", "Pie"),
    ))
    .await;
    // Published after the failing one; must not wait for its retries.
    let fine = unique_recipient("fine");
    let fine_order = Uuid::now_v7();
    app.publish(&payment_approved(
        fine_order,
        &snapshot(&fine, "en", "Tart"),
    ))
    .await;

    let fine_docs = app.wait_for_final_documents(fine_order, 1).await;
    let flaky_docs = app.wait_for_final_documents(flaky_order, 1).await;
    let f = &flaky_docs[0];
    assert_eq!(f.get_str("status").ok(), Some("FAILED"), "{f:?}");
    assert_eq!(
        f.get_i32("attempts")
            .ok()
            .map(i64::from)
            .or(f.get_i64("attempts").ok()),
        Some(4)
    );
    let error = f.get_str("last_error").unwrap_or_default();
    assert!(
        error.contains("451") && error.contains("gave up after 4 attempts"),
        "{error}"
    );
    assert!(app.mails_to(&flaky).is_empty());

    let ok = &fine_docs[0];
    assert_eq!(ok.get_str("status").ok(), Some("SENT"));
    let fine_sent = ok.get_datetime("sent_at").expect("sent_at");
    let flaky_done = f.get_datetime("updated_at").expect("updated_at");
    assert!(
        fine_sent < flaky_done,
        "the other order's mail was sent ({fine_sent}) while the failing one was retried (until {flaky_done})"
    );
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn one_orders_mails_keep_their_order_through_retries() {
    let app = spawn_app_with(|s| {
        s.mail_max_attempts = 3;
        s.mail_retry_initial_ms = 200;
    })
    .await;
    let flaky = unique_recipient("tempfail");
    let order = snapshot(&flaky, "ko", "Pie");
    let order_id = Uuid::now_v7();
    // Both on the orders topic with the same key: Kafka keeps their order (across
    // topics it does not, so the test does not mix them).
    let first = order_completed(order_id, &order);
    let second = order_cancelled(order_id, &order, Some(32_000));
    app.publish(&first).await;
    app.publish(&second).await;

    let docs = app.wait_for_final_documents(order_id, 2).await;
    let doc_of = |event: &shared_events::Event| {
        docs.iter()
            .find(|d| d.get_str("event_id").ok() == Some(event.event_id.to_string().as_str()))
            .cloned()
            .expect("a record per event")
    };
    let (a, b) = (doc_of(&first), doc_of(&second));
    let a_done = a.get_datetime("updated_at").expect("updated_at");
    let b_started = b.get_datetime("created_at").expect("created_at");
    assert!(
        a_done <= b_started,
        "the second event ({b_started}) waited for the first to finish ({a_done})"
    );
    for d in [&a, &b] {
        assert_eq!(d.get_str("status").ok(), Some("FAILED"));
    }
    app.finish().await;
}
