//! `loadgen`: virtual shoppers against a running stack (`infra/stack up`).
//!
//! Each shopper: `POST /orders` (→ 202) → polls `GET /orders/{id}` until
//! `payment.redirect_url` → follows it with redirects on (the simulator's page sends the
//! browser to payment's approval callback: 200, `APPROVED`) → optionally polls until the
//! order is `COMPLETED`.
//!
//! * Open loop (`--rate R`): orders are issued on a fixed schedule whatever the answers;
//!   accept latency counts from the scheduled time (no coordinated omission).
//! * Closed loop (`--concurrency C`): C shoppers, each starting the next order when the
//!   previous one is done.
//!
//! Always bounded: `--duration S` and/or `--orders N`, per-request timeouts, per-step
//! deadlines. Only 127.0.0.1 is ever contacted.

use anyhow::{bail, Context, Result};
use benchmarks::loopback;
use benchmarks::machine::Machine;
use benchmarks::schedule::OpenLoop;
use benchmarks::stats::{self, Latency};
use clap::Parser;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::redirect::Policy;
use reqwest::{StatusCode, Url};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::time::Instant as TokioInstant;

#[derive(Debug, Parser)]
#[command(
    name = "loadgen",
    about = "Virtual shoppers against the saga shop: POST /orders → payment redirect → approval (→ COMPLETED). Open loop (--rate) or closed loop (--concurrency)."
)]
struct Args {
    /// The order service (127.0.0.1 only).
    #[arg(long, default_value = "http://127.0.0.1:8081")]
    order_url: String,
    /// Open loop: orders per second, issued on schedule regardless of responses.
    #[arg(long, conflicts_with = "concurrency")]
    rate: Option<f64>,
    /// Closed loop: shoppers working back to back.
    #[arg(long)]
    concurrency: Option<usize>,
    /// How long to issue orders, in seconds.
    #[arg(long)]
    duration: Option<f64>,
    /// How many orders in all (with --duration: whichever ends first).
    #[arg(long)]
    orders: Option<u64>,
    /// Also wait for each order to be COMPLETED (end-to-end latency).
    #[arg(long)]
    wait_complete: bool,
    /// Timeout of every HTTP request, in ms.
    #[arg(long, default_value_t = 10_000)]
    request_timeout_ms: u64,
    /// Interval between GET /orders/{id} polls, in ms.
    #[arg(long, default_value_t = 100)]
    poll_interval_ms: u64,
    /// Deadline of each polling step (redirect URL ready; COMPLETED), in seconds.
    #[arg(long, default_value_t = 60)]
    step_timeout_secs: u64,
    /// Open loop: most shoppers in progress at once; a scheduled order beyond it is
    /// counted as the error `in_flight_limit` instead of being issued.
    #[arg(long, default_value_t = 2_000)]
    max_in_flight: usize,
    /// JSON summary file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// No progress bar (it is also hidden when stderr is not a terminal).
    #[arg(long)]
    quiet: bool,
}

/// What one shopper saw.
#[derive(Debug, Default)]
struct Outcome {
    accept: Option<Duration>,
    ready: Option<Duration>,
    approve: Option<Duration>,
    end_to_end: Option<Duration>,
    end_to_end_server_ms: Option<i64>,
    error: Option<String>,
}

#[derive(Default)]
struct Recorder {
    started: u64,
    accepted: u64,
    payment_ready: u64,
    approved: u64,
    completed: u64,
    errors: BTreeMap<String, u64>,
    accept: Latency,
    ready: Latency,
    approve: Latency,
    end_to_end: Latency,
    end_to_end_server: Latency,
}

impl Recorder {
    fn record(&mut self, outcome: Outcome) {
        self.started += 1;
        if let Some(d) = outcome.accept {
            self.accepted += 1;
            self.accept.record(d);
        }
        if let Some(d) = outcome.ready {
            self.payment_ready += 1;
            self.ready.record(d);
        }
        if let Some(d) = outcome.approve {
            self.approved += 1;
            self.approve.record(d);
        }
        if let Some(d) = outcome.end_to_end {
            self.completed += 1;
            self.end_to_end.record(d);
        }
        if let Some(ms) = outcome.end_to_end_server_ms {
            self.end_to_end_server.record_millis(ms);
        }
        if let Some(kind) = outcome.error {
            *self.errors.entry(kind).or_default() += 1;
        }
    }

