//! One case × scenario on a running stack: the faults, the load, the drain, and the
//! measures (stored timestamps, CPU, memory, relay lag).

use crate::cli::{Plan, RunSpec, ScenarioName};
use crate::saga::{self, OrderTimes};
use crate::stack::{RunContext, Stack};
use crate::stored::{self, Stores};
use crate::POLL_MAX;
use anyhow::{bail, Result};
use benchmarks::shop::{self, Recorder, Shop, ShopConfig, Timing};
use benchmarks::{procfs, prom, stats};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A moment after the load at which the run counts unfinished orders.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// `after_load` or `after_outage`.
    pub name: &'static str,
    pub what: String,
    /// Seconds from the load's start.
    pub offset: Duration,
}

/// What the load phase leaves for the measures.
struct Loaded {
    timing: Timing,
    started: Instant,
    started_utc: DateTime<Utc>,
    /// Seconds from the load's start at which the gateway outage ended.
    outage_off: Option<f64>,
    timeline: Vec<Value>,
}

async fn put_faults(http: &reqwest::Client, sim: &str, patch: Value) -> Result<()> {
    let r = http
        .put(format!("{sim}/__sim/faults"))
        .json(&patch)
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("PUT /__sim/faults {patch}: {}", r.status());
    }
    Ok(())
}

/// The scenario's standing faults, set before the load.
async fn standing_faults(
    http: &reqwest::Client,
    sim: &str,
    scenario: ScenarioName,
) -> Result<Vec<Value>> {
    let ms = match scenario {
        ScenarioName::Gateway200ms => 200,
        ScenarioName::Gateway1s => 1000,
        ScenarioName::SmtpSlow500ms => {
            return Ok(vec![
                json!({ "at_s": 0.0, "what": "SMTP sink started with SMTP_SINK_DELAY_MS=500" }),
            ])
        }
        _ => return Ok(Vec::new()),
    };
    put_faults(http, sim, json!({ "latency_ms": ms })).await?;
    Ok(vec![
        json!({ "at_s": 0.0, "what": format!("gateway latency_ms = {ms}") }),
    ])
}

/// The outage beside the load: its marks, and when it ended (s from `t0`).
async fn outage(
    http: reqwest::Client,
    sim: String,
    plan: Plan,
    t0: Instant,
) -> (Vec<Value>, Option<f64>) {
    let mut marks = Vec::new();
    tokio::time::sleep(plan.outage_after).await;
    let on = put_faults(&http, &sim, json!({ "outage": true })).await;
    let at = stats::round3(t0.elapsed().as_secs_f64());
    marks.push(json!({ "at_s": at, "what": "gateway outage on", "ok": on.is_ok() }));
    tokio::time::sleep(plan.outage_length).await;
    let off = put_faults(&http, &sim, json!({ "outage": false })).await;
    let at = t0.elapsed().as_secs_f64();
    marks.push(
        json!({ "at_s": stats::round3(at), "what": "gateway outage off", "ok": off.is_ok() }),
    );
    (marks, Some(at))
}

/// Orders walked through before the measured load, one per partition and then some.
const WARM_UP_ORDERS: usize = 6;
/// How long the warm-up may take (tansu's consumer-group joins take ~6–12 s).
const WARM_UP_BOUND: Duration = Duration::from_secs(90);

