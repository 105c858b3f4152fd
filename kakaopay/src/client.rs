//! HTTP client for the new Kakao Pay API (`POST /online/v1/payment/*`, JSON,
//! `Authorization: SECRET_KEY <key>`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde::Serialize;
use url::Url;

use crate::error::KakaoPayError;
use crate::types::{
    ApproveRequest, ApproveResponse, CancelRequest, CancelResponse, OrderRequest,
    OrderStatusResponse, ReadyRequest, ReadyResponse,
};

/// Kakao Pay's test merchant code (the third character is the digit zero).
pub const TEST_CID: &str = "TC0ONETIME";

/// Production host of the new API.
pub const DEFAULT_BASE_URL: &str = "https://open-api.kakaopay.com";

/// Client timeout: a little above the platform's reported 11 s request timeout,
/// so a slow-but-answered call is not turned into an unknown outcome.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(12);

/// Connection setup gets a shorter bound: a refused or unreachable host is
/// known not to have received the request, and is worth failing fast.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where and how to reach Kakao Pay. `Debug` is safe: the key prints redacted.
#[derive(Debug, Clone)]
pub struct KakaoPayConfig {
    /// `https://open-api.kakaopay.com` in production; the simulator's URL in tests.
    pub base_url: Url,
    pub secret_key: SecretString,
    pub cid: String,
    /// Whole-request timeout.
    pub timeout: Duration,
}

impl KakaoPayConfig {
    /// Config for the test merchant [`TEST_CID`] with [`DEFAULT_TIMEOUT`].
    pub fn new(base_url: Url, secret_key: SecretString) -> Self {
        Self {
            base_url,
            secret_key,
            cid: TEST_CID.to_owned(),
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// Kakao Pay API client. Cloning is cheap (shared connection pool).
#[derive(Clone)]
pub struct KakaoPayClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    cid: String,
    ready_url: Url,
    approve_url: Url,
    cancel_url: Url,
    order_url: Url,
}

impl std::fmt::Debug for KakaoPayClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KakaoPayClient")
            .field("cid", &self.inner.cid)
            .field("ready_url", &self.inner.ready_url.as_str())
            .finish_non_exhaustive()
    }
}

/// Every request body carries the merchant code, filled in from the config.
#[derive(Serialize)]
struct WithCid<'a, T: Serialize> {
    cid: &'a str,
    #[serde(flatten)]
    body: &'a T,
}

impl KakaoPayClient {
    pub fn new(config: KakaoPayConfig) -> Result<Self, KakaoPayError> {
        let http = reqwest::Client::builder()
            .default_headers(default_headers(&config.secret_key)?)
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(CONNECT_TIMEOUT))
            // Kakao never redirects an API call; following one would resend the
            // body (and the key) somewhere unexpected.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| KakaoPayError::Config(e.to_string()))?;
        let base = with_trailing_slash(config.base_url);
        let endpoint = |name: &str| {
            base.join(&format!("online/v1/payment/{name}"))
                .map_err(|e| KakaoPayError::Config(format!("base_url: {e}")))
        };
        Ok(Self {
            inner: Arc::new(Inner {
                ready_url: endpoint("ready")?,
                approve_url: endpoint("approve")?,
                cancel_url: endpoint("cancel")?,
                order_url: endpoint("order")?,
                http,
                cid: config.cid,
            }),
        })
    }

    /// The merchant code this client sends.
    pub fn cid(&self) -> &str {
        &self.inner.cid
    }

    /// Prepares a payment; the shopper is then sent to one of the redirect URLs.
    pub async fn ready(&self, req: &ReadyRequest) -> Result<ReadyResponse, KakaoPayError> {
        tracing::debug!(partner_order_id = %req.partner_order_id, "kakaopay ready");
        self.post("ready", &self.inner.ready_url, req).await
    }

    /// Completes a payment with the `pg_token` the shopper brought back.
    pub async fn approve(&self, req: &ApproveRequest) -> Result<ApproveResponse, KakaoPayError> {
        tracing::debug!(tid = %req.tid, partner_order_id = %req.partner_order_id, "kakaopay approve");
        self.post("approve", &self.inner.approve_url, req).await
    }

    /// Refunds all or part of an approved payment.
    pub async fn cancel(&self, req: &CancelRequest) -> Result<CancelResponse, KakaoPayError> {
        tracing::debug!(tid = %req.tid, cancel_amount = req.cancel_amount, "kakaopay cancel");
        self.post("cancel", &self.inner.cancel_url, req).await
    }

    /// Looks a payment up by tid: the authoritative state for reconciliation.
    pub async fn order(&self, tid: &str) -> Result<OrderStatusResponse, KakaoPayError> {
        tracing::debug!(tid, "kakaopay order");
        self.post("order", &self.inner.order_url, &OrderRequest { tid })
            .await
    }

    async fn post<B, R>(&self, op: &'static str, url: &Url, body: &B) -> Result<R, KakaoPayError>
    where
        B: Serialize,
        R: DeserializeOwned,
    {
        let started = Instant::now();
        let result = self.send(url, body).await;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        match &result {
            Ok(_) => tracing::debug!(op, elapsed_ms, "kakaopay call succeeded"),
            Err(err) => tracing::info!(
                op,
                elapsed_ms,
                error = %err,
                transient = err.is_transient(),
                outcome_unknown = err.outcome_unknown(),
                "kakaopay call failed"
            ),
        }
        result
    }

    async fn send<B, R>(&self, url: &Url, body: &B) -> Result<R, KakaoPayError>
    where
        B: Serialize,
        R: DeserializeOwned,
    {
        let response = self
            .inner
            .http
            .post(url.clone())
            .json(&WithCid {
                cid: &self.inner.cid,
                body,
            })
            .send()
            .await?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await?;
        decode(status, &bytes)
    }
}

