//! Kafka plumbing shared by every service.
//!
//! Delivery is at least once, as Vector's Kafka source does it: offsets are *stored* only
//! after a message's work is committed (`enable.auto.offset.store=false`), librdkafka
//! auto-commits what was stored, and the stored offsets are committed synchronously when
//! partitions are revoked and when the consumer stops. A redelivered message is expected;
//! consumers make it harmless (see the `inbox` module and the notifier's unique index).

mod dead_letter;
mod engine;
mod offsets;
mod watchdog;

pub use crate::retry::{Backoff, RetryPolicy};
pub use dead_letter::{DeadLetter, DeadLetterPublisher, DLQ_HEADERS};
pub use engine::{ConsumerLoop, EngineConfig, EngineContext, EventHandler, HandlerError};
pub use offsets::OffsetTracker;
pub use watchdog::{lagging_partitions, watch_assignment};

/// A consumer that sends no heartbeat for this long leaves its group. Kafka's default
/// (45 s), and longer than any heartbeat gap a broker restart causes. Why it matters on
/// tansu 0.6 (its `coordinator/group/administrator.rs`, read and seen in the fault
/// suite's broker restart): a member's last contact is refreshed only by a successful
/// heartbeat, and it is checked before that heartbeat counts. A member that was cut off
/// longer than the session timeout (broker down, reconnect, then 3 s of tansu's pause in
/// each of JoinGroup and SyncGroup) rejoins, gets its partitions, and is then evicted by
/// its own first heartbeat — while staying the group's leader. The next generation waits
/// for that leader's SyncGroup, which never comes: every rejoin answers "rebalance in
/// progress" until the broker restarts. With 10 s this happened after a 3 s broker
/// outage; a longer timeout keeps the gap inside it. It costs nothing for static members
/// (a restarted instance takes back its own place) and makes a crashed dynamic member's
/// partitions wait up to 45 s; a graceful stop leaves the group at once either way (see
/// `engine::leave_group`).
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(45);

/// See [`KafkaSettings::fetch_wait_max_ms`].
pub const DEFAULT_FETCH_WAIT_MAX_MS: u32 = 10;

/// Partitions of the topics a service creates: enough for a dozen instances of a
/// consumer to share the work (concurrency inside an instance comes from keys).
pub const DEFAULT_PARTITIONS: i32 = 12;

/// Operators' tools: list and replay dead letters.
pub mod dead_letter_tools {
    pub use super::dead_letter::{read_all, replay, to_json};
}

use crate::event::Event;
use crate::telemetry::TRACEPARENT;
use crate::topics::Topics;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientContext;
use std::time::Duration;

