//! Reading a request: a bounded body, JSON whose refused fields are named, the order id
//! of a path, and the preferences of a wait (`Prefer: wait`, `?wait=`, `If-None-Match`).

use crate::error::ApiError;
use crate::view::{ETag, Rendered};
use actix_web::http::header::{self, HeaderName};
use actix_web::{web, HttpRequest, HttpResponse, HttpResponseBuilder};
use futures::StreamExt;
use shared_events::http::InvalidParam;
use std::time::Duration;
use uuid::Uuid;

/// Reads the body, refusing it as soon as it passes `limit` (chunked bodies included).
pub(crate) async fn read_limited(
    mut body: web::Payload,
    limit: usize,
) -> Result<web::BytesMut, ApiError> {
    let mut bytes = web::BytesMut::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| match e {
            actix_web::error::PayloadError::Overflow => ApiError::PayloadTooLarge { limit },
            other => ApiError::MalformedJson(other.to_string()),
        })?;
        if bytes.len() + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// Parses JSON, naming the field at fault (`items[0].quantity: invalid type …`).
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::MalformedJson(inner.to_string());
        }
        let message = inner.to_string();
        let message = message.split(" at line ").next().unwrap_or(&message);
        // serde names a missing field in its message, at the path of the enclosing object.
        let (name, reason) = match message.strip_prefix("missing field `") {
            Some(rest) => {
                let field = rest.trim_end_matches('`');
                let name = if path == "." {
                    field.to_owned()
                } else {
                    format!("{path}.{field}")
                };
                (name, "is required".to_owned())
            }
            None => (path, message.to_owned()),
        };
        ApiError::Invalid(vec![shared_events::http::InvalidParam::new(name, reason)])
    })
}

/// An id that is not a UUID names no order.
pub(crate) fn order_id(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| ApiError::NotFound("order"))
}

/// The order's JSON with its `ETag`.
pub(crate) fn order_body(mut response: HttpResponseBuilder, view: &Rendered) -> HttpResponse {
    response
        .insert_header((header::ETAG, view.etag.header_value()))
        .content_type(header::ContentType::json())
        .body(view.body.clone())
}

pub(crate) const PREFER: HeaderName = HeaderName::from_static("prefer");
pub(crate) const PREFERENCE_APPLIED: HeaderName = HeaderName::from_static("preference-applied");

/// How long the client asked to wait for a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Wait {
    pub(crate) duration: Duration,
    /// Asked with `Prefer` (answered with `Preference-Applied`), not `?wait=`.
    pub(crate) preferred: bool,
}

/// `?wait=N` or else `Prefer: wait=N` (RFC 7240); `None` when neither is given.
pub(crate) fn requested_wait(
    request: &HttpRequest,
    max: Duration,
) -> Result<Option<Wait>, ApiError> {
    let (name, value, preferred) = if let Some(value) = query_wait(request) {
        ("wait", value, false)
    } else if let Some(value) = prefer_wait(request) {
        ("Prefer: wait", value, true)
    } else {
        return Ok(None);
    };
    let duration = parse_wait(&value, max)
        .map_err(|reason| ApiError::InvalidParameter(vec![InvalidParam::new(name, reason)]))?;
    Ok(Some(Wait {
        duration,
        preferred,
    }))
}

fn query_wait(request: &HttpRequest) -> Option<String> {
    url::form_urlencoded::parse(request.query_string().as_bytes())
        .find(|(key, _)| key == "wait")
        .map(|(_, value)| value.into_owned())
}

/// The value of the `wait` preference in any `Prefer` header (`respond-async, wait=10`).
fn prefer_wait(request: &HttpRequest) -> Option<String> {
    request
        .headers()
        .get_all(PREFER)
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .find_map(|preference| {
            let preference = preference.split(';').next().unwrap_or_default();
            let (name, value) = preference.split_once('=')?;
            name.trim()
                .eq_ignore_ascii_case("wait")
                .then(|| value.trim().trim_matches('"').to_owned())
        })
}

