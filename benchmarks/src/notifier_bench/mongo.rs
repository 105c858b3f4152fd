//! The MongoDB ceilings: what the server takes from the Rust driver without the
//! notifier, written the ways the notifier writes (single documents or batches, inserts
//! alone or its whole write path, with or without the history API's indexes).

use super::Args;
use crate::stats;
use anyhow::{Context, Result};
use mongodb::bson::{doc, Document};
use mongodb::options::{ClientOptions, IndexOptions};
use mongodb::{Client, Collection, Database, IndexModel};
use serde_json::{json, Value};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// A client of `uri` with `pool` connections, checked with a ping.
pub async fn mongo_client(uri: &str, pool: u32) -> Result<Client> {
    let mut options = ClientOptions::parse(uri).await?;
    options.app_name = Some("notifier-bench".to_owned());
    options.server_selection_timeout = Some(Duration::from_secs(5));
    options.connect_timeout = Some(Duration::from_secs(5));
    options.max_pool_size = Some(pool.max(1));
    let client = Client::with_options(options)?;
    client
        .database("admin")
        .run_command(doc! { "ping": 1 })
        .await
        .context("MongoDB did not answer a ping (is `infra/stack deps` running?)")?;
    Ok(client)
}

/// What a ceiling writes per document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MongoPath {
    /// Inserts only (`PENDING` documents).
    InsertOnly,
    /// What the notifier writes per mail: the insert (PENDING), then a replacement
    /// guarded by `{_id, attempts}` (SENT).
    NotifierPath,
}

/// How a MongoDB ceiling is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MongoShape {
    pub path: MongoPath,
    /// Every index the notifier creates, or the unique (event_id, recipient) one only.
    pub all_indexes: bool,
    /// Documents per write command: 1 = `insert_one` (and `find_one_and_replace`);
    /// more = unordered `insert_many` (and one `update` command of guarded
    /// replacements), as the notifier's batchers send them.
    pub batch: u64,
    /// Concurrent writers.
    pub tasks: u32,
}

impl MongoShape {
    /// How the ceiling was measured, in words (the result's `method`).
    pub fn method(&self) -> String {
        let writes = match (self.path, self.batch) {
            (MongoPath::InsertOnly, 1) => "insert_one per document".to_owned(),
            (MongoPath::InsertOnly, n) => format!("unordered insert_many of {n} documents"),
            (MongoPath::NotifierPath, 1) => {
                "per document insert_one (PENDING) + find_one_and_replace on {_id, attempts} (SENT)".to_owned()
            }
            (MongoPath::NotifierPath, n) => format!(
                "per {n} documents one unordered insert_many (PENDING) + one update command of {n} replacements guarded by {{_id, attempts}} (SENT)"
            ),
        };
        let indexes = if self.all_indexes {
            "all 8 indexes the notifier creates"
        } else {
            "the unique (event_id, recipient) index only"
        };
        format!(
            "Rust mongodb driver, {writes}, notification-shaped documents, {indexes}, {} concurrent task(s)",
            self.tasks
        )
    }
}

/// One measured MongoDB ceiling.
pub struct MongoCeiling {
    pub shape: MongoShape,
    pub docs: u64,
    pub seconds: f64,
    pub per_sec: f64,
    pub errors: u64,
}

impl MongoCeiling {
    pub fn to_json(&self) -> Value {
        json!({
            "method": self.shape.method(),
            "documents": self.docs,
            "tasks": self.shape.tasks,
            "batch": self.shape.batch,
            "all_indexes": self.shape.all_indexes,
            "seconds": stats::round3(self.seconds),
            "per_sec": self.per_sec,
            "errors": self.errors,
        })
    }
}

/// The MongoDB insert rates a run's targets are computed from (documents/s).
#[derive(Debug, Clone, Copy)]
pub struct MongoInsertCeilings {
    /// One `insert_one` per document: the ceiling.
    pub single: Option<f64>,
    /// Unordered `insert_many` batches, as the notifier writes claims.
    pub batched: Option<f64>,
}

/// Every MongoDB figure of a run: the ceiling (single inserts), the same with
/// batches, the notifier's whole write path both ways, and what the history API's
/// indexes cost each write.
pub struct MongoCeilings {
    pub inserts_single: MongoCeiling,
    pub inserts_single_all_indexes: MongoCeiling,
    pub inserts_batched: MongoCeiling,
    pub inserts_batched_all_indexes: MongoCeiling,
    pub notifier_path_single: MongoCeiling,
    pub notifier_path_batched: MongoCeiling,
}

