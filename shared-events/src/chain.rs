//! Case 1's event transport: the outbox delivered over synchronous HTTP instead of Kafka.
//!
//! The services write their state change and its event to the outbox in one transaction,
//! exactly as in the Kafka cases. Then, instead of a relay publishing to a topic, the
//! request that committed the events delivers them itself ([`HttpChain::flush`]): each
//! event, in outbox order, is POSTed as its envelope JSON to `POST {subscriber}/internal/
//! events` of every subscriber of its topic, and the request waits for the answers. A
//! subscriber handles the event with the same handler its Kafka consumer runs, flushes
//! the events *that* produced, and only then answers — so one shopper request runs the
//! whole chain (order → payment → order → mail) before it returns.
//!
//! Delivery outcomes:
//! * `2xx` from every subscriber: the row is marked published.
//! * `4xx`: the subscriber refuses the event for good (it cannot parse or apply it);
//!   retrying cannot help, so the row is marked published and the refusal is logged and
//!   counted in `saga_dead_letters_total{consumer}` — case 1's dead letter.
//! * `5xx`, timeout, connection refused: the row stays unpublished and the flush stops
//!   there (the order's later events wait behind it). The background relay
//!   ([`HttpChain::run_retries`]) tries again with exponential backoff, every subscriber
//!   again (consumers are idempotent). This is how a mail whose service was down is
//!   still sent, and why a mail failure never fails the order.
//!
//! **Only the shop's own services may deliver.** Every delivery carries
//! `X-Saga-Signature: sha256=<hex>`, the HMAC-SHA256 of the body under the secret the
//! services share (`INTERNAL_EVENTS_SECRET`, [`EventSigner`]); a receiver checks it in
//! constant time before it parses anything and answers `401` problem+json, changing
//! nothing, when it is missing or wrong. A forged `PaymentApproved`, `RefundRequested`
//! or `OrderCompleted` therefore completes, refunds and mails nothing. A replayed
//! delivery is accepted, but changes nothing: every handler is idempotent by event id.
//!
//! One order's events are delivered in order: in one process only one flush per order
//! runs at a time. A flush asked for while another runs for the same order (the nested
//! call of a chain: payment calls back order-service while order-service is still waiting
//! for payment) returns at once and marks the order "dirty"; the running flush looks again
//! before it finishes, so nothing committed meanwhile is left behind.

use crate::db::{run_blocking, DbError, PgPool};
use crate::outbox::InRequestDelivery;
use crate::schema::outbox;
pub use crate::signing::{EventSigner, SignerError, MIN_SECRET_LEN, SECRET_ENV, SIGNATURE_HEADER};
use chrono::Utc;
use diesel::prelude::*;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The path every service of case 1 receives events on.
pub const EVENTS_PATH: &str = "/internal/events";
/// How long one delivery may take. A delivery runs the subscriber's whole part of the
/// chain (a gateway call, the mails and their retries), so this is generous.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(60);
/// The background relay leaves rows younger than this to the request that wrote them.
const GRACE: Duration = Duration::from_secs(2);
/// Published rows are deleted after this.
const RETENTION: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("{subscriber} did not take event {event_id}: {reason}")]
    Undelivered {
        subscriber: String,
        event_id: uuid::Uuid,
        reason: String,
    },
}

/// The wait after an order's failed deliveries: from ~0.5 s, doubling, at most ~30 s,
/// jittered so that the orders a down subscriber failed together are not retried together.
const RETRY_BACKOFF: crate::retry::Backoff =
    crate::retry::Backoff::new(Duration::from_millis(500), Duration::from_secs(30));

/// How often a service's HTTP relay looks for events a request could not deliver.
pub const RETRY_EVERY: Duration = Duration::from_millis(500);

