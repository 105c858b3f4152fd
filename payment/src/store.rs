//! The payment tables and every query on them. Status changes are guarded by the status
//! they come from (`UPDATE … WHERE status = 'READY'`), so two callers racing for the same
//! payment cannot both move it.
//!
//! Size: the tables, the `PaymentStatements` trait and its one-source implementation
//! for both drivers: a statement's signature, its guard and its SQL are read together.

use crate::domain::PaymentStatus;
use crate::schema::{gateway_calls, payments};
use chrono::{DateTime, Utc};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use serde::Serialize;
use shared_events::OrderSnapshot;
use uuid::Uuid;

shared_events::text_column_enum!(PaymentStatus);

#[derive(Debug, Clone, Queryable, Selectable, Serialize, utoipa::ToSchema)]
#[diesel(table_name = payments)]
pub struct Payment {
    pub id: Uuid,
    pub order_id: Uuid,
    pub status: PaymentStatus,
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
    /// The order was cancelled: an approval is given back.
    pub order_cancelled_at: Option<DateTime<Utc>>,
    /// The order's deadline passed: the payment can no longer be paid.
    pub close_requested_at: Option<DateTime<Utc>>,
    /// An approve's outcome was unclear at some point.
    pub approval_unclear_at: Option<DateTime<Utc>>,
    /// The reconciler's schedule (see the migration `payments_settling`).
    pub checks: i32,
    pub last_checked_at: Option<DateTime<Utc>>,
    pub next_check_at: Option<DateTime<Utc>>,
}

impl Payment {
    pub fn status(&self) -> PaymentStatus {
        self.status
    }

    pub fn snapshot(&self) -> OrderSnapshot {
        serde_json::from_value(self.order_snapshot.clone())
            .expect("order_snapshot is written from an OrderSnapshot")
    }

    pub fn tid(&self) -> &str {
        self.tid.as_deref().unwrap_or_default()
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Serialize, utoipa::ToSchema)]
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

/// A guarded status change and what it records (made by [`apply_transition`], announced
/// by the event the caller builds from the updated payment).
#[derive(Debug, Clone)]
pub enum Transition {
    /// `REQUESTED` → `READY`: Kakao Pay issued a tid and the page to pay on.
    Ready {
        tid: String,
        redirect_url: String,
        mobile_redirect_url: String,
    },
    /// `from` → `FAILED`; `reason` is a `PaymentFailureReason` in snake case.
    Failed {
        from: PaymentStatus,
        reason: String,
        error_code: Option<i32>,
    },
    /// `APPROVING` → `APPROVED`.
    Approved {
        payment_method: Option<String>,
        approved_at: DateTime<Utc>,
    },
    /// `REFUNDING` → `REFUNDED`.
    Refunded { amount: i64 },
    /// No status change: only an event to announce (an answer about the payment as it is).
    Unchanged,
}

