//! The event envelope and the saga's events.
//!
//! On the wire every event is one JSON object:
//!
//! ```json
//! { "event_id": "…uuid…", "event_type": "OrderPlaced", "schema_version": 1,
//!   "occurred_at": "2026-11-24T08:00:00Z", "order_id": "…uuid…",
//!   "causation_id": null, "payload": { … } }
//! ```
//!
//! `order_id` is the saga id and the Kafka key. `causation_id` is the id of the event that
//! caused this one (none for an order placed by a shopper), so a saga's steps can be
//! followed backwards. Decoding checks the envelope first, then the schema version of the
//! event type, then the payload, and says which of them was wrong.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

/// The only schema version this build reads and writes.
pub const SCHEMA_VERSION: u16 = 1;

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub event_id: Uuid,
    pub occurred_at: DateTime<Utc>,
    pub order_id: Uuid,
    pub causation_id: Option<Uuid>,
    pub body: EventBody,
}

impl Event {
    /// A new event for `order_id`, caused by `causation_id` (if any), happening now.
    pub fn new(order_id: Uuid, causation_id: Option<Uuid>, body: impl Into<EventBody>) -> Self {
        Self {
            event_id: Uuid::now_v7(),
            occurred_at: Utc::now(),
            order_id,
            causation_id,
            body: body.into(),
        }
    }

    /// A new event caused by `self`, for the same order.
    pub fn follow_up(&self, body: impl Into<EventBody>) -> Self {
        Self::new(self.order_id, Some(self.event_id), body)
    }

    pub fn event_type(&self) -> EventType {
        self.body.event_type()
    }

    /// The Kafka key: the order id, so one order's events keep their order.
    pub fn key(&self) -> String {
        self.order_id.to_string()
    }

    pub fn to_json(&self) -> String {
        let wire = WireOut {
            event_id: self.event_id,
            event_type: self.event_type().as_str(),
            schema_version: SCHEMA_VERSION,
            occurred_at: self.occurred_at,
            order_id: self.order_id,
            causation_id: self.causation_id,
            payload: self.body.payload_json(),
        };
        serde_json::to_string(&wire).expect("an event always serialises to JSON")
    }

    pub fn from_json(bytes: &[u8]) -> Result<Self, DecodeError> {
        let wire: WireIn = serde_json::from_slice(bytes).map_err(DecodeError::Malformed)?;
        let event_type: EventType = wire
            .event_type
            .parse()
            .map_err(|_| DecodeError::UnknownEventType(wire.event_type.clone()))?;
        if wire.schema_version != SCHEMA_VERSION {
            return Err(DecodeError::UnsupportedVersion {
                event_type: wire.event_type,
                version: wire.schema_version,
            });
        }
        let body = EventBody::from_payload(event_type, wire.payload).map_err(|source| {
            DecodeError::InvalidPayload {
                event_type: wire.event_type,
                source,
            }
        })?;
        Ok(Self {
            event_id: wire.event_id,
            occurred_at: wire.occurred_at,
            order_id: wire.order_id,
            causation_id: wire.causation_id,
            body,
        })
    }
}

#[derive(Serialize)]
struct WireOut {
    event_id: Uuid,
    event_type: &'static str,
    schema_version: u16,
    occurred_at: DateTime<Utc>,
    order_id: Uuid,
    causation_id: Option<Uuid>,
    payload: serde_json::Value,
}

#[derive(Deserialize)]
struct WireIn {
    event_id: Uuid,
    event_type: String,
    schema_version: u16,
    occurred_at: DateTime<Utc>,
    order_id: Uuid,
    #[serde(default)]
    causation_id: Option<Uuid>,
    payload: serde_json::Value,
}

/// Why a message could not be read as an event. Each is permanent: retrying the same
/// bytes gives the same answer, so the consumer dead-letters the message with this text.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not a valid event envelope: {0}")]
    Malformed(#[source] serde_json::Error),
    #[error("unknown event type {0:?}")]
    UnknownEventType(String),
    #[error(
        "unsupported schema version {version} of {event_type} (this build reads {SCHEMA_VERSION})"
    )]
    UnsupportedVersion { event_type: String, version: u16 },
    #[error("invalid {event_type} payload: {source}")]
    InvalidPayload {
        event_type: String,
        #[source]
        source: serde_json::Error,
    },
}

macro_rules! event_types {
    ($($name:ident),+ $(,)?) => {
        /// The kinds of event in the saga.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum EventType { $($name),+ }

        impl EventType {
            pub const ALL: &'static [EventType] = &[$(EventType::$name),+];

            pub fn as_str(self) -> &'static str {
                match self { $(EventType::$name => stringify!($name)),+ }
            }
        }

        impl FromStr for EventType {
            type Err = ();
            fn from_str(s: &str) -> Result<Self, ()> {
                match s { $(stringify!($name) => Ok(EventType::$name),)+ _ => Err(()) }
            }
        }

        /// An event's payload, by type.
        #[derive(Debug, Clone, PartialEq)]
        pub enum EventBody { $($name($name)),+ }

        impl EventBody {
            pub fn event_type(&self) -> EventType {
                match self { $(EventBody::$name(_) => EventType::$name),+ }
            }

            fn payload_json(&self) -> serde_json::Value {
                match self {
                    $(EventBody::$name(p) => serde_json::to_value(p)
                        .expect("an event payload always serialises to JSON")),+
                }
            }

            fn from_payload(
                event_type: EventType,
                payload: serde_json::Value,
            ) -> Result<Self, serde_json::Error> {
                Ok(match event_type {
                    $(EventType::$name => EventBody::$name(serde_json::from_value(payload)?)),+
                })
            }
        }

        $(impl From<$name> for EventBody {
            fn from(p: $name) -> Self { EventBody::$name(p) }
        })+
    };
}

