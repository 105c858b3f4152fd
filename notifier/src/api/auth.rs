//! Bearer-token authentication of the history API: 401 (with `WWW-Authenticate:
//! Bearer`) without a token, 403 with a wrong one. Tokens are compared in constant time.

use super::error::ApiError;
use super::ApiState;
use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest};
use secrecy::{ExposeSecret, SecretString};
use std::future::{ready, Ready};
use subtle::ConstantTimeEq;

/// The history API's token, or why the service must not start: a shop that silently fell
/// back to a well-known token would serve every shopper's mail history to anyone.
pub fn required_token(token: Option<&SecretString>) -> anyhow::Result<SecretString> {
    match token {
        Some(token) if !token.expose_secret().trim().is_empty() => Ok(token.clone()),
        _ => anyhow::bail!(
            "NOTIFIER_API_TOKEN is not set: the mail history API (GET /notifications) needs \
             a bearer token and has no default. Set it (infra/stack sets one for the local stack)."
        ),
    }
}

/// Extractor: present in a handler's arguments, the request is authenticated.
#[derive(Debug)]
pub struct Authorized;

impl FromRequest for Authorized {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let Some(state) = req.app_data::<web::Data<ApiState>>() else {
            return ready(Err(ApiError::StateMissing));
        };
        ready(authorize(req, &state.api_token))
    }
}

pub fn authorize(req: &HttpRequest, expected: &SecretString) -> Result<Authorized, ApiError> {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return Err(ApiError::Unauthorized(
            "Send `Authorization: Bearer <token>` (NOTIFIER_API_TOKEN).",
        ));
    };
    let value = value.to_str().unwrap_or_default().trim();
    let token = match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
        _ => {
            return Err(ApiError::Unauthorized(
                "Only the Bearer authentication scheme is accepted.",
            ))
        }
    };
    if token.is_empty() {
        return Err(ApiError::Unauthorized("The bearer token is empty."));
    }
    if tokens_match(token, expected.expose_secret()) {
        Ok(Authorized)
    } else {
        Err(ApiError::Forbidden)
    }
}

/// Constant time in the tokens' contents (lengths are not secret enough to hide).
fn tokens_match(given: &str, expected: &str) -> bool {
    bool::from(given.as_bytes().ct_eq(expected.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::StatusCode;
    use actix_web::test::TestRequest;

    fn check(header: Option<&str>) -> Result<Authorized, ApiError> {
        let mut req = TestRequest::default();
        if let Some(h) = header {
            req = req.insert_header((header::AUTHORIZATION, h));
        }
        authorize(&req.to_http_request(), &SecretString::from("s3cret"))
    }

    #[test]
    fn tokens_are_checked() {
        assert!(check(Some("Bearer s3cret")).is_ok());
        assert!(check(Some("bearer   s3cret ")).is_ok());
        for (header, status) in [
            (None, StatusCode::UNAUTHORIZED),
            (Some("Basic czNjcmV0"), StatusCode::UNAUTHORIZED),
            (Some("Bearer "), StatusCode::UNAUTHORIZED),
            (Some("Bearer s3cre"), StatusCode::FORBIDDEN),
            (Some("Bearer s3cret2"), StatusCode::FORBIDDEN),
        ] {
            let problem = check(header).expect_err("rejected");
            assert_eq!(
                actix_web::ResponseError::status_code(&problem),
                status,
                "{header:?}"
            );
        }
    }

    #[test]
    fn without_a_token_the_service_does_not_start() {
        let error = required_token(None).expect_err("no token").to_string();
        assert!(error.contains("NOTIFIER_API_TOKEN"), "{error}");
        assert!(required_token(Some(&SecretString::from("  "))).is_err());
        let token = SecretString::from("given");
        assert_eq!(
            required_token(Some(&token)).expect("given").expose_secret(),
            "given"
        );
    }
}