/// A service's case-1 outbox: the events of `route`'s topic delivered over HTTP to its
/// subscribers, signed by `signer`, and the relay for failed deliveries (added to
/// `tasks`, stopped by `shutdown`).
pub fn http_outbox(
    service: &'static str,
    pool: &PgPool,
    topics: crate::Topics,
    route: (String, Vec<url::Url>),
    signer: EventSigner,
    shutdown: &CancellationToken,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> reqwest::Result<crate::outbox::Outbox> {
    let chain = HttpChain::new(service, pool.clone(), vec![route], signer)?;
    tasks.push(tokio::spawn(
        chain.clone().run_retries(RETRY_EVERY, shutdown.clone()),
    ));
    Ok(crate::outbox::Outbox::new(topics).delivered_in_request(chain))
}

/// `401` problem+json unless `request` carries `body`'s signature under `signer`'s
/// secret. Call it before anything else looks at the body.
#[cfg(feature = "http")]
pub fn refuse_unsigned(
    signer: Option<&EventSigner>,
    request: &actix_web::HttpRequest,
    body: &[u8],
) -> Option<actix_web::HttpResponse> {
    let signature = request
        .headers()
        .get(SIGNATURE_HEADER)
        .and_then(|value| value.to_str().ok());
    // Without a signer (a case-1 route mounted without a chain) nothing is authentic.
    if signer.is_some_and(|signer| signer.verify(body, signature)) {
        return None;
    }
    metrics::counter!("saga_internal_events_refused_total").increment(1);
    tracing::warn!(
        signed = signature.is_some(),
        "Refused an internal event that is not signed with the services' secret."
    );
    Some(
        crate::http::Problem::new(
            actix_web::http::StatusCode::UNAUTHORIZED,
            "/problems/unauthenticated",
            "Unauthenticated",
            format!(
                "Internal events must carry {SIGNATURE_HEADER}, the HMAC-SHA256 of the body under the services' shared secret."
            ),
        )
        .response(),
    )
}

/// `POST /internal/events`: checks the delivery's signature ([`refuse_unsigned`]: `401`,
/// nothing changed), handles the event with the service's Kafka handler, then delivers
/// what that produced before answering — 200 handled, 400 an envelope that does not
/// parse, 422 an event the handler refuses for good (the sender dead-letters it), 503 a
/// transient failure (`unavailable` says what; the sender retries).
#[cfg(feature = "http")]
pub async fn receive_event(
    request: &actix_web::HttpRequest,
    body: &[u8],
    handler: &impl crate::kafka::EventHandler,
    outbox: &crate::outbox::Outbox,
    unavailable: &str,
) -> actix_web::HttpResponse {
    use crate::http::Problem;
    use crate::kafka::HandlerError;
    use actix_web::http::StatusCode;
    let signer = outbox.in_request().map(|delivery| delivery.signer());
    if let Some(refused) = refuse_unsigned(signer, request, body) {
        return refused;
    }
    let event = match crate::Event::from_json(body) {
        Ok(event) => event,
        Err(error) => return Problem::invalid_event(error.to_string()).response(),
    };
    match handler.handle(&event).await {
        Ok(()) => {
            outbox.dispatch_now(event.order_id).await;
            actix_web::HttpResponse::Ok().json(serde_json::json!({
                "event_id": event.event_id, "outcome": "handled",
            }))
        }
        Err(HandlerError::Permanent(error)) => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "/problems/event-refused",
            "Event refused",
            format!("{error:#}"),
        )
        .response(),
        Err(HandlerError::Transient(error)) => {
            tracing::warn!(error = %format!("{error:#}"), event_id = %event.event_id, "Event not handled; the sender will retry.");
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "/problems/unavailable",
                "Service unavailable",
                unavailable.to_owned(),
            )
            .response()
        }
    }
}

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = outbox)]
struct Row {
    id: i64,
    event_id: uuid::Uuid,
    topic: String,
    event_type: String,
    payload: String,
    traceparent: Option<String>,
}

/// Delivers a service's outbox over HTTP. Cheap to clone.
#[derive(Clone)]
pub struct HttpChain {
    inner: Arc<Inner>,
}

struct Inner {
    service: &'static str,
    pool: PgPool,
    client: reqwest::Client,
    signer: EventSigner,
    /// topic → base URLs of its subscribers.
    subscribers: HashMap<String, Vec<String>>,
    /// Orders being flushed in this process → whether more was committed meanwhile.
    busy: Mutex<HashMap<String, bool>>,
    /// Orders whose delivery failed → (failures so far, not before).
    backoff: Mutex<HashMap<String, (u32, Instant)>>,
}

impl std::fmt::Debug for HttpChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpChain")
            .field("service", &self.inner.service)
            .field("subscribers", &self.inner.subscribers)
            .finish_non_exhaustive()
    }
}

