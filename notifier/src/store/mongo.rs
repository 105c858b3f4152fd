//! The MongoDB adapter (async driver), collection `notifications`.
//!
//! Document (dates are BSON dates, ids strings):
//!
//! ```text
//! { _id: "<uuid v7>", event_id, event_type, order_id, recipient, type, locale,
//!   status: "PENDING" | "RETRYING" | "SENT" | "FAILED", attempts, last_error,
//!   subject, smtp_message_id, created_at, updated_at, sent_at, event_occurred_at,
//!   send_latency_ms }
//! ```
//!
//! Indexes (created at start-up, idempotently): unique `(event_id, recipient)`; and
//! `(x, created_at desc)` for every filter of the history API (`order_id`, `recipient`,
//! `type`, `status`) plus `created_at` alone, so each filter reads newest first from an
//! index; `(status, send_latency_ms)` for the latency percentiles. (`_id`, the
//! tie-breaker of the sort, is not in them: nx-27017 rejects writes to a collection with
//! `_id` in a compound index.)
//!
//! Aggregations are avoided on purpose: the local server (nx-27017) answers simple
//! finds and counts correctly but not `$group` on several fields, so the statistics are
//! counts plus sorted finds, which real MongoDB serves from the same indexes.

use super::{
    percentile_rank, Attempt, Claim, Cursor, HistoryStore, LatencyStats, ListQuery,
    NewNotification, Page, Stats, StoreError,
};
use crate::domain::{DeliveryStatus, MailKind, Notification};
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::{ClientOptions, IndexOptions, ReturnDocument};
use mongodb::{Client, Collection, Database, IndexModel};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};
use uuid::Uuid;

pub const COLLECTION: &str = "notifications";
const DUPLICATE_KEY: i32 = 11000;

#[derive(Clone)]
pub struct MongoHistoryStore {
    database: Database,
    collection: Collection<NotificationDoc>,
}

impl MongoHistoryStore {
    /// Connects (lazily: the driver connects on first use) with short timeouts, so an
    /// unreachable server fails requests in seconds rather than hanging them.
    pub async fn connect(uri: &str, database: &str) -> anyhow::Result<Self> {
        let mut options = ClientOptions::parse(uri).await?;
        options.app_name = Some("notifier".to_owned());
        // Unless the URI says otherwise (`serverSelectionTimeoutMS`, `connectTimeoutMS`).
        options
            .server_selection_timeout
            .get_or_insert(Duration::from_secs(5));
        options
            .connect_timeout
            .get_or_insert(Duration::from_secs(5));
        let client = Client::with_options(options)?;
        Ok(Self::new(client.database(database)))
    }

    pub fn new(database: Database) -> Self {
        let collection = database.collection(COLLECTION);
        Self {
            database,
            collection,
        }
    }

    pub fn database(&self) -> &Database {
        &self.database
    }

    /// Creates the indexes (existing ones are left as they are).
    pub async fn ensure_indexes(&self) -> Result<(), StoreError> {
        let unique = IndexModel::builder()
            .keys(doc! { "event_id": 1, "recipient": 1 })
            .options(
                IndexOptions::builder()
                    .unique(true)
                    .name("event_id_recipient_unique".to_owned())
                    .build(),
            )
            .build();
        let mut models = vec![unique];
        for field in ["order_id", "recipient", "type", "status"] {
            models.push(
                IndexModel::builder()
                    .keys(doc! { field: 1, "created_at": -1 })
                    .options(
                        IndexOptions::builder()
                            .name(format!("{field}_created_at"))
                            .build(),
                    )
                    .build(),
            );
        }
        models.push(
            IndexModel::builder()
                .keys(doc! { "created_at": -1 })
                .options(
                    IndexOptions::builder()
                        .name("created_at".to_owned())
                        .build(),
                )
                .build(),
        );
        models.push(
            IndexModel::builder()
                .keys(doc! { "status": 1, "send_latency_ms": 1 })
                .options(
                    IndexOptions::builder()
                        .name("status_send_latency".to_owned())
                        .build(),
                )
                .build(),
        );
        timed(self.collection.create_indexes(models))
            .await
            .map(|_| ())
            .map_err(store_error)
    }
}

/// The stored document.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct NotificationDoc {
    #[serde(rename = "_id")]
    id: String,
    event_id: String,
    event_type: String,
    order_id: String,
    recipient: String,
    #[serde(rename = "type")]
    kind: String,
    locale: String,
    status: String,
    attempts: i64,
    last_error: Option<String>,
    subject: String,
    smtp_message_id: String,
    created_at: mongodb::bson::DateTime,
    updated_at: mongodb::bson::DateTime,
    sent_at: Option<mongodb::bson::DateTime>,
    event_occurred_at: mongodb::bson::DateTime,
    #[serde(default)]
    send_latency_ms: Option<i64>,
}

fn bson_time(at: DateTime<Utc>) -> mongodb::bson::DateTime {
    mongodb::bson::DateTime::from_millis(at.timestamp_millis())
}

fn chrono_time(at: mongodb::bson::DateTime) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(at.timestamp_millis()).unwrap_or_default()
}

