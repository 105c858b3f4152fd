//! Error answers in the new API's format:
//! `{"error_code": -7xx, "error_message": "...", "extras": {...}}`.

use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use serde_json::json;

#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub code: i32,
    pub message: String,
    /// `(method_result_code, method_result_message)` for card/bank failures.
    pub extras: Option<(String, String)>,
}

impl ApiError {
    fn new(status: StatusCode, code: i32, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            extras: None,
        }
    }

    /// `-2`: missing or ill-typed parameter. The message names the field.
    pub fn invalid_param(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, -2, message)
    }

    /// `-401`, HTTP 401: bad or missing secret key.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, -401, message)
    }

    /// A payment-logic error (`-7xx`), HTTP 400 as in the current samples.
    pub fn payment(code: i32, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// `-780` approval failure with the card company's reason.
    pub fn declined(method_result_code: &str, method_result_message: &str) -> Self {
        Self {
            extras: Some((method_result_code.into(), method_result_message.into())),
            ..Self::payment(-780, "approval failure!")
        }
    }

    /// `-500`, HTTP 500: transient platform error.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            -500,
            "internal server error",
        )
    }

    /// `-9798`, HTTP 503: service maintenance (Kakao common error table).
    pub fn maintenance() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            -9798,
            "service maintenance",
        )
    }

    /// `-404`: no such API.
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, -404, "wrong url or method")
    }

    pub fn response(&self) -> HttpResponse {
        let mut body = json!({ "error_code": self.code, "error_message": self.message });
        if let Some((code, message)) = &self.extras {
            body["extras"] =
                json!({ "method_result_code": code, "method_result_message": message });
        }
        HttpResponse::build(self.status).json(body)
    }
}
