//! The one error type of order-service's HTTP API, and its mapping to responses.
//!
//! Policy: the shopper's mistakes (bad JSON, invalid fields, oversized bodies, unknown
//! orders) are answered with a problem+json body that says exactly what is wrong and
//! which field. Everything else is the service's problem: it is logged with its full
//! cause chain and answered with an opaque 500 (or 503 when the database is out of
//! reach), never leaking internals such as SQL or connection strings.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use shared_events::db::DbError;
use shared_events::http::{InvalidParam, Problem};

/// `Retry-After` of a wait refused at the bound: waits are short, so one frees soon.
pub const RETRY_WAIT_AFTER_SECS: u64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("invalid order")]
    Invalid(Vec<InvalidParam>),
    /// A query parameter or header of the request (not its body) is unusable.
    #[error("invalid request parameter")]
    InvalidParameter(Vec<InvalidParam>),
    /// Every open wait (long poll or change stream) of this instance is taken.
    #[error("too many open waits")]
    TooManyWaits,
    #[error("request body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("request body larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The order's token is required and none was presented.
    #[error("order token required")]
    TokenRequired,
    /// A token was presented, but it is not this order's.
    #[error("wrong order token")]
    WrongToken,
    /// The `Idempotency-Key` was first used with another request.
    #[error("idempotency key reused")]
    IdempotencyKeyReused,
    /// The mail service's history cannot be read now.
    #[error("mail history unavailable: {0}")]
    MailHistoryUnavailable(#[source] crate::mail_history::MailHistoryError),
    #[error("database unavailable: {0}")]
    Unavailable(#[source] DbError),
    #[error("internal error: {0}")]
    Internal(#[source] DbError),
}

impl From<DbError> for ApiError {
    fn from(error: DbError) -> Self {
        if error.is_unavailable() {
            ApiError::Unavailable(error)
        } else {
            ApiError::Internal(error)
        }
    }
}

impl From<crate::domain::OrderError> for ApiError {
    fn from(error: crate::domain::OrderError) -> Self {
        use crate::domain::OrderError as E;
        match error {
            E::UnknownOrder => ApiError::NotFound("order"),
            E::TokenRequired => ApiError::TokenRequired,
            E::WrongToken => ApiError::WrongToken,
            E::TooManyWaits => ApiError::TooManyWaits,
            E::Invalid(params) => ApiError::Invalid(params),
            E::IdempotencyKeyReused => ApiError::IdempotencyKeyReused,
            E::MailHistory(error) => ApiError::MailHistoryUnavailable(error),
            E::Store(error) => error.into(),
        }
    }
}

impl ApiError {
    fn problem(&self) -> Problem {
        match self {
            ApiError::Invalid(params) => Problem::new(
                StatusCode::BAD_REQUEST,
                "/problems/invalid-order",
                "Invalid order",
                "One or more fields are invalid.",
            )
            .with_invalid_params(params.clone()),
            ApiError::InvalidParameter(params) => Problem::new(
                StatusCode::BAD_REQUEST,
                "/problems/invalid-parameter",
                "Invalid request parameter",
                "One or more request parameters are invalid.",
            )
            .with_invalid_params(params.clone()),
            ApiError::TooManyWaits => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "/problems/too-many-waits",
                "Too many open waits",
                format!(
                    "This instance holds as many waiting requests as it may; retry in {RETRY_WAIT_AFTER_SECS} s."
                ),
            ),
            ApiError::MalformedJson(detail) => Problem::new(
                StatusCode::BAD_REQUEST,
                "/problems/malformed-json",
                "Malformed request body",
                detail.clone(),
            ),
            ApiError::PayloadTooLarge { limit } => Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "/problems/payload-too-large",
                "Request body too large",
                format!("The body must be at most {limit} bytes."),
            ),
            ApiError::NotFound(what) => Problem::not_found(what),
            ApiError::IdempotencyKeyReused => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "/problems/idempotency-key-reused",
                "Idempotency key reused",
                "This Idempotency-Key was first sent with another request; use a new key for a new order.",
            ),
            ApiError::TokenRequired => Problem::new(
                StatusCode::UNAUTHORIZED,
                "/problems/token-required",
                "Order token required",
                "Send the order's token (returned by POST /orders) as `Authorization: Bearer <token>` or `?token=`.",
            ),
            ApiError::WrongToken => Problem::new(
                StatusCode::FORBIDDEN,
                "/problems/wrong-token",
                "Wrong order token",
                "The token presented is not this order's.",
            ),
            ApiError::MailHistoryUnavailable(_) => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "/problems/mail-history-unavailable",
                "Mail history unavailable",
                "The mails' status cannot be read right now; the mails themselves are not affected. Try again shortly.",
            ),
            ApiError::Unavailable(_) => Problem::store_unavailable("order store"),
            ApiError::Internal(_) => Problem::internal(),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.problem().status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        if let ApiError::Unavailable(cause) | ApiError::Internal(cause) = self {
            tracing::error!(error.message = %self, error.cause = ?cause, "Request failed.");
        }
        if let ApiError::MailHistoryUnavailable(cause) = self {
            tracing::warn!(error.message = %cause, "The mail history did not answer.");
        }
        let mut response = self.problem().response();
        if let ApiError::TokenRequired = self {
            response.headers_mut().insert(
                actix_web::http::header::WWW_AUTHENTICATE,
                actix_web::http::header::HeaderValue::from_static("Bearer realm=\"order\""),
            );
        }
        if let ApiError::TooManyWaits = self {
            response.headers_mut().insert(
                actix_web::http::header::RETRY_AFTER,
                actix_web::http::header::HeaderValue::from(RETRY_WAIT_AFTER_SECS),
            );
        }
        response
    }
}
