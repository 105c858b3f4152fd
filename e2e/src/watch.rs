//! Waiting for an order to change the way a storefront should: `GET /orders/{id}` with
//! `Prefer: wait` and the last `ETag` as `If-None-Match`, so order-service answers as
//! soon as the order changes (or after the wait, unchanged) instead of being polled.

use reqwest::StatusCode;
use serde_json::Value;
use std::time::Duration;
use uuid::Uuid;

/// How long each request asks the server to wait (below order-service's 30 s maximum
/// and every client timeout of the harness).
pub const WAIT: Duration = Duration::from_secs(10);

/// One order, watched through successive long polls.
#[derive(Debug, Clone)]
pub struct OrderWatch {
    url: String,
    etag: Option<String>,
    /// The order's token: with it the shopper's full view, without it the public one.
    token: Option<String>,
}

/// A long poll that did not bring the order.
#[derive(Debug)]
pub enum WatchError {
    /// Try again after this long (the server's `Retry-After`, or a short pause after a
    /// failed request or a 5xx).
    Retry(Duration, String),
    /// A 4xx: asking again will not help.
    Refused(StatusCode, String),
}

impl OrderWatch {
    /// Watches order `id` at the order service `order_url` (`http://127.0.0.1:PORT`).
    pub fn new(order_url: &str, id: Uuid) -> Self {
        Self {
            url: format!("{order_url}/orders/{id}"),
            etag: None,
            token: None,
        }
    }

    /// Watches as the shopper holding the order's `token` (the full view).
    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token;
        self
    }

    /// The order at once the first time; then once it differs from the last answer, or as
    /// it is when the server's wait is over.
    pub async fn next(&mut self, http: &reqwest::Client) -> Result<Value, WatchError> {
        let mut request = http.get(&self.url).timeout(WAIT * 2);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(etag) = &self.etag {
            request = request
                .header("Prefer", format!("wait={}", WAIT.as_secs()))
                .header("If-None-Match", etag);
        }
        let response = request
            .send()
            .await
            .map_err(|e| WatchError::Retry(Duration::from_millis(100), e.to_string()))?;
        let status = response.status();
        if !status.is_success() {
            return Err(refusal(response).await);
        }
        let etag = response.headers().get("etag").and_then(|v| v.to_str().ok());
        // Without a tag the next request could not wait: it would poll.
        let etag = etag.ok_or_else(|| WatchError::Refused(status, "no ETag".to_owned()))?;
        self.etag = Some(etag.to_owned());
        response
            .json()
            .await
            .map_err(|e| WatchError::Retry(Duration::from_millis(100), e.to_string()))
    }
}

async fn refusal(response: reqwest::Response) -> WatchError {
    let status = response.status();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .map_or(Duration::from_millis(100), Duration::from_secs);
    let body = response.text().await.unwrap_or_default();
    if status.is_client_error() {
        WatchError::Refused(status, body)
    } else {
        WatchError::Retry(retry_after, format!("{status} {body}"))
    }
}
