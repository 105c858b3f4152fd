//! The payment gateway port: Kakao Pay calls with bounded retries, each attempt recorded.
//!
//! Transient failures (timeouts, refused connections, 5xx, platform errors) are retried
//! with exponential backoff and jitter, a bounded number of times. Permanent ones
//! (declines, `-7xx`, bad keys) fail at once. Every attempt is written to
//! `gateway_calls` with its latency and outcome, and counted in metrics.
//!
//! A call whose attempts failed is only as certain as its least certain attempt: when
//! any attempt's outcome is unknown (a timeout: it may have been applied), the call's
//! error is that unknown one, whatever the later attempts met — a refused connection on
//! attempt 2 says nothing about attempt 1. A refund (`cancel`) is sent once, never
//! retried here: an unclear refund is settled by Kakao Pay's record (`order`).

use crate::persistence::PaymentDb;
use crate::store::{NewGatewayCall, Payment};
use kakaopay::{
    ApproveRequest, ApproveResponse, CancelRequest, CancelResponse, KakaoPayClient, KakaoPayError,
    OrderStatusResponse, ReadyRequest, ReadyResponse,
};
use shared_events::retry::{Backoff, RetryPolicy};
use std::future::Future;
use std::time::{Duration, Instant};
use url::Url;

/// Where Kakao Pay sends the shopper back to, per payment, and where a shopper's browser
/// goes from there: the storefront's page of the order.
#[derive(Debug, Clone)]
pub struct CallbackUrls {
    public_url: Url,
    storefront_url: Url,
}

impl CallbackUrls {
    pub fn new(public_url: Url, storefront_url: Url) -> Self {
        Self {
            public_url,
            storefront_url,
        }
    }

    /// The storefront's page of the payment's order.
    pub fn order_page(&self, payment: &Payment) -> String {
        let base = self.storefront_url.as_str().trim_end_matches('/');
        format!("{base}/shop/orders/{}", payment.order_id)
    }

    pub fn for_payment(&self, payment: &Payment, step: &str) -> String {
        let base = self.public_url.as_str().trim_end_matches('/');
        format!("{base}/payments/{}/{step}", payment.id)
    }
}

#[derive(Clone)]
pub struct Gateway {
    client: KakaoPayClient,
    db: PaymentDb,
    retry: RetryPolicy,
}

impl Gateway {
    pub fn new(
        client: KakaoPayClient,
        db: PaymentDb,
        max_attempts: u32,
        backoff: Duration,
    ) -> Self {
        Self {
            client,
            db,
            retry: RetryPolicy {
                max_attempts: max_attempts.max(1),
                backoff: Backoff::new(backoff, backoff.saturating_mul(16)),
            },
        }
    }

    pub async fn ready(
        &self,
        payment: &Payment,
        urls: &CallbackUrls,
    ) -> Result<ReadyResponse, KakaoPayError> {
        let request = ReadyRequest {
            partner_order_id: payment.order_id.to_string(),
            partner_user_id: payment.partner_user_id.clone(),
            item_name: payment.item_name.clone(),
            item_code: None,
            quantity: i64::from(payment.quantity),
            total_amount: payment.amount,
            tax_free_amount: 0,
            vat_amount: None,
            approval_url: urls.for_payment(payment, "approve"),
            cancel_url: urls.for_payment(payment, "cancel"),
            fail_url: urls.for_payment(payment, "fail"),
        };
        self.call(payment, "ready", || self.client.ready(&request))
            .await
    }

    /// Approves with the shopper's `pg_token`. Retrying with the same token is safe: a
    /// second approve of a paid tid answers `-702`, which the caller reconciles.
    pub async fn approve(
        &self,
        payment: &Payment,
        pg_token: &str,
    ) -> Result<ApproveResponse, KakaoPayError> {
        let request = ApproveRequest {
            tid: payment.tid().to_owned(),
            partner_order_id: payment.order_id.to_string(),
            partner_user_id: payment.partner_user_id.clone(),
            pg_token: pg_token.to_owned(),
            total_amount: Some(payment.amount),
            payload: None,
        };
        self.call(payment, "approve", || self.client.approve(&request))
            .await
    }

    /// Refunds the whole payment. `cancel_available_amount` is the full amount, so a
    /// replayed cancel after a lost response is refused instead of refunding twice.
    pub async fn refund(&self, payment: &Payment) -> Result<CancelResponse, KakaoPayError> {
        let request = CancelRequest {
            tid: payment.tid().to_owned(),
            cancel_amount: payment.amount,
            cancel_tax_free_amount: 0,
            cancel_vat_amount: None,
            cancel_available_amount: Some(payment.amount),
            payload: None,
        };
        self.call_with(1, payment, "cancel", || self.client.cancel(&request))
            .await
    }

