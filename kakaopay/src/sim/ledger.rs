//! The ledger: what the simulator saw, per tid. `GET /__sim/ledger` serves it as
//! `{ "<tid>": { "partner_order_id", "status", "approve_calls", "approved",
//! "cancel_calls", "canceled_amount", "total_amount", ... } }`.
//!
//! That shape is a contract used by other test suites: fields may be added,
//! never renamed or removed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::types::PaymentStatus;

/// Snapshot of every payment, keyed by tid.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Ledger {
    pub payments: BTreeMap<String, LedgerEntry>,
}

/// One payment as the simulator saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LedgerEntry {
    pub partner_order_id: String,
    #[schema(inline, value_type = super::schema::SimStatus)]
    pub status: PaymentStatus,
    /// Approve calls that reached this tid, successful or not (calls rejected
    /// by an injected outage/error never reach a tid and are not counted).
    pub approve_calls: u32,
    /// Whether an approve ever succeeded (stays true after refunds).
    pub approved: bool,
    /// Cancel calls that reached this tid, successful or not.
    pub cancel_calls: u32,
    /// Cumulative refunded amount (KRW).
    pub canceled_amount: i64,
    /// Amount requested at ready (KRW).
    pub total_amount: i64,
    #[serde(default)]
    #[schema(required = true)]
    pub partner_user_id: String,
    /// `ready` time, Kakao format (KST, no offset).
    #[serde(default)]
    #[schema(required = true)]
    pub created_at: Option<String>,
    #[serde(default)]
    #[schema(required = true)]
    pub approved_at: Option<String>,
}

impl Ledger {
    pub fn get(&self, tid: &str) -> Option<&LedgerEntry> {
        self.payments.get(tid)
    }

    /// Every `(tid, entry)` made for a merchant order id (a retried ready can
    /// create several).
    pub fn by_partner_order_id<'a>(
        &'a self,
        partner_order_id: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a LedgerEntry)> + 'a {
        self.payments
            .iter()
            .filter(move |(_, e)| e.partner_order_id == partner_order_id)
            .map(|(tid, e)| (tid.as_str(), e))
    }

    pub fn len(&self) -> usize {
        self.payments.len()
    }

    pub fn is_empty(&self) -> bool {
        self.payments.is_empty()
    }
}
