//! Topic names. They are versioned (`*.v1`): a breaking change to the contract gets new
//! topics rather than surprising old consumers. A prefix lets tests (and several stacks on
//! one broker) keep their traffic apart.

use crate::event::{EventBody, EventType};

pub const ORDERS: &str = "orders.v1";
pub const PAYMENTS: &str = "payments.v1";
pub const DEAD_LETTER: &str = "deadletter.v1";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    pub orders: String,
    pub payments: String,
    pub dead_letter: String,
}

impl Topics {
    pub fn with_prefix(prefix: &str) -> Self {
        Self {
            orders: format!("{prefix}{ORDERS}"),
            payments: format!("{prefix}{PAYMENTS}"),
            dead_letter: format!("{prefix}{DEAD_LETTER}"),
        }
    }

    /// The topic an event is published to: order events on the orders topic, payment
    /// events on the payments topic.
    pub fn for_event(&self, body: &EventBody) -> &str {
        match body.event_type() {
            EventType::OrderPlaced
            | EventType::OrderCompleted
            | EventType::OrderCancelled
            | EventType::RefundRequested
            | EventType::PaymentCloseRequested => &self.orders,
            EventType::PaymentReady
            | EventType::PaymentApproved
            | EventType::PaymentFailed
            | EventType::PaymentRefunded
            | EventType::PaymentClosed => &self.payments,
        }
    }

    pub fn all(&self) -> [&str; 3] {
        [&self.orders, &self.payments, &self.dead_letter]
    }
}

impl Default for Topics {
    fn default() -> Self {
        Self::with_prefix("")
    }
}
