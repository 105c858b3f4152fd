//! The HTTP routes: Kakao Pay's three return URLs, and payment look-ups; in case 1 also
//! the input of order-service's events. Handlers parse input and call `Checkout`; no SQL
//! here. In case 1 a return URL answers only after the payment's events went down the
//! HTTP chain: the approval URL once the order is completed and mailed, the cancel and
//! fail URLs once the compensation ran. The look-ups (`GET /payments…`) are the
//! operators': they need `Authorization: Bearer <PAYMENT_API_TOKEN>` (a payment's
//! redirect URL and Kakao Pay record are not a stranger's to read). One route table
//! ([`routes`]) is mounted by actix-web and listed by the OpenAPI test ([`api_doc`]).

pub mod api_doc;

use crate::checkout::{Checkout, OrderEvents};
use crate::error::ApiError;
use crate::store::{GatewayCall, Payment};
use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use shared_events::bearer::Operator;
use shared_events::chain::{self, EVENTS_PATH};
use shared_events::http::{InvalidParam, Problem};
use shared_events::routes::Router;
use shared_events::PaymentFailureReason;
use uuid::Uuid;

/// Every route of payment-service (cases 2–4).
pub fn routes<R: Router>(r: &mut R) {
    r.route(Method::GET, "/openapi.json", api_doc::openapi_json);
    api_routes(r);
}

/// Case 1's routes: every route above, and the input of the order events that
/// order-service's HTTP chain delivers.
pub fn routes_with_event_input<R: Router>(r: &mut R) {
    r.route(Method::POST, EVENTS_PATH, receive_event).route(
        Method::GET,
        "/openapi.json",
        api_doc::openapi_json_with_event_input,
    );
    api_routes(r);
}

fn api_routes<R: Router>(r: &mut R) {
    shared_events::routes::common_routes(r);
    r.route(Method::GET, "/readyz", readyz)
        .route(Method::GET, "/payments", list_payments)
        .route(Method::GET, "/payments/{id}", get_payment)
        .route(Method::GET, "/payments/{id}/approve", approve)
        .route(Method::GET, "/payments/{id}/cancel", shopper_cancelled)
        .route(Method::GET, "/payments/{id}/fail", payment_failed);
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    shared_events::routes::mount(cfg, routes);
}

pub fn configure_with_event_input(cfg: &mut web::ServiceConfig) {
    shared_events::routes::mount(cfg, routes_with_event_input);
}

/// Case 1: an order event, signed by order-service (`401` otherwise, nothing changed),
/// handled by the Kafka consumer's handler — `OrderPlaced` → Kakao Pay `ready` →
/// `PaymentReady` delivered back before the answer, so the shopper's `POST /orders`
/// returns with the redirect URL. `200` handled, `400` not an event, `422` refused for
/// good, `503` try again.
#[utoipa::path(
    post, path = "/internal/events", tag = "internal",
    description = "Case 1 only: an order event from order-service's HTTP chain, signed with INTERNAL_EVENTS_SECRET (HMAC-SHA256 in X-Saga-Signature).",
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
    checkout: web::Data<Checkout>,
    request: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let handler = OrderEvents(checkout.clone().into_inner());
    chain::receive_event(
        &request,
        &body,
        &handler,
        &checkout.outbox,
        "The payment store or the gateway is unavailable; try again shortly.",
    )
    .await
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ApprovalQuery {
    /// Kakao Pay's proof that the shopper authenticated (never logged).
    // An `Option` only so that a missing one is answered with the 400 problem naming it.
    #[param(required = true, value_type = String, min_length = 1, pattern = r"\S")]
    pub(crate) pg_token: Option<String>,
}

/// Kakao Pay's `approval_url`: the shopper authenticated; approve with the `pg_token`.
#[utoipa::path(
    get, path = "/payments/{id}/approve", tag = "kakao-pay-return",
    params(("id" = uuid::Uuid, Path, description = "The payment's id"), ApprovalQuery),
    responses(
        (status = 200, description = "The payment (a client that does not accept HTML)", body = crate::routes::PaymentView),
        (status = 303, description = "A browser is sent on to the storefront's page of the order", headers(("Location" = String))),
        (status = 400, description = "No pg_token, or one that is not this payment's (nothing charged)", content_type = "application/problem+json", body = Problem),
        (status = 404, description = "No such payment", content_type = "application/problem+json", body = Problem),
        (status = 503, description = "Kakao Pay unreachable (nothing charged), the outcome not yet known, or the store unavailable", content_type = "application/problem+json", body = Problem),
    )
)]
pub(crate) async fn approve(
    checkout: web::Data<Checkout>,
    id: web::Path<String>,
    query: web::Query<ApprovalQuery>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id, "payment")?;
    let token = query
        .into_inner()
        .pg_token
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| ApiError::Invalid(vec![InvalidParam::new("pg_token", "is required")]))?;
    let payment = checkout.approve(id, &token).await?;
    Ok(back_from_kakao_pay(&checkout, &request, payment))
}

/// Kakao Pay's `cancel_url`: the shopper gave up on the payment page.
#[utoipa::path(
    get, path = "/payments/{id}/cancel", tag = "kakao-pay-return",
    description = "Kakao Pay's return URL when the shopper gave up on the payment page: the payment fails and the order is cancelled.",
    params(("id" = uuid::Uuid, Path, description = "The payment's id")),
    responses(
        (status = 200, description = "The payment (a client that does not accept HTML)", body = crate::routes::PaymentView),
        (status = 303, description = "A browser is sent on to the storefront's page of the order", headers(("Location" = String))),
        (status = 404, description = "No such payment", content_type = "application/problem+json", body = Problem),
        (status = 503, description = "The payment store is unavailable", content_type = "application/problem+json", body = Problem),
    )
)]
pub(crate) async fn shopper_cancelled(
    checkout: web::Data<Checkout>,
    id: web::Path<String>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let payment = checkout
        .abandoned(
            parse_id(&id, "payment")?,
            PaymentFailureReason::ShopperCancelled,
        )
        .await?;
    Ok(back_from_kakao_pay(&checkout, &request, payment))
}

