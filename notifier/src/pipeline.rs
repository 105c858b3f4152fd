//! The consumer pipeline: one rdkafka `StreamConsumer`, many mails in flight.
//!
//! * **Ordering.** Messages are routed to *lanes* by Kafka key (the order id): one
//!   order's events are handled one after another, in the order they were fetched, while
//!   different orders proceed concurrently. A mail waiting for a retry holds up only its
//!   own order. Messages without a key share one lane per partition.
//! * **Bounded concurrency and backpressure.** Each fetched message holds a permit of a
//!   semaphore of `max_in_flight` until its work is finished; when none is free the
//!   fetcher stops calling `recv` (librdkafka's own prefetch queue is bounded too). The
//!   fetcher also pauses while more than `max_uncommitted` offsets wait to be stored.
//! * **At-least-once offsets, in order.** The [`OffsetTracker`] keeps, per partition,
//!   the offsets fetched and not yet finished; an offset is stored (and auto-committed by
//!   librdkafka) only up to the first unfinished one, so offset N+1 is never stored
//!   while N is in flight, however the lanes interleave.
//! * **Poison messages** (undecodable, or failing for a reason retrying cannot fix) are
//!   published to the dead-letter topic with headers naming the source topic, partition,
//!   offset and the reason; then their offset counts as finished. A dead letter that
//!   cannot be published holds its offset back rather than losing the message.
//! * **Rebalances.** When partitions are revoked, the work already fetched from them is
//!   finished first (up to `shutdown_timeout`), then their offsets are committed, so the
//!   next owner does not send the same mails concurrently.
//! * **Lost assignments.** A watchdog ([`shared_events::kafka::watch_assignment`])
//!   rejoins the group when this consumer owns nothing while events stand still in
//!   partitions nobody consumes (tansu can lose an assignment after a restart).
//! * **Shutdown.** Cancelling stops fetching; mails being sent finish (one waiting for a
//!   retry is abandoned, its event comes again); after `shutdown_timeout` the rest is
//!   abandoned too; the stored offsets are committed synchronously and the consumer
//!   leaves its group.

use crate::service::{HandleError, MailService, Outcome, Stop};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use shared_events::kafka::{DeadLetter, DeadLetterPublisher, KafkaSettings, LagReporter};
use shared_events::Event;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// The `consumer` label of the notifier's shared consumer metrics
/// (`saga_dead_letters_total`, `saga_consumer_lag_messages`).
pub const CONSUMER: &str = "notifier";

#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub consumer_group: String,
    pub topics: Vec<String>,
    pub max_in_flight: usize,
    pub max_uncommitted: usize,
    pub shutdown_timeout: Duration,
}

/// Per partition: what was fetched and not finished, and what was stored.
#[derive(Debug, Default)]
struct PartitionOffsets {
    /// Fetched, not finished.
    pending: BTreeSet<i64>,
    /// Of `pending`, those given up at shutdown: they hold the position back but are no
    /// longer being worked on.
    abandoned: BTreeSet<i64>,
    /// The next offset to consume as last stored (or the first offset fetched).
    stored: Option<i64>,
    highest_fetched: Option<i64>,
}

impl PartitionOffsets {
    /// Where consumption should resume: the first unfinished offset, or past the last
    /// fetched one.
    fn position(&self) -> Option<i64> {
        self.pending
            .first()
            .copied()
            .or_else(|| self.highest_fetched.map(|h| h + 1))
    }

    fn in_flight(&self) -> usize {
        self.pending.len() - self.abandoned.len()
    }

    fn uncommitted(&self) -> usize {
        match (self.highest_fetched, self.stored) {
            (Some(high), Some(stored)) => usize::try_from(high + 1 - stored).unwrap_or(0),
            _ => 0,
        }
    }
}

/// Which offsets may be stored: per partition, everything before the first unfinished
/// offset. Pure bookkeeping; the pipeline stores what it returns.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    partitions: HashMap<(String, i32), PartitionOffsets>,
}

