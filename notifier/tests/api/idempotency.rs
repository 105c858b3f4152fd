//! Redelivery and restarts never produce a second mail or a second record.

use crate::helpers::*;
use mongodb::bson::doc;
use std::collections::HashMap;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread")]
async fn a_redelivered_event_is_mailed_once() {
    let app = spawn_app().await;
    let recipient = unique_recipient("dup");
    let order = snapshot(&recipient, "ko", "Mocha");
    let order_id = Uuid::now_v7();
    let event = payment_approved(order_id, &order);
    app.publish(&event).await;
    app.publish(&event).await;
    // A later event of the same order is handled after both copies.
    let marker = order_completed(order_id, &order);
    app.publish(&marker).await;

    app.wait_for_final_documents(order_id, 2).await;
    let mails = app.wait_for_mails(&recipient, 2).await;
    assert_eq!(
        mails.len(),
        2,
        "one mail per distinct event: {:?}",
        mails.iter().map(|m| &m.subject).collect::<Vec<_>>()
    );
    let docs = app
        .documents(doc! { "event_id": event.event_id.to_string() })
        .await;
    assert_eq!(
        docs.len(),
        1,
        "one record for the redelivered event: {docs:?}"
    );
    assert_eq!(docs[0].get_str("status").ok(), Some("SENT"));
    let history = app.history(order_id).await;
    assert_eq!(history.len(), 2);
    // Newest first.
    assert_eq!(history[0]["type"], "order_completed");
    assert_eq!(history[1]["type"], "payment_completed");
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_mid_stream_mails_every_event_exactly_once() {
    // Few mails in flight, so the stop lands mid-stream.
    let mut app = spawn_app_with(|s| s.max_in_flight = 2).await;
    let recipient = unique_recipient("restart");
    let total = 40;
    let mut order_ids = Vec::new();
    for i in 0..total {
        let order = snapshot(&recipient, if i % 2 == 0 { "ko" } else { "en" }, "Scone");
        let order_id = Uuid::now_v7();
        app.publish(&order_completed(order_id, &order)).await;
        order_ids.push(order_id);
    }
    app.wait_for_mails(&recipient, 1).await;
    let stop_took = app.stop().await;
    let before = app.mails_to(&recipient).len();
    println!("stopped after {before} of {total} mails, in {stop_took:?}");
    assert!(
        stop_took.as_secs() < 20,
        "shutdown is bounded: {stop_took:?}"
    );

    app.start().await;
    let mails = app.wait_for_mails(&recipient, total).await;
    // Let anything still queued for this group settle: all records final.
    for order_id in &order_ids {
        app.wait_for_final_documents(*order_id, 1).await;
    }
    let mails_after = app.mails_to(&recipient);
    let mut by_message_id: HashMap<String, usize> = HashMap::new();
    for mail in &mails_after {
        *by_message_id.entry(mail.message_id.clone()).or_default() += 1;
    }
    let repeated: Vec<_> = by_message_id.iter().filter(|(_, n)| **n > 1).collect();
    assert!(repeated.is_empty(), "mails sent twice: {repeated:?}");
    assert_eq!(mails.len(), total);
    assert_eq!(mails_after.len(), total);
    let docs = app.documents(doc! { "recipient": &recipient }).await;
    assert_eq!(docs.len(), total);
    assert!(docs
        .iter()
        .all(|d| d.get_str("status").ok() == Some("SENT")));
    app.finish().await;
}