    /// The gateway's view of the payment: the authority when an outcome is unclear.
    pub async fn status(&self, payment: &Payment) -> Result<OrderStatusResponse, KakaoPayError> {
        self.call(payment, "order", || self.client.order(payment.tid()))
            .await
    }

    async fn call<T, F, Fut>(
        &self,
        payment: &Payment,
        kind: &'static str,
        send: F,
    ) -> Result<T, KakaoPayError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, KakaoPayError>>,
    {
        self.call_with(self.retry.max_attempts, payment, kind, send)
            .await
    }

    async fn call_with<T, F, Fut>(
        &self,
        max_attempts: u32,
        payment: &Payment,
        kind: &'static str,
        mut send: F,
    ) -> Result<T, KakaoPayError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, KakaoPayError>>,
    {
        let mut attempt = 0;
        let mut unknown = None;
        loop {
            attempt += 1;
            let started = Instant::now();
            let result = send().await;
            self.record(payment, kind, &result, started.elapsed()).await;
            match result {
                Err(error) if error.is_transient() && attempt < max_attempts => {
                    tracing::warn!(payment_id = %payment.id, kind, attempt, %error, "Gateway call failed; retrying.");
                    metrics::counter!("payment_gateway_retries_total", "endpoint" => kind)
                        .increment(1);
                    if unknown.is_none() && error.outcome_unknown() {
                        unknown = Some(error);
                    }
                    tokio::time::sleep(self.retry.backoff(attempt)).await;
                }
                Err(error) => return Err(least_certain(unknown, error)),
                Ok(value) => return Ok(value),
            }
        }
    }

    async fn record<T>(
        &self,
        payment: &Payment,
        kind: &'static str,
        result: &Result<T, KakaoPayError>,
        latency: Duration,
    ) {
        let outcome = match result {
            Ok(_) => "ok",
            Err(e) if e.outcome_unknown() => "unknown",
            Err(e) if e.is_transient() => "transient",
            Err(_) => "rejected",
        };
        let error = result.as_ref().err();
        let code = error.and_then(KakaoPayError::code);
        metrics::histogram!("payment_gateway_request_duration_seconds", "endpoint" => kind)
            .record(latency.as_secs_f64());
        metrics::counter!(
            "payment_gateway_requests_total",
            "endpoint" => kind,
            "outcome" => outcome,
            "error_code" => code.map(|c| c.to_string()).unwrap_or_default()
        )
        .increment(1);
        let call = NewGatewayCall {
            payment_id: payment.id,
            kind,
            outcome,
            error_code: code,
            http_status: error.and_then(KakaoPayError::http_status).map(i32::from),
            latency_ms: latency.as_secs_f64() * 1000.0,
        };
        let recorded = self.db.record_gateway_call(call).await;
        if let Err(error) = recorded {
            tracing::warn!(%error, "Could not record a gateway call.");
        }
    }
}

/// The error of a call whose last attempt failed with `last`: the earlier attempt whose
/// outcome was unknown, if any, unless `last` is unknown itself — a later "certainly not
/// applied" does not undo an earlier "maybe applied".
fn least_certain(unknown: Option<KakaoPayError>, last: KakaoPayError) -> KakaoPayError {
    match unknown {
        Some(earlier) if !last.outcome_unknown() => earlier,
        _ => last,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_timeout_makes_the_whole_call_unknown() {
        let refused = || KakaoPayError::Connect("connection refused".into());
        let error = least_certain(Some(KakaoPayError::Timeout), refused());
        assert!(error.outcome_unknown(), "{error}");
        assert!(matches!(error, KakaoPayError::Timeout));
        let declined = KakaoPayError::Api {
            http_status: 400,
            code: -780,
            message: "declined".into(),
            method_result_code: None,
        };
        assert!(least_certain(Some(KakaoPayError::Timeout), declined).outcome_unknown());
        assert!(
            !least_certain(None, refused()).outcome_unknown(),
            "nothing was unclear"
        );
        let already = KakaoPayError::Api {
            http_status: 400,
            code: -702,
            message: "already approved".into(),
            method_result_code: None,
        };
        assert_eq!(
            least_certain(Some(KakaoPayError::Timeout), already).code(),
            Some(-702),
            "an unknown last answer is kept"
        );
    }
}
