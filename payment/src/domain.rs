//! The payment domain: statuses, and how an order becomes a Kakao Pay request.

use serde::Serialize;
use shared_events::OrderSnapshot;
use std::fmt;
use std::str::FromStr;

/// Where a payment is.
///
/// `REQUESTED` (order seen, gateway not yet asked) → `READY` (tid issued, shopper may pay)
/// → `APPROVING` (approve sent; at most one caller gets here per payment) → `APPROVED`.
/// Any step before `APPROVED` may end in `FAILED`. A refund goes `APPROVED` →
/// `REFUNDING` (at most one caller) → `REFUNDED`.
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
pub enum PaymentStatus {
    Requested,
    Ready,
    Approving,
    Approved,
    Failed,
    Refunding,
    Refunded,
}

impl PaymentStatus {
    pub const ALL: [PaymentStatus; 7] = [
        PaymentStatus::Requested,
        PaymentStatus::Ready,
        PaymentStatus::Approving,
        PaymentStatus::Approved,
        PaymentStatus::Failed,
        PaymentStatus::Refunding,
        PaymentStatus::Refunded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Requested => "REQUESTED",
            PaymentStatus::Ready => "READY",
            PaymentStatus::Approving => "APPROVING",
            PaymentStatus::Approved => "APPROVED",
            PaymentStatus::Failed => "FAILED",
            PaymentStatus::Refunding => "REFUNDING",
            PaymentStatus::Refunded => "REFUNDED",
        }
    }
}

impl fmt::Display for PaymentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PaymentStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "REQUESTED" => PaymentStatus::Requested,
            "READY" => PaymentStatus::Ready,
            "APPROVING" => PaymentStatus::Approving,
            "APPROVED" => PaymentStatus::Approved,
            "FAILED" => PaymentStatus::Failed,
            "REFUNDING" => PaymentStatus::Refunding,
            "REFUNDED" => PaymentStatus::Refunded,
            other => return Err(format!("unknown payment status {other:?}")),
        })
    }
}

/// Kakao Pay's limit for `item_name`.
const MAX_ITEM_NAME: usize = 100;

/// The `item_name` shown on the Kakao Pay page: the first item, and how many others
/// (`커피 외 2건` / `Coffee and 2 more`), cut to Kakao's 100 characters.
pub fn item_name(order: &OrderSnapshot) -> String {
    let first = order
        .items
        .first()
        .map(|i| i.name.as_str())
        .unwrap_or("order");
    let others = order.items.len().saturating_sub(1);
    let name = match (others, order.locale.as_str()) {
        (0, _) => first.to_owned(),
        (n, "en") => format!("{first} and {n} more"),
        (n, _) => format!("{first} 외 {n}건"),
    };
    name.chars().take(MAX_ITEM_NAME).collect()
}

/// The total quantity of the order's items.
pub fn quantity(order: &OrderSnapshot) -> i64 {
    order.items.iter().map(|i| i64::from(i.quantity)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared_events::LineItem;

    fn order(names: &[&str], locale: &str) -> OrderSnapshot {
        OrderSnapshot {
            customer_id: "c".into(),
            customer_email: "c@example.com".into(),
            locale: locale.into(),
            items: names
                .iter()
                .map(|n| LineItem {
                    name: (*n).into(),
                    quantity: 2,
                    unit_price: 10,
                })
                .collect(),
            total_amount: 20 * names.len() as i64,
        }
    }

    #[test]
    fn the_item_name_summarises_the_order() {
        assert_eq!(item_name(&order(&["커피"], "ko")), "커피");
        assert_eq!(
            item_name(&order(&["커피", "쿠키", "빵"], "ko")),
            "커피 외 2건"
        );
        assert_eq!(
            item_name(&order(&["Coffee", "Cookie"], "en")),
            "Coffee and 1 more"
        );
        assert_eq!(quantity(&order(&["a", "b"], "ko")), 4);
    }

    #[test]
    fn the_item_name_is_cut_to_kakaos_limit() {
        let long = "가".repeat(150);
        assert_eq!(item_name(&order(&[&long], "ko")).chars().count(), 100);
    }
}
