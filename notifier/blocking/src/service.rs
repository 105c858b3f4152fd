//! What the blocking mail service does with one event — the same steps as the Tokio
//! notifier's [`notifier::service::MailService`], on one thread, start to finish:
//!
//! 1. Render the mail the event calls for ([`Renderer`], the notifier's templates).
//! 2. In one PostgreSQL transaction: record it `PENDING` unless (event, recipient) has a
//!    row, and lock that row. `SENT`/`FAILED` already → nothing is sent again.
//! 3. Send it with synchronous SMTP, once per call. A transient failure (4xx, connection
//!    trouble) is recorded `RETRYING` and returned as [`MailerError::Undelivered`]: the
//!    caller tries again later (the consumer engine in the order's lane, with backoff;
//!    case 1's relay with its own). Permanent ones (5xx) are recorded `FAILED` at once.
//! 4. Commit. Only then does the caller acknowledge the event (store the Kafka offset, or
//!    answer the HTTP request), so a crash before the commit means the event comes again.
//!
//! The row lock makes concurrent deliveries of one event (a Kafka redelivery racing the
//! first, or case 1's relay retrying while the first request still runs) wait for each
//! other: the second finds the mail finished and sends nothing.
//!
//! [`BlockingMailer::handle`] blocks; async callers go through
//! [`BlockingMailer::handle_off_executor`], which runs it on Tokio's blocking pool.

use crate::smtp::BlockingSmtp;
use crate::store;
use diesel::Connection;
use notifier::domain::Notification;
use notifier::render::{Mail, RenderError, Renderer};
use notifier::service::{to_send, DeliveryPolicy, Next, Outcome};
use notifier::store::{NewNotification, StoreError};
use shared_events::db::{DbError, PgPool};
use shared_events::kafka::{EventHandler, HandlerError};
use shared_events::Event;
use std::sync::Arc;
use std::time::Instant;

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
    /// The SMTP server could not take the mail now; it is recorded `RETRYING`.
    #[error("mail not delivered yet: {0}")]
    Undelivered(String),
}

impl MailerError {
    pub fn is_transient(&self) -> bool {
        match self {
            MailerError::Render(_) => false,
            MailerError::Store(error) => error.transient,
            MailerError::Task(_) | MailerError::Undelivered(_) => true,
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
        let new = NewNotification::for_mail(event, &mail);
        let mut conn = self
            .pool
            .get()
            .map_err(|e| MailerError::Store(StoreError::transient(DbError::from(e).to_string())))?;
        // The attempt is committed whatever it was, RETRYING included.
        let next = conn.transaction::<_, TxError, _>(|conn| {
            let record = match to_send(store::claim_locked(conn, &new)?, event, mail.kind) {
                Ok(record) => record,
                Err(done) => return Ok((Next::Done(done), String::new())),
            };
            Ok(self.deliver(conn, &mail, record, event)?)
        })?;
        match next {
            (Next::Done(outcome), _) => Ok(outcome),
            (Next::Retry, error) => Err(MailerError::Undelivered(error)),
        }
    }

    /// One attempt, recorded in the caller's transaction; with the SMTP error when it is
    /// to be retried.
    fn deliver(
        &self,
        conn: &mut diesel::PgConnection,
        mail: &Mail,
        record: Notification,
        event: &Event,
    ) -> Result<(Next, String), StoreError> {
        let started = Instant::now();
        let result = self.smtp.send(mail);
        let judged = self
            .policy
            .judge(mail.kind, &record, result, started.elapsed());
        let record = store::record_attempt(conn, &record, &judged.attempt)?;
        Ok((judged.report(event, &record.id), judged.detail.clone()))
    }
}

/// Every mail counter at 0, so dashboards see each series before its first mail (the
/// blocking service exports the notifier's metric names).
pub fn describe_metrics() {
    notifier::service::zero_mail_counters();
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

pub use notifier::pipeline::outcome_label;