impl HttpChain {
    /// `subscribers`: per topic (with its prefix), the base URLs (`http://host:port`) of
    /// the services that receive its events. Events of other topics are marked published
    /// without being sent anywhere.
    pub fn new(
        service: &'static str,
        pool: PgPool,
        subscribers: Vec<(String, Vec<url::Url>)>,
        signer: EventSigner,
    ) -> reqwest::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(DELIVERY_TIMEOUT)
            .connect_timeout(Duration::from_secs(2))
            .build()?;
        let subscribers = subscribers
            .into_iter()
            .map(|(topic, urls)| {
                let urls = urls
                    .into_iter()
                    .map(|url| url.as_str().trim_end_matches('/').to_owned())
                    .collect();
                (topic, urls)
            })
            .collect();
        metrics::counter!("saga_outbox_published_total", "service" => service).increment(0);
        metrics::counter!("saga_dead_letters_total", "consumer" => service).increment(0);
        Ok(Self {
            inner: Arc::new(Inner {
                service,
                pool,
                client,
                signer,
                subscribers,
                busy: Mutex::default(),
                backoff: Mutex::default(),
            }),
        })
    }

    /// The secret deliveries are signed with (and received ones checked against).
    pub fn signer(&self) -> &EventSigner {
        &self.inner.signer
    }

    /// Delivers order `key`'s unpublished events now, in order, and waits for every
    /// subscriber. Returns how many were delivered. When a flush of the same order is
    /// already running in this process, returns `Ok(0)` at once (that flush delivers
    /// them). On a failed delivery the rest wait for the background relay.
    pub async fn flush(&self, key: &str) -> Result<usize, ChainError> {
        let Some(_guard) = self.acquire(key) else {
            return Ok(0);
        };
        let mut delivered = 0;
        loop {
            let rows = self.pending(key).await?;
            if rows.is_empty() {
                if self.finished(key) {
                    self.lock_backoff().remove(key);
                    return Ok(delivered);
                }
                continue;
            }
            for row in rows {
                if let Err(error) = self.deliver(&row).await {
                    let mut backoff = self.lock_backoff();
                    let failures = backoff.get(key).map_or(0, |(n, _)| *n) + 1;
                    let not_before = Instant::now() + RETRY_BACKOFF.delay(failures);
                    backoff.insert(key.to_owned(), (failures, not_before));
                    return Err(error);
                }
                self.mark_published(row.id).await?;
                delivered += 1;
            }
        }
    }

    /// Retries what requests could not deliver (and delivers events no request wrote:
    /// deadline expiries, reconciled payments), every `every`, until `shutdown`. Also
    /// deletes published rows after an hour.
    pub async fn run_retries(self, every: Duration, shutdown: CancellationToken) {
        let mut last_cleanup = Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(every) => {}
            }
            let keys = match self.waiting_keys().await {
                Ok(keys) => keys,
                Err(error) => {
                    tracing::warn!(%error, "HTTP relay could not read the outbox; will retry.");
                    continue;
                }
            };
            for key in keys {
                let due = self
                    .lock_backoff()
                    .get(&key)
                    .is_none_or(|(_, not_before)| Instant::now() >= *not_before);
                if !due || shutdown.is_cancelled() {
                    continue;
                }
                match self.flush(&key).await {
                    Ok(0) => {}
                    Ok(delivered) => {
                        tracing::info!(order_id = %key, delivered, "HTTP relay delivered events a request could not.")
                    }
                    Err(error) => {
                        tracing::warn!(order_id = %key, %error, "HTTP relay: delivery failed; will retry with backoff.")
                    }
                }
            }
            if last_cleanup.elapsed() > Duration::from_secs(60) {
                last_cleanup = Instant::now();
                self.clean_up().await;
            }
        }
        tracing::info!(service = self.inner.service, "HTTP relay stopped.");
    }

    fn lock_backoff(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u32, Instant)>> {
        self.inner
            .backoff
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn lock_busy(&self) -> std::sync::MutexGuard<'_, HashMap<String, bool>> {
        self.inner
            .busy
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Marks `key` busy; `None` (and the key dirty) if a flush of it runs already.
    fn acquire(&self, key: &str) -> Option<BusyGuard> {
        let mut busy = self.lock_busy();
        if let Some(dirty) = busy.get_mut(key) {
            *dirty = true;
            return None;
        }
        busy.insert(key.to_owned(), false);
        Some(BusyGuard {
            chain: self.clone(),
            key: key.to_owned(),
        })
    }

    /// True when nothing was committed for `key` since the flush last looked; otherwise
    /// clears the mark so the flush looks again.
    fn finished(&self, key: &str) -> bool {
        let mut busy = self.lock_busy();
        match busy.get_mut(key) {
            Some(dirty) if *dirty => {
                *dirty = false;
                false
            }
            _ => true,
        }
    }

    async fn pending(&self, key: &str) -> Result<Vec<Row>, DbError> {
        let key = key.to_owned();
        run_blocking(&self.inner.pool, move |conn| {
            Ok(outbox::table
                .filter(outbox::published_at.is_null())
                .filter(outbox::message_key.eq(key))
                .order(outbox::id)
                .select(Row::as_select())
                .load(conn)?)
        })
        .await
    }

    /// Orders with events older than the grace period still unpublished, oldest first.
    async fn waiting_keys(&self) -> Result<Vec<String>, DbError> {
        let cutoff = Utc::now() - chrono::Duration::from_std(GRACE).unwrap_or_default();
        let keys: Vec<(String, i64)> = run_blocking(&self.inner.pool, move |conn| {
            Ok::<_, DbError>(
                outbox::table
                    .filter(outbox::published_at.is_null())
                    .filter(outbox::created_at.lt(cutoff))
                    .group_by(outbox::message_key)
                    .select((
                        outbox::message_key,
                        diesel::dsl::min(outbox::id).assume_not_null(),
                    ))
                    .order(diesel::dsl::min(outbox::id))
                    .limit(200)
                    .load(conn)?,
            )
        })
        .await?;
        Ok(keys.into_iter().map(|(key, _)| key).collect())
    }

    /// POSTs the event to every subscriber of its topic.
    async fn deliver(&self, row: &Row) -> Result<(), ChainError> {
        let Some(subscribers) = self.inner.subscribers.get(&row.topic) else {
            return Ok(());
        };
        for base in subscribers {
            let url = format!("{base}{EVENTS_PATH}");
            let mut request = self
                .inner
                .client
                .post(&url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header("event_type", &row.event_type)
                .header("event_id", row.event_id.to_string())
                .header(
                    SIGNATURE_HEADER,
                    self.inner.signer.sign(row.payload.as_bytes()),
                )
                .body(row.payload.clone());
            if let Some(traceparent) = &row.traceparent {
                request = request.header(crate::telemetry::TRACEPARENT, traceparent);
            }
            let undelivered = |reason: String| ChainError::Undelivered {
                subscriber: base.clone(),
                event_id: row.event_id,
                reason,
            };
            let response = request
                .send()
                .await
                .map_err(|e| undelivered(e.to_string()))?;
            let status = response.status();
            if status.is_success() {
                continue;
            }
            let body = response.text().await.unwrap_or_default();
            if status == reqwest::StatusCode::UNAUTHORIZED {
                // The services disagree on the secret: an operator's mistake to fix, not a
                // bad event, so the event waits in the outbox instead of being dropped.
                tracing::error!(
                    subscriber = %base, event_id = %row.event_id,
                    "Subscriber refused the event's signature: {SECRET_ENV} differs between the services; will retry."
                );
                return Err(undelivered(format!("{status}: {body}")));
            }
            if status.is_client_error() {
                metrics::counter!("saga_dead_letters_total", "consumer" => self.inner.service)
                    .increment(1);
                tracing::error!(
                    subscriber = %base, event_id = %row.event_id, event_type = %row.event_type,
                    %status, %body, "Subscriber refused the event for good; not retried."
                );
                continue;
            }
            return Err(undelivered(format!("{status}: {body}")));
        }
        Ok(())
    }

    async fn mark_published(&self, id: i64) -> Result<(), DbError> {
        run_blocking(&self.inner.pool, move |conn| {
            diesel::update(outbox::table.find(id))
                .set(outbox::published_at.eq(diesel::dsl::now))
                .execute(conn)
                .map(|_| ())
                .map_err(DbError::from)
        })
        .await?;
        metrics::counter!("saga_outbox_published_total", "service" => self.inner.service)
            .increment(1);
        Ok(())
    }

    async fn clean_up(&self) {
        let cutoff = Utc::now() - chrono::Duration::from_std(RETENTION).unwrap_or_default();
        let deleted = run_blocking(&self.inner.pool, move |conn| {
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

/// Case 1's adapter of the outbox's delivery port: the request that committed an order's
/// events delivers them before it answers.
impl InRequestDelivery for HttpChain {
    fn deliver(
        &self,
        order_id: uuid::Uuid,
    ) -> futures::future::BoxFuture<'_, anyhow::Result<usize>> {
        Box::pin(async move { Ok(self.flush(&order_id.to_string()).await?) })
    }

    fn signer(&self) -> &EventSigner {
        HttpChain::signer(self)
    }
}

/// Frees the order for other flushes, however the flush ends (a client that hangs up
/// drops the request's future mid-flush).
struct BusyGuard {
    chain: HttpChain,
    key: String,
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.chain.lock_busy().remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_to_thirty_seconds() {
        assert!((250..=500).contains(&RETRY_BACKOFF.delay(1).as_millis()));
        assert!((500..=1000).contains(&RETRY_BACKOFF.delay(2).as_millis()));
        assert!((15_000..=30_000).contains(&RETRY_BACKOFF.delay(20).as_millis()));
    }
}
