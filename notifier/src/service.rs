//! The mail service: what the notifier does with one event.
//!
//! 1. Render the mail the event calls for (none: done).
//! 2. Claim it in the history store: a `PENDING` record unique per (event, recipient).
//!    Already `SENT`/`FAILED` → done, nothing is sent again; still `PENDING`/`RETRYING`
//!    → a previous run stopped mid-way, so it is sent again (same Message-ID).
//! 3. Send it. Every attempt increments `attempts` and records `last_error`; transient
//!    failures are retried with exponential backoff and jitter up to `max_attempts`,
//!    then recorded `FAILED`; permanent failures are recorded `FAILED` at once.
//!
//! The service knows only the ports ([`HistoryStore`], [`MailTransport`]) and the pure
//! [`Renderer`], so other adapters can be dropped in.

use crate::domain::{DeliveryStatus, MailKind, Notification};
use crate::render::{Mail, RenderError, Renderer};
use crate::store::{Attempt, Claim, HistoryStore, NewNotification, StoreError};
use crate::transport::{MailTransport, SendError, SendReceipt};
use chrono::Utc;
use rand::Rng;
use shared_events::Event;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How often and how patiently a mail is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryPolicy {
    /// Attempts in all (the first one included), across restarts.
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for DeliveryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
        }
    }
}

impl DeliveryPolicy {
    /// The wait after failed attempt number `attempt` (1-based): `initial × 2^(attempt-1)`,
    /// capped, then "equal jitter" (a random point in its upper half) so that mails
    /// failing together do not retry together.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = 2u32.saturating_pow(attempt.saturating_sub(1).min(31));
        let capped = self
            .initial_backoff
            .saturating_mul(exp)
            .min(self.max_backoff);
        let half = capped / 2;
        half + half.mul_f64(rand::rng().random::<f64>())
    }
}

/// When to give up waiting.
#[derive(Debug, Clone, Default)]
pub struct Stop {
    /// Shutdown began: no new attempt starts and no retry wait continues (the mail stays
    /// `RETRYING`/`PENDING` and its event comes again after a restart).
    pub soft: CancellationToken,
    /// The shutdown deadline passed: abandon even the bookkeeping of a sent mail.
    pub hard: CancellationToken,
}

/// What became of one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The event needs no mail.
    NoMail,
    Sent(MailKind),
    /// Recorded `FAILED` (permanent failure or attempts exhausted).
    Failed(MailKind),
    /// Seen before and finished: nothing sent.
    AlreadyDone(DeliveryStatus),
}

#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// Shutdown came first; the event was not finished and must come again.
    #[error("interrupted by shutdown")]
    Interrupted,
    #[error(transparent)]
    Render(#[from] RenderError),
    /// A history write that retrying cannot fix.
    #[error("history store: {0}")]
    Store(StoreError),
}

#[derive(Clone)]
pub struct MailService {
    renderer: Arc<Renderer>,
    store: Arc<dyn HistoryStore>,
    transport: Arc<dyn MailTransport>,
    policy: DeliveryPolicy,
}

impl MailService {
    pub fn new(
        renderer: Arc<Renderer>,
        store: Arc<dyn HistoryStore>,
        transport: Arc<dyn MailTransport>,
        policy: DeliveryPolicy,
    ) -> Self {
        Self {
            renderer,
            store,
            transport,
            policy,
        }
    }

    pub async fn handle(&self, event: &Event, stop: &Stop) -> Result<Outcome, HandleError> {
        let Some(mail) = self.renderer.render(event)? else {
            return Ok(Outcome::NoMail);
        };
        let new = NewNotification::for_mail(event, &mail);
        let claim = retry_store(stop, || self.store.claim(&new)).await?;
        let record = match to_send(claim, event, mail.kind) {
            Ok(record) => record,
            Err(done) => return Ok(done),
        };
        self.deliver(&mail, record, event, stop).await
    }

    async fn deliver(
        &self,
        mail: &Mail,
        mut record: Notification,
        event: &Event,
        stop: &Stop,
    ) -> Result<Outcome, HandleError> {
        loop {
            if stop.soft.is_cancelled() {
                return Err(HandleError::Interrupted);
            }
            let started = Instant::now();
            let result = self.transport.send(mail).await;
            let judged = self
                .policy
                .judge(mail.kind, &record, result, started.elapsed());
            record =
                retry_store(stop, || self.store.record_attempt(&record, &judged.attempt)).await?;
            match judged.report(event, &record.id) {
                Next::Done(outcome) => return Ok(outcome),
                Next::RetryAfter(wait) => tokio::select! {
                    _ = stop.soft.cancelled() => return Err(HandleError::Interrupted),
                    _ = tokio::time::sleep(wait) => {}
                },
            }
        }
    }
}

