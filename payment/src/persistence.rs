//! The payment store port: every database use case of the request and event paths (the
//! shopper's return from Kakao Pay, the order-event consumer, gateway-call records, the
//! reconciler), with its two adapters.
//!
//! * [`PaymentDb::Blocking`] (cases 1–3): Diesel on r2d2, each use case one closure on
//!   the blocking pool through [`run_blocking`].
//! * [`PaymentDb::Async`] (case 4): the same statements on
//!   `diesel_async::AsyncPgConnection` from a deadpool pool, awaited on the executor;
//!   the transaction runs to completion on a task of its own (`async_db::detached`).
//!
//! Both adapters run the same queries (`store` and `store::nonblocking` are expanded from
//! one source); the events are built by the caller (`checkout`), once, for both. Only the
//! gauges stay on the blocking pool in every case (`gauges`).

use crate::store::{self, GatewayCall, NewGatewayCall, Payment, Transition};
use chrono::{DateTime, Utc};
use diesel::Connection;
use diesel_async::AsyncConnection;
use shared_events::async_db::{self, AsyncPgConnection, AsyncPgPool};
use shared_events::db::{run_blocking, DbError, PgPool};
use shared_events::outbox::Outbox;
use shared_events::{inbox, Event, OrderSnapshot};
use uuid::Uuid;

/// Where payment-service's request and event paths run their SQL.
#[derive(Clone)]
pub enum PaymentDb {
    /// Diesel + r2d2 on the blocking pool (cases 1–3).
    Blocking(PgPool),
    /// diesel-async + deadpool (case 4).
    Async(AsyncPgPool),
}

/// Runs one function of `store` (a statement, or a few without a transaction) on either
/// adapter: on the blocking pool, or the same function of `store::nonblocking`, awaited.
macro_rules! on_either {
    ($db:expr, |$conn:ident| $call:ident($($arg:expr),* $(,)?)) => {
        match $db {
            PaymentDb::Blocking(pool) => {
                run_blocking(pool, move |$conn| Ok(store::$call($($arg),*)?)).await
            }
            PaymentDb::Async(pool) => {
                let mut pooled = async_db::connection(pool).await?;
                let $conn: &mut AsyncPgConnection = &mut pooled;
                Ok(store::nonblocking::$call($($arg),*).await?)
            }
        }
    };
}

impl PaymentDb {
    /// The order's payment, created `REQUESTED` if it has none yet.
    pub async fn create_requested(
        &self,
        order_id: Uuid,
        order: OrderSnapshot,
        item_name: String,
        quantity: i64,
    ) -> Result<Payment, DbError> {
        on_either!(self, |conn| create_requested(
            conn, order_id, &order, &item_name, quantity
        ))
    }

    /// `READY` → `APPROVING` (see `store::begin_approval`).
    pub async fn begin_approval(&self, id: Uuid) -> Result<Option<Payment>, DbError> {
        on_either!(self, |conn| begin_approval(conn, id))
    }

    /// `APPROVING` → `READY` (see `store::abandon_approval`).
    pub async fn abandon_approval(&self, id: Uuid) -> Result<Option<Payment>, DbError> {
        on_either!(self, |conn| abandon_approval(conn, id))
    }

    /// `APPROVED` → `REFUNDING` if it is `APPROVED`: whether this caller moved it (and so
    /// alone may ask Kakao Pay for the refund), and the payment as it is now.
    pub async fn begin_refund(&self, id: Uuid) -> Result<(bool, Option<Payment>), DbError> {
        match self {
            PaymentDb::Blocking(pool) => {
                run_blocking(pool, move |conn| {
                    if let Some(moved) = store::begin_refund(conn, id)? {
                        return Ok((true, Some(moved)));
                    }
                    Ok((false, store::find(conn, id)?))
                })
                .await
            }
            PaymentDb::Async(pool) => {
                let mut pooled = async_db::connection(pool).await?;
                let conn: &mut AsyncPgConnection = &mut pooled;
                if let Some(moved) = store::nonblocking::begin_refund(conn, id).await? {
                    return Ok((true, Some(moved)));
                }
                Ok((false, store::nonblocking::find(conn, id).await?))
            }
        }
    }

    /// Notes that the order was cancelled; the order's payments as they are now.
    pub async fn mark_order_cancelled(&self, order_id: Uuid) -> Result<Vec<Payment>, DbError> {
        on_either!(self, |conn| mark_order_cancelled(conn, order_id))
    }

    /// Notes that the order asked to close its payment; its payments as they are now.
    pub async fn mark_close_requested(&self, order_id: Uuid) -> Result<Vec<Payment>, DbError> {
        on_either!(self, |conn| mark_close_requested(conn, order_id))
    }

    /// Notes that an approve of `id` had an unclear outcome.
    pub async fn mark_approval_unclear(&self, id: Uuid) -> Result<(), DbError> {
        on_either!(self, |conn| mark_approval_unclear(conn, id))
    }

