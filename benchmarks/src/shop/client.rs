//! The shoppers' HTTP clients ([`Shop`]) and the long-polled read of one order.

use super::config::ShopConfig;
use crate::loopback;
use reqwest::redirect::Policy;
use reqwest::StatusCode;
use serde_json::Value;
use std::sync::atomic::AtomicU64;
use std::time::Duration;
use tokio::time::Instant as TokioInstant;

/// The shoppers' HTTP clients and settings.
pub struct Shop {
    pub(super) config: ShopConfig,
    pub(super) api: reqwest::Client,
    /// Follows redirects (loopback only), as the shopper's browser on the payment page.
    pub(super) browser: reqwest::Client,
    /// Part of every customer id, so two runs never share customers.
    pub(super) run: String,
    pub(super) seq: AtomicU64,
}

/// A short name for a request error.
pub(super) fn kind(step: &str, error: &reqwest::Error) -> String {
    let what = if error.is_timeout() {
        "timeout"
    } else if error.is_connect() {
        "connect"
    } else if error.is_redirect() {
        "redirect"
    } else if error.is_decode() || error.is_body() {
        "body"
    } else {
        "request"
    };
    format!("{step}_{what}")
}

impl Shop {
    pub fn new(config: ShopConfig) -> anyhow::Result<Self> {
        let api = reqwest::Client::builder()
            .no_proxy()
            .timeout(config.request_timeout)
            .redirect(Policy::none())
            .pool_max_idle_per_host(256)
            .build()?;
        let browser = reqwest::Client::builder()
            .no_proxy()
            .timeout(config.request_timeout)
            .redirect(Policy::custom(|attempt| {
                if attempt.previous().len() >= 5 {
                    attempt.error("more than 5 redirects")
                } else if loopback::is_loopback_url(attempt.url()) {
                    attempt.follow()
                } else {
                    attempt.stop()
                }
            }))
            .build()?;
        Ok(Self {
            config,
            api,
            browser,
            run: uuid::Uuid::now_v7().simple().to_string()[20..].to_owned(),
            seq: AtomicU64::new(0),
        })
    }

    pub fn config(&self) -> &ShopConfig {
        &self.config
    }

    /// The order service's JSON client (no redirects; loopback only).
    pub fn api(&self) -> &reqwest::Client {
        &self.api
    }

    fn next_poll(&self, poll: Duration) -> Duration {
        poll.mul_f64(1.5)
            .min(self.config.poll_max.max(self.config.poll))
    }

    /// `GET /orders/{id}`: the order and its `ETag`. With `seen` (an `ETag`), the order
    /// service waits (`Prefer: wait`) until the order differs from it or the wait (at most
    /// [`LONG_POLL`], never past `deadline`) is over. A refused wait (503) is asked again
    /// after `Retry-After` (or [`ShopConfig::poll`]) until `deadline`. `token` is the
    /// order's (from `POST /orders`): the shopper reads its own full view, whose `ETag` is
    /// the POST answer's.
    pub async fn get_order(
        &self,
        id: &str,
        token: &str,
        seen: Option<&str>,
        deadline: TokioInstant,
    ) -> Result<(Value, Option<String>), String> {
        let url = self
            .config
            .order_url
            .join(&format!("orders/{id}"))
            .map_err(|_| "poll_bad_url".to_owned())?;
        let mut pause = self.config.poll;
        loop {
            let mut request = self.api.get(url.clone()).bearer_auth(token);
            if let Some(seen) = seen {
                let wait = whole_seconds_until(deadline);
                request = request
                    .header("Prefer", format!("wait={}", wait.as_secs()))
                    .header("If-None-Match", seen)
                    .timeout(wait + self.config.request_timeout);
            }
            let response = request.send().await.map_err(|e| kind("poll", &e))?;
            match response.status() {
                StatusCode::OK => {
                    // Without a tag the next request could not wait: it would poll.
                    let etag = etag_of(&response).ok_or_else(|| "poll_no_etag".to_owned())?;
                    let order = response.json().await.map_err(|e| kind("poll", &e))?;
                    return Ok((order, Some(etag)));
                }
                StatusCode::SERVICE_UNAVAILABLE if TokioInstant::now() + pause < deadline => {
                    tokio::time::sleep(retry_after(&response).unwrap_or(pause)).await;
                    pause = self.next_poll(pause);
                }
                status => return Err(format!("poll_http_{}", status.as_u16())),
            }
        }
    }
}

/// The longest wait one request asks of the order service (its maximum is 30 s unless
/// `ORDER_MAX_WAIT_SECS` says otherwise).
pub const LONG_POLL: Duration = Duration::from_secs(25);

/// The wait to ask for so the answer comes by `deadline`: whole seconds, 1 to
/// [`LONG_POLL`] (rounded up, so a step never ends in a burst of short requests).
fn whole_seconds_until(deadline: TokioInstant) -> Duration {
    let left = deadline.saturating_duration_since(TokioInstant::now());
    Duration::from_secs(
        left.as_secs_f64()
            .ceil()
            .clamp(1.0, LONG_POLL.as_secs_f64()) as u64,
    )
}

pub(super) fn etag_of(response: &reqwest::Response) -> Option<String> {
    let etag = response.headers().get(reqwest::header::ETAG)?;
    etag.to_str().ok().map(str::to_owned)
}

fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    let value = response.headers().get(reqwest::header::RETRY_AFTER)?;
    value.to_str().ok()?.parse().ok().map(Duration::from_secs)
}