    fn error(&mut self, kind: &str) {
        *self.errors.entry(kind.to_owned()).or_default() += 1;
    }
}

struct Shop {
    order_url: Url,
    api: reqwest::Client,
    browser: reqwest::Client,
    poll: Duration,
    step_timeout: Duration,
    wait_complete: bool,
    run: String,
    seq: AtomicU64,
}

/// A short name for a request error.
fn kind(step: &str, error: &reqwest::Error) -> String {
    let what = if error.is_timeout() {
        "timeout"
    } else if error.is_connect() {
        "connect"
    } else if error.is_redirect() {
        "redirect"
    } else if error.is_decode() || error.is_body() {
        "body"
    } else {
        "request"
    };
    format!("{step}_{what}")
}

impl Shop {
    async fn get_order(&self, id: &str) -> Result<Value, String> {
        let url = self
            .order_url
            .join(&format!("orders/{id}"))
            .map_err(|_| "poll_bad_url".to_owned())?;
        let response = self
            .api
            .get(url)
            .send()
            .await
            .map_err(|e| kind("poll", &e))?;
        if response.status() != StatusCode::OK {
            return Err(format!("poll_http_{}", response.status().as_u16()));
        }
        response.json().await.map_err(|e| kind("poll", &e))
    }

    /// One shopper's visit. `due` is when it should have started (open loop: its slot
    /// in the schedule; closed loop: now).
    async fn visit(&self, due: TokioInstant) -> Outcome {
        let mut outcome = Outcome::default();
        if let Err(kind) = self.steps(due, &mut outcome).await {
            outcome.error = Some(kind);
        }
        outcome
    }

    async fn steps(&self, due: TokioInstant, outcome: &mut Outcome) -> Result<(), String> {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let body = json!({
            "customer_id": format!("loadgen-{}-{n}", self.run),
            "customer_email": format!("loadgen-{n}@example.com"),
            "items": [
                { "name": "Load test item", "quantity": 1, "unit_price": 12_000 },
                { "name": "Sticker", "quantity": 2, "unit_price": 1_500 },
            ],
        });
        let url = self
            .order_url
            .join("orders")
            .map_err(|_| "accept_bad_url".to_owned())?;
        let response = self
            .api
            .post(url)
            .json(&body)
            .send()
            .await
            .map_err(|e| kind("accept", &e))?;
        if response.status() != StatusCode::ACCEPTED {
            return Err(format!("accept_http_{}", response.status().as_u16()));
        }
        let order: Value = response.json().await.map_err(|e| kind("accept", &e))?;
        let accepted = TokioInstant::now();
        outcome.accept = Some(accepted - due);
        let id = order["id"]
            .as_str()
            .ok_or_else(|| "accept_no_id".to_owned())?
            .to_owned();

        // Wait for the payment to be ready.
        let deadline = accepted + self.step_timeout;
        let redirect = loop {
            let order = self.get_order(&id).await?;
            if let Some(url) = order["payment"]["redirect_url"].as_str() {
                break url.to_owned();
            }
            if order["status"] == "CANCELLED" {
                return Err("cancelled_before_payment_ready".to_owned());
            }
            if TokioInstant::now() + self.poll > deadline {
                return Err("payment_ready_timeout".to_owned());
            }
            tokio::time::sleep(self.poll).await;
        };
        let ready = TokioInstant::now();
        outcome.ready = Some(ready - accepted);

        // The shopper approves on the payment page.
        let redirect = Url::parse(&redirect).map_err(|_| "redirect_bad_url".to_owned())?;
        if !loopback::is_loopback_url(&redirect) {
            return Err("redirect_not_loopback".to_owned());
        }
        let approve_started = TokioInstant::now();
        let response = self
            .browser
            .get(redirect)
            .send()
            .await
            .map_err(|e| kind("approve", &e))?;
        let status = response.status();
        let final_host_ok = loopback::is_loopback_url(response.url());
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !final_host_ok {
            return Err("approve_left_loopback".to_owned());
        }
        if status != StatusCode::OK {
            return Err(format!("approve_http_{}", status.as_u16()));
        }
        if body["status"] != "APPROVED" {
            return Err(format!(
                "approve_status_{}",
                body["status"].as_str().unwrap_or("missing")
            ));
        }
        outcome.approve = Some(approve_started.elapsed());

        if !self.wait_complete {
            return Ok(());
        }
        let deadline = TokioInstant::now() + self.step_timeout;
        loop {
            let order = self.get_order(&id).await?;
            match order["status"].as_str() {
                Some("COMPLETED") => {
                    outcome.end_to_end = Some(accepted.elapsed());
                    let at = |field: &str| {
                        order[field]
                            .as_str()
                            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
                    };
                    if let (Some(created), Some(completed)) = (at("created_at"), at("completed_at"))
                    {
                        outcome.end_to_end_server_ms =
                            Some((completed - created).num_milliseconds());
                    }
                    return Ok(());
                }
                Some("CANCELLED") => return Err("cancelled_after_approval".to_owned()),
                _ => {}
            }
            if TokioInstant::now() + self.poll > deadline {
                return Err("complete_timeout".to_owned());
            }
            tokio::time::sleep(self.poll).await;
        }
    }
}

