//! `notifier-bench`: the notifier's throughput, send latency and peak memory, measured
//! on the release binary run as its own process, against ceilings measured in the same
//! run (SMTP server alone, MongoDB server alone).
//!
//! Needs the dependencies running (`infra/stack deps`) and the release notifier
//! (`cargo build --release -p notifier`, or `--notifier-bin PATH`). See the README of
//! this crate for what every figure means. `src/bin/notifier_bench.rs` only parses
//! [`Args`] and calls [`run()`].
//!
//! The parts: `smtp` (the SMTP servers and their ceiling), `lettre_probe` (the
//! notifier's SMTP client alone), `mongo` (the MongoDB ceilings), `feed` (the events
//! and the Kafka side), `notifier` (the process under test), `sampling` (memory and
//! CPU), `documents` (figures from the history documents), `run` (one run against
//! one SMTP server), `report` (its result document) and `summary` (the printout).

mod documents;
mod feed;
mod lettre_probe;
mod mongo;
mod notifier;
mod report;
mod run;
mod sampling;
mod smtp;
mod summary;

use crate::machine::Machine;
use crate::{loopback, stats};
use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use mongo::{MongoCeilings, MongoInsertCeilings};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Instant;

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");
/// The recipient of the warm-up mail, left out of every figure.
const WARMUP_RECIPIENT: &str = "bench-warmup@example.com";
/// Peak RSS target of the notifier (issue 4).
const RSS_TARGET_MB: f64 = 40.0;
/// Throughput target: this share of the lower ceiling.
const THROUGHPUT_TARGET_SHARE: f64 = 0.8;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SmtpChoice {
    /// Postfix `smtp-sink` started by the bench on a free port (counts, stores nothing).
    SmtpSink,
    /// The stack's aiosmtpd sink (`infra/smtp_sink.py`), started by the bench on a free
    /// port with a temporary Maildir (it writes one file per mail).
    Aiosmtpd,
    /// Both, one after the other; the top-level figures are smtp-sink's.
    Both,
}

/// The command line of `notifier-bench`.
#[derive(Debug, Parser)]
#[command(
    name = "notifier-bench",
    about = "Measures the notifier (release binary, own process): mails/s, send latency, peak RSS, against SMTP and MongoDB ceilings measured in the same run."
)]
pub struct Args {
    /// OrderCompleted events to feed (one mail each).
    #[arg(long, default_value_t = 5_000)]
    events: u64,
    /// The notifier binary (build it first: `cargo build --release -p notifier`).
    #[arg(long)]
    notifier_bin: Option<PathBuf>,
    /// SMTP server the notifier sends to.
    #[arg(long, value_enum, default_value_t = SmtpChoice::SmtpSink)]
    smtp: SmtpChoice,
    /// Kafka bootstrap servers (loopback only) for the bench's topics.
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    kafka_brokers: String,
    /// MongoDB server (loopback only) of the notifier's history and the MongoDB ceilings.
    #[arg(long, env = "MONGODB_URI", default_value = "mongodb://127.0.0.1:27017")]
    mongodb_uri: String,
    /// Partitions of the bench's topics.
    #[arg(long, default_value_t = 3)]
    partitions: i32,
    /// NOTIFIER_SMTP_POOL_SIZE given to the notifier; also the sessions of the SMTP
    /// ceiling and the concurrent tasks of the MongoDB ceiling.
    #[arg(long, default_value_t = 16)]
    pool_size: u32,
    /// NOTIFIER_MAX_IN_FLIGHT given to the notifier.
    #[arg(long, default_value_t = 64)]
    max_in_flight: usize,
    /// Body size of the SMTP ceiling's messages (`smtp-source -l`); the notifier's
    /// order-completed mails are ~4 kB.
    #[arg(long, default_value_t = 4096)]
    mail_size: usize,
    /// Postfix `smtp-sink`, the server of `--smtp smtp-sink`.
    #[arg(long, default_value = "/usr/sbin/smtp-sink")]
    smtp_sink_bin: PathBuf,
    /// Postfix `smtp-source`, the client of the SMTP ceiling.
    #[arg(long, default_value = "/usr/sbin/smtp-source")]
    smtp_source_bin: PathBuf,
    /// Python of the stack's venv (runs `infra/smtp_sink.py` for `--smtp aiosmtpd`).
    #[arg(long)]
    python: Option<PathBuf>,
    /// Deadline for the notifier to finish every mail, in seconds.
    #[arg(long, default_value_t = 600)]
    timeout_secs: u64,
    /// Result file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Notifier runs per SMTP target (the top-level figures are the median run's).
    #[arg(long, default_value_t = 1)]
    repeat: u32,
    /// NOTIFIER_MONGODB_BATCH_MAX given to the notifier (default: the notifier's).
    #[arg(long)]
    notifier_batch_max: Option<usize>,
    /// NOTIFIER_MONGODB_BATCH_WINDOW_MS given to the notifier (default: the notifier's).
    #[arg(long)]
    notifier_batch_window_ms: Option<u64>,
    /// Documents per write command of the batched MongoDB ceilings (default: the
    /// notifier's in-flight limit, the most it can have to write at once).
    #[arg(long)]
    mongo_batch: Option<u64>,
    /// Skip the ceilings (the targets are then not evaluated).
    #[arg(long)]
    skip_ceilings: bool,
    /// Keep the bench's MongoDB databases and Kafka topics (dropped by default).
    #[arg(long)]
    keep_data: bool,
    /// `infra/stack`'s state folder, to sample the CPU time of tansu and nx-27017.
    #[arg(long, env = "STACK_STATE_DIR")]
    stack_state_dir: Option<PathBuf>,
}