/// The statements of payment's request and event paths, on a connection of either driver
/// (`shared_events::sql`), inside the caller's transaction if it has one. Implemented for
/// `PgConnection` (cases 1–3) and `diesel_async::AsyncPgConnection` (case 4) from one
/// source ([`payment_statements!`]), so the SQL cannot drift between the two drivers.
#[shared_events::sql::async_trait]
pub trait PaymentStatements: shared_events::sql::Connection {
    async fn create_requested(
        &mut self,
        order_id: Uuid,
        order: &OrderSnapshot,
        item_name: &str,
        quantity: i64,
    ) -> QueryResult<Payment>;
    async fn find(&mut self, id: Uuid) -> QueryResult<Option<Payment>>;
    async fn find_by_order(&mut self, order_id: Uuid) -> QueryResult<Vec<Payment>>;
    async fn transition(
        &mut self,
        id: Uuid,
        from: PaymentStatus,
        to: PaymentStatus,
    ) -> QueryResult<Option<Payment>>;
    async fn mark_ready(
        &mut self,
        id: Uuid,
        tid: &str,
        redirect_url: &str,
        mobile_redirect_url: &str,
    ) -> QueryResult<Option<Payment>>;
    async fn begin_approval(&mut self, id: Uuid) -> QueryResult<Option<Payment>>;
    async fn abandon_approval(&mut self, id: Uuid) -> QueryResult<Option<Payment>>;
    async fn mark_approved(
        &mut self,
        id: Uuid,
        payment_method: Option<&str>,
        approved_at: DateTime<Utc>,
    ) -> QueryResult<Option<Payment>>;
    async fn mark_failed(
        &mut self,
        id: Uuid,
        from: PaymentStatus,
        reason: &str,
        error_code: Option<i32>,
    ) -> QueryResult<Option<Payment>>;
    async fn unsettled(&mut self, cutoff: DateTime<Utc>, limit: i64) -> QueryResult<Vec<Payment>>;
    async fn schedule_check(&mut self, id: Uuid, next: DateTime<Utc>) -> QueryResult<()>;
    async fn mark_order_cancelled(&mut self, order_id: Uuid) -> QueryResult<Vec<Payment>>;
    async fn mark_close_requested(&mut self, order_id: Uuid) -> QueryResult<Vec<Payment>>;
    async fn mark_approval_unclear(&mut self, id: Uuid) -> QueryResult<()>;
    async fn begin_refund(&mut self, id: Uuid) -> QueryResult<Option<Payment>>;
    async fn mark_refunded(&mut self, id: Uuid, amount: i64) -> QueryResult<Option<Payment>>;
    async fn apply_transition(
        &mut self,
        id: Uuid,
        transition: &Transition,
    ) -> QueryResult<Option<Payment>>;
    async fn close_unpaid(&mut self, order_id: Uuid) -> QueryResult<u64>;
    async fn record_gateway_call(&mut self, call: &NewGatewayCall) -> QueryResult<()>;
    async fn gateway_calls_of(&mut self, payment_id: Uuid) -> QueryResult<Vec<GatewayCall>>;
}