/// Where the broker is and which topics to use.
#[derive(Debug, Clone, clap::Args)]
pub struct KafkaSettings {
    /// Kafka bootstrap servers, as `host:port[,host:port…]` (cases 2–4; case 1 uses no
    /// Kafka).
    #[arg(
        long = "kafka-brokers",
        env = "KAFKA_BROKERS",
        default_value = "127.0.0.1:9092"
    )]
    pub brokers: String,
    /// Prefix of every topic name; set it when several shops or test runs share one
    /// broker, so their traffic stays apart (empty: the plain names).
    #[arg(
        long = "kafka-topic-prefix",
        env = "KAFKA_TOPIC_PREFIX",
        default_value = ""
    )]
    pub topic_prefix: String,
    /// Partitions of the topics this service creates when they are missing: the most
    /// instances of one service that can share a topic's work.
    ///
    /// Each partition has one owner at a time; the orders in flight per instance are
    /// bounded by `KAFKA_MAX_IN_FLIGHT`, not by partitions. Existing topics keep theirs.
    #[arg(
        long = "kafka-partitions",
        env = "KAFKA_PARTITIONS",
        default_value_t = DEFAULT_PARTITIONS
    )]
    pub partitions: i32,
    /// Events this instance handles at once, over all its partitions; raise it when
    /// throughput is limited by slow handlers.
    ///
    /// Different orders run concurrently, one order's events one after another. Little's
    /// law sizes it: orders/s × seconds per event, e.g. 100/s × a 1 s gateway call = 100.
    #[arg(
        id = "kafka_max_in_flight",
        long = "kafka-max-in-flight",
        value_name = "N",
        env = "KAFKA_MAX_IN_FLIGHT",
        default_value_t = EngineConfig::default().max_in_flight
    )]
    pub max_in_flight: usize,
    /// Events of one partition fetched but not yet committed before fetching from that
    /// partition pauses (it resumes at half); bounds memory while one order retries.
    #[arg(
        id = "kafka_max_uncommitted",
        long = "kafka-max-uncommitted",
        value_name = "N",
        env = "KAFKA_MAX_UNCOMMITTED",
        default_value_t = EngineConfig::default().max_uncommitted
    )]
    pub max_uncommitted: usize,
    /// Seconds running handlers may take to finish at shutdown or when partitions move
    /// to another instance, before they are cancelled (their events come again).
    #[arg(
        id = "kafka_drain_timeout_secs",
        long = "kafka-drain-timeout-secs",
        value_name = "SECS",
        env = "KAFKA_DRAIN_TIMEOUT_SECS",
        default_value_t = EngineConfig::default().drain_timeout.as_secs()
    )]
    pub drain_timeout_secs: u64,
    /// Longest a fetch waits at the broker for new messages, in ms (librdkafka's
    /// `fetch.wait.max.ms`); on tansu every saga hop waits this long, so keep it short.
    //
    // Why: tansu 0.6 answers every fetch only after the whole wait, even when messages
    // are there (its `service/fetch.rs` sleeps the remaining time before returning), so
    // with 50 ms a hop cost ~50 ms. Kafka answers as soon as data arrives; a short wait
    // then costs only idle requests.
    #[arg(
        id = "kafka_fetch_wait_max_ms",
        long = "kafka-fetch-wait-max-ms",
        value_name = "MS",
        env = "KAFKA_FETCH_WAIT_MAX_MS",
        default_value_t = DEFAULT_FETCH_WAIT_MAX_MS
    )]
    pub fetch_wait_max_ms: u32,
    /// A stable name for this instance in its consumer group, e.g. `payment-1` (static
    /// membership, KIP-345); unset: dynamic membership.
    ///
    /// An instance restarted under the same name, after a crash too, takes back its own
    /// partitions at once, without a rebalance. Two running instances must never share a
    /// name. A graceful stop hands its partitions on at once; a crashed instance's wait
    /// until it restarts under its name.
    //
    // Why the stack sets it: on tansu 0.6, after a member is killed (no LeaveGroup), the
    // rebalance that follows can answer the new leader's SyncGroup with an empty
    // assignment, and the partitions stay unowned for minutes (seen in the kill -9 fault
    // scenarios: the new leader assigned itself all three partitions, tansu returned
    // none). A graceful stop leaves the group (the engine unsubscribes before closing);
    // a crashed static member keeps its partitions because tansu 0.6 does not re-form a
    // group when a static member's session times out.
    #[arg(long = "kafka-group-instance-id", env = "KAFKA_GROUP_INSTANCE_ID")]
    pub group_instance_id: Option<String>,
    /// librdkafka debug contexts to log (its `debug` setting, e.g. `cgrp` for the
    /// consumer group protocol); for troubleshooting only, unset in normal operation.
    #[arg(long = "kafka-debug", env = "KAFKA_DEBUG")]
    pub debug: Option<String>,
}

impl KafkaSettings {
    pub fn local(brokers: &str, topic_prefix: &str) -> Self {
        Self {
            brokers: brokers.to_owned(),
            topic_prefix: topic_prefix.to_owned(),
            partitions: DEFAULT_PARTITIONS,
            max_in_flight: EngineConfig::default().max_in_flight,
            max_uncommitted: EngineConfig::default().max_uncommitted,
            drain_timeout_secs: EngineConfig::default().drain_timeout.as_secs(),
            fetch_wait_max_ms: DEFAULT_FETCH_WAIT_MAX_MS,
            group_instance_id: None,
            debug: None,
        }
    }

