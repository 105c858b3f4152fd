//! The transactional outbox and its relay.
//!
//! A service writes its state change and the event announcing it in one transaction
//! ([`Outbox::enqueue`]), then nudges the relay ([`Outbox::notify`]). The relay publishes
//! unpublished rows in id order — so one order's events keep their order — waits for the
//! broker's acknowledgement, and only then marks them published. A crash between publish
//! and mark means the rows are published again: delivery is at least once, and consumers
//! are idempotent.
//!
//! Waking: the writer's own `notify` wakes the relay of its process at once; an insert
//! trigger `NOTIFY`s every other instance, whose relay listens on a connection of its own
//! (checked every few milliseconds); a slow poll is the last resort.
//!
//! Ordering across instances: only the relay holding the database's outbox advisory lock
//! publishes a batch, so two relays never interleave one order's events. Published rows
//! are deleted after a retention period, so the table stays small.

use crate::db::{blocking, run_blocking, DbError, PgPool};
#[cfg(feature = "async-db")]
use crate::event::Event;
use crate::kafka::{event_headers, with_trace_context};
use crate::schema::outbox;
use crate::topics::Topics;
use chrono::{DateTime, Utc};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = outbox)]
struct OutboxRow {
    id: i64,
    created_at: DateTime<Utc>,
    event_id: uuid::Uuid,
    topic: String,
    message_key: String,
    event_type: String,
    payload: String,
    traceparent: Option<String>,
}

#[cfg(feature = "async-db")]
#[derive(Debug, Insertable)]
#[diesel(table_name = outbox)]
struct NewOutboxRow {
    event_id: uuid::Uuid,
    topic: String,
    message_key: String,
    event_type: &'static str,
    payload: String,
    traceparent: Option<String>,
}

/// The delivery port for case 1: after a commit, the request that wrote an order's
/// events delivers them itself and waits for their subscribers (the HTTP chain,
/// [`crate::chain::HttpChain`], is the adapter). Without one (cases 2–4) the events are
/// the relay's to publish. The outbox only writes; it knows nothing of either transport.
pub trait InRequestDelivery: Send + Sync + std::fmt::Debug {
    /// Delivers order `order_id`'s committed events now, in order; how many went out.
    fn deliver(
        &self,
        order_id: uuid::Uuid,
    ) -> futures::future::BoxFuture<'_, anyhow::Result<usize>>;
    /// The secret deliveries are signed with, and received ones checked against.
    fn signer(&self) -> &crate::signing::EventSigner;
}

/// The write side: enqueue events inside a transaction, then notify the relay.
#[derive(Debug, Clone)]
pub struct Outbox {
    topics: Topics,
    wake: Arc<Notify>,
    /// Case 1: the events are delivered by the request that wrote them.
    in_request: Option<Arc<dyn InRequestDelivery>>,
}

impl Outbox {
    pub fn new(topics: Topics) -> Self {
        Self {
            topics,
            wake: Arc::new(Notify::new()),
            in_request: None,
        }
    }

    /// Case 1: the request that committed events delivers them through `delivery`
    /// rather than leaving them to the Kafka relay.
    pub fn delivered_in_request(mut self, delivery: impl InRequestDelivery + 'static) -> Self {
        self.in_request = Some(Arc::new(delivery));
        self
    }

    /// The in-request delivery, in case 1.
    pub fn in_request(&self) -> Option<&dyn InRequestDelivery> {
        self.in_request.as_deref()
    }

    /// True in case 1, where a request's events are delivered before it answers (and the
    /// request then shows what their delivery changed).
    pub fn delivers_in_request(&self) -> bool {
        self.in_request.is_some()
    }

    /// Case 1: delivers order `order_id`'s committed events now and waits for their
    /// subscribers. A failed delivery is logged and left to the background relay: the
    /// caller's own change is committed either way. With Kafka this does nothing: the
    /// relay publishes.
    pub async fn dispatch_now(&self, order_id: uuid::Uuid) {
        if let Some(delivery) = &self.in_request {
            if let Err(error) = delivery.deliver(order_id).await {
                tracing::warn!(%order_id, error = %format!("{error:#}"), "Event not delivered yet; the HTTP relay will retry.");
            }
        }
    }

    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// Adds `event` to the outbox. Call it inside the transaction that makes the change
    /// the event announces. The current span's trace context is stored with the row and
    /// published as the message's `traceparent` header.
    /// On either driver.
    #[cfg(feature = "async-db")]
    pub async fn enqueue<C: crate::sql::Connection>(
        &self,
        conn: &mut C,
        event: &Event,
    ) -> QueryResult<()> {
        conn.execute(diesel::insert_into(outbox::table).values(self.row(event)))
            .await
            .map(|_| ())
    }

