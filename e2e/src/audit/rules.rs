//! The invariants, judged on a [`Snapshot`] of the sources. Pure.
//!
//! Money is judged from both sides when both are there: what payment-service recorded
//! (status, amounts, its log of gateway calls) and what the gateway itself saw (the
//! simulator's ledger). The mails an order calls for follow from the events it went
//! through, as notifier/src/domain.rs maps them: `PaymentApproved` → `payment_completed`,
//! `OrderCompleted` → `order_completed`, `OrderCancelled` → `order_cancelled`, or
//! `order_refunded` when it carries a refunded amount. From an order's final row:
//!
//! | final order | mails, exactly once each |
//! |---|---|
//! | `COMPLETED` | `payment_completed`, `order_completed` |
//! | `CANCELLED`, never paid | `order_cancelled` |
//! | `CANCELLED`, paid, refunded after completing | `payment_completed`, `order_completed`, `order_refunded` |
//! | `CANCELLED` first, paid late, refunded | `order_cancelled`, `payment_completed`, `order_refunded` |

use chrono::{DateTime, Duration, Utc};
use kakaopay::sim::Ledger;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use uuid::Uuid;

/// One order row, as the audit needs it.
#[derive(Debug, Clone)]
pub struct OrderRow {
    pub id: Uuid,
    pub status: String,
    pub total_amount: i64,
    pub refunded_amount: Option<i64>,
    pub payment_deadline: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
}

impl OrderRow {
    pub fn is_terminal(&self) -> bool {
        matches!(self.status.as_str(), "COMPLETED" | "CANCELLED")
    }
}

/// One payment row with the counts of its successful gateway calls.
#[derive(Debug, Clone)]
pub struct PaymentRow {
    pub id: Uuid,
    pub order_id: Uuid,
    pub status: String,
    pub amount: i64,
    pub refunded_amount: Option<i64>,
    pub updated_at: DateTime<Utc>,
    pub tid: Option<String>,
    /// `approve` calls the gateway answered with success.
    pub approvals_ok: i64,
    /// `cancel` (refund) calls the gateway answered with success.
    pub refunds_ok: i64,
}

impl PaymentRow {
    /// What the shop holds of the shopper's money by this row: the amount while it is
    /// approved or being refunded, what is left after a refund, nothing otherwise.
    /// `APPROVING` counts as nothing: whether the charge happened is the reconciler's to
    /// find out, and it shows up as unsettled if it never does.
    pub fn kept(&self) -> i64 {
        match self.status.as_str() {
            "APPROVED" | "REFUNDING" => self.amount,
            "REFUNDED" => self.amount - self.refunded_amount.unwrap_or(self.amount),
            _ => 0,
        }
    }
}

/// One history record (one mail for one event and recipient).
#[derive(Debug, Clone)]
pub struct MailRecord {
    pub event_id: String,
    pub kind: String,
    pub status: String,
    pub attempts: i64,
    pub last_error: Option<String>,
}

/// The sources at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub orders: Vec<OrderRow>,
    /// By order id (one payment per order: `payments.order_id` is unique).
    pub payments: BTreeMap<Uuid, PaymentRow>,
    /// By order id.
    pub mails: BTreeMap<Uuid, Vec<MailRecord>>,
    /// The gateway's own record, when it was read.
    pub ledger: Option<Ledger>,
}

/// How the rules treat time.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// How long past its payment deadline a saga may still be running (a refund: past
    /// its request), and how long a payment may stay `APPROVING`/`REFUNDING`.
    pub grace: Duration,
    /// Orders and payments changed more recently than this are still settling: their
    /// money and mails are not judged yet.
    pub quiet_for: Duration,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            grace: Duration::minutes(5),
            quiet_for: Duration::minutes(1),
        }
    }
}

