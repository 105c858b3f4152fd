//! The order store port: every database use case of the request and event paths, at the
//! granularity of one transaction, with its two adapters.
//!
//! * [`OrderDb::Blocking`] (cases 1–3): Diesel on r2d2, each use case one closure on the
//!   blocking pool through [`run_blocking`].
//! * [`OrderDb::Async`] (case 4): the same statements on `diesel_async::AsyncPgConnection`
//!   from a deadpool pool, awaited on the executor; no thread is held across a round
//!   trip. Transactions run to completion on a task of their own
//!   (`async_db::detached`), so a client that disconnects never leaves one half-open.
//!
//! Both adapters run the same queries (`store` and `store::nonblocking` are expanded from
//! one source) and the same decisions (`saga::plan`, `saga::react`); only how a statement
//! is executed differs. The deadline sweep and the gauges stay on the blocking pool in
//! every case (`deadline`, `gauges`).

use crate::domain::{NewOrder, Trigger};
use crate::saga::{self, Applied, Facts, SagaError};
use crate::store::{self, Order, SagaStep};
use chrono::{DateTime, Utc};
use diesel::Connection;
use diesel_async::AsyncConnection;
use shared_events::async_db::{self, AsyncPgConnection, AsyncPgPool};
use shared_events::db::{run_blocking, DbError, PgPool};
use shared_events::outbox::Outbox;
use shared_events::{Event, OrderPlaced};
use uuid::Uuid;

/// Where order-service's request and event paths run their SQL.
#[derive(Clone)]
pub enum OrderDb {
    /// Diesel + r2d2 on the blocking pool (cases 1–3).
    Blocking(PgPool),
    /// diesel-async + deadpool (case 4).
    Async(AsyncPgPool),
}

/// `OrderPlaced` for the order as stored.
fn placed_event(stored: &Order, payment_deadline: DateTime<Utc>) -> Event {
    Event::new(
        stored.row.id,
        None,
        OrderPlaced {
            order: stored.snapshot(),
            payment_deadline,
        },
    )
}

impl OrderDb {
    /// Stores the order (with its token's hash), its lines, its `OrderPlaced` event
    /// (outbox) and the first timeline step in one transaction; returns the order as stored.
    pub async fn place(
        &self,
        outbox: &Outbox,
        id: Uuid,
        order: NewOrder,
        token_hash: Vec<u8>,
        payment_deadline: DateTime<Utc>,
    ) -> Result<Order, DbError> {
        match self {
            OrderDb::Blocking(pool) => {
                let outbox = outbox.clone();
                run_blocking(pool, move |conn| {
                    conn.transaction::<_, DbError, _>(|conn| {
                        store::insert(conn, id, &order, &token_hash, payment_deadline)?;
                        let stored =
                            store::find(conn, id, false)?.ok_or(diesel::result::Error::NotFound)?;
                        let event = placed_event(&stored, payment_deadline);
                        outbox.enqueue(conn, &event)?;
                        store::record_step(conn, &event, "order", "published")?;
                        Ok(stored)
                    })
                })
                .await
            }
            OrderDb::Async(pool) => {
                let (pool, outbox) = (pool.clone(), outbox.clone());
                async_db::detached(async move {
                    let mut pooled = async_db::connection(&pool).await?;
                    let conn: &mut AsyncPgConnection = &mut pooled;
                    conn.transaction::<_, DbError, _>(async |conn| {
                        use store::nonblocking as q;
                        q::insert(conn, id, &order, &token_hash, payment_deadline).await?;
                        let stored = q::find(conn, id, false)
                            .await?
                            .ok_or(diesel::result::Error::NotFound)?;
                        let event = placed_event(&stored, payment_deadline);
                        outbox.enqueue_async(conn, &event).await?;
                        q::record_step(conn, &event, "order", "published").await?;
                        Ok(stored)
                    })
                    .await
                })
                .await
            }
        }
    }

    /// The order, or `None`.
    pub async fn find(&self, id: Uuid) -> Result<Option<Order>, DbError> {
        match self {
            OrderDb::Blocking(pool) => {
                run_blocking(pool, move |conn| Ok(store::find(conn, id, false)?)).await
            }
            OrderDb::Async(pool) => {
                let mut conn = async_db::connection(pool).await?;
                Ok(store::nonblocking::find(&mut conn, id, false).await?)
            }
        }
    }

