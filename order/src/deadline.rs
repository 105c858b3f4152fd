//! Payment deadlines: an order still unpaid when its deadline passes goes
//! `CLOSING_PAYMENT` and asks payment to close the payment (`PaymentCloseRequested`), so
//! no order waits for a payment forever — and none is cancelled while its
//! `PaymentApproved` waits in a topic: payment answers whether the shopper paid (the
//! order completes) or not (`CANCELLED`, `deadline_expired`). The sweep runs in
//! every instance; `FOR UPDATE SKIP LOCKED` keeps two instances off the same order, and
//! the deadline is stored with the order, so it holds across restarts.

use crate::domain::Trigger;
use crate::saga::{self, Facts};
use crate::store;
use diesel::Connection;
use shared_events::db::{run_blocking, DbError, PgPool};
use shared_events::outbox::Outbox;
use shared_events::sql::complete_now;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const BATCH: i64 = 100;

pub async fn run(pool: PgPool, outbox: Outbox, every: Duration, shutdown: CancellationToken) {
    loop {
        match expire_overdue(&pool, &outbox).await {
            Ok(n) if n as i64 == BATCH => continue,
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "Deadline sweep failed; will retry."),
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// Asks payment to close the payments of one batch of overdue orders, in one
/// transaction; returns how many.
pub async fn expire_overdue(pool: &PgPool, outbox: &Outbox) -> Result<usize, saga::SagaError> {
    let writer = outbox.clone();
    let expired = run_blocking(pool, move |conn| {
        conn.transaction::<_, saga::SagaError, _>(|conn| {
            let overdue = store::overdue(conn, BATCH).map_err(DbError::from)?;
            for (id, traceparent) in &overdue {
                // Each expiry continues its order's trace.
                crate::orders::order_span("deadline passed", *id, traceparent.as_deref())
                    .in_scope(|| {
                        complete_now(saga::apply(
                            conn,
                            &writer,
                            *id,
                            Trigger::DeadlinePassed,
                            &Facts::default(),
                        ))
                    })?;
            }
            Ok(overdue.len())
        })
    })
    .await?;
    if expired > 0 {
        tracing::info!(expired, "Overdue orders closing their payments.");
        metrics::counter!("order_orders_expired_total").increment(expired as u64);
        outbox.notify();
    }
    Ok(expired)
}