    /// The consumer engine's limits from these settings (backoff: the engine's default).
    pub fn engine_config(&self) -> EngineConfig {
        EngineConfig {
            max_in_flight: self.max_in_flight,
            max_uncommitted: self.max_uncommitted,
            drain_timeout: Duration::from_secs(self.drain_timeout_secs),
            ..EngineConfig::default()
        }
    }

    pub fn topics(&self) -> Topics {
        Topics::with_prefix(&self.topic_prefix)
    }

    /// A producer tuned for the outbox relay: one order's events must stay in order, so at
    /// most one request is in flight per connection; `linger.ms` is short because every
    /// batch is awaited before the next (measured here: librdkafka's default 5 ms made
    /// every lone message wait; 1 ms still lets a batch travel together).
    pub fn producer(&self) -> KafkaResult<FutureProducer> {
        ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("linger.ms", "1")
            .set("max.in.flight.requests.per.connection", "1")
            .set("message.timeout.ms", "30000")
            .set("acks", "all")
            .create()
    }

    /// An at-least-once consumer in `group_id`, starting from the earliest offset when
    /// the group has none (a new service must see events published before it started).
    pub fn consumer<C: ConsumerContext + 'static>(
        &self,
        group_id: &str,
        context: C,
    ) -> KafkaResult<rdkafka::consumer::StreamConsumer<C>> {
        self.consumer_config(group_id).create_with_context(context)
    }

    /// Like [`KafkaSettings::consumer`], with librdkafka statistics every
    /// [`STATISTICS_INTERVAL_MS`]: the context's `ClientContext::stats` receives them
    /// (give it a [`LagReporter`] to export the consumer lag).
    pub fn consumer_with_statistics<C: ConsumerContext + 'static>(
        &self,
        group_id: &str,
        context: C,
    ) -> KafkaResult<rdkafka::consumer::StreamConsumer<C>> {
        self.consumer_config(group_id)
            .set("statistics.interval.ms", STATISTICS_INTERVAL_MS.to_string())
            .create_with_context(context)
    }

    /// The at-least-once consumer configuration [`KafkaSettings::consumer`] uses.
    pub fn consumer_config(&self, group_id: &str) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", group_id)
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set(
                "session.timeout.ms",
                SESSION_TIMEOUT.as_millis().to_string(),
            )
            .set("heartbeat.interval.ms", "1000")
            .set(
                "fetch.wait.max.ms",
                self.fetch_wait_max_ms.max(1).to_string(),
            );
        if let Some(instance) = &self.group_instance_id {
            config.set("group.instance.id", instance);
        }
        if let Some(debug) = &self.debug {
            config
                .set("debug", debug)
                .set_log_level(rdkafka::config::RDKafkaLogLevel::Debug);
        }
        config
    }

    /// Creates the topics that do not exist yet. Existing ones are left alone.
    pub async fn ensure_topics(&self) -> KafkaResult<()> {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .create()?;
        let topics = self.topics();
        let new_topics: Vec<NewTopic<'_>> = topics
            .all()
            .into_iter()
            .map(|name| NewTopic::new(name, self.partitions, TopicReplication::Fixed(1)))
            .collect();
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        for result in admin.create_topics(&new_topics, &options).await? {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => {
                    tracing::error!(%topic, ?code, "Could not create topic.");
                    return Err(rdkafka::error::KafkaError::AdminOp(code));
                }
            }
        }
        Ok(())
    }
}

/// Headers every published event carries, so tools can route or inspect a message
/// without parsing it.
pub fn event_headers(event_type: &str, event_id: &str) -> OwnedHeaders {
    OwnedHeaders::new()
        .insert(Header {
            key: "event_type",
            value: Some(event_type),
        })
        .insert(Header {
            key: "event_id",
            value: Some(event_id),
        })
        .insert(Header {
            key: "content-type",
            value: Some("application/json"),
        })
}

