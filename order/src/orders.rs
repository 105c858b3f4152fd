//! Placing and reading orders: the use cases behind the REST API.

use crate::access::{self, OrderToken, Presented};
use crate::catalog::{self, Product};
use crate::changes::Changes;
use crate::domain::{NewOrder, OrderError, OrderRequest, Trigger};
use crate::idempotency::Retry;
use crate::mail_history::{Mail, MailHistory};
use crate::persistence::{OrderDb, Placing, Stored};
use crate::saga::{Facts, SagaError};
use crate::store::{self, KeyRecord, Order};
use chrono::Utc;
use shared_events::outbox::Outbox;
use std::collections::HashMap;
use std::time::Duration;
use tracing::Instrument;
use uuid::Uuid;

/// A placed order as the shopper is answered: the order, its token (shown with it), and
/// whether this is a replay of the idempotency key's first request.
pub struct Placed {
    pub order: Order,
    pub token: OrderToken,
    pub replayed: bool,
}

/// Prices `request` from the catalog and stores the order `PENDING_PAYMENT` (with its
/// token's hash) and its `OrderPlaced` event in one transaction. The token is returned,
/// to be shown once — or again to a retry with the same `Idempotency-Key`, which gets
/// the first request's order instead of a new one.
#[tracing::instrument(name = "Placing an order", skip_all, fields(order_id, trace_id))]
pub async fn place(
    db: &OrderDb,
    outbox: &Outbox,
    request: OrderRequest,
    retry: Option<Retry>,
    deadline: Duration,
) -> Result<Placed, OrderError> {
    if let Some(retry) = &retry {
        if let Some(first) = db.key_record(retry.key.hash()).await? {
            return replay(db, retry, first).await;
        }
    }
    let order = price(db, request).await?;
    let id = Uuid::now_v7();
    let span = tracing::Span::current();
    span.record("order_id", tracing::field::display(id));
    if let Some(trace_id) = shared_events::telemetry::trace_id_of(&span) {
        span.record("trace_id", tracing::field::display(trace_id));
    }
    let payment_deadline =
        Utc::now() + chrono::Duration::from_std(deadline).unwrap_or(chrono::Duration::minutes(15));
    let key = retry.as_ref().map(|retry| retry.record(id));
    let token = match (&retry, &key) {
        (Some(retry), Some(key)) => retry.key.token(&key.token_salt),
        _ => OrderToken::generate(),
    };
    let placing = Placing {
        id,
        order,
        token_hash: token.hash(),
        payment_deadline,
        key,
    };
    let placed = match db.place(outbox, placing).await? {
        Stored::Placed(placed) => *placed,
        Stored::KeyTaken(first) => {
            let retry = retry
                .as_ref()
                .expect("only a keyed request finds its key taken");
            return replay(db, retry, first).await;
        }
    };
    outbox.notify();
    metrics::counter!("order_orders_placed_total").increment(1);
    tracing::info!(
        order_id = %id,
        total_amount = placed.row.total_amount,
        "Order placed; waiting for its payment."
    );
    Ok(Placed {
        order: after_delivery(db, outbox, placed).await?,
        token,
        replayed: false,
    })
}

/// The mails of order `id` and what became of them; the shopper's only (`presented`).
pub async fn mails(
    db: &OrderDb,
    history: &MailHistory,
    id: Uuid,
    presented: &Presented,
) -> Result<Vec<Mail>, OrderError> {
    access::require_owner(&get(db, id).await?, presented)?;
    Ok(history.of_order(id).await?)
}

/// The catalog, in the storefront's order.
pub async fn products(db: &OrderDb) -> Result<Vec<Product>, OrderError> {
    Ok(db.products(None).await?)
}

/// The order `request` asks for, priced from the catalog.
async fn price(db: &OrderDb, request: OrderRequest) -> Result<NewOrder, OrderError> {
    let skus = request.skus();
    let catalog: HashMap<String, Product> = if skus.is_empty() {
        HashMap::new()
    } else {
        let products = db.products(Some(skus)).await?;
        products.into_iter().map(|p| (p.sku.clone(), p)).collect()
    };
    catalog::price(request, &catalog).map_err(OrderError::Invalid)
}