/// A few orders through the whole saga, their mails stored, before the clock starts.
/// `infra/stack up` returns once every /readyz answers, but the consumers join their
/// groups on tansu seconds later: without this, every order of the first seconds waits
/// for the join, and that start-up delay would dominate the saga's p99. Warm-up orders
/// are left out of the figures (created before the load's start).
async fn warm_up(stack: &Stack, stores: &Stores) -> Result<Value> {
    let started = Instant::now();
    let shop = Shop::new(ShopConfig::new(&stack.url("ORDER_PORT"))?)?;
    let visits = (0..WARM_UP_ORDERS).map(|_| shop.visit(tokio::time::Instant::now()));
    let outcomes = tokio::time::timeout(WARM_UP_BOUND, futures::future::join_all(visits))
        .await
        .unwrap_or_default();
    let errors: Vec<String> = outcomes.iter().filter_map(|o| o.error.clone()).collect();
    let mut mails = None;
    while started.elapsed() < WARM_UP_BOUND {
        mails = stored::final_mails(&stores.mail, &stores.scratch).await;
        if mails.is_some_and(|m| m >= WARM_UP_ORDERS as u64) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let ok = errors.is_empty() && mails.is_some_and(|m| m >= WARM_UP_ORDERS as u64);
    let idle = idle_orders(&shop).await;
    Ok(json!({
        "orders": WARM_UP_ORDERS,
        "ok": ok,
        "seconds": stats::round3(started.elapsed().as_secs_f64()),
        "final_mails": mails,
        "errors": errors,
        "idle_post_to_redirect_ms": idle,
    }))
}

/// Orders walked one at a time on the idle, warmed-up stack: POST sent → the long poll
/// answers with the redirect (accept + ready), what one shopper alone waits for the
/// payment page. They are created before the load, so no other figure counts them.
const IDLE_ORDERS: usize = 10;

async fn idle_orders(shop: &Shop) -> Value {
    let mut took: Vec<f64> = Vec::new();
    for _ in 0..IDLE_ORDERS {
        let outcome = shop.visit(tokio::time::Instant::now()).await;
        if let (Some(accept), Some(ready)) = (outcome.accept, outcome.ready) {
            took.push((accept + ready).as_secs_f64() * 1000.0);
        }
    }
    took.sort_by(f64::total_cmp);
    let at = |q: f64| {
        took.get(((took.len() as f64 - 1.0) * q).round() as usize)
            .copied()
    };
    json!({
        "samples": took.len(),
        "p50": at(0.5).map(stats::round3),
        "max": took.last().copied().map(stats::round3),
        "all": took.iter().map(|t| stats::round3(*t)).collect::<Vec<_>>(),
    })
}

async fn drive_load(
    ctx: &RunContext<'_>,
    http: &reqwest::Client,
    stack: &Stack,
    scenario: ScenarioName,
    recorder: Arc<Mutex<Recorder>>,
) -> Result<Loaded> {
    let plan = ctx.plan;
    let sim = stack.url("KAKAOPAY_SIM_PORT");
    let mut timeline = standing_faults(http, &sim, scenario).await?;
    let mut config = ShopConfig::new(&stack.url("ORDER_PORT"))?;
    config.poll = plan.poll;
    config.poll_max = POLL_MAX;
    config.step_timeout = plan.step_timeout;
    config.accept_only = scenario == ScenarioName::Capacity;
    let (load, _) = plan.load(scenario);
    let shop = Arc::new(Shop::new(config)?);
    let (started, started_utc) = (Instant::now(), Utc::now());
    let fault_task = (scenario == ScenarioName::GatewayOutage30s)
        .then(|| tokio::spawn(outage(http.clone(), sim.clone(), *plan, started)));
    let bar = shop::progress_bar(ctx.args.quiet, load.total());
    let timing = shop::drive(shop, load, recorder, bar, |_| {}).await;
    let mut outage_off = None;
    if let Some(task) = fault_task {
        // The outage always ends, even when the load ended first.
        match tokio::time::timeout(plan.outage_after + plan.outage_length, task).await {
            Ok(Ok((marks, off))) => {
                timeline.extend(marks);
                outage_off = off;
            }
            _ => {
                let _ = put_faults(http, &sim, json!({ "outage": false })).await;
                outage_off = Some(started.elapsed().as_secs_f64());
                timeline.push(json!({ "what": "gateway outage off (after the load)" }));
            }
        }
    }
    Ok(Loaded {
        timing,
        started,
        started_utc,
        outage_off,
        timeline,
    })
}

/// The moments at which unfinished orders are counted: `after_load` s after the last
/// order was issued, and for the outage scenario `after_outage` s after it ended.
pub fn checkpoints(plan: &Plan, issue_seconds: f64, outage_off: Option<f64>) -> Vec<Checkpoint> {
    let secs = Duration::from_secs_f64;
    let mut out = vec![Checkpoint {
        name: "after_load",
        what: format!("{} s after the load", plan.after_load.as_secs_f64()),
        offset: secs(issue_seconds) + plan.after_load,
    }];
    if let Some(off) = outage_off {
        out.push(Checkpoint {
            name: "after_outage",
            what: format!(
                "{} s after the outage ended",
                plan.after_outage.as_secs_f64()
            ),
            offset: secs(off) + plan.after_outage,
        });
    }
    out
}

fn non_terminal(counts: &BTreeMap<String, u64>) -> u64 {
    counts
        .iter()
        .filter(|(s, _)| s.as_str() != "COMPLETED" && s.as_str() != "CANCELLED")
        .map(|(_, n)| n)
        .sum()
}

/// Until every order has ended and has its final mail stored, or the deadline. Returns
/// the seconds it took (`None`: not within the deadline).
async fn drain(stores: &Stores, deadline: Instant) -> Option<f64> {
    let started = Instant::now();
    loop {
        if let Some(counts) = stored::order_status_counts(stores).await {
            let terminal = counts.values().sum::<u64>() - non_terminal(&counts);
            if non_terminal(&counts) == 0 {
                let mails = stored::final_mails(&stores.mail, &stores.scratch).await;
                if mails.is_some_and(|m| m >= terminal) {
                    return Some(started.elapsed().as_secs_f64());
                }
            }
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// CPU ticks of every stack process and of this process, at one moment.
fn cpu_snapshot(pids: &BTreeMap<String, u32>) -> BTreeMap<String, u64> {
    let mut out: BTreeMap<String, u64> = pids
        .iter()
        .filter_map(|(name, pid)| Some((name.clone(), procfs::cpu_ticks(*pid)?)))
        .collect();
    if let Some(t) = procfs::cpu_ticks(std::process::id()) {
        out.insert("experiment (load generator)".to_owned(), t);
    }
    out
}

async fn scrape(http: &reqwest::Client, urls: &[String]) -> String {
    let mut text = String::new();
    for url in urls {
        if let Ok(r) = http.get(format!("{url}/metrics")).send().await {
            if let Ok(t) = r.text().await {
                text.push_str(&t);
                text.push('\n');
            }
        }
    }
    text
}

/// CPU seconds between the snapshots, peak RSS (VmHWM) per process.
fn resources(pids: &BTreeMap<String, u32>, cpu_before: &BTreeMap<String, u64>) -> Value {
    let ticks = procfs::clock_ticks_per_sec() as f64;
    let cpu_seconds: BTreeMap<String, f64> = cpu_snapshot(pids)
        .iter()
        .map(|(name, after)| {
            let before = cpu_before.get(name).copied().unwrap_or(0);
            let s = after.saturating_sub(before) as f64 / ticks;
            (name.clone(), stats::round3(s))
        })
        .collect();
    let peak_rss_mb: BTreeMap<String, f64> = pids
        .iter()
        .filter_map(|(name, pid)| {
            let kb = procfs::status_kb(*pid, "VmHWM")?;
            Some((name.clone(), stats::round3(kb as f64 / 1024.0)))
        })
        .collect();
    json!({ "cpu_seconds": cpu_seconds, "peak_rss_mb": peak_rss_mb })
}

/// Relay lag and event rate from the services' own metrics (between the scrapes).
fn relay(before: &str, after: &str, load_seconds: f64) -> Value {
    let lag_name = "saga_outbox_relay_lag_seconds";
    let lag = prom::bucket_delta(
        &prom::buckets(before, lag_name),
        &prom::buckets(after, lag_name),
    );
    let q_ms = |q: f64| prom::bucket_quantile(&lag, q).map(|s| stats::round3(s * 1000.0));
    let name = "saga_outbox_published_total";
    let published =
        prom::sample_sum(after, name).map(|a| a - prom::sample_sum(before, name).unwrap_or(0.0));
    json!({
        "lag_p50_ms": q_ms(0.5),
        "lag_p99_ms": q_ms(0.99),
        "lag_observations": lag.last().map_or(0.0, |(_, c)| *c),
        "events_published": published,
        "events_per_sec": published.map(|p| stats::rate(p as u64, load_seconds)),
    })
}

/// The saga's figures from the stored timestamps, and the checkpoint counts.
fn saga_json(orders: &[OrderTimes], checkpoints: &[Checkpoint], loaded: &Loaded) -> Value {
    let f = saga::figures(orders);
    let to_us = |offset: Duration| {
        (loaded.started_utc
            + chrono::Duration::from_std(offset).unwrap_or(chrono::Duration::zero()))
        .timestamp_micros()
    };
    let marks: Vec<Value> = checkpoints
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "what": c.what,
                "at_s": stats::round3(c.offset.as_secs_f64()),
                "unfinished": saga::unfinished_at(orders, to_us(c.offset)),
            })
        })
        .collect();
    let at = |name: &str| {
        marks
            .iter()
            .find(|m| m["name"] == name)
            .map(|m| m["unfinished"].clone())
            .unwrap_or(Value::Null)
    };
    json!({
        "payment_page_latency": f.payment_page.summary(),
        "approval_to_completed_latency": f.approval_to_completed.summary(),
        "approval_to_last_mail_latency": f.approval_to_last_mail.summary(),
        "e2e_latency": f.e2e.summary(),
        "stored": {
            "orders": f.orders,
            "not_terminal": f.not_terminal,
            "terminal_without_mail": f.terminal_without_mail,
            "completed_without_approval": f.completed_without_approval,
            "final_mail_types": f.final_mail_types,
        },
        "unfinished": f.unfinished(),
        "checkpoints": marks,
        "unfinished_after_load": at("after_load"),
        "unfinished_after_outage": at("after_outage"),
    })
}

