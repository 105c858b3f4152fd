//! What the API shows of an order (`GET /orders/{id}` and friends), and its entity tag.
//!
//! Two views: the shopper's ([`Access::Owner`], with the order's token) shows everything;
//! the public one ([`Access::Public`], anyone with the id) only what the minimal contract
//! promises and nothing personal — no e-mail, customer id, items, locale or payment ids.
//!
//! The ETag is a hash of the JSON body itself, so it changes exactly when what a client
//! sees changes, and every instance computes the same tag for the same row.

use crate::access::{Access, OrderToken};
use crate::domain::OrderStatus;
use crate::store::Order;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// The shopper's view of an order (with the order's token).
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct OrderView {
    id: Uuid,
    status: OrderStatus,
    customer_id: String,
    customer_email: String,
    locale: String,
    items: Vec<crate::store::ItemRow>,
    total_amount: i64,
    #[schema(value_type = String, example = "KRW")]
    currency: &'static str,
    /// Why it was cancelled (`payment_declined`, `cancelled_by_shopper`, …).
    cancel_reason: Option<String>,
    refunded_amount: Option<i64>,
    payment_deadline: DateTime<Utc>,
    payment: Option<PaymentView>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    completed_at: Option<DateTime<Utc>>,
    cancelled_at: Option<DateTime<Utc>>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct PaymentView {
    id: Option<Uuid>,
    tid: Option<String>,
    status: Option<String>,
    redirect_url: Option<String>,
}

/// What anyone holding only the order's id sees.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct PublicView {
    id: Uuid,
    status: OrderStatus,
    total_amount: i64,
    #[schema(value_type = String, example = "KRW")]
    currency: &'static str,
    cancel_reason: Option<String>,
    refunded_amount: Option<i64>,
    payment_deadline: DateTime<Utc>,
    payment: Option<PublicPaymentView>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    completed_at: Option<DateTime<Utc>>,
    cancelled_at: Option<DateTime<Utc>>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct PublicPaymentView {
    status: Option<String>,
    redirect_url: Option<String>,
}

impl From<Order> for PublicView {
    fn from(order: Order) -> Self {
        let row = order.row;
        let payment = (row.payment_id.is_some() || row.payment_status.is_some()).then_some(
            PublicPaymentView {
                status: row.payment_status,
                redirect_url: row.payment_redirect_url,
            },
        );
        Self {
            id: row.id,
            status: row.status,
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

/// Every step of an order's saga (`GET /orders/{id}/timeline`).
#[derive(Serialize, utoipa::ToSchema)]
pub struct TimelineView {
    pub order_id: Uuid,
    pub status: OrderStatus,
    pub steps: Vec<crate::store::SagaStep>,
}

/// The mails of an order and what became of them (`GET /orders/{id}/mails`).
#[derive(Serialize, utoipa::ToSchema)]
pub struct MailsView {
    pub order_id: Uuid,
    pub mails: Vec<crate::mail_history::Mail>,
}

/// An order's view, serialized once: the bytes sent and the tag computed from them.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// Compact JSON: one line, as a server-sent event's `data` needs.
    pub body: actix_web::web::Bytes,
    pub etag: ETag,
    pub status: OrderStatus,
}

impl Rendered {
    /// The view `access` allows.
    pub fn of(order: Order, access: Access) -> Self {
        let status = order.status();
        let body = match access {
            Access::Owner => serde_json::to_vec(&OrderView::from(order)),
            Access::Public => serde_json::to_vec(&PublicView::from(order)),
        }
        .expect("an order view always serializes (plain fields, string keys)");
        Self {
            etag: ETag::of(&body),
            body: body.into(),
            status,
        }
    }

    /// The answer to `POST /orders`: the shopper's view with `access_token`, the one time
    /// it is shown. The tag is the shopper's view's, so a later `GET` with the token and
    /// `If-None-Match` waits for a real change.
    pub fn placed(order: Order, token: &OrderToken) -> Self {
        let owner = Self::of(order, Access::Owner);
        let mut json: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&owner.body).expect("the view is a JSON object");
        json.insert("access_token".into(), token.expose().into());
        let body = serde_json::to_vec(&json).expect("a JSON object serializes");
        Self {
            body: body.into(),
            ..owner
        }
    }
}

/// A strong entity tag: its opaque part, without quotes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ETag(String);

impl ETag {
    /// 128 bits of SHA-256: collisions are out of the question for one order's versions.
    fn of(body: &[u8]) -> Self {
        let digest = Sha256::digest(body);
        Self(digest[..16].iter().map(|b| format!("{b:02x}")).collect())
    }

    /// The opaque part of a tag a client sent (`"x"` or `W/"x"`): `If-None-Match` compares
    /// weakly (RFC 9110 §13.1.2), so a weak tag matches its strong twin.
    pub fn parse(tag: &str) -> Option<Self> {
        let tag = tag.trim();
        let tag = tag.strip_prefix("W/").unwrap_or(tag);
        let opaque = tag.strip_prefix('"')?.strip_suffix('"')?;
        Some(Self(opaque.to_owned()))
    }

    /// The header value, quoted.
    pub fn header_value(&self) -> String {
        format!("\"{}\"", self.0)
    }

    pub fn opaque(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::ETag;

    #[test]
    fn tags_round_trip_and_compare_weakly() {
        let tag = ETag::of(b"{}");
        assert_eq!(ETag::parse(&tag.header_value()), Some(tag.clone()));
        assert_eq!(ETag::parse(&format!("W/{}", tag.header_value())), Some(tag));
        assert_eq!(ETag::parse("unquoted"), None);
    }

    #[test]
    fn a_different_body_has_a_different_tag() {
        assert_ne!(ETag::of(b"{\"a\":1}"), ETag::of(b"{\"a\":2}"));
    }
}