/// Turns a response into the typed body or an error. The body's error code
/// decides, whatever the HTTP status says.
fn decode<R: DeserializeOwned>(status: u16, body: &[u8]) -> Result<R, KakaoPayError> {
    if let Some(err) = KakaoPayError::from_error_body(status, body) {
        return Err(err);
    }
    if !(200..300).contains(&status) {
        return Err(KakaoPayError::unexpected(
            status,
            body,
            "error status without an error code",
        ));
    }
    serde_json::from_slice(body)
        .map_err(|e| KakaoPayError::unexpected(status, body, &format!("unreadable body: {e}")))
}

fn default_headers(secret_key: &SecretString) -> Result<HeaderMap, KakaoPayError> {
    let mut auth = HeaderValue::from_str(&format!("SECRET_KEY {}", secret_key.expose_secret()))
        // Never include the key (or the header) in this message.
        .map_err(|_| KakaoPayError::Config("secret key contains invalid characters".into()))?;
    auth.set_sensitive(true);
    let mut headers = HeaderMap::new();
    headers.insert(AUTHORIZATION, auth);
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(headers)
}

/// `Url::join` replaces the last path segment unless the base ends with `/`.
fn with_trailing_slash(mut url: Url) -> Url {
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(base: &str) -> KakaoPayClient {
        KakaoPayClient::new(KakaoPayConfig::new(
            Url::parse(base).expect("url"),
            SecretString::from("DEVsecret-value-123"),
        ))
        .expect("client")
    }

    #[test]
    fn endpoints_keep_a_base_path() {
        let c = client("http://gw.example/prefix");
        assert_eq!(
            c.inner.approve_url.as_str(),
            "http://gw.example/prefix/online/v1/payment/approve"
        );
        let c = client("http://gw.example");
        assert_eq!(
            c.inner.order_url.as_str(),
            "http://gw.example/online/v1/payment/order"
        );
    }

    #[test]
    fn debug_does_not_show_the_key() {
        let c = client("http://gw.example");
        let config = KakaoPayConfig::new(
            Url::parse("http://gw.example").expect("url"),
            SecretString::from("DEVsecret-value-123"),
        );
        for text in [format!("{c:?}"), format!("{config:?}")] {
            assert!(!text.contains("DEVsecret-value-123"), "{text}");
        }
    }

    #[test]
    fn body_carries_cid() {
        let body = serde_json::to_value(WithCid {
            cid: TEST_CID,
            body: &OrderRequest { tid: "T1" },
        })
        .expect("ser");
        assert_eq!(body, serde_json::json!({"cid": "TC0ONETIME", "tid": "T1"}));
    }

    #[test]
    fn decode_prefers_the_body_code() {
        let err = decode::<OrderStatusResponse>(200, br#"{"error_code":-721,"error_message":"x"}"#)
            .expect_err("error body on 200");
        assert_eq!(err.code(), Some(-721));
        let err = decode::<OrderStatusResponse>(502, b"<html>").expect_err("html");
        assert!(matches!(
            err,
            KakaoPayError::UnexpectedResponse {
                http_status: 502,
                ..
            }
        ));
        let err = decode::<OrderStatusResponse>(200, b"{}").expect_err("missing fields");
        assert!(err.outcome_unknown());
    }
}