fn progress(args: &Args, total: Option<u64>) -> ProgressBar {
    let bar = match total {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::no_length(),
    };
    if args.quiet || !std::io::stderr().is_terminal() {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    } else {
        bar.set_style(
            ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {pos}/{len} shoppers done  {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
    }
    bar
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let order_url = loopback::check_url(&args.order_url)?;
    let order_url = if order_url.path().ends_with('/') {
        order_url
    } else {
        Url::parse(&format!("{order_url}/"))?
    };
    let duration = args.duration.map(Duration::from_secs_f64);
    if duration.is_none() && args.orders.is_none() {
        bail!("bounded runs only: give --duration SECONDS and/or --orders N");
    }
    if duration.is_some_and(|d| d > Duration::from_secs(3600)) {
        bail!("--duration is at most 3600 s");
    }
    if args.orders.is_some_and(|n| n == 0 || n > 1_000_000) {
        bail!("--orders must be 1..=1000000");
    }
    let mode = match (args.rate, args.concurrency) {
        (Some(rate), None) if rate > 0.0 && rate <= 10_000.0 => Mode::Open(rate),
        (None, Some(c)) if (1..=1000).contains(&c) => Mode::Closed(c),
        (None, None) => bail!("give --rate R (open loop) or --concurrency C (closed loop)"),
        _ => bail!("--rate must be in (0, 10000], --concurrency in 1..=1000"),
    };

    let request_timeout = Duration::from_millis(args.request_timeout_ms.max(1));
    let api = reqwest::Client::builder()
        .no_proxy()
        .timeout(request_timeout)
        .redirect(Policy::none())
        .pool_max_idle_per_host(256)
        .build()?;
    let browser = reqwest::Client::builder()
        .no_proxy()
        .timeout(request_timeout)
        .redirect(Policy::custom(|attempt| {
            if attempt.previous().len() >= 5 {
                attempt.error("more than 5 redirects")
            } else if loopback::is_loopback_url(attempt.url()) {
                attempt.follow()
            } else {
                attempt.stop()
            }
        }))
        .build()?;
    let shop = Arc::new(Shop {
        order_url: order_url.clone(),
        api,
        browser,
        poll: Duration::from_millis(args.poll_interval_ms.max(10)),
        step_timeout: Duration::from_secs(args.step_timeout_secs.max(1)),
        wait_complete: args.wait_complete,
        run: uuid::Uuid::now_v7().simple().to_string()[20..].to_owned(),
        seq: AtomicU64::new(0),
    });
    let recorder = Arc::new(Mutex::new(Recorder::default()));
    let machine = Machine::describe();
    // A shopper can take at most: request + two polling steps + approval, each bounded.
    let shopper_bound = request_timeout * 4 + shop.step_timeout * 2;

    let started = Instant::now();
    let issue_seconds;
    match mode {
        Mode::Open(rate) => {
            let schedule = match (duration, args.orders) {
                (Some(d), Some(n)) => {
                    let by_time = OpenLoop::for_duration(rate, d).context("bad rate")?;
                    OpenLoop::for_count(rate, by_time.count().min(n)).context("bad rate")?
                }
                (Some(d), None) => OpenLoop::for_duration(rate, d).context("bad rate")?,
                (None, Some(n)) => OpenLoop::for_count(rate, n).context("bad rate")?,
                (None, None) => bail!("unbounded"),
            };
            let bar = progress(&args, Some(schedule.count()));
            let in_flight = Arc::new(AtomicUsize::new(0));
            let mut tasks = tokio::task::JoinSet::new();
            let start = TokioInstant::now();
            for i in 0..schedule.count() {
                let due = start + schedule.offset(i);
                tokio::time::sleep_until(due).await;
                if in_flight.load(Ordering::Relaxed) >= args.max_in_flight {
                    lock(&recorder).error("in_flight_limit");
                    bar.inc(1);
                    continue;
                }
                in_flight.fetch_add(1, Ordering::Relaxed);
                let (shop, task_recorder, task_in_flight, task_bar) = (
                    shop.clone(),
                    recorder.clone(),
                    in_flight.clone(),
                    bar.clone(),
                );
                tasks.spawn(async move {
                    let outcome = shop.visit(due).await;
                    lock(&task_recorder).record(outcome);
                    task_in_flight.fetch_sub(1, Ordering::Relaxed);
                    task_bar.inc(1);
                });
                // Reap finished tasks so the set does not grow with the run.
                while tasks.try_join_next().is_some() {}
                if i % 20 == 0 {
                    bar.set_message(status_line(&recorder, started));
                }
            }
            issue_seconds = started.elapsed().as_secs_f64();
            drain(&mut tasks, shopper_bound, &bar, &recorder, started).await;
            bar.finish_and_clear();
        }
        Mode::Closed(concurrency) => {
            let bar = progress(&args, args.orders);
            let remaining = Arc::new(AtomicU64::new(args.orders.unwrap_or(u64::MAX)));
            let stop_at = duration.map(|d| TokioInstant::now() + d);
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..concurrency {
                let shop = shop.clone();
                let recorder = recorder.clone();
                let remaining = remaining.clone();
                let bar = bar.clone();
                tasks.spawn(async move {
                    loop {
                        if stop_at.is_some_and(|t| TokioInstant::now() >= t) {
                            break;
                        }
                        let claimed = remaining
                            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                                n.checked_sub(1)
                            })
                            .is_ok();
                        if !claimed {
                            break;
                        }
                        let outcome = shop.visit(TokioInstant::now()).await;
                        lock(&recorder).record(outcome);
                        bar.inc(1);
                    }
                });
            }
            let bound = duration.unwrap_or(Duration::from_secs(3600)) + shopper_bound;
            let ticker = {
                let bar = bar.clone();
                let recorder = recorder.clone();
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        bar.set_message(status_line(&recorder, started));
                    }
                })
            };
            drain(&mut tasks, bound, &bar, &recorder, started).await;
            ticker.abort();
            issue_seconds = started.elapsed().as_secs_f64();
            bar.finish_and_clear();
        }
    }
    let elapsed = started.elapsed().as_secs_f64();

    let r = lock(&recorder);
    let errors_total: u64 = r.errors.values().sum();
    let summary = json!({
        "benchmark": "loadgen",
        "mode": match mode { Mode::Open(_) => "open-loop", Mode::Closed(_) => "closed-loop" },
        "target_rate_per_sec": match mode { Mode::Open(rate) => Some(rate), Mode::Closed(_) => None },
        "concurrency": match mode { Mode::Open(_) => None, Mode::Closed(c) => Some(c) },
        "duration_s": args.duration,
        "orders_limit": args.orders,
        "wait_complete": args.wait_complete,
        "order_url": order_url.as_str(),
        "issue_seconds": stats::round3(issue_seconds),
        "elapsed_seconds": stats::round3(elapsed),
        "counts": {
            "shoppers": r.started + r.errors.get("in_flight_limit").copied().unwrap_or(0),
            "accepted": r.accepted,
            "payment_ready": r.payment_ready,
            "approved": r.approved,
            "completed": r.completed,
            "errors": errors_total,
        },
        "errors": r.errors,
        "rates": {
            "accepted_per_sec": stats::rate(r.accepted, issue_seconds),
            "approved_per_sec": stats::rate(r.approved, elapsed),
            "completed_per_sec": stats::rate(r.completed, elapsed),
            "basis": "accepted over the issuing phase; approved and completed over the whole run (issuing + drain)",
        },
        "latency_definitions": {
            "accept": "POST /orders → 202 received; open loop: from the scheduled start (coordinated omission corrected)",
            "payment_ready": "202 received → GET /orders/{id} first shows payment.redirect_url (poll granularity: poll_interval_ms)",
            "approve": "GET payment.redirect_url, redirects followed, → 200 APPROVED from payment's callback",
            "end_to_end": "202 received → GET /orders/{id} first shows COMPLETED (client view, poll granularity)",
            "end_to_end_server": "completed_at - created_at of the order (server clock)",
        },
        "poll_interval_ms": args.poll_interval_ms,
        "latency": {
            "accept": r.accept.summary(),
            "payment_ready": r.ready.summary(),
            "approve": r.approve.summary(),
            "end_to_end": r.end_to_end.summary(),
            "end_to_end_server": r.end_to_end_server.summary(),
        },
        "machine": machine,
    });
    drop(r);
    print_summary(&summary);
    if let Some(out) = &args.out {
        if let Some(parent) = out.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(out, serde_json::to_string_pretty(&summary)? + "\n")
            .with_context(|| format!("writing {}", out.display()))?;
        println!("summary: {}", out.display());
    }
    Ok(())
}

