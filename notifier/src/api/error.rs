//! The one error type of the history API, and its mapping to responses: every error is
//! the workspace's one `application/problem+json` body ([`shared_events::http::Problem`],
//! RFC 9457, `type` under `/problems/`), bad parameters listed in `invalid_params`.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use shared_events::http::{InvalidParam, Problem};

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Query or path parameters that cannot be used, each named with its reason.
    #[error("Invalid parameter(s): {}.", names(.0))]
    InvalidParams(Vec<InvalidParam>),
    /// No usable bearer token: why, in words for the caller.
    #[error("authentication required: {0}")]
    Unauthorized(&'static str),
    #[error("the bearer token is not valid for this API")]
    Forbidden,
    #[error("no notification {0}")]
    NotFound(String),
    #[error("history store: {0}")]
    Store(#[source] StoreError),
    /// The application was assembled without its state (a programming error).
    #[error("API state missing")]
    StateMissing,
}

impl ApiError {
    pub fn invalid_param(name: &str, reason: impl Into<String>) -> Self {
        Self::InvalidParams(vec![InvalidParam::new(name, reason)])
    }

    fn problem(&self) -> Problem {
        match self {
            ApiError::InvalidParams(params) => Problem::new(
                StatusCode::BAD_REQUEST,
                "/problems/invalid-parameter",
                "Invalid request parameter",
                self.to_string(),
            )
            .with_invalid_params(params.clone()),
            ApiError::Unauthorized(detail) => Problem::new(
                StatusCode::UNAUTHORIZED,
                "/problems/token-required",
                "Authentication required",
                *detail,
            ),
            ApiError::Forbidden => Problem::new(
                StatusCode::FORBIDDEN,
                "/problems/wrong-token",
                "Forbidden",
                "The bearer token is not valid for this API.",
            ),
            ApiError::NotFound(_) => Problem::not_found("notification"),
            ApiError::Store(error) if error.transient => {
                Problem::store_unavailable("history store")
            }
            ApiError::Store(_) | ApiError::StateMissing => Problem::internal(),
        }
    }
}

fn names(params: &[InvalidParam]) -> String {
    let names: Vec<&str> = params.iter().map(|p| p.name.as_str()).collect();
    names.join(", ")
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        ApiError::Store(error)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.problem().status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        if let ApiError::Store(_) | ApiError::StateMissing = self {
            tracing::warn!(error.message = %self, "History request failed.");
        }
        let mut response = self.problem().response();
        if let ApiError::Unauthorized(_) = self {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"notifier\""),
            );
        }
        response
    }
}
