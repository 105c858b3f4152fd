//! The payment side of the saga: starting a checkout when an order is placed, and the
//! three ways the shopper comes back from Kakao Pay.
//!
//! Each state change is written with its event in one transaction and guarded by the
//! status it comes from, so a redelivered `OrderPlaced` or a refreshed callback page never
//! charges twice: only the caller that moves a payment `READY` → `APPROVING` calls
//! `approve`, and an unclear approve outcome is settled by asking Kakao Pay (`order`),
//! never by assuming failure.

use crate::domain::{self, PaymentStatus};
use crate::gateway::{CallbackUrls, Gateway};
use crate::persistence::PaymentDb;
use crate::store::{self, Payment, Transition};
use chrono::Utc;
use kakaopay::KakaoPayError;
use shared_events::db::DbError;
use shared_events::kafka::{EventHandler, HandlerError};
use shared_events::outbox::Outbox;
use shared_events::retry::Backoff;
use shared_events::{
    Event, EventBody, OrderPlaced, PaymentApproved, PaymentCloseOutcome, PaymentClosed,
    PaymentFailed, PaymentFailureReason, PaymentReady, PaymentRefunded, RefundRequested,
};
use std::sync::Arc;
use tracing::Instrument;
use uuid::Uuid;

mod closing;
mod reconcile;
mod refund;

/// Why a shopper's step of the checkout could not be taken. The HTTP mapping is in
/// `error.rs`.
#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    #[error("no such payment")]
    UnknownPayment,
    /// A wrong or early `pg_token`: nothing happened, the payment can still be paid.
    #[error("the pg_token is not valid for this payment")]
    WrongPgToken,
    /// Kakao Pay could not be reached and certainly applied nothing.
    #[error("Kakao Pay cannot be reached")]
    GatewayUnavailable,
    /// Kakao Pay may have charged the shopper but has not confirmed it yet.
    #[error("the payment's outcome is not known yet")]
    OutcomePending,
    #[error(transparent)]
    Store(#[from] DbError),
}

pub struct Checkout {
    /// Where the use cases run their SQL (the blocking pool, or the async one in case 4).
    pub db: PaymentDb,
    pub outbox: Outbox,
    pub gateway: Gateway,
    pub urls: CallbackUrls,
    /// How long the reconciler leaves a payment it could not settle before it checks it
    /// again (grows with each check, with jitter).
    pub recheck: Backoff,
}

impl Checkout {
    /// `OrderPlaced` → Kakao Pay `ready` → `READY` + `PaymentReady` (or `FAILED` +
    /// `PaymentFailed` when the gateway refuses). An unreachable gateway is an error for
    /// the caller to retry: the payment stays `REQUESTED`.
    pub async fn start(
        &self,
        placed_event: &Event,
        placed: &OrderPlaced,
    ) -> Result<(), StartError> {
        let order = placed.order.clone();
        let order_id = placed_event.order_id;
        let (name, quantity) = (domain::item_name(&order), domain::quantity(&order));
        let payment = self
            .db
            .create_requested(order_id, order, name, quantity)
            .await?;
        if payment.status() != PaymentStatus::Requested {
            return Ok(()); // a redelivery: this order's checkout already went further
        }
        let cause = placed_event.clone();
        match self.gateway.ready(&payment, &self.urls).await {
            Ok(ready) => {
                let transition = Transition::Ready {
                    tid: ready.tid.clone(),
                    redirect_url: ready.next_redirect_pc_url.clone(),
                    mobile_redirect_url: ready.next_redirect_mobile_url.clone(),
                };
                let follow = cause.clone();
                let announce = move |p: &Payment| {
                    follow.follow_up(PaymentReady {
                        payment_id: p.id,
                        tid: ready.tid,
                        redirect_url: ready.next_redirect_pc_url,
                        mobile_redirect_url: Some(ready.next_redirect_mobile_url),
                    })
                };
                if let Some(p) = self
                    .commit(Some(cause), payment.id, transition, announce)
                    .await?
                {
                    tracing::info!(
                        order_id = %p.order_id, payment_id = %p.id, tid = p.tid(),
                        "Payment ready; waiting for the shopper."
                    );
                }
            }
            Err(error) if error.is_transient() || error.outcome_unknown() => {
                // Kakao Pay is down or slow: the order waits, it is not failed for it.
                // (A `ready` whose answer was lost leaves an unused tid, which expires.)
                return Err(StartError::GatewayUnavailable(error));
            }
            Err(error) => {
                tracing::warn!(order_id = %payment.order_id, %error, "Kakao Pay refused ready.");
                self.fail(
                    &payment,
                    PaymentStatus::Requested,
                    PaymentFailureReason::Rejected,
                    &error,
                    Some(cause),
                )
                .await?;
            }
        }
        Ok(())
    }

