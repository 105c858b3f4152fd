//! The consumer engine every Kafka consumer of the shop runs (order, payment, notifier,
//! mailer-blocking): one rdkafka `StreamConsumer`, many orders in flight, each order's
//! events strictly in order. The semantics follow Confluent Parallel Consumer's `KEY`
//! mode and Eventuate's swimlanes (see `shared/reference/parallel-consumers.md`):
//!
//! * **Lanes by key.** A fetched message joins the lane of its Kafka key (the order id,
//!   across topics): one order's events are handled one after another in fetch order,
//!   different orders concurrently. Keyless messages share one lane per partition. The
//!   fetch loop only dispatches; handlers run on their own tasks, never on librdkafka's
//!   poll path, so a slow handler cannot get the member evicted.
//! * **Bounded.** A message holds a permit of `max_in_flight` from fetch until finished;
//!   with none free the loop stops calling `recv`. A partition whose fetched-but-unstored
//!   offsets reach `max_uncommitted` (one order retrying holds its partition's commit
//!   position back) is paused until it drains to half of that, so memory stays bounded
//!   while the other partitions flow. librdkafka resumes a paused partition after the
//!   last message it handed out, so nothing is skipped.
//! * **Offsets at the low-water mark** ([`OffsetTracker`]): stored only up to the first
//!   unfinished message of each partition; librdkafka auto-commits what was stored.
//! * **Non-blocking retries.** A transient failure is retried inside its own lane with
//!   capped exponential backoff and jitter ([`crate::retry::Backoff`]) for as long as it
//!   stays transient — it delays its order only, and is never dead-lettered. Only what is
//!   permanently wrong (undecodable, unknown version, rejected by the handler) goes to the
//!   dead-letter topic, with its reason; a dead letter that cannot be published holds its
//!   offset back rather than losing the message. `saga_consumer_oldest_retry_seconds`
//!   says how long the longest-retrying message has been failing.
//! * **Revoke.** Before a partition is given up: work not started and retry waits of that
//!   partition are abandoned at once, attempts already running get `drain_timeout` to
//!   finish, then they are cancelled (their futures dropped); the stored offsets are
//!   committed; only then does the rebalance go on. So two instances never work the same
//!   order at once, and the next owner starts after what this one finished. Results that
//!   arrive for an earlier assignment of a partition are ignored.
//! * **Shutdown** works the same way for every partition, then leaves the group.
//!
//! Size: the engine's parts (lanes, the in-flight bound, offsets at the low-water mark,
//! pausing, the revoke and leaving the group) share one state and one loop whose
//! invariants span them; the offset tracker, dead letters and the watchdog are modules
//! of their own.

use super::offsets::{OffsetTracker, Partition};
use super::{DeadLetter, DeadLetterPublisher, KafkaSettings, LagReporter};
use crate::event::Event;
use crate::retry::Backoff;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// A service's reaction to one event. It must be idempotent: the same event may arrive
/// again after a crash or a rebalance, and an attempt may be cancelled part-way (its
/// future dropped) when the partition is revoked.
pub trait EventHandler: Send + Sync + 'static {
    fn handle(&self, event: &Event) -> impl Future<Output = Result<(), HandlerError>> + Send;

    /// Called after a transient failure, before the wait for the next attempt, so a
    /// service can show the retry where its users look (the order's timeline). Best
    /// effort: what it cannot record is only logged.
    fn retrying(
        &self,
        _event: &Event,
        _attempt: u32,
        _error: &anyhow::Error,
    ) -> impl Future<Output = ()> + Send {
        async {}
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// A dependency is down or slow (database, gateway, SMTP, MongoDB, broker): retried
    /// for as long as it lasts.
    #[error("transient failure: {0:#}")]
    Transient(anyhow::Error),
    /// Retrying cannot help: the event contradicts what the service knows.
    #[error("permanent failure: {0:#}")]
    Permanent(anyhow::Error),
}