impl MongoCeilings {
    /// Measures the six, one after the other, with `--events` documents each.
    pub async fn measure(client: &Client, args: &Args) -> Result<Self> {
        let single = |path, all_indexes| MongoShape {
            path,
            all_indexes,
            batch: 1,
            tasks: args.pool_size,
        };
        // The notifier's shape: one writer per kind of write (claims, outcomes), each
        // sending at most what can be in flight at once.
        let batched = |path, all_indexes| MongoShape {
            path,
            all_indexes,
            batch: args.mongo_batch.unwrap_or(args.max_in_flight as u64).max(1),
            tasks: 2,
        };
        let run = |shape: MongoShape| async move {
            eprintln!("[ceiling] MongoDB: {}…", shape.method());
            let c = mongo_ceiling(client, args.events, shape).await?;
            eprintln!("[ceiling]   {:.0} documents/s", c.per_sec);
            anyhow::Ok(c)
        };
        Ok(Self {
            inserts_single: run(single(MongoPath::InsertOnly, false)).await?,
            inserts_single_all_indexes: run(single(MongoPath::InsertOnly, true)).await?,
            inserts_batched: run(batched(MongoPath::InsertOnly, false)).await?,
            inserts_batched_all_indexes: run(batched(MongoPath::InsertOnly, true)).await?,
            notifier_path_single: run(single(MongoPath::NotifierPath, true)).await?,
            notifier_path_batched: run(batched(MongoPath::NotifierPath, true)).await?,
        })
    }

    pub fn to_json(&self) -> Value {
        let cost = |unique: &MongoCeiling, all: &MongoCeiling| {
            json!({
                "unique_index_only_per_sec": unique.per_sec,
                "all_indexes_per_sec": all.per_sec,
                "slowdown_share": if unique.per_sec > 0.0 {
                    stats::round3(1.0 - all.per_sec / unique.per_sec)
                } else {
                    0.0
                },
            })
        };
        json!({
            "target_basis": "inserts_single: the issue's ceiling, \"the MongoDB-protocol server's insert rate from the Rust driver\", as it was defined before the notifier batched (one insert_one per document, concurrent tasks as many as SMTP sessions); the batched figures are reported beside it and not used for the target",
            "inserts_single": self.inserts_single.to_json(),
            "inserts_single_all_indexes": self.inserts_single_all_indexes.to_json(),
            "inserts_batched": self.inserts_batched.to_json(),
            "inserts_batched_all_indexes": self.inserts_batched_all_indexes.to_json(),
            "notifier_path_single": self.notifier_path_single.to_json(),
            "notifier_path_batched": self.notifier_path_batched.to_json(),
            "index_cost": {
                "what": "the history API's 7 filter/sort indexes on top of the unique one: share of the insert rate they cost",
                "single_inserts": cost(&self.inserts_single, &self.inserts_single_all_indexes),
                "batched_inserts": cost(&self.inserts_batched, &self.inserts_batched_all_indexes),
            },
        })
    }
}

/// A `PENDING` history document as the notifier writes it.
fn notification_doc(i: u64, now: mongodb::bson::DateTime) -> Document {
    doc! {
        "_id": Uuid::now_v7().to_string(),
        "event_id": Uuid::now_v7().to_string(),
        "event_type": "OrderCompleted",
        "order_id": Uuid::now_v7().to_string(),
        "recipient": format!("bench-{i}@example.com"),
        "type": "order_completed",
        "locale": "ko",
        "status": "PENDING",
        "attempts": 0_i64,
        "last_error": mongodb::bson::Bson::Null,
        "subject": "[Saga Shop] 주문이 완료되었습니다",
        "smtp_message_id": format!("<{}@example.com>", Uuid::now_v7().simple()),
        "created_at": now,
        "updated_at": now,
        "sent_at": mongodb::bson::Bson::Null,
        "event_occurred_at": now,
        "send_latency_ms": mongodb::bson::Bson::Null,
    }
}

/// The indexes the notifier creates (notifier/src/store/mongo.rs).
fn notifier_indexes() -> Vec<IndexModel> {
    let named = |keys: Document, name: &str, unique: bool| {
        IndexModel::builder()
            .keys(keys)
            .options(
                IndexOptions::builder()
                    .name(name.to_owned())
                    .unique(unique.then_some(true))
                    .build(),
            )
            .build()
    };
    let mut models = vec![named(
        doc! { "event_id": 1, "recipient": 1 },
        "event_id_recipient_unique",
        true,
    )];
    for field in ["order_id", "recipient", "type", "status"] {
        models.push(named(
            doc! { field: 1, "created_at": -1 },
            &format!("{field}_created_at"),
            false,
        ));
    }
    models.push(named(doc! { "created_at": -1 }, "created_at", false));
    models.push(named(
        doc! { "status": 1, "send_latency_ms": 1 },
        "status_send_latency",
        false,
    ));
    models
}

