//! The mail service: what the notifier does with one event.
//!
//! 1. Render the mail the event calls for (none: done).
//! 2. Claim it in the history store: a `PENDING` record unique per (event, recipient).
//!    Already `SENT`/`FAILED` → done, nothing is sent again; still `PENDING`/`RETRYING`
//!    → a previous run stopped mid-way, so it is sent again (same Message-ID).
//! 3. Send it, once per call. Every attempt increments `attempts` and records
//!    `last_error`. A transient failure (SMTP 4xx, connection trouble, MongoDB down
//!    before the send) is recorded `RETRYING` and returned as
//!    [`HandleError::Unavailable`]: the consumer engine retries the event in its own lane
//!    with backoff, for as long as the failure lasts. Only a permanent answer (5xx)
//!    records `FAILED` — or, when an operator sets `max_attempts`, running out of them.
//!
//! The service knows only the ports ([`HistoryStore`], [`MailTransport`]) and the pure
//! [`Renderer`], so other adapters can be dropped in.

use crate::domain::{DeliveryStatus, MailKind, Notification};
use crate::render::{Mail, RenderError, Renderer};
use crate::store::{Attempt, Claim, HistoryStore, NewNotification, StoreError};
use crate::transport::{MailTransport, SendError, SendReceipt};
use chrono::Utc;
use shared_events::retry::Backoff;
use shared_events::Event;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often and how patiently a mail is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryPolicy {
    /// Attempts in all (the first one included), across restarts; `u32::MAX`: no limit
    /// (the default: a transient failure is never final).
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for DeliveryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: u32::MAX,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(5),
        }
    }
}

impl DeliveryPolicy {
    /// The waits between attempts of one mail (the consumer engine waits them).
    pub fn backoff(&self) -> Backoff {
        Backoff::new(self.initial_backoff, self.max_backoff)
    }
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
    /// SMTP or the history store is unavailable: the mail waits (recorded `RETRYING`
    /// when it was tried) and the event must be handled again later.
    #[error("mail not delivered yet: {0}")]
    Unavailable(String),
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

    pub async fn handle(&self, event: &Event) -> Result<Outcome, HandleError> {
        let Some(mail) = self.renderer.render(event)? else {
            return Ok(Outcome::NoMail);
        };
        let new = NewNotification::for_mail(event, &mail);
        let claim = self.store.claim(&new).await.map_err(|error| {
            if error.transient {
                metrics::counter!("notifier_mongodb_errors_total").increment(1);
                HandleError::Unavailable(format!("history store: {error}"))
            } else {
                HandleError::Store(error)
            }
        })?;
        let record = match to_send(claim, event, mail.kind) {
            Ok(record) => record,
            Err(done) => return Ok(done),
        };
        self.deliver(&mail, record, event).await
    }

    /// One attempt. Its record is written however long the store takes: a mail that
    /// went out must not be sent again because its bookkeeping failed.
    async fn deliver(
        &self,
        mail: &Mail,
        record: Notification,
        event: &Event,
    ) -> Result<Outcome, HandleError> {
        let started = Instant::now();
        let result = self.transport.send(mail).await;
        let judged = self
            .policy
            .judge(mail.kind, &record, result, started.elapsed());
        let record = retry_store(|| self.store.record_attempt(&record, &judged.attempt)).await?;
        match judged.report(event, &record.id) {
            Next::Done(outcome) => Ok(outcome),
            Next::Retry => Err(HandleError::Unavailable(judged.detail.clone())),
        }
    }
}

/// The record to send from a claim, or — when the mail was finished before — the
/// outcome (counted as a duplicate). Both services claim through this.
pub fn to_send(claim: Claim, event: &Event, kind: MailKind) -> Result<Notification, Outcome> {
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
pub enum Next {
    Done(Outcome),
    /// A transient failure: the event is handled again after the engine's backoff.
    Retry,
}

/// One delivery attempt judged under the [`DeliveryPolicy`]: what to record, and (once
/// recorded) what to count, log and do next.
#[derive(Debug)]
pub struct Judged {
    pub attempt: Attempt,
    kind: MailKind,
    attempts: u32,
    took: Duration,
    /// The server's reply when sent, the error otherwise.
    pub detail: String,
    /// Why it was recorded `FAILED`: `permanent` or `exhausted`.
    failure: Option<&'static str>,
    next: Next,
}

impl DeliveryPolicy {
    /// Judges the result of attempt number `current.attempts + 1`: sent; a transient
    /// failure with attempts left → retry after the backoff; otherwise `FAILED`
    /// (permanent, or attempts exhausted).
    pub fn judge(
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
                    Next::Retry,
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
    pub fn report(&self, event: &Event, notification: &str) -> Next {
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
            (_, Next::Retry) => {
                metrics::counter!("notifier_mail_retries_total", "type" => kind).increment(1);
                tracing::warn!(
                    event_id = %event.event_id, notification, attempts, error = %self.detail,
                    "Mail not delivered; will retry."
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
    use metrics::{describe_counter, describe_histogram, Unit};
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
    zero_mail_counters();
    metrics::counter!("notifier_mongodb_errors_total").increment(0);
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
/// notifier rather than losing or duplicating mails). Cancelled only by dropping it (the
/// engine does, when the partition is revoked or shutdown runs out of time).
async fn retry_store<T, F, Fut>(mut op: F) -> Result<T, HandleError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let backoff = Backoff::default();
    let mut attempt = 0u32;
    loop {
        attempt = attempt.saturating_add(1);
        match op().await {
            Ok(value) => return Ok(value),
            Err(error) if error.transient => {
                metrics::counter!("notifier_mongodb_errors_total").increment(1);
                tracing::warn!(%error, attempt, "History store unavailable; retrying.");
                tokio::time::sleep(backoff.delay(attempt)).await;
            }
            Err(error) => return Err(HandleError::Store(error)),
        }
    }
}
