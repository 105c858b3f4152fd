//! The notifier's vocabulary: which mail an event calls for, a mail's delivery status
//! and the history record kept for each (event, recipient).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared_events::{Event, EventBody, OrderSnapshot};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

/// The kinds of mail (the `type` of a history record).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MailKind {
    /// `PaymentApproved`.
    PaymentCompleted,
    /// `OrderCompleted`.
    OrderCompleted,
    /// `OrderCancelled` without a refund.
    OrderCancelled,
    /// `OrderCancelled` with `refunded_amount`.
    OrderRefunded,
}

impl MailKind {
    pub const ALL: [MailKind; 4] = [
        MailKind::PaymentCompleted,
        MailKind::OrderCompleted,
        MailKind::OrderCancelled,
        MailKind::OrderRefunded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MailKind::PaymentCompleted => "payment_completed",
            MailKind::OrderCompleted => "order_completed",
            MailKind::OrderCancelled => "order_cancelled",
            MailKind::OrderRefunded => "order_refunded",
        }
    }

    /// The mail an event calls for, with the order it is about; `None` for events that
    /// need no mail.
    pub fn for_event(event: &Event) -> Option<(MailKind, &OrderSnapshot)> {
        match &event.body {
            EventBody::PaymentApproved(p) => Some((MailKind::PaymentCompleted, &p.order)),
            EventBody::OrderCompleted(p) => Some((MailKind::OrderCompleted, &p.order)),
            EventBody::OrderCancelled(p) if p.refunded_amount.is_some() => {
                Some((MailKind::OrderRefunded, &p.order))
            }
            EventBody::OrderCancelled(p) => Some((MailKind::OrderCancelled, &p.order)),
            EventBody::OrderPlaced(_)
            | EventBody::PaymentReady(_)
            | EventBody::PaymentFailed(_)
            | EventBody::PaymentRefunded(_)
            | EventBody::RefundRequested(_)
            | EventBody::PaymentCloseRequested(_)
            | EventBody::PaymentClosed(_) => None,
        }
    }
}

impl fmt::Display for MailKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MailKind {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        MailKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == s)
            .ok_or(())
    }
}

/// Where a mail's delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DeliveryStatus {
    /// Recorded, not yet attempted (or the process stopped during the first attempt).
    Pending,
    /// At least one attempt failed transiently; more will follow.
    Retrying,
    /// Accepted by the SMTP server.
    Sent,
    /// Permanently rejected, or every attempt failed.
    Failed,
}

impl DeliveryStatus {
    pub const ALL: [DeliveryStatus; 4] = [
        DeliveryStatus::Pending,
        DeliveryStatus::Retrying,
        DeliveryStatus::Sent,
        DeliveryStatus::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "PENDING",
            DeliveryStatus::Retrying => "RETRYING",
            DeliveryStatus::Sent => "SENT",
            DeliveryStatus::Failed => "FAILED",
        }
    }

    /// Sent or failed: nothing more will be attempted.
    pub fn is_final(self) -> bool {
        matches!(self, DeliveryStatus::Sent | DeliveryStatus::Failed)
    }
}

impl fmt::Display for DeliveryStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DeliveryStatus {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        DeliveryStatus::ALL
            .into_iter()
            .find(|status| status.as_str().eq_ignore_ascii_case(s))
            .ok_or(())
    }
}

/// One history record: one mail for one (event, recipient). This is also the JSON the
/// history API returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Notification {
    /// A UUIDv7 (time-ordered), assigned when the record is created.
    #[schema(format = Uuid)]
    pub id: String,
    pub event_id: Uuid,
    /// The saga event the mail is about (`PaymentApproved`, `OrderCompleted`…).
    pub event_type: String,
    pub order_id: Uuid,
    pub recipient: String,
    #[serde(rename = "type")]
    pub kind: MailKind,
    pub locale: String,
    pub status: DeliveryStatus,
    /// Delivery attempts made so far.
    pub attempts: u32,
    /// Why the last attempt failed; `null` once sent or before any attempt.
    #[schema(required = true)]
    pub last_error: Option<String>,
    pub subject: String,
    /// The `Message-ID` header of the mail, the same for a resend (see `message_id`).
    pub smtp_message_id: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// When the SMTP server accepted it; `null` until then.
    #[schema(required = true)]
    pub sent_at: Option<DateTime<Utc>>,
    /// When the event happened (end-to-end latency = `sent_at - event_occurred_at`).
    pub event_occurred_at: DateTime<Utc>,
}

/// A UUID in its hyphenated form, the only one the API's `format: uuid` names (a
/// parser taking the others too would accept what the document forbids).
pub fn hyphenated_uuid(text: &str) -> Option<Uuid> {
    (text.len() == 36)
        .then(|| Uuid::parse_str(text).ok())
        .flatten()
}

/// The deterministic `Message-ID` of the mail for (`event_id`, `recipient`): a resend
/// after a crash carries the same id, so it is recognisably the same mail.
pub fn message_id(event_id: Uuid, recipient: &str, domain: &str) -> String {
    let id = Uuid::new_v5(&event_id, recipient.trim().to_lowercase().as_bytes());
    format!("<{id}.notification@{domain}>")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_statuses_round_trip_through_their_names() {
        for kind in MailKind::ALL {
            assert_eq!(kind.as_str().parse::<MailKind>(), Ok(kind));
            assert_eq!(
                serde_json::to_value(kind).expect("json"),
                serde_json::Value::from(kind.as_str())
            );
        }
        for status in DeliveryStatus::ALL {
            assert_eq!(status.as_str().parse::<DeliveryStatus>(), Ok(status));
            assert_eq!(
                serde_json::to_value(status).expect("json"),
                serde_json::Value::from(status.as_str())
            );
        }
        assert!("shipped".parse::<MailKind>().is_err());
    }

    #[test]
    fn the_message_id_is_deterministic_per_event_and_recipient() {
        let event = Uuid::now_v7();
        let a = message_id(event, "kim@example.com", "example.com");
        assert_eq!(a, message_id(event, "Kim@Example.com ", "example.com"));
        assert_ne!(a, message_id(event, "lee@example.com", "example.com"));
        assert_ne!(
            a,
            message_id(Uuid::now_v7(), "kim@example.com", "example.com")
        );
        assert!(a.starts_with('<') && a.ends_with("@example.com>"), "{a}");
    }
}
