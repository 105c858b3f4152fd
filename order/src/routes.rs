//! The HTTP routes: one table ([`routes`]) that actix-web mounts and the OpenAPI test
//! lists ([`api_doc`]). Handlers parse input into domain types and call the use
//! cases in `orders` (and the waits in `watch`); no SQL here. Each handler's
//! `#[utoipa::path]` is its entry in `/openapi.json`.

pub mod api_doc;

use crate::access::{Access, Presented};
use crate::domain::{OrderRequest, PlaceOrder};
use crate::error::ApiError;
use crate::idempotency::{self, IdempotencyKey, Retry};
use crate::payment_events::PaymentEvents;
use crate::request::{
    if_none_match, order_body, order_id, parse_json, read_limited, requested_wait, Wait,
    PREFERENCE_APPLIED,
};
use crate::state::AppState;
use crate::view::{MailsView, Rendered, TimelineView};
use crate::{orders, watch};
use actix_web::http::header;
use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};
use shared_events::chain::{self, EVENTS_PATH};
use shared_events::http::Problem;
use shared_events::readiness::Readiness;
use shared_events::routes::Router;

/// Orders are small; anything bigger is a mistake or an attack.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Every route of the storefront API and pages (cases 2–4).
pub fn routes<R: Router>(r: &mut R) {
    shared_events::routes::common_routes(r);
    r.route(Method::GET, "/readyz", readyz)
        .route(Method::GET, "/openapi.json", api_doc::openapi_json)
        .route(Method::GET, "/products", list_products)
        .route(Method::POST, "/orders", place_order)
        .route(Method::GET, "/orders/{id}", get_order)
        .route(Method::GET, "/orders/{id}/events", order_events)
        .route(Method::POST, "/orders/{id}/cancel", cancel_order)
        .route(Method::GET, "/orders/{id}/timeline", get_timeline)
        .route(Method::GET, "/orders/{id}/mails", get_mails);
    crate::storefront::routes(r);
}

/// Case 1's routes: every route above, and the input of the payment events that
/// payment-service's HTTP chain delivers.
pub fn routes_with_event_input<R: Router>(r: &mut R) {
    r.route(Method::POST, EVENTS_PATH, receive_event);
    routes(r);
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    shared_events::routes::mount(cfg, routes);
}

pub fn configure_with_event_input(cfg: &mut web::ServiceConfig) {
    shared_events::routes::mount(cfg, routes_with_event_input);
}

/// The catalog: what an order may name by `sku`, at the shop's prices.
#[utoipa::path(
    get, path = "/products", tag = "catalog",
    responses(
        (status = 200, description = "Every product, in the storefront's order", body = Vec<crate::catalog::Product>),
        (status = 503, description = "The order store is unavailable", content_type = "application/problem+json", body = Problem),
    )
)]
pub(crate) async fn list_products(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(orders::products(&state.db).await?))
}

