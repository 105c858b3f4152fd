//! Redelivery and garbage: every topic consumed again from offset 0 changes nothing;
//! poison messages injected mid-load are dead-lettered by every consumer and nothing
//! else is disturbed.

use crate::Scenario;
use e2e::procs::{Check, Expect, MailIndex, Part, Placed, ProcStack};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Everything a replay must not change, by key.
async fn observable_state(stack: &ProcStack, placed: &[Placed]) -> BTreeMap<String, Value> {
    let mut state = BTreeMap::new();
    let mut mails = MailIndex::new(stack.maildir_path());
    mails.refresh();
    for p in placed {
        let order = stack.get_order(p.id).await.expect("order readable");
        state.insert(format!("order {}", p.id), order);
        let payments = stack.payments_of(p.id).await.expect("payments readable");
        for payment in payments.as_array().into_iter().flatten() {
            let id = payment["id"].as_str().unwrap_or_default();
            let detail = stack.payment(id).await.expect("payment readable");
            state.insert(
                format!("gateway calls of payment {id}"),
                json!(detail["gateway_calls"].as_array().map_or(0, Vec::len)),
            );
        }
        state.insert(format!("payments of order {}", p.id), payments);
        let mut history = stack.notifications(p.id).await.expect("history readable");
        history.sort_by_key(|record| record["id"].to_string());
        state.insert(format!("history of order {}", p.id), json!(history));
        state.insert(
            format!("mails to {}", p.email),
            json!(mails.to(&p.email).len()),
        );
    }
    state.insert(
        "ledger".to_owned(),
        serde_json::to_value(stack.ledger().await.expect("ledger")).expect("ledger JSON"),
    );
    state.insert("mails in all".to_owned(), json!(mails.total()));
    state
}

fn differences(before: &BTreeMap<String, Value>, after: &BTreeMap<String, Value>) -> Vec<String> {
    let keys: std::collections::BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    keys.into_iter()
        .filter(|key| before.get(*key) != after.get(*key))
        .map(|key| {
            let show = |v: Option<&Value>| {
                let text = v.map_or("(none)".to_owned(), Value::to_string);
                text.chars().take(600).collect::<String>()
            };
            format!(
                "{key}: before {} / after {}",
                show(before.get(key)),
                show(after.get(key))
            )
        })
        .collect()
}

