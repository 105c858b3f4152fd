//! `experiment`: the seed's scenario matrix. For every case × scenario it brings up a
//! private stack (`infra/stack up --case N` with its own state folder, free ports, fresh
//! PostgreSQL databases, an in-memory tansu, its own nx-27017 and SMTP sink), applies the
//! scenario, drives shoppers ([`benchmarks::shop`]), drains, measures and tears the stack
//! down. Ceilings (pgbench, tansu's produce rate, smtp-source → smtp-sink) are measured
//! in the same run. Writes `results.json`, `summary.json`, `report.md` and SVG figures.
//!
//! Run it through `infra/stack experiment` (which builds the binaries first); see
//! `benchmarks/README.md` for every figure.

// The result documents are large `json!`s.
#![recursion_limit = "256"]

use anyhow::{bail, Context, Result};
use benchmarks::machine::Machine;
use benchmarks::plots::{self, Bars, Cdf};
use benchmarks::schedule::Phases;
use benchmarks::shop::{self, Load, Recorder, Shop, ShopConfig};
use benchmarks::stats::{self, Latency};
use benchmarks::{ceilings, procfs, procs, prom};
use chrono::{DateTime, Utc};
use clap::{Parser, ValueEnum};
use futures::StreamExt;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");
/// The bearer token of the mail history API in the experiment's stacks.
const API_TOKEN: &str = "experiment-token";
/// Shoppers poll every `--poll-ms` at first, then back off (×1.5) to this.
const POLL_MAX: Duration = Duration::from_secs(1);
/// Mail types that end an order's saga (the last mail a shopper gets).
const FINAL_MAILS: [&str; 3] = ["order_completed", "order_cancelled", "order_refunded"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Smoke test for CI: a few seconds per scenario, debug builds.
    Short,
    /// The report: 100 orders/s open loop, 30 s per scenario, release builds.
    Full,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
enum ScenarioName {
    /// No fault.
    Baseline,
    /// Every Kakao Pay API call takes 200 ms longer.
    #[value(name = "gateway-200ms")]
    Gateway200ms,
    /// Every Kakao Pay API call takes 1 s longer.
    #[value(name = "gateway-1s")]
    Gateway1s,
    /// Kakao Pay answers 503 to everything for 30 s (short mode: 4 s) during the load.
    #[value(name = "gateway-outage-30s")]
    GatewayOutage30s,
    /// The SMTP server takes 500 ms to accept each mail.
    #[value(name = "smtp-slow-500ms")]
    SmtpSlow500ms,
    /// The order rate ×10 for 10 s (short mode: 2 s) in the middle of the run.
    #[value(name = "burst-10x")]
    Burst10x,
    /// Closed loop of accept-only shoppers at the pgbench concurrency: how many orders
    /// per second the order service can accept.
    Capacity,
}

impl ScenarioName {
    const ALL: [ScenarioName; 7] = [
        ScenarioName::Baseline,
        ScenarioName::Gateway200ms,
        ScenarioName::Gateway1s,
        ScenarioName::GatewayOutage30s,
        ScenarioName::SmtpSlow500ms,
        ScenarioName::Burst10x,
        ScenarioName::Capacity,
    ];

    fn as_str(self) -> &'static str {
        match self {
            ScenarioName::Baseline => "baseline",
            ScenarioName::Gateway200ms => "gateway-200ms",
            ScenarioName::Gateway1s => "gateway-1s",
            ScenarioName::GatewayOutage30s => "gateway-outage-30s",
            ScenarioName::SmtpSlow500ms => "smtp-slow-500ms",
            ScenarioName::Burst10x => "burst-10x",
            ScenarioName::Capacity => "capacity",
        }
    }

    fn title(self) -> &'static str {
        match self {
            ScenarioName::Baseline => "baseline",
            ScenarioName::Gateway200ms => "gateway +200 ms",
            ScenarioName::Gateway1s => "gateway +1 s",
            ScenarioName::GatewayOutage30s => "gateway outage",
            ScenarioName::SmtpSlow500ms => "SMTP 500 ms/mail",
            ScenarioName::Burst10x => "burst ×10",
            ScenarioName::Capacity => "capacity",
        }
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "experiment",
    about = "The four-case scenario matrix: per case × scenario a private stack, a load, a drain and the measures; ceilings; results.json, summary.json, report.md and figures."
)]
struct Args {
    #[arg(long, value_enum, default_value_t = Mode::Short)]
    mode: Mode,
    /// Cases to run (1..4), comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3,4")]
    cases: Vec<u8>,
    /// Scenarios, comma separated (default: short → baseline,gateway-1s; full → all).
    #[arg(long, value_enum, value_delimiter = ',')]
    scenarios: Vec<ScenarioName>,
    /// Open-loop rate, orders/s (default: short 20, full 100).
    #[arg(long)]
    rate: Option<f64>,
    /// Seconds of load per scenario (default: short 6, full 30; the outage scenario runs
    /// at least outage + 10 s).
    #[arg(long)]
    duration: Option<f64>,
    /// Most seconds to wait after the load for every order to end and be mailed
    /// (default: short 15, full 30).
    #[arg(long)]
    drain_secs: Option<u64>,
    /// Interval of the shoppers' GET /orders/{id} polls, ms (default: short 100, full 50).
    #[arg(long)]
    poll_ms: Option<u64>,
    /// Concurrency of the capacity scenario and of pgbench (the order service's database
    /// pool, ORDER_DB_POOL_SIZE, is 10).
    #[arg(long, default_value_t = 10)]
    concurrency: u32,
    /// At most this many accepted orders are read back for end-to-end latency (evenly
    /// spaced over the run when more were accepted).
    #[arg(long, default_value_t = 5_000)]
    e2e_sample: usize,
    /// Build profile of the services `infra/stack up` starts (default: short → debug,
    /// full → release). The binaries must be built (`infra/stack experiment` does it).
    #[arg(long, env = "STACK_PROFILE")]
    profile: Option<String>,
    /// Result folder (default: full → benchmarks/results/<UTC date-time>, also copied to
    /// benchmarks/results/latest; short → target/experiment/<UTC date-time>-short).
    #[arg(long)]
    out_dir: Option<PathBuf>,
    /// Skip the ceilings (the targets that need them are then not evaluated).
    #[arg(long)]
    no_ceilings: bool,
    /// PostgreSQL server for the stacks' databases and pgbench.
    #[arg(
        long,
        env = "POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432"
    )]
    postgres_url: String,
    /// Seconds `infra/stack up` may take.
    #[arg(long, default_value_t = 240)]
    up_timeout_secs: u64,
    /// Hide the progress bars.
    #[arg(long)]
    quiet: bool,
}

/// Everything a run needs to know about its mode.
#[derive(Debug, Clone, Copy)]
struct Plan {
    rate: f64,
    duration: Duration,
    drain: Duration,
    poll: Duration,
    step_timeout: Duration,
    outage_after: Duration,
    outage_length: Duration,
    burst_after: Duration,
    burst_length: Duration,
    capacity_duration: Duration,
    concurrency: u32,
    e2e_sample: usize,
    pgbench_secs: u32,
    kafka_secs: f64,
    smtp_mails: u64,
}

impl Plan {
    fn new(args: &Args) -> Self {
        let short = args.mode == Mode::Short;
        let secs = Duration::from_secs_f64;
        let duration = secs(args.duration.unwrap_or(if short { 6.0 } else { 30.0 }));
        Self {
            rate: args.rate.unwrap_or(if short { 20.0 } else { 100.0 }),
            duration,
            drain: Duration::from_secs(args.drain_secs.unwrap_or(if short { 15 } else { 30 })),
            poll: Duration::from_millis(args.poll_ms.unwrap_or(if short { 100 } else { 50 })),
            step_timeout: Duration::from_secs(if short { 15 } else { 30 }),
            outage_after: secs(if short { 1.0 } else { 5.0 }),
            outage_length: secs(if short { 4.0 } else { 30.0 }),
            burst_after: duration.mul_f64(1.0 / 3.0),
            burst_length: secs(if short { 2.0 } else { 10.0 }).min(duration.mul_f64(1.0 / 3.0)),
            capacity_duration: secs(if short { 4.0 } else { 20.0 }),
            concurrency: args.concurrency.clamp(1, 200),
            e2e_sample: args.e2e_sample.max(1),
            pgbench_secs: if short { 3 } else { 15 },
            kafka_secs: if short { 3.0 } else { 10.0 },
            smtp_mails: if short { 2_000 } else { 20_000 },
        }
    }

