//! One run against one SMTP server: its ceilings first, then the notifier started on
//! topics, a group and a database of its own, a warm-up mail, the burst of events, the
//! wait for every mail, the readings, and everything stopped and dropped again.

use super::documents::{self, count_status, DocFigures};
use super::feed::{self, bench_producer, delete_topics, publish_all};
use super::mongo::MongoInsertCeilings;
use super::notifier::{RunNames, RunningNotifier};
use super::report::RunRecord;
use super::sampling::{watched_processes, CpuWatch, Memory, RssSampler};
use super::smtp::{maildir_count, start_smtp, SmtpFigures, SmtpServer};
use super::{smtp_name, Args, Paths, SmtpChoice, WARMUP_RECIPIENT};
use crate::{procfs, prom, stats};
use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use mongodb::bson::{doc, Document};
use mongodb::{Client, Collection};
use rdkafka::producer::FutureProducer;
use serde_json::Value;
use shared_events::kafka::{publish, KafkaSettings};
use shared_events::Topics;
use std::time::{Duration, Instant};

/// What every run of a bench shares.
pub struct RunContext<'a> {
    pub args: &'a Args,
    pub paths: &'a Paths,
    pub mongo: &'a Client,
    /// The MongoDB ceilings the run's targets are computed from.
    pub mongo_ceiling: MongoInsertCeilings,
}

/// One run against `target`; its entry of the result file's `runs`.
pub async fn run_target(context: &RunContext<'_>, target: SmtpChoice) -> Result<Value> {
    let args = context.args;
    let name = smtp_name(target);
    eprintln!("[{name}] starting the SMTP server…");
    let mut smtp = start_smtp(args, target, &context.paths.log_dir)?;
    // (a) SMTP ceiling, on this very server, before the notifier runs.
    let smtp_figures = SmtpFigures::measure(args, target, &smtp).await?;
    let maildir_before = smtp.maildir.as_deref().map(maildir_count);

    // The notifier, on its own topics, group and database.
    let names = RunNames::new();
    let topics = create_topics(args, &names).await?;
    let mut notifier = RunningNotifier::start(
        args,
        &context.paths.notifier_bin,
        &context.paths.log_dir,
        name,
        &names,
        smtp.port,
    )
    .await?;
    let after_start_kb = procfs::status_kb(notifier.pid(), "VmRSS");
    let producer = bench_producer(&args.kafka_brokers)?;
    let coll = context
        .mongo
        .database(&names.database)
        .collection::<Document>("notifications");
    let io = RunIo {
        producer: &producer,
        topics: &topics,
        coll: &coll,
    };
    let warmup_seconds = warm_up(&io, &mut notifier).await?;
    let after_warmup_kb = procfs::status_kb(notifier.pid(), "VmRSS");
    eprintln!(
        "[{name}] warm-up mail sent after {warmup_seconds:.1} s; feeding {} events…",
        args.events
    );

    let measured = measure(context, name, &smtp, &mut notifier, &io).await?;
    let docs = DocFigures::read(&coll, measured.t0).await?;
    let notifier_stop = notifier.process.stop(Duration::from_secs(30));
    let (maildir_received, smtp_stop) =
        tear_down(context, &names, &topics, &mut smtp, maildir_before).await;

    let record = RunRecord {
        args,
        name,
        smtp_port: smtp.port,
        published: measured.published,
        publish_errors: measured.publish_errors,
        publish_seconds: measured.publish_seconds,
        observed_seconds: measured.observed_seconds,
        timed_out: measured.timed_out,
        t0: measured.t0,
        docs,
        memory: Memory {
            after_start_kb,
            after_warmup_kb,
            ..measured.memory
        },
        cpu_shares: measured.cpu_shares,
        cpu_seconds: measured.cpu_seconds,
        metrics_text: measured.metrics_text,
        warmup_seconds,
        smtp: smtp_figures,
        maildir_received,
        notifier_bin: &context.paths.notifier_bin,
        notifier_stop,
        smtp_stop,
        mongo_ceiling: context.mongo_ceiling,
    };
    record.print_outcome();
    Ok(record.to_json())
}

/// The run's topics, created before the notifier subscribes to them.
async fn create_topics(args: &Args, names: &RunNames) -> Result<Topics> {
    let kafka = KafkaSettings {
        partitions: args.partitions,
        ..KafkaSettings::local(&args.kafka_brokers, &names.prefix)
    };
    kafka
        .ensure_topics()
        .await
        .context("creating the bench topics (is `infra/stack deps` running?)")?;
    Ok(kafka.topics())
}

/// The run's way in (the producer and its topics) and way out (the notifier's history).
struct RunIo<'a> {
    producer: &'a FutureProducer,
    topics: &'a Topics,
    coll: &'a Collection<Document>,
}

