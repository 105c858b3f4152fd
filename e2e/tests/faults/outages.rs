//! Outages longer than any retry budget a service has for one call: a database or the
//! SMTP server away for two minutes mid-load, with the shipped defaults. Transient is
//! never final, so every order must still end as its shopper meant, every mail be sent
//! once, and saga-audit find nothing. And a notifier group rebalanced under slow mail.

use crate::Scenario;
use e2e::procs::{Check, Db, Expect, Options, Part};
use serde_json::json;
use std::time::Duration;

/// How long the dependency stays away.
const OUTAGE: Duration = Duration::from_secs(120);

/// The private PostgreSQL holding `db` stopped (a fast shutdown, by its PID) at a third
/// of the load, started again 120 s later; the other database stays up. The shoppers
/// keep retrying through the outage (their patience, not the services', is raised).
async fn database_down(name: &'static str, db: Db, consumer: Part) {
    let options = Options {
        private_postgres: true,
        ..Options::default()
    };
    let mut scenario = Scenario::begin_with(name, options).await;
    let load = scenario.start(scenario.load(Duration::from_secs(30)).patience(OUTAGE));
    load.until_accepted(scenario.orders / 3).await;
    let pid = scenario.stack.postgres_pid(db);
    let accepted_before = load.accepted();
    scenario
        .stack
        .stop_postgres(db)
        .await
        .expect("the private PostgreSQL stops");
    scenario.note(&format!(
        "PostgreSQL of {} (pid {pid:?}) stopped after {accepted_before} accepted orders",
        db.name()
    ));
    tokio::time::sleep(OUTAGE).await;
    let accepted_during = load.accepted() - accepted_before;
    scenario
        .stack
        .start_postgres(db)
        .await
        .expect("the private PostgreSQL starts again");
    scenario.recovered();
    let outcome = load.finish().await;
    let mut verdict = scenario.verify(&outcome, scenario.expect()).await;
    verdict.checks.push(
        scenario
            .fault_seen(consumer, "saga_consumer_retries_total", 1.0)
            .await,
    );
    scenario.finish(
        &outcome,
        verdict,
        json!({
            "fault": format!("private PostgreSQL of {} stopped (fast shutdown) for {} s", db.name(), OUTAGE.as_secs()),
            "accepted_before": accepted_before,
            "accepted_during": accepted_during,
        }),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn orders_database_down_for_two_minutes_mid_load_loses_nothing() {
    database_down("orders_db_down_120s", Db::Orders, Part::Order).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn payments_database_down_for_two_minutes_mid_load_charges_nothing_twice() {
    database_down("payments_db_down_120s", Db::Payments, Part::Payment).await;
}

/// With the shipped defaults a transiently failing mail is never given up: it waits in
/// its order's lane (retried every ≤ 5 s) until the server is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mails_wait_out_a_two_minute_smtp_outage_and_are_sent_once() {
    let mut scenario = Scenario::begin("smtp_down_120s").await;
    let load = scenario.start(scenario.load(Duration::from_secs(30)));
    load.until_accepted(scenario.orders / 3).await;
    scenario.stack.stop(Part::Smtp).await;
    scenario.note(&format!(
        "SMTP sink stopped after {} accepted orders",
        load.accepted()
    ));
    tokio::time::sleep(OUTAGE).await;
    scenario
        .stack
        .start_part(Part::Smtp)
        .await
        .expect("the SMTP sink restarts");
    scenario.recovered();
    let outcome = load.finish().await;
    let mut verdict = scenario.verify(&outcome, scenario.expect()).await;
    verdict.checks.push(
        scenario
            .fault_seen(Part::Notifier, "notifier_mail_retries_total", 1.0)
            .await,
    );
    scenario.finish(
        &outcome,
        verdict,
        json!({"fault": format!("SMTP sink stopped (SIGTERM) for {} s", OUTAGE.as_secs())}),
    );
}

/// How long the SMTP sink takes for each mail in the rebalance scenario.
const SLOW_MAIL: Duration = Duration::from_secs(5);

/// The mails' deadline grows by the time the two remaining notifiers need to send at
/// most two mails per order, [`SLOW_MAIL`] each, 16 at once each (the shipped
/// `NOTIFIER_SMTP_POOL_SIZE`): at 1,000 orders about 5 minutes of sending that no
/// notifier can shorten (seen: 200 s ended the first heavy run with mails still being
/// sent, none lost).
fn slow_mail_expect(scenario: &Scenario) -> Expect {
    let expect = scenario.expect();
    let mails = 2 * u32::try_from(scenario.orders).unwrap_or(u32::MAX);
    Expect {
        mail_deadline: expect.mail_deadline + SLOW_MAIL * mails / (16 * 2),
        ..expect
    }
}

/// Two notifiers in one group, every mail taking 5 s at the SMTP server, and the group
/// rebalanced twice mid-load: a third notifier joins at a third of the load, the first
/// is stopped gracefully (SIGTERM, mails in flight) at two thirds. Each expected mail
/// must reach the Maildir exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_notifiers_with_slow_mail_send_each_mail_once_through_a_rebalance() {
    let mut options = Options::default();
    options.extra_env.insert(
        Part::Smtp,
        vec![(
            "SMTP_SINK_DELAY_MS".into(),
            SLOW_MAIL.as_millis().to_string(),
        )],
    );
    let mut scenario = Scenario::begin_with("two_notifiers_rebalance", options).await;
    scenario
        .stack
        .start_part(Part::Notifier2)
        .await
        .expect("a second notifier starts");
    scenario.note("a second notifier runs in the group");
    let load = scenario.start(scenario.load(Duration::from_secs(30)));
    load.until_accepted(scenario.orders / 3).await;
    scenario
        .stack
        .start_part(Part::Notifier3)
        .await
        .expect("a third notifier starts");
    scenario.note(&format!(
        "a third notifier joined after {} accepted orders",
        load.accepted()
    ));
    load.until_accepted(scenario.orders * 2 / 3).await;
    let first_sent = scenario
        .stack
        .metric(Part::Notifier, "notifier_mails_sent_total")
        .await
        .unwrap_or_default();
    scenario.stack.stop(Part::Notifier).await;
    let stopped_cleanly = !scenario.stack.is_running(Part::Notifier)
        && !scenario
            .stack
            .log_tail(Part::Notifier, 5)
            .contains("SIGKILL");
    scenario.note(&format!(
        "the first notifier stopped (SIGTERM) after {} accepted orders, {first_sent} mails sent by it",
        load.accepted()
    ));
    scenario.recovered();
    let outcome = load.finish().await;
    let mut verdict = scenario.verify(&outcome, slow_mail_expect(&scenario)).await;
    let mut sent = vec![("notifier", first_sent)];
    for part in [Part::Notifier2, Part::Notifier3] {
        let n = scenario
            .stack
            .metric(part, "notifier_mails_sent_total")
            .await
            .unwrap_or_default();
        sent.push((part.name(), n));
    }
    scenario.note(&format!("mails sent per notifier: {sent:?}"));
    verdict.checks.push(Check::new(
        "the rebalance moved work: the notifier that joined mid-load sent mails, the stopped one exited on SIGTERM",
        [
            (sent[2].1 < 1.0).then(|| format!("notifier-3 sent {} mails", sent[2].1)),
            (!stopped_cleanly).then(|| "the first notifier needed SIGKILL".to_owned()),
        ]
        .into_iter()
        .flatten()
        .collect(),
    ));
    scenario.finish(
        &outcome,
        verdict,
        json!({
            "fault": "2 notifiers, SMTP 5 s per mail; a third joins at 1/3 of the load, the first stops (SIGTERM) at 2/3",
            "mails_sent_per_notifier": sent.iter().map(|(n, c)| json!({"notifier": n, "sent": c})).collect::<Vec<_>>(),
        }),
    );
}
