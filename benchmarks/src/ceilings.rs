//! What the shop's servers can do on their own, measured in the same run as the shop:
//!
//! * [`pgbench`] — PostgreSQL running the order service's `orders::place` transaction
//!   (`INSERT orders`, `INSERT order_items` ×2 in one statement, `SELECT` the order and
//!   its items back, `INSERT outbox` — whose trigger `NOTIFY`s the relays — and `INSERT
//!   saga_steps`, between `BEGIN` and `COMMIT`: the same statements, round trips and
//!   indexes) against a scratch database with the order migrations applied.
//! * [`kafka_produce`] — tansu's produce rate: an rdkafka producer with the services'
//!   settings ([`KafkaSettings::producer`]: `acks=all`, `linger.ms=1`, one request in
//!   flight per connection) flooding event-sized messages (a real `OrderPlaced` JSON).
//! * [`smtp`] — Postfix `smtp-source` → `smtp-sink` (as `notifier-bench` does).

use crate::procs::{self, Spawned};
use crate::stats;
use anyhow::{bail, Context, Result};
use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::producer::FutureRecord;
use serde_json::{json, Value};
use shared_events::kafka::KafkaSettings;
use shared_events::{Event, LineItem, OrderPlaced, OrderSnapshot};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The transaction of `order::orders::place` (order/src/orders.rs, order/src/store.rs,
/// shared-events outbox), with the load generator's order (two lines, 15,000 KRW).
pub const PLACE_ORDER_SQL: &str = "\
SELECT gen_random_uuid() AS oid \\gset
BEGIN;
INSERT INTO orders (id, customer_id, customer_email, locale, status, total_amount, payment_deadline, traceparent) VALUES (':oid', 'pgbench', 'pgbench@example.com', 'ko', 'PENDING_PAYMENT', 15000, now() + interval '15 minutes', NULL);
INSERT INTO order_items (order_id, line_no, name, quantity, unit_price) VALUES (':oid', 1, 'Load test item', 1, 12000), (':oid', 2, 'Sticker', 2, 1500);
SELECT * FROM orders WHERE id = ':oid';
SELECT * FROM order_items WHERE order_id = ':oid' ORDER BY line_no;
INSERT INTO outbox (event_id, topic, message_key, event_type, payload, traceparent) VALUES (gen_random_uuid(), 'orders.v1', ':oid', 'OrderPlaced', repeat('x', 700), NULL);
INSERT INTO saga_steps (order_id, event_id, event_type, service, outcome) VALUES (':oid', gen_random_uuid(), 'OrderPlaced', 'order', 'published');
COMMIT;
";

/// `psql URL -c SQL` (bounded).
pub fn psql(url: &str, sql: &str, scratch: &Path) -> Result<String> {
    let mut cmd = Command::new("psql");
    cmd.args([
        url,
        "-X",
        "-q",
        "-t",
        "-A",
        "-v",
        "ON_ERROR_STOP=1",
        "-c",
        sql,
    ]);
    let done = procs::run_bounded(cmd, Duration::from_secs(60), scratch)?;
    if !done.status.success() {
        bail!("psql {sql:?}: {}", done.stderr.trim());
    }
    Ok(done.stdout)
}

/// The `up.sql` files of the common and order migrations, in the order diesel runs them.
pub fn order_migrations(workspace: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for folder in ["common", "order"] {
        let dir = workspace.join("diesel-migrations").join(folder);
        let mut ups: Vec<PathBuf> = std::fs::read_dir(&dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path().join("up.sql")))
            .filter(|p| p.is_file())
            .collect();
        ups.sort();
        files.extend(ups);
    }
    Ok(files)
}

