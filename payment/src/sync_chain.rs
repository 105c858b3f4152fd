//! Case 1: payment-service as a link of one synchronous HTTP chain.
//!
//! The domain code is the same as in the Kafka cases — [`Checkout`] and its
//! [`OrderEvents`] handler, the outbox — only the transport differs. Payment events are
//! written to the outbox in the transaction of their change, then delivered at once over
//! HTTP by the request that wrote them ([`shared_events::chain`]) to order-service and
//! the mail service, and the request waits for them:
//!
//! * `POST /internal/events` receives order events from order-service's chain:
//!   `OrderPlaced` → Kakao Pay `ready` → `PaymentReady` delivered back to order-service
//!   before the answer, so the shopper's `POST /orders` returns with the redirect URL.
//! * Kakao Pay's approval URL (`GET /payments/{id}/approve`) approves, then delivers
//!   `PaymentApproved`: order-service completes the order and mails it, and the mail
//!   service mails the payment — all before the shopper's page answers. The cancel and
//!   fail URLs run the compensation (`PaymentFailed` → order `CANCELLED` + mail) alike.

use crate::checkout::{Checkout, OrderEvents};
use crate::config::Settings;
use crate::error::ApiError;
use crate::routes::{self, parse_id, ApprovalQuery, PaymentView};
use actix_web::{web, HttpRequest, HttpResponse};
use secrecy::ExposeSecret;
use shared_events::chain::{self, EventSigner, EVENTS_PATH};
use shared_events::db::PgPool;
use shared_events::http::InvalidParam;
use shared_events::outbox::Outbox;
use shared_events::PaymentFailureReason;
use tokio_util::sync::CancellationToken;

/// The outbox delivered over HTTP to order-service and the mail service, and its relay
/// for failed deliveries (added to `tasks`).
pub fn outbox(
    settings: &Settings,
    pool: &PgPool,
    shutdown: &CancellationToken,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> anyhow::Result<Outbox> {
    let topics = settings.kafka.topics();
    let own = topics.payments.clone();
    let subscribers = vec![settings.order_url.clone(), settings.mailer_url.clone()];
    let secret = settings.internal_events_secret.as_ref();
    let signer = EventSigner::required(secret.map(ExposeSecret::expose_secret))?;
    Ok(chain::http_outbox(
        "payment",
        pool,
        topics,
        (own, subscribers),
        signer,
        shutdown,
        tasks,
    )?)
}

/// Case 1's routes: Kakao Pay's return URLs that run the rest of the chain, the event
/// input, then every other route as in the other cases.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/payments/{id}/approve", web::get().to(approve))
        .route("/payments/{id}/cancel", web::get().to(shopper_cancelled))
        .route("/payments/{id}/fail", web::get().to(payment_failed))
        .route(EVENTS_PATH, web::post().to(receive_event))
        .configure(routes::configure);
}

async fn approve(
    checkout: web::Data<Checkout>,
    id: web::Path<String>,
    query: web::Query<ApprovalQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id, "payment")?;
    let token = query
        .into_inner()
        .pg_token
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| ApiError::Invalid(vec![InvalidParam::new("pg_token", "is required")]))?;
    let payment = checkout.approve(id, &token).await?;
    checkout.outbox.dispatch_now(payment.order_id).await;
    Ok(HttpResponse::Ok().json(PaymentView::new(checkout.find(id).await?, None)))
}

async fn shopper_cancelled(
    checkout: web::Data<Checkout>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    abandoned(checkout, &id, PaymentFailureReason::ShopperCancelled).await
}

async fn payment_failed(
    checkout: web::Data<Checkout>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    abandoned(checkout, &id, PaymentFailureReason::Failed).await
}

async fn abandoned(
    checkout: web::Data<Checkout>,
    id: &str,
    reason: PaymentFailureReason,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(id, "payment")?;
    let payment = checkout.abandoned(id, reason).await?;
    checkout.outbox.dispatch_now(payment.order_id).await;
    Ok(HttpResponse::Ok().json(PaymentView::new(checkout.find(id).await?, None)))
}

/// An order event, signed by order-service (`401` otherwise, nothing changed), handled
/// by the same handler as the Kafka consumer's; the events it
/// causes are delivered before the answer. `200` handled, `400` not an event, `422`
/// refused for good, `503` try again.
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
