//! The order service's metrics that are read from the database rather than counted:
//! `order_orders{status}` (orders in each status) and `order_orders_overdue` (unpaid
//! orders past their deadline, which the deadline sweep should leave at 0), refreshed
//! every `ORDER_METRICS_REFRESH_MS` by two cheap aggregate queries. Every instance reports
//! the same database-wide figures: aggregate them with `max`, not `sum`.
//!
//! [`describe`] also registers every counter of the service at 0, so dashboards and alerts
//! see each series before its first event.

use crate::domain::OrderStatus;
use crate::store;
use shared_events::db::{run_blocking, DbError, PgPool};
use shared_events::CancelReason;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub async fn run(pool: PgPool, every: Duration, shutdown: CancellationToken) {
    loop {
        if let Err(error) = refresh(&pool).await {
            tracing::debug!(%error, "Order gauges not refreshed.");
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// Reads the counts once and sets the gauges (statuses without orders at 0).
pub async fn refresh(pool: &PgPool) -> Result<(), DbError> {
    let (by_status, overdue) = run_blocking(pool, |conn| {
        Ok::<_, DbError>((store::count_by_status(conn)?, store::count_overdue(conn)?))
    })
    .await?;
    for status in OrderStatus::ALL {
        let count = by_status
            .iter()
            .find(|(s, _)| s == status.as_str())
            .map_or(0, |(_, n)| *n);
        metrics::gauge!("order_orders", "status" => status.as_str()).set(count as f64);
    }
    metrics::gauge!("order_orders_overdue").set(overdue as f64);
    Ok(())
}

/// Help texts, and every counter at 0.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        "order_orders_placed_total",
        "Orders accepted by POST /orders."
    );
    describe_counter!(
        "order_transitions_total",
        "Order status changes, by from and to status."
    );
    describe_counter!(
        "order_orders_expired_total",
        "Unpaid orders cancelled by the payment deadline."
    );
    describe_counter!(
        "order_orders_cancelled_total",
        "Orders cancelled (compensations), by cancel reason."
    );
    describe_histogram!(
        "order_saga_duration_seconds",
        Unit::Seconds,
        "From an order's placement to its settlement: completed, cancelled or refunded."
    );
    describe_gauge!("order_orders", "Orders in each status (database-wide).");
    describe_gauge!(
        "order_orders_overdue",
        "Unpaid orders past their payment deadline (database-wide); the deadline sweep keeps it at 0."
    );
    describe_gauge!(
        "order_open_waits",
        "Requests waiting for an order to change (long polls of GET /orders/{id} and /orders/{id}/events streams)."
    );
    describe_counter!(
        "order_waits_refused_total",
        "Waits refused with 503 because ORDER_MAX_OPEN_WAITS were open."
    );
    metrics::counter!("order_orders_placed_total").increment(0);
    metrics::counter!("order_orders_expired_total").increment(0);
    metrics::counter!("order_waits_refused_total").increment(0);
    metrics::gauge!("order_open_waits").increment(0.0);
    for reason in [
        CancelReason::PaymentDeclined,
        CancelReason::PaymentCancelledByShopper,
        CancelReason::PaymentFailed,
        CancelReason::PaymentExpired,
        CancelReason::PaymentUnavailable,
        CancelReason::DeadlineExpired,
        CancelReason::CancelledByShopper,
    ] {
        metrics::counter!("order_orders_cancelled_total", "reason" => crate::saga::cancel_reason_label(reason))
            .increment(0);
    }
}