    /// The payments the reconciler should look at now (see `store::unsettled`).
    pub async fn unsettled(
        &self,
        cutoff: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<Payment>, DbError> {
        on_either!(self, |conn| unsettled(conn, cutoff, limit))
    }

    /// The reconciler checks `id` again not before `next`.
    pub async fn schedule_check(&self, id: Uuid, next: DateTime<Utc>) -> Result<(), DbError> {
        on_either!(self, |conn| schedule_check(conn, id, next))
    }

    /// Closes the order's payments that can still be paid; returns how many.
    pub async fn close_unpaid(&self, order_id: Uuid) -> Result<u64, DbError> {
        on_either!(self, |conn| close_unpaid(conn, order_id))
    }

    pub async fn find(&self, id: Uuid) -> Result<Option<Payment>, DbError> {
        on_either!(self, |conn| find(conn, id))
    }

    pub async fn find_by_order(&self, order_id: Uuid) -> Result<Vec<Payment>, DbError> {
        on_either!(self, |conn| find_by_order(conn, order_id))
    }

    pub async fn gateway_calls(&self, payment_id: Uuid) -> Result<Vec<GatewayCall>, DbError> {
        on_either!(self, |conn| gateway_calls_of(conn, payment_id))
    }

    pub async fn record_gateway_call(&self, call: NewGatewayCall) -> Result<(), DbError> {
        on_either!(self, |conn| record_gateway_call(conn, &call))
    }

    /// In one transaction: claims `cause` in the inbox (when given; a redelivery changes
    /// nothing), makes `transition`, and enqueues the event `announce` builds from the
    /// updated payment. `None` when the event was handled before or the payment was not in
    /// the status the transition comes from.
    pub async fn commit<F>(
        &self,
        outbox: &Outbox,
        cause: Option<Event>,
        id: Uuid,
        transition: Transition,
        announce: F,
    ) -> Result<Option<Payment>, DbError>
    where
        F: FnOnce(&Payment) -> Event + Send + 'static,
    {
        match self {
            PaymentDb::Blocking(pool) => {
                let outbox = outbox.clone();
                run_blocking(pool, move |conn| {
                    conn.transaction::<_, DbError, _>(|conn| {
                        if let Some(cause) = &cause {
                            if !inbox::claim(conn, cause)? {
                                return Ok(None);
                            }
                        }
                        let Some(payment) = store::apply_transition(conn, id, &transition)? else {
                            return Ok(None);
                        };
                        outbox.enqueue(conn, &announce(&payment))?;
                        Ok(Some(payment))
                    })
                })
                .await
            }
            PaymentDb::Async(pool) => {
                let (pool, outbox) = (pool.clone(), outbox.clone());
                async_db::detached(async move {
                    let mut pooled = async_db::connection(&pool).await?;
                    let conn: &mut AsyncPgConnection = &mut pooled;
                    conn.transaction::<_, DbError, _>(async |conn| {
                        if let Some(cause) = &cause {
                            if !inbox::claim_async(conn, cause).await? {
                                return Ok(None);
                            }
                        }
                        let Some(payment) =
                            store::nonblocking::apply_transition(conn, id, &transition).await?
                        else {
                            return Ok(None);
                        };
                        outbox.enqueue_async(conn, &announce(&payment)).await?;
                        Ok(Some(payment))
                    })
                    .await
                })
                .await
            }
        }
    }

    /// Enqueues `event` alone: an answer that changes no payment (there is none).
    pub async fn announce(&self, outbox: &Outbox, event: Event) -> Result<(), DbError> {
        match self {
            PaymentDb::Blocking(pool) => {
                let outbox = outbox.clone();
                run_blocking(pool, move |conn| Ok(outbox.enqueue(conn, &event)?)).await
            }
            PaymentDb::Async(pool) => {
                let mut pooled = async_db::connection(pool).await?;
                let conn: &mut AsyncPgConnection = &mut pooled;
                Ok(outbox.enqueue_async(conn, &event).await?)
            }
        }
    }

    /// `SELECT 1`: the database answers.
    pub async fn ping(&self) -> Result<(), DbError> {
        match self {
            PaymentDb::Blocking(pool) => {
                run_blocking(pool, |conn| {
                    use diesel::RunQueryDsl;
                    diesel::sql_query("SELECT 1").execute(conn)?;
                    Ok(())
                })
                .await
            }
            PaymentDb::Async(pool) => async_db::ping(pool).await,
        }
    }
}

/// The adapter of `case`: the async pool in case 4 (sized by
/// `PAYMENT_ASYNC_DB_POOL_SIZE`), else the blocking pool the gauges use too.
pub fn for_case(
    case: shared_events::Case,
    blocking: &PgPool,
    settings: &crate::config::Settings,
) -> PaymentDb {
    if case.async_db() {
        use secrecy::ExposeSecret;
        tracing::info!(%case, "Request and event paths on the async PostgreSQL driver.");
        PaymentDb::Async(async_db::build_pool(
            settings.database_url.expose_secret(),
            settings.async_db_pool_size,
        ))
    } else {
        PaymentDb::Blocking(blocking.clone())
    }
}