impl OffsetTracker {
    /// A message was fetched.
    pub fn fetched(&mut self, topic: &str, partition: i32, offset: i64) {
        let p = self
            .partitions
            .entry((topic.to_owned(), partition))
            .or_default();
        p.pending.insert(offset);
        p.highest_fetched = Some(p.highest_fetched.map_or(offset, |h| h.max(offset)));
        if p.stored.is_none() {
            p.stored = Some(offset);
        }
    }

    /// A message's work is finished. Returns the next offset to store for its partition
    /// when that moved forward.
    pub fn finished(&mut self, topic: &str, partition: i32, offset: i64) -> Option<i64> {
        let p = self.partitions.get_mut(&(topic.to_owned(), partition))?;
        if !p.pending.remove(&offset) {
            return None; // forgotten (revoked) meanwhile, or already finished
        }
        p.abandoned.remove(&offset);
        let position = p.position()?;
        if p.stored.is_some_and(|stored| position <= stored) {
            return None;
        }
        p.stored = Some(position);
        Some(position)
    }

    /// A message's work was given up (shutdown): its offset is not stored and holds back
    /// its partition's position, but it no longer counts as in flight.
    pub fn abandoned(&mut self, topic: &str, partition: i32, offset: i64) {
        if let Some(p) = self.partitions.get_mut(&(topic.to_owned(), partition)) {
            if p.pending.contains(&offset) {
                p.abandoned.insert(offset);
            }
        }
    }

    /// The partition was revoked: its in-flight work no longer stores offsets.
    pub fn forget(&mut self, topic: &str, partition: i32) {
        self.partitions.remove(&(topic.to_owned(), partition));
    }

    /// Offsets fetched and not yet stored, over all partitions.
    pub fn uncommitted(&self) -> usize {
        self.partitions
            .values()
            .map(PartitionOffsets::uncommitted)
            .sum()
    }

    /// Messages fetched and not yet finished.
    pub fn in_flight(&self) -> usize {
        self.partitions
            .values()
            .map(PartitionOffsets::in_flight)
            .sum()
    }

    /// Messages fetched from these partitions and not yet finished.
    pub fn in_flight_in(&self, partitions: &[(String, i32)]) -> usize {
        partitions
            .iter()
            .filter_map(|key| self.partitions.get(key))
            .map(PartitionOffsets::in_flight)
            .sum()
    }
}

#[derive(Clone, Default)]
struct Shared {
    tracker: Arc<Mutex<OffsetTracker>>,
    /// Woken whenever offsets are stored or forgotten (the fetcher may be waiting).
    progress: Arc<Notify>,
}

impl Shared {
    fn tracker(&self) -> MutexGuard<'_, OffsetTracker> {
        self.tracker
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// On revocation: lets the work already fetched from the revoked partitions finish
/// (up to `drain_timeout`), commits the stored offsets, then forgets the partitions. So
/// the next owner starts after what this instance finished instead of sending the same
/// mails concurrently.
pub struct PipelineContext {
    shared: Shared,
    drain_timeout: Duration,
    /// Exports the consumer lag from librdkafka's statistics.
    lag: LagReporter,
}

impl PipelineContext {
    /// Waits until nothing fetched from `partitions` is unfinished, or the timeout.
    /// Returns how many are still unfinished.
    fn drain(&self, partitions: &[(String, i32)]) -> usize {
        let wait = || {
            let deadline = std::time::Instant::now() + self.drain_timeout;
            loop {
                let busy = self.shared.tracker().in_flight_in(partitions);
                if busy == 0 || std::time::Instant::now() >= deadline {
                    return busy;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        };
        // The callback runs inside `recv`, on a runtime thread: hand the thread's other
        // tasks (the mails being finished) to another worker while waiting. A
        // single-threaded runtime cannot wait here without stalling those very tasks.
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::CurrentThread) => {
                self.shared.tracker().in_flight_in(partitions)
            }
            Ok(_) => tokio::task::block_in_place(wait),
            Err(_) => wait(),
        }
    }
}

impl ClientContext for PipelineContext {
    fn stats(&self, statistics: rdkafka::Statistics) {
        self.lag.record(&statistics);
    }

    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        shared_events::kafka::log_librdkafka(CONSUMER, level, fac, message);
    }
}

