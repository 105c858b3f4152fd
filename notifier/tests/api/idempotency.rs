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
    let event = order_completed(order_id, &order);
    app.publish(&event).await;
    app.publish(&event).await;
    // A later event of the same order on the same topic (so the same partition) is
    // handled after both copies.
    let marker = order_cancelled(order_id, &order, Some(32_000));
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
    assert_eq!(history[0]["type"], "order_refunded");
    assert_eq!(history[1]["type"], "order_completed");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_in_one_group_mail_every_event_once_through_rebalances() {
    let app = spawn_app_with(|s| s.max_in_flight = 1).await;
    let recipient = unique_recipient("rebalance");
    let mut published = 0;
    let mut publish = |n: usize| {
        published += n;
        let events: Vec<_> = (0..n)
            .map(|_| order_completed(Uuid::now_v7(), &snapshot(&recipient, "en", "Roll")))
            .collect();
        events
    };
    for event in publish(150) {
        app.publish(&event).await;
    }
    // A second instance joins while the first is busy: partitions move.
    let second = app.start_another().await;
    for event in publish(250) {
        app.publish(&event).await;
    }
    app.wait_for_mails(&recipient, 300).await;
    // It leaves again: partitions move back.
    second.stop().await;
    for event in publish(100) {
        app.publish(&event).await;
    }
    let total = published;
    app.wait_for_mails(&recipient, total).await;
    let docs = eventually("every record final", || async {
        let docs = app.documents(doc! { "recipient": &recipient }).await;
        let done = docs.len() == total
            && docs
                .iter()
                .all(|d| d.get_str("status").ok() == Some("SENT"));
        done.then_some(docs)
    })
    .await;
    assert_eq!(docs.len(), total);
    let mails = app.mails_to(&recipient);
    let mut by_message_id: HashMap<String, usize> = HashMap::new();
    for mail in &mails {
        *by_message_id.entry(mail.message_id.clone()).or_default() += 1;
    }
    let repeated: Vec<_> = by_message_id.iter().filter(|(_, n)| **n > 1).collect();
    assert!(repeated.is_empty(), "mails sent twice: {repeated:?}");
    assert_eq!(mails.len(), total);
    app.finish().await;
}