/// How much a consumer takes on at once, and how it waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineConfig {
    /// Messages fetched and not yet finished, over all lanes.
    pub max_in_flight: usize,
    /// Offsets of one partition fetched and not yet stored before it is paused.
    pub max_uncommitted: usize,
    /// On revoke and shutdown: how long running attempts may take to finish.
    pub drain_timeout: Duration,
    /// Between attempts of a transiently failing message.
    pub backoff: Backoff,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_in_flight: 256,
            max_uncommitted: 2_000,
            drain_timeout: Duration::from_secs(10),
            backoff: Backoff::default(),
        }
    }
}

/// A consumer's engine: create with [`ConsumerLoop::new`], run with [`ConsumerLoop::run`].
pub struct ConsumerLoop<H> {
    consumer: Arc<StreamConsumer<EngineContext>>,
    topics: Vec<String>,
    inner: Arc<Inner<H>>,
}

/// Cancellation of one assignment of one partition (children of the engine's own).
#[derive(Clone)]
struct Assignment {
    /// Stop starting attempts and stop waiting between them.
    soft: CancellationToken,
    /// Drop the running attempt.
    hard: CancellationToken,
}

/// What the fetch loop, the lanes and the rebalance callback share.
struct Shared {
    name: String,
    config: EngineConfig,
    tracker: Mutex<OffsetTracker>,
    assignments: Mutex<HashMap<Partition, Assignment>>,
    paused: Mutex<HashSet<Partition>>,
    /// Messages failing transiently now, with when they first failed.
    retrying: Mutex<HashMap<u64, Instant>>,
    /// Lanes with the work queued behind each lane's running message.
    lanes: Mutex<HashMap<LaneKey, VecDeque<Work>>>,
    root: Assignment,
    next_work: AtomicU64,
    /// Between a revoke and the assignment that follows it: a rebalance is under way.
    rebalancing: AtomicBool,
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

struct Inner<H> {
    shared: Arc<Shared>,
    consumer: Arc<StreamConsumer<EngineContext>>,
    group: String,
    handler: H,
    dead_letters: DeadLetterPublisher,
    tasks: TaskTracker,
}

/// One fetched message, the assignment it belongs to and the in-flight permit it holds
/// until finished.
struct Work {
    id: u64,
    message: OwnedMessage,
    generation: u64,
    assignment: Assignment,
    _permit: OwnedSemaphorePermit,
}

impl Work {
    fn partition(&self) -> Partition {
        (self.message.topic().to_owned(), self.message.partition())
    }
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

/// How one message ended.
enum Handled {
    Done,
    /// Permanently wrong: dead-letter it with this reason.
    Rejected(String),
    /// Given up (revoke or shutdown): the message comes again.
    Interrupted,
}

impl<H: EventHandler> ConsumerLoop<H> {
    /// Subscribes `group_id` to `topics` with the engine limits of `settings`. `name`
    /// labels the consumer in logs and metrics.
    pub fn new(
        name: &str,
        settings: &KafkaSettings,
        group_id: &str,
        topics: &[&str],
        handler: H,
        dead_letters: DeadLetterPublisher,
    ) -> rdkafka::error::KafkaResult<Self> {
        Self::with_config(
            name,
            settings,
            group_id,
            topics,
            handler,
            dead_letters,
            settings.engine_config(),
        )
    }

    /// [`ConsumerLoop::new`] with explicit limits.
    pub fn with_config(
        name: &str,
        settings: &KafkaSettings,
        group_id: &str,
        topics: &[&str],
        handler: H,
        dead_letters: DeadLetterPublisher,
        config: EngineConfig,
    ) -> rdkafka::error::KafkaResult<Self> {
        let shared = Arc::new(Shared::new(name, config));
        let context = EngineContext {
            shared: shared.clone(),
            lag: LagReporter::new(name, group_id),
        };
        let consumer = Arc::new(settings.consumer_with_statistics(group_id, context)?);
        consumer.subscribe(topics)?;
        describe(name);
        let inner = Arc::new(Inner {
            shared,
            consumer: consumer.clone(),
            group: group_id.to_owned(),
            handler,
            dead_letters,
            tasks: TaskTracker::new(),
        });
        Ok(Self {
            consumer,
            topics: topics.iter().map(|t| (*t).to_owned()).collect(),
            inner,
        })
    }