/// What can be wrong with a saga.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Invariant {
    /// `CANCELLED`, but the shop (or the gateway) still holds the shopper's money.
    CancelledButCharged,
    /// `COMPLETED`, but the payment is not approved or the gateway holds less than the
    /// order's total.
    CompletedButUnpaid,
    /// More refunded than charged, or two successful refunds of one payment.
    RefundedTwice,
    /// Two approved charges for one order (two tids, or two successful approvals).
    ChargedTwice,
    /// A mail the order calls for is not `SENT` (no record, or pending/failed).
    MailMissing,
    /// A mail the order calls for was sent more than once (several records of a kind).
    MailRepeated,
    /// A mail the order does not call for (a cancellation mail for a completed order…).
    MailUnexpected,
    /// Not terminal past its deadline plus the grace, or a payment left `APPROVING` /
    /// `REFUNDING` longer than the grace.
    PastDeadlineNotTerminal,
}

impl Invariant {
    pub const ALL: [Invariant; 8] = [
        Invariant::CancelledButCharged,
        Invariant::CompletedButUnpaid,
        Invariant::RefundedTwice,
        Invariant::ChargedTwice,
        Invariant::MailMissing,
        Invariant::MailRepeated,
        Invariant::MailUnexpected,
        Invariant::PastDeadlineNotTerminal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Invariant::CancelledButCharged => "cancelled_but_charged",
            Invariant::CompletedButUnpaid => "completed_but_unpaid",
            Invariant::RefundedTwice => "refunded_twice",
            Invariant::ChargedTwice => "charged_twice",
            Invariant::MailMissing => "mail_missing",
            Invariant::MailRepeated => "mail_repeated",
            Invariant::MailUnexpected => "mail_unexpected",
            Invariant::PastDeadlineNotTerminal => "past_deadline_not_terminal",
        }
    }
}

impl fmt::Display for Invariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One broken invariant of one order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub order_id: Uuid,
    pub invariant: Invariant,
    /// What was found, in the sources' own terms (statuses, amounts, tids, counts).
    pub evidence: String,
}

/// Every violation in `snapshot` as of `now`, ordered by order id then invariant.
pub fn check(snapshot: &Snapshot, rules: &Rules, now: DateTime<Utc>) -> Vec<Violation> {
    let mut out = Vec::new();
    for order in &snapshot.orders {
        let payment = snapshot.payments.get(&order.id);
        let found = &mut |invariant, evidence: String| {
            out.push(Violation {
                order_id: order.id,
                invariant,
                evidence,
            })
        };
        deadline(order, payment, rules, now, found);
        let last_change = payment.map_or(order.updated_at, |p| p.updated_at.max(order.updated_at));
        if now - last_change < rules.quiet_for {
            continue;
        }
        let gateway = snapshot
            .ledger
            .as_ref()
            .map(|ledger| GatewayView::of(ledger, order.id));
        money(order, payment, gateway.as_ref(), found);
        if order.is_terminal() {
            let records = snapshot.mails.get(&order.id).map_or(&[][..], Vec::as_slice);
            mails(order, records, found);
        }
    }
    out.sort_by_key(|v| (v.order_id, v.invariant));
    out
}

/// What the gateway saw of one order: its approved tids and the money it kept.
struct GatewayView {
    approved: Vec<(String, i64, i64)>,
    over_refunded: Vec<String>,
}

impl GatewayView {
    fn of(ledger: &Ledger, order_id: Uuid) -> Self {
        let key = order_id.to_string();
        let mut approved = Vec::new();
        let mut over_refunded = Vec::new();
        for (tid, entry) in ledger.by_partner_order_id(&key) {
            if entry.approved {
                approved.push((tid.to_owned(), entry.total_amount, entry.canceled_amount));
            }
            if entry.canceled_amount > entry.total_amount {
                over_refunded.push(format!(
                    "gateway tid {tid}: refunded {} of {} in {} cancel call(s)",
                    entry.canceled_amount, entry.total_amount, entry.cancel_calls
                ));
            }
        }
        Self {
            approved,
            over_refunded,
        }
    }

