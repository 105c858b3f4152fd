//! Shared simulator state: payments, knobs and the (shiftable) clock.
//!
//! Every lock here is a `std::sync::Mutex` taken inside a synchronous method
//! and released before it returns, so no lock is ever held across an `.await`.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use url::Url;

use super::error::ApiError;
use super::faults::{CallPlan, Knobs};
use super::ids::new_id;
use super::ledger::Ledger;
use super::payment::{Ctx, Payment};

/// How far the clock may be moved: ten thousand years, far from chrono's end of time
/// (year 262143) so formatting a moved instant in KST never overflows.
const MAX_CLOCK_OFFSET: chrono::Duration = chrono::Duration::days(3_652_425);

/// The simulator's state as the handlers receive it.
pub(crate) type Data = actix_web::web::Data<SimState>;

pub(crate) struct SimState {
    pub cid: String,
    secret_key: SecretString,
    /// Base for the shopper page links (always ends with `/`).
    pub public_url: Url,
    knobs: Mutex<Knobs>,
    payments: Mutex<HashMap<String, Payment>>,
    /// Added to the wall clock; lets tests expire a tid without waiting.
    clock_offset: Mutex<chrono::Duration>,
}

/// A poisoned lock only means another handler panicked mid-update; the map is
/// still usable for a simulator, so carry on rather than cascade the panic.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl SimState {
    pub fn new(cid: String, secret_key: SecretString, public_url: Url, knobs: Knobs) -> Self {
        Self {
            cid,
            secret_key,
            public_url,
            knobs: Mutex::new(knobs),
            payments: Mutex::new(HashMap::new()),
            clock_offset: Mutex::new(chrono::Duration::zero()),
        }
    }

    pub fn key_matches(&self, presented: &str) -> bool {
        presented == self.secret_key.expose_secret()
    }

    pub fn ctx(&self) -> Ctx {
        let knobs = lock(&self.knobs);
        let offset = *lock(&self.clock_offset);
        Ctx {
            now: Utc::now()
                .checked_add_signed(offset)
                .unwrap_or(DateTime::<Utc>::MAX_UTC),
            tid_ttl: knobs.tid_ttl,
            mode: knobs.mode,
        }
    }

    /// Moves the clock forward by `by`, at most to [`MAX_CLOCK_OFFSET`] in all: a clock
    /// past chrono's calendar would make every later call fail.
    pub fn advance_clock(&self, by: Duration) {
        let by = chrono::Duration::from_std(by).unwrap_or(MAX_CLOCK_OFFSET);
        let mut offset = lock(&self.clock_offset);
        *offset = offset
            .checked_add(&by)
            .map_or(MAX_CLOCK_OFFSET, |sum| sum.min(MAX_CLOCK_OFFSET));
    }

    pub fn with_knobs<R>(&self, f: impl FnOnce(&mut Knobs) -> R) -> R {
        f(&mut lock(&self.knobs))
    }

    pub fn plan_call(&self, endpoint: &str) -> CallPlan {
        lock(&self.knobs).plan_call(endpoint)
    }

    pub fn decline_code(&self) -> Option<String> {
        lock(&self.knobs).faults.decline_code.clone()
    }

    /// Stores a new payment under a fresh tid and returns what `f` renders.
    pub fn insert_new<R>(
        &self,
        make: impl FnOnce(String) -> Payment,
        render: impl FnOnce(&Payment) -> R,
    ) -> R {
        let mut payments = lock(&self.payments);
        let tid = loop {
            let candidate = new_id('T');
            if !payments.contains_key(&candidate) {
                break candidate;
            }
        };
        let payment = payments.entry(tid.clone()).or_insert(make(tid));
        render(payment)
    }

    /// Runs `f` on the payment, or fails with `-721` (no such tid).
    pub fn with_payment<R>(
        &self,
        tid: &str,
        f: impl FnOnce(&mut Payment) -> Result<R, ApiError>,
    ) -> Result<R, ApiError> {
        let mut payments = lock(&self.payments);
        let payment = payments
            .get_mut(tid)
            .ok_or_else(|| ApiError::payment(-721, "tid does not exist"))?;
        f(payment)
    }

    pub fn ledger(&self) -> Ledger {
        let payments = lock(&self.payments);
        Ledger {
            payments: payments
                .iter()
                .map(|(tid, p)| (tid.clone(), p.ledger_entry()))
                .collect(),
        }
    }
}