impl ConsumerContext for PipelineContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(partitions) => {
                if partitions.count() == 0 {
                    return;
                }
                let revoked: Vec<(String, i32)> = partitions
                    .elements()
                    .iter()
                    .map(|p| (p.topic().to_owned(), p.partition()))
                    .collect();
                let unfinished = self.drain(&revoked);
                if unfinished > 0 {
                    tracing::warn!(
                        unfinished,
                        "Partitions revoked with mails still unfinished; their events will come again to the next owner."
                    );
                }
                commit(consumer, "revoke");
                let mut tracker = self.shared.tracker();
                for (topic, partition) in &revoked {
                    tracker.forget(topic, *partition);
                }
                drop(tracker);
                self.shared.progress.notify_waiters();
                tracing::info!(partitions = partitions.count(), "Partitions revoked.");
            }
            Rebalance::Assign(partitions) => {
                let mut tracker = self.shared.tracker();
                for p in partitions.elements() {
                    tracker.forget(p.topic(), p.partition());
                }
                tracing::info!(partitions = partitions.count(), "Partitions assigned.");
            }
            Rebalance::Error(error) => tracing::warn!(%error, "Rebalance error."),
        }
    }
}

fn commit<C: ConsumerContext>(consumer: &impl Consumer<C>, when: &str) {
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) => tracing::debug!(when, "Offsets committed."),
        Err(rdkafka::error::KafkaError::ConsumerCommit(
            rdkafka::error::RDKafkaErrorCode::NoOffset,
        )) => {}
        Err(error) => tracing::warn!(%error, when, "Could not commit offsets."),
    }
}

/// One fetched message and the in-flight permit it holds until finished.
struct Work {
    message: OwnedMessage,
    _permit: OwnedSemaphorePermit,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum LaneKey {
    /// One order (the Kafka key), across topics.
    Key(Vec<u8>),
    /// Keyless messages keep their partition's order.
    Partition(String, i32),
}

impl LaneKey {
    fn of(message: &OwnedMessage) -> Self {
        match message.key() {
            Some(key) if !key.is_empty() => LaneKey::Key(key.to_vec()),
            _ => LaneKey::Partition(message.topic().to_owned(), message.partition()),
        }
    }
}

pub struct Pipeline {
    consumer: Arc<StreamConsumer<PipelineContext>>,
    shared: Shared,
    inner: Arc<Inner>,
    config: PipelineConfig,
}

struct Inner {
    consumer: Arc<StreamConsumer<PipelineContext>>,
    /// The consumer group, named in dead letters.
    group: String,
    shared: Shared,
    service: MailService,
    dead_letters: DeadLetterPublisher,
    lanes: Mutex<HashMap<LaneKey, VecDeque<Work>>>,
    stop: Stop,
    tasks: TaskTracker,
}

impl Pipeline {
    /// Creates the consumer and subscribes; nothing is fetched before [`Pipeline::run`].
    pub fn new(
        kafka: &KafkaSettings,
        config: PipelineConfig,
        service: MailService,
        dead_letters: DeadLetterPublisher,
    ) -> rdkafka::error::KafkaResult<Self> {
        let shared = Shared::default();
        let consumer = Arc::new(kafka.consumer_with_statistics(
            &config.consumer_group,
            PipelineContext {
                shared: shared.clone(),
                drain_timeout: config.shutdown_timeout,
                lag: LagReporter::new(CONSUMER, &config.consumer_group),
            },
        )?);
        let topics: Vec<&str> = config.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
        let inner = Arc::new(Inner {
            consumer: consumer.clone(),
            group: config.consumer_group.clone(),
            shared: shared.clone(),
            service,
            dead_letters,
            lanes: Mutex::new(HashMap::new()),
            stop: Stop::default(),
            tasks: TaskTracker::new(),
        });
        Ok(Self {
            consumer,
            shared,
            inner,
            config,
        })
    }