#[derive(Debug, Clone, Copy)]
enum Mode {
    Open(f64),
    Closed(usize),
}

fn lock(recorder: &Mutex<Recorder>) -> std::sync::MutexGuard<'_, Recorder> {
    recorder.lock().unwrap_or_else(|p| p.into_inner())
}

fn status_line(recorder: &Mutex<Recorder>, started: Instant) -> String {
    let r = lock(recorder);
    format!(
        "accepted {} ({:.1}/s)  approved {}  completed {}  errors {}",
        r.accepted,
        stats::rate(r.accepted, started.elapsed().as_secs_f64()),
        r.approved,
        r.completed,
        r.errors.values().sum::<u64>()
    )
}

/// Waits for the shoppers still in progress, at most `bound`; the rest are aborted and
/// counted as `aborted_at_deadline`.
async fn drain(
    tasks: &mut tokio::task::JoinSet<()>,
    bound: Duration,
    bar: &ProgressBar,
    recorder: &Mutex<Recorder>,
    started: Instant,
) {
    let deadline = TokioInstant::now() + bound;
    loop {
        match tokio::time::timeout_at(deadline, tasks.join_next()).await {
            Ok(Some(_)) => bar.set_message(status_line(recorder, started)),
            Ok(None) => return,
            Err(_) => {
                let left = tasks.len() as u64;
                tasks.abort_all();
                let mut r = lock(recorder);
                *r.errors
                    .entry("aborted_at_deadline".to_owned())
                    .or_default() += left;
                return;
            }
        }
    }
}