    /// Consumes until `shutdown` is cancelled; then abandons what waits, lets running
    /// attempts finish (up to the drain timeout), commits what was stored and leaves
    /// the group.
    pub async fn run(self, shutdown: CancellationToken) {
        let name = self.inner.shared.name.clone();
        tracing::info!(consumer = %name, topics = ?self.topics, "Consumer started.");
        let watchdog = tokio::spawn(super::watch_assignment(
            name.clone(),
            self.consumer.clone(),
            self.topics.clone(),
            shutdown.clone(),
        ));
        let gauges = tokio::spawn(report_gauges(
            self.inner.shared.clone(),
            self.consumer.clone(),
            shutdown.clone(),
        ));
        self.inner.fetch(&shutdown).await;
        watchdog.abort();
        gauges.abort();
        self.stop().await;
        tracing::info!(consumer = %name, "Consumer stopped.");
    }

    async fn stop(self) {
        let shared = &self.inner.shared;
        shared.root.soft.cancel();
        self.inner.tasks.close();
        let in_flight = locked(&shared.tracker).in_flight();
        tracing::info!(consumer = %shared.name, in_flight, "Consumer stopping; finishing running work.");
        let drain = shared.config.drain_timeout;
        if tokio::time::timeout(drain, self.inner.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(consumer = %shared.name, "Drain timeout at shutdown; cancelling running work (it comes again).");
            shared.root.hard.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(5), self.inner.tasks.wait()).await;
        }
        let (consumer, shared, name) = (self.consumer, shared.clone(), shared.name.clone());
        drop(self.inner);
        leave_group(consumer, shared, name).await;
    }
}

/// How long a stopping consumer waits for a rebalance under way to end, and then for its
/// partitions to be revoked, before it closes.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Commits, then leaves the group so its partitions move on at once. librdkafka sends no
/// LeaveGroup when a static member (KIP-345) closes, only when it unsubscribes, and only
/// once the revoke that starts has been served: so the consumer's queue is served until
/// nothing is assigned (events it still hands out are dropped unstored: they come again
/// to the next owner). Closing then waits for the broker's answer to the leave. Why it
/// matters: tansu 0.6 re-forms a group after a missed heartbeat only for dynamic
/// members, and forgets a leave that arrives while the group is forming (the generation
/// then completes with the leaver's share assigned to it): a member that stopped without
/// leaving a formed group kept its partitions for good, and their events waited (the
/// fault suite's notifier scale-down). So a stop during a rebalance first waits for the
/// rebalance to end.
async fn leave_group(
    consumer: Arc<StreamConsumer<EngineContext>>,
    shared: Arc<Shared>,
    name: String,
) {
    let deadline = Instant::now() + LEAVE_TIMEOUT;
    let serve = || tokio::time::timeout(Duration::from_millis(100), consumer.recv());
    while shared.rebalancing.load(Ordering::SeqCst) && Instant::now() < deadline {
        let _ = serve().await;
    }
    let unsubscribed = {
        let (consumer, name) = (consumer.clone(), name.clone());
        // Both block on the broker: off the async threads.
        tokio::task::spawn_blocking(move || {
            commit(consumer.as_ref(), &name, "shutdown");
            consumer.unsubscribe();
        })
        .await
    };
    if let Err(error) = unsubscribed {
        if !error.is_cancelled() {
            tracing::warn!(%error, "Leaving the group failed.");
        }
        return;
    }
    let deadline = Instant::now() + LEAVE_TIMEOUT;
    loop {
        let assigned = consumer.assignment().map(|a| a.count()).unwrap_or(0);
        if assigned == 0 {
            tracing::info!(consumer = %name, "Left the group.");
            return;
        }
        if Instant::now() >= deadline {
            tracing::warn!(consumer = %name, assigned, "Partitions still assigned after {LEAVE_TIMEOUT:?}; closing without leaving (they wait for the session timeout).");
            return;
        }
        let _ = serve().await;
    }
}

impl Shared {
    fn new(name: &str, config: EngineConfig) -> Self {
        let hard = CancellationToken::new();
        Self {
            name: name.to_owned(),
            config: EngineConfig {
                max_in_flight: config.max_in_flight.max(1),
                max_uncommitted: config.max_uncommitted.max(2),
                ..config
            },
            tracker: Mutex::default(),
            assignments: Mutex::default(),
            paused: Mutex::default(),
            retrying: Mutex::default(),
            lanes: Mutex::default(),
            root: Assignment {
                soft: hard.child_token(),
                hard,
            },
            next_work: AtomicU64::new(0),
            rebalancing: AtomicBool::new(false),
        }
    }

