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
//! Only the unique index serves the hot path (a claim's duplicate check and its lookup by
//! `event_id`; outcomes address documents by `_id`); the others serve the history API
//! and cost every write some index maintenance (measured by `notifier-bench`).
//!
//! Writes of the hot path are batched (see [`super::batcher`]): the claims of the mails
//! in flight go out as one unordered `insert_many`, their outcomes as one `update`
//! command of guarded replacements. A duplicate key on one document of the batch marks
//! just that mail as claimed before; the others are unaffected. Every caller still gets
//! its answer only once its own write was acknowledged.
//!
//! Aggregations are avoided on purpose: the local server (nx-27017) answers simple
//! finds and counts correctly but not `$group` on several fields, so the statistics are
//! counts plus sorted finds, which real MongoDB serves from the same indexes.
//!
//! Size: one adapter of the `HistoryStore` port; the claim, the attempts, the list
//! query with its cursor, the stats, the indexes and the batched commands all follow
//! the document layout above, so they stay in one file.

use super::batcher::{BatchConfig, Batcher};
use super::{
    percentile_rank, Attempt, Claim, Cursor, HistoryStore, LatencyStats, ListQuery,
    NewNotification, Page, Stats, StoreError,
};
use crate::domain::{DeliveryStatus, MailKind, Notification};
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};
use mongodb::error::ErrorKind;
use mongodb::options::{ClientOptions, IndexOptions, ReturnDocument};
use mongodb::{Client, Collection, Database, IndexModel};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use uuid::Uuid;

pub const COLLECTION: &str = "notifications";
const DUPLICATE_KEY: i32 = 11000;

type ClaimResult = Result<Claim, StoreError>;
type AttemptResult = Result<Notification, StoreError>;

#[derive(Clone)]
pub struct MongoHistoryStore {
    database: Database,
    collection: Collection<NotificationDoc>,
    claims: Batcher<NewNotification, ClaimResult>,
    attempts: Batcher<(Notification, Attempt), AttemptResult>,
}

impl MongoHistoryStore {
    /// Connects (lazily: the driver connects on first use) with short timeouts, so an
    /// unreachable server fails requests in seconds rather than hanging them.
    pub async fn connect(uri: &str, database: &str, batching: BatchConfig) -> anyhow::Result<Self> {
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
        Ok(Self::new(client.database(database), batching))
    }

