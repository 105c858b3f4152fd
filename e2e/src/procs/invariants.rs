//! The invariants every fault scenario ends with, checked once the faults are over:
//!
//! 1. every accepted order reaches a terminal state (`COMPLETED` or `CANCELLED`; a refund
//!    the shopper asked for is finished: `refunded_amount` = total), and the shopper's
//!    action took effect;
//! 2. the gateway's ledger: at most one approved tid per order, no tid refunded beyond
//!    its amount, and the money kept is the order's total exactly when it completed;
//! 3. every terminal order has exactly one mail of each kind it calls for in the SMTP
//!    Maildir and exactly one `SENT` history record of each (the notifier's API), and
//!    nothing else: completed → `payment_completed` + `order_completed`; cancelled
//!    unpaid → `order_cancelled`; refunded → `payment_completed` + `order_completed` +
//!    `order_refunded`.
//!
//! The ledger's checks are in `ledger`, the mails' in `mails`.

mod ledger;
mod mails;

use super::shopper::{Intent, LoadOutcome, Placed};
use super::ProcStack;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Examples kept per failed check.
const EXAMPLES: usize = 8;

/// What a scenario tolerates, and how long outcomes may take.
#[derive(Debug, Clone, Copy)]
pub struct Expect {
    /// Kakao Pay was unavailable: an order whose payment failed before approval
    /// (cancelled unpaid, never charged) is a correct outcome whatever the shopper meant.
    pub gateway_failures_allowed: bool,
    /// How long every order may take to settle after the last fault ended
    /// (`recovered_at`), and at least 30 s after the load ended.
    pub settle_deadline: Duration,
    /// When the last fault ended (default: when the checks start).
    pub recovered_at: Option<Instant>,
    /// How long the mails may take once the orders have settled.
    pub mail_deadline: Duration,
    /// How many mails may reach the Maildir a second time, with their original
    /// Message-ID. Only a SIGKILL of the notifier allows any: a mail the SMTP server
    /// accepted just before the kill, whose SENT record was not yet written, is sent
    /// again by the next run — no sender can know whether an unrecorded send happened.
    /// The bound is what can be in flight: the notifier's in-flight limit per kill.
    pub crash_resends_allowed: usize,
}

impl Default for Expect {
    /// 120 s each, plus 0.1 s per order above 200 (a heavy run's backlog).
    fn default() -> Self {
        let orders = std::env::var("FAULT_ORDERS")
            .ok()
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        let deadline =
            Duration::from_secs(120) + Duration::from_millis(100 * orders.saturating_sub(200));
        Self {
            gateway_failures_allowed: false,
            settle_deadline: deadline,
            recovered_at: None,
            crash_resends_allowed: 0,
            mail_deadline: deadline,
        }
    }
}

/// One invariant's result.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub passed: bool,
    pub failures: usize,
    pub examples: Vec<String>,
}

impl Check {
    /// A check named `name` that passed when `problems` is empty.
    pub fn new(name: &'static str, problems: Vec<String>) -> Self {
        Self {
            name,
            passed: problems.is_empty(),
            failures: problems.len(),
            examples: problems.into_iter().take(EXAMPLES).collect(),
        }
    }
}

/// Every invariant's result, and what the orders became.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub orders: usize,
    pub not_accepted: usize,
    pub completed: usize,
    /// Cancelled on the payment page (unpaid).
    pub cancelled: usize,
    pub refunded: usize,
    /// Meant to be paid, cancelled because the payment failed (gateway faults only).
    pub payment_failed: usize,
    pub mails: usize,
    /// Mails that arrived a second time with their original Message-ID (see
    /// [`Expect::crash_resends_allowed`]).
    pub resent_after_crash: usize,
    pub settle_secs: f64,
    pub mail_secs: f64,
    pub checks: Vec<Check>,
    /// Each order's final JSON, by id.
    #[serde(skip)]
    pub final_orders: BTreeMap<Uuid, Value>,
}

impl Verdict {
    pub fn holds(&self) -> bool {
        self.checks.iter().all(|c| c.passed)
    }