    /// Books a fetched message: its generation and its assignment's tokens. Pauses its
    /// partition when it is full.
    fn fetched(
        &self,
        consumer: &StreamConsumer<EngineContext>,
        message: &OwnedMessage,
    ) -> (u64, Assignment) {
        let (topic, partition) = (message.topic(), message.partition());
        let mut tracker = locked(&self.tracker);
        let generation = tracker.fetched(topic, partition, message.offset());
        if tracker.uncommitted_in(topic, partition) >= self.config.max_uncommitted {
            // Decided and done under the tracker's lock, as resuming is: a pause and a
            // resume racing each other could otherwise leave a drained partition paused.
            if locked(&self.paused).insert((topic.to_owned(), partition)) {
                self.set_paused(consumer, topic, partition, true);
            }
        }
        drop(tracker);
        let assignment = locked(&self.assignments)
            .entry((topic.to_owned(), partition))
            .or_insert_with(|| Assignment {
                soft: self.root.soft.child_token(),
                hard: self.root.hard.child_token(),
            })
            .clone();
        (generation, assignment)
    }

    /// Resumes the paused partitions that drained to half their bound (`tracker` held).
    fn resume_drained(&self, consumer: &StreamConsumer<EngineContext>, tracker: &OffsetTracker) {
        let mut paused = locked(&self.paused);
        let drained: Vec<Partition> = paused
            .iter()
            .filter(|(t, p)| tracker.uncommitted_in(t, *p) <= self.config.max_uncommitted / 2)
            .cloned()
            .collect();
        for (topic, partition) in drained {
            paused.remove(&(topic.clone(), partition));
            self.set_paused(consumer, &topic, partition, false);
        }
    }

    fn set_paused(
        &self,
        consumer: &StreamConsumer<EngineContext>,
        topic: &str,
        partition: i32,
        pause: bool,
    ) {
        let mut list = TopicPartitionList::new();
        list.add_partition(topic, partition);
        let done = if pause {
            consumer.pause(&list)
        } else {
            consumer.resume(&list)
        };
        match done {
            Ok(()) => tracing::info!(
                consumer = %self.name, topic, partition,
                "{}", if pause { "Partition paused: too much work waits behind its oldest unfinished message." } else { "Partition resumed." }
            ),
            Err(error) => {
                tracing::warn!(consumer = %self.name, topic, partition, %error, pause, "Could not pause or resume.")
            }
        }
    }

