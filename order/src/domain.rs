//! The order domain: what a valid order is, and how its status may change.
//!
//! Input is parsed into [`NewOrder`] at the HTTP edge; past that point every order is
//! valid by construction. Each refused field is reported with its JSON path.

use serde::{Deserialize, Serialize};
use shared_events::db::DbError;
use shared_events::http::InvalidParam;
use shared_events::{CancelReason, LineItem, PaymentCloseOutcome};
use std::fmt;
use std::str::FromStr;

pub const MAX_ITEMS: usize = 100;
pub const MAX_QUANTITY: i64 = 1_000;
/// Kakao Pay limits ids and names to 100 characters; we keep to the same.
pub const MAX_TEXT: usize = 100;
/// One hundred million won: beyond any single shop order, far below `i64` overflow.
pub const MAX_TOTAL: i64 = 100_000_000;

/// Why a use case on an order could not be carried out. The HTTP mapping is in `error.rs`.
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    #[error("no such order")]
    UnknownOrder,
    /// The shopper's own actions need the order's token, and none was presented.
    #[error("the order's token is required")]
    TokenRequired,
    /// A token was presented, but it is not this order's.
    #[error("the token presented is not this order's")]
    WrongToken,
    /// Every wait (long poll or change stream) this instance may hold is taken.
    #[error("too many open waits")]
    TooManyWaits,
    /// The order cannot be placed as asked: each field at fault is named (an unknown or
    /// out-of-stock product, a total the shop cannot take).
    #[error("invalid order")]
    Invalid(Vec<InvalidParam>),
    /// The `Idempotency-Key` was first used with another request.
    #[error("the idempotency key was used with another request")]
    IdempotencyKeyReused,
    /// The order's mails cannot be read now (the mail service is down or not configured).
    #[error(transparent)]
    MailHistory(#[from] crate::mail_history::MailHistoryError),
    #[error(transparent)]
    Store(#[from] DbError),
}

/// The body of `POST /orders`, as sent. `Serialize` gives the request's canonical form
/// (fields in one order, no whitespace), which an `Idempotency-Key` is bound to.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
pub struct PlaceOrder {
    pub customer_id: String,
    pub customer_email: String,
    pub items: Vec<PlaceOrderItem>,
    /// `ko` (default) or `en`: the language of the shopper's mails.
    #[serde(default)]
    pub locale: Option<String>,
}

/// A line as sent: a product of the catalog (`sku`) or, where the shop allows it
/// ([`Pricing::CustomItemsAllowed`]), a free-form `name` with its own `unit_price`.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
pub struct PlaceOrderItem {
    #[serde(default)]
    pub sku: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    pub quantity: i64,
    #[serde(default)]
    pub unit_price: Option<i64>,
}

/// Who may set a line's price.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pricing {
    /// Every line names a product; the shop prices it (the default).
    CatalogOnly,
    /// Free-form lines priced by the client are accepted too (`ORDER_ALLOW_CUSTOM_ITEMS`:
    /// the local stack, tests and benchmarks, whose load generators send them).
    CustomItemsAllowed,
}

/// One valid line, not yet priced.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    Product { sku: String, quantity: u32 },
    Custom(LineItem),
}

/// A valid request, its product lines still to be priced (`catalog::price`).
#[derive(Debug, Clone, PartialEq)]
pub struct OrderRequest {
    pub customer_id: String,
    pub customer_email: String,
    pub locale: Locale,
    pub lines: Vec<Line>,
}

/// A line as stored: what was sold, and which product it was (`None`: free-form).
#[derive(Debug, Clone, PartialEq)]
pub struct OrderLine {
    pub sku: Option<String>,
    pub item: LineItem,
}

/// A valid, priced order, ready to be stored.
#[derive(Debug, Clone, PartialEq)]
pub struct NewOrder {
    pub customer_id: String,
    pub customer_email: String,
    pub locale: Locale,
    pub items: Vec<OrderLine>,
    pub total_amount: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Locale {
    Ko,
    En,
}

impl Locale {
    pub fn as_str(self) -> &'static str {
        match self {
            Locale::Ko => "ko",
            Locale::En => "en",
        }
    }
}

impl OrderRequest {
    /// Checks every field of `request`; each one refused is named.
    pub fn parse(request: PlaceOrder, pricing: Pricing) -> Result<Self, Vec<InvalidParam>> {
        let mut invalid = Vec::new();
        let customer_id = request.customer_id.trim().to_owned();
        check_text("customer_id", &customer_id, &mut invalid);
        let customer_email = crate::email::parse("customer_email", &request.customer_email)
            .unwrap_or_else(|refused| {
                invalid.push(refused);
                String::new()
            });
        let locale = match request.locale.as_deref().map(str::trim) {
            None | Some("") | Some("ko") => Locale::Ko,
            Some("en") => Locale::En,
            Some(_) => {
                invalid.push(InvalidParam::new("locale", "must be \"ko\" or \"en\""));
                Locale::Ko
            }
        };
        let lines = parse_items(request.items, pricing, &mut invalid);
        if !invalid.is_empty() {
            return Err(invalid);
        }
        Ok(Self {
            customer_id,
            customer_email,
            locale,
            lines,
        })
    }

