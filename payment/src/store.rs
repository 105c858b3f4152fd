//! The payment tables and every query on them. Status changes are guarded by the status
//! they come from (`UPDATE … WHERE status = 'READY'`), so two callers racing for the same
//! payment cannot both move it.

use crate::domain::PaymentStatus;
use chrono::{DateTime, Utc};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use serde::Serialize;
use shared_events::OrderSnapshot;
use uuid::Uuid;

diesel::table! {
    payments (id) {
        id -> Uuid,
        order_id -> Uuid,
        status -> Text,
        amount -> Int8,
        item_name -> Text,
        quantity -> Int4,
        partner_user_id -> Text,
        order_snapshot -> Jsonb,
        tid -> Nullable<Text>,
        redirect_url -> Nullable<Text>,
        mobile_redirect_url -> Nullable<Text>,
        payment_method -> Nullable<Text>,
        failure_reason -> Nullable<Text>,
        error_code -> Nullable<Int4>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        ready_at -> Nullable<Timestamptz>,
        approved_at -> Nullable<Timestamptz>,
        failed_at -> Nullable<Timestamptz>,
        refunded_amount -> Nullable<Int8>,
        refunded_at -> Nullable<Timestamptz>,
        traceparent -> Nullable<Text>,
    }
}

diesel::table! {
    gateway_calls (id) {
        id -> Int8,
        payment_id -> Uuid,
        kind -> Text,
        outcome -> Text,
        error_code -> Nullable<Int4>,
        http_status -> Nullable<Int4>,
        latency_ms -> Float8,
        called_at -> Timestamptz,
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Serialize)]
#[diesel(table_name = payments)]
pub struct Payment {
    pub id: Uuid,
    pub order_id: Uuid,
    pub status: String,
    pub amount: i64,
    pub item_name: String,
    pub quantity: i32,
    #[serde(skip)]
    pub partner_user_id: String,
    #[serde(skip)]
    pub order_snapshot: serde_json::Value,
    pub tid: Option<String>,
    pub redirect_url: Option<String>,
    pub mobile_redirect_url: Option<String>,
    pub payment_method: Option<String>,
    pub failure_reason: Option<String>,
    pub error_code: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub ready_at: Option<DateTime<Utc>>,
    pub approved_at: Option<DateTime<Utc>>,
    pub failed_at: Option<DateTime<Utc>>,
    pub refunded_amount: Option<i64>,
    pub refunded_at: Option<DateTime<Utc>>,
    /// The order's trace (W3C `traceparent`), continued by the shopper's return.
    #[serde(skip)]
    pub traceparent: Option<String>,
}

impl Payment {
    pub fn status(&self) -> PaymentStatus {
        self.status
            .parse()
            .expect("the status column only holds known statuses (CHECK constraint)")
    }

    pub fn snapshot(&self) -> OrderSnapshot {
        serde_json::from_value(self.order_snapshot.clone())
            .expect("order_snapshot is written from an OrderSnapshot")
    }

    pub fn tid(&self) -> &str {
        self.tid.as_deref().unwrap_or_default()
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Serialize)]
#[diesel(table_name = gateway_calls)]
pub struct GatewayCall {
    pub kind: String,
    pub outcome: String,
    pub error_code: Option<i32>,
    pub http_status: Option<i32>,
    pub latency_ms: f64,
    pub called_at: DateTime<Utc>,
}

/// A gateway call to record.
#[derive(Debug, Clone)]
pub struct NewGatewayCall {
    pub payment_id: Uuid,
    pub kind: &'static str,
    pub outcome: &'static str,
    pub error_code: Option<i32>,
    pub http_status: Option<i32>,
    pub latency_ms: f64,
}

/// The order's payment, created `REQUESTED` if it has none yet.
pub fn create_requested(
    conn: &mut PgConnection,
    order_id: Uuid,
    order: &OrderSnapshot,
    item_name: &str,
    quantity: i64,
) -> QueryResult<Payment> {
    diesel::insert_into(payments::table)
        .values((
            payments::id.eq(Uuid::now_v7()),
            payments::order_id.eq(order_id),
            payments::status.eq(PaymentStatus::Requested.as_str()),
            payments::amount.eq(order.total_amount),
            payments::item_name.eq(item_name),
            payments::quantity.eq(i32::try_from(quantity).unwrap_or(i32::MAX)),
            payments::partner_user_id.eq(&order.customer_id),
            payments::order_snapshot.eq(serde_json::to_value(order).unwrap_or_default()),
            payments::traceparent.eq(shared_events::telemetry::current_traceparent()),
        ))
        .on_conflict(payments::order_id)
        .do_nothing()
        .execute(conn)?;
    payments::table
        .filter(payments::order_id.eq(order_id))
        .select(Payment::as_select())
        .first(conn)
}

pub fn find(conn: &mut PgConnection, id: Uuid) -> QueryResult<Option<Payment>> {
    payments::table
        .find(id)
        .select(Payment::as_select())
        .first(conn)
        .optional()
}

pub fn find_by_order(conn: &mut PgConnection, order_id: Uuid) -> QueryResult<Vec<Payment>> {
    payments::table
        .filter(payments::order_id.eq(order_id))
        .select(Payment::as_select())
        .load(conn)
}

/// Moves `id` from `from` to `to`, returning the updated payment, or `None` if it was not
/// in `from` (someone else moved it first).
fn transition(
    conn: &mut PgConnection,
    id: Uuid,
    from: PaymentStatus,
    to: PaymentStatus,
) -> QueryResult<Option<Payment>> {
    diesel::update(
        payments::table
            .find(id)
            .filter(payments::status.eq(from.as_str())),
    )
    .set((
        payments::status.eq(to.as_str()),
        payments::updated_at.eq(diesel::dsl::now),
    ))
    .returning(Payment::as_returning())
    .get_result(conn)
    .optional()
}