    /// One line per check.
    pub fn summary(&self) -> String {
        let mut out = format!(
            "{} orders accepted ({} not accepted): {} completed, {} cancelled, {} refunded, {} payment failed; {} mails ({} resent after a crash); settled in {:.1}s, mails in {:.1}s\n",
            self.orders,
            self.not_accepted,
            self.completed,
            self.cancelled,
            self.refunded,
            self.payment_failed,
            self.mails,
            self.resent_after_crash,
            self.settle_secs,
            self.mail_secs
        );
        for check in &self.checks {
            out.push_str(&format!(
                "  [{}] {}{}\n",
                if check.passed { "ok" } else { "FAILED" },
                check.name,
                if check.passed {
                    String::new()
                } else {
                    format!(" — {} failure(s)", check.failures)
                }
            ));
            for example in &check.examples {
                out.push_str(&format!("      {example}\n"));
            }
        }
        out
    }

    /// Panics with every failed invariant, its examples and the logs' tails.
    pub fn assert_holds(&self, stack: &ProcStack) {
        assert!(
            self.holds(),
            "invariants violated:\n{}\n{}",
            self.summary(),
            stack.diagnostics()
        );
    }
}

/// Waits (within `expect`'s deadlines) for the orders to settle and their mails to
/// arrive, then checks every invariant. Never panics on a violation: see
/// [`Verdict::assert_holds`].
pub async fn verify(stack: &ProcStack, load: &LoadOutcome, expect: Expect) -> Verdict {
    let placed = &load.placed;
    let started = Instant::now();
    let settle_by = (expect.recovered_at.unwrap_or(started) + expect.settle_deadline)
        .max(started + Duration::from_secs(30));
    let (finals, stuck) = settle(stack, placed, settle_by).await;
    let settle_secs = started.elapsed().as_secs_f64();

    let mut checks = vec![Check::new(
        "every order the shopper placed was accepted",
        load.not_accepted.clone(),
    )];
    checks.push(Check::new(
        "every accepted order reached COMPLETED or CANCELLED (refunds finished)",
        stuck_problems(stack, &stuck, &finals).await,
    ));
    let settled: Vec<&Placed> = placed
        .iter()
        .filter(|p| !stuck.iter().any(|s| s.id == p.id))
        .collect();
    let outcomes = Outcomes::of(&settled, &finals, &expect);
    checks.push(Check::new(
        "every shopper action took effect (approve → COMPLETED, cancel → CANCELLED, refund → CANCELLED refunded, abandon → CANCELLED by the deadline)",
        outcomes.intent_problems,
    ));
    checks.push(Check::new(
        "every refund is the order's total",
        outcomes.amount_problems,
    ));

    checks.extend(ledger::ledger_checks(stack, placed, &finals).await);

    let mail_started = Instant::now();
    let (mail_checks, mails, resent_after_crash) =
        mail_checks(stack, &settled, &finals, &expect).await;
    checks.extend(mail_checks);

    Verdict {
        orders: placed.len(),
        not_accepted: load.not_accepted.len(),
        completed: outcomes.completed,
        cancelled: outcomes.cancelled,
        refunded: outcomes.refunded,
        payment_failed: outcomes.payment_failed,
        mails,
        resent_after_crash,
        settle_secs,
        mail_secs: mail_started.elapsed().as_secs_f64(),
        checks,
        final_orders: finals,
    }
}

/// One line per order that did not settle: where it is stuck, and what payment-service
/// holds for it.
async fn stuck_problems(
    stack: &ProcStack,
    stuck: &[&Placed],
    finals: &BTreeMap<Uuid, Value>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for p in stuck {
        let order = &finals[&p.id];
        let payments = stack.payments_of(p.id).await.unwrap_or_default();
        let payment_status: Vec<_> = payments
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| p["status"].as_str().unwrap_or("?").to_owned())
            .collect();
        problems.push(format!(
            "order {} ({:?}, {}) stuck in {} (order's payment {}; payment-service rows {:?}){}",
            p.id,
            p.intent,
            p.email,
            order["status"],
            order["payment"]["status"],
            payment_status,
            driver_note(p)
        ));
    }
    problems
}

/// `; driver: <note>` when the shopper stopped short of its intent.
fn driver_note(p: &Placed) -> String {
    p.note
        .as_ref()
        .map(|n| format!("; driver: {n}"))
        .unwrap_or_default()
}

/// What the settled orders became, against what their shoppers did.
#[derive(Default)]
struct Outcomes {
    completed: usize,
    cancelled: usize,
    refunded: usize,
    payment_failed: usize,
    intent_problems: Vec<String>,
    amount_problems: Vec<String>,
}

