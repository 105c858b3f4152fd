//! The payment-event consumer's handler: each payment event through the saga
//! ([`crate::saga::consume`], on the order's store), with its outcome told to the
//! consumer engine — a database failure is transient (retried in the order's lane), an
//! unknown order permanent (dead-lettered). The Kafka consumer (cases 2–4) and case 1's
//! `POST /internal/events` both run it.

use crate::persistence::OrderDb;
use crate::saga::SagaError;
use shared_events::kafka::{EventHandler, HandlerError};
use shared_events::outbox::Outbox;
use shared_events::Event;

/// The consumer of payment events.
pub struct PaymentEvents {
    pub db: OrderDb,
    pub outbox: Outbox,
}

impl EventHandler for PaymentEvents {
    async fn handle(&self, event: &Event) -> Result<(), HandlerError> {
        let published =
            self.db
                .consume(&self.outbox, event)
                .await
                .map_err(|error| match error {
                    SagaError::Db(_) => HandlerError::Transient(error.into()),
                    SagaError::UnknownOrder(_) => HandlerError::Permanent(error.into()),
                })?;
        if published {
            self.outbox.notify();
        }
        Ok(())
    }

    /// The order's timeline shows each retry (while the database is down it cannot: the
    /// log and `saga_consumer_oldest_retry_seconds` do).
    async fn retrying(&self, event: &Event, attempt: u32, error: &anyhow::Error) {
        let reason: String = format!("{error:#}").chars().take(300).collect();
        let outcome = format!("retrying (attempt {attempt} failed: {reason})");
        if let Err(error) = self.db.record_retry(event, outcome).await {
            tracing::debug!(%error, "Retry not recorded on the timeline.");
        }
    }
}