    /// The skus the request names, each once.
    pub fn skus(&self) -> Vec<String> {
        let mut skus: Vec<String> = self
            .lines
            .iter()
            .filter_map(|line| match line {
                Line::Product { sku, .. } => Some(sku.clone()),
                Line::Custom(_) => None,
            })
            .collect();
        skus.sort();
        skus.dedup();
        skus
    }
}

fn check_text(name: &str, value: &str, invalid: &mut Vec<InvalidParam>) {
    if value.is_empty() {
        invalid.push(InvalidParam::new(name, "must not be empty"));
    } else if value.chars().count() > MAX_TEXT {
        invalid.push(InvalidParam::new(
            name,
            format!("must be at most {MAX_TEXT} characters"),
        ));
    }
}

fn parse_items(
    items: Vec<PlaceOrderItem>,
    pricing: Pricing,
    invalid: &mut Vec<InvalidParam>,
) -> Vec<Line> {
    if items.is_empty() {
        invalid.push(InvalidParam::new("items", "must contain at least one item"));
    } else if items.len() > MAX_ITEMS {
        invalid.push(InvalidParam::new(
            "items",
            format!("must contain at most {MAX_ITEMS} items"),
        ));
    }
    items
        .into_iter()
        .enumerate()
        .filter_map(|(i, item)| {
            let before = invalid.len();
            if !(1..=MAX_QUANTITY).contains(&item.quantity) {
                invalid.push(InvalidParam::new(
                    format!("items[{i}].quantity"),
                    format!("must be between 1 and {MAX_QUANTITY}"),
                ));
            }
            let quantity = u32::try_from(item.quantity).unwrap_or_default();
            let line = parse_line(&format!("items[{i}]"), item, quantity, pricing, invalid);
            line.filter(|_| invalid.len() == before)
        })
        .collect()
}

/// A product line or a free-form one; which fields go together is the rule here.
fn parse_line(
    at: &str,
    item: PlaceOrderItem,
    quantity: u32,
    pricing: Pricing,
    invalid: &mut Vec<InvalidParam>,
) -> Option<Line> {
    let refuse = |invalid: &mut Vec<InvalidParam>, field: &str, reason: &str| {
        invalid.push(InvalidParam::new(format!("{at}.{field}"), reason));
        None
    };
    match (item.sku, item.name, item.unit_price, pricing) {
        (Some(_), _, Some(_), _) => refuse(
            invalid,
            "unit_price",
            "must not be given: the shop prices its products",
        ),
        (Some(_), Some(_), None, _) => refuse(invalid, "name", "must not be given with a sku"),
        (Some(sku), None, None, _) => {
            let sku = sku.trim().to_owned();
            check_text(&format!("{at}.sku"), &sku, invalid);
            Some(Line::Product { sku, quantity })
        }
        (None, _, Some(_), Pricing::CatalogOnly) => refuse(
            invalid,
            "unit_price",
            "is not accepted: name a product by its sku (GET /products); the shop sets prices",
        ),
        (None, _, None, Pricing::CatalogOnly) => refuse(invalid, "sku", "is required"),
        (None, name, unit_price, Pricing::CustomItemsAllowed) => {
            let name = name.unwrap_or_default().trim().to_owned();
            check_text(&format!("{at}.name"), &name, invalid);
            let unit_price = unit_price.filter(|p| (0..=MAX_TOTAL).contains(p));
            if unit_price.is_none() {
                invalid.push(InvalidParam::new(
                    format!("{at}.unit_price"),
                    format!("must be between 0 and {MAX_TOTAL} (KRW)"),
                ));
            }
            Some(Line::Custom(LineItem {
                name,
                quantity,
                unit_price: unit_price.unwrap_or_default(),
            }))
        }
    }
}

/// Where an order is in the saga.
///
/// `PENDING_PAYMENT` → `COMPLETED` when paid, or `CANCELLED` (declined, abandoned,
/// cancelled by the shopper). When the payment deadline passes the order does not decide
/// by itself whether the shopper paid — payment is the authority, and a `PaymentApproved`
/// may be on its way — so it goes `CLOSING_PAYMENT` (a semantic lock, as FTGO's
/// `*_PENDING` states) and asks payment to close the payment: `COMPLETED` if payment
/// answers it was approved, `CANCELLED` (`deadline_expired`) if nothing was charged. A
/// completed order the shopper cancels goes through `CANCELLING` while its payment is
/// refunded, then `CANCELLED`.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    diesel::AsExpression,
    diesel::FromSqlRow,
    utoipa::ToSchema,
)]
#[diesel(sql_type = diesel::sql_types::Text)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    PendingPayment,
    ClosingPayment,
    Completed,
    Cancelling,
    Cancelled,
}