    /// The shopper came back to the approval URL with `pg_token`. Kakao Pay's redirects
    /// carry no trace context: the approval continues the order's trace, stored with the
    /// payment.
    pub async fn approve(
        &self,
        payment_id: Uuid,
        pg_token: &str,
    ) -> Result<Payment, CheckoutError> {
        let begun = self.db.begin_approval(payment_id).await?;
        let payment = match begun {
            Some(payment) => {
                let span = payment_span("shopper approved", &payment);
                self.approve_begun(payment, pg_token)
                    .instrument(span)
                    .await?
            }
            // Not READY: a refresh or double submit. Show where the payment is.
            None => self.find(payment_id).await?,
        };
        self.after_delivery(payment).await
    }

    /// Case 1: the shopper's request waits while the payment's events go down the HTTP
    /// chain (the order completed or cancelled, the mails sent), then shows the payment as
    /// they left it. Cases 2–4 answer with `payment` at once: the relay publishes.
    async fn after_delivery(&self, payment: Payment) -> Result<Payment, CheckoutError> {
        if !self.outbox.delivers_in_request() {
            return Ok(payment);
        }
        self.outbox.dispatch_now(payment.order_id).await;
        self.find(payment.id).await
    }

    async fn approve_begun(
        &self,
        payment: Payment,
        pg_token: &str,
    ) -> Result<Payment, CheckoutError> {
        let payment_id = payment.id;
        match self.gateway.approve(&payment, pg_token).await {
            Ok(approved) => {
                let method = approved
                    .payment_method_type
                    .map(|m| format!("{m:?}").to_uppercase());
                self.approved(payment, method).await
            }
            Err(error) if error.code() == Some(-702) || error.outcome_unknown() => {
                tracing::warn!(%payment_id, %error, "Approve outcome unclear; asking Kakao Pay.");
                self.db.mark_approval_unclear(payment_id).await?;
                self.settle_approval(payment, false).await
            }
            Err(error) if matches!(error.code(), Some(-708 | -701)) => {
                // A wrong or early pg_token (a forged or stale link): nothing happened on
                // Kakao Pay, and the shopper can still pay with the right one.
                tracing::info!(%payment_id, %error, "Approve refused: not the shopper's pg_token.");
                self.approval_not_applied(payment_id).await?;
                Err(CheckoutError::WrongPgToken)
            }
            Err(error) if error.is_transient() => {
                // Certainly not applied (e.g. connection refused): let the shopper retry.
                self.approval_not_applied(payment_id).await?;
                Err(CheckoutError::GatewayUnavailable)
            }
            Err(error) => {
                let reason = match error.code() {
                    Some(-723) => PaymentFailureReason::Expired,
                    Some(-780) => PaymentFailureReason::Declined,
                    _ => PaymentFailureReason::Rejected,
                };
                tracing::info!(%payment_id, %error, ?reason, "Payment not approved.");
                self.fail(&payment, PaymentStatus::Approving, reason, &error, None)
                    .await?;
                self.find(payment_id).await
            }
        }
    }

    /// `APPROVING` → `READY`: the approve certainly did not take effect. If the order
    /// asked meanwhile for the payment to be closed, it is closed now.
    async fn approval_not_applied(&self, payment_id: Uuid) -> Result<(), DbError> {
        if let Some(ready) = self.db.abandon_approval(payment_id).await? {
            if ready.close_requested_at.is_some() {
                self.close(ready).await?;
            }
        }
        Ok(())
    }

    /// The shopper left Kakao Pay through the cancel or the fail URL.
    pub async fn abandoned(
        &self,
        payment_id: Uuid,
        reason: PaymentFailureReason,
    ) -> Result<Payment, CheckoutError> {
        let payment = self.find(payment_id).await?;
        let span = payment_span("shopper left", &payment);
        let payment = self.abandon(payment, reason).instrument(span).await?;
        self.after_delivery(payment).await
    }

