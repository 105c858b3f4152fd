//! The consumer engine every service runs (`shared_events::kafka::ConsumerLoop`), against
//! the real broker: per-order order under concurrency, commits at the low-water mark,
//! non-blocking transient retries, pausing a partition that fills up, and rebalances
//! with work in flight.

use e2e::{eventually, Infra};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use shared_events::kafka::{
    ConsumerLoop, DeadLetterPublisher, EngineConfig, EventHandler, HandlerError, KafkaSettings,
};
use shared_events::{Event, PaymentRefunded};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// One test event: `amount` carries the order's sequence number.
fn event(order: Uuid, seq: i64) -> Event {
    Event::new(
        order,
        None,
        PaymentRefunded {
            payment_id: Uuid::new_v4(),
            tid: "T-engine".to_owned(),
            amount: seq,
            refunded_at: chrono::Utc::now(),
        },
    )
}

fn seq_of(event: &Event) -> i64 {
    match &event.body {
        shared_events::EventBody::PaymentRefunded(r) => r.amount,
        _ => unreachable!("only test events"),
    }
}

/// Where each event landed: event id → (partition, offset).
type Placement = HashMap<Uuid, (i32, i64)>;

async fn produce(
    producer: &FutureProducer,
    topic: &str,
    events: &[Event],
    placement: &mut Placement,
) {
    for e in events {
        let (key, payload) = (e.key(), e.to_json());
        let delivery = producer
            .send(
                FutureRecord::to(topic).key(&key).payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .expect("delivered");
        placement.insert(e.event_id, (delivery.partition, delivery.offset));
    }
}

/// What the test handler saw.
#[derive(Default)]
struct Seen {
    /// Per order, the sequence numbers in the order they were finished.
    finished: HashMap<Uuid, Vec<i64>>,
    /// Times each event was finished.
    times: HashMap<Uuid, u32>,
    /// Events being handled right now (by any instance).
    running: HashSet<Uuid>,
    /// Violations seen while handling.
    overlaps: Vec<String>,
    attempts: HashMap<Uuid, u32>,
    /// Events finished per instance.
    by_instance: HashMap<&'static str, usize>,
}

#[derive(Clone)]
struct Recorder {
    instance: &'static str,
    seen: Arc<Mutex<Seen>>,
    /// Handling takes a random time up to this.
    max_delay_ms: u64,
    /// Orders whose events fail transiently while they are in this set.
    failing: Arc<Mutex<HashSet<Uuid>>>,
}

impl Recorder {
    fn new(max_delay_ms: u64) -> Self {
        Self {
            instance: "a",
            seen: Arc::default(),
            max_delay_ms,
            failing: Arc::default(),
        }
    }

    /// The same record, seen by another instance.
    fn as_instance(&self, instance: &'static str) -> Self {
        Self {
            instance,
            ..self.clone()
        }
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        // A failed assertion elsewhere must not hide behind a poisoned lock.
        self.seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn finished_count(&self) -> usize {
        self.seen().times.values().map(|n| *n as usize).sum()
    }
}

impl EventHandler for Recorder {
    async fn handle(&self, event: &Event) -> Result<(), HandlerError> {
        let id = event.event_id;
        {
            let mut seen = self.seen();
            *seen.attempts.entry(id).or_default() += 1;
            if !seen.running.insert(id) {
                seen.overlaps.push(format!("{id} handled twice at once"));
            }
        }
        let failing = self.failing.lock().unwrap().contains(&event.order_id);
        let delay = rand::random::<u64>() % (self.max_delay_ms + 1);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        let mut seen = self.seen();
        seen.running.remove(&id);
        if failing {
            return Err(HandlerError::Transient(anyhow::anyhow!(
                "the test's dependency is down"
            )));
        }
        seen.finished
            .entry(event.order_id)
            .or_default()
            .push(seq_of(event));
        *seen.times.entry(id).or_default() += 1;
        *seen.by_instance.entry(self.instance).or_default() += 1;
        Ok(())
    }
}

struct Harness {
    kafka: KafkaSettings,
    topic: String,
    group: String,
    producer: FutureProducer,
}

impl Harness {
    async fn new(partitions: i32) -> Self {
        if std::env::var_os("TEST_LOG").is_some() {
            static LOGS: std::sync::Once = std::sync::Once::new();
            LOGS.call_once(|| shared_events::telemetry::init("engine-test"));
        }
        let infra = Infra::from_env().expect("the test servers");
        let mut kafka = infra.kafka(&format!("eng-{}.", Uuid::new_v4().simple()));
        kafka.partitions = partitions;
        kafka.ensure_topics().await.expect("topics");
        let producer = kafka.producer().expect("producer");
        Self {
            topic: kafka.topics().payments,
            group: format!("engine-{}", Uuid::new_v4().simple()),
            kafka,
            producer,
        }
    }

    fn start(
        &self,
        handler: Recorder,
        config: EngineConfig,
    ) -> (CancellationToken, tokio::task::JoinHandle<()>) {
        let dead_letters =
            DeadLetterPublisher::new(self.producer.clone(), &self.kafka.topics().dead_letter);
        let engine = ConsumerLoop::with_config(
            "engine-test",
            &self.kafka,
            &self.group,
            &[&self.topic],
            handler,
            dead_letters,
            config,
        )
        .expect("consumer");
        let stop = CancellationToken::new();
        (stop.clone(), tokio::spawn(engine.run(stop)))
    }

    /// The group's committed offset per partition of the test topic.
    fn committed(&self, partitions: i32) -> BTreeMap<i32, i64> {
        let reader: BaseConsumer = self
            .kafka
            .consumer_config(&self.group)
            .create()
            .expect("reader");
        let mut list = TopicPartitionList::new();
        for p in 0..partitions {
            list.add_partition(&self.topic, p);
        }
        let committed = reader
            .committed_offsets(list, Duration::from_secs(10))
            .expect("committed offsets");
        committed
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some((e.partition(), o)),
                _ => None,
            })
            .collect()
    }

    /// Messages on the dead-letter topic.
    fn dead_letters(&self) -> i64 {
        let reader: BaseConsumer = self
            .kafka
            .consumer_config(&self.group)
            .create()
            .expect("reader");
        let topic = self.kafka.topics().dead_letter;
        (0..self.kafka.partitions)
            .map(|p| {
                let (low, high) = reader
                    .fetch_watermarks(&topic, p, Duration::from_secs(10))
                    .expect("watermarks");
                high - low
            })
            .sum()
    }
}

