//! Errors as `application/problem+json` (RFC 9457): `type`, `title`, `status`, `detail`,
//! and for bad parameters `invalid_params: [{name, reason}]`.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use std::fmt;

const TYPE_BASE: &str = "https://saga-shop.example/problems/";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InvalidParam {
    pub name: String,
    pub reason: String,
}

#[derive(Debug, Clone)]
pub struct Problem {
    status: StatusCode,
    slug: &'static str,
    title: &'static str,
    detail: String,
    invalid_params: Vec<InvalidParam>,
}

#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: &'a str,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    invalid_params: &'a [InvalidParam],
}

impl Problem {
    pub fn invalid_params(params: Vec<InvalidParam>) -> Self {
        let names: Vec<&str> = params.iter().map(|p| p.name.as_str()).collect();
        Self {
            status: StatusCode::BAD_REQUEST,
            slug: "invalid-parameters",
            title: "Invalid request parameters",
            detail: format!("Invalid parameter(s): {}.", names.join(", ")),
            invalid_params: params,
        }
    }

    pub fn invalid_param(name: &str, reason: impl Into<String>) -> Self {
        Self::invalid_params(vec![InvalidParam {
            name: name.to_owned(),
            reason: reason.into(),
        }])
    }

    pub fn unauthorized(detail: &str) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            slug: "unauthorized",
            title: "Authentication required",
            detail: detail.to_owned(),
            invalid_params: Vec::new(),
        }
    }

    pub fn forbidden() -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            slug: "forbidden",
            title: "Forbidden",
            detail: "The bearer token is not valid for this API.".to_owned(),
            invalid_params: Vec::new(),
        }
    }

    pub fn not_found(detail: String) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            slug: "not-found",
            title: "Not found",
            detail,
            invalid_params: Vec::new(),
        }
    }

    pub fn unavailable(detail: String) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            slug: "unavailable",
            title: "Service unavailable",
            detail,
            invalid_params: Vec::new(),
        }
    }

    pub fn internal(detail: String) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            slug: "internal",
            title: "Internal error",
            detail,
            invalid_params: Vec::new(),
        }
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl From<crate::store::StoreError> for Problem {
    fn from(error: crate::store::StoreError) -> Self {
        tracing::warn!(%error, "History store error.");
        if error.transient {
            Problem::unavailable("The history store is unavailable; try again.".to_owned())
        } else {
            Problem::internal("The history store failed.".to_owned())
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.title,
            self.detail
        )
    }
}

impl ResponseError for Problem {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let body = Body {
            kind: format!("{TYPE_BASE}{}", self.slug),
            title: self.title,
            status: self.status.as_u16(),
            detail: &self.detail,
            invalid_params: &self.invalid_params,
        };
        let mut response = HttpResponse::build(self.status);
        response.insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        ));
        if self.status == StatusCode::UNAUTHORIZED {
            response.insert_header((
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"notifier\""),
            ));
        }
        response.body(serde_json::to_string(&body).unwrap_or_default())
    }
}
