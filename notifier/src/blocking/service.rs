//! What the blocking mail service does with one event — the same steps as the Tokio
//! notifier's [`crate::service::MailService`], on one thread, start to finish:
//!
//! 1. Render the mail the event calls for ([`Renderer`], the notifier's templates).
//! 2. In one PostgreSQL transaction: record it `PENDING` unless (event, recipient) has a
//!    row, and lock that row. `SENT`/`FAILED` already → nothing is sent again.
//! 3. Send it with synchronous SMTP. Transient failures (4xx, connection trouble) are
//!    retried with exponential backoff (the thread sleeps), up to `max_attempts`, then
//!    recorded `FAILED`; permanent ones (5xx) are recorded `FAILED` at once.
//! 4. Commit. Only then does the caller acknowledge the event (store the Kafka offset, or
//!    answer the HTTP request), so a crash before the commit means the event comes again.
//!
//! The row lock makes concurrent deliveries of one event (a Kafka redelivery racing the
//! first, or case 1's relay retrying while the first request still runs) wait for each
//! other: the second finds the mail finished and sends nothing.
//!
//! [`BlockingMailer::handle`] blocks; async callers go through
//! [`BlockingMailer::handle_off_executor`], which runs it on Tokio's blocking pool.

use super::smtp::BlockingSmtp;
use super::store;
use crate::domain::{MailKind, Notification};
use crate::render::{Mail, RenderError, Renderer};
use crate::service::{DeliveryPolicy, Outcome};
use crate::store::{Attempt, Claim, NewNotification, StoreError};
use chrono::Utc;
use diesel::Connection;
use shared_events::db::{DbError, PgPool};
use shared_events::kafka::{EventHandler, HandlerError};
use shared_events::Event;
use std::sync::Arc;
use std::time::Instant;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum MailerError {
    /// The event cannot be mailed as it is: retrying cannot help.
    #[error(transparent)]
    Render(#[from] RenderError),
    /// The history could not be read or written (the mail's fate is not recorded).
    #[error("mail history: {0}")]
    Store(StoreError),
    #[error("blocking task failed: {0}")]
    Task(String),
}

impl MailerError {
    pub fn is_transient(&self) -> bool {
        match self {
            MailerError::Render(_) => false,
            MailerError::Store(error) => error.transient,
            MailerError::Task(_) => true,
        }
    }
}

/// Carries store errors through Diesel's transaction (which needs `From<diesel::Error>`).
enum TxError {
    Store(StoreError),
    Diesel(diesel::result::Error),
}

impl From<diesel::result::Error> for TxError {
    fn from(error: diesel::result::Error) -> Self {
        TxError::Diesel(error)
    }
}

impl From<StoreError> for TxError {
    fn from(error: StoreError) -> Self {
        TxError::Store(error)
    }
}

impl From<TxError> for MailerError {
    fn from(error: TxError) -> Self {
        match error {
            TxError::Store(error) => MailerError::Store(error),
            TxError::Diesel(error) => MailerError::Store(StoreError::transient(error.to_string())),
        }
    }
}

pub struct BlockingMailer {
    renderer: Renderer,
    pool: PgPool,
    smtp: BlockingSmtp,
    policy: DeliveryPolicy,
}

impl BlockingMailer {
    pub fn new(
        renderer: Renderer,
        pool: PgPool,
        smtp: BlockingSmtp,
        policy: DeliveryPolicy,
    ) -> Self {
        Self {
            renderer,
            pool,
            smtp,
            policy,
        }
    }

    /// Handles `event` on Tokio's blocking pool (in the caller's span).
    pub async fn handle_off_executor(
        self: &Arc<Self>,
        event: &Event,
    ) -> Result<Outcome, MailerError> {
        let (mailer, event) = (self.clone(), event.clone());
        shared_events::db::blocking(move || mailer.handle(&event))
            .await
            .map_err(|e| MailerError::Task(e.to_string()))?
    }

    /// Handles one event, blocking the calling thread until its mail is sent or failed
    /// and recorded. Call it on a blocking thread.
    pub fn handle(&self, event: &Event) -> Result<Outcome, MailerError> {
        let Some(mail) = self.renderer.render(event)? else {
            return Ok(Outcome::NoMail);
        };
        let new = NewNotification {
            id: Uuid::now_v7().to_string(),
            event_id: event.event_id,
            event_type: event.event_type().as_str().to_owned(),
            order_id: event.order_id,
            recipient: mail.recipient.clone(),
            kind: mail.kind,
            locale: mail.locale.as_str().to_owned(),
            subject: mail.subject.clone(),
            smtp_message_id: mail.message_id.clone(),
            created_at: Utc::now(),
            event_occurred_at: event.occurred_at,
        };
        let mut conn = self
            .pool
            .get()
            .map_err(|e| MailerError::Store(StoreError::transient(DbError::from(e).to_string())))?;
        let outcome = conn.transaction::<_, TxError, _>(|conn| {
            let record = match store::claim_locked(conn, &new)? {
                Claim::Created(record) => record,
                Claim::Unfinished(record) => {
                    tracing::info!(
                        event_id = %event.event_id, notification = %record.id, status = %record.status,
                        attempts = record.attempts, "Resuming a mail a previous run did not finish."
                    );
                    record
                }
                Claim::Finished(record) => {
                    metrics::counter!("notifier_mails_duplicate_total", "type" => mail.kind.as_str())
                        .increment(1);
                    tracing::info!(
                        event_id = %event.event_id, notification = %record.id, status = %record.status,
                        "Event seen before; mail already finished."
                    );
                    return Ok(Outcome::AlreadyDone(record.status));
                }
            };
            Ok(self.deliver(conn, &mail, record, event)?)
        })?;
        Ok(outcome)
    }

    /// Attempts until sent, permanently refused or out of attempts; records each attempt
    /// in the caller's transaction.
    fn deliver(
        &self,
        conn: &mut diesel::PgConnection,
        mail: &Mail,
        mut record: Notification,
        event: &Event,
    ) -> Result<Outcome, StoreError> {
        let kind = mail.kind.as_str();
        loop {
            let started = Instant::now();
            let result = self.smtp.send(mail);
            let outcome = if result.is_ok() { "sent" } else { "error" };
            metrics::histogram!("notifier_mail_send_duration_seconds", "outcome" => outcome)
                .record(started.elapsed().as_secs_f64());
            let attempts = record.attempts.saturating_add(1);
            let at = Utc::now();
            match result {
                Ok(receipt) => {
                    store::record_attempt(conn, &record, &Attempt::Sent { at })?;
                    metrics::counter!("notifier_mails_sent_total", "type" => kind).increment(1);
                    let end_to_end = (at - event.occurred_at).to_std().unwrap_or_default();
                    metrics::histogram!("notifier_mail_end_to_end_seconds", "type" => kind)
                        .record(end_to_end.as_secs_f64());
                    tracing::info!(
                        event_id = %event.event_id, order_id = %event.order_id, notification = %record.id,
                        r#type = kind, attempts, reply = %receipt.reply, "Mail sent."
                    );
                    return Ok(Outcome::Sent(mail.kind));
                }
                Err(error) if error.is_transient() && attempts < self.policy.max_attempts => {
                    let attempt = Attempt::Retrying {
                        at,
                        error: error.message().to_owned(),
                    };
                    record = store::record_attempt(conn, &record, &attempt)?;
                    metrics::counter!("notifier_mail_retries_total", "type" => kind).increment(1);
                    let wait = self.policy.backoff(attempts);
                    tracing::warn!(
                        event_id = %event.event_id, notification = %record.id, attempts,
                        error = %error.message(), retry_in_ms = wait.as_millis() as u64,
                        "Mail not delivered; will retry."
                    );
                    std::thread::sleep(wait);
                }
                Err(error) => {
                    let (reason, message) = if error.is_transient() {
                        (
                            "exhausted",
                            format!("gave up after {attempts} attempts: {}", error.message()),
                        )
                    } else {
                        ("permanent", error.message().to_owned())
                    };
                    let attempt = Attempt::Failed {
                        at,
                        error: message.clone(),
                    };
                    store::record_attempt(conn, &record, &attempt)?;
                    metrics::counter!("notifier_mails_failed_total", "type" => kind, "reason" => reason)
                        .increment(1);
                    tracing::warn!(
                        event_id = %event.event_id, notification = %record.id, attempts,
                        error = %message, "Mail failed; recorded FAILED."
                    );
                    return Ok(Outcome::Failed(mail.kind));
                }
            }
        }
    }
}

/// Every mail counter at 0, so dashboards see each series before its first mail (the
/// blocking service exports the notifier's metric names).
pub fn describe_metrics() {
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

/// The Kafka consumer's handler (case 2): the shared consumer loop stores the offset only
/// after this returns, that is after the history row committed.
pub struct MailEvents(pub Arc<BlockingMailer>);

impl EventHandler for MailEvents {
    async fn handle(&self, event: &Event) -> Result<(), HandlerError> {
        match self.0.handle_off_executor(event).await {
            Ok(outcome) => {
                metrics::counter!("notifier_events_total", "event_type" => event.event_type().as_str(), "outcome" => outcome_label(outcome)).increment(1);
                Ok(())
            }
            Err(error) if error.is_transient() => Err(HandlerError::Transient(error.into())),
            Err(error) => Err(HandlerError::Permanent(error.into())),
        }
    }
}

pub fn outcome_label(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::NoMail => "no_mail",
        Outcome::Sent(_) => "sent",
        Outcome::Failed(_) => "failed",
        Outcome::AlreadyDone(_) => "duplicate",
    }
}
