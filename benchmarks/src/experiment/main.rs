//! `experiment`: the seed's scenario matrix. For every case × scenario it brings up a
//! private stack (`infra/stack up --case N` with its own state folder, free ports, fresh
//! PostgreSQL databases, tansu on a fresh SQLite file, its own nx-27017 and SMTP sink),
//! applies the scenario, drives shoppers ([`benchmarks::shop`]), drains, reads every
//! order's stored timestamps and tears the stack down. Ceilings (pgbench, tansu's
//! produce rate, smtp-source → smtp-sink) are measured in the same run. Writes
//! `results.json`, `summary.json`, `report.md`, `readme_table.md` and SVG figures.
//!
//! Modules: [`cli`] (options, scenarios, plan, matrix), [`stack`] (a private stack per
//! run), [`run`] (load, drain, measures), [`stored`] (reading the databases), [`saga`]
//! (the per-order figures, pure), [`targets`], [`report`], [`figures`].
//!
//! Run it through `infra/stack experiment` (which builds the binaries first); see
//! `benchmarks/README.md` for every figure.

// The result documents are large `json!`s.
#![recursion_limit = "256"]

mod cli;
mod figures;
mod report;
mod run;
mod saga;
mod stack;
mod stored;
mod targets;

use anyhow::{bail, Context, Result};
use benchmarks::machine::Machine;
use benchmarks::{ceilings, procs, stats};
use chrono::{DateTime, Utc};
use clap::Parser;
use cli::{Args, Mode, Plan, RunSpec, ScenarioName};
use report::one_line;
use serde_json::{json, Value};
use stack::RunContext;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");
/// The bearer token of the mail history API in the experiment's stacks.
const API_TOKEN: &str = "experiment-token";
/// Shoppers poll every `--poll-ms` at first, then back off (×1.5) to this.
const POLL_MAX: Duration = Duration::from_secs(1);

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

fn short_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()[20..].to_owned()
}

/// The checked options.
struct Setup {
    plan: Plan,
    cases: Vec<u8>,
    scenarios: Vec<ScenarioName>,
    runs: Vec<RunSpec>,
    profile: String,
    workspace: PathBuf,
    out_dir: PathBuf,
    scratch: PathBuf,
}

fn setup(args: &Args, started_at: DateTime<Utc>) -> Result<Setup> {
    let pg_host = args.postgres_url.rsplit('@').next().unwrap_or_default();
    benchmarks::loopback::check_host_ports(pg_host.trim_end_matches('/'))
        .context("POSTGRES_URL must be postgres://user@127.0.0.1:PORT")?;
    let mut cases = args.cases.clone();
    cases.sort_unstable();
    cases.dedup();
    if cases.is_empty() || cases.iter().any(|c| !(1..=4).contains(c)) {
        bail!("--cases takes numbers 1..4");
    }
    let mut scenarios = match (args.scenarios.is_empty(), args.mode) {
        (true, Mode::Short) => vec![ScenarioName::Baseline, ScenarioName::Gateway1s],
        (true, Mode::Full) => ScenarioName::ALL.to_vec(),
        (false, _) => args.scenarios.clone(),
    };
    scenarios.sort_unstable();
    scenarios.dedup();
    let plan = Plan::new(args);
    if !(plan.rate > 0.0 && plan.rate <= 2_000.0) {
        bail!("--rate must be in (0, 2000]");
    }
    if plan.duration > Duration::from_secs(600) || plan.duration < Duration::from_secs(1) {
        bail!("--duration must be 1..=600 s");
    }
    let default_profile = if args.mode == Mode::Short {
        "debug"
    } else {
        "release"
    };
    let profile = args
        .profile
        .clone()
        .unwrap_or_else(|| default_profile.to_owned());
    if profile != "debug" && profile != "release" {
        bail!("--profile must be debug or release");
    }
    let runs = cli::matrix(args.mode, &cases, &scenarios, args.instances)?;
    let workspace = workspace_dir();
    let stamp = started_at.format("%Y-%m-%dT%H%MZ").to_string();
    let out_dir = args.out_dir.clone().unwrap_or_else(|| match args.mode {
        Mode::Full => workspace.join("benchmarks/results").join(&stamp),
        Mode::Short => workspace
            .join("target/experiment")
            .join(format!("{stamp}-short")),
    });
    let scratch = workspace.join("target/experiment/state");
    Ok(Setup {
        plan,
        cases,
        scenarios,
        runs,
        profile,
        workspace,
        out_dir,
        scratch,
    })
}

