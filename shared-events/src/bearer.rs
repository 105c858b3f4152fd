//! Bearer-token authentication (RFC 6750) of the operators' APIs: the mail history
//! (`NOTIFIER_API_TOKEN`) and the payment look-ups (`PAYMENT_API_TOKEN`). No token is a
//! 401 with `WWW-Authenticate: Bearer`, a wrong one a 403. Tokens are compared in
//! constant time, and the token a service needs has no default: a service that fell
//! back to a well-known token would answer anyone. A service hands its token to
//! [`crate::http::HttpApi`]; a handler with an [`Operator`] argument runs only for a caller
//! that sent it.

use crate::problem::Problem;
use actix_web::dev::Payload;
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse, ResponseError};
use secrecy::{ExposeSecret, SecretString};
use std::future::{ready, Ready};
use subtle::ConstantTimeEq;

/// The token an API's callers must send, and the setting it comes from.
#[derive(Debug, Clone)]
pub struct ApiToken {
    secret: SecretString,
    setting: &'static str,
    /// Named in a 401's `WWW-Authenticate` (the service).
    realm: &'static str,
}

impl ApiToken {
    /// The token of `setting` (an environment variable), or why the service must not
    /// start: it is unset or blank. `api` names what it guards, for the message.
    pub fn required(
        token: Option<&SecretString>,
        setting: &'static str,
        realm: &'static str,
        api: &str,
    ) -> anyhow::Result<Self> {
        match token {
            Some(token) if !token.expose_secret().trim().is_empty() => Ok(Self {
                secret: token.clone(),
                setting,
                realm,
            }),
            _ => anyhow::bail!(
                "{setting} is not set: {api} needs a bearer token and has no default. \
                 Set it (infra/stack sets one for the local stack)."
            ),
        }
    }

    /// Whether `req` carries this token as `Authorization: Bearer <token>`.
    pub fn check(&self, req: &HttpRequest) -> Result<(), Refused> {
        let Some(value) = req.headers().get(header::AUTHORIZATION) else {
            return Err(Refused::Missing(self.setting));
        };
        let value = value.to_str().unwrap_or_default().trim();
        let token = match value.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            _ => return Err(Refused::OtherScheme),
        };
        if token.is_empty() {
            return Err(Refused::Empty);
        }
        if tokens_match(token, self.secret.expose_secret()) {
            Ok(())
        } else {
            Err(Refused::Wrong)
        }
    }
}

/// Extractor: present in a handler's arguments, the handler runs only for a caller that
/// sent the service's [`ApiToken`] (app data).
#[derive(Debug)]
pub struct Operator;

impl FromRequest for Operator {
    type Error = Rejected;
    type Future = Ready<Result<Self, Rejected>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let checked = match req.app_data::<web::Data<ApiToken>>() {
            Some(token) => token.check(req).map_err(|refused| Rejected {
                refused,
                realm: token.realm,
            }),
            // A programming error: the app was assembled without its token.
            None => Err(Rejected {
                refused: Refused::Unconfigured,
                realm: "",
            }),
        };
        ready(checked.map(|()| Operator))
    }
}

/// A request [`Operator`] turned away, as its problem response.
#[derive(Debug, thiserror::Error)]
#[error("{refused}")]
pub struct Rejected {
    refused: Refused,
    realm: &'static str,
}

impl ResponseError for Rejected {
    fn status_code(&self) -> StatusCode {
        self.refused.status()
    }

    fn error_response(&self) -> HttpResponse {
        if self.refused == Refused::Unconfigured {
            tracing::error!("An operator route is mounted without its API token.");
        }
        self.refused.response(self.realm)
    }
}

/// Why a request was not let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// No `Authorization` header; the setting names the token to send.
    #[error("no bearer token")]
    Missing(&'static str),
    #[error("not the Bearer scheme")]
    OtherScheme,
    #[error("an empty bearer token")]
    Empty,
    #[error("the bearer token is not valid for this API")]
    Wrong,
    #[error("the service has no API token (a programming error)")]
    Unconfigured,
}

impl Refused {
    pub fn status(&self) -> StatusCode {
        match self {
            Refused::Wrong => StatusCode::FORBIDDEN,
            Refused::Unconfigured => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::UNAUTHORIZED,
        }
    }

    pub fn problem(&self) -> Problem {
        let detail = match self {
            Refused::Missing(setting) => {
                format!("Send `Authorization: Bearer <token>` ({setting}).")
            }
            Refused::OtherScheme => "Only the Bearer authentication scheme is accepted.".into(),
            Refused::Empty => "The bearer token is empty.".into(),
            Refused::Unconfigured => return Problem::internal(),
            Refused::Wrong => {
                return Problem::new(
                    StatusCode::FORBIDDEN,
                    "/problems/wrong-token",
                    "Forbidden",
                    "The bearer token is not valid for this API.",
                )
            }
        };
        Problem::new(
            StatusCode::UNAUTHORIZED,
            "/problems/token-required",
            "Authentication required",
            detail,
        )
    }

