//! The order tables and every query on them. Functions take a connection so the caller
//! decides the transaction; nothing here commits on its own.

use crate::catalog::{Product, ProductName};
use crate::domain::{NewOrder, OrderLine, OrderStatus};
use crate::schema::{order_idempotency_keys, order_items, orders, products, saga_steps};
use chrono::{DateTime, Utc};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use serde::Serialize;
use shared_events::{CancelReason, LineItem, OrderSnapshot, PaymentReady};
use uuid::Uuid;

shared_events::text_column_enum!(OrderStatus);

/// One step of an order's saga, for the timeline.
#[derive(Debug, Clone, Queryable, Selectable, Serialize, utoipa::ToSchema)]
#[diesel(table_name = saga_steps)]
pub struct SagaStep {
    pub event_id: Uuid,
    pub event_type: String,
    pub service: String,
    pub outcome: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = orders)]
pub struct OrderRow {
    pub id: Uuid,
    pub customer_id: String,
    pub customer_email: String,
    pub locale: String,
    pub status: OrderStatus,
    pub total_amount: i64,
    pub cancel_reason: Option<String>,
    pub refunded_amount: Option<i64>,
    pub payment_deadline: DateTime<Utc>,
    pub payment_id: Option<Uuid>,
    pub payment_tid: Option<String>,
    pub payment_status: Option<String>,
    pub payment_redirect_url: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    pub cancelled_at: Option<DateTime<Utc>>,
    /// The trace the order was placed in (W3C `traceparent`).
    pub traceparent: Option<String>,
    /// SHA-256 of the shopper's order token (`crate::access`); never shown.
    pub access_token_hash: Option<Vec<u8>>,
}

#[derive(Debug, Clone, Queryable, Selectable, Serialize, utoipa::ToSchema)]
#[diesel(table_name = order_items)]
pub struct ItemRow {
    #[serde(skip)]
    pub line_no: i32,
    pub name: String,
    pub quantity: i32,
    pub unit_price: i64,
    /// The product sold (`None`: a free-form line).
    pub sku: Option<String>,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = products)]
struct ProductRow {
    sku: String,
    name_ko: String,
    name_en: String,
    price: i64,
    in_stock: bool,
}

impl From<ProductRow> for Product {
    fn from(row: ProductRow) -> Self {
        Product {
            sku: row.sku,
            name: ProductName {
                ko: row.name_ko,
                en: row.name_en,
            },
            price: row.price,
            currency: "KRW",
            in_stock: row.in_stock,
        }
    }
}

/// What is stored of an idempotency key (`crate::idempotency`), found again by its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub key_hash: Vec<u8>,
    pub request_hash: Vec<u8>,
    pub order_id: Uuid,
    pub token_salt: Vec<u8>,
}

/// A key's row as selected: hash, request hash, order, salt.
type KeyColumns = (Vec<u8>, Vec<u8>, Uuid, Vec<u8>);

fn key_record((key_hash, request_hash, order_id, token_salt): KeyColumns) -> KeyRecord {
    KeyRecord {
        key_hash,
        request_hash,
        order_id,
        token_salt,
    }
}

/// An order with its lines.
#[derive(Debug, Clone)]
pub struct Order {
    pub row: OrderRow,
    pub items: Vec<ItemRow>,
}

impl Order {
    pub fn status(&self) -> OrderStatus {
        self.row.status
    }

    pub fn cancel_reason(&self) -> Option<CancelReason> {
        let reason = self.row.cancel_reason.clone()?;
        serde_json::from_value(serde_json::Value::String(reason)).ok()
    }

    /// What later saga steps need to know about this order.
    pub fn snapshot(&self) -> OrderSnapshot {
        OrderSnapshot {
            customer_id: self.row.customer_id.clone(),
            customer_email: self.row.customer_email.clone(),
            locale: self.row.locale.clone(),
            items: self
                .items
                .iter()
                .map(|item| LineItem {
                    name: item.name.clone(),
                    quantity: u32::try_from(item.quantity).unwrap_or_default(),
                    unit_price: item.unit_price,
                })
                .collect(),
            total_amount: self.row.total_amount,
        }
    }
}