    /// The load and the fault timeline of a scenario.
    fn load(&self, scenario: ScenarioName) -> (Load, Vec<(f64, Duration)>) {
        let open = |phases: Vec<(f64, Duration)>| {
            let offsets = Phases::new(phases.clone())
                .map(|p| p.offsets())
                .unwrap_or_default();
            (Load::Open { offsets }, phases)
        };
        match scenario {
            ScenarioName::GatewayOutage30s => {
                let length = self
                    .duration
                    .max(self.outage_after + self.outage_length + Duration::from_secs(5));
                open(vec![(self.rate, length)])
            }
            ScenarioName::Burst10x => {
                let rest = self
                    .duration
                    .saturating_sub(self.burst_after + self.burst_length);
                open(vec![
                    (self.rate, self.burst_after),
                    (self.rate * 10.0, self.burst_length),
                    (self.rate, rest),
                ])
            }
            ScenarioName::Capacity => (
                Load::Closed {
                    concurrency: self.concurrency as usize,
                    duration: Some(self.capacity_duration),
                    orders: None,
                },
                Vec::new(),
            ),
            _ => open(vec![(self.rate, self.duration)]),
        }
    }
}

fn workspace_dir() -> PathBuf {
    Path::new(MANIFEST_DIR)
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn log(message: impl AsRef<str>) {
    eprintln!(
        "[experiment {}] {}",
        Utc::now().format("%H:%M:%S"),
        message.as_ref()
    );
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    benchmarks::loopback::check_host_ports(
        args.postgres_url
            .rsplit('@')
            .next()
            .unwrap_or_default()
            .trim_end_matches('/'),
    )
    .context("POSTGRES_URL must be postgres://user@127.0.0.1:PORT")?;
    let mut cases = args.cases.clone();
    cases.sort_unstable();
    cases.dedup();
    if cases.is_empty() || cases.iter().any(|c| !(1..=4).contains(c)) {
        bail!("--cases takes numbers 1..4");
    }
    let scenarios: Vec<ScenarioName> = if args.scenarios.is_empty() {
        match args.mode {
            Mode::Short => vec![ScenarioName::Baseline, ScenarioName::Gateway1s],
            Mode::Full => ScenarioName::ALL.to_vec(),
        }
    } else {
        let mut s = args.scenarios.clone();
        s.sort_unstable();
        s.dedup();
        s
    };
    let plan = Plan::new(&args);
    if !(plan.rate > 0.0 && plan.rate <= 2_000.0) {
        bail!("--rate must be in (0, 2000]");
    }
    if plan.duration > Duration::from_secs(600) || plan.duration < Duration::from_secs(1) {
        bail!("--duration must be 1..=600 s");
    }
    let profile = args.profile.clone().unwrap_or_else(|| {
        match args.mode {
            Mode::Short => "debug",
            Mode::Full => "release",
        }
        .to_owned()
    });
    if profile != "debug" && profile != "release" {
        bail!("--profile must be debug or release");
    }
    let workspace = workspace_dir();
    let started_at = Utc::now();
    let stamp = started_at.format("%Y-%m-%dT%H%MZ").to_string();
    let out_dir = args.out_dir.clone().unwrap_or_else(|| match args.mode {
        Mode::Full => workspace.join("benchmarks/results").join(&stamp),
        Mode::Short => workspace
            .join("target/experiment")
            .join(format!("{stamp}-short")),
    });
    std::fs::create_dir_all(out_dir.join("figures"))?;
    std::fs::create_dir_all(out_dir.join("logs"))?;
    let scratch = workspace.join("target/experiment/state");
    std::fs::create_dir_all(&scratch)?;
    let machine = Machine::describe();
    let wall = Instant::now();
    log(format!(
        "{} mode, {} build, cases {:?}, scenarios {:?}, {} orders/s for {:?} per scenario; results in {}",
        match args.mode {
            Mode::Short => "short",
            Mode::Full => "full",
        },
        profile,
        cases,
        scenarios.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        plan.rate,
        plan.duration,
        out_dir.display()
    ));

    let ceilings = if args.no_ceilings {
        json!({ "skipped": true })
    } else {
        measure_ceilings(&args, &plan, &workspace, &scratch).await
    };

    let mut runs = Vec::new();
    for &case in &cases {
        for &scenario in &scenarios {
            let ctx = RunContext {
                args: &args,
                plan: &plan,
                profile: &profile,
                workspace: &workspace,
                scratch: &scratch,
                out_dir: &out_dir,
            };
            let t0 = Instant::now();
            log(format!("case {case} × {}: starting", scenario.as_str()));
            let row = run_one(&ctx, case, scenario).await;
            log(format!(
                "case {case} × {}: {} in {:.0} s — accepted/s {}, accept p99 {} ms, e2e p99 {} ms, unfinished {}",
                scenario.as_str(),
                row["status"].as_str().unwrap_or("?"),
                t0.elapsed().as_secs_f64(),
                row["accepted_per_sec"],
                row["accept_latency"]["p99_ms"],
                row["e2e_latency"]["p99_ms"],
                row["unfinished"],
            ));
            runs.push(row);
        }
    }

    let targets = evaluate_targets(&runs, &ceilings, &plan);
    let finished_at = Utc::now();
    let results = json!({
        "experiment": "the seed's four cases × scenarios (issue #5)",
        "mode": match args.mode { Mode::Short => "short", Mode::Full => "full" },
        "profile": profile,
        "started_at": started_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "finished_at": finished_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "wall_seconds": stats::round3(wall.elapsed().as_secs_f64()),
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "machine": machine,
        "cases": cases,
        "scenarios": scenarios.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        "settings": {
            "rate_per_sec": plan.rate,
            "duration_s": plan.duration.as_secs_f64(),
            "drain_max_s": plan.drain.as_secs(),
            "poll_interval_ms": plan.poll.as_millis() as u64,
            "poll_max_ms": POLL_MAX.as_millis() as u64,
            "step_timeout_s": plan.step_timeout.as_secs(),
            "outage": { "after_s": plan.outage_after.as_secs_f64(), "length_s": plan.outage_length.as_secs_f64() },
            "burst": { "factor": 10, "after_s": plan.burst_after.as_secs_f64(), "length_s": plan.burst_length.as_secs_f64() },
            "capacity": { "concurrency": plan.concurrency, "duration_s": plan.capacity_duration.as_secs_f64() },
            "e2e_sample_max": plan.e2e_sample,
            "services": "infra/stack up --case N defaults (ORDER_HTTP_WORKERS 2, pools 10, KAFKA_PARTITIONS 3), RUST_LOG=warn, tansu in memory, a private nx-27017 and aiosmtpd sink per run",
        },
        "definitions": definitions(),
        "ceilings": ceilings,
        "runs": runs,
        "targets": targets,
    });
    let summary = summary_json(&results);
    std::fs::write(
        out_dir.join("results.json"),
        serde_json::to_string_pretty(&results)? + "\n",
    )?;
    std::fs::write(
        out_dir.join("summary.json"),
        serde_json::to_string_pretty(&summary)? + "\n",
    )?;
    let figures = draw_figures(&results, &out_dir.join("figures"));
    let report = report_md(&results, &figures);
    std::fs::write(out_dir.join("report.md"), report)?;
    if args.mode == Mode::Full && args.out_dir.is_none() {
        let latest = workspace.join("benchmarks/results/latest");
        let _ = std::fs::remove_dir_all(&latest);
        copy_dir(&out_dir, &latest)?;
        log(format!("copied to {}", latest.display()));
    }
    log(format!(
        "done in {:.0} s: {}/report.md",
        wall.elapsed().as_secs_f64(),
        out_dir.display()
    ));
    for t in results["targets"].as_array().into_iter().flatten() {
        log(format!(
            "target {}: {}",
            t["name"].as_str().unwrap_or("?"),
            t["verdict"].as_str().unwrap_or("?")
        ));
    }
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Ceilings

async fn measure_ceilings(args: &Args, plan: &Plan, workspace: &Path, scratch: &Path) -> Value {
    let dir = scratch.join(format!("ceilings-{}", short_id()));
    let _ = std::fs::create_dir_all(&dir);
    log(format!(
        "ceiling: pgbench, place-order transaction, {} clients, {} s",
        plan.concurrency, plan.pgbench_secs
    ));
    let db = format!("exp_{}_pgbench", short_id());
    let pgbench = ceilings::pgbench(
        &args.postgres_url,
        &db,
        workspace,
        plan.concurrency,
        plan.pgbench_secs,
        &dir,
    )
    .unwrap_or_else(|e| json!({ "error": format!("{e:#}") }));
    log(format!("ceiling: pgbench {} tps", pgbench["tps"]));

    log(format!(
        "ceiling: tansu produce rate, {} s",
        plan.kafka_secs
    ));
    let kafka = async {
        let port = procs::free_ports(1)?[0];
        let mut tansu = ceilings::start_tansu(port, &dir)?;
        let result =
            ceilings::kafka_produce(&format!("127.0.0.1:{port}"), plan.kafka_secs, 1_000).await;
        tansu.stop(Duration::from_secs(10));
        result
    }
    .await
    .unwrap_or_else(|e| json!({ "error": format!("{e:#}") }));
    log(format!(
        "ceiling: tansu {} msgs/s",
        kafka["messages_per_sec"]
    ));

    log(format!(
        "ceiling: smtp-source → smtp-sink, {} mails",
        plan.smtp_mails
    ));
    let smtp = ceilings::smtp(plan.smtp_mails, 16, 4096, &dir)
        .unwrap_or_else(|e| json!({ "error": format!("{e:#}") }));
    log(format!("ceiling: SMTP {} mails/s", smtp["mails_per_sec"]));
    let _ = std::fs::remove_dir_all(&dir);
    json!({ "pgbench": pgbench, "kafka_produce": kafka, "smtp": smtp })
}

fn short_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()[20..].to_owned()
}

// ---------------------------------------------------------------------------------------
// One case × scenario

struct RunContext<'a> {
    args: &'a Args,
    plan: &'a Plan,
    profile: &'a str,
    workspace: &'a Path,
    scratch: &'a Path,
    out_dir: &'a Path,
}

