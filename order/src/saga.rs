//! The order side of the saga.
//!
//! Payment events, the shopper's cancel request and the payment deadline are all
//! [`Trigger`]s. [`apply`] locks the order, asks the status table what to do
//! ([`OrderStatus::decide`]), makes the change, enqueues the event that announces it and
//! records the step for the timeline — all in the caller's transaction.
//!
//! * `PaymentReady` → the order learns where the shopper pays.
//! * `PaymentApproved` → `COMPLETED` + `OrderCompleted`; for an order already cancelled,
//!   `RefundRequested` (the money goes back).
//! * `PaymentFailed` → `CANCELLED` + `OrderCancelled` (the compensation).
//! * `PaymentRefunded` → `CANCELLED` (refunded) + `OrderCancelled` with the amount.
//!
//! Consumed events are claimed in the inbox in the same transaction as their effect, so a
//! redelivered event changes nothing.

use crate::domain::{Decision, OrderStatus, Trigger};
use crate::store::{self, Order};
use chrono::Utc;
use diesel::pg::PgConnection;
use diesel::Connection;
use shared_events::db::{run_blocking, DbError, PgPool};
use shared_events::inbox;
use shared_events::kafka::{EventHandler, HandlerError};
use shared_events::outbox::Outbox;
use shared_events::{
    CancelReason, Event, EventBody, OrderCancelled, OrderCompleted, RefundRequested,
};
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum SagaError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("no order {0}")]
    UnknownOrder(Uuid),
}

impl From<diesel::result::Error> for SagaError {
    fn from(error: diesel::result::Error) -> Self {
        SagaError::Db(error.into())
    }
}

/// What a trigger brings with it.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// The event that caused the trigger, if any (the new event's causation id).
    pub cause: Option<Event>,
    pub payment_id: Option<Uuid>,
    pub refunded_amount: Option<i64>,
}

/// The order after a trigger, and whether an event was enqueued.
pub struct Applied {
    pub order: Order,
    pub published: bool,
}

/// Applies `trigger` to order `order_id` inside the caller's transaction.
pub fn apply(
    conn: &mut PgConnection,
    outbox: &Outbox,
    order_id: Uuid,
    trigger: Trigger,
    facts: &Facts,
) -> Result<Applied, SagaError> {
    let order = store::find(conn, order_id, true)?.ok_or(SagaError::UnknownOrder(order_id))?;
    let from = order.status();
    let decision = from.decide(trigger);
    let Some((to, event)) = carry_out(conn, &order, decision, facts)? else {
        tracing::info!(%order_id, status = %from, ?trigger, "Trigger changes nothing.");
        return Ok(Applied {
            order,
            published: false,
        });
    };
    outbox.enqueue(conn, &event)?;
    store::record_step(conn, &event, "order", "published")?;
    metrics::counter!("order_transitions_total", "from" => from.as_str(), "to" => to.as_str())
        .increment(1);
    record_settlement(&order, from, to, decision);
    tracing::info!(%order_id, %from, %to, event = %event.event_type(), "Order moved.");
    let order = store::find(conn, order_id, false)?.ok_or(SagaError::UnknownOrder(order_id))?;
    Ok(Applied {
        order,
        published: true,
    })
}

/// Saga metrics of a transition: how long the order took to settle
/// (`order_saga_duration_seconds{outcome}`, from its placement: `completed`, `cancelled`
/// or `refunded`) and why orders are cancelled (`order_orders_cancelled_total{reason}`).
fn record_settlement(order: &Order, from: OrderStatus, to: OrderStatus, decision: Decision) {
    let outcome = match (from, to) {
        (OrderStatus::PendingPayment, OrderStatus::Completed) => "completed",
        (OrderStatus::PendingPayment, OrderStatus::Cancelled) => "cancelled",
        (OrderStatus::Cancelling, OrderStatus::Cancelled) => "refunded",
        _ => return,
    };
    let age = (Utc::now() - order.row.created_at)
        .to_std()
        .unwrap_or_default();
    metrics::histogram!("order_saga_duration_seconds", "outcome" => outcome)
        .record(age.as_secs_f64());
    let reason = match decision {
        Decision::Cancel(reason) => Some(reason),
        Decision::FinishRefund => order.cancel_reason(),
        _ => None,
    };
    if let Some(reason) = reason {
        metrics::counter!("order_orders_cancelled_total", "reason" => cancel_reason_label(reason))
            .increment(1);
    }
}

/// The wire name of a cancel reason (`deadline_expired`), a bounded label value.
pub fn cancel_reason_label(reason: CancelReason) -> &'static str {
    match reason {
        CancelReason::PaymentDeclined => "payment_declined",
        CancelReason::PaymentCancelledByShopper => "payment_cancelled_by_shopper",
        CancelReason::PaymentFailed => "payment_failed",
        CancelReason::PaymentExpired => "payment_expired",
        CancelReason::PaymentUnavailable => "payment_unavailable",
        CancelReason::DeadlineExpired => "deadline_expired",
        CancelReason::CancelledByShopper => "cancelled_by_shopper",
    }
}