    /// The outbox row of `event`.
    #[cfg(feature = "async-db")]
    fn row(&self, event: &Event) -> NewOutboxRow {
        NewOutboxRow {
            event_id: event.event_id,
            topic: self.topics.for_event(&event.body).to_owned(),
            message_key: event.key(),
            event_type: event.event_type().as_str(),
            payload: event.to_json(),
            traceparent: crate::telemetry::current_traceparent(),
        }
    }

    /// Wakes the relay. Call it after the transaction committed.
    pub fn notify(&self) {
        self.wake.notify_one();
    }

    /// The relay for this outbox; `service` labels its metrics.
    pub fn relay(
        &self,
        service: &'static str,
        pool: PgPool,
        producer: FutureProducer,
    ) -> OutboxRelay {
        OutboxRelay {
            service,
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
    service: &'static str,
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
        listen_for_inserts(self.pool.clone(), self.wake.clone(), shutdown.clone());
        metrics::counter!("saga_outbox_published_total", "service" => self.service).increment(0);
        tokio::spawn(report_backlog(
            self.service,
            self.pool.clone(),
            BACKLOG_EVERY,
            shutdown.clone(),
        ));
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

    /// Publishes one batch of unpublished rows; returns how many were published. Does
    /// nothing when another instance's relay holds the lock.
    pub async fn publish_batch(&self) -> Result<usize, RelayError> {
        let limit = self.batch_size;
        let pool = self.pool.clone();
        let claimed = blocking(move || claim_batch(&pool, limit))
            .await
            .map_err(DbError::from)??;
        let Some(Batch { mut lease, rows }) = claimed else {
            return Ok(0);
        };
        let published = self.send_in_order(&rows).await;
        let ids: Vec<i64> = rows.iter().take(published).map(|row| row.id).collect();
        let marked = blocking(move || {
            let marked = mark_published(&mut lease, &ids);
            release(&mut lease);
            marked
        })
        .await
        .map_err(DbError::from)?;
        marked?;
        self.record_lag(&rows[..published]);
        if published < rows.len() {
            return Err(RelayError::Publish(
                rdkafka::error::KafkaError::MessageProduction(
                    rdkafka::types::RDKafkaErrorCode::MessageTimedOut,
                ),
            ));
        }
        Ok(published)
    }

    /// Relay lag: from the commit of a row to its acknowledgement by the broker.
    fn record_lag(&self, rows: &[OutboxRow]) {
        let now = Utc::now();
        for row in rows {
            let lag = (now - row.created_at).to_std().unwrap_or_default();
            metrics::histogram!("saga_outbox_relay_lag_seconds", "service" => self.service)
                .record(lag.as_secs_f64());
        }
        metrics::counter!("saga_outbox_published_total", "service" => self.service)
            .increment(rows.len() as u64);
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
                .headers(with_trace_context(
                    event_headers(&row.event_type, &event_id),
                    row.traceparent.as_deref(),
                ));
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

/// How often the backlog gauges are refreshed.
const BACKLOG_EVERY: Duration = Duration::from_secs(5);

/// Refreshes `saga_outbox_backlog_events{service}` (rows not yet published) and
/// `saga_outbox_oldest_event_age_seconds{service}` (age of the oldest of them, 0 when
/// none) until `shutdown`. One cheap query on the partial index of unpublished rows.
/// Every instance reports the same database-wide figures: aggregate with `max`.
async fn report_backlog(
    service: &'static str,
    pool: PgPool,
    every: Duration,
    shutdown: CancellationToken,
) {
    loop {
        let backlog = run_blocking(&pool, |conn| {
            outbox::table
                .filter(outbox::published_at.is_null())
                .select((
                    diesel::dsl::count_star(),
                    diesel::dsl::min(outbox::created_at),
                ))
                .first::<(i64, Option<DateTime<Utc>>)>(conn)
                .map_err(DbError::from)
        })
        .await;
        match backlog {
            Ok((rows, oldest)) => {
                let age = oldest
                    .and_then(|at| (Utc::now() - at).to_std().ok())
                    .unwrap_or_default();
                metrics::gauge!("saga_outbox_backlog_events", "service" => service)
                    .set(rows as f64);
                metrics::gauge!("saga_outbox_oldest_event_age_seconds", "service" => service)
                    .set(age.as_secs_f64());
            }
            Err(error) => tracing::debug!(%error, "Outbox backlog not measured."),
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// The key of the advisory lock only the publishing relay holds ("outbox" in ASCII).
const RELAY_LOCK: i64 = 0x6f75_7462_6f78;

type Lease = diesel::r2d2::PooledConnection<diesel::r2d2::ConnectionManager<PgConnection>>;

/// A batch of rows and the connection holding the relay lock while they are published.
struct Batch {
    lease: Lease,
    rows: Vec<OutboxRow>,
}

/// Takes the relay lock on a connection of its own and loads the next rows; `None` when
/// there is nothing to do or another relay holds the lock.
fn claim_batch(pool: &PgPool, limit: i64) -> Result<Option<Batch>, DbError> {
    let mut lease = pool.get()?;
    let locked: bool = diesel::select(diesel::dsl::sql::<diesel::sql_types::Bool>(&format!(
        "pg_try_advisory_lock({RELAY_LOCK})"
    )))
    .get_result(&mut lease)?;
    if !locked {
        return Ok(None);
    }
    let rows = outbox::table
        .filter(outbox::published_at.is_null())
        .order(outbox::id)
        .limit(limit)
        .select(OutboxRow::as_select())
        .load(&mut lease);
    match rows {
        Ok(rows) if !rows.is_empty() => Ok(Some(Batch { lease, rows })),
        other => {
            release(&mut lease);
            other.map(|_| None).map_err(DbError::from)
        }
    }
}

/// Wakes the relay when another process commits outbox rows (the insert trigger sends
/// `NOTIFY outbox`). Holds one pooled connection while the relay runs.
fn listen_for_inserts(pool: PgPool, wake: Arc<Notify>, shutdown: CancellationToken) {
    let spawned = std::thread::Builder::new().name("outbox-listener".into()).spawn(move || {
        while !shutdown.is_cancelled() {
            match listen(&pool, &wake, &shutdown) {
                Ok(()) => break,
                Err(error) => {
                    tracing::warn!(%error, "Outbox listener lost its connection; reconnecting.");
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
    });
    if let Err(error) = spawned {
        tracing::warn!(%error, "No outbox listener: only this process's commits wake the relay.");
    }
}

fn listen(pool: &PgPool, wake: &Notify, shutdown: &CancellationToken) -> Result<(), DbError> {
    let mut conn = pool.get()?;
    diesel::sql_query("LISTEN outbox").execute(&mut conn)?;
    while !shutdown.is_cancelled() {
        let mut inserted = false;
        for notification in conn.notifications_iter() {
            notification?;
            inserted = true;
        }
        if inserted {
            wake.notify_one();
        }
        // Reading pending notifications is a non-blocking socket read; 5 ms keeps the
        // wake-up far below the relay's poll without a busy loop.
        std::thread::sleep(Duration::from_millis(5));
    }
    diesel::sql_query("UNLISTEN *").execute(&mut conn)?;
    Ok(())
}

fn release(lease: &mut Lease) {
    let unlocked = diesel::select(diesel::dsl::sql::<diesel::sql_types::Bool>(&format!(
        "pg_advisory_unlock({RELAY_LOCK})"
    )))
    .get_result::<bool>(lease);
    if let Err(error) = unlocked {
        tracing::warn!(%error, "Could not release the outbox relay lock.");
    }
}

fn mark_published(conn: &mut PgConnection, ids: &[i64]) -> Result<usize, DbError> {
    Ok(diesel::update(outbox::table.filter(outbox::id.eq_any(ids)))
        .set(outbox::published_at.eq(diesel::dsl::now))
        .execute(conn)?)
}