/// A private stack: its state folder, ports and databases, and the environment that
/// makes `infra/stack` use them.
struct Stack {
    id: String,
    state: PathBuf,
    ports: BTreeMap<&'static str, u16>,
    postgres_url: String,
    env: Vec<(String, String)>,
    workspace: PathBuf,
}

impl Stack {
    fn new(ctx: &RunContext<'_>, case: u8, scenario: ScenarioName) -> Result<Self> {
        let id = short_id();
        let state = ctx
            .scratch
            .join(format!("c{case}-{}-{id}", scenario.as_str()));
        std::fs::create_dir_all(&state)?;
        let names = [
            "KAFKA_PORT",
            "MONGODB_PORT",
            "SMTP_PORT",
            "KAKAOPAY_SIM_PORT",
            "PAYMENT_PORT",
            "ORDER_PORT",
            "NOTIFIER_PORT",
            "PROMETHEUS_PORT",
        ];
        let picked = procs::free_ports(names.len())?;
        let ports: BTreeMap<&'static str, u16> = names.into_iter().zip(picked).collect();
        let pg = ctx.args.postgres_url.trim_end_matches('/').to_owned();
        let mut env: Vec<(String, String)> = ports
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.to_string()))
            .collect();
        let p = |k: &str| ports[k];
        for (k, v) in [
            ("STACK_STATE_DIR", state.display().to_string()),
            ("STACK_PROFILE", ctx.profile.to_owned()),
            ("STACK_SKIP_BUILD", "1".to_owned()),
            ("STACK_REUSE_FOREIGN", "0".to_owned()),
            ("SAGA_CASE", case.to_string()),
            ("POSTGRES_URL", pg.clone()),
            ("ORDER_DATABASE_URL", format!("{pg}/exp_{id}_orders")),
            ("PAYMENT_DATABASE_URL", format!("{pg}/exp_{id}_payments")),
            // Cases 1-2: `infra/stack up --case N` starts `mailer-blocking` (pid file
            // `mailer-blocking.pid`) in the notifier's place; it reads MAILER_*. Every
            // derived address is set here: `infra/stack experiment` exports the shared
            // stack's defaults (8083, …/mail, …), which this process passes on.
            ("MAILER_DATABASE_URL", format!("{pg}/exp_{id}_mail")),
            ("MAILER_HOST", "127.0.0.1".to_owned()),
            ("MAILER_PORT", p("NOTIFIER_PORT").to_string()),
            // Case 1: where each service POSTs its events.
            (
                "ORDER_PAYMENT_URL",
                format!("http://127.0.0.1:{}", p("PAYMENT_PORT")),
            ),
            (
                "ORDER_MAILER_URL",
                format!("http://127.0.0.1:{}", p("NOTIFIER_PORT")),
            ),
            (
                "PAYMENT_ORDER_URL",
                format!("http://127.0.0.1:{}", p("ORDER_PORT")),
            ),
            (
                "PAYMENT_MAILER_URL",
                format!("http://127.0.0.1:{}", p("NOTIFIER_PORT")),
            ),
            ("KAFKA_BROKERS", format!("127.0.0.1:{}", p("KAFKA_PORT"))),
            ("KAFKA_TOPIC_PREFIX", String::new()),
            (
                "MONGODB_URI",
                format!("mongodb://127.0.0.1:{}", p("MONGODB_PORT")),
            ),
            ("NOTIFIER_MONGODB_DATABASE", "notifier".to_owned()),
            ("SMTP_HOST", "127.0.0.1".to_owned()),
            ("SMTP_MAILDIR", state.join("mail").display().to_string()),
            (
                "PAYMENT_PUBLIC_URL",
                format!("http://127.0.0.1:{}", p("PAYMENT_PORT")),
            ),
            (
                "KAKAOPAY_BASE_URL",
                format!("http://127.0.0.1:{}", p("KAKAOPAY_SIM_PORT")),
            ),
            ("ORDER_HOST", "127.0.0.1".to_owned()),
            ("PAYMENT_HOST", "127.0.0.1".to_owned()),
            ("NOTIFIER_HOST", "127.0.0.1".to_owned()),
            ("KAKAOPAY_SIM_HOST", "127.0.0.1".to_owned()),
            ("KAKAOPAY_SIM_MODE", "auto".to_owned()),
            ("NOTIFIER_API_TOKEN", API_TOKEN.to_owned()),
            ("TANSU_STORAGE_ENGINE", "memory://tansu/".to_owned()),
            ("RUST_LOG", "warn".to_owned()),
            ("SMTP_SINK_LOG_LEVEL", "WARNING".to_owned()),
            ("STACK_READY_TIMEOUT", "120".to_owned()),
        ] {
            env.push((k.to_owned(), v));
        }
        if scenario == ScenarioName::SmtpSlow500ms {
            env.push(("SMTP_SINK_DELAY_MS".to_owned(), "500".to_owned()));
        }
        Ok(Self {
            id,
            state,
            ports,
            postgres_url: pg,
            env,
            workspace: ctx.workspace.to_path_buf(),
        })
    }

    fn url(&self, port: &str) -> String {
        format!("http://127.0.0.1:{}", self.ports[port])
    }

    fn stack_command(&self, verb: &[&str]) -> Command {
        let mut cmd = Command::new(self.workspace.join("infra/stack"));
        cmd.args(verb).current_dir(&self.workspace);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// `infra/stack VERB…`, bounded; its output goes to `log`.
    fn stack(&self, verb: &[&str], timeout: Duration, log: &Path) -> Result<()> {
        let done = procs::run_bounded(self.stack_command(verb), timeout, &self.state)?;
        let text = format!(
            "$ infra/stack {}\n{}{}\n(exit: {}, {:.1} s)\n",
            verb.join(" "),
            done.stdout,
            done.stderr,
            done.status,
            done.elapsed.as_secs_f64()
        );
        let mut old = std::fs::read_to_string(log).unwrap_or_default();
        old.push_str(&text);
        std::fs::write(log, old)?;
        if !done.status.success() {
            let tail: Vec<&str> = done.stderr.lines().rev().take(12).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "infra/stack {} failed ({}):\n{}",
                verb.join(" "),
                done.status,
                tail.join("\n")
            );
        }
        Ok(())
    }

    /// Process name → PID, from `<state>/pids/*.pid` (alive ones only).
    fn pids(&self) -> BTreeMap<String, u32> {
        let mut out = BTreeMap::new();
        if let Ok(entries) = std::fs::read_dir(self.state.join("pids")) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(name) = name.strip_suffix(".pid") {
                    if let Some(pid) = procfs::stack_pid(&self.state, name) {
                        out.insert(name.to_owned(), pid);
                    }
                }
            }
        }
        out
    }

    fn order_db(&self) -> String {
        format!("{}/exp_{}_orders", self.postgres_url, self.id)
    }

    fn drop_databases(&self) {
        let admin = format!("{}/postgres", self.postgres_url);
        for db in ["orders", "payments", "mail"] {
            let _ = ceilings::psql(
                &admin,
                &format!(
                    "DROP DATABASE IF EXISTS \"exp_{}_{db}\" WITH (FORCE)",
                    self.id
                ),
                &self.state,
            );
        }
    }
}