impl Outcomes {
    fn of(settled: &[&Placed], finals: &BTreeMap<Uuid, Value>, expect: &Expect) -> Self {
        let mut outcomes = Self::default();
        for p in settled {
            outcomes.count(p, &finals[&p.id], expect);
        }
        outcomes
    }

    fn count(&mut self, p: &Placed, order: &Value, expect: &Expect) {
        let status = order["status"].as_str().unwrap_or_default();
        let total = order["total_amount"].as_i64().unwrap_or(p.total);
        let refund = order["refunded_amount"].as_i64();
        if let Some(amount) = refund {
            if amount != total {
                self.amount_problems.push(format!(
                    "order {}: refunded_amount {amount} ≠ total {total}",
                    p.id
                ));
            }
        }
        let unpaid_cancel = status == "CANCELLED" && refund.is_none();
        let outcome_ok = match p.intent {
            Intent::Approve => status == "COMPLETED",
            Intent::Cancel => unpaid_cancel,
            Intent::Abandon => unpaid_cancel && order["cancel_reason"] == "deadline_expired",
            Intent::Refund => status == "CANCELLED" && refund.is_some(),
        };
        let gateway_excuse = expect.gateway_failures_allowed
            && p.intent != Intent::Cancel
            && unpaid_cancel
            && !p.approved;
        match (status, refund) {
            ("COMPLETED", _) => self.completed += 1,
            ("CANCELLED", Some(_)) => self.refunded += 1,
            _ if gateway_excuse => self.payment_failed += 1,
            _ => self.cancelled += 1,
        }
        if !outcome_ok && !gateway_excuse {
            self.intent_problems.push(format!(
                "order {} ({}): meant {:?}, ended {status} (refunded {refund:?}, reason {}){}",
                p.id,
                p.email,
                p.intent,
                order["cancel_reason"],
                driver_note(p)
            ));
        }
    }
}

/// The two mail checks (history, Maildir) once the mails have arrived or their deadline
/// passed, with the mails in the Maildir and those that came twice after a crash.
async fn mail_checks(
    stack: &ProcStack,
    settled: &[&Placed],
    finals: &BTreeMap<Uuid, Value>,
    expect: &Expect,
) -> (Vec<Check>, usize, usize) {
    let (history_problems, maildir_problems, mails, resent_after_crash) =
        mails::mails_arrive(stack, settled, finals, expect).await;
    let checks = vec![
        Check::new(
            "exactly one SENT history record per expected mail, nothing else",
            history_problems,
        ),
        Check::new(
            if expect.crash_resends_allowed > 0 {
                "every expected mail in the Maildir, nothing else; a mail in flight at a kill -9 at most twice, with its Message-ID"
            } else {
                "exactly one mail per expected kind in the Maildir, nothing else"
            },
            maildir_problems,
        ),
    ];
    (checks, mails, resent_after_crash)
}

/// Settled: terminal, and the refund the shopper asked for is done.
fn settled(p: &Placed, order: &Value) -> bool {
    match order["status"].as_str() {
        Some("COMPLETED") => !p.cancel_requested,
        Some("CANCELLED") => !p.cancel_requested || !order["refunded_amount"].is_null(),
        _ => false,
    }
}

/// Polls every order until it has settled or `deadline` passed; returns the last JSON
/// of every order and the orders that did not settle.
async fn settle<'a>(
    stack: &ProcStack,
    placed: &'a [Placed],
    deadline: Instant,
) -> (BTreeMap<Uuid, Value>, Vec<&'a Placed>) {
    let mut finals = BTreeMap::new();
    let mut pending: Vec<&Placed> = placed.iter().collect();
    loop {
        let mut still = Vec::new();
        for p in pending {
            match stack.get_order(p.id).await {
                Ok(order) => {
                    let done = settled(p, &order);
                    finals.insert(p.id, order);
                    if !done {
                        still.push(p);
                    }
                }
                Err(error) => {
                    finals.entry(p.id).or_insert_with(
                        || serde_json::json!({"status": format!("unreadable: {error}")}),
                    );
                    still.push(p);
                }
            }
        }
        pending = still;
        if pending.is_empty() || Instant::now() > deadline {
            return (finals, pending);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
