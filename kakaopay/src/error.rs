//! Errors of the Kakao Pay client, and the policy callers apply to them.
//!
//! # Retry and unknown-outcome policy
//!
//! Kakao Pay has no idempotency key, so a caller must know two things about a
//! failed call: may it simply retry ([`KakaoPayError::is_transient`]), and may the
//! call have taken effect anyway ([`KakaoPayError::outcome_unknown`]).
//!
//! The outcome is decided from the body's error code, not from the HTTP status
//! alone: the docs disagree on whether `-780`/`-781` come back as 400 or 500, and
//! the platform answers key errors with 401 but maintenance with 503.
//!
//! | error | transient (retry) | outcome unknown (reconcile) |
//! |---|---|---|
//! | [`Timeout`](KakaoPayError::Timeout) | yes | yes: the request may have been processed |
//! | [`Connect`](KakaoPayError::Connect) | yes | no: nothing was sent |
//! | [`Transport`](KakaoPayError::Transport) | yes | yes: it may have failed after sending |
//! | HTTP 5xx, no `-7xx` code | yes | yes |
//! | `-1`, `-500` (internal error) | yes | yes |
//! | `-503`, `-9798` (maintenance), `-10`/`-429` (quota) | yes | only if HTTP 5xx |
//! | `-780` + `USER_LOCKED` (another transaction in progress) | yes | no |
//! | `-702` (already approved), `-785` (duplicate request) | no | yes |
//! | `-780` + `BANK_FIRM_UNKNOWN` (bank result unknown) | no | yes |
//! | other `-7xx` (business rejections), `-2`, `-401`, `-403`, ... | no | no (unless HTTP 5xx) |
//! | [`UnexpectedResponse`](KakaoPayError::UnexpectedResponse) with 2xx | no | yes: accepted but unreadable |
//! | [`UnexpectedResponse`](KakaoPayError::UnexpectedResponse) with 5xx | yes | yes |
//!
//! "Outcome unknown" means: do not assume failure and do not send the shopper
//! back; look the payment up with `order(tid)` and act on its status
//! (`SUCCESS_PAYMENT` → paid, in-progress → re-check until the TID expires,
//! `*_FAIL*`/`QUIT_PAYMENT` → failed). For `ready` there is no tid to look up: a
//! new `ready` is the only way forward.
//!
//! Error texts never contain the secret key or a `pg_token`: the key travels only
//! in a header marked sensitive, and request bodies are never echoed.

use serde::{Deserialize, Deserializer};

/// Longest excerpt of an unreadable body kept in an error.
const BODY_EXCERPT_CHARS: usize = 200;

/// A failed Kakao Pay call. See the module docs for the retry policy.
#[derive(Debug, thiserror::Error)]
pub enum KakaoPayError {
    /// Kakao Pay answered with an error body (new `error_code`/`error_message` or
    /// legacy `code`/`msg`).
    #[error("Kakao Pay error {code} (HTTP {http_status}): {message}{}", fmt_method_result(.method_result_code))]
    Api {
        http_status: u16,
        code: i32,
        message: String,
        /// `extras.method_result_code` (card company / bank result), e.g. `USER_LOCKED`.
        method_result_code: Option<String>,
    },
    /// No complete response within the configured timeout.
    #[error("Kakao Pay request timed out")]
    Timeout,
    /// The connection could not be established; the request was not sent.
    #[error("cannot connect to Kakao Pay: {0}")]
    Connect(String),
    /// Any other HTTP-level failure (possibly after the request was sent).
    #[error("Kakao Pay transport error: {0}")]
    Transport(String),
    /// A body that is neither the expected response nor an error body.
    #[error("unexpected Kakao Pay response (HTTP {http_status}): {detail}")]
    UnexpectedResponse { http_status: u16, detail: String },
    /// The client could not be built from its configuration.
    #[error("invalid Kakao Pay client configuration: {0}")]
    Config(String),
}

fn fmt_method_result(code: &Option<String>) -> String {
    code.as_deref()
        .map(|c| format!(" [method_result_code {c}]"))
        .unwrap_or_default()
}

/// Error body: new-API keys with the legacy names as aliases.
#[derive(Debug, Deserialize)]
struct ErrorBody {
    #[serde(alias = "code")]
    error_code: Option<i32>,
    #[serde(alias = "msg")]
    error_message: Option<String>,
    #[serde(default)]
    extras: Option<Extras>,
}