    /// The problem response; a 401 names the scheme and `realm` (RFC 6750 §3).
    pub fn response(&self, realm: &'static str) -> HttpResponse {
        let mut response = self.problem().response();
        if self.status() == StatusCode::UNAUTHORIZED {
            let challenge = format!("Bearer realm=\"{realm}\"");
            if let Ok(value) = HeaderValue::from_str(&challenge) {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, value);
            }
        }
        response
    }
}

/// Constant time in the tokens' contents (lengths are not secret enough to hide).
fn tokens_match(given: &str, expected: &str) -> bool {
    bool::from(given.as_bytes().ct_eq(expected.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn check(header: Option<&str>) -> Result<(), Refused> {
        let token = SecretString::from("s3cret");
        let token = ApiToken::required(Some(&token), "TEST_API_TOKEN", "test", "the test API")
            .expect("a token");
        let mut req = TestRequest::default();
        if let Some(h) = header {
            req = req.insert_header((header::AUTHORIZATION, h));
        }
        token.check(&req.to_http_request())
    }

    #[test]
    fn tokens_are_checked() {
        assert_eq!(check(Some("Bearer s3cret")), Ok(()));
        assert_eq!(check(Some("bearer   s3cret ")), Ok(()));
        for (header, status) in [
            (None, StatusCode::UNAUTHORIZED),
            (Some("Basic czNjcmV0"), StatusCode::UNAUTHORIZED),
            (Some("Bearer "), StatusCode::UNAUTHORIZED),
            (Some("Bearer s3cre"), StatusCode::FORBIDDEN),
            (Some("Bearer s3cret2"), StatusCode::FORBIDDEN),
        ] {
            let refused = check(header).expect_err("refused");
            assert_eq!(refused.status(), status, "{header:?}");
            assert_eq!(refused.problem().status, status.as_u16(), "{header:?}");
        }
    }

    #[test]
    fn a_401_names_the_scheme_and_the_setting_but_never_the_token() {
        let response = check(None).expect_err("refused").response("payment");
        assert_eq!(
            response.headers().get(header::WWW_AUTHENTICATE).unwrap(),
            "Bearer realm=\"payment\""
        );
        let problem = check(None).expect_err("refused").problem();
        assert!(
            problem.detail.contains("TEST_API_TOKEN"),
            "{}",
            problem.detail
        );
        for refused in [Refused::OtherScheme, Refused::Empty, Refused::Wrong] {
            assert!(!refused.problem().detail.contains("s3cret"));
        }
    }

    #[actix_web::test]
    async fn an_operator_route_runs_only_for_the_token() {
        use actix_web::{test, App};
        async fn lookup(_: Operator) -> HttpResponse {
            HttpResponse::Ok().finish()
        }
        let token = SecretString::from("s3cret");
        let token =
            ApiToken::required(Some(&token), "TEST_API_TOKEN", "test", "x").expect("a token");
        let app = test::init_service(
            App::new()
                .app_data(web::Data::new(token))
                .route("/lookup", web::get().to(lookup)),
        )
        .await;
        for (authorization, status) in [
            (None, 401),
            (Some("Bearer nope"), 403),
            (Some("Bearer s3cret"), 200),
        ] {
            let mut request = test::TestRequest::get().uri("/lookup");
            if let Some(value) = authorization {
                request = request.insert_header((header::AUTHORIZATION, value));
            }
            let response = test::call_service(&app, request.to_request()).await;
            assert_eq!(response.status().as_u16(), status, "{authorization:?}");
        }
        let unconfigured =
            test::init_service(App::new().route("/lookup", web::get().to(lookup))).await;
        let request = test::TestRequest::get()
            .uri("/lookup")
            .insert_header((header::AUTHORIZATION, "Bearer s3cret"));
        let response = test::call_service(&unconfigured, request.to_request()).await;
        assert_eq!(
            response.status(),
            StatusCode::INTERNAL_SERVER_ERROR,
            "fails closed"
        );
    }

    #[test]
    fn without_a_token_the_service_does_not_start() {
        let error = ApiToken::required(None, "TEST_API_TOKEN", "test", "the test API")
            .expect_err("no token")
            .to_string();
        assert!(error.contains("TEST_API_TOKEN"), "{error}");
        let blank = SecretString::from("  ");
        assert!(ApiToken::required(Some(&blank), "TEST_API_TOKEN", "test", "x").is_err());
    }
}
