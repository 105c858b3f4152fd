//! `loadgen`: virtual shoppers against a running stack (`infra/stack up`). The shopper
//! logic lives in [`benchmarks::shop`] (shared with `experiment`).
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
use benchmarks::machine::Machine;
use benchmarks::schedule::OpenLoop;
use benchmarks::shop::{self, Load, Recorder, Shop, ShopConfig, Timing};
use benchmarks::stats;
use clap::Parser;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
    /// Pause before asking again when order-service refuses a wait (503 without
    /// Retry-After), in ms; shoppers long-poll and never poll otherwise.
    #[arg(long, default_value_t = 100)]
    poll_interval_ms: u64,
    /// Deadline of each waiting step (redirect URL ready; COMPLETED), in seconds.
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

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let mut config = ShopConfig::new(&args.order_url)?;
    let duration = args.duration.map(Duration::from_secs_f64);
    let mode = check_bounds(&args, duration)?;
    configure(&mut config, &args);
    let order_url = config.order_url.clone();
    let load = load_of(mode, duration, args.orders)?;
    let shop = Arc::new(Shop::new(config)?);
    let recorder = Arc::new(Mutex::new(Recorder::new(false)));
    // Before the run: its load average is the other work on the machine, not ours.
    let machine = Machine::describe();
    let bar = shop::progress_bar(args.quiet, load.total());
    let timing = shop::drive(shop, load, recorder.clone(), bar, |_| {}).await;
    let summary = summary_of(
        &args,
        mode,
        order_url.as_str(),
        timing,
        &shop::lock(&recorder),
        &machine,
    );
    print_summary(&summary);
    if let Some(out) = &args.out {
        write_summary(out, &summary)?;
    }
    Ok(())
}

/// Refuses unbounded or out-of-range runs; the mode the flags ask for.
fn check_bounds(args: &Args, duration: Option<Duration>) -> Result<Mode> {
    if duration.is_none() && args.orders.is_none() {
        bail!("bounded runs only: give --duration SECONDS and/or --orders N");
    }
    if duration.is_some_and(|d| d > Duration::from_secs(3600)) {
        bail!("--duration is at most 3600 s");
    }
    if args.orders.is_some_and(|n| n == 0 || n > 1_000_000) {
        bail!("--orders must be 1..=1000000");
    }
    Ok(match (args.rate, args.concurrency) {
        (Some(rate), None) if rate > 0.0 && rate <= 10_000.0 => Mode::Open(rate),
        (None, Some(c)) if (1..=1000).contains(&c) => Mode::Closed(c),
        (None, None) => bail!("give --rate R (open loop) or --concurrency C (closed loop)"),
        _ => bail!("--rate must be in (0, 10000], --concurrency in 1..=1000"),
    })
}

/// The shoppers' settings from the flags. The floors: a zero timeout or deadline would
/// fail every request, a zero pause would spin on a refused wait.
fn configure(config: &mut ShopConfig, args: &Args) {
    config.request_timeout = Duration::from_millis(args.request_timeout_ms.max(1));
    config.poll = Duration::from_millis(args.poll_interval_ms.max(10));
    config.poll_max = config.poll;
    config.step_timeout = Duration::from_secs(args.step_timeout_secs.max(1));
    config.wait_complete = args.wait_complete;
    config.max_in_flight = args.max_in_flight;
}

/// The load to drive: the open loop's schedule ends at `duration` or after `orders`,
/// whichever comes first.
fn load_of(mode: Mode, duration: Option<Duration>, orders: Option<u64>) -> Result<Load> {
    Ok(match mode {
        Mode::Open(rate) => {
            let schedule = match (duration, orders) {
                (Some(d), Some(n)) => {
                    let by_time = OpenLoop::for_duration(rate, d).context("bad rate")?;
                    OpenLoop::for_count(rate, by_time.count().min(n)).context("bad rate")?
                }
                (Some(d), None) => OpenLoop::for_duration(rate, d).context("bad rate")?,
                (None, Some(n)) => OpenLoop::for_count(rate, n).context("bad rate")?,
                (None, None) => bail!("unbounded"),
            };
            Load::Open {
                offsets: (0..schedule.count()).map(|i| schedule.offset(i)).collect(),
            }
        }
        Mode::Closed(concurrency) => Load::Closed {
            concurrency,
            duration,
            orders,
        },
    })
}

/// The JSON summary of the run (what `--out` writes).
fn summary_of(
    args: &Args,
    mode: Mode,
    order_url: &str,
    timing: Timing,
    r: &Recorder,
    machine: &Machine,
) -> Value {
    let (issue_seconds, elapsed) = (timing.issue_seconds, timing.elapsed_seconds);
    json!({
        "benchmark": "loadgen",
        "mode": match mode { Mode::Open(_) => "open-loop", Mode::Closed(_) => "closed-loop" },
        "target_rate_per_sec": match mode { Mode::Open(rate) => Some(rate), Mode::Closed(_) => None },
        "concurrency": match mode { Mode::Open(_) => None, Mode::Closed(c) => Some(c) },
        "duration_s": args.duration,
        "orders_limit": args.orders,
        "wait_complete": args.wait_complete,
        "order_url": order_url,
        "issue_seconds": stats::round3(issue_seconds),
        "elapsed_seconds": stats::round3(elapsed),
        "counts": {
            "shoppers": r.shoppers(),
            "accepted": r.accepted,
            "payment_ready": r.payment_ready,
            "approved": r.approved,
            "completed": r.completed,
            "errors": r.errors_total(),
        },
        "errors": r.errors,
        "rates": {
            "accepted_per_sec": stats::rate(r.accepted, issue_seconds),
            "approved_per_sec": stats::rate(r.approved, elapsed),
            "completed_per_sec": stats::rate(r.completed, elapsed),
            "basis": "accepted over the issuing phase; approved and completed over the whole run (issuing + drain)",
        },
        "latency_definitions": shop::latency_definitions(),
        "poll_interval_ms": args.poll_interval_ms,
        "latency": r.latency_json(),
        "machine": machine,
    })
}

fn write_summary(out: &Path, summary: &Value) -> Result<()> {
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(out, serde_json::to_string_pretty(summary)? + "\n")
        .with_context(|| format!("writing {}", out.display()))?;
    println!("summary: {}", out.display());
    Ok(())
}

#[derive(Debug, Clone, Copy)]
enum Mode {
    Open(f64),
    Closed(usize),
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
