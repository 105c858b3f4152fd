//! The root span of every HTTP request, with credentials kept out of it.
//!
//! `tracing-actix-web`'s default span records the full request target, so the approval
//! request's `pg_token` (and any `?token=`) would reach every log line and trace of that
//! request. [`RedactedRootSpan`] records the same OpenTelemetry fields, but the target
//! passes through [`redact_target`] first. Wrap an `App` with [`tracing_logger`].

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::HttpMessage;
use tracing::Span;
use tracing_actix_web::{DefaultRootSpanBuilder, RootSpanBuilder, TracingLogger};

/// What replaces the value of a sensitive query parameter.
pub const REDACTED: &str = "[REDACTED]";

/// The request-tracing middleware every service wraps its `App` with.
pub fn tracing_logger() -> TracingLogger<RedactedRootSpan> {
    TracingLogger::<RedactedRootSpan>::new()
}

/// A [`RootSpanBuilder`] recording the request target with credentials redacted.
pub struct RedactedRootSpan;

impl RootSpanBuilder for RedactedRootSpan {
    fn on_request_start(request: &ServiceRequest) -> Span {
        let method = request.method().as_str().to_owned();
        let route = request
            .match_pattern()
            .unwrap_or_else(|| "default".to_owned());
        let target = redact_target(
            request
                .uri()
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or(""),
        );
        let connection = request.connection_info();
        let user_agent = request
            .headers()
            .get("User-Agent")
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        let request_id = request
            .extensions()
            .get::<tracing_actix_web::RequestId>()
            .map(ToString::to_string)
            .unwrap_or_default();
        let span = tracing::info_span!(
            "HTTP request",
            http.method = %method,
            http.route = %route,
            http.flavor = ?request.version(),
            http.scheme = %connection.scheme(),
            http.host = %connection.host(),
            http.client_ip = %connection.realip_remote_addr().unwrap_or(""),
            http.user_agent = %user_agent,
            http.target = %target,
            http.status_code = tracing::field::Empty,
            otel.name = %format!("{method} {route}"),
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            trace_id = tracing::field::Empty,
            request_id = %request_id,
            exception.message = tracing::field::Empty,
            exception.details = tracing::field::Empty,
        );
        let traceparent = request
            .headers()
            .get(crate::telemetry::TRACEPARENT)
            .and_then(|v| v.to_str().ok());
        crate::telemetry::continue_trace(&span, traceparent);
        span
    }

    fn on_request_end<B: MessageBody>(
        span: Span,
        outcome: &Result<ServiceResponse<B>, actix_web::Error>,
    ) {
        DefaultRootSpanBuilder::on_request_end(span, outcome);
    }
}

/// True for a query parameter (or header-like name) that carries a credential:
/// anything naming a token, secret, password, signature or key.
pub fn is_sensitive(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "token",
        "secret",
        "password",
        "passwd",
        "signature",
        "key",
        "auth",
    ]
    .iter()
    .any(|word| name.contains(word))
}

/// `path?query` with the value of every sensitive parameter ([`is_sensitive`]) replaced
/// by [`REDACTED`]; the rest is kept byte for byte.
pub fn redact_target(target: &str) -> String {
    let Some((path, query)) = target.split_once('?') else {
        return target.to_owned();
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| {
            let raw_name = pair.split_once('=').map_or(pair, |(name, _)| name);
            // Decoded, so `pg%5Ftoken` is caught as well as `pg_token`.
            let name: String = url::form_urlencoded::parse(raw_name.as_bytes())
                .next()
                .map(|(name, _)| name.into_owned())
                .unwrap_or_default();
            if is_sensitive(&name) {
                format!("{raw_name}={REDACTED}")
            } else {
                pair.to_owned()
            }
        })
        .collect();
    format!("{path}?{}", pairs.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_the_query_are_redacted_and_the_rest_is_kept() {
        assert_eq!(
            redact_target("/payments/1/approve?pg_token=abc123&x=1"),
            "/payments/1/approve?pg_token=[REDACTED]&x=1"
        );
        assert_eq!(
            redact_target("/orders/1?wait=10&token=t0k&Secret=s&api_key=k&pg%5Ftoken=v"),
            "/orders/1?wait=10&token=[REDACTED]&Secret=[REDACTED]&api_key=[REDACTED]&pg%5Ftoken=[REDACTED]"
        );
        assert_eq!(redact_target("/orders/1"), "/orders/1");
        assert_eq!(redact_target("/orders?a&b=2"), "/orders?a&b=2");
    }
}
