//! Case 1: the saga as one synchronous HTTP chain, with order-service orchestrating.
//!
//! The domain code is the same as in the Kafka cases — `orders::place`, the saga's
//! [`PaymentEvents`] handler, the outbox — only the transport differs. Order events are
//! written to the outbox in the transaction of their change, then delivered at once over
//! HTTP by the request that wrote them ([`shared_events::chain`]) to payment-service and
//! the mail service, and the request waits for them:
//!
//! * `POST /orders` returns after payment-service called Kakao Pay `ready` and its
//!   `PaymentReady` came back here (the answer carries `payment.redirect_url`), or after
//!   the order was cancelled because the payment could not start (compensation).
//! * `POST /internal/events` receives payment events (from payment-service's chain) and
//!   runs the saga's handler: `PaymentApproved` → `COMPLETED`, whose `OrderCompleted` is
//!   mailed before the answer; `PaymentFailed` → `CANCELLED` + mail.
//! * `POST /orders/{id}/cancel` runs the refund chain (`RefundRequested` → payment →
//!   `PaymentRefunded` → `CANCELLED` + mail) before it answers.
//!
//! A delivery that fails (a service down, a mail server refusing for now) does not fail
//! the shopper's request: the event stays in the outbox and the HTTP relay retries it.

use crate::access::{Access, Presented};
use crate::config::Settings;
use crate::domain::{NewOrder, PlaceOrder};
use crate::error::ApiError;
use crate::orders;
use crate::routes::{self, MAX_BODY_BYTES};
use crate::saga::PaymentEvents;
use crate::startup::AppState;
use crate::view::Rendered;
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use secrecy::ExposeSecret;
use shared_events::chain::{self, EventSigner, EVENTS_PATH};
use shared_events::db::PgPool;
use shared_events::outbox::Outbox;
use tokio_util::sync::CancellationToken;

/// The outbox delivered over HTTP to payment-service and the mail service, and its
/// relay for failed deliveries (added to `tasks`).
pub fn outbox(
    settings: &Settings,
    pool: &PgPool,
    shutdown: &CancellationToken,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> anyhow::Result<Outbox> {
    let topics = settings.kafka.topics();
    let own = topics.orders.clone();
    let subscribers = vec![settings.payment_url.clone(), settings.mailer_url.clone()];
    let secret = settings.internal_events_secret.as_ref();
    let signer = EventSigner::required(secret.map(ExposeSecret::expose_secret))?;
    Ok(chain::http_outbox(
        "order",
        pool,
        topics,
        (own, subscribers),
        signer,
        shutdown,
        tasks,
    )?)
}

/// Case 1's routes: the chain's versions of placing and cancelling an order and the
/// event input, then every other route as in the other cases.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/orders", web::post().to(place_order))
        .route("/orders/{id}/cancel", web::post().to(cancel_order))
        .route(EVENTS_PATH, web::post().to(receive_event))
        .configure(routes::configure);
}

/// Places the order, then runs the chain: payment `ready` and the redirect URL stored.
async fn place_order(
    state: web::Data<AppState>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let bytes = routes::read_limited(body, MAX_BODY_BYTES).await?;
    let request: PlaceOrder = routes::parse_json(&bytes)?;
    let order = NewOrder::try_from(request).map_err(ApiError::Invalid)?;
    let (placed, token) =
        orders::place(&state.db, &state.outbox, order, state.payment_deadline).await?;
    let id = placed.row.id;
    state.outbox.dispatch_now(id).await;
    let order = orders::get(&state.db, id).await?;
    let mut response = HttpResponse::Accepted();
    response.insert_header((header::LOCATION, format!("/orders/{id}")));
    Ok(routes::order_body(
        response,
        &Rendered::placed(order, &token),
    ))
}

/// The shopper cancels (only with the order's token); a paid order is refunded within
/// the request.
async fn cancel_order(
    state: web::Data<AppState>,
    id: web::Path<String>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let id = routes::order_id(&id)?;
    let presented = Presented::from_request(&request);
    orders::cancel(&state.db, &state.outbox, &state.changes, id, &presented).await?;
    state.outbox.dispatch_now(id).await;
    let order = orders::get(&state.db, id).await?;
    let view = Rendered::of(order, Access::Owner);
    Ok(routes::order_body(HttpResponse::Accepted(), &view))
}

/// A payment event, signed by payment-service (`401` otherwise, nothing changed), handled
/// by the same handler as the Kafka consumer's; the events it
/// causes are delivered before the answer. `200` handled, `400` not an event, `422`
/// refused for good (e.g. an unknown order), `503` try again.
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
