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

use super::mailbox::MailIndex;
use super::shopper::{Intent, LoadOutcome, Placed};
use super::ProcStack;
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
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
    let mut stuck_problems = Vec::new();
    for p in &stuck {
        let order = &finals[&p.id];
        let payments = stack.payments_of(p.id).await.unwrap_or_default();
        let payment_status: Vec<_> = payments
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| p["status"].as_str().unwrap_or("?").to_owned())
            .collect();
        stuck_problems.push(format!(
            "order {} ({:?}, {}) stuck in {} (order's payment {}; payment-service rows {:?}){}",
            p.id,
            p.intent,
            p.email,
            order["status"],
            order["payment"]["status"],
            payment_status,
            p.note
                .as_ref()
                .map(|n| format!("; driver: {n}"))
                .unwrap_or_default()
        ));
    }
    checks.push(Check::new(
        "every accepted order reached COMPLETED or CANCELLED (refunds finished)",
        stuck_problems,
    ));

    // What each order became, against what the shopper did.
    let (mut completed, mut cancelled, mut refunded, mut payment_failed) = (0, 0, 0, 0);
    let mut intent_problems = Vec::new();
    let mut amount_problems = Vec::new();
    for p in placed
        .iter()
        .filter(|p| !stuck.iter().any(|s| s.id == p.id))
    {
        let order = &finals[&p.id];
        let status = order["status"].as_str().unwrap_or_default();
        let total = order["total_amount"].as_i64().unwrap_or(p.total);
        let refund = order["refunded_amount"].as_i64();
        if let Some(amount) = refund {
            if amount != total {
                amount_problems.push(format!(
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
            ("COMPLETED", _) => completed += 1,
            ("CANCELLED", Some(_)) => refunded += 1,
            _ if gateway_excuse => payment_failed += 1,
            _ => cancelled += 1,
        }
        if !outcome_ok && !gateway_excuse {
            intent_problems.push(format!(
                "order {} ({}): meant {:?}, ended {status} (refunded {refund:?}, reason {}){}",
                p.id,
                p.email,
                p.intent,
                order["cancel_reason"],
                p.note
                    .as_ref()
                    .map(|n| format!("; driver: {n}"))
                    .unwrap_or_default()
            ));
        }
    }
    checks.push(Check::new(
        "every shopper action took effect (approve → COMPLETED, cancel → CANCELLED, refund → CANCELLED refunded, abandon → CANCELLED by the deadline)",
        intent_problems,
    ));
    checks.push(Check::new(
        "every refund is the order's total",
        amount_problems,
    ));

    checks.extend(ledger_checks(stack, placed, &finals).await);

    let mail_started = Instant::now();
    let settled: Vec<&Placed> = placed
        .iter()
        .filter(|p| !stuck.iter().any(|s| s.id == p.id))
        .collect();
    let (history_problems, maildir_problems, mails, resent_after_crash) =
        mails_arrive(stack, &settled, &finals, &expect).await;
    checks.push(Check::new(
        "exactly one SENT history record per expected mail, nothing else",
        history_problems,
    ));
    checks.push(Check::new(
        if expect.crash_resends_allowed > 0 {
            "every expected mail in the Maildir, nothing else; a mail in flight at a kill -9 at most twice, with its Message-ID"
        } else {
            "exactly one mail per expected kind in the Maildir, nothing else"
        },
        maildir_problems,
    ));

    Verdict {
        orders: placed.len(),
        not_accepted: load.not_accepted.len(),
        completed,
        cancelled,
        refunded,
        payment_failed,
        mails,
        resent_after_crash,
        settle_secs,
        mail_secs: mail_started.elapsed().as_secs_f64(),
        checks,
        final_orders: finals,
    }
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

async fn ledger_checks(
    stack: &ProcStack,
    placed: &[Placed],
    finals: &BTreeMap<Uuid, Value>,
) -> Vec<Check> {
    let ledger = match stack.ledger().await {
        Ok(ledger) => ledger,
        Err(error) => {
            return vec![Check::new(
                "the gateway's ledger is readable",
                vec![error.to_string()],
            )]
        }
    };
    let mut over_refunded = Vec::new();
    for (tid, entry) in &ledger.payments {
        if entry.canceled_amount > entry.total_amount || entry.canceled_amount < 0 {
            over_refunded.push(format!(
                "tid {tid} (order {}): canceled_amount {} > total {} after {} cancel call(s)",
                entry.partner_order_id,
                entry.canceled_amount,
                entry.total_amount,
                entry.cancel_calls
            ));
        }
    }
    let mut twice_approved = Vec::new();
    let mut money = Vec::new();
    for p in placed {
        let key = p.id.to_string();
        let tids: Vec<_> = ledger.by_partner_order_id(&key).collect();
        let approved: Vec<_> = tids.iter().filter(|(_, e)| e.approved).collect();
        if approved.len() > 1 {
            twice_approved.push(format!(
                "order {}: {} approved tids {:?}",
                p.id,
                approved.len(),
                approved.iter().map(|(tid, _)| *tid).collect::<Vec<_>>()
            ));
        }
        let kept: i64 = approved
            .iter()
            .map(|(_, e)| e.total_amount - e.canceled_amount)
            .sum();
        let order = &finals[&p.id];
        let status = order["status"].as_str().unwrap_or_default();
        let expected = match status {
            "COMPLETED" => order["total_amount"].as_i64().unwrap_or(p.total),
            "CANCELLED" => 0,
            _ => continue, // not settled: reported already
        };
        if kept != expected {
            money.push(format!(
                "order {} is {status} but the gateway kept {kept} KRW (expected {expected}); tids {:?}",
                p.id,
                tids.iter()
                    .map(|(tid, e)| format!(
                        "{tid}: {:?} approved={} approve_calls={} canceled={}/{}",
                        e.status, e.approved, e.approve_calls, e.canceled_amount, e.total_amount
                    ))
                    .collect::<Vec<_>>()
            ));
        }
    }
    vec![
        Check::new("at most one approved tid per order", twice_approved),
        Check::new(
            "no tid refunded more than its amount (never refunded twice)",
            over_refunded,
        ),
        Check::new(
            "the gateway kept the total of every completed order and nothing of a cancelled one",
            money,
        ),
    ]
}

/// The mails an order's final state calls for.
fn expected_mails(order: &Value) -> BTreeSet<&'static str> {
    let paid_then_refunded = !order["refunded_amount"].is_null();
    match order["status"].as_str() {
        Some("COMPLETED") => ["payment_completed", "order_completed"].into(),
        Some("CANCELLED") if paid_then_refunded && !order["completed_at"].is_null() => {
            ["payment_completed", "order_completed", "order_refunded"].into()
        }
        // Cancelled first, approved late, then refunded.
        Some("CANCELLED") if paid_then_refunded => {
            ["order_cancelled", "payment_completed", "order_refunded"].into()
        }
        Some("CANCELLED") => ["order_cancelled"].into(),
        _ => BTreeSet::new(),
    }
}

fn bare_message_id(id: &str) -> String {
    id.trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_owned()
}

/// Polls until every order's mails are in the history and the Maildir, or `deadline`.
/// Returns (history problems, Maildir problems, mails in the Maildir, mails that came a
/// second time with their original Message-ID).
async fn mails_arrive(
    stack: &ProcStack,
    orders: &[&Placed],
    finals: &BTreeMap<Uuid, Value>,
    expect: &Expect,
) -> (Vec<String>, Vec<String>, usize, usize) {
    let resends_ok = expect.crash_resends_allowed > 0;
    let started = Instant::now();
    let mut index = MailIndex::new(stack.maildir_path());
    let mut pending: Vec<&Placed> = orders.to_vec();
    let mut problems: HashMap<Uuid, (Option<String>, Option<String>)> = HashMap::new();
    loop {
        index.refresh();
        let mut still = Vec::new();
        for p in pending {
            let expected = expected_mails(&finals[&p.id]);
            let history = match stack.notifications(p.id).await {
                Ok(history) => history,
                Err(error) => {
                    problems.insert(p.id, (Some(format!("order {}: {error}", p.id)), None));
                    still.push(p);
                    continue;
                }
            };
            let found = check_mails(p, &expected, &history, index.to(&p.email), resends_ok);
            if found.0.is_none() && found.1.is_none() {
                problems.remove(&p.id);
            } else {
                problems.insert(p.id, found);
                still.push(p);
            }
        }
        pending = still;
        if pending.is_empty() || started.elapsed() > expect.mail_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // One last look for duplicates that came late among the orders that passed.
    index.refresh();
    let mut history_problems = Vec::new();
    let mut maildir_problems = Vec::new();
    let mut resent = 0;
    for p in orders {
        let mails = index.to(&p.email);
        resent += repeats(mails);
        if let Some((history, maildir)) = problems.get(&p.id) {
            history_problems.extend(history.clone());
            maildir_problems.extend(maildir.clone());
        } else {
            let expected = expected_mails(&finals[&p.id]);
            let arrived = if resends_ok {
                distinct_ids(mails).len()
            } else {
                mails.len()
            };
            if arrived != expected.len() {
                maildir_problems.push(format!(
                    "order {} ({}): {} mails, expected {:?}",
                    p.id,
                    p.email,
                    mails.len(),
                    expected
                ));
            }
        }
    }
    if resent > expect.crash_resends_allowed {
        maildir_problems.push(format!(
            "{resent} mails came twice, more than the {} that can be in flight at the kills",
            expect.crash_resends_allowed
        ));
    }
    (history_problems, maildir_problems, index.total(), resent)
}

fn distinct_ids(mails: &[crate::Mail]) -> BTreeSet<String> {
    mails
        .iter()
        .map(|m| bare_message_id(m.message_id.as_deref().unwrap_or("")))
        .collect()
}

/// Mails beyond the first with the same Message-ID.
fn repeats(mails: &[crate::Mail]) -> usize {
    mails.len() - distinct_ids(mails).len()
}

/// (history problem, Maildir problem) of one order; `(None, None)` when all is right.
/// With `resends_ok` a mail may be in the Maildir twice with the same Message-ID (a
/// SENT record names it): the notifier was killed between the SMTP server's acceptance
/// and the record; [`mails_arrive`] bounds how many.
fn check_mails(
    p: &Placed,
    expected: &BTreeSet<&'static str>,
    history: &[Value],
    mails: &[crate::Mail],
    resends_ok: bool,
) -> (Option<String>, Option<String>) {
    let mut by_kind: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for record in history {
        by_kind
            .entry(record["type"].as_str().unwrap_or("?").to_owned())
            .or_default()
            .push(record);
    }
    let mut history_problem = Vec::new();
    for kind in expected {
        match by_kind.get(*kind).map(Vec::as_slice) {
            None | Some([]) => history_problem.push(format!("no {kind} record")),
            Some([record]) if record["status"] == "SENT" => {}
            Some([record]) => history_problem.push(format!(
                "{kind} is {} after {} attempt(s) ({})",
                record["status"], record["attempts"], record["last_error"]
            )),
            Some(records) => history_problem.push(format!("{} {kind} records", records.len())),
        }
    }
    for (kind, records) in &by_kind {
        if !expected.contains(kind.as_str()) {
            history_problem.push(format!("unexpected {} {kind} record(s)", records.len()));
        }
    }
    let sent_ids: BTreeSet<String> = history
        .iter()
        .filter_map(|r| r["smtp_message_id"].as_str())
        .map(bare_message_id)
        .collect();
    let mail_ids: Vec<String> = mails
        .iter()
        .map(|m| bare_message_id(m.message_id.as_deref().unwrap_or("")))
        .collect();
    let mut maildir_problem = Vec::new();
    let unique: BTreeSet<&String> = mail_ids.iter().collect();
    let arrived = if resends_ok {
        unique.len()
    } else {
        mails.len()
    };
    if arrived != expected.len() {
        maildir_problem.push(format!(
            "{} mails, expected {}",
            mails.len(),
            expected.len()
        ));
    }
    let thrice = unique
        .iter()
        .any(|id| mail_ids.iter().filter(|m| m == id).count() > 2);
    if unique.len() != mail_ids.len() && (!resends_ok || thrice) {
        maildir_problem.push("the same Message-ID twice".to_owned());
    }
    for id in &mail_ids {
        if !sent_ids.contains(id) {
            maildir_problem.push(format!("a mail ({id}) no history record names"));
        }
    }
    let describe = |problems: Vec<String>| {
        (!problems.is_empty()).then(|| {
            format!(
                "order {} ({}, {:?}, expected {:?}): {}",
                p.id,
                p.email,
                p.intent,
                expected,
                problems.join("; ")
            )
        })
    };
    (describe(history_problem), describe(maildir_problem))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn placed() -> Placed {
        Placed {
            n: 1,
            id: Uuid::nil(),
            email: "shopper@example.com".to_owned(),
            total: 1000,
            intent: Intent::Approve,
            approved: true,
            cancel_requested: false,
            note: None,
            token: String::new(),
        }
    }

    fn mail(id: &str) -> crate::Mail {
        crate::Mail {
            to: vec!["shopper@example.com".to_owned()],
            from: vec!["shop@example.com".to_owned()],
            subject: "s".to_owned(),
            text: "t".to_owned(),
            html: None,
            message_id: Some(format!("<{id}>")),
            has_date: true,
        }
    }

    fn sent(kind: &str, id: &str) -> Value {
        json!({"type": kind, "status": "SENT", "smtp_message_id": format!("<{id}>")})
    }

    #[test]
    fn a_mail_resent_after_a_crash_passes_only_where_allowed_and_only_with_its_message_id() {
        let expected: BTreeSet<&'static str> = ["payment_completed", "order_completed"].into();
        let history = [sent("payment_completed", "a"), sent("order_completed", "b")];
        let once = [mail("a"), mail("b")];
        let twice = [mail("a"), mail("b"), mail("a")];
        let thrice = [mail("a"), mail("b"), mail("a"), mail("a")];
        let other = [mail("a"), mail("b"), mail("c")];
        let missing = [mail("a"), mail("a")];
        let p = placed();
        let maildir = |mails: &[crate::Mail], ok| check_mails(&p, &expected, &history, mails, ok).1;

        assert_eq!(maildir(&once, false), None);
        assert_eq!(maildir(&once, true), None);
        assert!(
            maildir(&twice, false).is_some(),
            "exactly once without a crash"
        );
        assert_eq!(maildir(&twice, true), None, "a resend with its Message-ID");
        assert!(maildir(&thrice, true).is_some(), "never three times");
        assert!(maildir(&other, true).is_some(), "a mail no record names");
        assert!(
            maildir(&missing, true).is_some(),
            "a resend does not stand in for a lost mail"
        );
        assert_eq!(repeats(&twice), 1);
        assert_eq!(repeats(&once), 0);
    }
}