    fn kept(&self) -> i64 {
        self.approved
            .iter()
            .map(|(_, total, canceled)| total - canceled)
            .sum()
    }

    fn describe(&self) -> String {
        let tids: Vec<String> = self
            .approved
            .iter()
            .map(|(tid, total, canceled)| format!("{tid} approved {total}, refunded {canceled}"))
            .collect();
        format!(
            "gateway kept {} KRW ({})",
            self.kept(),
            if tids.is_empty() {
                "no approved tid".to_owned()
            } else {
                tids.join("; ")
            }
        )
    }
}

fn describe_payment(payment: Option<&PaymentRow>) -> String {
    match payment {
        None => "no payment row".to_owned(),
        Some(p) => format!(
            "payment {} {} amount {} refunded {} (tid {})",
            p.id,
            p.status,
            p.amount,
            p.refunded_amount
                .map_or_else(|| "none".to_owned(), |r| r.to_string()),
            p.tid.as_deref().unwrap_or("none")
        ),
    }
}

fn deadline(
    order: &OrderRow,
    payment: Option<&PaymentRow>,
    rules: &Rules,
    now: DateTime<Utc>,
    found: &mut dyn FnMut(Invariant, String),
) {
    // A refund is asked for at any time after completion: it is due a grace after its
    // request (the row's last change), not after the payment deadline.
    let due = match order.status.as_str() {
        "COMPLETED" | "CANCELLED" => None,
        "CANCELLING" => Some(order.updated_at.max(order.payment_deadline)),
        _ => Some(order.payment_deadline),
    };
    if let Some(due) = due {
        if now > due + rules.grace {
            found(
                Invariant::PastDeadlineNotTerminal,
                format!(
                    "order {} since {}, due {} (+ grace {} s), {} s over; {}",
                    order.status,
                    order.updated_at.to_rfc3339(),
                    due.to_rfc3339(),
                    rules.grace.num_seconds(),
                    (now - due - rules.grace).num_seconds(),
                    describe_payment(payment)
                ),
            );
        }
    }
    if let Some(p) = payment {
        let in_flight = matches!(p.status.as_str(), "APPROVING" | "REFUNDING");
        if in_flight && now > p.updated_at + rules.grace {
            found(
                Invariant::PastDeadlineNotTerminal,
                format!(
                    "payment {} {} since {} (grace {} s); order {}",
                    p.id,
                    p.status,
                    p.updated_at.to_rfc3339(),
                    rules.grace.num_seconds(),
                    order.status
                ),
            );
        }
    }
}

fn money(
    order: &OrderRow,
    payment: Option<&PaymentRow>,
    gateway: Option<&GatewayView>,
    found: &mut dyn FnMut(Invariant, String),
) {
    let evidence = || {
        let mut parts = vec![
            format!(
                "order {} total {} refunded {}",
                order.status,
                order.total_amount,
                order
                    .refunded_amount
                    .map_or_else(|| "none".to_owned(), |r| r.to_string())
            ),
            describe_payment(payment),
        ];
        if let Some(g) = gateway {
            parts.push(g.describe());
        }
        parts.join("; ")
    };
    let kept_by_payment = payment.map_or(0, PaymentRow::kept);
    let kept_by_gateway = gateway.map(GatewayView::kept);
    match order.status.as_str() {
        "CANCELLED" if kept_by_payment > 0 || kept_by_gateway.is_some_and(|k| k > 0) => {
            found(Invariant::CancelledButCharged, evidence());
        }
        "COMPLETED"
            if payment.is_none_or(|p| p.status != "APPROVED")
                || kept_by_gateway.is_some_and(|k| k < order.total_amount) =>
        {
            found(Invariant::CompletedButUnpaid, evidence());
        }
        _ => {}
    }
    let approved_tids = gateway.map_or(0, |g| g.approved.len());
    let approvals = payment.map_or(0, |p| p.approvals_ok);
    if approved_tids > 1 || approvals > 1 {
        found(
            Invariant::ChargedTwice,
            format!(
                "{approved_tids} approved tid(s) at the gateway, {approvals} successful approve call(s) logged; {}",
                evidence()
            ),
        );
    }
    let mut twice = gateway.map_or_else(Vec::new, |g| g.over_refunded.clone());
    if let Some(p) = payment {
        if p.refunds_ok > 1 {
            twice.push(format!(
                "{} successful cancel calls logged for payment {}",
                p.refunds_ok, p.id
            ));
        }
        if p.refunded_amount.is_some_and(|r| r > p.amount) {
            twice.push(format!(
                "payment refunded {:?} of {}",
                p.refunded_amount, p.amount
            ));
        }
    }
    if order
        .refunded_amount
        .is_some_and(|r| r > order.total_amount)
    {
        twice.push(format!(
            "order refunded {:?} of {}",
            order.refunded_amount, order.total_amount
        ));
    }
    if !twice.is_empty() {
        found(Invariant::RefundedTwice, twice.join("; "));
    }
}