#[derive(Debug, Default, Deserialize)]
struct Extras {
    #[serde(default, deserialize_with = "lenient_string")]
    method_result_code: Option<String>,
}

/// `method_result_code` is a string in the samples (`"6666"`), but accept a number.
fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<serde_json::Value>::deserialize(d)? {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s),
        Some(other) => Some(other.to_string()),
    })
}

impl KakaoPayError {
    /// Parses a Kakao Pay error body; `None` when the body carries no error code.
    pub fn from_error_body(http_status: u16, body: &[u8]) -> Option<Self> {
        let parsed: ErrorBody = serde_json::from_slice(body).ok()?;
        let code = parsed.error_code?;
        Some(Self::Api {
            http_status,
            code,
            message: parsed.error_message.unwrap_or_default(),
            method_result_code: parsed.extras.and_then(|e| e.method_result_code),
        })
    }

    /// An unreadable body, keeping a short excerpt for diagnosis.
    pub fn unexpected(http_status: u16, body: &[u8], why: &str) -> Self {
        let text = String::from_utf8_lossy(body);
        let mut excerpt: String = text.chars().take(BODY_EXCERPT_CHARS).collect();
        if text.chars().count() > BODY_EXCERPT_CHARS {
            excerpt.push('…');
        }
        Self::UnexpectedResponse {
            http_status,
            detail: format!("{why}; body: {excerpt}"),
        }
    }

    /// The Kakao error code, if Kakao answered with one.
    pub fn code(&self) -> Option<i32> {
        match self {
            Self::Api { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// `extras.method_result_code`, if any.
    pub fn method_result_code(&self) -> Option<&str> {
        match self {
            Self::Api {
                method_result_code, ..
            } => method_result_code.as_deref(),
            _ => None,
        }
    }

    /// The HTTP status, if a response arrived.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            Self::Api { http_status, .. } | Self::UnexpectedResponse { http_status, .. } => {
                Some(*http_status)
            }
            _ => None,
        }
    }

    /// True when the same request may succeed if simply retried later.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Timeout | Self::Connect(_) | Self::Transport(_) => true,
            Self::UnexpectedResponse { http_status, .. } => *http_status >= 500,
            Self::Config(_) => false,
            Self::Api {
                http_status, code, ..
            } => match code {
                // Internal error (Kakao suggests retrying), maintenance, quota.
                -1 | -500 | -503 | -9798 | -10 | -429 => true,
                -780 => self.method_result_code() == Some("USER_LOCKED"),
                // Payment-logic rejections stay rejections whatever the status.
                -799..=-700 => false,
                _ => *http_status >= 500,
            },
        }
    }

    /// True when the call may have taken effect on the gateway although it
    /// failed: reconcile with `order(tid)` instead of assuming failure.
    pub fn outcome_unknown(&self) -> bool {
        match self {
            Self::Timeout | Self::Transport(_) => true,
            Self::Connect(_) | Self::Config(_) => false,
            Self::UnexpectedResponse { http_status, .. } => {
                (200..300).contains(http_status) || *http_status >= 500
            }
            Self::Api {
                http_status, code, ..
            } => match code {
                -1 | -500 | -702 | -785 => true,
                -780 if self.method_result_code() == Some("BANK_FIRM_UNKNOWN") => true,
                // Any 5xx, even with a business code: the older tables list
                // -780/-781 as 500, and a 500 is where partial processing hides.
                _ => *http_status >= 500,
            },
        }
    }
}

impl From<reqwest::Error> for KakaoPayError {
    /// Classifies a reqwest failure. The text is built from the error chain,
    /// which holds the URL but never headers, so the secret key cannot leak.
    fn from(err: reqwest::Error) -> Self {
        let text = error_chain(&err);
        if err.is_connect() {
            Self::Connect(text)
        } else if err.is_timeout() {
            Self::Timeout
        } else if err.is_builder() {
            Self::Config(text)
        } else {
            Self::Transport(text)
        }
    }
}

fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(http_status: u16, code: i32, mrc: Option<&str>) -> KakaoPayError {
        KakaoPayError::Api {
            http_status,
            code,
            message: "m".into(),
            method_result_code: mrc.map(str::to_owned),
        }
    }

    #[test]
    fn parses_new_api_error_body() {
        let body = br#"{"error_code":-780,"error_message":"approval failure!",
            "extras":{"method_result_code":"USER_LOCKED","method_result_message":"busy"}}"#;
        let err = KakaoPayError::from_error_body(400, body).expect("error body");
        match &err {
            KakaoPayError::Api {
                http_status,
                code,
                message,
                method_result_code,
            } => {
                assert_eq!(*http_status, 400);
                assert_eq!(*code, -780);
                assert_eq!(message, "approval failure!");
                assert_eq!(method_result_code.as_deref(), Some("USER_LOCKED"));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.is_transient());
        assert!(!err.outcome_unknown());
    }

    #[test]
    fn parses_legacy_error_body() {
        let body = br#"{"code":-781,"msg":"cancel failure!","extras":{"method_result_code":6666}}"#;
        let err = KakaoPayError::from_error_body(400, body).expect("error body");
        assert_eq!(err.code(), Some(-781));
        assert_eq!(err.method_result_code(), Some("6666"));
        assert!(err.to_string().contains("cancel failure!"));
        assert!(!err.is_transient());
    }

    #[test]
    fn body_without_code_is_not_an_error_body() {
        assert!(KakaoPayError::from_error_body(200, br#"{"tid":"T1"}"#).is_none());
        assert!(KakaoPayError::from_error_body(502, b"<html>bad gateway</html>").is_none());
    }

    #[test]
    fn unexpected_truncates_body() {
        let body = "x".repeat(1000);
        let err = KakaoPayError::unexpected(502, body.as_bytes(), "not JSON");
        let KakaoPayError::UnexpectedResponse { detail, .. } = &err else {
            panic!("{err:?}");
        };
        assert!(detail.len() < 300, "{}", detail.len());
        assert!(err.is_transient());
        assert!(err.outcome_unknown());
    }

    #[test]
    fn transient_classification() {
        assert!(KakaoPayError::Timeout.is_transient());
        assert!(KakaoPayError::Connect("refused".into()).is_transient());
        assert!(KakaoPayError::Transport("reset".into()).is_transient());
        for code in [-1, -500, -503, -9798, -429, -10] {
            assert!(api(500, code, None).is_transient(), "{code}");
        }
        assert!(api(503, -9798, None).is_transient());
        assert!(api(400, -780, Some("USER_LOCKED")).is_transient());
        assert!(
            api(502, -999, None).is_transient(),
            "5xx without a -7xx code"
        );
        for code in [
            -2, -401, -403, -701, -702, -708, -710, -721, -723, -731, -784,
        ] {
            assert!(!api(400, code, None).is_transient(), "{code}");
        }
        assert!(!api(401, -401, None).is_transient());
        assert!(
            !api(500, -780, None).is_transient(),
            "-7xx is business even on 500"
        );
        assert!(!api(500, -781, Some("6666")).is_transient());
        assert!(!KakaoPayError::unexpected(200, b"{}", "x").is_transient());
    }

    #[test]
    fn outcome_unknown_classification() {
        assert!(KakaoPayError::Timeout.outcome_unknown());
        assert!(KakaoPayError::Transport("reset".into()).outcome_unknown());
        assert!(!KakaoPayError::Connect("refused".into()).outcome_unknown());
        assert!(api(400, -702, None).outcome_unknown());
        assert!(api(400, -785, None).outcome_unknown());
        assert!(api(400, -780, Some("BANK_FIRM_UNKNOWN")).outcome_unknown());
        assert!(api(500, -500, None).outcome_unknown());
        assert!(api(500, -780, None).outcome_unknown(), "any 5xx");
        assert!(KakaoPayError::unexpected(200, b"garbage", "x").outcome_unknown());
        for code in [
            -2, -401, -701, -706, -707, -708, -710, -721, -723, -783, -784,
        ] {
            assert!(!api(400, code, None).outcome_unknown(), "{code}");
        }
        assert!(!api(400, -780, Some("USER_LOCKED")).outcome_unknown());
        assert!(!api(401, -401, None).outcome_unknown());
        assert!(!KakaoPayError::unexpected(404, b"<html>", "x").outcome_unknown());
    }

    #[test]
    fn display_includes_code_and_method_result() {
        let err = api(400, -780, Some("USER_LOCKED"));
        let text = err.to_string();
        assert!(
            text.contains("-780") && text.contains("USER_LOCKED"),
            "{text}"
        );
    }
}