/// Adds the W3C `traceparent` header (when there is one), so the consumer continues the
/// producer's trace.
pub fn with_trace_context(headers: OwnedHeaders, traceparent: Option<&str>) -> OwnedHeaders {
    match traceparent {
        Some(value) => headers.insert(Header {
            key: TRACEPARENT,
            value: Some(value),
        }),
        None => headers,
    }
}

/// The `traceparent` header of a message, if it has a readable one.
pub fn traceparent_of<M: Message>(message: &M) -> Option<String> {
    let headers = message.headers()?;
    headers
        .iter()
        .find(|header| header.key == TRACEPARENT)
        .and_then(|header| header.value)
        .and_then(|value| std::str::from_utf8(value).ok())
        .map(str::to_owned)
}

/// The span a consumer handles one message in: a child of the producer's span when the
/// message carries a `traceparent` (a new trace otherwise), with the event's ids as
/// fields, so every log line of the handling carries the order's trace id.
pub fn message_span<M: Message>(
    consumer: &str,
    message: &M,
    event: Option<&Event>,
) -> tracing::Span {
    let span = tracing::info_span!(
        "Handling an event",
        consumer,
        topic = message.topic(),
        partition = message.partition(),
        offset = message.offset(),
        event_type = tracing::field::Empty,
        event_id = tracing::field::Empty,
        order_id = tracing::field::Empty,
        trace_id = tracing::field::Empty,
    );
    if let Some(event) = event {
        span.record("event_type", event.event_type().as_str());
        span.record("event_id", tracing::field::display(event.event_id));
        span.record("order_id", tracing::field::display(event.order_id));
    }
    crate::telemetry::continue_trace(&span, traceparent_of(message).as_deref());
    span
}

/// Publishes one event directly (not through an outbox), in the current trace. For tools
/// and tests; services publish through their outbox so the event and the state change
/// commit together.
pub async fn publish(producer: &FutureProducer, topics: &Topics, event: &Event) -> KafkaResult<()> {
    let payload = event.to_json();
    let key = event.key();
    let traceparent = crate::telemetry::current_traceparent();
    let record = FutureRecord::to(topics.for_event(&event.body))
        .key(&key)
        .payload(&payload)
        .headers(with_trace_context(
            event_headers(event.event_type().as_str(), &event.event_id.to_string()),
            traceparent.as_deref(),
        ));
    producer
        .send(record, Duration::from_secs(30))
        .await
        .map(|_| ())
        .map_err(|(err, _)| err)
}

fn commit_on_revoke<C: ConsumerContext>(consumer: &BaseConsumer<C>, rebalance: &Rebalance<'_>) {
    if let Rebalance::Revoke(partitions) = rebalance {
        if partitions.count() == 0 {
            return;
        }
        match consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(())
            | Err(rdkafka::error::KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(error) => tracing::warn!(%error, "Could not commit offsets on revoke."),
        }
    }
}

/// How often librdkafka reports statistics (consumer lag) to a consumer created with
/// [`KafkaSettings::consumer_with_statistics`].
pub const STATISTICS_INTERVAL_MS: u64 = 5000;

/// Exports `saga_consumer_lag_messages{consumer, group, topic, partition}` from
/// librdkafka's statistics: per assigned partition, the high watermark minus the group's
/// committed offset (messages not yet handled and committed). A partition this instance
/// reported and no longer owns is set to 0, so a rebalance leaves no stale lag behind
/// (the new owner reports the real value; aggregate with `max`).
#[derive(Debug)]
pub struct LagReporter {
    consumer: String,
    group: String,
    owned: std::sync::Mutex<std::collections::HashSet<(String, i32)>>,
}

impl LagReporter {
    pub fn new(consumer: &str, group: &str) -> Self {
        Self {
            consumer: consumer.to_owned(),
            group: group.to_owned(),
            owned: Default::default(),
        }
    }

