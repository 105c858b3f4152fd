//! Nothing lost, nothing twice: replays, poison messages and a second instance of every
//! consumer change nothing they should not.

use e2e::{eventually, Kind, Stack};
use kakaopay::sim::SimConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::Value;
use shared_events::kafka::dead_letter_tools;
use std::time::Duration;
use uuid::Uuid;

/// True when `group` has committed everything on `topic` (it has consumed it all).
fn caught_up(stack: &Stack, group: &str, topic: &str) -> bool {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &stack.infra.kafka_brokers)
        .set("group.id", group)
        .create()
        .expect("consumer");
    let mut partitions = TopicPartitionList::new();
    for partition in 0..shared_events::kafka::DEFAULT_PARTITIONS {
        partitions.add_partition(topic, partition);
    }
    let Ok(committed) = consumer.committed_offsets(partitions, Duration::from_secs(5)) else {
        return false;
    };
    committed.elements().iter().all(|element| {
        let high = consumer
            .fetch_watermarks(topic, element.partition(), Duration::from_secs(5))
            .map(|(_, high)| high)
            .unwrap_or(i64::MAX);
        match element.offset() {
            Offset::Offset(offset) => offset >= high,
            _ => high == 0,
        }
    })
}

/// Waits until every consumer group of `generation` (0 at start, 1 after a replay) has
/// consumed and committed everything on the topics it reads.
pub(crate) async fn wait_until_consumed(stack: &Stack, generation: u32) {
    let topics = [
        format!("t{}.orders.v1", stack.id),
        format!("t{}.payments.v1", stack.id),
    ];
    let groups = [
        ("payment", &topics[0]),
        ("order", &topics[1]),
        ("notifier", &topics[0]),
        ("notifier", &topics[1]),
    ];
    eventually("every consumer to have read every topic", || async {
        groups
            .iter()
            .all(|(service, topic)| {
                caught_up(
                    stack,
                    &format!("{service}-{}-g{generation}", stack.id),
                    topic,
                )
            })
            .then_some(())
    })
    .await;
}

