//! Per-order saga times from the services' stored timestamps, and what the report
//! computes from them: latency distributions and "unfinished at moment T". Pure: the
//! reading is in [`crate::stored`].
//!
//! Every time is in microseconds since the Unix epoch, from the one machine's clock
//! (PostgreSQL's `now()`, the notifier's BSON dates, the experiment's `Utc::now()`).

use benchmarks::stats::Latency;
use std::collections::{BTreeMap, HashMap};

/// Mail types that end an order's saga (the last mail a shopper gets).
pub const FINAL_MAILS: [&str; 3] = ["order_completed", "order_cancelled", "order_refunded"];

/// One order's stored timestamps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrderTimes {
    pub id: String,
    pub status: String,
    /// `orders.created_at` (the place-order transaction).
    pub created: i64,
    /// The order service applied `PaymentReady` (`saga_steps.at`): from then on
    /// `GET /orders/{id}` shows the payment page's URL.
    pub payment_ready: Option<i64>,
    pub completed: Option<i64>,
    pub cancelled: Option<i64>,
    /// Payment began its first `approve` call to Kakao Pay: the shopper's browser had
    /// just arrived at the approval URL (see [`crate::stored`]).
    pub approval: Option<i64>,
    /// `sent_at` of the order's first final mail (SMTP server accepted it), and its type.
    pub final_mail: Option<(i64, String)>,
    /// The latest `sent_at` of any of the order's sent mails.
    pub last_mail: Option<i64>,
}

/// One sent mail of the history (`status = SENT`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailTimes {
    pub order_id: String,
    pub kind: String,
    pub sent: i64,
}

impl OrderTimes {
    fn terminal(&self) -> Option<i64> {
        self.completed.or(self.cancelled)
    }

    /// When the saga was over for the shopper: the order ended and its final mail was
    /// stored. `None`: not (yet) at the time of reading.
    pub fn finished(&self) -> Option<i64> {
        let ended = self.terminal()?;
        let (mail, _) = self.final_mail.as_ref()?;
        Some(ended.max(*mail))
    }
}

/// Adds the approval moments (order id → µs) and the mails to the orders.
pub fn join(
    mut orders: Vec<OrderTimes>,
    approvals: &HashMap<String, i64>,
    mails: &[MailTimes],
) -> Vec<OrderTimes> {
    let mut by_order: HashMap<&str, Vec<&MailTimes>> = HashMap::new();
    for m in mails {
        by_order.entry(m.order_id.as_str()).or_default().push(m);
    }
    for o in &mut orders {
        o.approval = approvals.get(&o.id).copied();
        let Some(list) = by_order.get(o.id.as_str()) else {
            continue;
        };
        o.last_mail = list.iter().map(|m| m.sent).max();
        o.final_mail = list
            .iter()
            .filter(|m| FINAL_MAILS.contains(&m.kind.as_str()))
            .min_by_key(|m| m.sent)
            .map(|m| (m.sent, m.kind.clone()));
    }
    orders
}

/// The distributions and counts of one run.
#[derive(Debug, Default)]
pub struct Figures {
    /// created → PaymentReady applied ("time to payment page").
    pub payment_page: Latency,
    /// approval callback → `completed_at`.
    pub approval_to_completed: Latency,
    /// approval callback → last mail stored (orders whose final mail is stored).
    pub approval_to_last_mail: Latency,
    /// created → final mail stored (the earlier end-to-end figure).
    pub e2e: Latency,
    pub orders: u64,
    pub not_terminal: u64,
    pub terminal_without_mail: u64,
    /// Completed orders with no approve call on record (should be 0).
    pub completed_without_approval: u64,
    pub final_mail_types: BTreeMap<String, u64>,
}

impl Figures {
    /// At the time of reading: not ended, or ended without the final mail stored.
    pub fn unfinished(&self) -> u64 {
        self.not_terminal + self.terminal_without_mail
    }
}

fn record(latency: &mut Latency, from: i64, to: i64) {
    latency.record_micros(u64::try_from(to - from).unwrap_or(0));
}

pub fn figures(orders: &[OrderTimes]) -> Figures {
    let mut f = Figures {
        orders: orders.len() as u64,
        ..Figures::default()
    };
    for o in orders {
        if let Some(ready) = o.payment_ready {
            record(&mut f.payment_page, o.created, ready);
        }
        if let (Some(approval), Some(done)) = (o.approval, o.completed) {
            record(&mut f.approval_to_completed, approval, done);
        }
        if o.completed.is_some() && o.approval.is_none() {
            f.completed_without_approval += 1;
        }
        if o.terminal().is_none() {
            f.not_terminal += 1;
            continue;
        }
        let Some((mail, kind)) = &o.final_mail else {
            f.terminal_without_mail += 1;
            continue;
        };
        *f.final_mail_types.entry(kind.clone()).or_default() += 1;
        record(&mut f.e2e, o.created, *mail);
        if let (Some(approval), Some(last)) = (o.approval, o.last_mail) {
            record(&mut f.approval_to_last_mail, approval, last);
        }
    }
    f
}

