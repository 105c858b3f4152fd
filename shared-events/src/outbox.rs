//! The transactional outbox and its relay.
//!
//! A service writes its state change and the event announcing it in one transaction
//! ([`Outbox::enqueue`]), then nudges the relay ([`Outbox::notify`]). The relay publishes
//! unpublished rows in id order — so one order's events keep their order — waits for the
//! broker's acknowledgement, and only then marks them published. A crash between publish
//! and mark means the rows are published again: delivery is at least once, and consumers
//! are idempotent. A slow poll catches rows written by other instances.

use crate::db::{run_blocking, DbError, PgPool};
use crate::event::Event;
use crate::kafka::event_headers;
use crate::topics::Topics;
use chrono::{DateTime, Utc};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

diesel::table! {
    outbox (id) {
        id -> Int8,
        event_id -> Uuid,
        topic -> Text,
        message_key -> Text,
        event_type -> Text,
        payload -> Text,
        created_at -> Timestamptz,
        published_at -> Nullable<Timestamptz>,
    }
}

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = outbox)]
struct OutboxRow {
    id: i64,
    event_id: uuid::Uuid,
    topic: String,
    message_key: String,
    event_type: String,
    payload: String,
}

/// The write side: enqueue events inside a transaction, then notify the relay.
#[derive(Debug, Clone)]
pub struct Outbox {
    topics: Topics,
    wake: Arc<Notify>,
}

impl Outbox {
    pub fn new(topics: Topics) -> Self {
        Self {
            topics,
            wake: Arc::new(Notify::new()),
        }
    }

    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// Adds `event` to the outbox. Call it inside the transaction that makes the change
    /// the event announces.
    pub fn enqueue(&self, conn: &mut PgConnection, event: &Event) -> QueryResult<()> {
        diesel::insert_into(outbox::table)
            .values((
                outbox::event_id.eq(event.event_id),
                outbox::topic.eq(self.topics.for_event(&event.body)),
                outbox::message_key.eq(event.key()),
                outbox::event_type.eq(event.event_type().as_str()),
                outbox::payload.eq(event.to_json()),
            ))
            .execute(conn)
            .map(|_| ())
    }

    /// Wakes the relay. Call it after the transaction committed.
    pub fn notify(&self) {
        self.wake.notify_one();
    }

    pub fn relay(&self, pool: PgPool, producer: FutureProducer) -> OutboxRelay {
        OutboxRelay {
            pool,
            producer,
            wake: self.wake.clone(),
            batch_size: 200,
            idle_poll: Duration::from_millis(500),
            retention: Duration::from_secs(3600),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("publish failed: {0}")]
    Publish(#[from] rdkafka::error::KafkaError),
}

pub struct OutboxRelay {
    pool: PgPool,
    producer: FutureProducer,
    wake: Arc<Notify>,
    batch_size: i64,
    idle_poll: Duration,
    retention: Duration,
}

impl OutboxRelay {
    pub fn with_idle_poll(mut self, idle_poll: Duration) -> Self {
        self.idle_poll = idle_poll;
        self
    }

    /// Publishes until `shutdown` is cancelled.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut last_cleanup = Instant::now();
        loop {
            let wait = match self.publish_batch().await {
                Ok(published) if published as i64 == self.batch_size => continue,
                Ok(_) => self.idle_poll,
                Err(error) => {
                    tracing::warn!(%error, "Outbox relay failed; will retry.");
                    self.idle_poll.max(Duration::from_secs(1))
                }
            };
            if last_cleanup.elapsed() > Duration::from_secs(60) {
                last_cleanup = Instant::now();
                self.clean_up().await;
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
        tracing::info!("Outbox relay stopped.");
    }

    /// Publishes one batch of unpublished rows; returns how many were published.
    pub async fn publish_batch(&self) -> Result<usize, RelayError> {
        let limit = self.batch_size;
        let rows: Vec<OutboxRow> = run_blocking(&self.pool, move |conn| {
            outbox::table
                .filter(outbox::published_at.is_null())
                .order(outbox::id)
                .limit(limit)
                .select(OutboxRow::as_select())
                .load(conn)
                .map_err(DbError::from)
        })
        .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let published = self.send_in_order(&rows).await;
        let ids: Vec<i64> = rows.iter().take(published).map(|row| row.id).collect();
        if !ids.is_empty() {
            run_blocking(&self.pool, move |conn| mark_published(conn, &ids)).await?;
        }
        if published < rows.len() {
            return Err(RelayError::Publish(
                rdkafka::error::KafkaError::MessageProduction(
                    rdkafka::types::RDKafkaErrorCode::MessageTimedOut,
                ),
            ));
        }
        Ok(published)
    }

    /// Enqueues every row (librdkafka keeps enqueue order per partition), awaits them
    /// all, and returns the length of the prefix that was acknowledged: rows after a
    /// failure are sent again, so an order's events are never marked out of order.
    async fn send_in_order(&self, rows: &[OutboxRow]) -> usize {
        let sends = rows.iter().map(|row| {
            let event_id = row.event_id.to_string();
            let record = FutureRecord::to(&row.topic)
                .key(&row.message_key)
                .payload(&row.payload)
                .headers(event_headers(&row.event_type, &event_id));
            self.producer.send(record, Duration::from_secs(10))
        });
        let results = futures::future::join_all(sends).await;
        results
            .iter()
            .position(|result| {
                if let Err((error, _)) = result {
                    tracing::warn!(%error, "Outbox publish failed.");
                }
                result.is_err()
            })
            .unwrap_or(results.len())
    }

    /// Deletes rows published longer ago than the retention, so the table stays small.
    async fn clean_up(&self) {
        let cutoff: DateTime<Utc> =
            Utc::now() - chrono::Duration::from_std(self.retention).unwrap_or_default();
        let deleted = run_blocking(&self.pool, move |conn| {
            diesel::delete(outbox::table.filter(outbox::published_at.lt(cutoff)))
                .execute(conn)
                .map_err(DbError::from)
        })
        .await;
        if let Err(error) = deleted {
            tracing::warn!(%error, "Outbox clean-up failed.");
        }
    }
}

fn mark_published(conn: &mut PgConnection, ids: &[i64]) -> Result<usize, DbError> {
    Ok(diesel::update(outbox::table.filter(outbox::id.eq_any(ids)))
        .set(outbox::published_at.eq(diesel::dsl::now))
        .execute(conn)?)
}
