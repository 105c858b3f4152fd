//! The order store port: every database use case of the request and event paths, at the
//! granularity of one transaction, on either PostgreSQL driver.
//!
//! Each use case is written once, as async code over an [`OrderStatements`] connection,
//! and run by `shared_events::sql` on the driver the composition root chose
//! ([`for_case`]): Diesel on r2d2 through the blocking pool (cases 1–3), or
//! diesel-async on deadpool, awaited on the executor (case 4; transactions run to
//! completion on a task of their own, so a client that disconnects never leaves one
//! half-open). The deadline sweep and the gauges stay on the blocking pool in every case
//! (`deadline`, `gauges`).

use crate::catalog::Product;
use crate::domain::{NewOrder, Trigger};
use crate::saga::{self, Applied, Facts, SagaError};
use crate::store::{KeyRecord, Order, OrderStatements, SagaStep};
use chrono::{DateTime, Utc};
use shared_events::db::{DbError, PgPool};
use shared_events::outbox::Outbox;
use shared_events::sql::Database;
use shared_events::{transaction, with_connection, Event, OrderPlaced};
use uuid::Uuid;

/// Where order-service's request and event paths run their SQL.
#[derive(Clone)]
pub struct OrderDb(Database);

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

/// What a new order is stored with.
pub struct Placing {
    pub id: Uuid,
    pub order: NewOrder,
    pub token_hash: Vec<u8>,
    pub payment_deadline: DateTime<Utc>,
    /// The request's idempotency key, recorded with the order.
    pub key: Option<KeyRecord>,
}

/// What placing stored.
pub enum Stored {
    Placed(Box<Order>),
    /// Nothing: the idempotency key was taken, by the request of this record.
    KeyTaken(KeyRecord),
}

/// The order, its `OrderPlaced` and its first timeline step, in the caller's transaction;
/// nothing if its idempotency key is taken (claimed first, so a concurrent twin waits).
async fn store_placed<C: OrderStatements>(
    conn: &mut C,
    outbox: &Outbox,
    placing: &Placing,
) -> Result<Stored, DbError> {
    let Placing {
        id,
        order,
        token_hash,
        payment_deadline,
        key,
    } = placing;
    if let Some(key) = key {
        if !conn.claim_key(key).await? {
            let taken = conn.key_record(&key.key_hash).await?;
            return Ok(Stored::KeyTaken(
                taken.ok_or(diesel::result::Error::NotFound)?,
            ));
        }
    }
    conn.insert(*id, order, token_hash, *payment_deadline)
        .await?;
    let stored = conn
        .find(*id, false)
        .await?
        .ok_or(diesel::result::Error::NotFound)?;
    let event = placed_event(&stored, *payment_deadline);
    outbox.enqueue(conn, &event).await?;
    conn.record_step(&event, "order", "published").await?;
    Ok(Stored::Placed(Box::new(stored)))
}

/// The order with its timeline, or `None`.
async fn with_steps<C: OrderStatements>(
    conn: &mut C,
    id: Uuid,
) -> Result<Option<(Order, Vec<SagaStep>)>, DbError> {
    let Some(order) = conn.find(id, false).await? else {
        return Ok(None);
    };
    let steps = conn.steps(id).await?;
    Ok(Some((order, steps)))
}

impl OrderDb {
    /// Stores the order (with its token's hash and idempotency key), its lines, its
    /// `OrderPlaced` event (outbox) and the first timeline step in one transaction;
    /// returns the order as stored, or the key's earlier request.
    pub async fn place(&self, outbox: &Outbox, placing: Placing) -> Result<Stored, DbError> {
        let outbox = outbox.clone();
        transaction!(&self.0, |conn| store_placed(conn, &outbox, &placing))
    }

    /// The catalog; only the products `skus` when given.
    pub async fn products(&self, skus: Option<Vec<String>>) -> Result<Vec<Product>, DbError> {
        with_connection!(&self.0, |conn| async {
            Ok::<_, DbError>(conn.products(skus.as_deref()).await?)
        })
    }

    /// The record of an idempotency key, by its hash.
    pub async fn key_record(&self, key_hash: Vec<u8>) -> Result<Option<KeyRecord>, DbError> {
        with_connection!(&self.0, |conn| async {
            Ok::<_, DbError>(conn.key_record(&key_hash).await?)
        })
    }

    /// The order, or `None`.
    pub async fn find(&self, id: Uuid) -> Result<Option<Order>, DbError> {
        with_connection!(&self.0, |conn| async {
            Ok::<_, DbError>(conn.find(id, false).await?)
        })
    }

    /// The order with every step of its saga, oldest first, or `None`.
    pub async fn timeline(&self, id: Uuid) -> Result<Option<(Order, Vec<SagaStep>)>, DbError> {
        with_connection!(&self.0, |conn| with_steps(conn, id))
    }

    /// Notes on the order's timeline that handling `event` failed transiently and will
    /// be retried (a step of its own: the event is not applied yet).
    pub async fn record_retry(&self, event: &Event, outcome: String) -> Result<(), DbError> {
        let event = event.clone();
        with_connection!(&self.0, |conn| async {
            Ok::<_, DbError>(conn.record_step(&event, "payment", &outcome).await?)
        })
    }

    /// The trace order `id` was placed in.
    pub async fn traceparent(&self, id: Uuid) -> Result<Option<String>, DbError> {
        with_connection!(&self.0, |conn| async {
            Ok::<_, DbError>(conn.traceparent(id).await?)
        })
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
        let outbox = outbox.clone();
        transaction!(&self.0, |conn| saga::apply(
            conn, &outbox, order_id, trigger, &facts
        ))
    }

    /// Handles one payment event — inbox claim, state change, outbox, timeline — in one
    /// transaction (see `saga::consume`); true when it enqueued an event.
    pub async fn consume(&self, outbox: &Outbox, event: &Event) -> Result<bool, SagaError> {
        let (outbox, event) = (outbox.clone(), event.clone());
        transaction!(&self.0, |conn| saga::consume(conn, &outbox, &event))
    }

    /// `SELECT 1`: the database answers.
    pub async fn ping(&self) -> Result<(), DbError> {
        self.0.ping().await
    }
}

/// The adapter of `case`: the async pool in case 4 (sized by `ORDER_ASYNC_DB_POOL_SIZE`),
/// else the blocking pool the sweeps and gauges use too.
pub fn for_case(
    case: shared_events::Case,
    blocking: &PgPool,
    settings: &crate::config::Settings,
) -> OrderDb {
    use secrecy::ExposeSecret;
    OrderDb(Database::for_case(
        "order",
        case,
        blocking,
        settings.database_url.expose_secret(),
        settings.async_db_pool_size,
    ))
}