    /// Kakao Pay's cancel and fail URLs are plain GETs anyone can send: a `READY` payment
    /// is failed only when Kakao Pay's record says it ended unpaid, and approved if it
    /// says it was paid. Asked again, the answer is the same.
    async fn abandon(
        &self,
        payment: Payment,
        reason: PaymentFailureReason,
    ) -> Result<Payment, CheckoutError> {
        let payment_id = payment.id;
        if payment.status() != PaymentStatus::Ready {
            return Ok(payment);
        }
        let status = self.gateway.status(&payment).await.map_err(|error| {
            tracing::warn!(%payment_id, %error, "Cannot ask Kakao Pay how the shopper left.");
            CheckoutError::GatewayUnavailable
        })?;
        if status.status.is_paid() {
            tracing::warn!(%payment_id, "Sent to the cancel/fail URL, but Kakao Pay shows it paid.");
            let Some(approving) = self.db.begin_approval(payment_id).await? else {
                return self.find(payment_id).await;
            };
            return self.settle_approval(approving, false).await;
        }
        if status.status.is_failed() {
            let transition = Transition::Failed {
                from: PaymentStatus::Ready,
                reason: reason_text(reason),
                error_code: None,
            };
            let announce = move |p: &Payment| {
                failed_event(
                    p,
                    reason,
                    None,
                    format!("shopper returned: {reason:?}"),
                    None,
                )
            };
            let failed = self.commit(None, payment.id, transition, announce).await?;
            if failed.is_some() {
                metrics::counter!("payment_payments_failed_total", "reason" => reason_label(reason))
                    .increment(1);
            }
        } else {
            tracing::info!(%payment_id, status = %status.status, "Kakao Pay shows the payment still open; nothing changed.");
        }
        self.find(payment_id).await
    }

    pub async fn find(&self, payment_id: Uuid) -> Result<Payment, CheckoutError> {
        self.db
            .find(payment_id)
            .await?
            .ok_or(CheckoutError::UnknownPayment)
    }

    pub async fn find_by_order(&self, order_id: Uuid) -> Result<Vec<Payment>, CheckoutError> {
        Ok(self.db.find_by_order(order_id).await?)
    }

    pub async fn gateway_calls(
        &self,
        payment_id: Uuid,
    ) -> Result<Vec<store::GatewayCall>, CheckoutError> {
        Ok(self.db.gateway_calls(payment_id).await?)
    }

    /// Settles an unclear approve by the gateway's own record of the payment: paid →
    /// `APPROVED`, ended unpaid → `FAILED`. Otherwise it stays `APPROVING` (unknown) —
    /// unless `may_reset`: the reconciler asks only once no call can still be in flight,
    /// so a record still showing the payment open means the approve was not applied
    /// (`READY` again, or closed if the order asked for that meanwhile).
    async fn settle_approval(
        &self,
        payment: Payment,
        may_reset: bool,
    ) -> Result<Payment, CheckoutError> {
        let payment_id = payment.id;
        match self.gateway.status(&payment).await {
            Ok(status) if status.status.is_paid() => {
                let method = status
                    .payment_method_type
                    .map(|m| format!("{m:?}").to_uppercase());
                self.approved(payment, method).await
            }
            Ok(status) if status.status.is_failed() => {
                let error = KakaoPayError::Api {
                    http_status: 200,
                    code: 0,
                    message: format!("gateway reports {}", status.status),
                    method_result_code: None,
                };
                self.fail(
                    &payment,
                    PaymentStatus::Approving,
                    PaymentFailureReason::Declined,
                    &error,
                    None,
                )
                .await?;
                self.find(payment_id).await
            }
            Ok(status) if may_reset => {
                tracing::info!(%payment_id, status = %status.status, "Kakao Pay shows the approve not applied.");
                self.approval_not_applied(payment_id).await?;
                self.find(payment_id).await
            }
            Ok(status) => {
                tracing::warn!(%payment_id, status = %status.status, "Approve outcome still unknown; the reconciler settles it.");
                Err(CheckoutError::OutcomePending)
            }
            Err(error) => {
                tracing::error!(%payment_id, %error, "Cannot learn the approve outcome; payment left APPROVING.");
                Err(CheckoutError::OutcomePending)
            }
        }
    }

    async fn approved(
        &self,
        payment: Payment,
        method: Option<String>,
    ) -> Result<Payment, CheckoutError> {
        let payment_id = payment.id;
        let transition = Transition::Approved {
            payment_method: method,
            approved_at: Utc::now(),
        };
        let announce = |p: &Payment| {
            Event::new(
                p.order_id,
                None,
                PaymentApproved {
                    payment_id: p.id,
                    tid: p.tid().to_owned(),
                    amount: p.amount,
                    payment_method: p.payment_method.clone(),
                    approved_at: p.approved_at.unwrap_or_else(Utc::now),
                    order: p.snapshot(),
                },
            )
        };
        let approved = self.commit(None, payment.id, transition, announce).await?;
        if let Some(approved) = approved {
            metrics::counter!("payment_payments_approved_total").increment(1);
            tracing::info!(
                %payment_id, order_id = %approved.order_id, amount = approved.amount,
                "Payment approved."
            );
            if approved.order_cancelled_at.is_some() {
                // Charged after the order was cancelled: the money goes back. If this
                // fails, the reconciler refunds it (APPROVED + order_cancelled_at).
                tracing::warn!(%payment_id, "Approved after its order was cancelled; refunding.");
                if let Err(error) = self.refund_payment(payment_id, None).await {
                    tracing::warn!(%payment_id, ?error, "Refund not started; the reconciler will.");
                }
            }
        }
        self.find(payment_id).await
    }