/// The shoppers' own view (their clocks include their polling delays).
fn shoppers_json(r: &Recorder, timing: &Timing, load_seconds: f64) -> Value {
    json!({
        "shoppers": r.shoppers(),
        "accepted": r.accepted,
        "approved": r.approved,
        "accepted_per_sec": stats::rate(r.accepted, timing.issue_seconds),
        "issue_seconds": stats::round3(timing.issue_seconds),
        "load_seconds": stats::round3(load_seconds),
        "errors_total": r.errors_total(),
        "errors": r.errors,
        "accept_latency": r.accept.summary(),
        "shopper_payment_ready_latency": r.ready.summary(),
        "shopper_approve_latency": r.approve.summary(),
    })
}

fn load_json(plan: &Plan, scenario: ScenarioName) -> Value {
    match scenario {
        ScenarioName::Capacity => json!({
            "kind": "closed-loop, accept only",
            "concurrency": plan.concurrency,
            "duration_s": plan.capacity_duration.as_secs_f64(),
        }),
        _ => json!({
            "kind": "open-loop",
            "phases": plan.load(scenario).1.iter()
                .map(|(r, d)| json!({ "rate_per_sec": r, "seconds": d.as_secs_f64() }))
                .collect::<Vec<_>>(),
        }),
    }
}