/// pgbench with [`PLACE_ORDER_SQL`], `clients` connections, `seconds` long, against a
/// scratch database `database` (created, migrated, dropped) on `postgres_url`.
pub fn pgbench(
    postgres_url: &str,
    database: &str,
    workspace: &Path,
    clients: u32,
    seconds: u32,
    scratch: &Path,
) -> Result<Value> {
    let admin = format!("{postgres_url}/postgres");
    let url = format!("{postgres_url}/{database}");
    psql(
        &admin,
        &format!("DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)"),
        scratch,
    )?;
    psql(&admin, &format!("CREATE DATABASE \"{database}\""), scratch)?;
    let result = (|| -> Result<Value> {
        for file in order_migrations(workspace)? {
            let mut cmd = Command::new("psql");
            cmd.args([&url, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f"])
                .arg(&file);
            let done = procs::run_bounded(cmd, Duration::from_secs(60), scratch)?;
            if !done.status.success() {
                bail!("migration {}: {}", file.display(), done.stderr.trim());
            }
        }
        let script = scratch.join("place_order.pgbench.sql");
        std::fs::write(&script, PLACE_ORDER_SQL)?;
        let mut cmd = Command::new("pgbench");
        let threads = clients.clamp(1, 2);
        cmd.args(["-n", "-c", &clients.to_string(), "-j", &threads.to_string()])
            .args(["-T", &seconds.to_string(), "-f"])
            .arg(&script)
            .arg(&url);
        let shown = format!(
            "pgbench -n -c {clients} -j {threads} -T {seconds} -f place_order.pgbench.sql {url}"
        );
        let done = procs::run_bounded(cmd, Duration::from_secs(u64::from(seconds) + 60), scratch)?;
        if !done.status.success() {
            bail!("pgbench failed: {}", done.stderr.trim());
        }
        let field = |prefix: &str| {
            done.stdout.lines().find_map(|l| {
                l.trim()
                    .strip_prefix(prefix)?
                    .split_whitespace()
                    .next()?
                    .parse::<f64>()
                    .ok()
            })
        };
        let tps = field("tps = ").context("no tps in pgbench's output")?;
        Ok(json!({
            "what": "pgbench running order-service's place-order transaction (orders + order_items + read back + outbox + saga_steps) against a scratch database with the order migrations",
            "command": shown,
            "clients": clients,
            "seconds": seconds,
            "tps": stats::round3(tps),
            "latency_avg_ms": field("latency average = "),
            "transactions": field("number of transactions actually processed: "),
            "failed": field("number of failed transactions: "),
            "script": PLACE_ORDER_SQL,
        }))
    })();
    let _ = psql(
        &admin,
        &format!("DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)"),
        scratch,
    );
    result
}

/// A private tansu broker (SQLite engine, its file in `dir`) on `port`, for [`kafka_produce`].
pub fn start_tansu(port: u16, dir: &Path) -> Result<Spawned> {
    let listener = format!("tcp://127.0.0.1:{port}");
    let mut cmd = Command::new(procs::tansu_bin());
    cmd.current_dir(dir)
        .env("RUST_LOG", "warn")
        .env_remove("SCHEMA_REGISTRY")
        .args(["broker", "--cluster-id", "experiment-ceiling"])
        .args(["--listener-url", &listener])
        .args(["--advertised-listener-url", &listener])
        // The engine the experiment's stacks run (SQLite, a fresh file in `dir`): a
        // ceiling measured on the faster memory engine would not bound them.
        .args(["--storage-engine", "sqlite://tansu.db"]);
    let mut tansu = Spawned::start("tansu", cmd, &dir.join("tansu.log"))?;
    procs::wait_for_port(port, Duration::from_secs(30), &mut tansu)?;
    Ok(tansu)
}

fn sample_event() -> Event {
    let order = OrderSnapshot {
        customer_id: "loadgen-ceiling-0".to_owned(),
        customer_email: "loadgen-0@example.com".to_owned(),
        locale: "ko".to_owned(),
        items: vec![
            LineItem {
                name: "Load test item".to_owned(),
                quantity: 1,
                unit_price: 12_000,
            },
            LineItem {
                name: "Sticker".to_owned(),
                quantity: 2,
                unit_price: 1_500,
            },
        ],
        total_amount: 15_000,
    };
    Event::new(
        uuid::Uuid::now_v7(),
        None,
        OrderPlaced {
            order,
            payment_deadline: chrono::Utc::now(),
        },
    )
}

/// Floods `brokers` with event-sized messages for `seconds` (at most `in_flight`
/// unacknowledged) with the services' producer settings; acknowledged messages/s.
pub async fn kafka_produce(brokers: &str, seconds: f64, in_flight: usize) -> Result<Value> {
    crate::loopback::check_host_ports(brokers)?;
    let settings = KafkaSettings::local(brokers, "ceiling.");
    tokio::time::timeout(Duration::from_secs(30), settings.ensure_topics())
        .await
        .context("creating the ceiling's topics timed out")??;
    let producer = settings.producer()?;
    let topic = format!("{}orders.v1", settings.topic_prefix);
    let event = sample_event();
    let payload = event.to_json();
    let keys: Vec<String> = (0..64).map(|_| uuid::Uuid::now_v7().to_string()).collect();
    // Warm-up: metadata and connections.
    for key in keys.iter().take(10) {
        let _ = producer
            .send(
                FutureRecord::to(&topic).key(key).payload(&payload),
                Duration::from_secs(10),
            )
            .await;
    }
    let started = Instant::now();
    let stop = started + Duration::from_secs_f64(seconds);
    let mut pending = FuturesUnordered::new();
    let (mut acked, mut failed, mut sent) = (0u64, 0u64, 0u64);
    let mut latency = stats::Latency::new();
    while Instant::now() < stop {
        while pending.len() < in_flight.max(1) && Instant::now() < stop {
            let key = &keys[(sent % keys.len() as u64) as usize];
            let record = FutureRecord::to(&topic).key(key).payload(&payload);
            let at = Instant::now();
            let producer = &producer;
            pending.push(async move {
                let r = producer.send(record, Duration::from_secs(30)).await;
                (r.is_ok(), at.elapsed())
            });
            sent += 1;
        }
        if let Some((ok, took)) = pending.next().await {
            if ok {
                acked += 1;
                latency.record(took);
            } else {
                failed += 1;
            }
        }
    }
    while let Some((ok, took)) = pending.next().await {
        if ok {
            acked += 1;
            latency.record(took);
        } else {
            failed += 1;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let ack = latency.summary();
    Ok(json!({
        "what": "rdkafka FutureProducer with KafkaSettings::producer's settings (acks=all, linger.ms=1, max.in.flight.requests.per.connection=1), OrderPlaced-sized messages, the services' default partitions, tansu on SQLite",
        "message_bytes": payload.len(),
        "in_flight": in_flight,
        "seconds": stats::round3(elapsed),
        "acked": acked,
        "failed": failed,
        "messages_per_sec": stats::rate(acked, elapsed),
        "ack_p50_ms": ack.p50_ms,
        "ack_p99_ms": ack.p99_ms,
    }))
}

/// Postfix `smtp-sink` on `port` (counts, stores nothing).
pub fn start_smtp_sink(port: u16, dir: &Path) -> Result<Spawned> {
    let mut cmd = Command::new("/usr/sbin/smtp-sink");
    if procs::is_root() {
        cmd.args(["-u", "nobody"]);
    }
    cmd.arg(format!("127.0.0.1:{port}")).arg("1000");
    let mut sink = Spawned::start("smtp-sink", cmd, &dir.join("smtp-sink.log"))?;
    procs::wait_for_port(port, Duration::from_secs(20), &mut sink)?;
    Ok(sink)
}

/// `smtp-source -s sessions -m mails -l size -d` → `smtp-sink` (both started here).
pub fn smtp(mails: u64, sessions: u32, size: usize, dir: &Path) -> Result<Value> {
    let port = procs::free_ports(1)?[0];
    let mut sink = start_smtp_sink(port, dir)?;
    let mut cmd = Command::new("/usr/sbin/smtp-source");
    cmd.args(["-s", &sessions.to_string()])
        .args(["-m", &mails.to_string()])
        .args(["-l", &size.to_string()])
        .args(["-f", "bench@example.com", "-t", "sink@example.com", "-d"])
        .arg(format!("127.0.0.1:{port}"));
    let done = procs::run_bounded(cmd, Duration::from_secs(300), dir);
    sink.stop(Duration::from_secs(5));
    let done = done?;
    if !done.status.success() {
        bail!(
            "smtp-source failed ({}): {}",
            done.status,
            done.stderr.trim()
        );
    }
    let seconds = done.elapsed.as_secs_f64();
    Ok(json!({
        "what": "Postfix smtp-source → smtp-sink, connections kept (-d)",
        "command": format!("smtp-source -s {sessions} -m {mails} -l {size} -d 127.0.0.1:PORT"),
        "mails": mails,
        "seconds": stats::round3(seconds),
        "mails_per_sec": stats::rate(mails, seconds),
    }))
}