fn workspace_dir() -> PathBuf {
    Path::new(MANIFEST_DIR)
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn smtp_name(choice: SmtpChoice) -> &'static str {
    match choice {
        SmtpChoice::SmtpSink => "smtp-sink",
        SmtpChoice::Aiosmtpd => "aiosmtpd",
        SmtpChoice::Both => "both",
    }
}

/// Where a bench's files are, checked before anything starts.
struct Paths {
    pub notifier_bin: PathBuf,
    pub out: PathBuf,
    pub log_dir: PathBuf,
    pub state_dir: PathBuf,
}

impl Paths {
    fn of(args: &Args) -> Result<Self> {
        let workspace = workspace_dir();
        let notifier_bin = args
            .notifier_bin
            .clone()
            .unwrap_or_else(|| workspace.join("target/release/notifier"));
        if !notifier_bin.is_file() {
            bail!(
                "{} not found: build it with `cargo build --release -p notifier` or pass --notifier-bin",
                notifier_bin.display()
            );
        }
        let out = args
            .out
            .clone()
            .unwrap_or_else(|| Path::new(MANIFEST_DIR).join("results/notifier/latest.json"));
        let log_dir = workspace.join("target/notifier-bench");
        std::fs::create_dir_all(&log_dir)?;
        let state_dir = args
            .stack_state_dir
            .clone()
            .unwrap_or_else(|| workspace.join(".stack"));
        Ok(Self {
            notifier_bin,
            out,
            log_dir,
            state_dir,
        })
    }
}

/// Refuses a command line that would reach beyond the loopback or run for ever.
fn check(args: &Args) -> Result<()> {
    loopback::check_host_ports(&args.kafka_brokers)?;
    loopback::check_mongodb_uri(&args.mongodb_uri)?;
    if args.events == 0 || args.events > 1_000_000 {
        bail!("--events must be 1..=1000000");
    }
    if args.repeat == 0 || args.repeat > 20 {
        bail!("--repeat must be 1..=20");
    }
    Ok(())
}

/// The whole bench: the MongoDB ceilings, every run against every SMTP target, the
/// result file and the printed summary.
pub async fn run(args: Args) -> Result<()> {
    check(&args)?;
    let paths = Paths::of(&args)?;
    let machine = Machine::describe();
    let started = Instant::now();

    let mongo = mongo::mongo_client(&args.mongodb_uri, args.pool_size).await?;
    let mongo_ceilings = if args.skip_ceilings {
        None
    } else {
        Some(MongoCeilings::measure(&mongo, &args).await?)
    };
    let insert_ceilings = MongoInsertCeilings {
        single: mongo_ceilings.as_ref().map(|c| c.inserts_single.per_sec),
        batched: mongo_ceilings.as_ref().map(|c| c.inserts_batched.per_sec),
    };
    let targets: Vec<SmtpChoice> = match args.smtp {
        SmtpChoice::Both => vec![SmtpChoice::SmtpSink, SmtpChoice::Aiosmtpd],
        one => vec![one],
    };
    let context = run::RunContext {
        args: &args,
        paths: &paths,
        mongo: &mongo,
        mongo_ceiling: insert_ceilings,
    };
    let runs = every_run(&context, &targets).await?;
    let result = result_document(
        &args,
        &targets,
        runs,
        mongo_ceilings.as_ref(),
        &machine,
        started,
    );
    write_result(&paths.out, &result)?;
    summary::print_summary(&result);
    println!("result: {}", paths.out.display());
    Ok(())
}

