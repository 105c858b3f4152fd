//! A server the services depend on goes away mid-load and comes back: the broker, the
//! services' PostgreSQL sessions, MongoDB, SMTP.

use crate::Scenario;
use e2e::procs::Part;
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nothing_is_lost_when_the_broker_is_stopped_and_then_killed_mid_load() {
    let mut scenario = Scenario::begin("broker_restart").await;
    let load = scenario.start(scenario.load(Duration::from_secs(20)));
    let mut restarts = Vec::new();
    // A graceful stop at a third of the load, a SIGKILL at two thirds; each time the
    // broker comes back on the same port with the same SQLite storage.
    let mut resumed_from = 0;
    for (num, den, graceful) in [(1, 3, true), (2, 3, false)] {
        load.until_accepted(scenario.orders * num / den).await;
        // The second fault only once orders flow again after the first.
        load.until_finished(resumed_from + 10).await;
        let accepted = load.accepted();
        if graceful {
            scenario.stack.stop(Part::Kafka).await;
        } else {
            scenario.stack.kill9(Part::Kafka).await;
        }
        scenario.note(&format!(
            "broker {} after {accepted} accepted orders",
            if graceful {
                "stopped (SIGTERM)"
            } else {
                "killed (SIGKILL)"
            }
        ));
        tokio::time::sleep(Duration::from_secs(3)).await;
        scenario
            .stack
            .start_part(Part::Kafka)
            .await
            .expect("the broker restarts");
        scenario.note("broker running again");
        resumed_from = load.finished();
        restarts.push(json!({"accepted_before": accepted, "graceful": graceful}));
    }
    scenario.recovered();
    let outcome = load.finish().await;
    scenario
        .conclude(
            &outcome,
            scenario.expect(),
            json!({"fault": "tansu SIGTERM then SIGKILL, 3 s down each", "restarts": restarts}),
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn terminated_database_sessions_lose_nothing() {
    let scenario = Scenario::begin("pg_terminate").await;
    let load = scenario.start(scenario.load(Duration::from_secs(15)));
    let mut terminated = Vec::new();
    for quarter in 1..=3 {
        load.until_accepted(scenario.orders * quarter / 4).await;
        let count = scenario
            .stack
            .terminate_db_sessions()
            .expect("pg_terminate_backend runs");
        scenario.note(&format!(
            "{count} PostgreSQL sessions of the services terminated after {} accepted orders",
            load.accepted()
        ));
        terminated.push(count);
    }
    scenario.recovered();
    let outcome = load.finish().await;
    let mut verdict = scenario.verify(&outcome, scenario.expect()).await;
    verdict.checks.push(e2e::procs::Check::new(
        "the fault happened: sessions were terminated",
        if terminated.iter().all(|&n| n > 0) {
            vec![]
        } else {
            vec![format!("terminated per round: {terminated:?}")]
        },
    ));
    scenario.finish(
        &outcome,
        verdict,
        json!({"fault": "pg_terminate_backend of every service session, 3 times", "terminated": terminated}),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mail_history_survives_mongodb_being_down_for_30_seconds() {
    let mut scenario = Scenario::begin("mongodb_down_30s").await;
    let load = scenario.start(scenario.load(Duration::from_secs(30)));
    load.until_accepted(scenario.orders / 3).await;
    scenario.stack.stop(Part::Mongo).await;
    scenario.note(&format!(
        "MongoDB stopped after {} accepted orders",
        load.accepted()
    ));
    tokio::time::sleep(Duration::from_secs(30)).await;
    let accepted_during = load.accepted();
    scenario
        .stack
        .start_part(Part::Mongo)
        .await
        .expect("MongoDB restarts");
    scenario.recovered();
    let outcome = load.finish().await;
    let mut verdict = scenario.verify(&outcome, scenario.expect()).await;
    verdict.checks.push(
        scenario
            .fault_seen(Part::Notifier, "notifier_mongodb_errors_total", 1.0)
            .await,
    );
    scenario.finish(
        &outcome,
        verdict,
        json!({"fault": "nx-27017 stopped (SIGTERM) for 30 s", "accepted_when_back": accepted_during}),
    );
}