/// Places an order (`202`, `Location`); with an `Idempotency-Key`, a retry of the same
/// request answers the first order again (`Idempotent-Replayed: true`).
#[utoipa::path(
    post, path = "/orders", tag = "orders",
    description = "Places an order PENDING_PAYMENT and answers at once; the payment follows. Lines name catalog products by `sku` (priced by the shop); free-form lines (`name` + `unit_price`) only where the shop allows them. The answer shows the order's `access_token` (the shopper's capability). With an `Idempotency-Key` (16–255 visible ASCII characters, e.g. a UUID), the same request again answers the first order (same id and token, `Idempotent-Replayed: true`); another request with that key is a 422.",
    params(("Idempotency-Key" = Option<String>, Header, description = "One key per checkout; a retry with it never places a second order")),
    request_body(content = crate::domain::PlaceOrder, content_type = "application/json"),
    responses(
        (status = 202, description = "Placed (or, with a known Idempotency-Key, the first order again)", body = api_doc::PlacedOrder,
            headers(("Location" = String, description = "The order's address"), ("ETag" = String), ("Idempotent-Replayed" = Option<String>, description = "`true` on a replay"))),
        (status = 400, description = "Malformed JSON, an invalid field (named in invalid_params), or a bad Idempotency-Key", content_type = "application/problem+json", body = Problem),
        (status = 413, description = "Body over 64 KiB", content_type = "application/problem+json", body = Problem),
        (status = 422, description = "The Idempotency-Key was first used with another request", content_type = "application/problem+json", body = Problem),
        (status = 503, description = "The order store is unavailable; retry with the same key", content_type = "application/problem+json", body = Problem),
    )
)]
pub(crate) async fn place_order(
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
#[utoipa::path(
    get, path = "/orders/{id}", tag = "orders",
    params(
        ("id" = uuid::Uuid, Path, description = "The order's id"),
        ("wait" = Option<String>, Query, description = "Wait up to N seconds (`10` or `10s`) for a change", pattern = "^[0-9]{1,10}s?$"),
        ("token" = Option<String>, Query, description = "The order's token, for a link a browser opens (the Authorization header wins)"),
        ("Prefer" = Option<String>, Header, description = "`wait=N` (RFC 7240): as `?wait=N`, answered with Preference-Applied"),
        ("If-None-Match" = Option<String>, Header, description = "With a wait: answer once the order differs from these tags"),
    ),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The order: the shopper's view with its token, else the public view", body = api_doc::OrderAnswer,
            headers(("ETag" = String), ("Preference-Applied" = Option<String>))),
        (status = 400, description = "An invalid wait", content_type = "application/problem+json", body = Problem),
        (status = 403, description = "A token that is not this order's", content_type = "application/problem+json", body = Problem),
        (status = 404, description = "No such order", content_type = "application/problem+json", body = Problem),
        (status = 503, description = "Too many open waits (Retry-After), or the store is unavailable", content_type = "application/problem+json", body = Problem),
    )
)]
pub(crate) async fn get_order(
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
#[utoipa::path(
    get, path = "/orders/{id}/events", tag = "orders",
    description = "A text/event-stream of the order: one `order` event now and one per change (data: the order's JSON, as GET /orders/{id} shows it), `: keep-alive` comments between; the stream ends once the order is settled (COMPLETED or CANCELLED) or after ORDER_EVENTS_MAX_SECS.",
    params(
        ("id" = uuid::Uuid, Path, description = "The order's id"),
        ("token" = Option<String>, Query, description = "The order's token (EventSource cannot send headers)"),
    ),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The order's changes", content_type = "text/event-stream", body = String),
        (status = 403, description = "A token that is not this order's", content_type = "application/problem+json", body = Problem),
        (status = 404, description = "No such order", content_type = "application/problem+json", body = Problem),
        (status = 503, description = "Too many open waits (Retry-After), or the store is unavailable", content_type = "application/problem+json", body = Problem),
    )
)]
pub(crate) async fn order_events(
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
#[utoipa::path(
    post, path = "/orders/{id}/cancel", tag = "orders",
    description = "An unpaid order is CANCELLED at once; a paid one goes CANCELLING while its payment is refunded, then CANCELLED with refunded_amount. Asking again changes nothing.",
    params(
        ("id" = uuid::Uuid, Path, description = "The order's id"),
        ("token" = Option<String>, Query, description = "The order's token, if not in the Authorization header"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "The order as the cancel left it", body = crate::view::OrderView, headers(("ETag" = String))),
        (status = 401, description = "No token", content_type = "application/problem+json", body = Problem),
        (status = 403, description = "A token that is not this order's", content_type = "application/problem+json", body = Problem),
        (status = 404, description = "No such order", content_type = "application/problem+json", body = Problem),
        (status = 503, description = "The order store is unavailable", content_type = "application/problem+json", body = Problem),
    )
)]
pub(crate) async fn cancel_order(
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
#[utoipa::path(
    get, path = "/orders/{id}/timeline", tag = "orders",
    params(
        ("id" = uuid::Uuid, Path, description = "The order's id"),
        ("token" = Option<String>, Query, description = "The order's token, if not in the Authorization header"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every step of the order's saga, oldest first", body = TimelineView),
        (status = 401, description = "No token", content_type = "application/problem+json", body = Problem),
        (status = 403, description = "A token that is not this order's", content_type = "application/problem+json", body = Problem),
        (status = 404, description = "No such order", content_type = "application/problem+json", body = Problem),
        (status = 503, description = "The order store is unavailable", content_type = "application/problem+json", body = Problem),
    )
)]
pub(crate) async fn get_timeline(
    state: web::Data<AppState>,
    id: web::Path<String>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let id = order_id(&id)?;
    let presented = Presented::from_request(&request);
    let (order, steps) = orders::timeline(&state.db, id, &presented).await?;
    Ok(HttpResponse::Ok().json(TimelineView {
        order_id: id,
        status: order.row.status,
        steps,
    }))
}