/// Waits until each (group, topic) has committed everything; false after `deadline`.
async fn until_caught_up(
    stack: &ProcStack,
    pairs: &[(String, String)],
    deadline: Duration,
) -> bool {
    let started = Instant::now();
    loop {
        let done = tokio::task::block_in_place(|| {
            pairs
                .iter()
                .all(|(group, topic)| stack.caught_up(group, topic))
        });
        if done {
            return true;
        }
        if started.elapsed() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Who reads what: orders.v1 → payment, notifier; payments.v1 → order, notifier.
fn readers(stack: &ProcStack) -> Vec<(String, String)> {
    let topics = stack.kafka().topics();
    vec![
        (stack.group(Part::Payment), topics.orders.clone()),
        (stack.group(Part::Notifier), topics.orders.clone()),
        (stack.group(Part::Order), topics.payments.clone()),
        (stack.group(Part::Notifier), topics.payments),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replaying_every_topic_from_offset_zero_changes_nothing() {
    let mut scenario = Scenario::begin("full_replay").await;
    let load = scenario.start(scenario.load(Duration::from_secs(10)));
    let outcome = load.finish().await;
    let mut verdict = scenario.verify(&outcome, Expect::default()).await;
    let stack = &mut scenario.stack;
    let topics = stack.kafka().topics();

    // Nothing in flight before the snapshot: the first groups have consumed everything.
    let settled = until_caught_up(stack, &readers(stack), Duration::from_secs(120)).await;
    let before = observable_state(stack, &outcome.placed).await;
    let marks = |stack: &ProcStack| {
        json!({
            "orders": stack.high_watermarks(&topics.orders).expect("watermarks"),
            "payments": stack.high_watermarks(&topics.payments).expect("watermarks"),
            "dead letters": stack.high_watermarks(&topics.dead_letter).expect("watermarks"),
        })
    };
    let marks_before = tokio::task::block_in_place(|| marks(stack));

    let replay_started = Instant::now();
    stack
        .replay_with_new_groups()
        .await
        .expect("the services restart in new consumer groups");
    let caught_up = until_caught_up(stack, &readers(stack), Duration::from_secs(240)).await;
    let replay_secs = replay_started.elapsed().as_secs_f64();
    let marks_after = tokio::task::block_in_place(|| marks(stack));
    let after = observable_state(stack, &outcome.placed).await;
    scenario.note(&format!(
        "replay: new groups caught up = {caught_up} in {replay_secs:.1}s; watermarks {marks_before} → {marks_after}"
    ));

    verdict.checks.push(Check::new(
        "the first consumer groups had consumed everything before the replay",
        if settled {
            vec![]
        } else {
            vec!["not caught up within 120 s".to_owned()]
        },
    ));
    verdict.checks.push(Check::new(
        "the new consumer groups re-read every topic to its end",
        if caught_up {
            vec![]
        } else {
            vec![format!(
                "not caught up within 240 s: {:?}",
                readers(&scenario.stack)
            )]
        },
    ));
    verdict.checks.push(Check::new(
        "the replay published nothing (no event, no dead letter)",
        if marks_before == marks_after {
            vec![]
        } else {
            vec![format!("watermarks {marks_before} → {marks_after}")]
        },
    ));
    verdict.checks.push(Check::new(
        "orders (incl. updated_at), payments, gateway calls, ledger, mails and history unchanged",
        differences(&before, &after),
    ));
    scenario.finish(
        &outcome,
        verdict,
        json!({"fault": "services restarted in new consumer groups (offset 0)", "replay_secs": replay_secs, "watermarks": marks_after}),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn poison_messages_mid_load_are_dead_lettered_and_the_flow_is_unaffected() {
    const POISON: usize = 100;
    let scenario = Scenario::begin("poison_messages").await;
    let load = scenario.start(scenario.load(Duration::from_secs(15)));
    load.until_accepted(scenario.orders / 3).await;
    let topics = scenario.stack.kafka().topics();
    for topic in [&topics.orders, &topics.payments] {
        scenario
            .stack
            .inject_poison(topic, POISON)
            .await
            .expect("poison published");
    }
    scenario.note(&format!(
        "{POISON} poison messages published to each of {} and {} after {} accepted orders",
        topics.orders,
        topics.payments,
        load.accepted()
    ));
    scenario.recovered();
    let outcome = load.finish().await;
    let mut verdict = scenario.verify(&outcome, scenario.expect()).await;

    // Once per consumer group reading the topic.
    let expected: BTreeMap<(String, String), usize> = readers(&scenario.stack)
        .into_iter()
        .map(|(group, topic)| ((topic, group), POISON))
        .collect();
    let want: usize = expected.values().sum();
    let started = Instant::now();
    let counts = loop {
        let letters = scenario
            .stack
            .dead_letters()
            .await
            .expect("dead letters read");
        let mut counts: BTreeMap<(String, String), usize> = BTreeMap::new();
        for letter in &letters {
            *counts
                .entry((letter.source_topic.clone(), letter.consumer.clone()))
                .or_default() += 1;
        }
        if letters.len() >= want || started.elapsed() > Duration::from_secs(120) {
            break counts;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let mut problems = Vec::new();
    for key in expected.keys().chain(counts.keys()) {
        let (want, got) = (
            expected.get(key).copied().unwrap_or(0),
            counts.get(key).copied().unwrap_or(0),
        );
        if want != got
            && !problems
                .iter()
                .any(|p: &String| p.starts_with(&format!("{key:?}")))
        {
            problems.push(format!("{key:?}: {got} dead letters, expected {want}"));
        }
    }
    verdict.checks.push(Check::new(
        "every poison message dead-lettered once per consumer group of its topic, nothing else",
        problems,
    ));
    let counts: BTreeMap<String, usize> = counts
        .into_iter()
        .map(|((topic, group), n)| (format!("{topic} by {group}"), n))
        .collect();
    scenario.finish(
        &outcome,
        verdict,
        json!({"fault": format!("{POISON} poison messages into each of orders.v1 and payments.v1"), "dead_letters": counts}),
    );
}
