//! The stack's Kafka as a scenario sees it: high watermarks, whether a consumer group
//! has caught up, poison messages to publish, and the dead letters.

use super::{ProcStack, PARTITIONS};
use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use shared_events::kafka::{dead_letter_tools, DeadLetter};
use std::time::Duration;
use uuid::Uuid;

impl ProcStack {
    /// High watermark of every partition of `topic`.
    pub fn high_watermarks(&self, topic: &str) -> anyhow::Result<Vec<i64>> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.kafka_brokers())
            .create()?;
        (0..PARTITIONS)
            .map(|partition| {
                Ok(consumer
                    .fetch_watermarks(topic, partition, Duration::from_secs(5))?
                    .1)
            })
            .collect()
    }

    /// True when `group` has committed every partition of `topic` up to its high
    /// watermark (it has consumed everything there is).
    pub fn caught_up(&self, group: &str, topic: &str) -> bool {
        let Ok(consumer) = ClientConfig::new()
            .set("bootstrap.servers", self.kafka_brokers())
            .set("group.id", group)
            .create::<BaseConsumer>()
        else {
            return false;
        };
        let mut partitions = TopicPartitionList::new();
        for partition in 0..PARTITIONS {
            partitions.add_partition(topic, partition);
        }
        let Ok(committed) = consumer.committed_offsets(partitions, Duration::from_secs(5)) else {
            return false;
        };
        committed.elements().iter().all(|element| {
            let Ok((_, high)) =
                consumer.fetch_watermarks(topic, element.partition(), Duration::from_secs(5))
            else {
                return false;
            };
            match element.offset() {
                Offset::Offset(offset) => offset >= high,
                _ => high == 0,
            }
        })
    }

    /// Publishes `count` messages no consumer can use on `topic` (unparseable JSON, an
    /// unknown event type, an unknown schema version, in turn).
    pub async fn inject_poison(&self, topic: &str, count: usize) -> anyhow::Result<()> {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", self.kafka_brokers())
            .set("linger.ms", "1")
            .create()?;
        for n in 0..count {
            let key = Uuid::new_v4().to_string();
            let payload = match n % 3 {
                0 => format!("{{not json {n}"),
                1 => format!(r#"{{"event_id":"{key}","event_type":"OrderTeleported"}}"#),
                _ => format!(
                    r#"{{"event_id":"{key}","event_type":"OrderPlaced","schema_version":99,"occurred_at":"2026-01-01T00:00:00Z","order_id":"{key}","payload":{{}}}}"#
                ),
            };
            producer
                .send(
                    FutureRecord::to(topic).key(&key).payload(&payload),
                    Duration::from_secs(30),
                )
                .await
                .map_err(|(error, _)| error)
                .context("publishing a poison message")?;
        }
        Ok(())
    }

    /// Every dead letter on the stack's dead-letter topic.
    pub async fn dead_letters(&self) -> anyhow::Result<Vec<DeadLetter>> {
        let kafka = self.kafka();
        Ok(tokio::task::spawn_blocking(move || {
            dead_letter_tools::read_all(&kafka, Duration::from_secs(15))
        })
        .await??)
    }
}