/// The record to send from a claim, or — when the mail was finished before — the
/// outcome (counted as a duplicate). Both services claim through this.
pub(crate) fn to_send(
    claim: Claim,
    event: &Event,
    kind: MailKind,
) -> Result<Notification, Outcome> {
    match claim {
        Claim::Created(record) => Ok(record),
        Claim::Unfinished(record) => {
            tracing::info!(
                event_id = %event.event_id, notification = %record.id, status = %record.status,
                attempts = record.attempts, "Resuming a mail a previous run did not finish."
            );
            Ok(record)
        }
        Claim::Finished(record) => {
            metrics::counter!("notifier_mails_duplicate_total", "type" => kind.as_str())
                .increment(1);
            tracing::info!(
                event_id = %event.event_id, notification = %record.id, status = %record.status,
                "Event seen before; mail already finished."
            );
            Err(Outcome::AlreadyDone(record.status))
        }
    }
}

/// What follows a recorded attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    Done(Outcome),
    RetryAfter(Duration),
}

/// One delivery attempt judged under the [`DeliveryPolicy`]: what to record, and (once
/// recorded) what to count, log and do next.
#[derive(Debug)]
pub(crate) struct Judged {
    pub attempt: Attempt,
    kind: MailKind,
    attempts: u32,
    took: Duration,
    /// The server's reply when sent, the error otherwise.
    detail: String,
    /// Why it was recorded `FAILED`: `permanent` or `exhausted`.
    failure: Option<&'static str>,
    next: Next,
}

impl DeliveryPolicy {
    /// Judges the result of attempt number `current.attempts + 1`: sent; a transient
    /// failure with attempts left → retry after the backoff; otherwise `FAILED`
    /// (permanent, or attempts exhausted).
    pub(crate) fn judge(
        &self,
        kind: MailKind,
        current: &Notification,
        result: Result<SendReceipt, SendError>,
        took: Duration,
    ) -> Judged {
        let attempts = current.attempts.saturating_add(1);
        let at = Utc::now();
        let mut failure = None;
        let (attempt, detail, next) = match result {
            Ok(receipt) => (
                Attempt::Sent { at },
                receipt.reply,
                Next::Done(Outcome::Sent(kind)),
            ),
            Err(error) if error.is_transient() && attempts < self.max_attempts => {
                let message = error.message().to_owned();
                (
                    Attempt::Retrying {
                        at,
                        error: message.clone(),
                    },
                    message,
                    Next::RetryAfter(self.backoff(attempts)),
                )
            }
            Err(error) => {
                let message = if error.is_transient() {
                    failure = Some("exhausted");
                    format!("gave up after {attempts} attempts: {}", error.message())
                } else {
                    failure = Some("permanent");
                    error.message().to_owned()
                };
                (
                    Attempt::Failed {
                        at,
                        error: message.clone(),
                    },
                    message,
                    Next::Done(Outcome::Failed(kind)),
                )
            }
        };
        Judged {
            attempt,
            kind,
            attempts,
            took,
            detail,
            failure,
            next,
        }
    }
}

impl Judged {
    /// Counts and logs the attempt (after it was recorded); returns what comes next.
    pub(crate) fn report(&self, event: &Event, notification: &str) -> Next {
        let kind = self.kind.as_str();
        let attempts = self.attempts;
        let sent = matches!(self.attempt, Attempt::Sent { .. });
        metrics::histogram!("notifier_mail_send_duration_seconds", "outcome" => if sent { "sent" } else { "error" })
            .record(self.took.as_secs_f64());
        match (&self.attempt, self.next) {
            (Attempt::Sent { at }, _) => {
                metrics::counter!("notifier_mails_sent_total", "type" => kind).increment(1);
                let end_to_end = (*at - event.occurred_at).to_std().unwrap_or_default();
                metrics::histogram!("notifier_mail_end_to_end_seconds", "type" => kind)
                    .record(end_to_end.as_secs_f64());
                tracing::info!(
                    event_id = %event.event_id, order_id = %event.order_id, notification,
                    r#type = kind, attempts, reply = %self.detail, "Mail sent."
                );
            }
            (_, Next::RetryAfter(wait)) => {
                metrics::counter!("notifier_mail_retries_total", "type" => kind).increment(1);
                tracing::warn!(
                    event_id = %event.event_id, notification, attempts, error = %self.detail,
                    retry_in_ms = wait.as_millis() as u64, "Mail not delivered; will retry."
                );
            }
            _ => {
                let reason = self.failure.unwrap_or("permanent");
                metrics::counter!("notifier_mails_failed_total", "type" => kind, "reason" => reason)
                    .increment(1);
                tracing::warn!(
                    event_id = %event.event_id, notification, attempts, error = %self.detail,
                    "Mail failed; recorded FAILED."
                );
            }
        }
        self.next
    }
}

