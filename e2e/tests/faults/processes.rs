//! A service killed with SIGKILL mid-load (no shutdown code runs: in-flight requests,
//! transactions, Kafka offsets and mails are cut off), then started again on its port.

use crate::Scenario;
use e2e::procs::{LoadPlan, Part};
use serde_json::json;
use std::time::{Duration, Instant};

/// How long the killed service stays down.
const DOWN: Duration = Duration::from_secs(2);
/// The notifier's `NOTIFIER_MAX_IN_FLIGHT` (its default; the harness leaves it).
const NOTIFIER_MAX_IN_FLIGHT: usize = 64;

async fn kill_mid_load(name: &'static str, part: Part) {
    let mut scenario = Scenario::begin(name).await;
    let load = scenario.start(scenario.load(Duration::from_secs(15)));
    let mut kills = Vec::new();
    // At a third and at two thirds of the load.
    for (num, den) in [(1, 3), (2, 3)] {
        load.until_accepted(scenario.orders * num / den).await;
        let (pid, accepted) = (scenario.stack.pid(part), load.accepted());
        // Orders accepted whose shopper is not done yet: work the kill cuts off.
        let under_way = accepted.saturating_sub(load.finished());
        scenario.stack.kill9(part).await;
        scenario.note(&format!(
            "{} (pid {pid:?}) killed with SIGKILL after {accepted} accepted orders, \
             {under_way} of them under way",
            part.name()
        ));
        tokio::time::sleep(DOWN).await;
        scenario
            .stack
            .start_part(part)
            .await
            .unwrap_or_else(|e| panic!("{} restarts: {e:#}", part.name()));
        scenario.note(&format!(
            "{} running again (pid {:?})",
            part.name(),
            scenario.stack.pid(part)
        ));
        kills.push(json!({"accepted_before": accepted, "under_way": under_way, "pid": pid}));
    }
    scenario.recovered();
    let outcome = load.finish().await;
    let mut expect = scenario.expect();
    if part == Part::Notifier {
        // Only a mail in flight at a kill can come twice (see
        // Expect::crash_resends_allowed): at most the in-flight limit per kill.
        expect.crash_resends_allowed = kills.len() * NOTIFIER_MAX_IN_FLIGHT;
    }
    scenario
        .conclude(
            &outcome,
            expect,
            json!({"fault": format!("SIGKILL {} twice, {DOWN:?} down each", part.name()), "kills": kills}),
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_accepted_order_settles_when_the_order_service_is_killed_mid_load() {
    kill_mid_load("kill9_order", Part::Order).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_payment_is_lost_or_charged_twice_when_the_payment_service_is_killed_mid_load() {
    kill_mid_load("kill9_payment", Part::Payment).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_mail_is_lost_or_recorded_twice_when_the_notifier_is_killed_mid_load() {
    kill_mid_load("kill9_notifier", Part::Notifier).await;
}

/// Kakao Pay's extra latency while the orders arrive: each `ready` holds its message in
/// payment's consumer this long, so the consumer has many messages in flight at once.
const SLOW_GATEWAY_MS: u64 = 2_000;

/// payment-service killed with SIGKILL while hundreds of its consumer's messages are in
/// flight (issue #11: "a kill -9 with hundreds of messages in flight"). Every shopper
/// places an order at once and Kakao Pay answers `ready` slowly, so each `OrderPlaced` is
/// held in the consumer mid-call. None of them has stored its offset or committed its
/// effect when the process dies; after the restart every order must get its payment page,
/// and every payment settle once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_order_settles_after_a_kill_9_with_hundreds_of_messages_in_flight() {
    let mut scenario = Scenario::begin("kill9_hundreds_in_flight").await;
    // A tenth of the orders in flight at least: 100 at the suite's 1,000 orders (the
    // engine's default bound is 256), 6 at CI's 60.
    let wanted = (scenario.orders / 10).max(1);
    scenario
        .stack
        .sim_faults(json!({ "latency_ms": SLOW_GATEWAY_MS }))
        .await
        .expect("the simulator takes the latency");
    let spread = Duration::from_secs_f64((scenario.orders as f64 / 150.0).max(2.0));
    let plan = LoadPlan::new(scenario.orders, spread)
        .hold_at_page()
        .patience(Duration::from_secs(120));
    let load = scenario.start(plan);
    let in_flight = until_in_flight(&scenario, wanted).await;
    let pid = scenario.stack.pid(Part::Payment);
    scenario.stack.kill9(Part::Payment).await;
    scenario.note(&format!(
        "payment (pid {pid:?}) killed with SIGKILL with {in_flight} messages in flight, {} orders accepted",
        load.accepted()
    ));
    scenario
        .stack
        .sim_faults(json!({ "latency_ms": 0 }))
        .await
        .expect("the simulator drops the latency");
    tokio::time::sleep(DOWN).await;
    scenario
        .stack
        .start_part(Part::Payment)
        .await
        .expect("payment restarts");
    scenario.recovered();
    load.pay();
    let outcome = load.finish().await;
    scenario
        .conclude(
            &outcome,
            scenario.expect(),
            json!({
                "fault": format!("SIGKILL payment with its consumer's messages in flight (Kakao Pay {SLOW_GATEWAY_MS} ms slower until the kill), {DOWN:?} down"),
                "in_flight_at_kill": in_flight,
                "wanted_in_flight": wanted,
            }),
        )
        .await;
}

/// Polls payment's `saga_consumer_in_flight_messages` until it reaches `wanted`; the
/// scenario fails when it never does (it would prove nothing).
async fn until_in_flight(scenario: &Scenario, wanted: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut most = 0.0_f64;
    while Instant::now() < deadline {
        let now = scenario
            .stack
            .metric(Part::Payment, "saga_consumer_in_flight_messages")
            .await
            .unwrap_or(0.0);
        most = most.max(now);
        if now >= wanted as f64 {
            return now as usize;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("payment's consumer never had {wanted} messages in flight (at most {most})");
}
