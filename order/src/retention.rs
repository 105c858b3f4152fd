//! How long the order service remembers what it only keeps for a while: idempotency keys
//! are forgotten once older than `ORDER_IDEMPOTENCY_KEY_TTL_SECS` (24 h by default), so a
//! client's retry within a day always finds its first order.

use crate::store;
use shared_events::db::{run_blocking, DbError, PgPool};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Forgets expired keys every `every` until shut down.
pub async fn run(pool: PgPool, ttl: Duration, every: Duration, shutdown: CancellationToken) {
    loop {
        if let Err(error) = forget_expired_keys(&pool, ttl).await {
            tracing::warn!(%error, "Forgetting expired idempotency keys failed; will retry.");
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// Deletes the keys recorded more than `ttl` ago; returns how many.
pub async fn forget_expired_keys(pool: &PgPool, ttl: Duration) -> Result<usize, DbError> {
    let age = chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
    let before = chrono::Utc::now()
        .checked_sub_signed(age)
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
    let forgotten = run_blocking(pool, move |conn| {
        store::forget_keys(conn, before).map_err(DbError::from)
    })
    .await?;
    if forgotten > 0 {
        tracing::info!(forgotten, "Expired idempotency keys forgotten.");
    }
    Ok(forgotten)
}