async fn run_one(ctx: &RunContext<'_>, case: u8, scenario: ScenarioName) -> Value {
    let label = format!("case{case}-{}", scenario.as_str());
    let logs = ctx.out_dir.join("logs").join(&label);
    let _ = std::fs::create_dir_all(&logs);
    let base = json!({ "case": case, "scenario": scenario.as_str() });
    let stack_log = logs.join("infra-stack.log");
    let up_timeout = Duration::from_secs(ctx.args.up_timeout_secs);
    // A stack that does not come up is torn down and tried once more on fresh ports (a
    // server can lose a race for its port); the second failure is the row.
    let mut failures: Vec<String> = Vec::new();
    for attempt in 1..=2 {
        let stack = match Stack::new(ctx, case, scenario) {
            Ok(s) => s,
            Err(e) => {
                return merge(
                    base,
                    json!({ "status": "error", "error": format!("{e:#}") }),
                )
            }
        };
        let up_started = Instant::now();
        let up = stack.stack(&["up", "--case", &case.to_string()], up_timeout, &stack_log);
        let up_seconds = up_started.elapsed().as_secs_f64();
        let row = match up {
            Err(e) => {
                log(format!(
                    "case {case} × {}: did not start (attempt {attempt}): {}",
                    scenario.as_str(),
                    one_line(&format!("{e:#}"), 300)
                ));
                failures.push(format!("{e:#}"));
                None
            }
            Ok(()) => Some(match measure(ctx, &stack, case, scenario).await {
                Ok(mut row) => {
                    row["status"] = json!("ok");
                    row
                }
                Err(e) => json!({ "status": "error", "error": format!("{e:#}") }),
            }),
        };
        if let Err(e) = stack.stack(&["down"], Duration::from_secs(120), &stack_log) {
            log(format!("infra/stack down: {e:#}"));
        }
        // Keep the processes' logs; drop the data.
        if let Ok(entries) = std::fs::read_dir(stack.state.join("logs")) {
            for e in entries.flatten() {
                let _ = std::fs::copy(e.path(), logs.join(e.file_name()));
            }
        }
        stack.drop_databases();
        let _ = std::fs::remove_dir_all(&stack.state);
        if let Some(mut row) = row {
            row["up_seconds"] = json!(stats::round3(up_seconds));
            row["up_attempts"] = json!(attempt);
            if !failures.is_empty() {
                row["up_failures"] = json!(failures);
            }
            return merge(base, row);
        }
    }
    merge(
        base,
        json!({
            "status": "failed_to_start",
            "error": failures.last().cloned().unwrap_or_default(),
            "up_failures": failures,
            "up_attempts": 2,
        }),
    )
}