    /// The order with every step of its saga, oldest first, or `None`.
    pub async fn timeline(&self, id: Uuid) -> Result<Option<(Order, Vec<SagaStep>)>, DbError> {
        match self {
            OrderDb::Blocking(pool) => {
                run_blocking(pool, move |conn| {
                    let Some(order) = store::find(conn, id, false)? else {
                        return Ok(None);
                    };
                    Ok(Some((order, store::steps(conn, id)?)))
                })
                .await
            }
            OrderDb::Async(pool) => {
                let mut conn = async_db::connection(pool).await?;
                let Some(order) = store::nonblocking::find(&mut conn, id, false).await? else {
                    return Ok(None);
                };
                let steps = store::nonblocking::steps(&mut conn, id).await?;
                Ok(Some((order, steps)))
            }
        }
    }

    /// Notes on the order's timeline that handling `event` failed transiently and will
    /// be retried (a step of its own: the event is not applied yet).
    pub async fn record_retry(&self, event: &Event, outcome: String) -> Result<(), DbError> {
        match self {
            OrderDb::Blocking(pool) => {
                let event = event.clone();
                run_blocking(pool, move |conn| {
                    Ok(store::record_step(conn, &event, "payment", &outcome)?)
                })
                .await
            }
            OrderDb::Async(pool) => {
                let mut conn = async_db::connection(pool).await?;
                Ok(store::nonblocking::record_step(&mut conn, event, "payment", &outcome).await?)
            }
        }
    }

    /// The trace order `id` was placed in.
    pub async fn traceparent(&self, id: Uuid) -> Result<Option<String>, DbError> {
        match self {
            OrderDb::Blocking(pool) => {
                run_blocking(pool, move |conn| Ok(store::traceparent(conn, id)?)).await
            }
            OrderDb::Async(pool) => {
                let mut conn = async_db::connection(pool).await?;
                Ok(store::nonblocking::traceparent(&mut conn, id).await?)
            }
        }
    }

    /// Applies `trigger` to the order in a transaction of its own (see `saga::apply`).
    /// The caller wakes the relay when an event was enqueued.
    pub async fn apply(
        &self,
        outbox: &Outbox,
        order_id: Uuid,
        trigger: Trigger,
        facts: Facts,
    ) -> Result<Applied, SagaError> {
        match self {
            OrderDb::Blocking(pool) => {
                let outbox = outbox.clone();
                run_blocking(pool, move |conn| {
                    conn.transaction(|conn| saga::apply(conn, &outbox, order_id, trigger, &facts))
                })
                .await
            }
            OrderDb::Async(pool) => {
                let (pool, outbox) = (pool.clone(), outbox.clone());
                async_db::detached(async move {
                    let mut pooled = async_db::connection(&pool).await?;
                    let conn: &mut AsyncPgConnection = &mut pooled;
                    conn.transaction::<_, SagaError, _>(async |conn| {
                        saga::apply_async(conn, &outbox, order_id, trigger, &facts).await
                    })
                    .await
                })
                .await
            }
        }
    }

    /// Handles one payment event — inbox claim, state change, outbox, timeline — in one
    /// transaction (see `saga::consume`); true when it enqueued an event.
    pub async fn consume(&self, outbox: &Outbox, event: &Event) -> Result<bool, SagaError> {
        match self {
            OrderDb::Blocking(pool) => {
                let (outbox, event) = (outbox.clone(), event.clone());
                run_blocking(pool, move |conn| {
                    conn.transaction(|conn| saga::consume(conn, &outbox, &event))
                })
                .await
            }
            OrderDb::Async(pool) => {
                let (pool, outbox, event) = (pool.clone(), outbox.clone(), event.clone());
                async_db::detached(async move {
                    let mut pooled = async_db::connection(&pool).await?;
                    let conn: &mut AsyncPgConnection = &mut pooled;
                    conn.transaction::<_, SagaError, _>(async |conn| {
                        saga::consume_async(conn, &outbox, &event).await
                    })
                    .await
                })
                .await
            }
        }
    }

    /// `SELECT 1`: the database answers.
    pub async fn ping(&self) -> Result<(), DbError> {
        match self {
            OrderDb::Blocking(pool) => {
                run_blocking(pool, |conn| {
                    use diesel::RunQueryDsl;
                    diesel::sql_query("SELECT 1").execute(conn)?;
                    Ok(())
                })
                .await
            }
            OrderDb::Async(pool) => async_db::ping(pool).await,
        }
    }
}

/// The adapter of `case`: the async pool in case 4 (sized by `ORDER_ASYNC_DB_POOL_SIZE`),
/// else the blocking pool the background tasks use too.
pub fn for_case(
    case: shared_events::Case,
    blocking: &PgPool,
    settings: &crate::config::Settings,
) -> OrderDb {
    if case.async_db() {
        use secrecy::ExposeSecret;
        tracing::info!(%case, "Request and event paths on the async PostgreSQL driver.");
        OrderDb::Async(async_db::build_pool(
            settings.database_url.expose_secret(),
            settings.async_db_pool_size,
        ))
    } else {
        OrderDb::Blocking(blocking.clone())
    }
}
