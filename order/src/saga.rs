//! The order side of the saga: payment events settle orders.
//!
//! * `PaymentReady` → the order learns where the shopper pays (`payment.redirect_url`).
//! * `PaymentApproved` → `COMPLETED` + `OrderCompleted`.
//! * `PaymentFailed` → `CANCELLED` + `OrderCancelled` (the compensation).
//!
//! Each event is claimed in the inbox in the same transaction as its effect, so a
//! redelivered event changes nothing; an outcome for an order that is already settled is
//! recorded and ignored.

use crate::domain::PaymentOutcome;
use crate::store;
use chrono::Utc;
use diesel::pg::PgConnection;
use diesel::Connection;
use shared_events::db::{run_blocking, DbError, PgPool};
use shared_events::inbox;
use shared_events::kafka::{EventHandler, HandlerError};
use shared_events::outbox::Outbox;
use shared_events::{CancelReason, Event, EventBody, OrderCancelled, OrderCompleted};

#[derive(Debug, thiserror::Error)]
enum SagaError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("event for an unknown order {0}")]
    UnknownOrder(uuid::Uuid),
}

impl From<diesel::result::Error> for SagaError {
    fn from(error: diesel::result::Error) -> Self {
        SagaError::Db(error.into())
    }
}

pub struct PaymentEvents {
    pub pool: PgPool,
    pub outbox: Outbox,
}

impl EventHandler for PaymentEvents {
    async fn handle(&self, event: &Event) -> Result<(), HandlerError> {
        let event = event.clone();
        let outbox = self.outbox.clone();
        let published = run_blocking(&self.pool, move |conn| apply(conn, &outbox, &event))
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
}

/// Applies one event in one transaction; true when it enqueued an event of its own.
fn apply(conn: &mut PgConnection, outbox: &Outbox, event: &Event) -> Result<bool, SagaError> {
    conn.transaction(|conn| {
        if !inbox::claim(conn, event)? {
            tracing::debug!(event_id = %event.event_id, "Event already handled.");
            return Ok(false);
        }
        match &event.body {
            EventBody::PaymentReady(ready) => {
                lock(conn, event)?;
                store::record_payment_ready(conn, event.order_id, ready)?;
                Ok(false)
            }
            EventBody::PaymentApproved(approved) => settle(
                conn,
                outbox,
                event,
                PaymentOutcome::Approved,
                Some(approved.payment_id),
            ),
            EventBody::PaymentFailed(failed) => {
                let outcome = PaymentOutcome::Failed(CancelReason::from(failed.reason));
                settle(conn, outbox, event, outcome, failed.payment_id)
            }
            _ => Ok(false),
        }
    })
}

fn lock(conn: &mut PgConnection, event: &Event) -> Result<store::Order, SagaError> {
    store::find(conn, event.order_id, true)?.ok_or(SagaError::UnknownOrder(event.order_id))
}

fn settle(
    conn: &mut PgConnection,
    outbox: &Outbox,
    event: &Event,
    outcome: PaymentOutcome,
    payment_id: Option<uuid::Uuid>,
) -> Result<bool, SagaError> {
    let order = lock(conn, event)?;
    let from = order.status();
    let Some(to) = from.settle(outcome) else {
        tracing::warn!(order_id = %event.order_id, status = %from, ?outcome, "Payment outcome for a settled order ignored.");
        return Ok(false);
    };
    let follow_up = match outcome {
        PaymentOutcome::Approved => {
            let payment_id = payment_id.unwrap_or_default();
            store::complete(conn, event.order_id, payment_id)?;
            event.follow_up(OrderCompleted {
                order: order.snapshot(),
                payment_id,
                completed_at: Utc::now(),
            })
        }
        PaymentOutcome::Failed(reason) => {
            store::cancel(conn, event.order_id, reason, "FAILED")?;
            event.follow_up(OrderCancelled {
                order: order.snapshot(),
                reason,
                refunded_amount: None,
                cancelled_at: Utc::now(),
            })
        }
    };
    outbox.enqueue(conn, &follow_up)?;
    metrics::counter!("order_transitions_total", "from" => from.as_str(), "to" => to.as_str())
        .increment(1);
    tracing::info!(order_id = %event.order_id, %from, %to, "Order settled.");
    Ok(true)
}