/// Writes `docs` documents of `shape` into a database of its own (dropped afterwards)
/// and times it.
async fn mongo_ceiling(client: &Client, docs: u64, shape: MongoShape) -> Result<MongoCeiling> {
    let name = format!("notifier_bench_ceiling_{}", Uuid::now_v7().simple());
    let db = client.database(&name);
    let coll = db.collection::<Document>("notifications");
    let indexes = if shape.all_indexes {
        notifier_indexes()
    } else {
        notifier_indexes().into_iter().take(1).collect()
    };
    coll.create_indexes(indexes).await?;
    let batch = shape.batch.max(1);
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(600);
    let mut handles = Vec::new();
    for _ in 0..shape.tasks.max(1) {
        let writer = Writer {
            db: db.clone(),
            coll: coll.clone(),
            path: shape.path,
            batch,
        };
        let (next, errors) = (next.clone(), errors.clone());
        // The writers share one counter, so each group of documents is written once.
        handles.push(tokio::spawn(async move {
            loop {
                let first = next.fetch_add(batch, Ordering::Relaxed);
                if first >= docs || Instant::now() > deadline {
                    break;
                }
                let failed = writer.write(first..docs.min(first + batch)).await;
                errors.fetch_add(failed, Ordering::Relaxed);
            }
        }));
    }
    for handle in handles {
        handle.await?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let done = next.load(Ordering::Relaxed).min(docs);
    let _ = db.drop().await;
    Ok(MongoCeiling {
        shape,
        docs: done,
        seconds,
        per_sec: stats::rate(done, seconds),
        errors: errors.load(Ordering::Relaxed),
    })
}

/// One concurrent writer of a ceiling.
struct Writer {
    db: Database,
    coll: Collection<Document>,
    path: MongoPath,
    batch: u64,
}

impl Writer {
    /// Writes the documents numbered `range` as the shape says; returns how many of
    /// them failed.
    async fn write(&self, range: Range<u64>) -> u64 {
        let now = mongodb::bson::DateTime::now();
        let mut group: Vec<Document> = range.map(|i| notification_doc(i, now)).collect();
        let inserted = if self.batch == 1 {
            self.coll.insert_one(&group[0]).await.is_ok()
        } else {
            self.coll.insert_many(&group).ordered(false).await.is_ok()
        };
        if !inserted {
            return group.len() as u64;
        }
        if self.path == MongoPath::InsertOnly {
            return 0;
        }
        mark_sent(&mut group, now);
        if self.batch == 1 {
            self.replace_one(group.remove(0)).await
        } else {
            self.replace_many(group).await
        }
    }

    /// The notifier's single outcome write: `find_one_and_replace` guarded by
    /// `{_id, attempts}`.
    async fn replace_one(&self, d: Document) -> u64 {
        let id = d.get_str("_id").unwrap_or_default().to_owned();
        let replaced = self
            .coll
            .find_one_and_replace(doc! { "_id": id, "attempts": 0_i64 }, d)
            .await;
        u64::from(!matches!(replaced, Ok(Some(_))))
    }

    /// The notifier's batched outcome write: one `update` command of guarded
    /// replacements, as its outcome batcher sends them.
    async fn replace_many(&self, group: Vec<Document>) -> u64 {
        let n = group.len() as i64;
        let updates: Vec<Document> = group
            .into_iter()
            .map(|d| {
                let id = d.get_str("_id").unwrap_or_default().to_owned();
                doc! { "q": { "_id": id, "attempts": 0_i64 }, "u": d, "upsert": false, "multi": false }
            })
            .collect();
        let reply = self
            .db
            .run_command(doc! { "update": "notifications", "updates": updates, "ordered": false })
            .await;
        let matched = reply.ok().and_then(|r| {
            r.get_i32("n")
                .map(i64::from)
                .or_else(|_| r.get_i64("n"))
                .ok()
        });
        if matched == Some(n) {
            0
        } else {
            u64::try_from(n - matched.unwrap_or(0)).unwrap_or(0)
        }
    }
}

/// The documents as the notifier's outcome write leaves them: `SENT`, one attempt.
fn mark_sent(group: &mut [Document], claimed: mongodb::bson::DateTime) {
    let sent = mongodb::bson::DateTime::now();
    for d in group {
        d.insert("status", "SENT");
        d.insert("attempts", 1_i64);
        d.insert("updated_at", sent);
        d.insert("sent_at", sent);
        d.insert(
            "send_latency_ms",
            sent.timestamp_millis() - claimed.timestamp_millis(),
        );
    }
}