/// Warm-up: one mail, so the group has joined and the connections are open before the
/// clock starts. Returns how long it took (s).
async fn warm_up(io: &RunIo<'_>, notifier: &mut RunningNotifier) -> Result<f64> {
    publish(io.producer, io.topics, &feed::warmup_event()).await?;
    let warm_started = Instant::now();
    loop {
        let done = io
            .coll
            .count_documents(doc! { "recipient": WARMUP_RECIPIENT, "status": "SENT" })
            .await?;
        if done >= 1 {
            break;
        }
        notifier.check_running("")?;
        if warm_started.elapsed() > Duration::from_secs(90) {
            bail!(
                "the warm-up mail was not SENT within 90 s; see {}",
                notifier.log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(warm_started.elapsed().as_secs_f64())
}

/// What the timed part of a run measured, up to the MongoDB confirmation.
struct Measured {
    t0: DateTime<Utc>,
    published: u64,
    publish_errors: u64,
    publish_seconds: f64,
    observed_seconds: f64,
    timed_out: bool,
    /// But for the readings after start-up and warm-up.
    memory: Memory,
    cpu_shares: Value,
    cpu_seconds: Value,
    metrics_text: String,
}

/// The timed part: the burst of events, the wait for every mail, the readings at its
/// end, and the MongoDB confirmation.
async fn measure(
    context: &RunContext<'_>,
    name: &str,
    smtp: &SmtpServer,
    notifier: &mut RunningNotifier,
    io: &RunIo<'_>,
) -> Result<Measured> {
    let (args, coll) = (context.args, io.coll);
    let pid = notifier.pid();
    let sampler = RssSampler::start(pid);
    let watched = watched_processes(pid, name, smtp.process.pid(), &context.paths.state_dir);
    let cpu = CpuWatch::start(watched);
    let t0: DateTime<Utc> = Utc::now();
    let run_started = Instant::now();
    let publish_errors = publish_all(io.producer, io.topics, args.events).await;
    let publish_seconds = run_started.elapsed().as_secs_f64();
    let expected = args.events - publish_errors;
    eprintln!(
        "[{name}] published {expected} in {publish_seconds:.2} s ({:.0}/s); waiting for the mails…",
        stats::rate(expected, publish_seconds)
    );
    let deadline = run_started + Duration::from_secs(args.timeout_secs);
    let timed_out = wait_for_mails(name, notifier, coll, expected, run_started, deadline).await?;
    let observed_seconds = run_started.elapsed().as_secs_f64();
    let (cpu_shares, cpu_seconds) = cpu.shares();
    let metrics_text = notifier.metrics().await.unwrap_or_default();
    let (max_sampled_kb, samples) = sampler.finish();
    let memory = Memory {
        hwm_kb: procfs::status_kb(pid, "VmHWM").unwrap_or(0),
        max_sampled_kb,
        samples,
        after_start_kb: None,
        after_warmup_kb: None,
    };
    documents::confirm(coll, expected, timed_out).await?;
    Ok(Measured {
        t0,
        published: expected,
        publish_errors,
        publish_seconds,
        observed_seconds,
        timed_out,
        memory,
        cpu_shares,
        cpu_seconds,
        metrics_text,
    })
}

/// Waits until `expected` mails are finished (sent or failed), or `deadline`; true when
/// the deadline was reached. Progress comes from the notifier's own counters (cheap),
/// or from MongoDB while `/metrics` does not answer.
async fn wait_for_mails(
    name: &str,
    notifier: &mut RunningNotifier,
    coll: &Collection<Document>,
    expected: u64,
    run_started: Instant,
    deadline: Instant,
) -> Result<bool> {
    let mut last_print = Instant::now();
    loop {
        let finished = match notifier.metrics().await.map(|text| finished_count(&text)) {
            Some(n) => n.saturating_sub(1), // the warm-up mail
            None => count_status(coll, "SENT").await? + count_status(coll, "FAILED").await?,
        };
        if finished >= expected {
            return Ok(false);
        }
        if last_print.elapsed() > Duration::from_secs(5) {
            eprintln!(
                "[{name}]   {finished}/{expected} after {:.0} s",
                run_started.elapsed().as_secs_f64()
            );
            last_print = Instant::now();
        }
        notifier.check_running(" mid-run")?;
        if Instant::now() > deadline {
            eprintln!("[{name}] deadline reached with {finished}/{expected} mails finished");
            return Ok(true);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Mails the notifier counts as sent or failed (the warm-up mail included).
fn finished_count(metrics: &str) -> u64 {
    let sent = prom::sample_sum(metrics, "notifier_mails_sent_total").unwrap_or(0.0);
    let failed = prom::sample_sum(metrics, "notifier_mails_failed_total").unwrap_or(0.0);
    (sent + failed) as u64
}

/// Once the notifier has stopped: counts the mails its Maildir received (those since
/// `maildir_before`, the warm-up mail included), stops the SMTP server, removes the
/// Maildir and, unless `--keep-data`, drops the run's database and topics. Returns the
/// count and how the server stopped.
async fn tear_down(
    context: &RunContext<'_>,
    names: &RunNames,
    topics: &Topics,
    smtp: &mut SmtpServer,
    maildir_before: Option<u64>,
) -> (Option<u64>, String) {
    let maildir_received = smtp
        .maildir
        .as_deref()
        .map(|m| maildir_count(m).saturating_sub(maildir_before.unwrap_or(0)));
    let (smtp_stop, _) = smtp.process.stop(Duration::from_secs(10));
    if let Some(maildir) = &smtp.maildir {
        let _ = std::fs::remove_dir_all(maildir);
    }
    if !context.args.keep_data {
        let _ = context.mongo.database(&names.database).drop().await;
        delete_topics(&context.args.kafka_brokers, topics).await;
    }
    (maildir_received, smtp_stop)
}