/// [`PaymentStatements`] for one driver's connection `$conn`: the Diesel query values
/// are the same for both; `$run!` is the only difference (`.await` or not).
macro_rules! payment_statements {
    ($conn:ty, $run:ident) => {
        #[shared_events::sql::async_trait]
        impl PaymentStatements for $conn {
            /// The order's payment, created `REQUESTED` if it has none yet.
            async fn create_requested(
                &mut self,
                order_id: Uuid,
                order: &OrderSnapshot,
                item_name: &str,
                quantity: i64,
            ) -> QueryResult<Payment> {
                let conn = self;
                $run!(diesel::insert_into(payments::table)
                    .values((
                        payments::id.eq(Uuid::now_v7()),
                        payments::order_id.eq(order_id),
                        payments::status.eq(PaymentStatus::Requested),
                        payments::amount.eq(order.total_amount),
                        payments::item_name.eq(item_name),
                        payments::quantity.eq(i32::try_from(quantity).unwrap_or(i32::MAX)),
                        payments::partner_user_id.eq(&order.customer_id),
                        payments::order_snapshot
                            .eq(serde_json::to_value(order).unwrap_or_default()),
                        payments::traceparent.eq(shared_events::telemetry::current_traceparent()),
                    ))
                    .on_conflict(payments::order_id)
                    .do_nothing()
                    .execute(conn))?;
                $run!(payments::table
                    .filter(payments::order_id.eq(order_id))
                    .select(Payment::as_select())
                    .first::<Payment>(conn))
            }

            async fn find(&mut self, id: Uuid) -> QueryResult<Option<Payment>> {
                let conn = self;
                $run!(payments::table
                    .find(id)
                    .select(Payment::as_select())
                    .first::<Payment>(conn))
                .optional()
            }

            async fn find_by_order(&mut self, order_id: Uuid) -> QueryResult<Vec<Payment>> {
                let conn = self;
                $run!(payments::table
                    .filter(payments::order_id.eq(order_id))
                    .select(Payment::as_select())
                    .load::<Payment>(conn))
            }

            /// Moves `id` from `from` to `to`, returning the updated payment, or `None` if it was not
            /// in `from` (someone else moved it first).
            async fn transition(
                &mut self,
                id: Uuid,
                from: PaymentStatus,
                to: PaymentStatus,
            ) -> QueryResult<Option<Payment>> {
                let conn = self;
                $run!(
                    diesel::update(payments::table.find(id).filter(payments::status.eq(from)),)
                        .set((
                            payments::status.eq(to),
                            payments::updated_at.eq(diesel::dsl::now),
                            // A new status starts the reconciler's schedule afresh.
                            payments::checks.eq(0),
                            payments::last_checked_at.eq(None::<DateTime<Utc>>),
                            payments::next_check_at.eq(None::<DateTime<Utc>>),
                        ))
                        .returning(Payment::as_returning())
                        .get_result::<Payment>(conn)
                )
                .optional()
            }

            async fn mark_ready(
                &mut self,
                id: Uuid,
                tid: &str,
                redirect_url: &str,
                mobile_redirect_url: &str,
            ) -> QueryResult<Option<Payment>> {
                let conn = self;
                let Some(_) = conn
                    .transition(id, PaymentStatus::Requested, PaymentStatus::Ready)
                    .await?
                else {
                    return Ok(None);
                };
                $run!(diesel::update(payments::table.find(id))
                    .set((
                        payments::tid.eq(tid),
                        payments::redirect_url.eq(redirect_url),
                        payments::mobile_redirect_url.eq(mobile_redirect_url),
                        payments::ready_at.eq(diesel::dsl::now),
                    ))
                    .returning(Payment::as_returning())
                    .get_result::<Payment>(conn))
                .map(Some)
            }

            /// `READY` → `APPROVING`: only the caller that gets `Some` may call approve.
            async fn begin_approval(&mut self, id: Uuid) -> QueryResult<Option<Payment>> {
                let conn = self;
                conn.transition(id, PaymentStatus::Ready, PaymentStatus::Approving)
                    .await
            }

            /// `APPROVING` → `READY`: the approve certainly did not happen; the shopper may retry.
            async fn abandon_approval(&mut self, id: Uuid) -> QueryResult<Option<Payment>> {
                let conn = self;
                conn.transition(id, PaymentStatus::Approving, PaymentStatus::Ready)
                    .await
            }

            async fn mark_approved(
                &mut self,
                id: Uuid,
                payment_method: Option<&str>,
                approved_at: DateTime<Utc>,
            ) -> QueryResult<Option<Payment>> {
                let conn = self;
                let Some(_) = conn
                    .transition(id, PaymentStatus::Approving, PaymentStatus::Approved)
                    .await?
                else {
                    return Ok(None);
                };
                $run!(diesel::update(payments::table.find(id))
                    .set((
                        payments::payment_method.eq(payment_method),
                        payments::approved_at.eq(approved_at),
                    ))
                    .returning(Payment::as_returning())
                    .get_result::<Payment>(conn))
                .map(Some)
            }

            /// `reason` is a `PaymentFailureReason` in snake case, or `order_cancelled`.
            async fn mark_failed(
                &mut self,
                id: Uuid,
                from: PaymentStatus,
                reason: &str,
                error_code: Option<i32>,
            ) -> QueryResult<Option<Payment>> {
                let conn = self;
                let Some(_) = conn.transition(id, from, PaymentStatus::Failed).await? else {
                    return Ok(None);
                };
                $run!(diesel::update(payments::table.find(id))
                    .set((
                        payments::failure_reason.eq(reason),
                        payments::error_code.eq(error_code),
                        payments::failed_at.eq(diesel::dsl::now),
                    ))
                    .returning(Payment::as_returning())
                    .get_result::<Payment>(conn))
                .map(Some)
            }

            /// Up to `limit` payments the reconciler must settle, due now, least recently
            /// checked first (so payments that keep failing cannot starve the others):
            /// `APPROVING` or `REFUNDING` since before `cutoff` (no live call can still be in
            /// flight), `READY` after an unclear approve (since before `cutoff`) or with its
            /// close left half done, and `APPROVED` whose order was cancelled.
            async fn unsettled(
                &mut self,
                cutoff: DateTime<Utc>,
                limit: i64,
            ) -> QueryResult<Vec<Payment>> {
                let conn = self;
                use diesel::{BoolExpressionMethods, PgSortExpressionMethods};
                let mid_call = payments::status
                    .eq_any([PaymentStatus::Approving, PaymentStatus::Refunding])
                    .and(payments::updated_at.lt(cutoff));
                let ready = payments::status.eq(PaymentStatus::Ready);
                let unclear = ready
                    .and(payments::approval_unclear_at.is_not_null())
                    .and(payments::updated_at.lt(cutoff));
                let closing = payments::status
                    .eq(PaymentStatus::Ready)
                    .and(payments::close_requested_at.is_not_null());
                let to_refund = payments::status
                    .eq(PaymentStatus::Approved)
                    .and(payments::order_cancelled_at.is_not_null());
                $run!(payments::table
                    .filter(mid_call.or(unclear).or(closing).or(to_refund))
                    .filter(
                        payments::next_check_at
                            .is_null()
                            .or(payments::next_check_at.le(diesel::dsl::now)),
                    )
                    .order((
                        payments::last_checked_at.asc().nulls_first(),
                        payments::updated_at
                    ))
                    .limit(limit)
                    .select(Payment::as_select())
                    .load::<Payment>(conn))
            }

            /// The reconciler checked `id` without settling it: not again before `next`.
            async fn schedule_check(&mut self, id: Uuid, next: DateTime<Utc>) -> QueryResult<()> {
                let conn = self;
                $run!(diesel::update(payments::table.find(id))
                    .set((
                        payments::checks.eq(payments::checks + 1),
                        payments::last_checked_at.eq(diesel::dsl::now),
                        payments::next_check_at.eq(next),
                    ))
                    .execute(conn))
                .map(|_| ())
            }

            /// Notes that the order was cancelled; returns the order's payments as they are.
            async fn mark_order_cancelled(&mut self, order_id: Uuid) -> QueryResult<Vec<Payment>> {
                let conn = self;
                $run!(
                    diesel::update(payments::table.filter(payments::order_id.eq(order_id)))
                        .set(payments::order_cancelled_at.eq(diesel::dsl::sql::<
                            diesel::sql_types::Nullable<diesel::sql_types::Timestamptz>,
                        >(
                            "COALESCE(order_cancelled_at, now())"
                        )))
                        .returning(Payment::as_returning())
                        .get_results::<Payment>(conn)
                )
            }

            /// Notes that the order asked to close the payment; returns its payments as they are.
            async fn mark_close_requested(&mut self, order_id: Uuid) -> QueryResult<Vec<Payment>> {
                let conn = self;
                $run!(
                    diesel::update(payments::table.filter(payments::order_id.eq(order_id)))
                        .set(payments::close_requested_at.eq(diesel::dsl::sql::<
                            diesel::sql_types::Nullable<diesel::sql_types::Timestamptz>,
                        >(
                            "COALESCE(close_requested_at, now())"
                        )))
                        .returning(Payment::as_returning())
                        .get_results::<Payment>(conn)
                )
            }

            /// Notes that an approve of `id` had an unclear outcome.
            async fn mark_approval_unclear(&mut self, id: Uuid) -> QueryResult<()> {
                let conn = self;
                $run!(diesel::update(payments::table.find(id))
                    .set(payments::approval_unclear_at.eq(diesel::dsl::sql::<
                        diesel::sql_types::Nullable<diesel::sql_types::Timestamptz>,
                    >(
                        "COALESCE(approval_unclear_at, now())"
                    )))
                    .execute(conn))
                .map(|_| ())
            }

            /// `APPROVED` → `REFUNDING`: only the caller that gets `Some` may call Kakao Pay cancel.
            async fn begin_refund(&mut self, id: Uuid) -> QueryResult<Option<Payment>> {
                let conn = self;
                conn.transition(id, PaymentStatus::Approved, PaymentStatus::Refunding)
                    .await
            }

            async fn mark_refunded(
                &mut self,
                id: Uuid,
                amount: i64,
            ) -> QueryResult<Option<Payment>> {
                let conn = self;
                let Some(_) = conn
                    .transition(id, PaymentStatus::Refunding, PaymentStatus::Refunded)
                    .await?
                else {
                    return Ok(None);
                };
                $run!(diesel::update(payments::table.find(id))
                    .set((
                        payments::refunded_amount.eq(amount),
                        payments::refunded_at.eq(diesel::dsl::now),
                    ))
                    .returning(Payment::as_returning())
                    .get_result::<Payment>(conn))
                .map(Some)
            }

            /// Makes the guarded status change `transition` describes; `None` when the payment was
            /// not in the status it comes from.
            async fn apply_transition(
                &mut self,
                id: Uuid,
                transition: &Transition,
            ) -> QueryResult<Option<Payment>> {
                let conn = self;
                match transition {
                    Transition::Ready {
                        tid,
                        redirect_url,
                        mobile_redirect_url,
                    } => {
                        conn.mark_ready(id, tid, redirect_url, mobile_redirect_url)
                            .await
                    }
                    Transition::Failed {
                        from,
                        reason,
                        error_code,
                    } => conn.mark_failed(id, *from, reason, *error_code).await,
                    Transition::Approved {
                        payment_method,
                        approved_at,
                    } => {
                        conn.mark_approved(id, payment_method.as_deref(), *approved_at)
                            .await
                    }
                    Transition::Refunded { amount } => conn.mark_refunded(id, *amount).await,
                    Transition::Unchanged => conn.find(id).await,
                }
            }

            /// Closes the order's payments that can still be paid (`REQUESTED`, `READY` →
            /// `FAILED`, `order_cancelled`); returns how many.
            async fn close_unpaid(&mut self, order_id: Uuid) -> QueryResult<u64> {
                let conn = self;
                let mut closed = 0;
                for payment in conn.find_by_order(order_id).await? {
                    for from in [PaymentStatus::Requested, PaymentStatus::Ready] {
                        closed += conn
                            .mark_failed(payment.id, from, "order_cancelled", None)
                            .await?
                            .map_or(0, |_| 1);
                    }
                }
                Ok(closed)
            }

            async fn record_gateway_call(&mut self, call: &NewGatewayCall) -> QueryResult<()> {
                let conn = self;
                $run!(diesel::insert_into(gateway_calls::table)
                    .values((
                        gateway_calls::payment_id.eq(call.payment_id),
                        gateway_calls::kind.eq(call.kind),
                        gateway_calls::outcome.eq(call.outcome),
                        gateway_calls::error_code.eq(call.error_code),
                        gateway_calls::http_status.eq(call.http_status),
                        gateway_calls::latency_ms.eq(call.latency_ms),
                    ))
                    .execute(conn))
                .map(|_| ())
            }

            async fn gateway_calls_of(
                &mut self,
                payment_id: Uuid,
            ) -> QueryResult<Vec<GatewayCall>> {
                let conn = self;
                $run!(gateway_calls::table
                    .filter(gateway_calls::payment_id.eq(payment_id))
                    .order(gateway_calls::id)
                    .select(GatewayCall::as_select())
                    .load::<GatewayCall>(conn))
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

payment_statements!(PgConnection, blocking);

/// The same statements on the async driver (case 4).
mod nonblocking {
    use super::{
        gateway_calls, payments, GatewayCall, NewGatewayCall, Payment, PaymentStatements,
        Transition,
    };
    use crate::domain::PaymentStatus;
    use chrono::{DateTime, Utc};
    use diesel::{ExpressionMethods, OptionalExtension, QueryDsl, QueryResult, SelectableHelper};
    use diesel_async::{AsyncPgConnection, RunQueryDsl};
    use shared_events::OrderSnapshot;
    use uuid::Uuid;

    /// Runs a statement on the async driver.
    macro_rules! awaited {
        ($statement:expr) => {
            $statement.await
        };
    }

    payment_statements!(AsyncPgConnection, awaited);
}

/// How many payments are in each status (statuses without payments are absent).
pub fn count_by_status(conn: &mut PgConnection) -> QueryResult<Vec<(String, i64)>> {
    payments::table
        .group_by(payments::status)
        .select((payments::status, diesel::dsl::count_star()))
        .load(conn)
}