/// Orders accepted by `t` whose saga was not over at `t` (see [`OrderTimes::finished`]).
pub fn unfinished_at(orders: &[OrderTimes], t: i64) -> u64 {
    orders
        .iter()
        .filter(|o| o.created <= t && o.finished().is_none_or(|f| f > t))
        .count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: i64 = 1_000;

    /// Within the histogram's resolution (3 significant digits).
    fn close(got: Option<f64>, want: f64) {
        let got = got.expect("a value");
        assert!((got - want).abs() <= want * 1e-3, "{got} vs {want}");
    }

    /// Order `i`, created at `i` s: payment page after (10 + i) ms, approved 100 ms
    /// after that, completed 20 ms later, mails 5 and 30 ms after completion.
    fn order(i: i64) -> (OrderTimes, Vec<MailTimes>) {
        let created = i * 1_000 * MS;
        let ready = created + (10 + i) * MS;
        let approval = ready + 100 * MS;
        let completed = approval + 20 * MS;
        let id = format!("o{i}");
        let mails = vec![
            MailTimes {
                order_id: id.clone(),
                kind: "payment_completed".to_owned(),
                sent: completed + 5 * MS,
            },
            MailTimes {
                order_id: id.clone(),
                kind: "order_completed".to_owned(),
                sent: completed + 30 * MS,
            },
        ];
        let o = OrderTimes {
            id: id.clone(),
            status: "COMPLETED".to_owned(),
            created,
            payment_ready: Some(ready),
            completed: Some(completed),
            ..OrderTimes::default()
        };
        (o, mails)
    }

    fn run(n: i64) -> Vec<OrderTimes> {
        let (mut orders, mut mails, mut approvals) = (Vec::new(), Vec::new(), HashMap::new());
        for i in 0..n {
            let (o, m) = order(i);
            approvals.insert(o.id.clone(), o.payment_ready.unwrap() + 100 * MS);
            orders.push(o);
            mails.extend(m);
        }
        join(orders, &approvals, &mails)
    }

    #[test]
    fn percentiles_come_from_the_stored_timestamps() {
        let f = figures(&run(100));
        assert_eq!(f.orders, 100);
        assert_eq!(f.unfinished(), 0);
        // Payment page 10..=109 ms: p50 = 59 ms, p99 = 108 ms.
        close(f.payment_page.percentile_ms(50.0), 59.0);
        close(f.payment_page.percentile_ms(99.0), 108.0);
        close(f.approval_to_completed.percentile_ms(99.0), 20.0);
        // The last mail is order_completed, 30 ms after completion: 50 ms after approval.
        close(f.approval_to_last_mail.percentile_ms(50.0), 50.0);
        assert_eq!(f.e2e.len(), 100);
        assert_eq!(f.final_mail_types["order_completed"], 100);
        assert_eq!(f.completed_without_approval, 0);
    }

    #[test]
    fn orders_without_their_final_mail_are_unfinished() {
        let mut orders = run(3);
        orders[0].final_mail = None;
        orders[1].completed = None;
        orders[1].status = "PENDING_PAYMENT".to_owned();
        let f = figures(&orders);
        assert_eq!(f.not_terminal, 1);
        assert_eq!(f.terminal_without_mail, 1);
        assert_eq!(f.unfinished(), 2);
        assert_eq!(f.approval_to_last_mail.len(), 1);
        assert_eq!(f.approval_to_completed.len(), 2);
    }

    #[test]
    fn unfinished_at_counts_what_was_open_at_that_moment() {
        let orders = run(3);
        // Order 1: created at 1 s, finished (order_completed stored) at
        // 1 s + 11 + 100 + 20 + 30 ms = 1.161 s.
        let finished = orders[1].finished().unwrap();
        assert_eq!(finished, 1_161 * MS);
        assert_eq!(unfinished_at(&orders, finished - 1), 1);
        assert_eq!(unfinished_at(&orders, finished), 0);
        // Order 2 is created at 2 s: not counted before, open right after.
        assert_eq!(unfinished_at(&orders, 2_000 * MS - 1), 0);
        assert_eq!(unfinished_at(&orders, 2_000 * MS), 1);
        assert_eq!(unfinished_at(&orders, 10_000 * MS), 0);
        // Never finished: open at any later moment.
        let mut open = orders.clone();
        open[0].final_mail = None;
        assert_eq!(unfinished_at(&open, 10_000 * MS), 1);
    }

    #[test]
    fn the_final_mail_is_the_first_final_one() {
        let mails = vec![
            MailTimes {
                order_id: "a".to_owned(),
                kind: "order_refunded".to_owned(),
                sent: 50,
            },
            MailTimes {
                order_id: "a".to_owned(),
                kind: "order_cancelled".to_owned(),
                sent: 40,
            },
            MailTimes {
                order_id: "a".to_owned(),
                kind: "payment_completed".to_owned(),
                sent: 10,
            },
        ];
        let o = OrderTimes {
            id: "a".to_owned(),
            ..OrderTimes::default()
        };
        let joined = join(vec![o], &HashMap::new(), &mails);
        assert_eq!(
            joined[0].final_mail,
            Some((40, "order_cancelled".to_owned()))
        );
        assert_eq!(joined[0].last_mail, Some(50));
    }
}