/// The order the key's first request placed, if `retry` asks for the same.
async fn replay(db: &OrderDb, retry: &Retry, first: KeyRecord) -> Result<Placed, OrderError> {
    if first.request_hash != retry.fingerprint {
        return Err(OrderError::IdempotencyKeyReused);
    }
    metrics::counter!("order_idempotent_replays_total").increment(1);
    tracing::info!(order_id = %first.order_id, "Same request with the same idempotency key: the first order answers.");
    Ok(Placed {
        order: get(db, first.order_id).await?,
        token: retry.key.token(&first.token_salt),
        replayed: true,
    })
}

/// Case 1: the request waits while the order's events go down the HTTP chain, and then
/// shows the order as they left it (placed: with its payment page). Cases 2–4 answer at
/// once with `order` as committed: the relay publishes.
async fn after_delivery(db: &OrderDb, outbox: &Outbox, order: Order) -> Result<Order, OrderError> {
    if !outbox.delivers_in_request() {
        return Ok(order);
    }
    outbox.dispatch_now(order.row.id).await;
    get(db, order.row.id).await
}

pub async fn get(db: &OrderDb, id: Uuid) -> Result<Order, OrderError> {
    db.find(id).await?.ok_or(OrderError::UnknownOrder)
}

/// The shopper cancels: an unpaid order is cancelled at once; a paid one is refunded
/// first (`CANCELLING` until the refund is confirmed). Asking again changes nothing. The
/// work continues the order's own trace (see [`order_span`]). This process's waiters
/// for the order are woken at once, without the round trip through `NOTIFY`.
/// Only the shopper may: `presented` must be the order's token (`401`/`403` otherwise,
/// nothing changed).
pub async fn cancel(
    db: &OrderDb,
    outbox: &Outbox,
    changes: &Changes,
    id: Uuid,
    presented: &Presented,
) -> Result<Order, OrderError> {
    access::require_owner(&get(db, id).await?, presented)?;
    let traceparent = db.traceparent(id).await?;
    let span = order_span("shopper cancels", id, traceparent.as_deref());
    let order = run_saga(db, outbox, id, Trigger::ShopperCancels, Facts::default())
        .instrument(span)
        .await
        .map_err(|error| match error {
            SagaError::UnknownOrder(_) => OrderError::UnknownOrder,
            SagaError::Db(error) => error.into(),
        })?;
    changes.notify(id);
    after_delivery(db, outbox, order).await
}

/// A span for work on order `id` that continues the trace the order was placed in
/// (`traceparent`, stored with the order), so one order keeps one trace id even when the
/// work starts from a new request or a timer. The request's own span stays the tracing
/// parent in-process; the order's trace is the OpenTelemetry parent.
pub fn order_span(work: &'static str, id: Uuid, traceparent: Option<&str>) -> tracing::Span {
    let span = tracing::info_span!(
        "Order work",
        work,
        order_id = %id,
        trace_id = tracing::field::Empty
    );
    shared_events::telemetry::continue_trace(&span, traceparent);
    span
}

/// Every step of the order's saga, oldest first; the shopper's only (`presented`).
pub async fn timeline(
    db: &OrderDb,
    id: Uuid,
    presented: &Presented,
) -> Result<(Order, Vec<store::SagaStep>), OrderError> {
    let (order, steps) = db.timeline(id).await?.ok_or(OrderError::UnknownOrder)?;
    access::require_owner(&order, presented)?;
    Ok((order, steps))
}

/// Applies a trigger in a transaction of its own and wakes the relay if needed.
async fn run_saga(
    db: &OrderDb,
    outbox: &Outbox,
    order_id: Uuid,
    trigger: Trigger,
    facts: Facts,
) -> Result<Order, SagaError> {
    let applied = db.apply(outbox, order_id, trigger, facts).await?;
    if applied.published {
        outbox.notify();
    }
    Ok(applied.order)
}