    pub fn record(&self, statistics: &rdkafka::Statistics) {
        let mut owned = self
            .owned
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut now_owned = std::collections::HashSet::new();
        for (topic, stats) in &statistics.topics {
            for (&partition, p) in &stats.partitions {
                // -1 is librdkafka's internal "unassigned" partition.
                if partition < 0 || !p.desired {
                    continue;
                }
                let lag = if p.consumer_lag >= 0 {
                    p.consumer_lag
                } else if p.consumer_lag_stored >= 0 {
                    p.consumer_lag_stored
                } else {
                    continue; // nothing known yet (no watermark fetched)
                };
                self.gauge(topic, partition).set(lag as f64);
                now_owned.insert((topic.clone(), partition));
            }
        }
        for (topic, partition) in owned.difference(&now_owned) {
            self.gauge(topic, *partition).set(0.0);
        }
        *owned = now_owned;
    }

    fn gauge(&self, topic: &str, partition: i32) -> metrics::Gauge {
        metrics::gauge!(
            "saga_consumer_lag_messages",
            "consumer" => self.consumer.clone(),
            "group" => self.group.clone(),
            "topic" => topic.to_owned(),
            "partition" => partition.to_string()
        )
    }
}

/// A plain consumer's context (tools and tests; services run [`ConsumerLoop`]): commits
/// the stored offsets on revoke and exports the consumer lag from librdkafka's
/// statistics.
#[derive(Debug)]
pub struct SagaConsumerContext {
    lag: LagReporter,
}

impl SagaConsumerContext {
    pub fn new(consumer: &str, group: &str) -> Self {
        Self {
            lag: LagReporter::new(consumer, group),
        }
    }
}

impl ClientContext for SagaConsumerContext {
    fn stats(&self, statistics: rdkafka::Statistics) {
        self.lag.record(&statistics);
    }

    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        log_librdkafka(&self.lag.consumer, level, fac, message);
    }
}

/// librdkafka's own log lines, as tracing events of target `librdkafka` (debug lines
/// appear only when `KAFKA_DEBUG` asks for them, so they are logged at info). Every
/// consumer context's `ClientContext::log` calls this.
pub fn log_librdkafka(
    consumer: &str,
    level: rdkafka::config::RDKafkaLogLevel,
    fac: &str,
    message: &str,
) {
    use rdkafka::config::RDKafkaLogLevel as L;
    match level {
        L::Emerg | L::Alert | L::Critical | L::Error => {
            tracing::error!(target: "librdkafka", consumer, fac, "{message}")
        }
        L::Warning => tracing::warn!(target: "librdkafka", consumer, fac, "{message}"),
        L::Notice | L::Info | L::Debug => {
            tracing::info!(target: "librdkafka", consumer, fac, "{message}")
        }
    }
}

impl ConsumerContext for SagaConsumerContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        commit_on_revoke(consumer, rebalance);
    }

    /// Logs what this instance now owns: after a crash or a rebalance, the first question
    /// an operator asks is who holds which partition.
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let consumer = &self.lag.consumer;
        match rebalance {
            Rebalance::Assign(partitions) => tracing::info!(
                consumer, partitions = %partition_list(partitions), "Partitions assigned."
            ),
            Rebalance::Revoke(partitions) => tracing::info!(
                consumer, partitions = %partition_list(partitions), "Partitions revoked."
            ),
            Rebalance::Error(error) => tracing::warn!(consumer, %error, "Rebalance failed."),
        }
    }
}

/// `topic[partition]` for each entry, comma-separated.
fn partition_list(partitions: &rdkafka::TopicPartitionList) -> String {
    partitions
        .elements()
        .iter()
        .map(|p| format!("{}[{}]", p.topic(), p.partition()))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::KafkaSettings;
    use clap::CommandFactory;

    /// The services flatten `KafkaSettings` into their own settings; this stands for them.
    #[derive(clap::Parser)]
    #[command(name = "service", about = "A service that uses Kafka.")]
    struct Service {
        #[command(flatten)]
        kafka: KafkaSettings,
    }

    #[test]
    fn every_kafka_option_is_described() {
        crate::cli::assert_every_option_is_described(Service::command());
    }
}