    /// Runs until `shutdown` is cancelled, then drains, commits and leaves the group.
    pub async fn run(self, shutdown: CancellationToken) {
        tracing::info!(group = %self.config.consumer_group, topics = ?self.config.topics, "Pipeline started.");
        let permits = Arc::new(Semaphore::new(self.config.max_in_flight.max(1)));
        // Shutdown reaches the workers through the soft stop.
        let soft = self.inner.stop.soft.clone();
        let forward = {
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                shutdown.cancelled().await;
                soft.cancel();
            })
        };

        let watchdog = tokio::spawn(shared_events::kafka::watch_assignment(
            CONSUMER.to_owned(),
            self.consumer.clone(),
            self.config.topics.clone(),
            shutdown.clone(),
        ));
        self.fetch(&shutdown, &permits).await;
        watchdog.abort();

        // Drain: finish what is being sent, abandon what waits.
        self.inner.tasks.close();
        let in_flight = self.shared.tracker().in_flight();
        tracing::info!(in_flight, "Pipeline stopping; finishing in-flight mails.");
        if tokio::time::timeout(self.config.shutdown_timeout, self.inner.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("Shutdown timeout; abandoning unfinished mails (they will come again).");
            self.inner.stop.hard.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(5), self.inner.tasks.wait()).await;
        }
        forward.abort();

        // Commit what was stored and leave the group, off the async threads (both block).
        let consumer = self.consumer;
        drop(self.inner);
        let left = tokio::task::spawn_blocking(move || {
            commit(consumer.as_ref(), "shutdown");
            consumer.unsubscribe();
            drop(consumer);
        })
        .await;
        match left {
            Ok(()) => {}
            // The runtime is going away (e.g. a test ended without awaiting shutdown).
            Err(error) if error.is_cancelled() => {
                tracing::debug!("Runtime shut down before the consumer was closed.");
            }
            Err(error) => tracing::warn!(%error, "Closing the consumer failed."),
        }
        tracing::info!("Pipeline stopped.");
    }

    async fn fetch(&self, shutdown: &CancellationToken, permits: &Arc<Semaphore>) {
        loop {
            let permit = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                permit = permits.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => return,
                },
            };
            if !self.wait_for_commit_room(shutdown).await {
                return;
            }
            metrics::gauge!("notifier_in_flight_messages")
                .set((self.config.max_in_flight.max(1) - permits.available_permits()) as f64);
            let message = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                message = self.consumer.recv() => message,
            };
            match message {
                Ok(message) => {
                    let message = message.detach();
                    self.shared.tracker().fetched(
                        message.topic(),
                        message.partition(),
                        message.offset(),
                    );
                    metrics::counter!("notifier_messages_consumed_total", "topic" => message.topic().to_owned())
                        .increment(1);
                    self.inner.dispatch(Work {
                        message,
                        _permit: permit,
                    });
                }
                Err(error) => {
                    tracing::warn!(%error, "Kafka receive failed.");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    }
                }
            }
        }
    }

    /// Waits while too many offsets wait to be stored. False on shutdown.
    async fn wait_for_commit_room(&self, shutdown: &CancellationToken) -> bool {
        loop {
            let progressed = self.shared.progress.notified();
            tokio::pin!(progressed);
            progressed.as_mut().enable();
            let uncommitted = self.shared.tracker().uncommitted();
            metrics::gauge!("notifier_uncommitted_offsets").set(uncommitted as f64);
            if uncommitted < self.config.max_uncommitted.max(1) {
                return true;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return false,
                _ = progressed => {}
            }
        }
    }
}