/// Whole seconds, `10` or `10s`, at most `max`.
fn parse_wait(value: &str, max: Duration) -> Result<Duration, String> {
    let digits = value.strip_suffix('s').unwrap_or(value);
    let seconds = Some(digits)
        .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|d| d.parse::<u64>().ok())
        .ok_or_else(|| "must be a whole number of seconds, such as 10 or 10s".to_owned())?;
    if seconds > max.as_secs() {
        return Err(format!("must be at most {} seconds", max.as_secs()));
    }
    Ok(Duration::from_secs(seconds))
}

/// The tags of `If-None-Match`; `None` without one, or for `*` (any current version).
pub(crate) fn if_none_match(request: &HttpRequest) -> Option<Vec<ETag>> {
    let mut tags = Vec::new();
    for value in request.headers().get_all(header::IF_NONE_MATCH) {
        for tag in value.to_str().ok()?.split(',') {
            if tag.trim() == "*" {
                return None;
            }
            tags.extend(ETag::parse(tag));
        }
    }
    (!tags.is_empty()).then_some(tags)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    const MAX: Duration = Duration::from_secs(30);

    fn wait_of(request: TestRequest) -> Result<Option<Wait>, ApiError> {
        requested_wait(&request.to_http_request(), MAX)
    }

    #[test]
    fn waits_are_whole_seconds_up_to_the_maximum() {
        assert_eq!(parse_wait("10", MAX), Ok(Duration::from_secs(10)));
        assert_eq!(parse_wait("10s", MAX), Ok(Duration::from_secs(10)));
        assert_eq!(parse_wait("30", MAX), Ok(MAX));
        for bad in [
            "",
            "abc",
            "-1",
            "+1",
            "1.5",
            "s",
            "31",
            "99999999999999999999",
        ] {
            assert!(parse_wait(bad, MAX).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_query_wins_over_the_preference() {
        let request = TestRequest::get()
            .uri("/orders/x?wait=2")
            .insert_header(("Prefer", "wait=5"));
        let wait = wait_of(request).expect("valid").expect("a wait");
        assert_eq!(wait.duration, Duration::from_secs(2));
        assert!(!wait.preferred);
    }

    #[test]
    fn the_wait_preference_is_found_among_others() {
        let request = TestRequest::get().insert_header(("Prefer", "respond-async, WAIT=7; x=y"));
        let wait = wait_of(request).expect("valid").expect("a wait");
        assert_eq!(
            wait,
            Wait {
                duration: Duration::from_secs(7),
                preferred: true
            }
        );
        let other = TestRequest::get().insert_header(("Prefer", "return=minimal"));
        assert_eq!(wait_of(other).expect("valid"), None);
    }

    #[test]
    fn a_bad_wait_names_where_it_came_from() {
        let names = |request: TestRequest| match wait_of(request) {
            Err(ApiError::InvalidParameter(params)) => {
                params.into_iter().map(|p| p.name).collect::<Vec<_>>()
            }
            other => panic!("not refused: {other:?}"),
        };
        assert_eq!(names(TestRequest::get().uri("/o?wait=abc")), ["wait"]);
        let header = TestRequest::get().insert_header(("Prefer", "wait=abc"));
        assert_eq!(names(header), ["Prefer: wait"]);
    }

    #[test]
    fn if_none_match_lists_tags_and_star_means_now() {
        let request = TestRequest::get()
            .insert_header(("If-None-Match", "\"a\", W/\"b\""))
            .to_http_request();
        let tags = if_none_match(&request).expect("tags");
        assert_eq!(
            tags.iter().map(ETag::opaque).collect::<Vec<_>>(),
            ["a", "b"]
        );
        let star = TestRequest::get()
            .insert_header(("If-None-Match", "*"))
            .to_http_request();
        assert_eq!(if_none_match(&star), None);
    }
}
