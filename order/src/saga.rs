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
//! * The payment deadline → `CLOSING_PAYMENT` + `PaymentCloseRequested`; payment's
//!   `PaymentClosed` then completes the order (it was paid) or cancels it (nothing was
//!   charged), so a payment approved while its event waited is never cancelled away.
//!
//! Consumed events are claimed in the inbox in the same transaction as their effect, so a
//! redelivered event changes nothing.
//!
//! The decisions ([`plan`], [`react`]) are pure; [`apply`]/[`consume`] carry them out,
//! written once for both drivers: they run on any [`OrderStatements`] connection (the
//! blocking one of cases 1–3 or the async one of case 4, see `shared_events::sql`).

use crate::domain::{Decision, OrderStatus, Trigger};
use crate::store::{Change, Order, OrderStatements};
use chrono::Utc;
use shared_events::db::DbError;
use shared_events::inbox;
use shared_events::outbox::Outbox;
use shared_events::{
    CancelReason, Event, EventBody, OrderCancelled, OrderCompleted, PaymentCloseOutcome,
    PaymentCloseRequested, PaymentReady, RefundRequested,
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

/// Applies `trigger` to order `order_id` inside the caller's transaction, on either
/// driver.
pub async fn apply<C: OrderStatements>(
    conn: &mut C,
    outbox: &Outbox,
    order_id: Uuid,
    trigger: Trigger,
    facts: &Facts,
) -> Result<Applied, SagaError> {
    let order = conn
        .find(order_id, true)
        .await?
        .ok_or(SagaError::UnknownOrder(order_id))?;
    let Some(plan) = plan(&order, trigger, facts) else {
        return Ok(unchanged(order, trigger));
    };
    conn.apply_change(order_id, &plan.change).await?;
    outbox.enqueue(conn, &plan.event).await?;
    conn.record_step(&plan.event, "order", "published").await?;
    plan.moved(&order);
    let order = conn
        .find(order_id, false)
        .await?
        .ok_or(SagaError::UnknownOrder(order_id))?;
    Ok(Applied {
        order,
        published: true,
    })
}

/// What a trigger does to an order: the status table's decision, the row change it
/// makes, the new status and the event announcing it. `None` when it changes nothing.
/// Pure: both drivers carry out the same plan.
#[derive(Debug, Clone)]
pub struct Plan {
    pub from: OrderStatus,
    pub to: OrderStatus,
    pub decision: Decision,
    pub change: Change,
    pub event: Event,
}

impl Plan {
    /// Metrics and the log line of a transition that was made.
    fn moved(&self, order: &Order) {
        let (from, to) = (self.from, self.to);
        metrics::counter!("order_transitions_total", "from" => from.as_str(), "to" => to.as_str())
            .increment(1);
        record_settlement(order, from, to, self.decision);
        tracing::info!(order_id = %order.row.id, %from, %to, event = %self.event.event_type(), "Order moved.");
    }
}

/// The plan for `trigger` on `order` (see [`Plan`]).
pub fn plan(order: &Order, trigger: Trigger, facts: &Facts) -> Option<Plan> {
    let from = order.status();
    let decision = from.decide(trigger);
    let (to, change, event) = carry_out(order, decision, facts)?;
    Some(Plan {
        from,
        to,
        decision,
        change,
        event,
    })
}

fn unchanged(order: Order, trigger: Trigger) -> Applied {
    tracing::info!(order_id = %order.row.id, status = %order.status(), ?trigger, "Trigger changes nothing.");
    Applied {
        order,
        published: false,
    }
}

/// Saga metrics of a transition: how long the order took to settle
/// (`order_saga_duration_seconds{outcome}`, from its placement: `completed`, `cancelled`
/// or `refunded`) and why orders are cancelled (`order_orders_cancelled_total{reason}`).
fn record_settlement(order: &Order, from: OrderStatus, to: OrderStatus, decision: Decision) {
    let outcome = match (from, to) {
        (OrderStatus::PendingPayment | OrderStatus::ClosingPayment, OrderStatus::Completed) => {
            "completed"
        }
        (OrderStatus::PendingPayment | OrderStatus::ClosingPayment, OrderStatus::Cancelled) => {
            "cancelled"
        }
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

/// The change `decision` asks for: the new status, the row change and its event.
fn carry_out(
    order: &Order,
    decision: Decision,
    facts: &Facts,
) -> Option<(OrderStatus, Change, Event)> {
    let id = order.row.id;
    let new_event = |body: shared_events::EventBody| match &facts.cause {
        Some(cause) => cause.follow_up(body),
        None => Event::new(id, None, body),
    };
    Some(match decision {
        Decision::Nothing => return None,
        Decision::Complete => {
            let payment_id = facts
                .payment_id
                .or(order.row.payment_id)
                .unwrap_or_default();
            let body = OrderCompleted {
                order: order.snapshot(),
                payment_id,
                completed_at: Utc::now(),
            };
            (
                OrderStatus::Completed,
                Change::Complete { payment_id },
                new_event(body.into()),
            )
        }
        Decision::Cancel(reason) => (
            OrderStatus::Cancelled,
            Change::Cancel(reason),
            new_event(cancelled(order, reason, None).into()),
        ),
        Decision::ClosePayment => {
            let body = PaymentCloseRequested {
                payment_id: order.row.payment_id,
                reason: CancelReason::DeadlineExpired,
            };
            (
                OrderStatus::ClosingPayment,
                Change::ClosePayment,
                new_event(body.into()),
            )
        }
        Decision::RequestRefund(reason) => {
            let payment_id = facts.payment_id.or(order.row.payment_id)?;
            // A completed order waits in CANCELLING for its refund; a cancelled one that
            // was paid late stays CANCELLED.
            let (to, change) = if order.status() == OrderStatus::Completed {
                (OrderStatus::Cancelling, Change::StartRefund(reason))
            } else {
                (order.status(), Change::Nothing)
            };
            let body = RefundRequested {
                payment_id,
                amount: order.row.total_amount,
                reason,
            };
            (to, change, new_event(body.into()))
        }
        Decision::FinishRefund => {
            let amount = facts.refunded_amount.unwrap_or(order.row.total_amount);
            let reason = order
                .cancel_reason()
                .unwrap_or(CancelReason::CancelledByShopper);
            (
                OrderStatus::Cancelled,
                Change::FinishRefund { amount },
                new_event(cancelled(order, reason, Some(amount)).into()),
            )
        }
    })
}

fn cancelled(order: &Order, reason: CancelReason, refunded_amount: Option<i64>) -> OrderCancelled {
    OrderCancelled {
        order: order.snapshot(),
        reason,
        refunded_amount,
        cancelled_at: Utc::now(),
    }
}

/// What a payment event asks of the order. Pure: both drivers carry it out the same way.
pub enum Reaction<'a> {
    /// `PaymentReady`: the order learns where the shopper pays.
    RecordReady(&'a PaymentReady),
    /// A trigger for the status table, after noting the payment's status (if any).
    Trigger {
        trigger: Trigger,
        facts: Box<Facts>,
        payment_status: Option<&'static str>,
    },
    /// Not an event the order reacts to.
    Ignore,
}

/// The reaction to `event`.
pub fn react(event: &Event) -> Reaction<'_> {
    let facts = |payment_id: Option<Uuid>, refunded_amount: Option<i64>| Facts {
        cause: Some(event.clone()),
        payment_id,
        refunded_amount,
    };
    let (trigger, facts, payment_status) = match &event.body {
        EventBody::PaymentReady(ready) => return Reaction::RecordReady(ready),
        EventBody::PaymentApproved(approved) => (
            Trigger::PaymentApproved,
            facts(Some(approved.payment_id), None),
            None,
        ),
        EventBody::PaymentFailed(failed) => (
            Trigger::PaymentFailed(CancelReason::from(failed.reason)),
            facts(failed.payment_id, None),
            Some("FAILED"),
        ),
        EventBody::PaymentRefunded(refunded) => (
            Trigger::Refunded,
            facts(Some(refunded.payment_id), Some(refunded.amount)),
            None,
        ),
        EventBody::PaymentClosed(closed) => (
            Trigger::PaymentClosed(closed.outcome),
            facts(closed.payment_id, None),
            match closed.outcome {
                PaymentCloseOutcome::Approved => None,
                PaymentCloseOutcome::NotCharged => Some("FAILED"),
            },
        ),
        _ => return Reaction::Ignore,
    };
    Reaction::Trigger {
        trigger,
        facts: Box::new(facts),
        payment_status,
    }
}

/// The timeline outcome of a payment event that triggered [`apply`].
fn step_outcome(published: bool) -> &'static str {
    if published {
        "applied"
    } else {
        "ignored: order already settled"
    }
}

/// Handles one payment event in the caller's transaction, on either driver; true when it
/// enqueued one.
pub async fn consume<C: OrderStatements>(
    conn: &mut C,
    outbox: &Outbox,
    event: &Event,
) -> Result<bool, SagaError> {
    if !inbox::claim(conn, event).await? {
        tracing::debug!(event_id = %event.event_id, "Event already handled.");
        return Ok(false);
    }
    let order_id = event.order_id;
    match react(event) {
        Reaction::Ignore => Ok(false),
        Reaction::RecordReady(ready) => {
            conn.find(order_id, true)
                .await?
                .ok_or(SagaError::UnknownOrder(order_id))?;
            conn.record_payment_ready(order_id, ready).await?;
            conn.record_step(event, "payment", "applied").await?;
            Ok(false)
        }
        Reaction::Trigger {
            trigger,
            facts,
            payment_status,
        } => {
            if let Some(status) = payment_status {
                conn.record_payment_status(order_id, status).await?;
            }
            let applied = apply(conn, outbox, order_id, trigger, &facts).await?;
            conn.record_step(event, "payment", step_outcome(applied.published))
                .await?;
            Ok(applied.published)
        }
    }
}