impl Inner {
    fn lanes(&self) -> MutexGuard<'_, HashMap<LaneKey, VecDeque<Work>>> {
        self.lanes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues the message behind its order's earlier messages, or starts a lane for it.
    fn dispatch(self: &Arc<Self>, work: Work) {
        let key = LaneKey::of(&work.message);
        {
            let mut lanes = self.lanes();
            if let Some(queue) = lanes.get_mut(&key) {
                queue.push_back(work);
                return;
            }
            lanes.insert(key.clone(), VecDeque::new());
        }
        let inner = self.clone();
        self.tasks
            .spawn(async move { inner.run_lane(key, work).await });
    }

    async fn run_lane(self: Arc<Self>, key: LaneKey, first: Work) {
        let mut next = Some(first);
        while let Some(work) = next {
            if self.stop.soft.is_cancelled() {
                // Not started: its offset stays unstored; it comes again.
                self.abandoned(&work.message);
            } else {
                self.process(work).await;
            }
            let mut lanes = self.lanes();
            next = match lanes.get_mut(&key).and_then(VecDeque::pop_front) {
                Some(work) => Some(work),
                None => {
                    lanes.remove(&key);
                    None
                }
            };
        }
    }

    /// Handles one message in its trace: a child of the span that published the event
    /// (its `traceparent` header), so the mail's log lines carry the order's trace id.
    async fn process(&self, work: Work) {
        let decoded = Event::from_json(work.message.payload().unwrap_or_default());
        let span =
            shared_events::kafka::message_span(CONSUMER, &work.message, decoded.as_ref().ok());
        self.process_decoded(work, decoded).instrument(span).await
    }

    async fn process_decoded(
        &self,
        work: Work,
        decoded: Result<Event, shared_events::DecodeError>,
    ) {
        let message = &work.message;
        let finished = match decoded {
            Err(error) => {
                metrics::counter!("notifier_events_total", "event_type" => "undecodable", "outcome" => "dead_letter")
                    .increment(1);
                self.dead_letter(message, &error.to_string()).await
            }
            Ok(event) => {
                let event_type = event.event_type().as_str();
                match self.service.handle(&event, &self.stop).await {
                    Ok(outcome) => {
                        let outcome = match outcome {
                            Outcome::NoMail => "no_mail",
                            Outcome::Sent(_) => "sent",
                            Outcome::Failed(_) => "failed",
                            Outcome::AlreadyDone(_) => "duplicate",
                        };
                        metrics::counter!("notifier_events_total", "event_type" => event_type, "outcome" => outcome)
                            .increment(1);
                        true
                    }
                    Err(HandleError::Interrupted) => false,
                    Err(error) => {
                        metrics::counter!("notifier_events_total", "event_type" => event_type, "outcome" => "dead_letter")
                            .increment(1);
                        self.dead_letter(message, &error.to_string()).await
                    }
                }
            }
        };
        if finished {
            self.finished(message);
        } else {
            self.abandoned(message);
        }
    }

    fn abandoned(&self, message: &OwnedMessage) {
        self.shared
            .tracker()
            .abandoned(message.topic(), message.partition(), message.offset());
    }

    fn finished(&self, message: &OwnedMessage) {
        let next =
            self.shared
                .tracker()
                .finished(message.topic(), message.partition(), message.offset());
        if let Some(next) = next {
            let mut offsets = TopicPartitionList::new();
            let stored = offsets
                .add_partition_offset(message.topic(), message.partition(), Offset::Offset(next))
                .and_then(|()| self.consumer.store_offsets(&offsets));
            if let Err(error) = stored {
                tracing::debug!(%error, topic = message.topic(), partition = message.partition(), "Could not store offset (revoked?).");
            }
            self.shared.progress.notify_waiters();
        }
    }

