//! The one error type of payment-service's HTTP API, and its mapping to responses.
//!
//! Policy: a caller's mistake (unknown payment, missing `pg_token`, bad id) gets a
//! problem+json body saying what is wrong. A gateway that cannot be reached gets a 503
//! that tells the shopper to retry; the payment is left where a retry is safe. Everything
//! else is logged with its cause and answered with an opaque 500. Secrets and tokens
//! never appear in a body or a log line.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use shared_events::db::DbError;
use shared_events::http::{InvalidParam, Problem};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("invalid request")]
    Invalid(Vec<InvalidParam>),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("payment gateway unavailable")]
    GatewayUnavailable,
    /// Kakao Pay may have charged the shopper but has not confirmed it yet.
    #[error("payment outcome not known yet")]
    OutcomePending,
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

impl From<crate::checkout::CheckoutError> for ApiError {
    fn from(error: crate::checkout::CheckoutError) -> Self {
        use crate::checkout::CheckoutError as E;
        match error {
            E::UnknownPayment => ApiError::NotFound("payment"),
            E::WrongPgToken => ApiError::Invalid(vec![InvalidParam::new(
                "pg_token",
                "is not valid for this payment; the payment can still be paid",
            )]),
            E::GatewayUnavailable => ApiError::GatewayUnavailable,
            E::OutcomePending => ApiError::OutcomePending,
            E::Store(error) => error.into(),
        }
    }
}

impl ApiError {
    fn problem(&self) -> Problem {
        use StatusCode as S;
        match self {
            ApiError::Invalid(params) => Problem::new(
                S::BAD_REQUEST,
                "/problems/invalid-request",
                "Invalid request",
                "One or more parameters are invalid.",
            )
            .with_invalid_params(params.clone()),
            ApiError::NotFound(what) => Problem::not_found(what),
            ApiError::GatewayUnavailable => Problem::new(
                S::SERVICE_UNAVAILABLE,
                "/problems/gateway-unavailable",
                "Payment gateway unavailable",
                "Kakao Pay could not be reached; nothing was charged. Try again shortly.",
            ),
            ApiError::OutcomePending => Problem::new(
                S::SERVICE_UNAVAILABLE,
                "/problems/payment-pending",
                "Payment being confirmed",
                "Kakao Pay has not confirmed the payment yet; it is being checked. Do not pay again: the order shows the outcome shortly.",
            ),
            ApiError::Unavailable(_) => Problem::store_unavailable("payment store"),
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
        self.problem().response()
    }
}