fn merge(mut a: Value, b: Value) -> Value {
    if let (Some(a), Value::Object(b)) = (a.as_object_mut(), b) {
        a.extend(b);
    }
    a
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

async fn order_status_counts(stack: &Stack) -> Option<BTreeMap<String, u64>> {
    let url = stack.order_db();
    let state = stack.state.clone();
    tokio::task::spawn_blocking(move || {
        let text = ceilings::psql(
            &url,
            "SELECT status || ' ' || count(*) FROM orders GROUP BY status",
            &state,
        )
        .ok()?;
        Some(
            text.lines()
                .filter_map(|l| {
                    let (s, n) = l.trim().rsplit_once(' ')?;
                    Some((s.to_owned(), n.parse().ok()?))
                })
                .collect(),
        )
    })
    .await
    .ok()
    .flatten()
}

fn non_terminal(counts: &BTreeMap<String, u64>) -> u64 {
    counts
        .iter()
        .filter(|(s, _)| s.as_str() != "COMPLETED" && s.as_str() != "CANCELLED")
        .map(|(_, n)| n)
        .sum()
}

async fn measure(
    ctx: &RunContext<'_>,
    stack: &Stack,
    case: u8,
    scenario: ScenarioName,
) -> Result<Value> {
    let plan = ctx.plan;
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()?;
    let order_url = stack.url("ORDER_PORT");
    let sim_url = stack.url("KAKAOPAY_SIM_PORT");
    let mail_url = stack.url("NOTIFIER_PORT");
    let service_urls = vec![
        order_url.clone(),
        stack.url("PAYMENT_PORT"),
        mail_url.clone(),
    ];
    let pids = stack.pids();

    // The scenario's standing faults.
    let mut timeline: Vec<Value> = Vec::new();
    match scenario {
        ScenarioName::Gateway200ms | ScenarioName::Gateway1s => {
            let ms = if scenario == ScenarioName::Gateway1s {
                1000
            } else {
                200
            };
            put_faults(&http, &sim_url, json!({ "latency_ms": ms })).await?;
            timeline.push(json!({ "at_s": 0.0, "what": format!("gateway latency_ms = {ms}") }));
        }
        ScenarioName::SmtpSlow500ms => {
            timeline.push(
                json!({ "at_s": 0.0, "what": "SMTP sink started with SMTP_SINK_DELAY_MS=500" }),
            );
        }
        _ => {}
    }

    let mut config = ShopConfig::new(&order_url)?;
    config.poll = plan.poll;
    config.poll_max = POLL_MAX;
    config.step_timeout = plan.step_timeout;
    config.keep_order_ids = true;
    config.accept_only = scenario == ScenarioName::Capacity;
    let (load, phases) = plan.load(scenario);
    let shop = Arc::new(Shop::new(config)?);
    let recorder = Arc::new(Mutex::new(Recorder::new(true)));
    let metrics_before = scrape(&http, &service_urls).await;
    let cpu_before = cpu_snapshot(&pids);
    let measure_started = Instant::now();

    // Timed faults run beside the load.
    let fault_task = if scenario == ScenarioName::GatewayOutage30s {
        let (http, sim) = (http.clone(), sim_url.clone());
        let (after, length) = (plan.outage_after, plan.outage_length);
        Some(tokio::spawn(async move {
            let t0 = Instant::now();
            let mut marks = Vec::new();
            tokio::time::sleep(after).await;
            let on = put_faults(&http, &sim, json!({ "outage": true })).await;
            marks.push(json!({ "at_s": stats::round3(t0.elapsed().as_secs_f64()), "what": "gateway outage on", "ok": on.is_ok() }));
            tokio::time::sleep(length).await;
            let off = put_faults(&http, &sim, json!({ "outage": false })).await;
            marks.push(json!({ "at_s": stats::round3(t0.elapsed().as_secs_f64()), "what": "gateway outage off", "ok": off.is_ok() }));
            marks
        }))
    } else {
        None
    };
    let bar = shop::progress_bar(ctx.args.quiet, load.total());
    let timing = shop::drive(shop, load, recorder.clone(), bar, |_| {}).await;
    if let Some(task) = fault_task {
        // The outage always ends, even when the load ended first.
        match tokio::time::timeout(plan.outage_after + plan.outage_length, task).await {
            Ok(Ok(marks)) => timeline.extend(marks),
            _ => {
                let _ = put_faults(&http, &sim_url, json!({ "outage": false })).await;
                timeline.push(json!({ "what": "gateway outage off (after the load)" }));
            }
        }
    }
    let load_seconds = measure_started.elapsed().as_secs_f64();

    // Drain: every accepted order ends (COMPLETED or CANCELLED), bounded.
    let drain_started = Instant::now();
    let drain_deadline = drain_started + plan.drain;
    let mut drained_after = None;
    let mut last_counts = None;
    if scenario != ScenarioName::Capacity {
        loop {
            let counts = order_status_counts(stack).await;
            if let Some(c) = &counts {
                if non_terminal(c) == 0 {
                    drained_after = Some(drain_started.elapsed().as_secs_f64());
                    last_counts = counts;
                    break;
                }
            }
            last_counts = counts;
            if Instant::now() >= drain_deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    // End-to-end latency from stored timestamps (and the drain of the mails).
    let ids = {
        let r = shop::lock(&recorder);
        sample(&r.order_ids, plan.e2e_sample)
    };
    let e2e = if scenario == ScenarioName::Capacity {
        None
    } else {
        Some(
            collect_e2e(
                &http,
                &order_url,
                &mail_url,
                ids,
                drain_deadline.max(Instant::now() + Duration::from_secs(10)),
            )
            .await,
        )
    };
    let final_counts = order_status_counts(stack).await.or(last_counts);

    let metrics_after = scrape(&http, &service_urls).await;
    let scrape_seconds = measure_started.elapsed().as_secs_f64();
    let cpu_after = cpu_snapshot(&pids);
    let ticks = procfs::clock_ticks_per_sec() as f64;
    let cpu_seconds: BTreeMap<String, f64> = cpu_after
        .iter()
        .map(|(name, after)| {
            let before = cpu_before.get(name).copied().unwrap_or(0);
            (
                name.clone(),
                stats::round3(after.saturating_sub(before) as f64 / ticks),
            )
        })
        .collect();
    let peak_rss_mb: BTreeMap<String, f64> = pids
        .iter()
        .filter_map(|(name, pid)| {
            let kb = procfs::status_kb(*pid, "VmHWM")?;
            Some((name.clone(), stats::round3(kb as f64 / 1024.0)))
        })
        .collect();

    // Relay lag and event rate from the services' own metrics (between the scrapes).
    let lag_name = "saga_outbox_relay_lag_seconds";
    let lag = prom::bucket_delta(
        &prom::buckets(&metrics_before, lag_name),
        &prom::buckets(&metrics_after, lag_name),
    );
    let lag_count = lag.last().map_or(0.0, |(_, c)| *c);
    let q_ms = |q: f64| prom::bucket_quantile(&lag, q).map(|s| stats::round3(s * 1000.0));
    let published = prom::sample_sum(&metrics_after, "saga_outbox_published_total").map(|a| {
        a - prom::sample_sum(&metrics_before, "saga_outbox_published_total").unwrap_or(0.0)
    });

    let r = shop::lock(&recorder);
    let accepted_per_sec = stats::rate(r.accepted, timing.issue_seconds);
    let unfinished = match (&final_counts, &e2e) {
        _ if scenario == ScenarioName::Capacity => Value::Null,
        (Some(c), Some(e)) => json!(non_terminal(c) + e.terminal_without_mail),
        (None, Some(e)) => json!(e.unfinished()),
        _ => Value::Null,
    };
    let accept = r.accept.summary();
    let e2e_summary = e2e.as_ref().map(|e| e.latency.summary());
    Ok(json!({
        "label": format!("case {case} × {}", scenario.title()),
        "load": match scenario {
            ScenarioName::Capacity => json!({ "kind": "closed-loop, accept only", "concurrency": plan.concurrency, "duration_s": plan.capacity_duration.as_secs_f64() }),
            _ => json!({ "kind": "open-loop", "phases": phases.iter().map(|(r, d)| json!({ "rate_per_sec": r, "seconds": d.as_secs_f64() })).collect::<Vec<_>>() }),
        },
        "timeline": timeline,
        "shoppers": r.shoppers(),
        "accepted": r.accepted,
        "approved": r.approved,
        "accepted_per_sec": accepted_per_sec,
        "issue_seconds": stats::round3(timing.issue_seconds),
        "load_seconds": stats::round3(load_seconds),
        "errors_total": r.errors_total(),
        "errors": r.errors,
        "accept_latency": accept,
        "payment_ready_latency": r.ready.summary(),
        "approve_latency": r.approve.summary(),
        "e2e_latency": e2e_summary,
        "e2e": e2e.as_ref().map(|e| json!({
            "read": e.read,
            "of_accepted": r.accepted,
            "with_final_mail": e.latency.len(),
            "terminal_without_mail": e.terminal_without_mail,
            "not_terminal": e.not_terminal,
            "read_errors": e.read_errors,
            "final_mail_types": e.kinds,
        })),
        "orders_by_status": final_counts,
        "drained_after_s": drained_after.map(stats::round3),
        "unfinished": unfinished,
        "cpu_seconds": cpu_seconds,
        "cpu_basis_seconds": stats::round3(scrape_seconds),
        "peak_rss_mb": peak_rss_mb,
        "relay": {
            "lag_p50_ms": q_ms(0.5),
            "lag_p99_ms": q_ms(0.99),
            "lag_observations": lag_count,
            "events_published": published,
            "events_per_sec": published.map(|p| stats::rate(p as u64, load_seconds)),
        },
        "relay_lag_p99_ms": q_ms(0.99),
        "pids": pids,
    }))
}

/// Up to `max` ids evenly spaced over `ids`.
fn sample(ids: &[String], max: usize) -> Vec<String> {
    if ids.len() <= max {
        return ids.to_vec();
    }
    let step = ids.len() as f64 / max as f64;
    (0..max)
        .map(|i| ids[((i as f64 * step) as usize).min(ids.len() - 1)].clone())
        .collect()
}

#[derive(Debug, Default)]
struct E2e {
    latency: Latency,
    read: usize,
    terminal_without_mail: u64,
    not_terminal: u64,
    read_errors: u64,
    kinds: BTreeMap<String, u64>,
}

impl E2e {
    fn unfinished(&self) -> u64 {
        self.terminal_without_mail + self.not_terminal
    }
}

enum Read {
    Done { ms: i64, kind: String },
    NotTerminal,
    NoMail,
    Error,
}

/// Reads each order (`GET /orders/{id}`: `created_at`, `status`) and its mail history
/// (`GET /notifications?order_id=`: the final mail's `sent_at`) until every order has
/// ended with its final mail stored, or `deadline`.
async fn collect_e2e(
    http: &reqwest::Client,
    order_url: &str,
    mail_url: &str,
    ids: Vec<String>,
    deadline: Instant,
) -> E2e {
    let mut out = E2e {
        read: ids.len(),
        ..E2e::default()
    };
    let mut pending = ids;
    loop {
        let results: Vec<(String, Read)> = futures::stream::iter(pending.clone())
            .map(|id| async move {
                let read = read_one(http, order_url, mail_url, &id).await;
                (id, read)
            })
            .buffer_unordered(16)
            .collect()
            .await;
        let mut again = Vec::new();
        let (mut not_terminal, mut no_mail, mut errors) = (0, 0, 0);
        for (id, read) in results {
            match read {
                Read::Done { ms, kind } => {
                    out.latency.record_millis(ms);
                    *out.kinds.entry(kind).or_default() += 1;
                }
                Read::NotTerminal => {
                    not_terminal += 1;
                    again.push(id);
                }
                Read::NoMail => {
                    no_mail += 1;
                    again.push(id);
                }
                Read::Error => {
                    errors += 1;
                    again.push(id);
                }
            }
        }
        pending = again;
        if pending.is_empty() || Instant::now() + Duration::from_secs(1) >= deadline {
            out.not_terminal = not_terminal;
            out.terminal_without_mail = no_mail;
            out.read_errors = errors;
            return out;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn read_one(http: &reqwest::Client, order_url: &str, mail_url: &str, id: &str) -> Read {
    let order: Value = match http.get(format!("{order_url}/orders/{id}")).send().await {
        Ok(r) if r.status().is_success() => match r.json().await {
            Ok(v) => v,
            Err(_) => return Read::Error,
        },
        _ => return Read::Error,
    };
    let status = order["status"].as_str().unwrap_or_default();
    if status != "COMPLETED" && status != "CANCELLED" {
        return Read::NotTerminal;
    }
    let Some(created) = order["created_at"].as_str().and_then(parse_time) else {
        return Read::Error;
    };
    let mails: Value = match http
        .get(format!("{mail_url}/notifications"))
        .query(&[("order_id", id)])
        .bearer_auth(API_TOKEN)
        .send()
        .await
    {
        Ok(r) if r.status().is_success() => match r.json().await {
            Ok(v) => v,
            Err(_) => return Read::Error,
        },
        _ => return Read::Error,
    };
    let items = mails["items"].as_array().or_else(|| mails.as_array());
    let final_mail = items.into_iter().flatten().find_map(|m| {
        let kind = m["type"].as_str()?;
        if !FINAL_MAILS.contains(&kind) || m["status"] != "SENT" {
            return None;
        }
        Some((kind.to_owned(), m["sent_at"].as_str().and_then(parse_time)?))
    });
    match final_mail {
        Some((kind, sent)) => Read::Done {
            ms: (sent - created).num_milliseconds(),
            kind,
        },
        None => Read::NoMail,
    }
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

// ---------------------------------------------------------------------------------------
// Targets, summary, report

fn find<'a>(runs: &'a Value, case: u8, scenario: &str) -> Option<&'a Value> {
    runs.as_array()?
        .iter()
        .find(|r| r["case"] == case && r["scenario"] == scenario && r["status"] == "ok")
}

fn verdict(met: Option<bool>, by: String) -> String {
    match met {
        Some(true) => format!("met ({by})"),
        Some(false) => format!("missed ({by})"),
        None => format!("not evaluated ({by})"),
    }
}

fn evaluate_targets(runs: &[Value], ceilings: &Value, plan: &Plan) -> Value {
    let runs = Value::Array(runs.to_vec());
    let mut targets = Vec::new();

    // 1. Case 3 accepted/s ÷ pgbench TPS ≥ 0.7.
    let tps = ceilings["pgbench"]["tps"].as_f64();
    let (accepted, basis) = match find(&runs, 3, "capacity") {
        Some(r) => (r["accepted_per_sec"].as_f64(), "capacity scenario (closed loop, accept only)"),
        None => (
            find(&runs, 3, "baseline").and_then(|r| r["accepted_per_sec"].as_f64()),
            "baseline open loop (capacity scenario not run: the ratio is bounded by the offered rate)",
        ),
    };
    let ratio = accepted
        .zip(tps)
        .map(|(a, t)| if t > 0.0 { a / t } else { 0.0 });
    let capacity_run = find(&runs, 3, "capacity").is_some();
    let met = if capacity_run {
        ratio.map(|r| r >= 0.7)
    } else {
        None
    };
    targets.push(json!({
        "name": "accept throughput vs pgbench",
        "rule": "case 3 accepted orders/s ÷ pgbench TPS of the same transaction at the same concurrency ≥ 0.7",
        "basis": basis,
        "accepted_per_sec": accepted,
        "pgbench_tps": tps,
        "measured": ratio.map(round3),
        "threshold": 0.7,
        "met": met,
        "verdict": verdict(met, match ratio {
            Some(r) if capacity_run => format!("{:.2} vs 0.70: {:+.0} % of the threshold", r, (r / 0.7 - 1.0) * 100.0),
            Some(r) => format!("{r:.2} at the offered rate; run the capacity scenario to measure it"),
            None => "needs case 3 and the pgbench ceiling".to_owned(),
        }),
    }));

    // 2. Case 3 accept p99 at 1 s gateway latency ≤ 1.15 × baseline.
    let base = find(&runs, 3, "baseline").and_then(|r| r["accept_latency"]["p99_ms"].as_f64());
    let slow = find(&runs, 3, "gateway-1s").and_then(|r| r["accept_latency"]["p99_ms"].as_f64());
    let ratio = base
        .zip(slow)
        .map(|(b, s)| if b > 0.0 { s / b } else { f64::INFINITY });
    targets.push(json!({
        "name": "accept p99 under 1 s gateway latency",
        "rule": "case 3 accept p99 at gateway-1s ≤ 1.15 × case 3 baseline accept p99",
        "baseline_p99_ms": base,
        "gateway_1s_p99_ms": slow,
        "measured": ratio.map(round3),
        "threshold": 1.15,
        "met": ratio.map(|r| r <= 1.15),
        "verdict": verdict(ratio.map(|r| r <= 1.15), match (ratio, base, slow) {
            (Some(r), Some(b), Some(s)) => format!("{s:.1} ms vs {b:.1} ms = {r:.2}× (limit 1.15×, {:+.1} ms to the limit)", b * 1.15 - s),
            _ => "needs case 3 baseline and gateway-1s".to_owned(),
        }),
    }));

    // 3. Saga e2e p99 ≤ 250 ms at 100 orders/s baseline (case 3).
    let e2e = find(&runs, 3, "baseline").and_then(|r| r["e2e_latency"]["p99_ms"].as_f64());
    let at_rate = (plan.rate - 100.0).abs() < 1e-9;
    targets.push(json!({
        "name": "saga end-to-end p99",
        "rule": "case 3 baseline at 100 orders/s: accept → final mail stored, p99 ≤ 250 ms",
        "offered_rate_per_sec": plan.rate,
        "measured": e2e,
        "threshold": 250.0,
        "met": if at_rate { e2e.map(|v| v <= 250.0) } else { None },
        "verdict": verdict(if at_rate { e2e.map(|v| v <= 250.0) } else { None }, match e2e {
            Some(v) if at_rate => format!("{v:.0} ms vs 250 ms: {:+.0} ms", v - 250.0),
            Some(v) => format!("{v:.0} ms at {} orders/s, not the target's 100/s", plan.rate),
            None => "needs case 3 baseline".to_owned(),
        }),
    }));

    // 4. Relay lag p99 ≤ 20 ms at 1k events/s: the case-3 run with the most events/s.
    let case3: Vec<&Value> = runs
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["case"] == 3 && r["status"] == "ok" && r["relay"]["lag_p99_ms"].is_number())
        .collect();
    let busiest = case3.iter().max_by(|a, b| {
        let (a, b) = (
            a["relay"]["events_per_sec"].as_f64().unwrap_or(0.0),
            b["relay"]["events_per_sec"].as_f64().unwrap_or(0.0),
        );
        a.partial_cmp(&b).unwrap_or(std::cmp::Ordering::Equal)
    });
    let lag = busiest.and_then(|r| r["relay"]["lag_p99_ms"].as_f64());
    let rate = busiest.and_then(|r| r["relay"]["events_per_sec"].as_f64());
    let reached = rate.is_some_and(|r| r >= 1000.0);
    let met = if reached {
        lag.map(|l| l <= 20.0)
    } else {
        None
    };
    targets.push(json!({
        "name": "outbox relay lag p99",
        "rule": "relay lag p99 (commit → broker ack, saga_outbox_relay_lag_seconds) ≤ 20 ms at 1k events/s; evaluated on the case-3 run with the highest event rate",
        "run": busiest.map(|r| r["scenario"].clone()),
        "events_per_sec": rate,
        "measured": lag,
        "threshold": 20.0,
        "met": met,
        "verdict": verdict(met, match (lag, rate) {
            (Some(l), Some(r)) if reached => format!("{l:.1} ms vs 20 ms at {r:.0} events/s: {:+.1} ms", l - 20.0),
            (Some(l), Some(r)) => format!("{l:.1} ms at {r:.0} events/s; 1k events/s was not reached, so the target's load was not tested"),
            _ => "needs a case-3 run with relay metrics".to_owned(),
        }),
    }));
    Value::Array(targets)
}

fn round3(x: f64) -> f64 {
    stats::round3(x)
}

fn summary_json(results: &Value) -> Value {
    let mut cases = serde_json::Map::new();
    for r in results["runs"].as_array().into_iter().flatten() {
        let case = r["case"].to_string();
        let entry = cases
            .entry(case)
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .map(|m| {
                m.insert(
                    r["scenario"].as_str().unwrap_or("?").to_owned(),
                    json!({
                        "status": r["status"],
                        "accepted_per_sec": r["accepted_per_sec"],
                        "accept_p99_ms": r["accept_latency"]["p99_ms"],
                        "e2e_p99_ms": r["e2e_latency"]["p99_ms"],
                        "unfinished": r["unfinished"],
                    }),
                )
            });
        let _ = entry;
    }
    let relay = find(&results["runs"], 3, "baseline").map(|r| r["relay_lag_p99_ms"].clone());
    json!({
        "mode": results["mode"],
        "profile": results["profile"],
        "started_at": results["started_at"],
        "cases": cases,
        "pgbench_tps": results["ceilings"]["pgbench"]["tps"],
        "relay_lag_p99_ms": relay.unwrap_or(Value::Null),
        "relay_lag_basis": "case 3 baseline",
        "targets": results["targets"].as_array().map(|t| t.iter().map(|t| json!({ "name": t["name"], "met": t["met"], "measured": t["measured"], "threshold": t["threshold"] })).collect::<Vec<_>>()),
    })
}

fn draw_figures(results: &Value, dir: &Path) -> Vec<(String, String)> {
    let mut figures = Vec::new();
    let cases: Vec<u8> = results["cases"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c.as_u64().map(|c| c as u8))
        .collect();
    let scenarios: Vec<String> = results["scenarios"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect();
    let runs = &results["runs"];
    let value = |case: u8, scenario: &str, pick: &dyn Fn(&Value) -> Option<f64>| {
        find(runs, case, scenario).and_then(pick)
    };
    let bars = |title: &'static str, y: &'static str, pick: &dyn Fn(&Value) -> Option<f64>| Bars {
        title,
        y_label: y,
        groups: scenarios.clone(),
        series: cases
            .iter()
            .map(|&c| {
                (
                    format!("case {c}"),
                    usize::from(c.saturating_sub(1)),
                    scenarios.iter().map(|s| value(c, s, pick)).collect(),
                )
            })
            .collect(),
    };
    let mut draw_bars = |file: &str, caption: &str, b: Bars<'_>| {
        let path = dir.join(file);
        match plots::grouped_bars(&path, &b) {
            Ok(()) => figures.push((format!("figures/{file}"), caption.to_owned())),
            Err(e) => log(format!("figure {file}: {e:#}")),
        }
    };
    draw_bars(
        "throughput.svg",
        "Accepted orders per second, per case and scenario",
        bars("accepted orders/s", "orders/s", &|r| {
            r["accepted_per_sec"].as_f64()
        }),
    );
    draw_bars(
        "accept_p99.svg",
        "Accept latency p99 (ms), per case and scenario",
        bars("accept latency p99", "ms", &|r| {
            r["accept_latency"]["p99_ms"].as_f64()
        }),
    );
    draw_bars(
        "e2e_p99.svg",
        "End-to-end latency p99 (accept → final mail stored, ms)",
        bars("end-to-end latency p99", "ms", &|r| {
            r["e2e_latency"]["p99_ms"].as_f64()
        }),
    );
    for scenario in &scenarios {
        for (key, what) in [("accept_latency", "accept"), ("e2e_latency", "e2e")] {
            let series: Vec<plots::CdfSeries> = cases
                .iter()
                .filter_map(|&c| {
                    let r = find(runs, c, scenario)?;
                    let pts: Vec<(f64, f64)> = r[key]["percentiles"]
                        .as_array()?
                        .iter()
                        .filter_map(|p| Some((p["value_ms"].as_f64()?, p["percentile"].as_f64()?)))
                        .collect();
                    (!pts.is_empty()).then(|| (format!("case {c}"), usize::from(c - 1), pts))
                })
                .collect();
            if series.is_empty() {
                continue;
            }
            let file = format!("cdf_{what}_{scenario}.svg");
            let title = format!(
                "{} latency CDF — {scenario}",
                if what == "e2e" {
                    "end-to-end"
                } else {
                    "accept"
                }
            );
            let c = Cdf {
                title: &title,
                x_label: "latency (ms, log scale)",
                series,
            };
            match plots::cdf(&dir.join(&file), &c) {
                Ok(()) => figures.push((format!("figures/{file}"), title.clone())),
                Err(e) => log(format!("figure {file}: {e:#}")),
            }
        }
    }
    figures
}

fn fmt(v: &Value) -> String {
    match v {
        Value::Null => "–".to_owned(),
        Value::Number(n) => match n.as_f64() {
            Some(x) if x.fract() == 0.0 && x.abs() < 1e15 => format!("{x:.0}"),
            Some(x) if x.abs() >= 100.0 => format!("{x:.0}"),
            Some(x) if x.abs() >= 10.0 => format!("{x:.1}"),
            Some(x) => format!("{x:.2}"),
            None => n.to_string(),
        },
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn report_md(results: &Value, figures: &[(String, String)]) -> String {
    let mut md = String::new();
    let s = &results["settings"];
    let _ = writeln!(md, "# Four cases × scenarios — experiment report\n");
    let _ = writeln!(
        md,
        "Mode **{}** ({} builds), started {} UTC, {} s wall time. Machine: {} CPUs ({}), load average at start {}.\n",
        fmt(&results["mode"]),
        fmt(&results["profile"]),
        fmt(&results["started_at"]),
        fmt(&results["wall_seconds"]),
        fmt(&results["machine"]["nproc"]),
        fmt(&results["machine"]["cpu_model"]),
        fmt(&results["machine"]["loadavg_at_start"]),
    );
    let _ = writeln!(
        md,
        "Load: open loop at {} orders/s for {} s per scenario (the outage scenario at least outage + 10 s), shoppers polling every {} ms at first, backing off ×1.5 to 1 s; drain at most {} s. Capacity: closed loop of {} accept-only shoppers for {} s. Every run has its own stack (`infra/stack up --case N`, private ports, fresh databases, tansu in memory, its own nx-27017 and SMTP sink). Command: `{}`.\n",
        fmt(&s["rate_per_sec"]),
        fmt(&s["duration_s"]),
        fmt(&s["poll_interval_ms"]),
        fmt(&s["drain_max_s"]),
        fmt(&s["capacity"]["concurrency"]),
        fmt(&s["capacity"]["duration_s"]),
        fmt(&results["command"]),
    );

    let _ = writeln!(md, "## Targets (issue #5)\n");
    let _ = writeln!(
        md,
        "| target | rule | measured | verdict |\n|---|---|---|---|"
    );
    for t in results["targets"].as_array().into_iter().flatten() {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} |",
            fmt(&t["name"]),
            fmt(&t["rule"]),
            fmt(&t["measured"]),
            fmt(&t["verdict"])
        );
    }

    let c = &results["ceilings"];
    let _ = writeln!(md, "\n## Ceilings (measured in the same run)\n");
    let _ = writeln!(md, "| server | what | figure |\n|---|---|---|");
    let _ =
        writeln!(
        md,
        "| PostgreSQL | pgbench, the place-order transaction, {} clients | {} TPS (avg {} ms){} |",
        fmt(&c["pgbench"]["clients"]),
        fmt(&c["pgbench"]["tps"]),
        fmt(&c["pgbench"]["latency_avg_ms"]),
        c["pgbench"]["error"].as_str().map(|e| format!(" error: {e}")).unwrap_or_default()
    );
    let _ = writeln!(
        md,
        "| tansu | rdkafka producer, services' settings, {}-byte events, acks=all | {} msgs/s (ack p99 {} ms){} |",
        fmt(&c["kafka_produce"]["message_bytes"]),
        fmt(&c["kafka_produce"]["messages_per_sec"]),
        fmt(&c["kafka_produce"]["ack_p99_ms"]),
        c["kafka_produce"]["error"].as_str().map(|e| format!(" error: {e}")).unwrap_or_default()
    );
    let _ = writeln!(
        md,
        "| SMTP | smtp-source → smtp-sink, 16 sessions, 4 kB | {} mails/s{} |",
        fmt(&c["smtp"]["mails_per_sec"]),
        c["smtp"]["error"]
            .as_str()
            .map(|e| format!(" error: {e}"))
            .unwrap_or_default()
    );

    let _ = writeln!(md, "\n## Figures\n");
    for (path, caption) in figures.iter().filter(|(p, _)| !p.contains("cdf_")) {
        let _ = writeln!(md, "![{caption}]({path})\n");
    }

    let runs = &results["runs"];
    for scenario in results["scenarios"].as_array().into_iter().flatten() {
        let name = scenario.as_str().unwrap_or("?");
        let _ = writeln!(md, "\n## Scenario `{name}`\n");
        let _ = writeln!(md, "{}\n", scenario_text(name));
        let _ = writeln!(
            md,
            "| case | status | accepted/s | accept p50 / p95 / p99 ms | errors | e2e p50 / p99 ms | unfinished | drained after s | relay lag p99 ms | events/s |\n|---|---|---|---|---|---|---|---|---|---|"
        );
        for r in runs
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["scenario"] == *scenario)
        {
            if r["status"] != "ok" {
                let _ = writeln!(
                    md,
                    "| {} | **{}**: {} | | | | | | | | |",
                    fmt(&r["case"]),
                    fmt(&r["status"]),
                    one_line(&fmt(&r["error"]), 400),
                );
                continue;
            }
            let a = &r["accept_latency"];
            let e = &r["e2e_latency"];
            let errors = if r["errors_total"].as_u64().unwrap_or(0) == 0 {
                "0".to_owned()
            } else {
                format!(
                    "{} ({})",
                    fmt(&r["errors_total"]),
                    r["errors"]
                        .as_object()
                        .map(|m| m
                            .iter()
                            .map(|(k, v)| format!("{k} {v}"))
                            .collect::<Vec<_>>()
                            .join(", "))
                        .unwrap_or_default()
                )
            };
            let _ = writeln!(
                md,
                "| {} | ok | {} | {} / {} / {} | {} | {} / {} | {} | {} | {} | {} |",
                fmt(&r["case"]),
                fmt(&r["accepted_per_sec"]),
                fmt(&a["p50_ms"]),
                fmt(&a["p95_ms"]),
                fmt(&a["p99_ms"]),
                errors,
                fmt(&e["p50_ms"]),
                fmt(&e["p99_ms"]),
                fmt(&r["unfinished"]),
                fmt(&r["drained_after_s"]),
                fmt(&r["relay"]["lag_p99_ms"]),
                fmt(&r["relay"]["events_per_sec"]),
            );
        }
        // Processes: CPU seconds and peak RSS.
        let mut any = false;
        for r in runs
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["scenario"] == *scenario && r["status"] == "ok")
        {
            if !any {
                let _ = writeln!(
                    md,
                    "\nCPU seconds over the run (load + drain) and peak RSS (MB) per process:\n"
                );
                let _ = writeln!(md, "| case | CPU s | peak RSS MB |\n|---|---|---|");
                any = true;
            }
            let cpu = r["cpu_seconds"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k} {}", fmt(v)))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            let rss = r["peak_rss_mb"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k} {}", fmt(v)))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            let _ = writeln!(md, "| {} | {} | {} |", fmt(&r["case"]), cpu, rss);
        }
        for (path, caption) in figures
            .iter()
            .filter(|(p, _)| p.contains(&format!("_{name}.svg")))
        {
            let _ = writeln!(md, "\n![{caption}]({path})");
        }
    }
    let _ = writeln!(md, "\n## Definitions\n");
    if let Some(d) = results["definitions"].as_object() {
        for (k, v) in d {
            let _ = writeln!(md, "* **{k}** — {}", fmt(v));
        }
    }
    md
}

