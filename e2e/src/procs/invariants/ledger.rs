//! The gateway's ledger against the orders: at most one approved tid per order, no tid
//! refunded beyond its amount, and the money kept is the order's total exactly when it
//! completed.

use super::Check;
use crate::procs::shopper::Placed;
use crate::procs::ProcStack;
use serde_json::Value;
use std::collections::BTreeMap;
use uuid::Uuid;

/// The three ledger invariants (or one failed check when the ledger is unreadable).
pub(super) async fn ledger_checks(
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