async fn run_matrix(args: &Args, s: &Setup) -> Vec<Value> {
    let ctx = RunContext {
        args,
        plan: &s.plan,
        profile: &s.profile,
        workspace: &s.workspace,
        scratch: &s.scratch,
        out_dir: &s.out_dir,
    };
    let mut rows = Vec::new();
    for spec in &s.runs {
        let t0 = Instant::now();
        log(format!("{}: starting", spec.label()));
        let row = stack::run_one(&ctx, spec).await;
        log(format!(
            "{}: {} in {:.0} s — accepted/s {}, accept p99 {} ms, payment page p99 {} ms, approval → COMPLETED p99 {} ms, approval → last mail p99 {} ms, unfinished at checkpoints {}, after the drain {}",
            spec.label(),
            row["status"].as_str().unwrap_or("?"),
            t0.elapsed().as_secs_f64(),
            row["accepted_per_sec"],
            row["accept_latency"]["p99_ms"],
            row["payment_page_latency"]["p99_ms"],
            row["approval_to_completed_latency"]["p99_ms"],
            row["approval_to_last_mail_latency"]["p99_ms"],
            row["checkpoints"].as_array().map(|c| c.iter().map(|m| m["unfinished"].to_string()).collect::<Vec<_>>().join("/")).unwrap_or_default(),
            row["unfinished"],
        ));
        rows.push(row);
    }
    rows
}

fn settings_json(s: &Setup) -> Value {
    let plan = &s.plan;
    json!({
        "rate_per_sec": plan.rate,
        "duration_s": plan.duration.as_secs_f64(),
        "drain_max_s": plan.drain.as_secs(),
        "poll_interval_ms": plan.poll.as_millis() as u64,
        "poll_max_ms": POLL_MAX.as_millis() as u64,
        "step_timeout_s": plan.step_timeout.as_secs(),
        "outage": { "after_s": plan.outage_after.as_secs_f64(), "length_s": plan.outage_length.as_secs_f64() },
        "burst": { "factor": 10, "after_s": plan.burst_after.as_secs_f64(), "length_s": plan.burst_length.as_secs_f64() },
        "capacity": { "concurrency": plan.concurrency, "duration_s": plan.capacity_duration.as_secs_f64() },
        "checkpoints": { "after_load_s": plan.after_load.as_secs_f64(), "after_outage_s": plan.after_outage.as_secs_f64() },
        "services": "infra/stack up --case N defaults (ORDER_HTTP_WORKERS 2, pools 10, KAFKA_PARTITIONS 3), RUST_LOG=warn, tansu on its SQLite engine (a fresh file per run), a private nx-27017 and aiosmtpd sink per run",
    })
}

fn write_outputs(args: &Args, s: &Setup, results: &Value) -> Result<()> {
    let out = &s.out_dir;
    let pretty = |v: &Value| serde_json::to_string_pretty(v).map(|t| t + "\n");
    std::fs::write(out.join("results.json"), pretty(results)?)?;
    std::fs::write(
        out.join("summary.json"),
        pretty(&report::summary_json(results))?,
    )?;
    std::fs::write(out.join("readme_table.md"), report::readme_table(results))?;
    let figures = figures::draw_figures(results, &out.join("figures"));
    std::fs::write(out.join("report.md"), report::report_md(results, &figures))?;
    if args.mode == Mode::Full && args.out_dir.is_none() {
        let latest = s.workspace.join("benchmarks/results/latest");
        let _ = std::fs::remove_dir_all(&latest);
        copy_dir(out, &latest)?;
        log(format!("copied to {}", latest.display()));
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let started_at = Utc::now();
    let s = setup(&args, started_at)?;
    std::fs::create_dir_all(s.out_dir.join("figures"))?;
    std::fs::create_dir_all(s.out_dir.join("logs"))?;
    std::fs::create_dir_all(&s.scratch)?;
    let machine = Machine::describe();
    let wall = Instant::now();
    log(format!(
        "{} mode, {} build, {} runs ({}), {} orders/s for {:?} per scenario; results in {}",
        args.mode.as_str(),
        s.profile,
        s.runs.len(),
        s.runs
            .iter()
            .map(RunSpec::label)
            .collect::<Vec<_>>()
            .join(", "),
        s.plan.rate,
        s.plan.duration,
        s.out_dir.display()
    ));
    let ceilings = if args.no_ceilings {
        json!({ "skipped": true })
    } else {
        measure_ceilings(&args, &s.plan, &s.workspace, &s.scratch).await
    };
    let runs = run_matrix(&args, &s).await;
    let targets = targets::evaluate_targets(&runs, &ceilings, &s.plan);
    let secs = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let results = json!({
        "experiment": "the seed's four cases × scenarios (issue #5)",
        "mode": args.mode.as_str(),
        "profile": s.profile,
        "started_at": secs(started_at),
        "finished_at": secs(Utc::now()),
        "wall_seconds": stats::round3(wall.elapsed().as_secs_f64()),
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "machine": machine,
        "cases": s.cases,
        "scenarios": s.scenarios.iter().map(|x| x.as_str()).collect::<Vec<_>>(),
        "settings": settings_json(&s),
        "definitions": report::definitions(),
        "ceilings": ceilings,
        "runs": runs,
        "targets": targets,
    });
    write_outputs(&args, &s, &results)?;
    log(format!(
        "done in {:.0} s: {}/report.md",
        wall.elapsed().as_secs_f64(),
        s.out_dir.display()
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