impl From<&Notification> for NotificationDoc {
    fn from(n: &Notification) -> Self {
        Self {
            id: n.id.clone(),
            event_id: n.event_id.to_string(),
            event_type: n.event_type.clone(),
            order_id: n.order_id.to_string(),
            recipient: n.recipient.clone(),
            kind: n.kind.as_str().to_owned(),
            locale: n.locale.clone(),
            status: n.status.as_str().to_owned(),
            attempts: i64::from(n.attempts),
            last_error: n.last_error.clone(),
            subject: n.subject.clone(),
            smtp_message_id: n.smtp_message_id.clone(),
            created_at: bson_time(n.created_at),
            updated_at: bson_time(n.updated_at),
            sent_at: n.sent_at.map(bson_time),
            event_occurred_at: bson_time(n.event_occurred_at),
            send_latency_ms: n
                .sent_at
                .map(|sent| (sent - n.created_at).num_milliseconds().max(0)),
        }
    }
}

impl TryFrom<NotificationDoc> for Notification {
    type Error = StoreError;

    fn try_from(doc: NotificationDoc) -> Result<Self, StoreError> {
        let bad = |field: &str, value: &str| {
            StoreError::permanent(format!(
                "notification {} has an invalid {field}: {value:?}",
                doc.id
            ))
        };
        Ok(Notification {
            event_id: Uuid::parse_str(&doc.event_id).map_err(|_| bad("event_id", &doc.event_id))?,
            order_id: Uuid::parse_str(&doc.order_id).map_err(|_| bad("order_id", &doc.order_id))?,
            kind: doc
                .kind
                .parse::<MailKind>()
                .map_err(|()| bad("type", &doc.kind))?,
            status: doc
                .status
                .parse::<DeliveryStatus>()
                .map_err(|()| bad("status", &doc.status))?,
            attempts: u32::try_from(doc.attempts.max(0)).unwrap_or(u32::MAX),
            created_at: chrono_time(doc.created_at),
            updated_at: chrono_time(doc.updated_at),
            sent_at: doc.sent_at.map(chrono_time),
            event_occurred_at: chrono_time(doc.event_occurred_at),
            id: doc.id,
            event_type: doc.event_type,
            recipient: doc.recipient,
            locale: doc.locale,
            last_error: doc.last_error,
            subject: doc.subject,
            smtp_message_id: doc.smtp_message_id,
        })
    }
}

fn is_duplicate_key(error: &mongodb::error::Error) -> bool {
    match error.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(e)) => e.code == DUPLICATE_KEY,
        ErrorKind::Command(e) => e.code == DUPLICATE_KEY,
        ErrorKind::InsertMany(e) => e
            .write_errors
            .iter()
            .flatten()
            .any(|e| e.code == DUPLICATE_KEY),
        _ => false,
    }
}

fn store_error(error: mongodb::error::Error) -> StoreError {
    let transient = matches!(
        error.kind.as_ref(),
        ErrorKind::Io(_)
            | ErrorKind::ServerSelection { .. }
            | ErrorKind::ConnectionPoolCleared { .. }
            | ErrorKind::Shutdown
    ) || [
        "RetryableWriteError",
        "TransientTransactionError",
        "NetworkError",
    ]
    .iter()
    .any(|label| error.contains_label(label));
    StoreError {
        transient,
        message: format!("MongoDB: {error}"),
    }
}

/// Runs a write and records its duration.
async fn timed<T>(op: impl std::future::IntoFuture<Output = T>) -> T {
    let started = Instant::now();
    let out = op.await;
    metrics::histogram!("notifier_mongodb_write_duration_seconds")
        .record(started.elapsed().as_secs_f64());
    out
}

fn list_filter(query: &ListQuery) -> Document {
    let mut clauses: Vec<Document> = Vec::new();
    if let Some(order_id) = query.order_id {
        clauses.push(doc! { "order_id": order_id.to_string() });
    }
    if let Some(recipient) = &query.recipient {
        clauses.push(doc! { "recipient": recipient });
    }
    if let Some(kind) = query.kind {
        clauses.push(doc! { "type": kind.as_str() });
    }
    if let Some(status) = query.status {
        clauses.push(doc! { "status": status.as_str() });
    }
    if let Some(from) = query.from {
        clauses.push(doc! { "created_at": { "$gte": bson_time(from) } });
    }
    if let Some(to) = query.to {
        clauses.push(doc! { "created_at": { "$lt": bson_time(to) } });
    }
    if let Some(cursor) = &query.after {
        let at = bson_time(cursor.created_at);
        clauses.push(doc! { "$or": [
            { "created_at": { "$lt": at } },
            { "created_at": at, "_id": { "$lt": &cursor.id } },
        ] });
    }
    match clauses.len() {
        0 => Document::new(),
        1 => clauses.pop().unwrap_or_default(),
        _ => doc! { "$and": clauses },
    }
}

