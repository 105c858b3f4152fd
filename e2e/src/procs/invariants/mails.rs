//! The mails against the orders: every terminal order has exactly one mail of each
//! kind it calls for in the Maildir and one `SENT` history record of each, and nothing
//! else (a mail in flight at a kill -9 may come twice, with its Message-ID, where the
//! scenario allows it).

use super::Expect;
use crate::procs::mailbox::MailIndex;
use crate::procs::shopper::Placed;
use crate::procs::ProcStack;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};
use uuid::Uuid;

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
pub(super) async fn mails_arrive(
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
    let (history_problems, maildir_problems, resent) =
        tally(orders, finals, expect, &index, &problems);
    (history_problems, maildir_problems, index.total(), resent)
}

/// Every order's problems once the polling is over: those found while polling, a
/// wrong number of mails that came late for the orders that had passed, and too many
/// resends overall. Returns (history problems, Maildir problems, resent mails).
fn tally(
    orders: &[&Placed],
    finals: &BTreeMap<Uuid, Value>,
    expect: &Expect,
    index: &MailIndex,
    problems: &HashMap<Uuid, (Option<String>, Option<String>)>,
) -> (Vec<String>, Vec<String>, usize) {
    let resends_ok = expect.crash_resends_allowed > 0;
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
    (history_problems, maildir_problems, resent)
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
    (
        describe(history_problems(expected, history)),
        describe(maildir_problems(expected, history, mails, resends_ok)),
    )
}

/// One `SENT` record of each expected kind, and no record of another kind.
fn history_problems(expected: &BTreeSet<&'static str>, history: &[Value]) -> Vec<String> {
    let mut by_kind: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for record in history {
        by_kind
            .entry(record["type"].as_str().unwrap_or("?").to_owned())
            .or_default()
            .push(record);
    }
    let mut problems = Vec::new();
    for kind in expected {
        match by_kind.get(*kind).map(Vec::as_slice) {
            None | Some([]) => problems.push(format!("no {kind} record")),
            Some([record]) if record["status"] == "SENT" => {}
            Some([record]) => problems.push(format!(
                "{kind} is {} after {} attempt(s) ({})",
                record["status"], record["attempts"], record["last_error"]
            )),
            Some(records) => problems.push(format!("{} {kind} records", records.len())),
        }
    }
    for (kind, records) in &by_kind {
        if !expected.contains(kind.as_str()) {
            problems.push(format!("unexpected {} {kind} record(s)", records.len()));
        }
    }
    problems
}

/// As many mails as expected kinds (distinct Message-IDs with `resends_ok`), no
/// Message-ID twice (three times with `resends_ok`), each named by a history record.
fn maildir_problems(
    expected: &BTreeSet<&'static str>,
    history: &[Value],
    mails: &[crate::Mail],
    resends_ok: bool,
) -> Vec<String> {
    let sent_ids: BTreeSet<String> = history
        .iter()
        .filter_map(|r| r["smtp_message_id"].as_str())
        .map(bare_message_id)
        .collect();
    let mail_ids: Vec<String> = mails
        .iter()
        .map(|m| bare_message_id(m.message_id.as_deref().unwrap_or("")))
        .collect();
    let mut problems = Vec::new();
    let unique: BTreeSet<&String> = mail_ids.iter().collect();
    let arrived = if resends_ok {
        unique.len()
    } else {
        mails.len()
    };
    if arrived != expected.len() {
        problems.push(format!(
            "{} mails, expected {}",
            mails.len(),
            expected.len()
        ));
    }
    let thrice = unique
        .iter()
        .any(|id| mail_ids.iter().filter(|m| m == id).count() > 2);
    if unique.len() != mail_ids.len() && (!resends_ok || thrice) {
        problems.push("the same Message-ID twice".to_owned());
    }
    for id in &mail_ids {
        if !sent_ids.contains(id) {
            problems.push(format!("a mail ({id}) no history record names"));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::procs::shopper::Intent;
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