/// Help texts of the notifier's metrics, and every counter of a known label set at 0, so
/// dashboards and alerts see each series before its first event.
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        "notifier_mails_sent_total",
        "Mails accepted by the SMTP relay, by type."
    );
    describe_counter!(
        "notifier_mails_failed_total",
        "Mails recorded FAILED, by type and reason (permanent: refused; exhausted: retries used up)."
    );
    describe_counter!(
        "notifier_mail_retries_total",
        "Delivery attempts that failed transiently and will be retried, by type."
    );
    describe_counter!(
        "notifier_mails_duplicate_total",
        "Events whose mail had already been finished (redeliveries), by type."
    );
    describe_histogram!(
        "notifier_mail_send_duration_seconds",
        Unit::Seconds,
        "One SMTP delivery attempt, by outcome (sent, error)."
    );
    describe_histogram!(
        "notifier_mail_end_to_end_seconds",
        Unit::Seconds,
        "From the event's occurred_at to the mail's acceptance by the relay, by type."
    );
    describe_histogram!(
        "notifier_mongodb_write_duration_seconds",
        Unit::Seconds,
        "One write command to the mail history in MongoDB (a batch of claims or outcomes, or a single fallback write)."
    );
    describe_histogram!(
        "notifier_mongodb_batch_size",
        "History writes sent to MongoDB in one command, by op (claim, outcome)."
    );
    describe_counter!(
        "notifier_mongodb_errors_total",
        "History writes that failed transiently (MongoDB unreachable) and are retried."
    );
    describe_counter!(
        "notifier_events_total",
        "Events handled, by event type and outcome (sent, failed, no_mail, duplicate, dead_letter)."
    );
    describe_counter!(
        "notifier_messages_consumed_total",
        "Kafka messages fetched, by topic."
    );
    describe_gauge!(
        "notifier_in_flight_messages",
        "Messages fetched and not yet finished."
    );
    describe_gauge!(
        "notifier_uncommitted_offsets",
        "Offsets fetched and not yet stored (finished work waiting behind unfinished work)."
    );
    zero_mail_counters();
    metrics::counter!("notifier_mongodb_errors_total").increment(0);
    metrics::counter!("saga_dead_letters_total", "consumer" => crate::pipeline::CONSUMER)
        .increment(0);
}

/// Every mail counter of a known label set at 0 (both mail services export these names).
pub fn zero_mail_counters() {
    for kind in MailKind::ALL {
        let kind = kind.as_str();
        metrics::counter!("notifier_mails_sent_total", "type" => kind).increment(0);
        metrics::counter!("notifier_mail_retries_total", "type" => kind).increment(0);
        metrics::counter!("notifier_mails_duplicate_total", "type" => kind).increment(0);
        for reason in ["permanent", "exhausted"] {
            metrics::counter!("notifier_mails_failed_total", "type" => kind, "reason" => reason)
                .increment(0);
        }
    }
}

/// Retries a history write while the store is unreachable (a store outage pauses the
/// notifier rather than losing or duplicating mails), until the hard stop.
async fn retry_store<T, F, Fut>(stop: &Stop, mut op: F) -> Result<T, HandleError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let policy = DeliveryPolicy {
        max_attempts: u32::MAX,
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(5),
    };
    let mut attempt = 0u32;
    loop {
        attempt = attempt.saturating_add(1);
        let result = tokio::select! {
            _ = stop.hard.cancelled() => return Err(HandleError::Interrupted),
            result = op() => result,
        };
        match result {
            Ok(value) => return Ok(value),
            Err(error) if error.transient => {
                metrics::counter!("notifier_mongodb_errors_total").increment(1);
                tracing::warn!(%error, attempt, "History store unavailable; retrying.");
                tokio::select! {
                    _ = stop.hard.cancelled() => return Err(HandleError::Interrupted),
                    _ = tokio::time::sleep(policy.backoff(attempt)) => {}
                }
            }
            Err(error) => return Err(HandleError::Store(error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_with_jitter_and_is_capped() {
        let policy = DeliveryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
        };
        for _ in 0..50 {
            let first = policy.backoff(1);
            assert!((50..=100).contains(&first.as_millis()), "{first:?}");
            let third = policy.backoff(3);
            assert!((200..=400).contains(&third.as_millis()), "{third:?}");
            let late = policy.backoff(40);
            assert!((500..=1000).contains(&late.as_millis()), "{late:?}");
        }
    }
}
