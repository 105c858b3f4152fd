//! What the shoppers saw: one [`Outcome`] per shopper, summed up in a [`Recorder`].

use crate::stats::Latency;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// What one shopper saw.
#[derive(Debug, Default)]
pub struct Outcome {
    pub order_id: Option<String>,
    pub accept: Option<Duration>,
    pub ready: Option<Duration>,
    pub approve: Option<Duration>,
    pub end_to_end: Option<Duration>,
    pub end_to_end_server_ms: Option<i64>,
    pub error: Option<String>,
}

/// Counts and latency histograms of every shopper.
#[derive(Debug, Default)]
pub struct Recorder {
    pub started: u64,
    pub accepted: u64,
    pub payment_ready: u64,
    pub approved: u64,
    pub completed: u64,
    pub errors: BTreeMap<String, u64>,
    pub accept: Latency,
    pub ready: Latency,
    pub approve: Latency,
    pub end_to_end: Latency,
    pub end_to_end_server: Latency,
    /// Accepted order ids (only with
    /// [`ShopConfig::keep_order_ids`](super::ShopConfig::keep_order_ids)).
    pub order_ids: Vec<String>,
    keep_ids: bool,
}

impl Recorder {
    pub fn new(keep_order_ids: bool) -> Self {
        Self {
            keep_ids: keep_order_ids,
            ..Self::default()
        }
    }

    pub fn record(&mut self, outcome: Outcome) {
        self.started += 1;
        if let Some(d) = outcome.accept {
            self.accepted += 1;
            self.accept.record(d);
            if self.keep_ids {
                if let Some(id) = outcome.order_id {
                    self.order_ids.push(id);
                }
            }
        }
        if let Some(d) = outcome.ready {
            self.payment_ready += 1;
            self.ready.record(d);
        }
        if let Some(d) = outcome.approve {
            self.approved += 1;
            self.approve.record(d);
        }
        if let Some(d) = outcome.end_to_end {
            self.completed += 1;
            self.end_to_end.record(d);
        }
        if let Some(ms) = outcome.end_to_end_server_ms {
            self.end_to_end_server.record_millis(ms);
        }
        if let Some(kind) = outcome.error {
            *self.errors.entry(kind).or_default() += 1;
        }
    }

    pub fn error(&mut self, kind: &str) {
        *self.errors.entry(kind.to_owned()).or_default() += 1;
    }

    pub fn errors_total(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Shoppers scheduled, including those refused by the in-flight limit.
    pub fn shoppers(&self) -> u64 {
        self.started + self.errors.get("in_flight_limit").copied().unwrap_or(0)
    }

    /// Per latency: count, percentiles and the CDF table (milliseconds).
    pub fn latency_json(&self) -> Value {
        json!({
            "accept": self.accept.summary(),
            "payment_ready": self.ready.summary(),
            "approve": self.approve.summary(),
            "end_to_end": self.end_to_end.summary(),
            "end_to_end_server": self.end_to_end_server.summary(),
        })
    }
}

/// What every latency of the [`Recorder`] measures.
pub fn latency_definitions() -> Value {
    json!({
        "accept": "POST /orders → 202 received; open loop: from the scheduled start (coordinated omission corrected)",
        "payment_ready": "202 received → GET /orders/{id} first shows payment.redirect_url (long poll: answered when the order changes)",
        "approve": "GET payment.redirect_url, redirects followed, → 200 APPROVED from payment's callback",
        "end_to_end": "202 received → GET /orders/{id} first shows COMPLETED (client view, long poll)",
        "end_to_end_server": "completed_at - created_at of the order (server clock)",
    })
}

pub fn lock(recorder: &Mutex<Recorder>) -> MutexGuard<'_, Recorder> {
    recorder.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recorder_counts_and_keeps_ids_when_asked() {
        let mut r = Recorder::new(true);
        r.record(Outcome {
            order_id: Some("a".into()),
            accept: Some(Duration::from_millis(5)),
            ..Outcome::default()
        });
        r.record(Outcome {
            error: Some("accept_http_503".into()),
            ..Outcome::default()
        });
        r.error("in_flight_limit");
        assert_eq!(r.started, 2);
        assert_eq!(r.accepted, 1);
        assert_eq!(r.order_ids, vec!["a".to_owned()]);
        assert_eq!(r.errors_total(), 2);
        assert_eq!(r.shoppers(), 3);
        let mut r = Recorder::new(false);
        r.record(Outcome {
            order_id: Some("a".into()),
            accept: Some(Duration::from_millis(5)),
            ..Outcome::default()
        });
        assert!(r.order_ids.is_empty());
    }
}
