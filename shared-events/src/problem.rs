//! RFC 9457 problem details (`application/problem+json`): the one error body of every
//! service (re-exported by [`crate::http`]).

use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use serde::Serialize;

/// One invalid input field: its JSON path (`items[0].quantity`) and why it was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct InvalidParam {
    pub name: String,
    pub reason: String,
}

impl InvalidParam {
    pub fn new(name: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            reason: reason.into(),
        }
    }
}

/// A problem-details body. `type` is a stable, relative URI naming the kind of problem.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    #[schema(value_type = String, example = "/problems/invalid-order")]
    pub kind: &'static str,
    #[schema(value_type = String)]
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    /// The fields (or parameters) at fault, each with its reason; absent when none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(required = false)]
    pub invalid_params: Vec<InvalidParam>,
}

impl Problem {
    pub fn new(
        status: StatusCode,
        kind: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            kind,
            title,
            status: status.as_u16(),
            detail: detail.into(),
            invalid_params: Vec::new(),
        }
    }

    /// 404: no such `what` (order, payment…).
    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "/problems/not-found",
            "Not found",
            format!("No such {what}."),
        )
    }

    /// 400: a delivered event envelope that does not parse (case 1's `/internal/events`).
    pub fn invalid_event(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "/problems/invalid-event",
            "Invalid event",
            detail,
        )
    }

    /// 503: the service's own store cannot be reached; the request may be retried.
    pub fn store_unavailable(store: &str) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "/problems/unavailable",
            "Service unavailable",
            format!("The {store} is unreachable; try again shortly."),
        )
    }

    /// 500 that says nothing of the cause (which is logged, never sent).
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "/problems/internal",
            "Internal error",
            "Something went wrong on our side.",
        )
    }

    pub fn with_invalid_params(mut self, params: Vec<InvalidParam>) -> Self {
        self.invalid_params = params;
        self
    }

    pub fn response(&self) -> HttpResponse {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        HttpResponse::build(status)
            .content_type("application/problem+json")
            .json(self)
    }
}