pub async fn measure(ctx: &RunContext<'_>, stack: &Stack, spec: &RunSpec) -> Result<Value> {
    let (plan, scenario) = (ctx.plan, spec.scenario);
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()?;
    let urls = stack.service_urls();
    let pids = stack.pids();
    let stores = stack.stores();
    let recorder = Arc::new(Mutex::new(Recorder::new(false)));
    let warm = warm_up(stack, &stores).await?;
    if warm["ok"] != true {
        crate::log(format!("{}: warm-up incomplete: {warm}", spec.label()));
    }
    let metrics_before = scrape(&http, &urls).await;
    let cpu_before = cpu_snapshot(&pids);
    let loaded = drive_load(ctx, &http, stack, scenario, recorder.clone()).await?;
    let load_seconds = loaded.started.elapsed().as_secs_f64();
    let capacity = scenario == ScenarioName::Capacity;
    let marks = checkpoints(plan, loaded.timing.issue_seconds, loaded.outage_off);
    let mut out = json!({});
    if !capacity {
        // Bounded, but never before the last checkpoint: what is still open then must
        // be known to be open.
        let last = marks.iter().map(|c| c.offset).max().unwrap_or_default();
        let deadline =
            (Instant::now() + plan.drain).max(loaded.started + last + Duration::from_secs(1));
        let drained = drain(&stores, deadline).await;
        let since = loaded.started_utc.timestamp_micros();
        let mut orders = stored::read_all(&stores).await?;
        orders.retain(|o| o.created >= since);
        out = saga_json(&orders, &marks, &loaded);
        out["drained_after_s"] = json!(drained.map(stats::round3));
    }
    out["orders_by_status"] = json!(stored::order_status_counts(&stores).await);
    let metrics_after = scrape(&http, &urls).await;
    out["cpu_basis_seconds"] = json!(stats::round3(loaded.started.elapsed().as_secs_f64()));
    out["relay"] = relay(&metrics_before, &metrics_after, load_seconds);
    out["relay_lag_p99_ms"] = out["relay"]["lag_p99_ms"].clone();
    out["label"] = json!(spec.label());
    out["warm_up"] = warm;
    out["load"] = load_json(plan, scenario);
    out["timeline"] = json!(loaded.timeline);
    out["pids"] = json!(pids);
    let r = shop::lock(&recorder);
    let parts = [
        resources(&pids, &cpu_before),
        shoppers_json(&r, &loaded.timing, load_seconds),
    ];
    Ok(parts.into_iter().fold(out, crate::stack::merge))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Args;
    use clap::Parser;

    #[test]
    fn checkpoints_follow_the_load_and_the_outage() {
        let plan = Plan::new(&Args::parse_from(["experiment", "--mode", "full"]));
        let c = checkpoints(&plan, 20.0, None);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].offset, Duration::from_secs(30));
        let c = checkpoints(&plan, 40.0, Some(35.0));
        assert_eq!(c[1].name, "after_outage");
        assert_eq!(c[1].offset, Duration::from_secs(65));
    }
}