    /// Publishes a dead letter, retrying until it is out. False if shutdown came first
    /// (the offset then stays unstored and the message comes again).
    async fn dead_letter(&self, message: &OwnedMessage, reason: &str) -> bool {
        let letter = DeadLetter {
            source_topic: message.topic().to_owned(),
            source_partition: message.partition(),
            source_offset: message.offset(),
            reason: reason.to_owned(),
            consumer: self.group.clone(),
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().unwrap_or_default().to_vec(),
        };
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let published = tokio::select! {
                _ = self.stop.hard.cancelled() => return false,
                published = self.dead_letters.publish(&letter) => published,
            };
            match published {
                Ok(()) => {
                    metrics::counter!("saga_dead_letters_total", "consumer" => CONSUMER)
                        .increment(1);
                    tracing::warn!(
                        topic = %letter.source_topic, partition = letter.source_partition,
                        offset = letter.source_offset, %reason, "Message dead-lettered."
                    );
                    return true;
                }
                Err(error) => {
                    tracing::error!(%error, attempt, "Could not publish a dead letter; retrying.");
                    let wait =
                        Duration::from_millis(200u64.saturating_mul(u64::from(attempt.min(25))));
                    tokio::select! {
                        _ = self.stop.soft.cancelled() => return false,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_stored_only_up_to_the_first_unfinished_one() {
        let mut t = OffsetTracker::default();
        for offset in 10..15 {
            t.fetched("orders", 0, offset);
        }
        assert_eq!(t.uncommitted(), 5);
        // 11 and 12 finish before 10: nothing may be stored.
        assert_eq!(t.finished("orders", 0, 11), None);
        assert_eq!(t.finished("orders", 0, 12), None);
        assert_eq!(t.in_flight(), 3);
        // 10 finishes: everything up to the still-running 13 can be stored.
        assert_eq!(t.finished("orders", 0, 10), Some(13));
        assert_eq!(t.uncommitted(), 2);
        assert_eq!(t.finished("orders", 0, 14), None);
        assert_eq!(t.finished("orders", 0, 13), Some(15));
        assert_eq!(t.uncommitted(), 0);
        // Finishing twice changes nothing.
        assert_eq!(t.finished("orders", 0, 13), None);
    }

    #[test]
    fn partitions_are_tracked_separately() {
        let mut t = OffsetTracker::default();
        t.fetched("orders", 0, 5);
        t.fetched("orders", 1, 7);
        t.fetched("payments", 0, 1);
        assert_eq!(t.finished("orders", 1, 7), Some(8));
        assert_eq!(t.finished("payments", 0, 1), Some(2));
        assert_eq!(t.in_flight(), 1);
        assert_eq!(t.finished("orders", 0, 5), Some(6));
    }

    #[test]
    fn abandoned_work_holds_the_position_but_is_not_in_flight() {
        let mut t = OffsetTracker::default();
        for offset in 0..3 {
            t.fetched("orders", 0, offset);
        }
        t.abandoned("orders", 0, 0);
        assert_eq!(t.in_flight(), 2);
        assert_eq!(t.in_flight_in(&[("orders".to_owned(), 0)]), 2);
        assert_eq!(t.finished("orders", 0, 1), None);
        assert_eq!(t.finished("orders", 0, 2), None, "offset 0 was never done");
        assert_eq!(t.in_flight(), 0);
        assert_eq!(t.uncommitted(), 3);
    }

    #[test]
    fn a_revoked_partition_stores_nothing_more() {
        let mut t = OffsetTracker::default();
        t.fetched("orders", 0, 1);
        t.fetched("orders", 0, 2);
        t.forget("orders", 0);
        assert_eq!(t.uncommitted(), 0);
        assert_eq!(t.finished("orders", 0, 1), None);
        // Re-assigned: starts afresh from what is fetched again.
        t.fetched("orders", 0, 1);
        assert_eq!(t.finished("orders", 0, 1), Some(2));
    }
}