/// What a replay must not change: orders, payments with their gateway calls, the
/// gateway's ledger, mails and mail history.
async fn observable_state(stack: &Stack, orders: &[(Uuid, String)]) -> Value {
    let mut state = Vec::new();
    for (id, email) in orders {
        let order = stack.get_order(*id).await;
        let payments: Value = stack
            .payment_lookup(format!("{}/payments?order_id={id}", stack.payment.url()))
            .send()
            .await
            .expect("payments")
            .json()
            .await
            .expect("payments JSON");
        let mut calls = Vec::new();
        for payment in payments.as_array().into_iter().flatten() {
            let detail: Value = stack
                .payment_lookup(format!(
                    "{}/payments/{}",
                    stack.payment.url(),
                    payment["id"].as_str().unwrap_or_default()
                ))
                .send()
                .await
                .expect("payment")
                .json()
                .await
                .expect("payment JSON");
            calls.push(detail["gateway_calls"].as_array().map_or(0, Vec::len));
        }
        let mut history: Vec<Value> = stack.notifications(*id).await;
        history.sort_by_key(|n| n["id"].to_string());
        state.push(serde_json::json!({
            "order": order, "payments": payments, "gateway_calls": calls,
            "mails": stack.infra.maildir.to(email).len(), "history": history,
        }));
    }
    serde_json::json!({ "orders": state, "ledger": serde_json::to_value(stack.sim.ledger()).expect("ledger") })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replaying_every_topic_from_the_start_changes_nothing() {
    let mut stack = Stack::spawn(SimConfig::default())
        .await
        .expect("stack starts");
    // A completed order, a refunded one, and one cancelled before payment.
    let mut orders = Vec::new();
    for tag in ["replay-paid", "replay-refunded", "replay-unpaid"] {
        let email = stack.shopper_email(tag);
        let id = stack.place_order(&email).await;
        let redirect = stack.redirect_url(id).await;
        if tag != "replay-unpaid" {
            assert_eq!(stack.shopper_visits(&redirect, None).await.status(), 200);
            stack.wait_for_status(id, "COMPLETED").await;
        }
        if tag != "replay-paid" {
            let cancel = format!("{}/orders/{id}/cancel", stack.order.url());
            assert_eq!(
                stack
                    .http
                    .post(cancel)
                    .bearer_auth(stack.token(id))
                    .send()
                    .await
                    .expect("cancel")
                    .status(),
                202
            );
            eventually("the order to be cancelled", || async {
                let order = stack.get_order(id).await;
                let done = order["status"] == "CANCELLED"
                    && (tag == "replay-unpaid" || order["refunded_amount"] == 12_000);
                done.then_some(())
            })
            .await;
        }
        orders.push((id, email));
    }
    let expected_mails = [2, 3, 1];
    for ((_, email), count) in orders.iter().zip(expected_mails) {
        stack.mails_to(email, count).await;
    }
    let before = observable_state(&stack, &orders).await;

    stack
        .replay_everything()
        .await
        .expect("services restart in new groups");
    wait_until_consumed(&stack, 1).await;

    let after = observable_state(&stack, &orders).await;
    assert_eq!(after, before, "a full replay changed something");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn poison_messages_are_dead_lettered_and_orders_keep_flowing() {
    let stack = Stack::spawn(SimConfig::default())
        .await
        .expect("stack starts");
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &stack.infra.kafka_brokers)
        .create()
        .expect("producer");
    let kafka = stack.infra.kafka(&format!("t{}.", stack.id));
    let topics = kafka.topics();
    for topic in [&topics.orders, &topics.payments] {
        for n in 0..100 {
            let key = Uuid::new_v4().to_string();
            let payload = match n % 3 {
                0 => "{not json".to_owned(),
                1 => r#"{"event_id":"x","event_type":"OrderTeleported"}"#.to_owned(),
                _ => format!(
                    r#"{{"event_id":"{key}","event_type":"OrderPlaced","schema_version":99,"occurred_at":"2026-01-01T00:00:00Z","order_id":"{key}","payload":{{}}}}"#
                ),
            };
            producer
                .send(
                    FutureRecord::to(topic).key(&key).payload(&payload),
                    Duration::from_secs(10),
                )
                .await
                .expect("poison published");
        }
    }

    let email = stack.shopper_email("after-poison");
    let id = stack.place_order(&email).await;
    let redirect = stack.redirect_url(id).await;
    assert_eq!(stack.shopper_visits(&redirect, None).await.status(), 200);
    stack.wait_for_status(id, "COMPLETED").await;
    assert_eq!(stack.mails_to(&email, 2).await.len(), 2);

    // Every poison message, once per consumer of its topic (orders: payment and
    // notifier; payments: order and notifier).
    let letters = eventually("400 dead letters", || async {
        let kafka = kafka.clone();
        let letters = tokio::task::spawn_blocking(move || {
            dead_letter_tools::read_all(&kafka, Duration::from_secs(10))
        })
        .await
        .expect("task")
        .expect("dead letters read");
        let mut by_source = std::collections::BTreeMap::new();
        for letter in &letters {
            *by_source
                .entry((letter.source_topic.clone(), letter.consumer.clone()))
                .or_insert(0) += 1;
        }
        println!("dead letters so far: {by_source:?}");
        (letters.len() >= 400).then_some(letters)
    })
    .await;
    assert_eq!(letters.len(), 400);
    for topic in [&topics.orders, &topics.payments] {
        let from_topic: Vec<_> = letters
            .iter()
            .filter(|l| &l.source_topic == topic)
            .collect();
        assert_eq!(from_topic.len(), 200, "{topic}");
        for letter in from_topic {
            assert!(
                !letter.reason.is_empty()
                    && !letter.consumer.is_empty()
                    && letter.source_offset >= 0,
                "a dead letter names its reason, consumer and offset: {}",
                dead_letter_tools::to_json(letter)
            );
        }
    }
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_share_the_load_through_a_restart_without_loss_or_duplicates() {
    let stack = Stack::spawn(SimConfig::default())
        .await
        .expect("stack starts");
    let mut second_payment = stack
        .another(Kind::Payment)
        .await
        .expect("second payment instance");
    let mut second_notifier = stack
        .another(Kind::Notifier)
        .await
        .expect("second notifier instance");

    let mut orders = Vec::new();
    for n in 0..24 {
        if n == 8 {
            second_payment.stop().await;
            second_notifier.stop().await;
        }
        if n == 16 {
            second_payment.start_again().await.expect("payment back");
            second_notifier.start_again().await.expect("notifier back");
        }
        let email = stack.shopper_email("scale");
        orders.push((stack.place_order(&email).await, email));
    }
    for (id, _) in &orders {
        let redirect = stack.redirect_url(*id).await;
        assert_eq!(stack.shopper_visits(&redirect, None).await.status(), 200);
    }
    for (id, email) in &orders {
        stack.wait_for_status(*id, "COMPLETED").await;
        assert_eq!(stack.mails_to(email, 2).await.len(), 2);
    }
    let ledger = stack.sim.ledger();
    for (id, email) in &orders {
        let tids: Vec<_> = ledger
            .payments
            .values()
            .filter(|p| p.partner_order_id == id.to_string())
            .collect();
        assert_eq!(tids.len(), 1, "one payment per order");
        assert_eq!(tids[0].approve_calls, 1, "approved once");
        assert_eq!(stack.infra.maildir.to(email).len(), 2, "no mail twice");
        assert_eq!(stack.notifications(*id).await.len(), 2, "no history twice");
    }
    second_payment.stop().await;
    second_notifier.stop().await;
    stack.stop().await;
}
