//! The HTTP routes: Kakao Pay's three return URLs, and payment look-ups; in case 1 also
//! the input of order-service's events. Handlers parse input and call `Checkout`; no SQL
//! here. In case 1 a return URL answers only after the payment's events went down the
//! HTTP chain: the approval URL once the order is completed and mailed, the cancel and
//! fail URLs once the compensation ran.

use crate::checkout::{Checkout, OrderEvents};
use crate::error::ApiError;
use crate::store::{GatewayCall, Payment};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use shared_events::chain::{self, EVENTS_PATH};
use shared_events::http::InvalidParam;
use shared_events::PaymentFailureReason;
use uuid::Uuid;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.configure(shared_events::http::configure_common)
        .route("/readyz", web::get().to(readyz))
        .route("/payments", web::get().to(list_payments))
        .route("/payments/{id}", web::get().to(get_payment))
        .route("/payments/{id}/approve", web::get().to(approve))
        .route("/payments/{id}/cancel", web::get().to(shopper_cancelled))
        .route("/payments/{id}/fail", web::get().to(payment_failed));
}

/// Case 1's routes: every route above, and the input of the order events that
/// order-service's HTTP chain delivers.
pub fn configure_with_event_input(cfg: &mut web::ServiceConfig) {
    cfg.route(EVENTS_PATH, web::post().to(receive_event))
        .configure(configure);
}

/// Case 1: an order event, signed by order-service (`401` otherwise, nothing changed),
/// handled by the Kafka consumer's handler — `OrderPlaced` → Kakao Pay `ready` →
/// `PaymentReady` delivered back before the answer, so the shopper's `POST /orders`
/// returns with the redirect URL. `200` handled, `400` not an event, `422` refused for
/// good, `503` try again.
async fn receive_event(
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

#[derive(Deserialize)]
pub(crate) struct ApprovalQuery {
    pub(crate) pg_token: Option<String>,
}

/// Kakao Pay's `approval_url`: the shopper authenticated; approve with the `pg_token`.
async fn approve(
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
async fn shopper_cancelled(
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
async fn payment_failed(
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

async fn get_payment(
    checkout: web::Data<Checkout>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id, "payment")?;
    let payment = checkout.find(id).await?;
    let calls = checkout.gateway_calls(id).await?;
    Ok(HttpResponse::Ok().json(PaymentView::new(payment, Some(calls))))
}

#[derive(Deserialize)]
struct ListQuery {
    order_id: Option<String>,
}

async fn list_payments(
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
async fn readyz(
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

#[derive(Serialize)]
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
