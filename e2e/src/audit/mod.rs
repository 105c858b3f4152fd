//! saga-audit: reads what the saga left behind — the order and payment databases, the
//! notifier's mail history (MongoDB) and, in the local stack, the Kakao Pay simulator's
//! ledger — and lists every order that breaks an invariant a shopper or the shop cares
//! about (see [`Invariant`]).
//!
//! The sources are read as they are at one moment ([`collect`]); the rules are pure
//! ([`rules::check`]), so they can be judged on any snapshot. Sagas still settling are not
//! judged: an order or payment changed within `quiet_for` is left alone except for its
//! deadline, so a live system is not reported for work in flight.

mod collect;
pub mod rules;

pub use collect::{collect, Sources};
pub use rules::{check, Invariant, Rules, Snapshot, Violation};

use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::BTreeMap;

/// What an audit found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub checked_at: DateTime<Utc>,
    /// Orders read, by status (`COMPLETED`, `CANCELLED`, `PENDING_PAYMENT`, …).
    pub orders: BTreeMap<String, usize>,
    /// Orders not `COMPLETED` or `CANCELLED`, whether or not past their deadline.
    pub not_terminal: usize,
    pub payments: usize,
    pub mails: usize,
    /// Whether the gateway's ledger was read (`--kakaopay-ledger`).
    pub ledger_read: bool,
    pub violations: Vec<Violation>,
    /// Violations per invariant (every invariant listed, 0 included).
    pub summary: BTreeMap<Invariant, usize>,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.violations.is_empty()
    }

    /// The text form: one line per violation, then the summary line.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for v in &self.violations {
            out.push_str(&format!(
                "{}\t{}\t{}\n",
                v.order_id, v.invariant, v.evidence
            ));
        }
        let orders: usize = self.orders.values().sum();
        let statuses: Vec<String> = self
            .orders
            .iter()
            .map(|(status, n)| format!("{n} {status}"))
            .collect();
        let counts: Vec<String> = self
            .summary
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(invariant, n)| format!("{invariant}={n}"))
            .collect();
        out.push_str(&format!(
            "saga-audit: {orders} orders ({}), {} payments, {} mails, ledger {}; {} violation(s){}\n",
            if statuses.is_empty() {
                "none".to_owned()
            } else {
                statuses.join(", ")
            },
            self.payments,
            self.mails,
            if self.ledger_read { "read" } else { "not read" },
            self.violations.len(),
            if counts.is_empty() {
                String::new()
            } else {
                format!(": {}", counts.join(", "))
            }
        ));
        out
    }
}

/// Reads every source and judges the snapshot at `now`.
pub async fn audit(sources: &Sources, rules: &Rules) -> anyhow::Result<Report> {
    let snapshot = collect(sources).await?;
    Ok(report(&snapshot, rules, Utc::now()))
}

/// Judges `snapshot` as of `now`.
pub fn report(snapshot: &Snapshot, rules: &Rules, now: DateTime<Utc>) -> Report {
    let violations = check(snapshot, rules, now);
    let mut summary: BTreeMap<Invariant, usize> = Invariant::ALL.iter().map(|&i| (i, 0)).collect();
    for v in &violations {
        *summary.entry(v.invariant).or_default() += 1;
    }
    let mut orders = BTreeMap::new();
    for order in &snapshot.orders {
        *orders.entry(order.status.clone()).or_default() += 1;
    }
    Report {
        checked_at: now,
        not_terminal: snapshot.orders.iter().filter(|o| !o.is_terminal()).count(),
        orders,
        payments: snapshot.payments.len(),
        mails: snapshot.mails.values().map(Vec::len).sum(),
        ledger_read: snapshot.ledger.is_some(),
        violations,
        summary,
    }
}
