//! The HTTP routes. Handlers parse input into domain types and call the use cases in
//! `orders`; no SQL here.

use crate::domain::{NewOrder, PlaceOrder};
use crate::error::ApiError;
use crate::orders;
use crate::startup::AppState;
use crate::store::Order;
use actix_web::http::header;
use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Serialize;
use uuid::Uuid;

/// Orders are small; anything bigger is a mistake or an attack.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.configure(shared_events::http::configure_common)
        .route("/readyz", web::get().to(readyz))
        .route("/orders", web::post().to(place_order))
        .route("/orders/{id}", web::get().to(get_order))
        .route("/orders/{id}/cancel", web::post().to(cancel_order))
        .route("/orders/{id}/timeline", web::get().to(get_timeline));
}

async fn place_order(
    state: web::Data<AppState>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let bytes = read_limited(body, MAX_BODY_BYTES).await?;
    let request: PlaceOrder = parse_json(&bytes)?;
    let order = NewOrder::try_from(request).map_err(ApiError::Invalid)?;
    let placed = orders::place(&state.db, &state.outbox, order, state.payment_deadline).await?;
    Ok(HttpResponse::Accepted()
        .insert_header((header::LOCATION, format!("/orders/{}", placed.row.id)))
        .json(OrderView::from(placed)))
}

async fn get_order(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::NotFound("order"))?;
    let order = orders::get(&state.db, id).await?;
    Ok(HttpResponse::Ok().json(OrderView::from(order)))
}

/// The shopper cancels the order (refunded if it was paid).
async fn cancel_order(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::NotFound("order"))?;
    let order = orders::cancel(&state.db, &state.outbox, id).await?;
    Ok(HttpResponse::Accepted().json(OrderView::from(order)))
}

/// Every step of the order's saga: which event, from which service, when, and what the
/// order service did with it.
async fn get_timeline(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::NotFound("order"))?;
    let (order, steps) = orders::timeline(&state.db, id).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "order_id": id,
        "status": order.row.status,
        "steps": steps,
    })))
}

/// Ready when the database answers.
async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
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

#[derive(Serialize)]
pub(crate) struct OrderView {
    id: Uuid,
    status: String,
    customer_id: String,
    customer_email: String,
    locale: String,
    items: Vec<crate::store::ItemRow>,
    total_amount: i64,
    currency: &'static str,
    cancel_reason: Option<String>,
    refunded_amount: Option<i64>,
    payment_deadline: DateTime<Utc>,
    payment: Option<PaymentView>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    completed_at: Option<DateTime<Utc>>,
    cancelled_at: Option<DateTime<Utc>>,
}

#[derive(Serialize)]
struct PaymentView {
    id: Option<Uuid>,
    tid: Option<String>,
    status: Option<String>,
    redirect_url: Option<String>,
}

impl From<Order> for OrderView {
    fn from(order: Order) -> Self {
        let row = order.row;
        let payment =
            (row.payment_id.is_some() || row.payment_status.is_some()).then_some(PaymentView {
                id: row.payment_id,
                tid: row.payment_tid,
                status: row.payment_status,
                redirect_url: row.payment_redirect_url,
            });
        Self {
            id: row.id,
            status: row.status,
            customer_id: row.customer_id,
            customer_email: row.customer_email,
            locale: row.locale,
            items: order.items,
            total_amount: row.total_amount,
            currency: "KRW",
            cancel_reason: row.cancel_reason,
            refunded_amount: row.refunded_amount,
            payment_deadline: row.payment_deadline,
            payment,
            created_at: row.created_at,
            updated_at: row.updated_at,
            completed_at: row.completed_at,
            cancelled_at: row.cancelled_at,
        }
    }
}