/// `text` on one table-safe line: its last `max` characters (where the reason is).
fn one_line(text: &str, max: usize) -> String {
    let joined = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .join(" ⏎ ")
        .replace('|', "/");
    let n = joined.chars().count();
    if n > max {
        format!("…{}", joined.chars().skip(n - max).collect::<String>())
    } else {
        joined
    }
}

fn scenario_text(name: &str) -> &'static str {
    match name {
        "baseline" => "No fault.",
        "gateway-200ms" => "Every Kakao Pay API call 200 ms slower (`PUT /__sim/faults {\"latency_ms\": 200}` before the load).",
        "gateway-1s" => "Every Kakao Pay API call 1 s slower (`latency_ms: 1000`).",
        "gateway-outage-30s" => "Kakao Pay answers 503 (`outage: true`) from 5 s into the load for 30 s (short mode: from 1 s for 4 s); payments that exhaust their retries fail and their orders are cancelled.",
        "smtp-slow-500ms" => "The SMTP sink waits 500 ms before accepting each mail (`SMTP_SINK_DELAY_MS=500`).",
        "burst-10x" => "The order rate ×10 for 10 s (short mode: 2 s) a third of the way into the run.",
        "capacity" => "Closed loop of accept-only shoppers (POST /orders, nothing else) at the pgbench concurrency: the order service's accept capacity. Orders stay unpaid, so no drain and no end-to-end figures.",
        _ => "",
    }
}

