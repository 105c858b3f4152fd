//! The HTTP routes. Handlers parse input into domain types and call the use cases in
//! `orders` (and the waits in `watch`); no SQL here.

use crate::access::{Access, Presented};
use crate::domain::{OrderRequest, PlaceOrder};
use crate::error::ApiError;
use crate::idempotency::{self, IdempotencyKey, Retry};
use crate::payment_events::PaymentEvents;
use crate::state::AppState;
use crate::view::{ETag, Rendered};
use crate::{orders, watch};
use actix_web::http::header::{self, HeaderName};
use actix_web::{web, HttpRequest, HttpResponse, HttpResponseBuilder};
use futures::StreamExt;
use shared_events::chain::{self, EVENTS_PATH};
use shared_events::http::InvalidParam;
use shared_events::readiness::Readiness;
use std::time::Duration;
use uuid::Uuid;

/// Orders are small; anything bigger is a mistake or an attack.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.configure(shared_events::http::configure_common)
        .route("/readyz", web::get().to(readyz))
        .route("/products", web::get().to(list_products))
        .route("/orders", web::post().to(place_order))
        .route("/orders/{id}", web::get().to(get_order))
        .route("/orders/{id}/events", web::get().to(order_events))
        .route("/orders/{id}/cancel", web::post().to(cancel_order))
        .route("/orders/{id}/timeline", web::get().to(get_timeline))
        .route("/orders/{id}/mails", web::get().to(get_mails))
        .configure(crate::storefront::configure);
}

/// Case 1's routes: every route above, and the input of the payment events that
/// payment-service's HTTP chain delivers.
pub fn configure_with_event_input(cfg: &mut web::ServiceConfig) {
    cfg.route(EVENTS_PATH, web::post().to(receive_event))
        .configure(configure);
}

/// The catalog: what an order may name by `sku`, at the shop's prices.
async fn list_products(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(orders::products(&state.db).await?))
}

/// Places an order (`202`, `Location`); with an `Idempotency-Key`, a retry of the same
/// request answers the first order again (`Idempotent-Replayed: true`).
async fn place_order(
    state: web::Data<AppState>,
    request: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let key = IdempotencyKey::from_request(&request)
        .map_err(|refused| ApiError::InvalidParameter(vec![refused]))?;
    let bytes = read_limited(body, MAX_BODY_BYTES).await?;
    let sent: PlaceOrder = parse_json(&bytes)?;
    let retry = key.map(|key| Retry {
        key,
        fingerprint: idempotency::fingerprint(&sent),
    });
    let order = OrderRequest::parse(sent, state.pricing).map_err(ApiError::Invalid)?;
    let placed = orders::place(
        &state.db,
        &state.outbox,
        order,
        retry,
        state.payment_deadline,
    )
    .await?;
    let mut response = HttpResponse::Accepted();
    response.insert_header((header::LOCATION, format!("/orders/{}", placed.order.row.id)));
    if placed.replayed {
        response.insert_header((idempotency::REPLAYED, "true"));
    }
    Ok(order_body(
        response,
        &Rendered::placed(placed.order, &placed.token),
    ))
}

/// The order; with a wait (`Prefer: wait=N` or `?wait=N`), once it differs from the
/// `If-None-Match` tags (or from what it is now), or unchanged when the wait is over.
async fn get_order(
    state: web::Data<AppState>,
    id: web::Path<String>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let id = order_id(&id)?;
    let presented = Presented::from_request(&request);
    let wait = requested_wait(&request, state.waits.max_wait)?;
    let view = match wait {
        Some(wait) if !wait.duration.is_zero() => {
            let seen = if_none_match(&request);
            let changes = &state.changes;
            watch::until_changed(&state.db, changes, id, &presented, seen, wait.duration).await?
        }
        _ => watch::read(&state.db, id, &presented).await?,
    };
    let mut response = HttpResponse::Ok();
    if let Some(Wait {
        duration,
        preferred: true,
    }) = wait
    {
        response.insert_header((PREFERENCE_APPLIED, format!("wait={}", duration.as_secs())));
    }
    Ok(order_body(response, &view))
}

/// Server-sent events of the order's changes (see `watch::events`).
async fn order_events(
    state: web::Data<AppState>,
    id: web::Path<String>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let id = order_id(&id)?;
    let db = state.db.clone();
    let presented = Presented::from_request(&request);
    let stream = watch::events(db, &state.changes, id, presented, state.waits).await?;
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .streaming(stream))
}

/// The shopper cancels the order (refunded if it was paid); only with its token.
async fn cancel_order(
    state: web::Data<AppState>,
    id: web::Path<String>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let id = order_id(&id)?;
    let presented = Presented::from_request(&request);
    let order = orders::cancel(&state.db, &state.outbox, &state.changes, id, &presented).await?;
    Ok(order_body(
        HttpResponse::Accepted(),
        &Rendered::of(order, Access::Owner),
    ))
}

/// Every step of the order's saga: which event, from which service, when, and what the
/// order service did with it. The shopper's only (the order's token).
async fn get_timeline(
    state: web::Data<AppState>,
    id: web::Path<String>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let id = order_id(&id)?;
    let presented = Presented::from_request(&request);
    let (order, steps) = orders::timeline(&state.db, id, &presented).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "order_id": id,
        "status": order.row.status,
        "steps": steps,
    })))
}

/// The order's mails and what became of them (sent, retrying, …), from the mail
/// service's history. The shopper's only (the order's token); `503` while the history
/// cannot be read.
async fn get_mails(
    state: web::Data<AppState>,
    id: web::Path<String>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let id = order_id(&id)?;
    let presented = Presented::from_request(&request);
    let mails = orders::mails(&state.db, &state.mail_history, id, &presented).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({"order_id": id, "mails": mails})))
}

/// Case 1: a payment event, signed by payment-service (`401` otherwise, nothing changed),
/// handled by the Kafka consumer's handler; the events it causes are delivered before the
/// answer. `200` handled, `400` not an event, `422` refused for good (e.g. an unknown
/// order), `503` try again.
async fn receive_event(
    state: web::Data<AppState>,
    request: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let handler = PaymentEvents {
        db: state.db.clone(),
        outbox: state.outbox.clone(),
    };
    chain::receive_event(
        &request,
        &body,
        &handler,
        &state.outbox,
        "The order store is unavailable; try again shortly.",
    )
    .await
}

/// Ready when start-up is done (migrations, Kafka) and the database answers.
async fn readyz(
    state: web::Data<AppState>,
    readiness: web::Data<Readiness>,
) -> Result<HttpResponse, ApiError> {
    if let Some(waiting_for) = readiness.waiting_for() {
        return Ok(shared_events::http::starting(&waiting_for));
    }
    state.db.ping().await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({"status": "ready"})))
}

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

const PREFER: HeaderName = HeaderName::from_static("prefer");
const PREFERENCE_APPLIED: HeaderName = HeaderName::from_static("preference-applied");

/// How long the client asked to wait for a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Wait {
    duration: Duration,
    /// Asked with `Prefer` (answered with `Preference-Applied`), not `?wait=`.
    preferred: bool,
}

/// `?wait=N` or else `Prefer: wait=N` (RFC 7240); `None` when neither is given.
fn requested_wait(request: &HttpRequest, max: Duration) -> Result<Option<Wait>, ApiError> {
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
fn if_none_match(request: &HttpRequest) -> Option<Vec<ETag>> {
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