fn print_summary(s: &Value) {
    let ms = |v: &Value| match v.as_f64() {
        Some(x) => format!("{x:.1}"),
        None => "-".to_owned(),
    };
    println!(
        "loadgen {} ({}) against {}: {:.1} s",
        s["mode"].as_str().unwrap_or("?"),
        match (s["target_rate_per_sec"].as_f64(), s["concurrency"].as_u64()) {
            (Some(r), _) => format!("{r}/s"),
            (_, Some(c)) => format!("concurrency {c}"),
            _ => "?".to_owned(),
        },
        s["order_url"].as_str().unwrap_or("?"),
        s["elapsed_seconds"].as_f64().unwrap_or(0.0)
    );
    let c = &s["counts"];
    println!(
        "  shoppers {}  accepted {} ({} /s)  payment ready {}  approved {}  completed {}  errors {} {}",
        c["shoppers"], c["accepted"], s["rates"]["accepted_per_sec"], c["payment_ready"],
        c["approved"], c["completed"], c["errors"], s["errors"]
    );
    println!("  latency ms          p50      p95      p99      max   count");
    for name in [
        "accept",
        "payment_ready",
        "approve",
        "end_to_end",
        "end_to_end_server",
    ] {
        let h = &s["latency"][name];
        if h["count"].as_u64().unwrap_or(0) == 0 {
            continue;
        }
        println!(
            "  {name:<17} {:>8} {:>8} {:>8} {:>8} {:>7}",
            ms(&h["p50_ms"]),
            ms(&h["p95_ms"]),
            ms(&h["p99_ms"]),
            ms(&h["max_ms"]),
            h["count"]
        );
    }
}