/// `--repeat` runs against each target, in order.
async fn every_run(context: &run::RunContext<'_>, targets: &[SmtpChoice]) -> Result<Vec<Value>> {
    let mut runs: Vec<Value> = Vec::new();
    for &target in targets {
        for index in 1..=context.args.repeat.max(1) {
            let mut one = run::run_target(context, target)
                .await
                .with_context(|| format!("run {index} against {}", smtp_name(target)))?;
            one["repeat_index"] = json!(index);
            runs.push(one);
        }
    }
    Ok(runs)
}

/// The top-level figures: the (lower) median run, by mails/s, of the first target.
fn primary_run(runs: &[Value], first: &str) -> Value {
    let mut ranked: Vec<&Value> = runs.iter().filter(|r| r["smtp_target"] == first).collect();
    ranked.sort_by(|a, b| {
        let (a, b) = (a["mails_per_sec"].as_f64(), b["mails_per_sec"].as_f64());
        a.partial_cmp(&b).unwrap_or(std::cmp::Ordering::Equal)
    });
    ranked
        .get(ranked.len().saturating_sub(1) / 2)
        .map_or(Value::Null, |r| (*r).clone())
}

/// Every run's mails/s, per target.
fn rates_per_target(runs: &[Value], targets: &[SmtpChoice]) -> serde_json::Map<String, Value> {
    let mut all_rates = serde_json::Map::new();
    for &target in targets {
        let name = smtp_name(target);
        let rates: Vec<Value> = runs
            .iter()
            .filter(|r| r["smtp_target"] == name)
            .map(|r| r["mails_per_sec"].clone())
            .collect();
        all_rates.insert(name.to_owned(), Value::Array(rates));
    }
    all_rates
}

/// The result file's document. Built in parts, in the file's key order: one `json!`
/// this size would need a raised recursion limit.
fn result_document(
    args: &Args,
    targets: &[SmtpChoice],
    runs: Vec<Value>,
    mongo_ceilings: Option<&MongoCeilings>,
    machine: &Machine,
    started: Instant,
) -> Value {
    let primary = primary_run(&runs, smtp_name(targets[0]));
    let mut result = json!({
        "benchmark": "notifier",
        "events": args.events,
        "smtp_target": primary["smtp_target"],
        "mails_per_sec": primary["mails_per_sec"],
        "send_p50_ms": primary["send_p50_ms"],
        "send_p99_ms": primary["send_p99_ms"],
        "latency_basis": primary["latency_basis"],
        "end_to_end_p50_ms": primary["end_to_end_p50_ms"],
        "end_to_end_p99_ms": primary["end_to_end_p99_ms"],
        "peak_rss_mb": primary["peak_rss_mb"],
        "failed": primary["failed"],
        "ceiling_smtp_per_sec": primary["ceiling_smtp_per_sec"],
    });
    report::append(
        &mut result,
        json!({
            "ceiling_mongo_inserts_per_sec": mongo_ceilings.map(|c| c.inserts_single.per_sec),
            "ceiling_mongo_inserts_batched_per_sec": mongo_ceilings.map(|c| c.inserts_batched.per_sec),
            "ceiling_mongo_notifier_path_per_sec": mongo_ceilings.map(|c| c.notifier_path_single.per_sec),
            "ceiling_mongo_notifier_path_batched_per_sec": mongo_ceilings.map(|c| c.notifier_path_batched.per_sec),
            "targets_met": primary["targets_met"],
            "notifier_settings": primary["notifier_settings"],
            "machine": machine,
            "ceilings": {
                "mongo": mongo_ceilings.map(MongoCeilings::to_json),
            },
            "repeat": args.repeat.max(1),
            "primary_run": "the lower median by mails_per_sec of the first SMTP target's runs",
            "mails_per_sec_all_runs": rates_per_target(&runs, targets),
        }),
    );
    report::append(
        &mut result,
        json!({
            "runs": runs,
            "bench_wall_seconds": stats::round3(started.elapsed().as_secs_f64()),
            "command": std::env::args().collect::<Vec<_>>().join(" "),
        }),
    );
    result
}

fn write_result(out: &Path, result: &Value) -> Result<()> {
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(out, serde_json::to_string_pretty(result)? + "\n")
        .with_context(|| format!("writing {}", out.display()))
}