event_types!(
    OrderPlaced,
    PaymentReady,
    PaymentApproved,
    PaymentFailed,
    PaymentRefunded,
    OrderCompleted,
    OrderCancelled,
    RefundRequested,
    PaymentCloseRequested,
    PaymentClosed,
);

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line of an order. Amounts are whole KRW.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineItem {
    pub name: String,
    pub quantity: u32,
    pub unit_price: i64,
}

/// What every later step needs to know about the order (the payment's item name, the
/// mail's recipient, lines and total), carried in the events so no service has to call
/// back to the order service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderSnapshot {
    pub customer_id: String,
    pub customer_email: String,
    /// `ko` or `en`: the language of the shopper's mails.
    pub locale: String,
    pub items: Vec<LineItem>,
    pub total_amount: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderPlaced {
    pub order: OrderSnapshot,
    /// The order is cancelled if not paid by then.
    pub payment_deadline: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentReady {
    pub payment_id: Uuid,
    pub tid: String,
    /// Where the shopper approves the payment (Kakao Pay's PC page).
    pub redirect_url: String,
    pub mobile_redirect_url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentApproved {
    pub payment_id: Uuid,
    pub tid: String,
    pub amount: i64,
    pub payment_method: Option<String>,
    pub approved_at: DateTime<Utc>,
    pub order: OrderSnapshot,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentFailureReason {
    /// The gateway declined the approval (card refused, limit, …).
    Declined,
    /// The shopper cancelled on the Kakao Pay page.
    ShopperCancelled,
    /// Kakao Pay sent the shopper to the fail URL.
    Failed,
    /// The payment (tid) expired before it was approved.
    Expired,
    /// The gateway could not be reached or kept failing.
    GatewayUnavailable,
    /// The gateway rejected the request for another permanent reason.
    Rejected,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentFailed {
    pub payment_id: Option<Uuid>,
    pub tid: Option<String>,
    pub reason: PaymentFailureReason,
    /// The gateway's error code, when it gave one.
    pub error_code: Option<i32>,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentRefunded {
    pub payment_id: Uuid,
    pub tid: String,
    pub amount: i64,
    pub refunded_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderCompleted {
    pub order: OrderSnapshot,
    pub payment_id: Uuid,
    pub completed_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelReason {
    PaymentDeclined,
    PaymentCancelledByShopper,
    PaymentFailed,
    PaymentExpired,
    PaymentUnavailable,
    /// The order was not paid before its deadline.
    DeadlineExpired,
    /// The shopper cancelled the order (refunded if it was paid).
    CancelledByShopper,
}

impl From<PaymentFailureReason> for CancelReason {
    fn from(reason: PaymentFailureReason) -> Self {
        match reason {
            PaymentFailureReason::Declined | PaymentFailureReason::Rejected => {
                CancelReason::PaymentDeclined
            }
            PaymentFailureReason::ShopperCancelled => CancelReason::PaymentCancelledByShopper,
            PaymentFailureReason::Failed => CancelReason::PaymentFailed,
            PaymentFailureReason::Expired => CancelReason::PaymentExpired,
            PaymentFailureReason::GatewayUnavailable => CancelReason::PaymentUnavailable,
        }
    }
}

/// The order asks payment to give the shopper's money back: the shopper cancelled a
/// paid order, or a payment was approved after its order had been cancelled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefundRequested {
    pub payment_id: Uuid,
    pub amount: i64,
    pub reason: CancelReason,
}

/// The order's payment deadline passed: the order asks payment — the authority on whether
/// the shopper paid — to close the payment, and waits (`CLOSING_PAYMENT`) for
/// [`PaymentClosed`] (or `PaymentApproved` / `PaymentFailed`) before it completes or is
/// cancelled. Payment makes the payment unpayable from now on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentCloseRequested {
    /// The payment the order knows of, if it has heard of one.
    pub payment_id: Option<Uuid>,
    pub reason: CancelReason,
}

/// What payment found when it closed a payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentCloseOutcome {
    /// The shopper was charged: the order completes.
    Approved,
    /// Nothing was charged (or it was given back), and the payment can no longer be paid:
    /// the order is cancelled.
    NotCharged,
}

/// Payment's answer to [`PaymentCloseRequested`]. A payment whose approval is still
/// unclear is answered only once Kakao Pay's record settles it (then possibly by
/// `PaymentApproved` / `PaymentFailed` instead).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentClosed {
    pub payment_id: Option<Uuid>,
    pub tid: Option<String>,
    pub outcome: PaymentCloseOutcome,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderCancelled {
    pub order: OrderSnapshot,
    pub reason: CancelReason,
    /// The amount refunded to the shopper, when the order had been paid.
    pub refunded_amount: Option<i64>,
    pub cancelled_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> OrderSnapshot {
        OrderSnapshot {
            customer_id: "c-1".into(),
            customer_email: "kim@example.com".into(),
            locale: "ko".into(),
            items: vec![LineItem {
                name: "커피".into(),
                quantity: 2,
                unit_price: 4500,
            }],
            total_amount: 9000,
        }
    }

    fn every_event() -> Vec<Event> {
        let order_id = Uuid::now_v7();
        let placed = Event::new(
            order_id,
            None,
            OrderPlaced {
                order: snapshot(),
                payment_deadline: Utc::now(),
            },
        );
        let payment_id = Uuid::now_v7();
        vec![
            placed.follow_up(PaymentReady {
                payment_id,
                tid: "T1234567890123456789".into(),
                redirect_url: "http://pay/x".into(),
                mobile_redirect_url: None,
            }),
            placed.follow_up(PaymentApproved {
                payment_id,
                tid: "T1234567890123456789".into(),
                amount: 9000,
                payment_method: Some("MONEY".into()),
                approved_at: Utc::now(),
                order: snapshot(),
            }),
            placed.follow_up(PaymentFailed {
                payment_id: Some(payment_id),
                tid: None,
                reason: PaymentFailureReason::Declined,
                error_code: Some(-780),
                detail: "approval failure!".into(),
            }),
            placed.follow_up(PaymentRefunded {
                payment_id,
                tid: "T1234567890123456789".into(),
                amount: 9000,
                refunded_at: Utc::now(),
            }),
            placed.follow_up(OrderCompleted {
                order: snapshot(),
                payment_id,
                completed_at: Utc::now(),
            }),
            placed.follow_up(OrderCancelled {
                order: snapshot(),
                reason: CancelReason::PaymentDeclined,
                refunded_amount: None,
                cancelled_at: Utc::now(),
            }),
            placed.follow_up(RefundRequested {
                payment_id,
                amount: 9000,
                reason: CancelReason::CancelledByShopper,
            }),
            placed.follow_up(PaymentCloseRequested {
                payment_id: Some(payment_id),
                reason: CancelReason::DeadlineExpired,
            }),
            placed.follow_up(PaymentClosed {
                payment_id: Some(payment_id),
                tid: Some("T1234567890123456789".into()),
                outcome: PaymentCloseOutcome::NotCharged,
            }),
            placed,
        ]
    }

    #[test]
    fn every_event_type_round_trips_through_json() {
        let events = every_event();
        assert_eq!(events.len(), EventType::ALL.len());
        for event in events {
            let decoded = Event::from_json(event.to_json().as_bytes()).expect("decodes");
            assert_eq!(decoded, event);
        }
    }

    #[test]
    fn the_envelope_carries_type_version_and_key() {
        let event = every_event().pop().expect("an event");
        let json: serde_json::Value = serde_json::from_str(&event.to_json()).expect("json");
        assert_eq!(json["event_type"], "OrderPlaced");
        assert_eq!(json["schema_version"], 1);
        assert_eq!(json["order_id"], event.order_id.to_string());
        assert_eq!(event.key(), event.order_id.to_string());
        assert_eq!(json["payload"]["order"]["total_amount"], 9000);
    }

    #[test]
    fn an_unknown_schema_version_is_rejected() {
        let event = every_event().pop().expect("an event");
        let mut json: serde_json::Value = serde_json::from_str(&event.to_json()).expect("json");
        json["schema_version"] = 2.into();
        let err = Event::from_json(json.to_string().as_bytes()).expect_err("rejected");
        assert!(matches!(
            err,
            DecodeError::UnsupportedVersion { version: 2, .. }
        ));
    }

    #[test]
    fn malformed_json_is_rejected() {
        let err = Event::from_json(b"{not json").expect_err("rejected");
        assert!(matches!(err, DecodeError::Malformed(_)));
        let err = Event::from_json(br#"{"event_type":"OrderPlaced"}"#).expect_err("rejected");
        assert!(matches!(err, DecodeError::Malformed(_)));
    }

    #[test]
    fn an_unknown_event_type_is_rejected() {
        let event = every_event().pop().expect("an event");
        let json = event.to_json().replace("OrderPlaced", "OrderTeleported");
        let err = Event::from_json(json.as_bytes()).expect_err("rejected");
        assert!(matches!(err, DecodeError::UnknownEventType(t) if t == "OrderTeleported"));
    }

    #[test]
    fn a_payload_of_the_wrong_shape_is_rejected_naming_the_type() {
        let event = every_event().pop().expect("an event");
        let mut json: serde_json::Value = serde_json::from_str(&event.to_json()).expect("json");
        json["payload"] = serde_json::json!({"order": 5});
        let err = Event::from_json(json.to_string().as_bytes()).expect_err("rejected");
        assert!(
            err.to_string().contains("invalid OrderPlaced payload"),
            "{err}"
        );
    }
}