fn definitions() -> Value {
    json!({
        "accepted_per_sec": "202 answers / the issuing phase's seconds (open loop: the schedule's length)",
        "accept_latency": "POST /orders → 202; open loop: from the order's scheduled time (coordinated omission corrected). HDR histogram, µs resolution",
        "errors": "shoppers that did not get through: accept_http_NNN, accept_timeout, payment_ready_timeout, cancelled_before_payment_ready, approve_*, in_flight_limit (2,000 shoppers in progress), aborted_at_deadline",
        "e2e_latency": "per accepted order (all, or an even sample of e2e_sample_max): sent_at of its final mail (order_completed, order_cancelled or order_refunded; GET /notifications?order_id=) − created_at of the order (GET /orders/{id}); both stored by the services. Includes the shopper's own steps (polling for the payment page every poll_interval_ms and approving). ms resolution",
        "unfinished": "after the drain: orders not COMPLETED or CANCELLED (SQL count on the order database) + read orders that ended without their final mail stored",
        "drained_after_s": "seconds after the load until no order was left PENDING_PAYMENT or CANCELLING (null: not within drain_max_s)",
        "cpu_seconds": "utime+stime (/proc/PID/stat) of each process in the stack's pids/ (and of the load generator itself) between the load's start and the last scrape",
        "peak_rss_mb": "VmHWM (/proc/PID/status) of each process at the end: its peak resident memory over its life",
        "relay_lag": "saga_outbox_relay_lag_seconds (commit of the outbox row → broker ack) summed over the services, observations between the scrapes before and after the run; quantiles interpolated in the histogram's buckets (bounds 1, 2.5, 5, 10, 25, 50, 100 ms …)",
        "events_per_sec": "saga_outbox_published_total increase / the load's seconds",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_even_and_bounded() {
        let ids: Vec<String> = (0..10).map(|i| i.to_string()).collect();
        assert_eq!(sample(&ids, 20).len(), 10);
        assert_eq!(sample(&ids, 5), vec!["0", "2", "4", "6", "8"]);
    }

    #[test]
    fn scenarios_shape_their_load() {
        let args = Args::parse_from(["experiment", "--mode", "full"]);
        let plan = Plan::new(&args);
        let (load, phases) = plan.load(ScenarioName::Burst10x);
        assert_eq!(phases.len(), 3);
        assert_eq!(load.total(), Some(1000 + 10_000 + 1000));
        let (load, _) = plan.load(ScenarioName::GatewayOutage30s);
        assert_eq!(load.total(), Some(4000));
        let (load, _) = plan.load(ScenarioName::Baseline);
        assert_eq!(load.total(), Some(3000));
        assert!(matches!(
            plan.load(ScenarioName::Capacity).0,
            Load::Closed { .. }
        ));
    }

    #[test]
    fn targets_say_met_or_missed_by_how_much() {
        let runs = vec![
            json!({ "case": 3, "scenario": "baseline", "status": "ok", "accepted_per_sec": 100.0,
                    "accept_latency": { "p99_ms": 10.0 }, "e2e_latency": { "p99_ms": 300.0 },
                    "relay": { "lag_p99_ms": 5.0, "events_per_sec": 400.0 } }),
            json!({ "case": 3, "scenario": "gateway-1s", "status": "ok", "accepted_per_sec": 100.0,
                    "accept_latency": { "p99_ms": 11.0 }, "e2e_latency": { "p99_ms": 2300.0 },
                    "relay": { "lag_p99_ms": 6.0, "events_per_sec": 380.0 } }),
            json!({ "case": 3, "scenario": "capacity", "status": "ok", "accepted_per_sec": 800.0,
                    "accept_latency": { "p99_ms": 30.0 }, "relay": {} }),
        ];
        let args = Args::parse_from(["experiment", "--mode", "full"]);
        let t = evaluate_targets(
            &runs,
            &json!({ "pgbench": { "tps": 1000.0 } }),
            &Plan::new(&args),
        );
        assert_eq!(t[0]["met"], true);
        assert_eq!(t[0]["measured"], 0.8);
        assert_eq!(t[1]["met"], true);
        assert_eq!(t[2]["met"], false);
        assert!(t[2]["verdict"].as_str().unwrap().contains("+50 ms"));
        assert_eq!(t[3]["met"], Value::Null);
        assert!(t[3]["verdict"].as_str().unwrap().contains("not reached"));
    }
}