/// The row change a saga decision makes (chosen by `saga::plan`, made by
/// [`OrderStatements::apply_change`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// `COMPLETED`, paid by `payment_id`.
    Complete { payment_id: Uuid },
    /// `CANCELLED` for `reason` (nothing was paid).
    Cancel(CancelReason),
    /// `PENDING_PAYMENT` → `CLOSING_PAYMENT`: payment has been asked to close the payment.
    ClosePayment,
    /// `COMPLETED` → `CANCELLING`: the refund has been asked for.
    StartRefund(CancelReason),
    /// `CANCELLED`, `amount` refunded.
    FinishRefund { amount: i64 },
    /// The row stays as it is (a late payment of a cancelled order is given back).
    Nothing,
}

fn reason_text(reason: CancelReason) -> String {
    serde_json::to_value(reason)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// The statements of order's request and event paths, on a connection of either driver
/// (`shared_events::sql`), inside the caller's transaction. Implemented for
/// `PgConnection` (cases 1–3) and `diesel_async::AsyncPgConnection` (case 4) from one
/// source ([`order_statements!`]), so the SQL cannot drift between the two drivers.
#[shared_events::sql::async_trait]
pub trait OrderStatements: shared_events::sql::Connection {
    /// Stores a new order `PENDING_PAYMENT` and its lines.
    async fn insert(
        &mut self,
        id: Uuid,
        order: &NewOrder,
        token_hash: &[u8],
        deadline: DateTime<Utc>,
    ) -> QueryResult<()>;
    /// The order, or `None`. With `for_update`, the row stays locked until the transaction
    /// ends, so two events for one order cannot settle it concurrently.
    async fn find(&mut self, id: Uuid, for_update: bool) -> QueryResult<Option<Order>>;
    /// The order learns its payment and where the shopper pays.
    async fn record_payment_ready(&mut self, id: Uuid, ready: &PaymentReady) -> QueryResult<()>;
    /// `COMPLETED`, paid by `payment_id`.
    async fn complete(&mut self, id: Uuid, payment_id: Uuid) -> QueryResult<()>;
    /// `CANCELLED` for `reason`.
    async fn cancel(&mut self, id: Uuid, reason: CancelReason) -> QueryResult<()>;
    /// `CLOSING_PAYMENT`: the deadline passed; payment is asked whether the shopper paid.
    async fn close_payment(&mut self, id: Uuid) -> QueryResult<()>;
    /// The payment's status as the order last heard it.
    async fn record_payment_status(&mut self, id: Uuid, payment_status: &str) -> QueryResult<()>;
    /// `COMPLETED` → `CANCELLING`: the refund has been asked for.
    async fn start_refund(&mut self, id: Uuid, reason: CancelReason) -> QueryResult<()>;
    /// The money is back with the shopper: `CANCELLED`, refunded.
    async fn finish_refund(&mut self, id: Uuid, amount: i64) -> QueryResult<()>;
    /// One step of the order's timeline.
    async fn record_step(
        &mut self,
        event: &shared_events::Event,
        service: &str,
        outcome: &str,
    ) -> QueryResult<()>;
    /// The order's timeline, oldest first.
    async fn steps(&mut self, order_id: Uuid) -> QueryResult<Vec<SagaStep>>;
    /// The trace order `id` was placed in (`None` if the order or its trace is unknown).
    async fn traceparent(&mut self, id: Uuid) -> QueryResult<Option<String>>;
    /// Makes the row change a saga decision asks for (see [`Change`]).
    async fn apply_change(&mut self, id: Uuid, change: &Change) -> QueryResult<()>;
    /// The catalog in the storefront's order; only the products `skus` when given.
    async fn products(&mut self, skus: Option<&[String]>) -> QueryResult<Vec<Product>>;
    /// Records a new order's idempotency key; `false` when the key is taken. A twin
    /// request placing the same key concurrently makes this wait until the twin's
    /// transaction ends (`false` if it committed).
    async fn claim_key(&mut self, record: &KeyRecord) -> QueryResult<bool>;
    /// The record of the key whose SHA-256 is `key_hash`.
    async fn key_record(&mut self, key_hash: &[u8]) -> QueryResult<Option<KeyRecord>>;
}

/// [`OrderStatements`] for one driver's connection `$conn`: the Diesel query values are
/// the same for both; `$run!` is the only difference (`.await` or not).
macro_rules! order_statements {
    ($conn:ty, $run:ident) => {
        #[shared_events::sql::async_trait]
        impl OrderStatements for $conn {
            async fn insert(
                &mut self,
                id: Uuid,
                order: &NewOrder,
                token_hash: &[u8],
                deadline: DateTime<Utc>,
            ) -> QueryResult<()> {
                let conn = self;
                $run!(diesel::insert_into(orders::table)
                    .values((
                        orders::id.eq(id),
                        orders::customer_id.eq(&order.customer_id),
                        orders::customer_email.eq(&order.customer_email),
                        orders::locale.eq(order.locale.as_str()),
                        orders::status.eq(OrderStatus::PendingPayment),
                        orders::total_amount.eq(order.total_amount),
                        orders::payment_deadline.eq(deadline),
                        orders::traceparent.eq(shared_events::telemetry::current_traceparent()),
                        orders::access_token_hash.eq(token_hash),
                    ))
                    .execute(conn))?;
                let lines: Vec<_> = order
                    .items
                    .iter()
                    .zip(1..)
                    .map(|(line, line_no): (&OrderLine, i32)| {
                        (
                            order_items::order_id.eq(id),
                            order_items::line_no.eq(line_no),
                            order_items::name.eq(&line.item.name),
                            order_items::quantity
                                .eq(i32::try_from(line.item.quantity).unwrap_or(i32::MAX)),
                            order_items::unit_price.eq(line.item.unit_price),
                            order_items::sku.eq(line.sku.as_deref()),
                        )
                    })
                    .collect();
                $run!(diesel::insert_into(order_items::table)
                    .values(&lines)
                    .execute(conn))?;
                Ok(())
            }

            /// The order, or `None`. With `for_update`, the row stays locked until the transaction
            /// ends, so two events for one order cannot settle it concurrently.
            async fn find(&mut self, id: Uuid, for_update: bool) -> QueryResult<Option<Order>> {
                let conn = self;
                let query = orders::table.find(id).select(OrderRow::as_select());
                let row = if for_update {
                    $run!(query.for_update().first::<OrderRow>(conn)).optional()?
                } else {
                    $run!(query.first::<OrderRow>(conn)).optional()?
                };
                let Some(row) = row else { return Ok(None) };
                let items = $run!(order_items::table
                    .filter(order_items::order_id.eq(id))
                    .order(order_items::line_no)
                    .select(ItemRow::as_select())
                    .load::<ItemRow>(conn))?;
                Ok(Some(Order { row, items }))
            }

            async fn record_payment_ready(
                &mut self,
                id: Uuid,
                ready: &PaymentReady,
            ) -> QueryResult<()> {
                let conn = self;
                $run!(diesel::update(orders::table.find(id))
                    .set((
                        orders::payment_id.eq(ready.payment_id),
                        orders::payment_tid.eq(&ready.tid),
                        orders::payment_status.eq("READY"),
                        orders::payment_redirect_url.eq(&ready.redirect_url),
                        orders::updated_at.eq(diesel::dsl::now),
                    ))
                    .execute(conn))
                .map(|_| ())
            }

            async fn complete(&mut self, id: Uuid, payment_id: Uuid) -> QueryResult<()> {
                let conn = self;
                $run!(diesel::update(orders::table.find(id))
                    .set((
                        orders::status.eq(OrderStatus::Completed),
                        orders::payment_id.eq(payment_id),
                        orders::payment_status.eq("APPROVED"),
                        orders::completed_at.eq(diesel::dsl::now),
                        orders::updated_at.eq(diesel::dsl::now),
                    ))
                    .execute(conn))
                .map(|_| ())
            }

            async fn cancel(&mut self, id: Uuid, reason: CancelReason) -> QueryResult<()> {
                let conn = self;
                $run!(diesel::update(orders::table.find(id))
                    .set((
                        orders::status.eq(OrderStatus::Cancelled),
                        orders::cancel_reason.eq(reason_text(reason)),
                        orders::cancelled_at.eq(diesel::dsl::now),
                        orders::updated_at.eq(diesel::dsl::now),
                    ))
                    .execute(conn))
                .map(|_| ())
            }

            /// `CLOSING_PAYMENT`: the deadline passed; payment is asked whether the shopper paid.
            async fn close_payment(&mut self, id: Uuid) -> QueryResult<()> {
                let conn = self;
                $run!(diesel::update(orders::table.find(id))
                    .set((
                        orders::status.eq(OrderStatus::ClosingPayment),
                        orders::updated_at.eq(diesel::dsl::now),
                    ))
                    .execute(conn))
                .map(|_| ())
            }

            async fn record_payment_status(
                &mut self,
                id: Uuid,
                payment_status: &str,
            ) -> QueryResult<()> {
                let conn = self;
                $run!(diesel::update(orders::table.find(id))
                    .set((
                        orders::payment_status.eq(payment_status),
                        orders::updated_at.eq(diesel::dsl::now),
                    ))
                    .execute(conn))
                .map(|_| ())
            }

            /// `COMPLETED` → `CANCELLING`: the refund has been asked for.
            async fn start_refund(&mut self, id: Uuid, reason: CancelReason) -> QueryResult<()> {
                let conn = self;
                $run!(diesel::update(orders::table.find(id))
                    .set((
                        orders::status.eq(OrderStatus::Cancelling),
                        orders::cancel_reason.eq(reason_text(reason)),
                        orders::updated_at.eq(diesel::dsl::now),
                    ))
                    .execute(conn))
                .map(|_| ())
            }

            /// The money is back with the shopper: `CANCELLED`, refunded.
            async fn finish_refund(&mut self, id: Uuid, amount: i64) -> QueryResult<()> {
                let conn = self;
                $run!(diesel::update(orders::table.find(id))
                    .set((
                        orders::status.eq(OrderStatus::Cancelled),
                        orders::refunded_amount.eq(amount),
                        orders::payment_status.eq("REFUNDED"),
                        orders::cancelled_at.eq(diesel::dsl::sql::<
                            diesel::sql_types::Nullable<diesel::sql_types::Timestamptz>,
                        >("COALESCE(cancelled_at, now())")),
                        orders::updated_at.eq(diesel::dsl::now),
                    ))
                    .execute(conn))
                .map(|_| ())
            }

            async fn record_step(
                &mut self,
                event: &shared_events::Event,
                service: &str,
                outcome: &str,
            ) -> QueryResult<()> {
                let conn = self;
                $run!(diesel::insert_into(saga_steps::table)
                    .values((
                        saga_steps::order_id.eq(event.order_id),
                        saga_steps::event_id.eq(event.event_id),
                        saga_steps::event_type.eq(event.event_type().as_str()),
                        saga_steps::service.eq(service),
                        saga_steps::outcome.eq(outcome),
                    ))
                    .execute(conn))
                .map(|_| ())
            }

            async fn steps(&mut self, order_id: Uuid) -> QueryResult<Vec<SagaStep>> {
                let conn = self;
                $run!(saga_steps::table
                    .filter(saga_steps::order_id.eq(order_id))
                    .order(saga_steps::id)
                    .select(SagaStep::as_select())
                    .load::<SagaStep>(conn))
            }

            /// The trace order `id` was placed in (`None` if the order or its trace is unknown).
            async fn traceparent(&mut self, id: Uuid) -> QueryResult<Option<String>> {
                let conn = self;
                Ok($run!(orders::table
                    .find(id)
                    .select(orders::traceparent)
                    .first::<Option<String>>(conn))
                .optional()?
                .flatten())
            }

            /// Makes the row change a saga decision asks for (see [`Change`]).
            async fn apply_change(&mut self, id: Uuid, change: &Change) -> QueryResult<()> {
                let conn = self;
                match *change {
                    Change::Complete { payment_id } => conn.complete(id, payment_id).await,
                    Change::Cancel(reason) => conn.cancel(id, reason).await,
                    Change::ClosePayment => conn.close_payment(id).await,
                    Change::StartRefund(reason) => conn.start_refund(id, reason).await,
                    Change::FinishRefund { amount } => conn.finish_refund(id, amount).await,
                    Change::Nothing => Ok(()),
                }
            }

            async fn products(&mut self, skus: Option<&[String]>) -> QueryResult<Vec<Product>> {
                let conn = self;
                let mut query = products::table
                    .order((products::position, products::sku))
                    .select(ProductRow::as_select())
                    .into_boxed();
                if let Some(skus) = skus {
                    query = query.filter(products::sku.eq_any(skus));
                }
                let rows = $run!(query.load::<ProductRow>(conn))?;
                Ok(rows.into_iter().map(Product::from).collect())
            }

            async fn claim_key(&mut self, record: &KeyRecord) -> QueryResult<bool> {
                let conn = self;
                let inserted = $run!(diesel::insert_into(order_idempotency_keys::table)
                    .values((
                        order_idempotency_keys::key_hash.eq(&record.key_hash),
                        order_idempotency_keys::request_hash.eq(&record.request_hash),
                        order_idempotency_keys::order_id.eq(record.order_id),
                        order_idempotency_keys::token_salt.eq(&record.token_salt),
                    ))
                    .on_conflict_do_nothing()
                    .execute(conn))?;
                Ok(inserted == 1)
            }

            async fn key_record(&mut self, key_hash: &[u8]) -> QueryResult<Option<KeyRecord>> {
                let conn = self;
                let row = $run!(order_idempotency_keys::table
                    .find(key_hash)
                    .select((
                        order_idempotency_keys::key_hash,
                        order_idempotency_keys::request_hash,
                        order_idempotency_keys::order_id,
                        order_idempotency_keys::token_salt,
                    ))
                    .first::<KeyColumns>(conn))
                .optional()?;
                Ok(row.map(key_record))
            }
        }
    };
}

/// Runs a statement on the blocking driver: no `.await`.
macro_rules! blocking {
    ($statement:expr) => {
        $statement
    };
}

order_statements!(PgConnection, blocking);

/// The same statements on the async driver (case 4).
mod nonblocking {
    use super::{
        key_record, order_idempotency_keys, order_items, orders, products, reason_text, saga_steps,
        Change, ItemRow, KeyColumns, KeyRecord, Order, OrderRow, OrderStatements, ProductRow,
        SagaStep,
    };
    use crate::catalog::Product;
    use crate::domain::{NewOrder, OrderLine, OrderStatus};
    use chrono::{DateTime, Utc};
    use diesel::{ExpressionMethods, OptionalExtension, QueryDsl, QueryResult, SelectableHelper};
    use diesel_async::{AsyncPgConnection, RunQueryDsl};
    use shared_events::{CancelReason, PaymentReady};
    use uuid::Uuid;

    /// Runs a statement on the async driver.
    macro_rules! awaited {
        ($statement:expr) => {
            $statement.await
        };
    }

    order_statements!(AsyncPgConnection, awaited);
}

/// Up to `limit` unpaid orders past their deadline, with the trace each was placed in,
/// locked (skipping rows another instance is expiring right now).
pub fn overdue(conn: &mut PgConnection, limit: i64) -> QueryResult<Vec<(Uuid, Option<String>)>> {
    orders::table
        .filter(orders::status.eq(OrderStatus::PendingPayment))
        .filter(orders::payment_deadline.lt(diesel::dsl::now))
        .order(orders::payment_deadline)
        .limit(limit)
        .select((orders::id, orders::traceparent))
        .for_update()
        .skip_locked()
        .load(conn)
}

/// How many orders are in each status (statuses without orders are absent).
pub fn count_by_status(conn: &mut PgConnection) -> QueryResult<Vec<(String, i64)>> {
    orders::table
        .group_by(orders::status)
        .select((orders::status, diesel::dsl::count_star()))
        .load(conn)
}

/// Unpaid orders whose deadline has passed: the deadline sweep should leave none.
pub fn count_overdue(conn: &mut PgConnection) -> QueryResult<i64> {
    orders::table
        .filter(orders::status.eq(OrderStatus::PendingPayment))
        .filter(orders::payment_deadline.lt(diesel::dsl::now))
        .count()
        .get_result(conn)
}

/// Forgets the idempotency keys recorded before `before`; returns how many.
pub fn forget_keys(conn: &mut PgConnection, before: DateTime<Utc>) -> QueryResult<usize> {
    diesel::delete(
        order_idempotency_keys::table.filter(order_idempotency_keys::created_at.lt(before)),
    )
    .execute(conn)
}