impl OrderStatus {
    pub const ALL: [OrderStatus; 5] = [
        OrderStatus::PendingPayment,
        OrderStatus::ClosingPayment,
        OrderStatus::Completed,
        OrderStatus::Cancelling,
        OrderStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::PendingPayment => "PENDING_PAYMENT",
            OrderStatus::ClosingPayment => "CLOSING_PAYMENT",
            OrderStatus::Completed => "COMPLETED",
            OrderStatus::Cancelling => "CANCELLING",
            OrderStatus::Cancelled => "CANCELLED",
        }
    }

    /// Where the saga comes to rest: paid (`COMPLETED`) or given up (`CANCELLED`). Only a
    /// new request of the shopper (cancelling a paid order) or a late payment being given
    /// back changes such an order again, so a change stream may end here.
    pub fn is_settled(self) -> bool {
        matches!(self, OrderStatus::Completed | OrderStatus::Cancelled)
    }

    /// What the order does about `trigger` in this status. The table is the saga's
    /// order-side definition; everything not listed changes nothing (a late, repeated or
    /// irrelevant trigger).
    pub fn decide(self, trigger: Trigger) -> Decision {
        use OrderStatus as S;
        use PaymentCloseOutcome as Closed;
        use Trigger as T;
        match (self, trigger) {
            (S::PendingPayment, T::PaymentApproved) => Decision::Complete,
            (S::PendingPayment, T::PaymentFailed(reason)) => Decision::Cancel(reason),
            (S::PendingPayment, T::ShopperCancels) => {
                Decision::Cancel(CancelReason::CancelledByShopper)
            }
            // Payment decides whether the shopper paid; the order waits for its answer.
            (S::PendingPayment, T::DeadlinePassed) => Decision::ClosePayment,
            (S::ClosingPayment, T::PaymentApproved)
            | (S::PendingPayment | S::ClosingPayment, T::PaymentClosed(Closed::Approved)) => {
                Decision::Complete
            }
            (S::ClosingPayment, T::PaymentFailed(reason)) => Decision::Cancel(reason),
            (S::ClosingPayment, T::PaymentClosed(Closed::NotCharged)) => {
                Decision::Cancel(CancelReason::DeadlineExpired)
            }
            (S::Completed, T::ShopperCancels) => {
                Decision::RequestRefund(CancelReason::CancelledByShopper)
            }
            // Paid after the order was cancelled: the money goes back.
            (S::Cancelled, T::PaymentApproved | T::PaymentClosed(Closed::Approved)) => {
                Decision::RequestRefund(CancelReason::PaymentExpired)
            }
            (S::Cancelling | S::Cancelled, T::Refunded) => Decision::FinishRefund,
            _ => Decision::Nothing,
        }
    }
}

/// Something that happened to an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    PaymentApproved,
    PaymentFailed(CancelReason),
    ShopperCancels,
    DeadlinePassed,
    /// Payment's answer to the order's request to close the payment.
    PaymentClosed(PaymentCloseOutcome),
    Refunded,
}