pub fn mark_ready(
    conn: &mut PgConnection,
    id: Uuid,
    tid: &str,
    redirect_url: &str,
    mobile_redirect_url: &str,
) -> QueryResult<Option<Payment>> {
    let Some(_) = transition(conn, id, PaymentStatus::Requested, PaymentStatus::Ready)? else {
        return Ok(None);
    };
    diesel::update(payments::table.find(id))
        .set((
            payments::tid.eq(tid),
            payments::redirect_url.eq(redirect_url),
            payments::mobile_redirect_url.eq(mobile_redirect_url),
            payments::ready_at.eq(diesel::dsl::now),
        ))
        .returning(Payment::as_returning())
        .get_result(conn)
        .map(Some)
}

/// `READY` → `APPROVING`: only the caller that gets `Some` may call approve.
pub fn begin_approval(conn: &mut PgConnection, id: Uuid) -> QueryResult<Option<Payment>> {
    transition(conn, id, PaymentStatus::Ready, PaymentStatus::Approving)
}

/// `APPROVING` → `READY`: the approve certainly did not happen; the shopper may retry.
pub fn abandon_approval(conn: &mut PgConnection, id: Uuid) -> QueryResult<Option<Payment>> {
    transition(conn, id, PaymentStatus::Approving, PaymentStatus::Ready)
}

pub fn mark_approved(
    conn: &mut PgConnection,
    id: Uuid,
    payment_method: Option<&str>,
    approved_at: DateTime<Utc>,
) -> QueryResult<Option<Payment>> {
    let Some(_) = transition(conn, id, PaymentStatus::Approving, PaymentStatus::Approved)? else {
        return Ok(None);
    };
    diesel::update(payments::table.find(id))
        .set((
            payments::payment_method.eq(payment_method),
            payments::approved_at.eq(approved_at),
        ))
        .returning(Payment::as_returning())
        .get_result(conn)
        .map(Some)
}

/// `reason` is a `PaymentFailureReason` in snake case, or `order_cancelled`.
pub fn mark_failed(
    conn: &mut PgConnection,
    id: Uuid,
    from: PaymentStatus,
    reason: &str,
    error_code: Option<i32>,
) -> QueryResult<Option<Payment>> {
    let Some(_) = transition(conn, id, from, PaymentStatus::Failed)? else {
        return Ok(None);
    };
    diesel::update(payments::table.find(id))
        .set((
            payments::failure_reason.eq(reason),
            payments::error_code.eq(error_code),
            payments::failed_at.eq(diesel::dsl::now),
        ))
        .returning(Payment::as_returning())
        .get_result(conn)
        .map(Some)
}

/// Payments still `APPROVING` or `REFUNDING` since before `cutoff`.
pub fn stuck(
    conn: &mut PgConnection,
    cutoff: DateTime<Utc>,
    limit: i64,
) -> QueryResult<Vec<Payment>> {
    let statuses = [
        PaymentStatus::Approving.as_str(),
        PaymentStatus::Refunding.as_str(),
    ];
    payments::table
        .filter(payments::status.eq_any(statuses))
        .filter(payments::updated_at.lt(cutoff))
        .order(payments::updated_at)
        .limit(limit)
        .select(Payment::as_select())
        .load(conn)
}

/// `APPROVED` → `REFUNDING`: only the caller that gets `Some` may call Kakao Pay cancel.
pub fn begin_refund(conn: &mut PgConnection, id: Uuid) -> QueryResult<Option<Payment>> {
    transition(conn, id, PaymentStatus::Approved, PaymentStatus::Refunding)
}

pub fn mark_refunded(
    conn: &mut PgConnection,
    id: Uuid,
    amount: i64,
) -> QueryResult<Option<Payment>> {
    let Some(_) = transition(conn, id, PaymentStatus::Refunding, PaymentStatus::Refunded)? else {
        return Ok(None);
    };
    diesel::update(payments::table.find(id))
        .set((
            payments::refunded_amount.eq(amount),
            payments::refunded_at.eq(diesel::dsl::now),
        ))
        .returning(Payment::as_returning())
        .get_result(conn)
        .map(Some)
}

pub fn record_gateway_call(conn: &mut PgConnection, call: &NewGatewayCall) -> QueryResult<()> {
    diesel::insert_into(gateway_calls::table)
        .values((
            gateway_calls::payment_id.eq(call.payment_id),
            gateway_calls::kind.eq(call.kind),
            gateway_calls::outcome.eq(call.outcome),
            gateway_calls::error_code.eq(call.error_code),
            gateway_calls::http_status.eq(call.http_status),
            gateway_calls::latency_ms.eq(call.latency_ms),
        ))
        .execute(conn)
        .map(|_| ())
}

pub fn gateway_calls_of(
    conn: &mut PgConnection,
    payment_id: Uuid,
) -> QueryResult<Vec<GatewayCall>> {
    gateway_calls::table
        .filter(gateway_calls::payment_id.eq(payment_id))
        .order(gateway_calls::id)
        .select(GatewayCall::as_select())
        .load(conn)
}

/// How many payments are in each status (statuses without payments are absent).
pub fn count_by_status(conn: &mut PgConnection) -> QueryResult<Vec<(String, i64)>> {
    payments::table
        .group_by(payments::status)
        .select((payments::status, diesel::dsl::count_star()))
        .load(conn)
}