/// Kakao Pay's `fail_url`: the payment failed on Kakao Pay's side.
#[utoipa::path(
    get, path = "/payments/{id}/fail", tag = "kakao-pay-return",
    description = "Kakao Pay's return URL when the payment failed at Kakao Pay: the payment fails and the order is cancelled.",
    params(("id" = uuid::Uuid, Path, description = "The payment's id")),
    responses(
        (status = 200, description = "The payment (a client that does not accept HTML)", body = crate::routes::PaymentView),
        (status = 303, description = "A browser is sent on to the storefront's page of the order", headers(("Location" = String))),
        (status = 404, description = "No such payment", content_type = "application/problem+json", body = Problem),
        (status = 503, description = "The payment store is unavailable", content_type = "application/problem+json", body = Problem),
    )
)]
pub(crate) async fn payment_failed(
    checkout: web::Data<Checkout>,
    id: web::Path<String>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let payment = checkout
        .abandoned(parse_id(&id, "payment")?, PaymentFailureReason::Failed)
        .await?;
    Ok(back_from_kakao_pay(&checkout, &request, payment))
}

/// The answer to a shopper back from Kakao Pay: a browser (it accepts HTML) is sent on to
/// the storefront's page of the order (`303`); any other client gets the payment as JSON.
fn back_from_kakao_pay(
    checkout: &Checkout,
    request: &HttpRequest,
    payment: Payment,
) -> HttpResponse {
    if accepts_html(request) {
        return HttpResponse::SeeOther()
            .insert_header((
                actix_web::http::header::LOCATION,
                checkout.urls.order_page(&payment),
            ))
            .finish();
    }
    HttpResponse::Ok().json(PaymentView::new(payment, None))
}

fn accepts_html(request: &HttpRequest) -> bool {
    request
        .headers()
        .get_all(actix_web::http::header::ACCEPT)
        .filter_map(|value| value.to_str().ok())
        .any(|value| value.contains("text/html"))
}

/// A payment with every call made to Kakao Pay for it.
#[utoipa::path(
    get, path = "/payments/{id}", tag = "payments",
    params(("id" = uuid::Uuid, Path, description = "The payment's id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The payment and its gateway calls", body = PaymentView),
        (status = 401, description = "No usable bearer token (missing, another scheme, or empty)", content_type = "application/problem+json", body = Problem, headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"payment\"`"))),
        (status = 403, description = "The bearer token is not PAYMENT_API_TOKEN", content_type = "application/problem+json", body = Problem),
        (status = 404, description = "No such payment", content_type = "application/problem+json", body = Problem),
        (status = 503, description = "The payment store is unavailable", content_type = "application/problem+json", body = Problem),
    )
)]
pub(crate) async fn get_payment(
    _: Operator,
    checkout: web::Data<Checkout>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id, "payment")?;
    let payment = checkout.find(id).await?;
    let calls = checkout.gateway_calls(id).await?;
    Ok(HttpResponse::Ok().json(PaymentView::new(payment, Some(calls))))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// The order whose payments to list.
    // An `Option` only so that a missing one is answered with the 400 problem naming it.
    #[param(required = true, value_type = uuid::Uuid)]
    order_id: Option<String>,
}

/// The payments of an order.
#[utoipa::path(
    get, path = "/payments", tag = "payments",
    params(ListQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The order's payments", body = Vec<PaymentView>),
        (status = 400, description = "No order_id, or not a UUID", content_type = "application/problem+json", body = Problem),
        (status = 401, description = "No usable bearer token (missing, another scheme, or empty)", content_type = "application/problem+json", body = Problem, headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"payment\"`"))),
        (status = 403, description = "The bearer token is not PAYMENT_API_TOKEN", content_type = "application/problem+json", body = Problem),
        (status = 503, description = "The payment store is unavailable", content_type = "application/problem+json", body = Problem),
    )
)]
pub(crate) async fn list_payments(
    _: Operator,
    checkout: web::Data<Checkout>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let Some(order_id) = query.into_inner().order_id else {
        return Err(ApiError::Invalid(vec![InvalidParam::new(
            "order_id",
            "is required",
        )]));
    };
    let order_id = Uuid::parse_str(&order_id)
        .map_err(|_| ApiError::Invalid(vec![InvalidParam::new("order_id", "must be a UUID")]))?;
    let payments = checkout.find_by_order(order_id).await?;
    let views: Vec<_> = payments
        .into_iter()
        .map(|p| PaymentView::new(p, None))
        .collect();
    Ok(HttpResponse::Ok().json(views))
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
    checkout: web::Data<Checkout>,
    readiness: web::Data<shared_events::readiness::Readiness>,
) -> Result<HttpResponse, ApiError> {
    if let Some(waiting_for) = readiness.waiting_for() {
        return Ok(shared_events::http::starting(&waiting_for));
    }
    checkout.db.ping().await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({"status": "ready"})))
}

pub(crate) fn parse_id(raw: &str, what: &'static str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::NotFound(what))
}

/// A payment as the API shows it.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct PaymentView {
    #[serde(flatten)]
    payment: Payment,
    #[serde(skip_serializing_if = "Option::is_none")]
    gateway_calls: Option<Vec<GatewayCall>>,
}

impl PaymentView {
    pub(crate) fn new(payment: Payment, gateway_calls: Option<Vec<GatewayCall>>) -> Self {
        Self {
            payment,
            gateway_calls,
        }
    }
}
