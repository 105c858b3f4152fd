//! The payment service's metrics read from the database: `payment_payments{status}`
//! (payments in each status), refreshed every `PAYMENT_METRICS_REFRESH_MS`. A payment
//! left `APPROVING` (approve outcome unknown) or `REFUNDING` needs an operator when it
//! stays there. Every instance reports the same database-wide figures: aggregate them with
//! `max`, not `sum`.
//!
//! [`describe`] also registers every counter of the service at 0, so dashboards and alerts
//! see each series before its first event.

use crate::domain::PaymentStatus;
use crate::store;
use shared_events::db::{run_blocking, DbError, PgPool};
use shared_events::PaymentFailureReason;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub async fn run(pool: PgPool, every: Duration, shutdown: CancellationToken) {
    loop {
        if let Err(error) = refresh(&pool).await {
            tracing::debug!(%error, "Payment gauges not refreshed.");
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// Reads the counts once and sets the gauges (statuses without payments at 0).
pub async fn refresh(pool: &PgPool) -> Result<(), DbError> {
    let by_status =
        run_blocking(pool, |conn| Ok::<_, DbError>(store::count_by_status(conn)?)).await?;
    for status in PaymentStatus::ALL {
        let count = by_status
            .iter()
            .find(|(s, _)| s == status.as_str())
            .map_or(0, |(_, n)| *n);
        metrics::gauge!("payment_payments", "status" => status.as_str()).set(count as f64);
    }
    Ok(())
}

/// The gateway endpoints, as labelled in `payment_gateway_*`.
pub const ENDPOINTS: [&str; 4] = ["ready", "approve", "cancel", "order"];

/// Help texts, and every counter at 0.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        "payment_gateway_requests_total",
        "Kakao Pay calls (each attempt), by endpoint, outcome (ok, rejected, transient, unknown) and Kakao error code."
    );
    describe_histogram!(
        "payment_gateway_request_duration_seconds",
        Unit::Seconds,
        "Kakao Pay call latency (each attempt), by endpoint."
    );
    describe_counter!(
        "payment_gateway_retries_total",
        "Kakao Pay calls retried after a transient failure, by endpoint."
    );
    describe_counter!("payment_payments_approved_total", "Payments approved.");
    describe_counter!(
        "payment_payments_failed_total",
        "Payments that failed, by reason."
    );
    describe_counter!("payment_refunds_total", "Payments refunded.");
    describe_gauge!(
        "payment_payments",
        "Payments in each status (database-wide)."
    );
    for endpoint in ENDPOINTS {
        metrics::counter!("payment_gateway_retries_total", "endpoint" => endpoint).increment(0);
    }
    metrics::counter!("payment_payments_approved_total").increment(0);
    metrics::counter!("payment_refunds_total").increment(0);
    for reason in [
        PaymentFailureReason::Declined,
        PaymentFailureReason::ShopperCancelled,
        PaymentFailureReason::Failed,
        PaymentFailureReason::Expired,
        PaymentFailureReason::GatewayUnavailable,
        PaymentFailureReason::Rejected,
    ] {
        metrics::counter!("payment_payments_failed_total", "reason" => crate::checkout::reason_label(reason))
            .increment(0);
    }
    metrics::counter!("payment_payments_failed_total", "reason" => "order_cancelled").increment(0);
}