/// The order's mails and what became of them (sent, retrying, …), from the mail
/// service's history. The shopper's only (the order's token); `503` while the history
/// cannot be read.
#[utoipa::path(
    get, path = "/orders/{id}/mails", tag = "orders",
    params(
        ("id" = uuid::Uuid, Path, description = "The order's id"),
        ("token" = Option<String>, Query, description = "The order's token, if not in the Authorization header"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The order's mails, newest first", body = MailsView),
        (status = 401, description = "No token", content_type = "application/problem+json", body = Problem),
        (status = 403, description = "A token that is not this order's", content_type = "application/problem+json", body = Problem),
        (status = 404, description = "No such order", content_type = "application/problem+json", body = Problem),
        (status = 503, description = "The mail history or the order store is unavailable", content_type = "application/problem+json", body = Problem),
    )
)]
pub(crate) async fn get_mails(
    state: web::Data<AppState>,
    id: web::Path<String>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let id = order_id(&id)?;
    let presented = Presented::from_request(&request);
    let mails = orders::mails(&state.db, &state.mail_history, id, &presented).await?;
    Ok(HttpResponse::Ok().json(MailsView {
        order_id: id,
        mails,
    }))
}

/// Case 1: a payment event, signed by payment-service (`401` otherwise, nothing changed),
/// handled by the Kafka consumer's handler; the events it causes are delivered before the
/// answer. `200` handled, `400` not an event, `422` refused for good (e.g. an unknown
/// order), `503` try again.
#[utoipa::path(
    post, path = "/internal/events", tag = "internal",
    description = "Case 1 only: a payment event from payment-service's HTTP chain, signed with INTERNAL_EVENTS_SECRET (HMAC-SHA256 in X-Saga-Signature).",
    request_body(content = serde_json::Value, description = "An event envelope (shared_events::Event)", content_type = "application/json"),
    responses(
        (status = 200, description = "Handled"),
        (status = 400, description = "Not an event", content_type = "application/problem+json", body = Problem),
        (status = 401, description = "Not signed by a service of the shop", content_type = "application/problem+json", body = Problem),
        (status = 422, description = "Refused for good", content_type = "application/problem+json", body = Problem),
        (status = 503, description = "Try again shortly", content_type = "application/problem+json", body = Problem),
    )
)]
pub(crate) async fn receive_event(
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
#[utoipa::path(
    get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = shared_events::http::Health),
        (status = 503, description = "Starting (with what it waits for, Retry-After) or the database does not answer", body = shared_events::http::Health),
    )
)]
pub(crate) async fn readyz(
    state: web::Data<AppState>,
    readiness: web::Data<Readiness>,
) -> Result<HttpResponse, ApiError> {
    if let Some(waiting_for) = readiness.waiting_for() {
        return Ok(shared_events::http::starting(&waiting_for));
    }
    state.db.ping().await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({"status": "ready"})))
}
