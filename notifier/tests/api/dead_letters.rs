//! Poison messages go to the dead-letter topic and do not block their partition.

use crate::helpers::*;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread")]
async fn a_poison_message_is_dead_lettered_and_the_next_event_still_mailed() {
    let app = spawn_app().await;
    let recipient = unique_recipient("poison");
    let order_id = Uuid::now_v7();
    let poison = format!("{{not json at all {}", Uuid::new_v4());
    // Same key → same partition, published first.
    app.publish_raw(&app.topics.orders, &order_id.to_string(), poison.as_bytes())
        .await;
    let order = snapshot(&recipient, "en", "Bagel");
    app.publish(&order_completed(order_id, &order)).await;

    let mails = app.wait_for_mails(&recipient, 1).await;
    assert!(mails[0].subject.contains(&order_id.to_string()));

    let letter = app.wait_for_dead_letter(poison.as_bytes()).await;
    assert_eq!(letter.source_topic, app.topics.orders);
    assert!(letter.source_partition >= 0);
    assert!(letter.source_offset >= 0);
    assert!(
        letter.reason.contains("not a valid event envelope"),
        "{}",
        letter.reason
    );
    assert_eq!(letter.key.as_deref(), Some(order_id.to_string().as_bytes()));
    // The consumer header is newer than the other four; when present it names our group.
    assert!(
        letter.consumer.is_empty() || letter.consumer == app.settings.consumer_group,
        "{}",
        letter.consumer
    );
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_event_type_is_dead_lettered_with_its_reason() {
    let app = spawn_app().await;
    let order_id = Uuid::now_v7();
    let poison = format!(
        r#"{{"event_id":"{}","event_type":"OrderTeleported","schema_version":1,"occurred_at":"2026-01-01T00:00:00Z","order_id":"{order_id}","causation_id":null,"payload":{{}}}}"#,
        Uuid::new_v4()
    );
    app.publish_raw(
        &app.topics.payments,
        &order_id.to_string(),
        poison.as_bytes(),
    )
    .await;
    let letter = app.wait_for_dead_letter(poison.as_bytes()).await;
    assert_eq!(letter.source_topic, app.topics.payments);
    assert!(
        letter.reason.contains("OrderTeleported"),
        "{}",
        letter.reason
    );
    app.finish().await;
}
