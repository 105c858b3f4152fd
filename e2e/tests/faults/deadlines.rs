//! The payment deadline passing while the orders database is down: the shoppers saw
//! their payment pages before the outage and paid during it, so their `PaymentApproved`
//! waits in its topic while the deadline passes. When the database is back, the deadline
//! sweep and the waiting approvals race; whichever comes first, no paid order may be
//! cancelled, and the shoppers who never paid are cancelled with nothing charged
//! (issue #12, point 1: an outage of our own must not cost a shopper the order).

use crate::{orders, Scenario};
use e2e::procs::{Check, Db, Intent, Mix, Options, Part, Placed, ProcStack};
use serde_json::json;
use std::time::Duration;

/// The shoppers: a fifth abandon their payment page (the deadline's own work), the rest
/// approve, cancel on the page or have the order refunded, as in the other scenarios.
const MIX: Mix = Mix {
    cancel_percent: 10,
    refund_percent: 10,
    abandon_percent: 20,
};

/// Orders are placed over this long at least (more for big loads, see
/// [`Scenario::load`]).
fn spread() -> Duration {
    Duration::from_secs_f64((orders() as f64 / 12.0).max(10.0))
}

/// The payment deadline: longer than placing the orders and showing their pages (with
/// 45 s to spare on a loaded machine), so no deadline passes before the outage.
fn payment_deadline() -> Duration {
    spread() + Duration::from_secs(45)
}

/// Until past the last order's deadline (the first order's passes before its middle).
fn outage() -> Duration {
    payment_deadline() + Duration::from_secs(15)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deadline_passing_in_an_orders_database_outage_cancels_no_paid_order() {
    let mut options = Options {
        private_postgres: true,
        ..Options::default()
    };
    options.extra_env.insert(
        Part::Order,
        vec![(
            "ORDER_PAYMENT_DEADLINE_SECS".into(),
            payment_deadline().as_secs().to_string(),
        )],
    );
    let mut scenario = Scenario::begin_with("orders_db_down_past_deadline", options).await;
    let plan = scenario
        .load(spread())
        .mix(MIX)
        .hold_at_page()
        .patience(outage());
    let load = scenario.start(plan);
    let placing = std::time::Instant::now();
    load.until_at_payment_page(scenario.orders).await;
    let pages_shown_in = placing.elapsed();
    scenario
        .stack
        .stop_postgres(Db::Orders)
        .await
        .expect("the private PostgreSQL stops");
    scenario.note(&format!(
        "{} shoppers at their payment pages; the orders database stopped; they pay now (deadline {} s, outage {} s)",
        load.at_payment_page(),
        payment_deadline().as_secs(),
        outage().as_secs()
    ));
    load.pay();
    tokio::time::sleep(outage()).await;
    scenario
        .stack
        .start_postgres(Db::Orders)
        .await
        .expect("the private PostgreSQL starts again");
    scenario.recovered();
    let outcome = load.finish().await;
    let mut verdict = scenario.verify(&outcome, scenario.expect()).await;
    let abandoned = outcome
        .placed
        .iter()
        .filter(|p| p.intent == Intent::Abandon)
        .count();
    verdict.checks.push(
        scenario
            .fault_seen(Part::Order, "order_orders_expired_total", abandoned as f64)
            .await,
    );
    verdict.checks.push(Check::new(
        "every payment page was shown before the first deadline (the outage came first)",
        (pages_shown_in >= payment_deadline())
            .then(|| format!("the pages took {pages_shown_in:?}"))
            .into_iter()
            .collect(),
    ));
    let (closed_after_paying, check) = paid_past_deadline(&scenario.stack, &outcome.placed).await;
    scenario.note(&format!(
        "{closed_after_paying} paid orders met their deadline while their approval waited"
    ));
    verdict.checks.push(check);
    scenario.finish(
        &outcome,
        verdict,
        json!({
            "fault": format!("private PostgreSQL of orders stopped (fast shutdown) for {} s, after every payment page was shown; the shoppers paid during it", outage().as_secs()),
            "payment_deadline_secs": payment_deadline().as_secs(),
            "pages_shown_in_secs": pages_shown_in.as_secs_f64(),
            "abandoned": abandoned,
            "paid_orders_whose_deadline_passed_first": closed_after_paying,
        }),
    );
}

/// The condition the scenario stages, seen in the timelines: paid orders that were
/// asked to close their payment (a `PaymentClosed` step) because the deadline passed
/// before their `PaymentApproved` was applied. None means the scenario proved nothing.
async fn paid_past_deadline(stack: &ProcStack, placed: &[Placed]) -> (usize, Check) {
    let mut count = 0;
    let mut problems = Vec::new();
    for p in placed.iter().filter(|p| p.approved) {
        match stack.timeline(p).await {
            Ok(timeline) => {
                let steps = timeline["steps"].as_array().cloned().unwrap_or_default();
                count += usize::from(steps.iter().any(|s| s["event_type"] == "PaymentClosed"));
            }
            Err(error) => problems.push(format!("order {}: timeline unreadable: {error}", p.id)),
        }
    }
    if count == 0 {
        problems.push("no paid order met its deadline while its approval waited".to_owned());
    }
    (
        count,
        Check::new(
            "the deadline passed for paid orders while their approval waited (the condition staged)",
            problems,
        ),
    )
}