    /// Gives up the queued work of `partitions` at once (it comes again to the owner).
    fn abandon_queued(&self, partitions: &HashSet<Partition>) {
        let mut abandoned = Vec::new();
        for queue in locked(&self.lanes).values_mut() {
            let (gone, kept): (VecDeque<Work>, VecDeque<Work>) = queue
                .drain(..)
                .partition(|work| partitions.contains(&work.partition()));
            *queue = kept;
            abandoned.extend(gone);
        }
        let mut tracker = locked(&self.tracker);
        for work in &abandoned {
            let m = &work.message;
            tracker.abandoned(m.topic(), m.partition(), m.offset(), work.generation);
        }
    }

    /// Waits (blocking the thread) until nothing of `partitions` is in flight, or the
    /// timeout. Returns how many still are.
    fn wait_idle(&self, partitions: &[Partition], timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let busy = locked(&self.tracker).in_flight_in(partitions);
            if busy == 0 || Instant::now() >= deadline {
                return busy;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The rebalance callback's half of a revoke: see the module doc.
    fn revoke(&self, consumer: &BaseConsumer<EngineContext>, revoked: &[Partition]) {
        let set: HashSet<Partition> = revoked.iter().cloned().collect();
        let tokens: Vec<Assignment> = {
            let assignments = locked(&self.assignments);
            revoked
                .iter()
                .filter_map(|p| assignments.get(p).cloned())
                .collect()
        };
        tokens.iter().for_each(|a| a.soft.cancel());
        self.abandon_queued(&set);
        let mut unfinished = in_place(|| self.wait_idle(revoked, self.config.drain_timeout));
        if unfinished != Some(0) {
            tokens.iter().for_each(|a| a.hard.cancel());
            unfinished = in_place(|| self.wait_idle(revoked, Duration::from_secs(2)));
        }
        let unfinished = unfinished.unwrap_or_default();
        if unfinished > 0 {
            tracing::warn!(consumer = %self.name, unfinished, "Partitions revoked with work still unfinished; its events come again to the next owner.");
        }
        commit(consumer, &self.name, "revoke");
        let mut tracker = locked(&self.tracker);
        let mut assignments = locked(&self.assignments);
        let mut paused = locked(&self.paused);
        for (topic, partition) in revoked {
            tracker.forget(topic, *partition);
            assignments.remove(&(topic.clone(), *partition));
            paused.remove(&(topic.clone(), *partition));
        }
    }

    /// A new assignment starts afresh and unpaused (librdkafka keeps an application
    /// pause across a rebalance).
    fn assigned(&self, consumer: &BaseConsumer<EngineContext>, partitions: &TopicPartitionList) {
        let mut tracker = locked(&self.tracker);
        let mut paused = locked(&self.paused);
        for p in partitions.elements() {
            tracker.forget(p.topic(), p.partition());
            paused.remove(&(p.topic().to_owned(), p.partition()));
        }
        if let Err(error) = consumer.resume(partitions) {
            tracing::debug!(consumer = %self.name, %error, "Could not resume the new assignment.");
        }
    }
}

/// Runs a blocking wait inside a rebalance callback. The callback runs inside `recv`, on
/// a runtime thread: hand that thread's other tasks (the work being finished) to
/// another worker meanwhile. A single-threaded runtime cannot wait here without
/// stalling that very work: `None`, and the caller cancels the work instead.
fn in_place(wait: impl FnOnce() -> usize) -> Option<usize> {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::CurrentThread) => None,
        Ok(_) => Some(tokio::task::block_in_place(wait)),
        Err(_) => Some(wait()),
    }
}

impl<H: EventHandler> Inner<H> {
    async fn fetch(self: &Arc<Self>, shutdown: &CancellationToken) {
        let permits = Arc::new(Semaphore::new(self.shared.config.max_in_flight));
        loop {
            let permit = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                permit = permits.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => return,
                },
            };
            let message = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                message = self.consumer.recv() => message,
            };
            match message {
                Ok(message) => self.accept(message.detach(), permit),
                Err(error) => {
                    tracing::warn!(consumer = %self.shared.name, %error, "Kafka receive failed.");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    }
                }
            }
        }
    }

    fn accept(self: &Arc<Self>, message: OwnedMessage, permit: OwnedSemaphorePermit) {
        let (generation, assignment) = self.shared.fetched(&self.consumer, &message);
        metrics::counter!("saga_consumer_fetched_total", "consumer" => self.shared.name.clone(), "topic" => message.topic().to_owned())
            .increment(1);
        let work = Work {
            id: self.shared.next_work.fetch_add(1, Ordering::Relaxed),
            message,
            generation,
            assignment,
            _permit: permit,
        };
        self.dispatch(work);
    }

    /// Queues the message behind its order's earlier messages, or starts a lane for it.
    fn dispatch(self: &Arc<Self>, work: Work) {
        let key = LaneKey::of(&work.message);
        {
            let mut lanes = locked(&self.shared.lanes);
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
            if work.assignment.soft.is_cancelled() {
                self.settle(&work, false);
            } else {
                self.process(&work).await;
            }
            drop(work);
            let mut lanes = locked(&self.shared.lanes);
            next = match lanes.get_mut(&key).and_then(VecDeque::pop_front) {
                Some(work) => Some(work),
                None => {
                    lanes.remove(&key);
                    None
                }
            };
        }
    }

    /// Handles one message in its trace (see [`super::message_span`]).
    async fn process(&self, work: &Work) {
        let decoded = Event::from_json(work.message.payload().unwrap_or_default());
        let span = super::message_span(&self.shared.name, &work.message, decoded.as_ref().ok());
        async {
            let handled = match decoded {
                Err(error) => Handled::Rejected(error.to_string()),
                Ok(event) => self.handle_with_retries(work, &event).await,
            };
            let finished = match handled {
                Handled::Done => {
                    metrics::counter!("saga_consumer_messages_total", "consumer" => self.shared.name.clone(), "outcome" => "handled").increment(1);
                    true
                }
                Handled::Rejected(reason) => self.dead_letter(work, &reason).await,
                Handled::Interrupted => false,
            };
            self.settle(work, finished);
        }
        .instrument(span)
        .await
    }

    async fn handle_with_retries(&self, work: &Work, event: &Event) -> Handled {
        let Assignment { soft, hard } = &work.assignment;
        let _retrying = RetryMark {
            shared: &self.shared,
            id: work.id,
        };
        let mut attempt = 0u32;
        loop {
            attempt = attempt.saturating_add(1);
            let result = tokio::select! {
                biased;
                _ = hard.cancelled() => return Handled::Interrupted,
                result = self.handler.handle(event) => result,
            };
            let error = match result {
                Ok(()) => return Handled::Done,
                Err(HandlerError::Permanent(error)) => {
                    return Handled::Rejected(format!("{error:#}"))
                }
                Err(HandlerError::Transient(error)) => error,
            };
            let wait = self.shared.config.backoff.delay(attempt);
            self.note_retry(work, event, attempt, &error, wait);
            tokio::select! {
                biased;
                _ = hard.cancelled() => return Handled::Interrupted,
                () = self.handler.retrying(event, attempt, &error) => {}
            }
            tokio::select! {
                biased;
                _ = soft.cancelled() => return Handled::Interrupted,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    fn note_retry(
        &self,
        work: &Work,
        event: &Event,
        attempt: u32,
        error: &anyhow::Error,
        wait: Duration,
    ) {
        locked(&self.shared.retrying)
            .entry(work.id)
            .or_insert_with(Instant::now);
        metrics::counter!("saga_consumer_retries_total", "consumer" => self.shared.name.clone())
            .increment(1);
        // Every attempt of a long outage would flood the log: the first ones, then
        // each power of two.
        if attempt.is_power_of_two() || attempt < 4 {
            tracing::warn!(
                consumer = %self.shared.name, event_id = %event.event_id, attempt,
                error = %format!("{error:#}"), retry_in_ms = wait.as_millis() as u64,
                "Handling failed transiently; retrying."
            );
        }
    }

    /// Records a message's end: its offset may be stored (`finished`), or it stays
    /// unstored and comes again.
    fn settle(&self, work: &Work, finished: bool) {
        let m = &work.message;
        let (topic, partition, offset) = (m.topic(), m.partition(), m.offset());
        let mut tracker = locked(&self.shared.tracker);
        if !finished {
            tracker.abandoned(topic, partition, offset, work.generation);
            return;
        }
        let outcome = tracker.finished(topic, partition, offset, work.generation);
        if let Some(next) = outcome {
            let mut offsets = TopicPartitionList::new();
            let stored = offsets
                .add_partition_offset(topic, partition, Offset::Offset(next))
                .and_then(|()| self.consumer.store_offsets(&offsets));
            if let Err(error) = stored {
                tracing::debug!(%error, topic, partition, "Could not store offset (revoked?).");
            }
            self.shared.resume_drained(&self.consumer, &tracker);
        }
    }

    /// Publishes the dead letter, retrying until it is out. False if the partition was
    /// given up first (the offset then stays unstored and the message comes again).
    async fn dead_letter(&self, work: &Work, reason: &str) -> bool {
        let letter = DeadLetter::from_message(&work.message, reason, &self.group);
        let mut attempt = 0u32;
        loop {
            attempt = attempt.saturating_add(1);
            let published = tokio::select! {
                biased;
                _ = work.assignment.hard.cancelled() => return false,
                published = self.dead_letters.publish(&letter) => published,
            };
            match published {
                Ok(()) => {
                    metrics::counter!("saga_dead_letters_total", "consumer" => self.shared.name.clone()).increment(1);
                    metrics::counter!("saga_consumer_messages_total", "consumer" => self.shared.name.clone(), "outcome" => "dead_lettered").increment(1);
                    tracing::warn!(
                        consumer = %self.shared.name, topic = %letter.source_topic, partition = letter.source_partition,
                        offset = letter.source_offset, %reason, "Message dead-lettered."
                    );
                    return true;
                }
                Err(error) => {
                    tracing::error!(consumer = %self.shared.name, %error, attempt, "Could not publish a dead letter; retrying.");
                    tokio::select! {
                        _ = work.assignment.soft.cancelled() => return false,
                        _ = tokio::time::sleep(self.shared.config.backoff.delay(attempt)) => {}
                    }
                }
            }
        }
    }
}

/// Takes a message off the retrying list however its handling ends (done, rejected,
/// cancelled by a revoke).
struct RetryMark<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for RetryMark<'_> {
    fn drop(&mut self) {
        locked(&self.shared.retrying).remove(&self.id);
    }
}

/// Help texts, and every series from the start (at 0), so rates and alerts see them.
fn describe(name: &str) {
    use metrics::{describe_counter, describe_gauge, Unit};
    describe_counter!(
        "saga_consumer_messages_total",
        "Messages a consumer finished, by outcome (handled, dead_lettered)."
    );
    describe_counter!(
        "saga_consumer_retries_total",
        "Transient handler failures, each retried after a backoff in its own lane."
    );
    describe_counter!(
        "saga_consumer_fetched_total",
        "Kafka messages fetched, by topic."
    );
    describe_gauge!(
        "saga_consumer_in_flight_messages",
        "Messages fetched and not yet finished (at most KAFKA_MAX_IN_FLIGHT)."
    );
    describe_gauge!("saga_consumer_uncommitted_offsets", "Offsets fetched and not yet stored: finished work waiting behind unfinished work of its partition.");
    describe_gauge!("saga_consumer_paused_partitions", "Partitions not fetched because too much work waits behind their oldest unfinished message.");
    describe_gauge!(
        "saga_consumer_oldest_retry_seconds",
        Unit::Seconds,
        "How long the message retrying longest has been failing transiently (0: none)."
    );
    for outcome in ["handled", "dead_lettered"] {
        metrics::counter!("saga_consumer_messages_total", "consumer" => name.to_owned(), "outcome" => outcome)
            .increment(0);
    }
    metrics::counter!("saga_consumer_retries_total", "consumer" => name.to_owned()).increment(0);
    metrics::counter!("saga_dead_letters_total", "consumer" => name.to_owned()).increment(0);
    metrics::gauge!("saga_consumer_oldest_retry_seconds", "consumer" => name.to_owned()).set(0.0);
}

/// Once a second: in flight, unstored, paused partitions and the oldest retry.
async fn report_gauges(
    shared: Arc<Shared>,
    consumer: Arc<StreamConsumer<EngineContext>>,
    shutdown: CancellationToken,
) {
    let name = shared.name.clone();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let (in_flight, uncommitted) = {
            let tracker = locked(&shared.tracker);
            (tracker.in_flight(), tracker.uncommitted())
        };
        let paused = locked(&shared.paused).len();
        if paused > 0 {
            // A second chance for a partition whose last message was abandoned, not
            // finished (a resume is otherwise only decided when an offset is stored).
            let tracker = locked(&shared.tracker);
            shared.resume_drained(&consumer, &tracker);
        }
        let oldest = locked(&shared.retrying)
            .values()
            .map(Instant::elapsed)
            .max()
            .unwrap_or_default();
        metrics::gauge!("saga_consumer_in_flight_messages", "consumer" => name.clone())
            .set(in_flight as f64);
        metrics::gauge!("saga_consumer_uncommitted_offsets", "consumer" => name.clone())
            .set(uncommitted as f64);
        metrics::gauge!("saga_consumer_paused_partitions", "consumer" => name.clone())
            .set(paused as f64);
        metrics::gauge!("saga_consumer_oldest_retry_seconds", "consumer" => name.clone())
            .set(oldest.as_secs_f64());
    }
}

