//! One code path for both PostgreSQL drivers of order and payment.
//!
//! The use cases are written once, as async code over a connection of either driver:
//! Diesel's blocking `PgConnection` from r2d2 (cases 1–3, on the blocking pool) or
//! diesel-async's `AsyncPgConnection` from deadpool (case 4, awaited on the executor). A
//! service's statements are one trait implemented for both connection types from one
//! source, the inbox claim and the outbox write are [`Connection::execute`] of one
//! statement each, and the driver is chosen once, in the composition root
//! ([`Database::for_case`]). `saga_db_work_total{service, driver}` counts the work each
//! driver did, so a test or an operator can see which one served the requests.
//!
//! On the blocking driver nothing is awaited: each statement runs synchronously inside
//! its `async fn`, so a use case's future completes in one poll. [`transaction!`] and
//! [`with_connection!`] poll it so ([`complete_now`]) on the blocking thread that holds the
//! connection; on the async driver they await it, a transaction on a task of its own
//! (`async_db::detached`), so a client that disconnects never leaves one half-open.

use crate::async_db::{self, AsyncPgConnection, AsyncPgPool};
use crate::db::{DbError, PgPool};
use diesel::pg::{Pg, PgConnection};
use diesel::query_builder::{QueryFragment, QueryId};
use diesel::QueryResult;
use std::future::Future;

/// Where a service's request and event paths run their SQL, and which service it is
/// (the `service` label of `saga_db_work_total`).
#[derive(Clone)]
pub struct Database {
    service: &'static str,
    pool: Pool,
}

/// The pool of the driver the composition root chose.
#[derive(Clone)]
pub enum Pool {
    /// Diesel + r2d2 on the blocking pool (cases 1–3).
    Blocking(PgPool),
    /// diesel-async + deadpool (case 4).
    Async(AsyncPgPool),
}

impl Pool {
    fn driver(&self) -> &'static str {
        match self {
            Pool::Blocking(_) => "blocking",
            Pool::Async(_) => "async",
        }
    }
}

impl Database {
    /// The adapter of `case`: an async pool of `async_pool_size` connections to
    /// `database_url` in case 4, else `blocking`, the pool the sweeps and gauges use too.
    pub fn for_case(
        service: &'static str,
        case: crate::Case,
        blocking: &PgPool,
        database_url: &str,
        async_pool_size: usize,
    ) -> Self {
        let pool = if case.async_db() {
            tracing::info!(%case, "Request and event paths on the async PostgreSQL driver.");
            Pool::Async(async_db::build_pool(database_url, async_pool_size))
        } else {
            Pool::Blocking(blocking.clone())
        };
        Self::new(service, pool)
    }

    pub fn new(service: &'static str, pool: Pool) -> Self {
        metrics::describe_counter!(
            WORK_TOTAL,
            "Database work (a transaction or a statement) of the request and event paths, by PostgreSQL driver."
        );
        for driver in ["blocking", "async"] {
            metrics::counter!(WORK_TOTAL, "service" => service, "driver" => driver).increment(0);
        }
        Self { service, pool }
    }

    /// The pool, counting one unit of work on it (for [`transaction!`] and
    /// [`with_connection!`]).
    #[doc(hidden)]
    pub fn pool_for_work(&self) -> &Pool {
        metrics::counter!(WORK_TOTAL, "service" => self.service, "driver" => self.pool.driver())
            .increment(1);
        &self.pool
    }

    /// `SELECT 1`: the database answers.
    pub async fn ping(&self) -> Result<(), DbError> {
        match &self.pool {
            Pool::Blocking(pool) => {
                crate::db::run_blocking(pool, |conn| {
                    diesel::RunQueryDsl::execute(diesel::sql_query("SELECT 1"), conn)?;
                    Ok(())
                })
                .await
            }
            Pool::Async(pool) => async_db::ping(pool).await,
        }
    }
}

/// `saga_db_work_total{service, driver}`.
const WORK_TOTAL: &str = "saga_db_work_total";

/// A statement both drivers can execute (an insert or update built with Diesel's DSL).
pub trait Statement: QueryFragment<Pg> + QueryId + Send + 'static {}

impl<Q: QueryFragment<Pg> + QueryId + Send + 'static> Statement for Q {}

pub use async_trait::async_trait;
// For the macros below, so a caller needs no Diesel crates of its own to use them.
#[doc(hidden)]
pub use {diesel, diesel_async};

/// A connection of either driver, as the shared writes (inbox, outbox) need it.
///
/// This trait and the services' statements traits box their futures (`async_trait`):
/// with plain `async fn` in traits, rustc cannot prove a generic use case's future `Send`
/// when its statements borrow arguments (rust-lang/rust#110338), and case 4 runs them on
/// spawned tasks.
#[async_trait]
pub trait Connection: Send {
    /// Runs `statement`; the number of rows it touched.
    async fn execute<Q: Statement>(&mut self, statement: Q) -> QueryResult<usize>;
}

#[async_trait]
impl Connection for PgConnection {
    async fn execute<Q: Statement>(&mut self, statement: Q) -> QueryResult<usize> {
        diesel::query_dsl::methods::ExecuteDsl::execute(statement, self)
    }
}

#[async_trait]
impl Connection for AsyncPgConnection {
    async fn execute<Q: Statement>(&mut self, statement: Q) -> QueryResult<usize> {
        diesel_async::methods::ExecuteDsl::execute(statement, self).await
    }
}

/// Polls a future of the blocking driver to its end on the current (blocking) thread.
/// Its statements never wait on the executor, so this never parks for long: it exists
/// so that blocking and async connections share one async code path.
pub fn complete_now<F: Future>(work: F) -> F::Output {
    futures::executor::block_on(work)
}

/// `transaction!(database, |conn| work)`: runs the future `work` — async code generic
/// over the connection `conn` of either driver — in one transaction on `database`
/// ([`Database`]), and awaits its result. `work`'s error type must convert from
/// [`DbError`] and from `diesel::result::Error`; what it captures is moved in (clone
/// what the caller keeps).
#[macro_export]
macro_rules! transaction {
    ($db:expr, |$conn:ident| $work:expr) => {
        match $crate::sql::Database::pool_for_work($db) {
            $crate::sql::Pool::Blocking(pool) => {
                $crate::db::run_blocking(pool, move |pooled| {
                    $crate::sql::diesel::Connection::transaction(pooled, |$conn| {
                        $crate::sql::complete_now(async move { $work.await })
                    })
                })
                .await
            }
            $crate::sql::Pool::Async(pool) => {
                let pool = pool.clone();
                $crate::async_db::detached(async move {
                    let mut pooled = $crate::async_db::connection(&pool).await?;
                    $crate::sql::diesel_async::AsyncConnection::transaction(
                        &mut *pooled,
                        async move |$conn| $work.await,
                    )
                    .await
                })
                .await
            }
        }
    };
}

/// `with_connection!(database, |conn| work)`: as [`transaction!`], without a transaction
/// (one statement, or reads that need none).
#[macro_export]
macro_rules! with_connection {
    ($db:expr, |$conn:ident| $work:expr) => {
        match $crate::sql::Database::pool_for_work($db) {
            $crate::sql::Pool::Blocking(pool) => {
                $crate::db::run_blocking(pool, move |$conn| {
                    $crate::sql::complete_now(async move { $work.await })
                })
                .await
            }
            $crate::sql::Pool::Async(pool) => {
                let mut pooled = $crate::async_db::connection(pool).await?;
                let $conn: &mut $crate::async_db::AsyncPgConnection = &mut pooled;
                $work.await
            }
        }
    };
}
