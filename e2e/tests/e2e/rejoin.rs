//! What the assignment watchdog reads from the real broker
//! (`shared_events::kafka::lagging_partitions`): the partitions whose events wait past
//! the group's committed offset. It rejoins the group when those stand still while its
//! consumer owns nothing.

use e2e::{eventually, Infra};
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::FutureRecord;
use shared_events::kafka::{lagging_partitions, SagaConsumerContext};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watchdog_sees_waiting_events_per_partition_until_the_group_commits_them() {
    let infra = Infra::from_env().expect("the test servers");
    let kafka = infra.kafka(&format!("w-{}.", Uuid::new_v4().simple()));
    kafka.ensure_topics().await.expect("topics");
    let topic = kafka.topics().orders;
    let group = format!("watchdog-{}", Uuid::new_v4().simple());

    // Events in the topic; per partition, where they end.
    let producer = kafka.producer().expect("producer");
    let mut ends: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for i in 0..12 {
        let key = format!("order-{i}");
        let delivery = producer
            .send(
                FutureRecord::to(&topic).key(&key).payload("{}"),
                Duration::from_secs(10),
            )
            .await
            .expect("delivered");
        ends.insert((topic.clone(), delivery.partition), delivery.offset + 1);
    }
    let consumer = Arc::new(
        kafka
            .consumer(&group, SagaConsumerContext::new("watchdog-test", &group))
            .expect("consumer"),
    );
    let lagging = |consumer: Arc<_>| {
        let topics = vec![topic.clone()];
        async move {
            tokio::task::spawn_blocking(move || lagging_partitions(&*consumer, &topics))
                .await
                .expect("check ran")
                .expect("the broker answers")
        }
    };

    // Nothing committed yet: every partition that got events lags from its start.
    let before = lagging(consumer.clone()).await;
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        ends.keys().collect::<Vec<_>>(),
        "the partitions with events lag"
    );
    assert!(
        before.values().all(|&committed| committed == 0),
        "{before:?}"
    );

    // The group consumes and commits everything: nothing lags.
    consumer.subscribe(&[topic.as_str()]).expect("subscribe");
    let mut seen = 0;
    while seen < 12 {
        let message = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .expect("a message within 30 s")
            .expect("a message");
        consumer
            .store_offset_from_message(&message)
            .expect("offset stored");
        assert!(message.payload().is_some());
        seen += 1;
    }
    consumer
        .commit_consumer_state(CommitMode::Sync)
        .expect("committed");
    eventually("no partition lags once the group committed", || {
        let consumer = consumer.clone();
        async move { lagging(consumer).await.is_empty().then_some(()) }
    })
    .await;
}
