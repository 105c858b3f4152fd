//! The payment store port: every database use case of the request and event paths (the
//! shopper's return from Kakao Pay, the order-event consumer, gateway-call records, the
//! reconciler), on either PostgreSQL driver.
//!
//! Each use case is written once, as async code over a [`PaymentStatements`] connection,
//! and run by `shared_events::sql` on the driver the composition root chose
//! ([`for_case`]): Diesel on r2d2 through the blocking pool (cases 1–3), or
//! diesel-async on deadpool, awaited on the executor (case 4; transactions on a task of
//! their own). The events are built by the caller (`checkout`). Only the gauges stay on
//! the blocking pool in every case (`gauges`).

use crate::store::{GatewayCall, NewGatewayCall, Payment, PaymentStatements, Transition};
use chrono::{DateTime, Utc};
use shared_events::db::{DbError, PgPool};
use shared_events::outbox::Outbox;
use shared_events::sql::{Database, Pool};
use shared_events::{inbox, transaction, with_connection, Event, OrderSnapshot};
use uuid::Uuid;

/// Where payment-service's request and event paths run their SQL.
#[derive(Clone)]
pub struct PaymentDb(Database);

impl PaymentDb {
    /// The blocking adapter on `pool` (tests that drive the store directly).
    pub fn blocking(pool: PgPool) -> Self {
        PaymentDb(Database::new("payment", Pool::Blocking(pool)))
    }
}

/// Runs one statement of [`PaymentStatements`] on the adapter, without a transaction.
macro_rules! statement {
    ($db:expr, |$conn:ident| $call:ident($($arg:expr),* $(,)?)) => {
        with_connection!(&$db.0, |$conn| async {
            Ok::<_, DbError>($conn.$call($($arg),*).await?)
        })
    };
}

/// `APPROVED` → `REFUNDING` if it is `APPROVED`: whether this caller moved it, and the
/// payment as it is now.
async fn begin_refund_on<C: PaymentStatements>(
    conn: &mut C,
    id: Uuid,
) -> Result<(bool, Option<Payment>), DbError> {
    if let Some(moved) = conn.begin_refund(id).await? {
        return Ok((true, Some(moved)));
    }
    Ok((false, conn.find(id).await?))
}

/// See [`PaymentDb::commit`]; in the caller's transaction.
async fn commit_on<C, F>(
    conn: &mut C,
    outbox: &Outbox,
    cause: Option<&Event>,
    id: Uuid,
    transition: &Transition,
    announce: F,
) -> Result<Option<Payment>, DbError>
where
    C: PaymentStatements,
    F: FnOnce(&Payment) -> Event,
{
    if let Some(cause) = cause {
        if !inbox::claim(conn, cause).await? {
            return Ok(None);
        }
    }
    let Some(payment) = conn.apply_transition(id, transition).await? else {
        return Ok(None);
    };
    outbox.enqueue(conn, &announce(&payment)).await?;
    Ok(Some(payment))
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
        statement!(self, |conn| create_requested(
            order_id, &order, &item_name, quantity
        ))
    }

    /// `READY` → `APPROVING` (see `store::begin_approval`).
    pub async fn begin_approval(&self, id: Uuid) -> Result<Option<Payment>, DbError> {
        statement!(self, |conn| begin_approval(id))
    }

    /// `APPROVING` → `READY` (see `store::abandon_approval`).
    pub async fn abandon_approval(&self, id: Uuid) -> Result<Option<Payment>, DbError> {
        statement!(self, |conn| abandon_approval(id))
    }

    /// `APPROVED` → `REFUNDING` if it is `APPROVED`: whether this caller moved it (and so
    /// alone may ask Kakao Pay for the refund), and the payment as it is now.
    pub async fn begin_refund(&self, id: Uuid) -> Result<(bool, Option<Payment>), DbError> {
        with_connection!(&self.0, |conn| begin_refund_on(conn, id))
    }

    /// Notes that the order was cancelled; the order's payments as they are now.
    pub async fn mark_order_cancelled(&self, order_id: Uuid) -> Result<Vec<Payment>, DbError> {
        statement!(self, |conn| mark_order_cancelled(order_id))
    }

    /// Notes that the order asked to close its payment; its payments as they are now.
    pub async fn mark_close_requested(&self, order_id: Uuid) -> Result<Vec<Payment>, DbError> {
        statement!(self, |conn| mark_close_requested(order_id))
    }

    /// Notes that an approve of `id` had an unclear outcome.
    pub async fn mark_approval_unclear(&self, id: Uuid) -> Result<(), DbError> {
        statement!(self, |conn| mark_approval_unclear(id))
    }

    /// The payments the reconciler should look at now (see `store::unsettled`).
    pub async fn unsettled(
        &self,
        cutoff: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<Payment>, DbError> {
        statement!(self, |conn| unsettled(cutoff, limit))
    }

    /// The reconciler checks `id` again not before `next`.
    pub async fn schedule_check(&self, id: Uuid, next: DateTime<Utc>) -> Result<(), DbError> {
        statement!(self, |conn| schedule_check(id, next))
    }

    /// Closes the order's payments that can still be paid; returns how many.
    pub async fn close_unpaid(&self, order_id: Uuid) -> Result<u64, DbError> {
        statement!(self, |conn| close_unpaid(order_id))
    }

    pub async fn find(&self, id: Uuid) -> Result<Option<Payment>, DbError> {
        statement!(self, |conn| find(id))
    }

    pub async fn find_by_order(&self, order_id: Uuid) -> Result<Vec<Payment>, DbError> {
        statement!(self, |conn| find_by_order(order_id))
    }

    pub async fn gateway_calls(&self, payment_id: Uuid) -> Result<Vec<GatewayCall>, DbError> {
        statement!(self, |conn| gateway_calls_of(payment_id))
    }

    pub async fn record_gateway_call(&self, call: NewGatewayCall) -> Result<(), DbError> {
        statement!(self, |conn| record_gateway_call(&call))
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
        let outbox = outbox.clone();
        transaction!(&self.0, |conn| commit_on(
            conn,
            &outbox,
            cause.as_ref(),
            id,
            &transition,
            announce
        ))
    }

    /// Enqueues `event` alone: an answer that changes no payment (there is none).
    pub async fn announce(&self, outbox: &Outbox, event: Event) -> Result<(), DbError> {
        let outbox = outbox.clone();
        with_connection!(&self.0, |conn| async {
            Ok::<_, DbError>(outbox.enqueue(conn, &event).await?)
        })
    }

    /// `SELECT 1`: the database answers.
    pub async fn ping(&self) -> Result<(), DbError> {
        self.0.ping().await
    }
}

/// The adapter of `case`: the async pool in case 4 (sized by
/// `PAYMENT_ASYNC_DB_POOL_SIZE`), else the blocking pool the gauges use too.
pub fn for_case(
    case: shared_events::Case,
    blocking: &PgPool,
    settings: &crate::config::Settings,
) -> PaymentDb {
    use secrecy::ExposeSecret;
    PaymentDb(Database::for_case(
        "payment",
        case,
        blocking,
        settings.database_url.expose_secret(),
        settings.async_db_pool_size,
    ))
}
