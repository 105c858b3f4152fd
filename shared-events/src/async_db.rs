//! Case 4's database access: the same Diesel queries on an async PostgreSQL driver.
//!
//! `diesel-async` runs Diesel's query DSL over `tokio-postgres`, so a query is awaited on
//! the executor instead of occupying a blocking-pool thread for its round trip. The pool
//! is deadpool's: `get().await` waits without blocking a thread, for at most
//! [`WAIT_TIMEOUT`] (r2d2's `connection_timeout` in the blocking pool).
//!
//! What runs here in case 4: every statement on order's and payment's request and event
//! paths (their statements traits' `AsyncPgConnection` implementations, run through
//! [`crate::sql`]). Migrations, the outbox relay (advisory
//! lock, `LISTEN`) and the periodic sweeps stay on the blocking pool of [`crate::db`]: they
//! run once at start-up or off the request path, and the experiment measures the latter.

use crate::db::DbError;
use diesel_async::pooled_connection::deadpool::{Object, Pool};
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use std::time::Duration;

pub use diesel_async::AsyncPgConnection;

pub type AsyncPgPool = Pool<AsyncPgConnection>;
/// A connection checked out of an [`AsyncPgPool`]; it goes back when dropped.
pub type AsyncPooled = Object<AsyncPgConnection>;

/// How long `get` waits for a free connection, and for a new one to be established.
pub const WAIT_TIMEOUT: Duration = Duration::from_secs(5);

/// A pool that does not connect until first used, so a service can start (and answer
/// `/healthz`) while the database is still coming up.
///
/// Connections are recycled the fast way (no test query on check-out, only a check that
/// no transaction was left open), as the blocking pool does (`test_on_check_out(false)`).
pub fn build_pool(database_url: &str, max_size: usize) -> AsyncPgPool {
    let mut config = ManagerConfig::<AsyncPgConnection>::default();
    config.recycling_method = RecyclingMethod::Fast;
    let manager = AsyncDieselConnectionManager::new_with_config(database_url, config);
    Pool::builder(manager)
        .max_size(max_size.max(1))
        .wait_timeout(Some(WAIT_TIMEOUT))
        .create_timeout(Some(WAIT_TIMEOUT))
        .runtime(deadpool::Runtime::Tokio1)
        .build()
        .expect("a pool with a runtime and no hooks always builds")
}

/// A connection from `pool`, or [`DbError::AsyncPool`] when none can be had in time.
pub async fn connection(pool: &AsyncPgPool) -> Result<AsyncPooled, DbError> {
    pool.get()
        .await
        .map_err(|error| DbError::AsyncPool(Box::new(error)))
}

/// `SELECT 1` on the async pool: the readiness check of case 4.
pub async fn ping(pool: &AsyncPgPool) -> Result<(), DbError> {
    let mut conn = connection(pool).await?;
    diesel_async::RunQueryDsl::execute(diesel::sql_query("SELECT 1"), &mut *conn).await?;
    Ok(())
}

/// Runs `work` (a transaction) to completion on a task of its own, in the current span,
/// even if the caller's future is dropped — say, by a client that disconnects mid-request.
/// A cancelled `AsyncConnection::transaction` neither commits nor rolls back: its
/// connection would go back to the pool with the transaction open and its row locks held
/// until the pool next checks it out (and throws it away). The blocking adapter has the
/// same property for free: `spawn_blocking` work always runs to the end.
pub async fn detached<T, E, F>(work: F) -> Result<T, E>
where
    F: std::future::Future<Output = Result<T, E>> + Send + 'static,
    T: Send + 'static,
    E: From<DbError> + Send + 'static,
{
    use tracing::Instrument;
    tokio::spawn(work.in_current_span())
        .await
        .map_err(DbError::from)?
}
