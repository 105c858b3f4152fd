//! Kakao Pay misbehaves mid-load (through the simulator's runtime fault knobs).

use crate::Scenario;
use e2e::procs::{Check, Expect, Part};
use serde_json::json;
use std::time::Duration;

/// During the outage every API call answers 503: `ready` is retried by payment's
/// consumer until Kakao Pay is back (the order waits), approvals are refused without
/// effect (the shopper retries; one who gives up leaves an unpaid order the deadline
/// cancels — allowed here), refunds are retried by the consumer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_kakao_pay_outage_fails_or_delays_payments_but_never_charges_twice() {
    let scenario = Scenario::begin("kakaopay_outage_10s").await;
    let load = scenario.start(scenario.load(Duration::from_secs(20)));
    load.until_accepted(scenario.orders / 3).await;
    scenario
        .stack
        .sim_faults(json!({"outage": true}))
        .await
        .expect("outage on");
    scenario.note(&format!(
        "Kakao Pay outage on after {} accepted orders",
        load.accepted()
    ));
    tokio::time::sleep(Duration::from_secs(10)).await;
    scenario
        .stack
        .sim_faults(json!({"outage": false}))
        .await
        .expect("outage off");
    scenario.recovered();
    let outcome = load.finish().await;
    let expect = Expect {
        gateway_failures_allowed: true,
        ..scenario.expect()
    };
    let mut verdict = scenario.verify(&outcome, expect).await;
    verdict.checks.push(
        scenario
            .fault_seen(Part::Payment, "payment_gateway_retries_total", 1.0)
            .await,
    );
    // Most orders are still paid: the outage is a window, not the whole run.
    let paid = verdict.completed + verdict.refunded;
    verdict.checks.push(Check::new(
        "orders outside the outage window were paid",
        if paid * 2 > verdict.orders {
            vec![]
        } else {
            vec![format!("only {paid} of {} paid", verdict.orders)]
        },
    ));
    scenario.finish(
        &outcome,
        verdict,
        json!({"fault": "PUT /__sim/faults {\"outage\": true} for 10 s"}),
    );
}

/// Every gateway call takes 2 s for a while: payments slow down, nothing else changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_seconds_of_kakao_pay_latency_slow_payments_but_lose_nothing() {
    let scenario = Scenario::begin("kakaopay_latency_2s").await;
    let load = scenario.start(scenario.load(Duration::from_secs(20)));
    load.until_accepted(scenario.orders / 3).await;
    scenario
        .stack
        .sim_faults(json!({"latency_ms": 2000}))
        .await
        .expect("latency on");
    scenario.note(&format!(
        "Kakao Pay latency 2 s after {} accepted orders",
        load.accepted()
    ));
    tokio::time::sleep(Duration::from_secs(15)).await;
    scenario
        .stack
        .sim_faults(json!({"latency_ms": 0}))
        .await
        .expect("latency off");
    scenario.recovered();
    let outcome = load.finish().await;
    let mut verdict = scenario.verify(&outcome, scenario.expect()).await;
    // Every call in the window took 2 s: their durations add up to well over that.
    verdict.checks.push(
        scenario
            .fault_seen(
                Part::Payment,
                "payment_gateway_request_duration_seconds_sum",
                10.0,
            )
            .await,
    );
    scenario.finish(
        &outcome,
        verdict,
        json!({"fault": "PUT /__sim/faults {\"latency_ms\": 2000} for 15 s"}),
    );
}

/// For 20 s a fifth of Kakao Pay calls of every endpoint lose their connection before
/// the call is applied (a connection error), and a tenth are applied but their answer
/// never comes (the client times out: the outcome is unknown). Nothing may be charged
/// twice, refunded twice or given up: an unknown approve or refund stays unknown until
/// Kakao Pay `order` settles it, and every shopper who paid gets the order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kakao_pay_timeouts_and_dropped_connections_mixed_lose_and_double_nothing() {
    let scenario = Scenario::begin("kakaopay_timeouts_and_drops_20s").await;
    let load = scenario.start(scenario.load(Duration::from_secs(30)));
    load.until_accepted(scenario.orders / 3).await;
    let every = |rate: f64| json!({"ready": rate, "approve": rate, "cancel": rate, "order": rate});
    let faults = json!({"dropped_connection": every(0.2), "applied_answer_lost": every(0.1)});
    scenario
        .stack
        .sim_faults(faults.clone())
        .await
        .expect("faults on");
    scenario.note(&format!(
        "Kakao Pay dropping and timing out calls after {} accepted orders",
        load.accepted()
    ));
    tokio::time::sleep(Duration::from_secs(20)).await;
    scenario
        .stack
        .sim_faults(json!({"dropped_connection": {}, "applied_answer_lost": {}}))
        .await
        .expect("faults off");
    scenario.recovered();
    let outcome = load.finish().await;
    let mut verdict = scenario.verify(&outcome, scenario.expect()).await;
    verdict.checks.push(
        scenario
            .fault_seen(Part::Payment, "payment_gateway_retries_total", 1.0)
            .await,
    );
    verdict.checks.push(
        scenario
            .fault_seen(
                Part::Payment,
                r#"payment_gateway_requests_total{outcome="unknown"}"#,
                1.0,
            )
            .await,
    );
    scenario.finish(
        &outcome,
        verdict,
        json!({"fault": format!("PUT /__sim/faults {faults} for 20 s")}),
    );
}
