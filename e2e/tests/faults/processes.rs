//! A service killed with SIGKILL mid-load (no shutdown code runs: in-flight requests,
//! transactions, Kafka offsets and mails are cut off), then started again on its port.

use crate::Scenario;
use e2e::procs::Part;
use serde_json::json;
use std::time::Duration;

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
        scenario.stack.kill9(part).await;
        scenario.note(&format!(
            "{} (pid {pid:?}) killed with SIGKILL after {accepted} accepted orders",
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
        kills.push(json!({"accepted_before": accepted, "pid": pid}));
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