fn many_orders(orders: usize, events_each: i64) -> Vec<Event> {
    let ids: Vec<Uuid> = (0..orders).map(|_| Uuid::new_v4()).collect();
    // Interleaved: every order's first event, then every order's second, …
    (0..events_each)
        .flat_map(|seq| ids.iter().map(move |id| event(*id, seq)))
        .collect()
}

fn assert_in_order(seen: &Seen, orders: usize, events_each: i64) {
    assert_eq!(seen.finished.len(), orders, "every order was handled");
    for (order, seqs) in &seen.finished {
        let expected: Vec<i64> = (0..events_each).collect();
        assert_eq!(
            seqs, &expected,
            "order {order}: its events in order, each once"
        );
    }
    assert!(seen.overlaps.is_empty(), "{:?}", seen.overlaps);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_orders_events_are_handled_in_order_while_orders_run_concurrently_and_commits_stay_below_unfinished_work(
) {
    let (orders, each) = (60, 5);
    let h = Harness::new(12).await;
    let recorder = Recorder::new(30);
    let mut placement = Placement::new();
    let events = many_orders(orders, each);
    produce(&h.producer, &h.topic, &events, &mut placement).await;
    let config = EngineConfig {
        max_in_flight: 64,
        ..EngineConfig::default()
    };
    let (stop, task) = h.start(recorder.clone(), config);

    // While it works: an offset committed is never past an event still unfinished.
    let total = events.len();
    let mut checks = 0;
    while recorder.finished_count() < total {
        assert!(
            checks < 3_000,
            "handled only {} of {total}",
            recorder.finished_count()
        );
        checks += 1;
        let committed = h.committed(12);
        let finished: HashSet<Uuid> = recorder.seen().times.keys().copied().collect();
        for e in &events {
            let (partition, offset) = placement[&e.event_id];
            if let Some(&c) = committed.get(&partition) {
                assert!(
                    finished.contains(&e.event_id) || offset >= c,
                    "partition {partition} committed {c} while offset {offset} was unfinished"
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    task.await.expect("engine stopped");
    assert_in_order(&recorder.seen(), orders, each);
    // Concurrency really happened: more than one order at a time (60 orders × 5 events of
    // up to 30 ms each would take over 4 s one at a time per partition).
    let committed = h.committed(12);
    let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
    for (partition, offset) in placement.values() {
        let end = ends.entry(*partition).or_default();
        *end = (*end).max(offset + 1);
    }
    assert_eq!(
        committed, ends,
        "everything handled is committed at shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_order_failing_transiently_holds_up_only_itself_and_completes_once_the_failure_ends() {
    let h = Harness::new(1).await;
    let recorder = Recorder::new(5);
    let stuck = Uuid::new_v4();
    recorder.failing.lock().unwrap().insert(stuck);
    let mut placement = Placement::new();
    // The stuck order's events first in the only partition, then 40 other orders.
    let mut events = vec![event(stuck, 0), event(stuck, 1)];
    events.extend(many_orders(40, 2));
    produce(&h.producer, &h.topic, &events, &mut placement).await;
    let config = EngineConfig {
        backoff: shared_events::kafka::Backoff::new(
            Duration::from_millis(20),
            Duration::from_millis(200),
        ),
        ..EngineConfig::default()
    };
    let (stop, task) = h.start(recorder.clone(), config);

    eventually(
        "the other orders are handled while one fails, again and again",
        || async {
            let attempts = recorder.seen().attempts.get(&events[0].event_id).copied();
            (recorder.finished_count() == 80 && attempts.unwrap_or(0) > 3).then_some(())
        },
    )
    .await;
    {
        let seen = recorder.seen();
        assert!(
            !seen.finished.contains_key(&stuck),
            "the failing order is not done"
        );
        assert!(
            !seen.attempts.contains_key(&events[1].event_id),
            "its second event waits behind its first"
        );
    }
    // Its partition cannot commit past it meanwhile.
    assert_eq!(h.committed(1).get(&0).copied().unwrap_or(0), 0);

    recorder.failing.lock().unwrap().clear();
    eventually(
        "the failing order completes once the failure ends",
        || async { (recorder.finished_count() == 82).then_some(()) },
    )
    .await;
    stop.cancel();
    task.await.expect("engine stopped");
    assert_eq!(recorder.seen().finished[&stuck], vec![0, 1]);
    assert_eq!(
        h.dead_letters(),
        0,
        "a transient failure is never dead-lettered"
    );
    assert_eq!(h.committed(1).get(&0).copied(), Some(82));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partition_full_of_work_behind_a_failing_order_pauses_and_resumes_without_losing_a_message(
) {
    let h = Harness::new(1).await;
    let recorder = Recorder::new(0);
    let stuck = Uuid::new_v4();
    recorder.failing.lock().unwrap().insert(stuck);
    let mut placement = Placement::new();
    let mut events = vec![event(stuck, 0)];
    events.extend(many_orders(300, 1));
    produce(&h.producer, &h.topic, &events, &mut placement).await;
    let config = EngineConfig {
        max_uncommitted: 20,
        backoff: shared_events::kafka::Backoff::new(
            Duration::from_millis(20),
            Duration::from_millis(100),
        ),
        ..EngineConfig::default()
    };
    let (stop, task) = h.start(recorder.clone(), config);
    eventually("work behind the failing order is taken on", || async {
        (recorder.finished_count() >= 19).then_some(())
    })
    .await;
    // Paused: what is taken on stays bounded while the order fails (librdkafka's
    // prefetch may hand over a few more before the pause lands).
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let taken = recorder.seen().attempts.len();
        assert!(
            taken < 150,
            "{taken} messages taken on behind one unfinished message"
        );
    }
    recorder.failing.lock().unwrap().clear();
    eventually("every message is handled after the pause", || async {
        (recorder.finished_count() == 301).then_some(())
    })
    .await;
    stop.cancel();
    task.await.expect("engine stopped");
    let seen = recorder.seen();
    assert!(seen.times.values().all(|n| *n == 1), "each message once");
    assert_eq!(h.committed(1).get(&0).copied(), Some(301));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rebalance_with_work_in_flight_neither_repeats_nor_loses_an_effect() {
    let (orders, rounds) = (100, 8);
    let h = Arc::new(Harness::new(12).await);
    let recorder = Recorder::new(100);
    let config = EngineConfig {
        max_in_flight: 16,
        ..EngineConfig::default()
    };
    let (stop_a, task_a) = h.start(recorder.clone(), config);
    // The load goes on for ~20 s: one event of every order every 2.5 s.
    let ids: Vec<Uuid> = (0..orders).map(|_| Uuid::new_v4()).collect();
    let load = {
        let h = h.clone();
        tokio::spawn(async move {
            let mut placement = Placement::new();
            for seq in 0..rounds {
                let round: Vec<Event> = ids.iter().map(|id| event(*id, seq)).collect();
                produce(&h.producer, &h.topic, &round, &mut placement).await;
                tokio::time::sleep(Duration::from_millis(2_500)).await;
            }
        })
    };
    eventually("the first instance is working", || async {
        (recorder.finished_count() > 20).then_some(())
    })
    .await;
    // A second instance joins mid-load: the group rebalances while work is in flight.
    let (stop_b, task_b) = h.start(recorder.as_instance("b"), config);
    eventually("the second instance took over partitions", || async {
        (recorder.seen().by_instance.get("b").copied().unwrap_or(0) > 20).then_some(())
    })
    .await;
    // And leaves again mid-load: its partitions go back to the first one.
    stop_b.cancel();
    task_b.await.expect("second instance stopped");
    let a_before = recorder.seen().by_instance["a"];
    load.await.expect("load produced");
    let total = orders * rounds as usize;
    eventually("every event is handled", || async {
        (recorder.finished_count() >= total).then_some(())
    })
    .await;
    stop_a.cancel();
    task_a.await.expect("first instance stopped");
    let seen = recorder.seen();
    assert!(
        seen.by_instance["a"] > a_before,
        "the first instance went on after the second left"
    );
    let twice: Vec<_> = seen.times.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "effects done twice: {twice:?}");
    assert_in_order(&seen, orders, rounds);
}