fn commit<C: ConsumerContext>(consumer: &impl Consumer<C>, name: &str, when: &str) {
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) => tracing::debug!(consumer = name, when, "Offsets committed."),
        Err(rdkafka::error::KafkaError::ConsumerCommit(
            rdkafka::error::RDKafkaErrorCode::NoOffset,
        )) => {}
        Err(error) => tracing::warn!(consumer = name, %error, when, "Could not commit offsets."),
    }
}

/// The engine's consumer context: revokes as the module doc says, exports the consumer
/// lag from librdkafka's statistics and forwards librdkafka's log lines.
pub struct EngineContext {
    shared: Arc<Shared>,
    lag: LagReporter,
}

impl ClientContext for EngineContext {
    fn stats(&self, statistics: rdkafka::Statistics) {
        self.lag.record(&statistics);
    }

    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        super::log_librdkafka(&self.shared.name, level, fac, message);
    }
}

impl ConsumerContext for EngineContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(partitions) = rebalance {
            let revoked: Vec<Partition> = partitions
                .elements()
                .iter()
                .map(|p| (p.topic().to_owned(), p.partition()))
                .collect();
            if !revoked.is_empty() {
                self.shared.revoke(consumer, &revoked);
            }
        }
    }

    /// Logs what this instance now owns: after a crash or a rebalance, the first question
    /// an operator asks is who holds which partition.
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let name = &self.shared.name;
        match rebalance {
            Rebalance::Assign(partitions) => {
                self.shared.rebalancing.store(false, Ordering::SeqCst);
                self.shared.assigned(consumer, partitions);
                tracing::info!(consumer = %name, partitions = %super::partition_list(partitions), "Partitions assigned.");
            }
            Rebalance::Revoke(partitions) => {
                self.shared.rebalancing.store(true, Ordering::SeqCst);
                tracing::info!(consumer = %name, partitions = %super::partition_list(partitions), "Partitions revoked.")
            }
            Rebalance::Error(error) => {
                tracing::warn!(consumer = %name, %error, "Rebalance failed.")
            }
        }
    }
}