/// What the order does about a trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// → `COMPLETED` + `OrderCompleted`.
    Complete,
    /// → `CANCELLED` + `OrderCancelled`.
    Cancel(CancelReason),
    /// → `CLOSING_PAYMENT` + `PaymentCloseRequested`.
    ClosePayment,
    /// → `CANCELLING` (from `COMPLETED`) + `RefundRequested`.
    RequestRefund(CancelReason),
    /// → `CANCELLED`, refunded + `OrderCancelled` with the refunded amount.
    FinishRefund,
    Nothing,
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OrderStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "PENDING_PAYMENT" => Ok(OrderStatus::PendingPayment),
            "CLOSING_PAYMENT" => Ok(OrderStatus::ClosingPayment),
            "COMPLETED" => Ok(OrderStatus::Completed),
            "CANCELLING" => Ok(OrderStatus::Cancelling),
            "CANCELLED" => Ok(OrderStatus::Cancelled),
            other => Err(format!("unknown order status {other:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(items: Vec<(&str, i64, i64)>) -> PlaceOrder {
        PlaceOrder {
            customer_id: "c-1".into(),
            customer_email: "kim@example.com".into(),
            items: items
                .into_iter()
                .map(|(name, quantity, unit_price)| PlaceOrderItem {
                    sku: None,
                    name: Some(name.into()),
                    quantity,
                    unit_price: Some(unit_price),
                })
                .collect(),
            locale: None,
        }
    }

    fn parse(request: PlaceOrder) -> Result<OrderRequest, Vec<InvalidParam>> {
        OrderRequest::parse(request, Pricing::CustomItemsAllowed)
    }

    fn names(err: Vec<InvalidParam>) -> Vec<String> {
        err.into_iter().map(|p| p.name).collect()
    }

    #[test]
    fn a_valid_request_keeps_its_lines() {
        let order = parse(request(vec![("커피", 2, 4500), ("쿠키", 1, 3000)])).expect("valid");
        assert_eq!(order.lines.len(), 2);
        assert_eq!(order.locale, Locale::Ko);
    }

    #[test]
    fn each_bad_field_is_named() {
        let mut bad = request(vec![("", 0, -1)]);
        bad.customer_email = "not-an-email".into();
        let err = parse(bad).expect_err("invalid");
        assert_eq!(
            names(err),
            [
                "customer_email",
                "items[0].quantity",
                "items[0].name",
                "items[0].unit_price"
            ]
        );
    }

    #[test]
    fn an_empty_cart_is_refused() {
        assert_eq!(
            names(parse(request(vec![])).expect_err("no items")),
            ["items"]
        );
    }

    #[test]
    fn a_sku_with_a_name_or_price_is_refused() {
        let mut order = request(vec![("beans", 1, 100)]);
        order.items[0].sku = Some("beans".into());
        assert_eq!(
            names(parse(order).expect_err("priced")),
            ["items[0].unit_price"]
        );
        let mut named = request(vec![("beans", 1, 1)]);
        named.items[0].sku = Some("beans".into());
        named.items[0].unit_price = None;
        assert_eq!(names(parse(named).expect_err("named")), ["items[0].name"]);
    }

    #[test]
    fn an_order_is_settled_once() {
        use Decision as D;
        use OrderStatus as S;
        use Trigger as T;
        let declined = T::PaymentFailed(CancelReason::PaymentDeclined);
        assert_eq!(S::PendingPayment.decide(T::PaymentApproved), D::Complete);
        assert_eq!(
            S::PendingPayment.decide(declined),
            D::Cancel(CancelReason::PaymentDeclined)
        );
        assert_eq!(S::Completed.decide(declined), D::Nothing);
        assert_eq!(
            S::Completed.decide(T::PaymentApproved),
            D::Nothing,
            "a redelivered approval"
        );
        assert_eq!(S::Cancelled.decide(declined), D::Nothing);
    }

    #[test]
    fn cancelling_and_refunds_follow_the_saga() {
        use Decision as D;
        use OrderStatus as S;
        use Trigger as T;
        let by_shopper = CancelReason::CancelledByShopper;
        assert_eq!(
            S::PendingPayment.decide(T::ShopperCancels),
            D::Cancel(by_shopper)
        );
        assert_eq!(S::PendingPayment.decide(T::DeadlinePassed), D::ClosePayment);
        assert_eq!(
            S::Completed.decide(T::ShopperCancels),
            D::RequestRefund(by_shopper)
        );
        assert_eq!(
            S::Cancelling.decide(T::ShopperCancels),
            D::Nothing,
            "asked twice"
        );
        assert_eq!(S::Cancelling.decide(T::Refunded), D::FinishRefund);
        assert!(
            matches!(S::Cancelled.decide(T::PaymentApproved), D::RequestRefund(_)),
            "late approval"
        );
        assert_eq!(S::Completed.decide(T::DeadlinePassed), D::Nothing);
    }

    #[test]
    fn a_deadline_waits_for_payment_to_say_whether_the_shopper_paid() {
        use Decision as D;
        use OrderStatus as S;
        use PaymentCloseOutcome as Closed;
        use Trigger as T;
        let closing = S::ClosingPayment;
        assert_eq!(closing.decide(T::PaymentApproved), D::Complete, "paid");
        assert_eq!(
            closing.decide(T::PaymentClosed(Closed::Approved)),
            D::Complete
        );
        assert_eq!(
            closing.decide(T::PaymentClosed(Closed::NotCharged)),
            D::Cancel(CancelReason::DeadlineExpired)
        );
        assert_eq!(
            closing.decide(T::PaymentFailed(CancelReason::PaymentDeclined)),
            D::Cancel(CancelReason::PaymentDeclined)
        );
        assert_eq!(closing.decide(T::DeadlinePassed), D::Nothing);
        assert_eq!(
            closing.decide(T::ShopperCancels),
            D::Nothing,
            "already closing"
        );
        assert!(!closing.is_settled());
        assert_eq!(
            S::Completed.decide(T::PaymentClosed(Closed::Approved)),
            D::Nothing,
            "the approval got there first"
        );
        assert_eq!(
            S::Cancelled.decide(T::PaymentClosed(Closed::NotCharged)),
            D::Nothing
        );
    }
}
