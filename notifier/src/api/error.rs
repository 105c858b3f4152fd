//! The one error type of the history API, and its mapping to responses: every error is
//! the workspace's one `application/problem+json` body ([`shared_events::http::Problem`],
//! RFC 9457, `type` under `/problems/`), bad parameters listed in `invalid_params`.
//! [`HistoryErrors`] are those every history operation's document entry lists.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use shared_events::http::{InvalidParam, Problem};
use std::collections::BTreeMap;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::{ContentBuilder, Ref, RefOr};

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Query or path parameters that cannot be used, each named with its reason.
    #[error("Invalid parameter(s): {}.", names(.0))]
    InvalidParams(Vec<InvalidParam>),
    #[error("no notification {0}")]
    NotFound(String),
    #[error("history store: {0}")]
    Store(#[source] StoreError),
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
            ApiError::NotFound(_) => Problem::not_found("notification"),
            ApiError::Store(error) if error.transient => {
                Problem::store_unavailable("history store")
            }
            ApiError::Store(_) => Problem::internal(),
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
        if let ApiError::Store(_) = self {
            tracing::warn!(error.message = %self, "History request failed.");
        }
        self.problem().response()
    }
}

/// The failures every history operation can answer, whatever its parameters: no token
/// (401), a wrong one (403), the store failing (500) or unreachable (503).
pub struct HistoryErrors;

impl utoipa::IntoResponses for HistoryErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let unauthorized = ResponseBuilder::from(problem(
            "No usable bearer token (missing, another scheme, or empty)",
        ))
        .header(
            "WWW-Authenticate",
            HeaderBuilder::new()
                .description(Some("`Bearer realm=\"notifier\"`"))
                .build(),
        )
        .build();
        BTreeMap::from([
            ("401".to_owned(), unauthorized.into()),
            (
                "403".to_owned(),
                problem("The bearer token is not this API's").into(),
            ),
            (
                "500".to_owned(),
                problem("The history store failed (the cause is logged, never sent)").into(),
            ),
            (
                "503".to_owned(),
                problem("The history store is unreachable; try again shortly").into(),
            ),
        ])
    }
}

/// A response of `description` whose body is a [`Problem`].
pub fn problem(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/problem+json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        )
        .build()
}