/// The mails a terminal order calls for (see the table in the module's documentation).
pub fn expected_mails(order: &OrderRow) -> BTreeSet<&'static str> {
    let refunded = order.refunded_amount.is_some();
    match order.status.as_str() {
        "COMPLETED" => ["payment_completed", "order_completed"].into(),
        "CANCELLED" if refunded && order.completed_at.is_some() => {
            ["payment_completed", "order_completed", "order_refunded"].into()
        }
        "CANCELLED" if refunded => {
            ["order_cancelled", "payment_completed", "order_refunded"].into()
        }
        "CANCELLED" => ["order_cancelled"].into(),
        _ => BTreeSet::new(),
    }
}

fn mails(order: &OrderRow, records: &[MailRecord], found: &mut dyn FnMut(Invariant, String)) {
    let expected = expected_mails(order);
    let mut by_kind: BTreeMap<&str, Vec<&MailRecord>> = BTreeMap::new();
    for record in records {
        by_kind
            .entry(record.kind.as_str())
            .or_default()
            .push(record);
    }
    let describe = |records: &[&MailRecord]| -> String {
        records
            .iter()
            .map(|r| {
                format!(
                    "event {} {} after {} attempt(s){}",
                    r.event_id,
                    r.status,
                    r.attempts,
                    r.last_error
                        .as_deref()
                        .map(|e| format!(" ({})", e.chars().take(120).collect::<String>()))
                        .unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    for kind in &expected {
        let records = by_kind.get(kind).map_or(&[][..], Vec::as_slice);
        let sent = records.iter().filter(|r| r.status == "SENT").count();
        if sent == 0 {
            found(
                Invariant::MailMissing,
                format!(
                    "order {}: no {kind} mail sent ({})",
                    order.status,
                    if records.is_empty() {
                        "no history record".to_owned()
                    } else {
                        describe(records)
                    }
                ),
            );
        }
        if records.len() > 1 {
            found(
                Invariant::MailRepeated,
                format!(
                    "order {}: {} {kind} records: {}",
                    order.status,
                    records.len(),
                    describe(records)
                ),
            );
        }
    }
    for (kind, records) in &by_kind {
        if !expected.contains(kind) {
            found(
                Invariant::MailUnexpected,
                format!(
                    "order {} (refunded {:?}) calls for {expected:?}, has {kind}: {}",
                    order.status,
                    order.refunded_amount,
                    describe(records)
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(status: &str) -> OrderRow {
        let at = Utc::now() - Duration::hours(1);
        OrderRow {
            id: Uuid::new_v4(),
            status: status.to_owned(),
            total_amount: 1000,
            refunded_amount: None,
            payment_deadline: at + Duration::minutes(15),
            updated_at: at,
            completed_at: None,
        }
    }

    fn payment(order: &OrderRow, status: &str) -> PaymentRow {
        PaymentRow {
            id: Uuid::new_v4(),
            order_id: order.id,
            status: status.to_owned(),
            amount: order.total_amount,
            refunded_amount: None,
            updated_at: order.updated_at,
            tid: Some("T1".to_owned()),
            approvals_ok: 1,
            refunds_ok: 0,
        }
    }

    fn mail(kind: &str) -> MailRecord {
        MailRecord {
            event_id: Uuid::new_v4().to_string(),
            kind: kind.to_owned(),
            status: "SENT".to_owned(),
            attempts: 1,
            last_error: None,
        }
    }

    fn judge(
        order: OrderRow,
        payment: Option<PaymentRow>,
        mails: Vec<MailRecord>,
    ) -> Vec<Invariant> {
        let mut snapshot = Snapshot::default();
        if let Some(p) = payment {
            snapshot.payments.insert(order.id, p);
        }
        snapshot.mails.insert(order.id, mails);
        snapshot.orders.push(order);
        check(&snapshot, &Rules::default(), Utc::now())
            .into_iter()
            .map(|v| v.invariant)
            .collect()
    }

    #[test]
    fn a_saga_still_settling_is_judged_only_on_its_deadline() {
        let mut o = order("COMPLETED");
        o.updated_at = Utc::now();
        assert_eq!(judge(o, None, vec![]), vec![], "changed just now");
        let mut pending = order("PENDING_PAYMENT");
        pending.updated_at = Utc::now();
        assert_eq!(
            judge(pending, None, vec![]),
            vec![Invariant::PastDeadlineNotTerminal]
        );
    }

    #[test]
    fn a_refund_is_due_a_grace_after_its_request_not_after_the_payment_deadline() {
        let mut o = order("CANCELLING");
        o.updated_at = Utc::now() - Duration::minutes(1);
        o.payment_deadline = Utc::now() - Duration::days(1);
        let p = payment(&o, "REFUNDING");
        let rules = Rules {
            quiet_for: Duration::zero(),
            ..Rules::default()
        };
        let mut snapshot = Snapshot::default();
        snapshot.payments.insert(o.id, p);
        snapshot.orders.push(o);
        assert_eq!(check(&snapshot, &rules, Utc::now()), vec![]);
        let later = Utc::now() + Duration::minutes(10);
        let found: Vec<_> = check(&snapshot, &rules, later)
            .into_iter()
            .map(|v| v.invariant)
            .collect();
        assert_eq!(found, vec![Invariant::PastDeadlineNotTerminal; 2]);
    }

    #[test]
    fn the_four_mail_rules_follow_the_events_an_order_went_through() {
        let completed = order("COMPLETED");
        let p = payment(&completed, "APPROVED");
        assert_eq!(
            judge(
                completed,
                Some(p),
                vec![mail("payment_completed"), mail("order_completed")]
            ),
            vec![]
        );
        let mut refunded = order("CANCELLED");
        refunded.refunded_amount = Some(1000);
        refunded.completed_at = Some(refunded.updated_at);
        let mut p = payment(&refunded, "REFUNDED");
        p.refunded_amount = Some(1000);
        p.refunds_ok = 1;
        let ms = vec![
            mail("payment_completed"),
            mail("order_completed"),
            mail("order_refunded"),
        ];
        assert_eq!(judge(refunded.clone(), Some(p.clone()), ms), vec![]);
        let mut late = refunded;
        late.completed_at = None;
        let ms = vec![
            mail("order_cancelled"),
            mail("payment_completed"),
            mail("order_refunded"),
        ];
        assert_eq!(judge(late, Some(p), ms), vec![]);
        let unpaid = order("CANCELLED");
        let p = payment(&unpaid, "FAILED");
        assert_eq!(
            judge(unpaid, Some(p), vec![mail("order_cancelled")]),
            vec![]
        );
    }
}