    /// Starts the write batchers: call it inside a Tokio runtime.
    pub fn new(database: Database, batching: BatchConfig) -> Self {
        let collection: Collection<NotificationDoc> = database.collection(COLLECTION);
        let claims = {
            let collection = collection.clone();
            Batcher::spawn(batching, move |batch| {
                let collection = collection.clone();
                async move { claim_batch(&collection, batch).await }
            })
        };
        let attempts = {
            let (database, collection) = (database.clone(), collection.clone());
            Batcher::spawn(batching, move |batch| {
                let (database, collection) = (database.clone(), collection.clone());
                async move { record_batch(&database, &collection, batch).await }
            })
        };
        Self {
            database,
            collection,
            claims,
            attempts,
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

fn store_error(error: mongodb::error::Error) -> StoreError {
    let transient = match error.kind.as_ref() {
        ErrorKind::Command(command) => !blames_the_document(command.code),
        ErrorKind::Write(mongodb::error::WriteFailure::WriteError(write)) => {
            !blames_the_document(write.code)
        }
        _ => true,
    };
    StoreError {
        transient,
        message: format!("MongoDB: {error}"),
    }
}

/// Whether a server error code says the document or command itself can never be
/// written (bad value, bad field name, too large, failed validation), so retrying is
/// pointless and the event is a dead letter. Every other error, including one the server
/// cannot name (nx-27017 answers `8 UnknownError` for any SQLite failure), is treated as
/// the store being unwell: the write is retried and the notifier pauses rather than
/// dead-lettering a valid mail. Driver-side errors are transient for the same reason.
fn blames_the_document(code: i32) -> bool {
    const BLAMES_THE_DOCUMENT: [i32; 12] = [
        2,     // BadValue
        9,     // FailedToParse
        14,    // TypeMismatch
        52,    // DollarPrefixedFieldName
        53,    // InvalidIdField
        55,    // InvalidDBRef
        56,    // EmptyFieldName
        57,    // DottedFieldName
        66,    // ImmutableField
        121,   // DocumentValidationFailure
        10334, // BSONObjectTooLarge
        17280, // KeyTooLong
    ];
    BLAMES_THE_DOCUMENT.contains(&code)
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

/// Inserts the `PENDING` records of a batch of claims in one unordered `insert_many`.
/// A duplicate key fails only its own document: that mail was claimed before, and its
/// existing record (read in one query for all such mails) decides what happens to it.
async fn claim_batch(
    collection: &Collection<NotificationDoc>,
    batch: Vec<NewNotification>,
) -> Vec<ClaimResult> {
    metrics::histogram!("notifier_mongodb_batch_size", "op" => "claim").record(batch.len() as f64);
    let pending: Vec<Notification> = batch.iter().map(NewNotification::pending).collect();
    let docs: Vec<NotificationDoc> = pending.iter().map(NotificationDoc::from).collect();
    let mut results: Vec<Option<ClaimResult>> = Vec::with_capacity(docs.len());
    let mut duplicates: Vec<usize> = Vec::new();
    match timed(collection.insert_many(&docs).ordered(false)).await {
        Ok(_) => {}
        Err(error) => match error.kind.as_ref() {
            ErrorKind::InsertMany(failure) if failure.write_concern_error.is_none() => {
                let mut failed: HashMap<usize, StoreError> = HashMap::new();
                // An index past the batch would be a server bug; never trust it to index.
                for write_error in failure
                    .write_errors
                    .iter()
                    .flatten()
                    .filter(|e| e.index < docs.len())
                {
                    if write_error.code == DUPLICATE_KEY {
                        duplicates.push(write_error.index);
                    } else {
                        let message = format!(
                            "MongoDB: insert failed ({}): {}",
                            write_error.code, write_error.message
                        );
                        failed.insert(
                            write_error.index,
                            StoreError {
                                transient: !blames_the_document(write_error.code),
                                message,
                            },
                        );
                    }
                }
                results = (0..docs.len())
                    .map(|i| failed.remove(&i).map(Err))
                    .collect();
            }
            // Unknown which documents were written: every caller retries, and a retry
            // that meets its own earlier insert resumes it as unfinished.
            _ => {
                let error = store_error(error);
                return batch.iter().map(|_| Err(error.clone())).collect();
            }
        },
    }
    results.resize_with(docs.len(), || None);
    if !duplicates.is_empty() {
        let existing = existing_records(collection, &docs, &duplicates).await;
        for index in duplicates {
            let doc = &docs[index];
            results[index] = Some(match &existing {
                Err(error) => Err(error.clone()),
                Ok(found) => match found.get(&(doc.event_id.clone(), doc.recipient.clone())) {
                    None => Err(StoreError::transient(format!(
                        "duplicate key for event {} / {} but no record found",
                        doc.event_id, doc.recipient
                    ))),
                    Some(existing) => Notification::try_from(existing.clone()).map(|existing| {
                        if existing.status.is_final() {
                            Claim::Finished(existing)
                        } else {
                            Claim::Unfinished(existing)
                        }
                    }),
                },
            });
        }
    }
    results
        .into_iter()
        .zip(pending)
        .map(|(result, pending)| result.unwrap_or(Ok(Claim::Created(pending))))
        .collect()
}

/// The records already there for the documents at `indexes`, by (event, recipient).
async fn existing_records(
    collection: &Collection<NotificationDoc>,
    docs: &[NotificationDoc],
    indexes: &[usize],
) -> Result<HashMap<(String, String), NotificationDoc>, StoreError> {
    let event_ids: Vec<&str> = indexes.iter().map(|&i| docs[i].event_id.as_str()).collect();
    let found: Vec<NotificationDoc> = collection
        .find(doc! { "event_id": { "$in": event_ids } })
        .await
        .map_err(store_error)?
        .try_collect()
        .await
        .map_err(store_error)?;
    Ok(found
        .into_iter()
        .map(|d| ((d.event_id.clone(), d.recipient.clone()), d))
        .collect())
}

/// Writes the outcomes of a batch of attempts as one `update` command of replacements,
/// each guarded by the attempt count it was computed from (the same guard as
/// [`record_one`]). When every guard matched, every record is what its caller computed;
/// otherwise (another writer moved a record on meanwhile) each is settled on its own.
async fn record_batch(
    database: &Database,
    collection: &Collection<NotificationDoc>,
    batch: Vec<(Notification, Attempt)>,
) -> Vec<AttemptResult> {
    metrics::histogram!("notifier_mongodb_batch_size", "op" => "outcome")
        .record(batch.len() as f64);
    let nexts: Vec<Notification> = batch
        .iter()
        .map(|(current, attempt)| attempt.apply(current))
        .collect();
    let statements: Result<Vec<Document>, _> = batch
        .iter()
        .zip(&nexts)
        .map(|((current, _), next)| {
            mongodb::bson::to_document(&NotificationDoc::from(next)).map(|replacement| {
                doc! {
                    "q": { "_id": &current.id, "attempts": i64::from(current.attempts) },
                    "u": replacement,
                    "upsert": false,
                    "multi": false,
                }
            })
        })
        .collect();
    let statements = match statements {
        Ok(statements) => statements,
        Err(error) => {
            let error = StoreError::permanent(format!("MongoDB: cannot encode a record: {error}"));
            return batch.iter().map(|_| Err(error.clone())).collect();
        }
    };
    let command = doc! { "update": collection.name(), "updates": statements, "ordered": false };
    let reply = timed(database.run_command(command)).await;
    let all_matched = match &reply {
        Ok(reply) => {
            let matched = reply
                .get_i32("n")
                .map(i64::from)
                .or_else(|_| reply.get_i64("n"))
                .unwrap_or(-1);
            matched == batch.len() as i64
                && !reply.contains_key("writeErrors")
                && !reply.contains_key("writeConcernError")
        }
        Err(_) => false,
    };
    if all_matched {
        // As stored (times in milliseconds), like a record read back.
        return nexts
            .iter()
            .map(|next| Notification::try_from(NotificationDoc::from(next)))
            .collect();
    }
    if let Err(error) = reply {
        // Some statements may have been applied: each caller's retry recognises its own.
        let error = store_error(error);
        return batch.iter().map(|_| Err(error.clone())).collect();
    }
    futures::future::join_all(
        batch
            .iter()
            .map(|(current, attempt)| record_one(collection, current, attempt)),
    )
    .await
}

/// One attempt's outcome as a whole-document replace guarded by the attempt count
/// (optimistic concurrency), rather than `$set`/`$inc`: nx-27017 turns dates written by
/// `$set` into strings, while a replacement keeps them BSON dates. If the record moved on
/// meanwhile (another instance after a rebalance) the attempt is applied to the fresh
/// record, unless the fresh record is this very outcome already (written by a batch, or by
/// an earlier try whose acknowledgement was lost), which is not counted twice.
async fn record_one(
    collection: &Collection<NotificationDoc>,
    current: &Notification,
    attempt: &Attempt,
) -> AttemptResult {
    let mut base = current.clone();
    for _ in 0..5 {
        let next = attempt.apply(&base);
        let next_doc = NotificationDoc::from(&next);
        let filter = doc! { "_id": &base.id, "attempts": i64::from(base.attempts) };
        let replaced = timed(
            collection
                .find_one_and_replace(filter, &next_doc)
                .return_document(ReturnDocument::After),
        )
        .await
        .map_err(store_error)?;
        if let Some(doc) = replaced {
            return Notification::try_from(doc);
        }
        let fresh = collection
            .find_one(doc! { "_id": &base.id })
            .await
            .map_err(store_error)?
            .ok_or_else(|| {
                StoreError::permanent(format!("notification {} does not exist", base.id))
            })?;
        if fresh == NotificationDoc::from(&attempt.apply(current)) {
            return Notification::try_from(fresh);
        }
        base = Notification::try_from(fresh)?;
    }
    Err(StoreError::transient(format!(
        "notification {} keeps changing under this writer",
        current.id
    )))
}

#[async_trait::async_trait]
impl HistoryStore for MongoHistoryStore {
    async fn claim(&self, new: &NewNotification) -> Result<Claim, StoreError> {
        self.claims
            .submit(new.clone())
            .await
            .unwrap_or_else(|| Err(StoreError::transient("the history writer stopped")))
    }

    async fn record_attempt(
        &self,
        current: &Notification,
        attempt: &Attempt,
    ) -> Result<Notification, StoreError> {
        self.attempts
            .submit((current.clone(), attempt.clone()))
            .await
            .unwrap_or_else(|| Err(StoreError::transient("the history writer stopped")))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn command_error(code: i32) -> mongodb::error::Error {
        let reply = doc! { "ok": 0, "code": code, "errmsg": "test", "codeName": "Test" };
        let command: mongodb::error::CommandError =
            mongodb::bson::from_document(reply).expect("a command error");
        mongodb::error::Error::from(ErrorKind::Command(command))
    }

    #[test]
    fn only_errors_that_blame_the_document_are_permanent() {
        // nx-27017 reports any SQLite failure as 8 UnknownError: the store, not the mail.
        assert!(store_error(command_error(8)).transient);
        assert!(store_error(command_error(112)).transient, "WriteConflict");
        assert!(!store_error(command_error(121)).transient, "validation");
        assert!(!store_error(command_error(10334)).transient, "too large");
    }
}