#[async_trait::async_trait]
impl HistoryStore for MongoHistoryStore {
    async fn claim(&self, new: &NewNotification) -> Result<Claim, StoreError> {
        let doc = NotificationDoc::from(&new.pending());
        match timed(self.collection.insert_one(&doc)).await {
            Ok(_) => Ok(Claim::Created(new.pending())),
            Err(error) if is_duplicate_key(&error) => {
                let filter = doc! { "event_id": &doc.event_id, "recipient": &doc.recipient };
                let existing = self
                    .collection
                    .find_one(filter)
                    .await
                    .map_err(store_error)?
                    .ok_or_else(|| {
                        StoreError::transient(format!(
                            "duplicate key for event {} / {} but no record found",
                            doc.event_id, doc.recipient
                        ))
                    })?;
                let existing = Notification::try_from(existing)?;
                Ok(if existing.status.is_final() {
                    Claim::Finished(existing)
                } else {
                    Claim::Unfinished(existing)
                })
            }
            Err(error) => Err(store_error(error)),
        }
    }

    /// A whole-document replace guarded by the attempt count (optimistic concurrency),
    /// rather than `$set`/`$inc`: nx-27017 turns dates written by `$set` into strings,
    /// while a replacement keeps them BSON dates. If the record moved on meanwhile (another
    /// instance after a rebalance), the attempt is applied to the fresh record.
    async fn record_attempt(
        &self,
        current: &Notification,
        attempt: &Attempt,
    ) -> Result<Notification, StoreError> {
        let mut base = current.clone();
        for _ in 0..5 {
            let next = attempt.apply(&base);
            let filter = doc! { "_id": &base.id, "attempts": i64::from(base.attempts) };
            let replaced = timed(
                self.collection
                    .find_one_and_replace(filter, NotificationDoc::from(&next))
                    .return_document(ReturnDocument::After),
            )
            .await
            .map_err(store_error)?;
            if let Some(doc) = replaced {
                return Notification::try_from(doc);
            }
            base = self.get(&base.id).await?.ok_or_else(|| {
                StoreError::permanent(format!("notification {} does not exist", base.id))
            })?;
        }
        Err(StoreError::transient(format!(
            "notification {} keeps changing under this writer",
            current.id
        )))
    }

    async fn get(&self, id: &str) -> Result<Option<Notification>, StoreError> {
        self.collection
            .find_one(doc! { "_id": id })
            .await
            .map_err(store_error)?
            .map(Notification::try_from)
            .transpose()
    }

    async fn list(&self, query: &ListQuery) -> Result<Page, StoreError> {
        let limit = query.limit.max(1);
        let docs: Vec<NotificationDoc> = self
            .collection
            .find(list_filter(query))
            .sort(doc! { "created_at": -1, "_id": -1 })
            .limit(i64::try_from(limit + 1).unwrap_or(i64::MAX))
            .await
            .map_err(store_error)?
            .try_collect()
            .await
            .map_err(store_error)?;
        let more = docs.len() > limit;
        let items = docs
            .into_iter()
            .take(limit)
            .map(Notification::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        let next_cursor = if more {
            items.last().map(|last| Cursor {
                created_at: last.created_at,
                id: last.id.clone(),
            })
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    async fn stats(&self, since: DateTime<Utc>) -> Result<Stats, StoreError> {
        let since = bson_time(since);
        let mut stats = Stats::default();
        let counts = MailKind::ALL.into_iter().flat_map(|kind| {
            DeliveryStatus::ALL.into_iter().map(move |status| {
                let filter = doc! {
                    "type": kind.as_str(),
                    "status": status.as_str(),
                    "created_at": { "$gte": since },
                };
                async move {
                    let count = self.collection.count_documents(filter).await?;
                    Ok::<_, mongodb::error::Error>((kind, status, count))
                }
            })
        });
        for (kind, status, count) in futures::future::try_join_all(counts)
            .await
            .map_err(store_error)?
        {
            stats.total += count;
            *stats
                .by_status
                .entry(status.as_str().to_owned())
                .or_default() += count;
            stats
                .by_type
                .entry(kind.as_str().to_owned())
                .or_default()
                .insert(status.as_str().to_owned(), count);
        }
        let sent = doc! {
            "status": DeliveryStatus::Sent.as_str(),
            "created_at": { "$gte": since },
            "send_latency_ms": { "$ne": Bson::Null },
        };
        let count = self
            .collection
            .count_documents(sent.clone())
            .await
            .map_err(store_error)?;
        let at_rank = |p: u32| {
            let filter = sent.clone();
            async move {
                let Some(rank) = percentile_rank(p, count) else {
                    return Ok(None);
                };
                let doc = self
                    .collection
                    .find_one(filter)
                    .sort(doc! { "send_latency_ms": 1 })
                    .skip(rank)
                    .await?;
                Ok::<_, mongodb::error::Error>(doc.and_then(|d| d.send_latency_ms))
            }
        };
        let (p50, p95, p99) =
            futures::try_join!(at_rank(50), at_rank(95), at_rank(99)).map_err(store_error)?;
        stats.send_latency_ms = LatencyStats {
            count,
            p50,
            p95,
            p99,
        };
        Ok(stats)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.database
            .run_command(doc! { "ping": 1 })
            .await
            .map(|_| ())
            .map_err(store_error)
    }
}
