//! The events the bench feeds the notifier, and the Kafka side of a run: its producer,
//! the burst of `OrderCompleted` events, and the topics dropped afterwards.

use super::WARMUP_RECIPIENT;
use anyhow::Result;
use chrono::Utc;
use futures::StreamExt;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::FutureProducer;
use rdkafka::ClientConfig;
use shared_events::kafka::publish;
use shared_events::{Event, LineItem, OrderCompleted, OrderSnapshot, Topics};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use uuid::Uuid;

/// Events published at once: enough to keep the producer's batches full.
const PUBLISH_CONCURRENCY: usize = 1024;

/// Order `n`: one item, its own customer and address.
pub fn snapshot(n: u64) -> OrderSnapshot {
    OrderSnapshot {
        customer_id: format!("bench-{n}"),
        customer_email: format!("bench-{n}@example.com"),
        locale: "ko".to_owned(),
        items: vec![LineItem {
            name: "Benchmark item".to_owned(),
            quantity: 1,
            unit_price: 10_000,
        }],
        total_amount: 10_000,
    }
}

/// `OrderCompleted` of `order`, occurring now.
pub fn order_completed(order: OrderSnapshot) -> Event {
    Event::new(
        Uuid::now_v7(),
        None,
        OrderCompleted {
            order,
            payment_id: Uuid::now_v7(),
            completed_at: Utc::now(),
        },
    )
}

/// The warm-up order's event: its mail goes to [`WARMUP_RECIPIENT`].
pub fn warmup_event() -> Event {
    order_completed(OrderSnapshot {
        customer_email: WARMUP_RECIPIENT.to_owned(),
        ..snapshot(0)
    })
}

pub fn bench_producer(brokers: &str) -> Result<FutureProducer> {
    // A feeder tuned for throughput (not the services' one-at-a-time outbox producer):
    // a short linger lets concurrent sends share batches.
    Ok(ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .set("acks", "all")
        .set("message.timeout.ms", "30000")
        .set("queue.buffering.max.messages", "200000")
        .create()?)
}

/// Publishes orders `1..=events` as fast as the producer takes them; returns how many
/// could not be published.
pub async fn publish_all(producer: &FutureProducer, topics: &Topics, events: u64) -> u64 {
    let publish_errors = AtomicU64::new(0);
    futures::stream::iter(1..=events)
        .map(|n| {
            let publish_errors = &publish_errors;
            async move {
                let event = order_completed(snapshot(n));
                if publish(producer, topics, &event).await.is_err() {
                    publish_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
        .buffer_unordered(PUBLISH_CONCURRENCY)
        .collect::<()>()
        .await;
    publish_errors.load(Ordering::Relaxed)
}

/// Drops the run's topics; best effort, bounded.
pub async fn delete_topics(brokers: &str, topics: &Topics) {
    let admin: Result<AdminClient<DefaultClientContext>, _> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create();
    if let Ok(admin) = admin {
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let names = topics.all();
        let _ = tokio::time::timeout(
            Duration::from_secs(15),
            admin.delete_topics(&names, &options),
        )
        .await;
    }
}