/// Makes the change `decision` asks for; returns the new status and its event.
fn carry_out(
    conn: &mut PgConnection,
    order: &Order,
    decision: Decision,
    facts: &Facts,
) -> Result<Option<(OrderStatus, Event)>, SagaError> {
    let id = order.row.id;
    let new_event = |body: shared_events::EventBody| match &facts.cause {
        Some(cause) => cause.follow_up(body),
        None => Event::new(id, None, body),
    };
    Ok(Some(match decision {
        Decision::Nothing => return Ok(None),
        Decision::Complete => {
            let payment_id = facts
                .payment_id
                .or(order.row.payment_id)
                .unwrap_or_default();
            store::complete(conn, id, payment_id)?;
            let body = OrderCompleted {
                order: order.snapshot(),
                payment_id,
                completed_at: Utc::now(),
            };
            (OrderStatus::Completed, new_event(body.into()))
        }
        Decision::Cancel(reason) => {
            store::cancel(conn, id, reason)?;
            (
                OrderStatus::Cancelled,
                new_event(cancelled(order, reason, None).into()),
            )
        }
        Decision::RequestRefund(reason) => {
            let Some(payment_id) = facts.payment_id.or(order.row.payment_id) else {
                return Ok(None);
            };
            // A completed order waits in CANCELLING for its refund; a cancelled one that
            // was paid late stays CANCELLED.
            let to = if order.status() == OrderStatus::Completed {
                store::start_refund(conn, id, reason)?;
                OrderStatus::Cancelling
            } else {
                order.status()
            };
            let body = RefundRequested {
                payment_id,
                amount: order.row.total_amount,
                reason,
            };
            (to, new_event(body.into()))
        }
        Decision::FinishRefund => {
            let amount = facts.refunded_amount.unwrap_or(order.row.total_amount);
            store::finish_refund(conn, id, amount)?;
            let reason = order
                .cancel_reason()
                .unwrap_or(CancelReason::CancelledByShopper);
            (
                OrderStatus::Cancelled,
                new_event(cancelled(order, reason, Some(amount)).into()),
            )
        }
    }))
}

fn cancelled(order: &Order, reason: CancelReason, refunded_amount: Option<i64>) -> OrderCancelled {
    OrderCancelled {
        order: order.snapshot(),
        reason,
        refunded_amount,
        cancelled_at: Utc::now(),
    }
}

/// Applies a trigger in a transaction of its own and wakes the relay if needed.
pub async fn run(
    pool: &PgPool,
    outbox: &Outbox,
    order_id: Uuid,
    trigger: Trigger,
    facts: Facts,
) -> Result<Order, SagaError> {
    let writer = outbox.clone();
    let applied = run_blocking(pool, move |conn| {
        conn.transaction(|conn| apply(conn, &writer, order_id, trigger, &facts))
    })
    .await?;
    if applied.published {
        outbox.notify();
    }
    Ok(applied.order)
}

/// The consumer of payment events.
pub struct PaymentEvents {
    pub pool: PgPool,
    pub outbox: Outbox,
}

impl EventHandler for PaymentEvents {
    async fn handle(&self, event: &Event) -> Result<(), HandlerError> {
        let event = event.clone();
        let outbox = self.outbox.clone();
        let published = run_blocking(&self.pool, move |conn| {
            conn.transaction(|conn| consume(conn, &outbox, &event))
        })
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

/// Handles one payment event in the caller's transaction; true when it enqueued one.
fn consume(conn: &mut PgConnection, outbox: &Outbox, event: &Event) -> Result<bool, SagaError> {
    if !inbox::claim(conn, event)? {
        tracing::debug!(event_id = %event.event_id, "Event already handled.");
        return Ok(false);
    }
    let facts = |payment_id: Option<Uuid>, refunded_amount: Option<i64>| Facts {
        cause: Some(event.clone()),
        payment_id,
        refunded_amount,
    };
    let (trigger, facts) = match &event.body {
        EventBody::PaymentReady(ready) => {
            store::find(conn, event.order_id, true)?
                .ok_or(SagaError::UnknownOrder(event.order_id))?;
            store::record_payment_ready(conn, event.order_id, ready)?;
            store::record_step(conn, event, "payment", "applied")?;
            return Ok(false);
        }
        EventBody::PaymentApproved(approved) => (
            Trigger::PaymentApproved,
            facts(Some(approved.payment_id), None),
        ),
        EventBody::PaymentFailed(failed) => {
            store::record_payment_status(conn, event.order_id, "FAILED")?;
            (
                Trigger::PaymentFailed(CancelReason::from(failed.reason)),
                facts(failed.payment_id, None),
            )
        }
        EventBody::PaymentRefunded(refunded) => (
            Trigger::Refunded,
            facts(Some(refunded.payment_id), Some(refunded.amount)),
        ),
        _ => return Ok(false),
    };
    let applied = apply(conn, outbox, event.order_id, trigger, &facts)?;
    let outcome = if applied.published {
        "applied"
    } else {
        "ignored: order already settled"
    };
    store::record_step(conn, event, "payment", outcome)?;
    Ok(applied.published)
}