    /// Makes `transition` in a transaction (claiming `cause` in the inbox first, when
    /// given), enqueues the event `announce` builds from the updated payment, and wakes
    /// the relay after the commit. `None` when nothing changed.
    async fn commit<F>(
        &self,
        cause: Option<Event>,
        payment_id: Uuid,
        transition: Transition,
        announce: F,
    ) -> Result<Option<Payment>, DbError>
    where
        F: FnOnce(&Payment) -> Event + Send + 'static,
    {
        let done = self
            .db
            .commit(&self.outbox, cause, payment_id, transition, announce)
            .await?;
        if done.is_some() {
            self.outbox.notify();
        }
        Ok(done)
    }

    /// `from` → `FAILED` + `PaymentFailed` for a gateway error; `cause` is claimed in
    /// the inbox and is the event's cause.
    async fn fail(
        &self,
        payment: &Payment,
        from: PaymentStatus,
        reason: PaymentFailureReason,
        error: &KakaoPayError,
        cause: Option<Event>,
    ) -> Result<Option<Payment>, DbError> {
        let code = error.code().filter(|c| *c != 0);
        let transition = Transition::Failed {
            from,
            reason: reason_text(reason),
            error_code: code,
        };
        let (detail, follow) = (error.to_string(), cause.clone());
        let announce = move |p: &Payment| failed_event(p, reason, code, detail, follow.as_ref());
        let step = self.commit(cause, payment.id, transition, announce).await?;
        if step.is_some() {
            metrics::counter!("payment_payments_failed_total", "reason" => reason_label(reason))
                .increment(1);
        }
        Ok(step)
    }
}

/// A span for work on `payment` that continues its order's trace (see the `traceparent`
/// column), with the trace id as a field.
fn payment_span(work: &'static str, payment: &Payment) -> tracing::Span {
    let span = tracing::info_span!(
        "Payment work",
        work,
        payment_id = %payment.id,
        order_id = %payment.order_id,
        trace_id = tracing::field::Empty
    );
    shared_events::telemetry::continue_trace(&span, payment.traceparent.as_deref());
    span
}

/// A failure reason as a bounded metric label (`declined`, `gateway_unavailable`, …).
pub fn reason_label(reason: PaymentFailureReason) -> &'static str {
    match reason {
        PaymentFailureReason::Declined => "declined",
        PaymentFailureReason::ShopperCancelled => "shopper_cancelled",
        PaymentFailureReason::Failed => "failed",
        PaymentFailureReason::Expired => "expired",
        PaymentFailureReason::GatewayUnavailable => "gateway_unavailable",
        PaymentFailureReason::Rejected => "rejected",
    }
}

fn reason_text(reason: PaymentFailureReason) -> String {
    serde_json::to_value(reason)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn failed_event(
    payment: &Payment,
    reason: PaymentFailureReason,
    error_code: Option<i32>,
    detail: String,
    cause: Option<&Event>,
) -> Event {
    let body = PaymentFailed {
        payment_id: Some(payment.id),
        tid: payment.tid.clone(),
        reason,
        error_code,
        detail,
    };
    match cause {
        Some(cause) => cause.follow_up(body),
        None => Event::new(payment.order_id, None, body),
    }
}

/// Why a checkout could not start yet; both are worth retrying.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("Kakao Pay unavailable for ready: {0}")]
    GatewayUnavailable(KakaoPayError),
}

/// The consumer of order events.
pub struct OrderEvents(pub Arc<Checkout>);

impl EventHandler for OrderEvents {
    async fn handle(&self, event: &Event) -> Result<(), HandlerError> {
        let transient = |error: DbError| HandlerError::Transient(error.into());
        match &event.body {
            EventBody::OrderPlaced(placed) => self
                .0
                .start(event, placed)
                .await
                .map_err(|error| HandlerError::Transient(error.into())),
            EventBody::OrderCancelled(_) => self.0.order_cancelled(event).await,
            EventBody::PaymentCloseRequested(_) => {
                self.0.close_requested(event).await.map_err(transient)
            }
            EventBody::RefundRequested(request) => self.0.refund(event, request).await,
            _ => Ok(()),
        }
    }
}
