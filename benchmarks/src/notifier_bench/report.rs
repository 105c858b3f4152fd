//! One run's result document: what was measured, the figures derived from it and
//! whether the targets were met.
//!
//! The document is built in parts, appended in the file's key order (serde_json keeps
//! insertion order here): one `json!` of this size would need a raised recursion limit.

use super::documents::DocFigures;
use super::mongo::MongoInsertCeilings;
use super::sampling::Memory;
use super::smtp::SmtpFigures;
use super::{Args, RSS_TARGET_MB, THROUGHPUT_TARGET_SHARE};
use crate::{prom, stats};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

/// Appends `more`'s entries to the object `target` (both objects).
pub fn append(target: &mut Value, more: Value) {
    if let (Some(target), Value::Object(more)) = (target.as_object_mut(), more) {
        target.extend(more);
    }
}

/// Everything one run measured.
pub struct RunRecord<'a> {
    pub args: &'a Args,
    /// The SMTP target's name.
    pub name: &'static str,
    pub smtp_port: u16,
    /// Events published (those the notifier must mail).
    pub published: u64,
    pub publish_errors: u64,
    pub publish_seconds: f64,
    /// First publish → every mail finished (or the deadline).
    pub observed_seconds: f64,
    pub timed_out: bool,
    /// When the first event was published.
    pub t0: DateTime<Utc>,
    pub docs: DocFigures,
    pub memory: Memory,
    pub cpu_shares: Value,
    pub cpu_seconds: Value,
    /// The notifier's `/metrics` at the end.
    pub metrics_text: String,
    pub warmup_seconds: f64,
    pub smtp: SmtpFigures,
    pub maildir_received: Option<u64>,
    pub notifier_bin: &'a Path,
    /// How the notifier stopped, and how long it took.
    pub notifier_stop: (String, Duration),
    pub smtp_stop: String,
    pub mongo_ceiling: MongoInsertCeilings,
}

impl RunRecord<'_> {
    /// First publish → latest `sent_at` (the observed time when nothing was sent).
    fn run_seconds(&self) -> f64 {
        self.docs
            .last_sent
            .map(|l| (l - self.t0).num_milliseconds() as f64 / 1000.0)
            .unwrap_or(self.observed_seconds)
    }

    fn mails_per_sec(&self) -> f64 {
        stats::rate(self.docs.sent, self.run_seconds())
    }

    fn peak_rss_mb(&self) -> f64 {
        stats::round3(self.memory.peak_kb() as f64 / 1024.0)
    }

    /// The line the bench prints when a run ends.
    pub fn print_outcome(&self) {
        let (name, sent, failed) = (self.name, self.docs.sent, self.docs.failed);
        let (run_seconds, mails_per_sec) = (self.run_seconds(), self.mails_per_sec());
        let stop_how = &self.notifier_stop.0;
        eprintln!("[{name}] {sent} sent, {failed} failed in {run_seconds:.2} s → {mails_per_sec:.0} mails/s; notifier stopped ({stop_how})");
    }

    /// The run's entry in the result file's `runs`.
    pub fn to_json(&self) -> Value {
        let mut run = self.throughput_json();
        append(&mut run, self.latency_json());
        append(&mut run, self.resources_json());
        append(&mut run, self.context_json());
        run
    }

    fn throughput_json(&self) -> Value {
        let d = &self.docs;
        json!({
            "smtp_target": self.name,
            "smtp_port": self.smtp_port,
            "events": self.args.events,
            "published": self.published,
            "publish_errors": self.publish_errors,
            "publish_seconds": stats::round3(self.publish_seconds),
            "publish_per_sec": stats::rate(self.published, self.publish_seconds),
            "feed_bound": self.publish_seconds > 0.8 * self.observed_seconds,
            "sent": d.sent,
            "failed": d.failed,
            "unfinished": d.unfinished,
            "retried": d.retried,
            "timed_out": self.timed_out,
            "run_seconds": stats::round3(self.run_seconds()),
            "run_seconds_basis": "first publish → latest sent_at among the history documents",
            "mails_per_sec": self.mails_per_sec(),
            "sent_per_second": d.per_second,
        })
    }

    fn latency_json(&self) -> Value {
        let (send, end_to_end) = (&self.docs.send, &self.docs.end_to_end);
        json!({
            "latency_basis": "sent_at - created_at (claim of the PENDING history record → SMTP server accepted the mail)",
            "send_p50_ms": send.percentile_ms(50.0),
            "send_p99_ms": send.percentile_ms(99.0),
            "send_latency": send.summary(),
            "end_to_end_basis": "sent_at - event_occurred_at (event built just before publishing → SMTP accepted); in a burst it is mostly queueing behind the earlier events",
            "end_to_end_p50_ms": end_to_end.percentile_ms(50.0),
            "end_to_end_p99_ms": end_to_end.percentile_ms(99.0),
            "end_to_end_latency": end_to_end.summary(),
        })
    }

    fn resources_json(&self) -> Value {
        let m = &self.memory;
        json!({
            "peak_rss_mb": self.peak_rss_mb(),
            "rss": {
                "vm_hwm_kb": m.hwm_kb,
                "max_sampled_vm_rss_kb": m.max_sampled_kb,
                "samples": m.samples,
                "after_start_kb": m.after_start_kb,
                "after_warmup_kb": m.after_warmup_kb,
                "method": "VmHWM of /proc/<pid>/status at the end (whole life), and VmRSS polled every 20 ms",
            },
            "cpu_share_during_run": self.cpu_shares,
            "cpu_seconds_during_run": self.cpu_seconds,
            "notifier_metrics": notifier_metrics(&self.metrics_text),
        })
    }

    fn context_json(&self) -> Value {
        let (stop_how, stop_took) = &self.notifier_stop;
        json!({
            "warmup_seconds": stats::round3(self.warmup_seconds),
            "ceiling_smtp_per_sec": self.smtp.ceiling,
            "ceiling_smtp": self.smtp.ceilings,
            "lettre_probe": self.smtp.lettre,
            "maildir_received_incl_warmup": self.maildir_received,
            "loadavg_at_start": crate::machine::loadavg(),
            "notifier_settings": notifier_settings(self.args, self.notifier_bin),
            "notifier_stop": { "how": stop_how, "seconds": stats::round3(stop_took.as_secs_f64()) },
            "smtp_stop": self.smtp_stop,
            "targets_met": self.targets_met(),
        })
    }

    /// The targets (throughput against the lower ceiling, peak RSS, no failures)
    /// and the throughput against the batched MongoDB ceiling, for information.
    fn targets_met(&self) -> Value {
        let ceiling_smtp = self.smtp.ceiling;
        let MongoInsertCeilings { single, batched } = self.mongo_ceiling;
        let share_of_lower = |mongo: Option<f64>| match (ceiling_smtp, mongo) {
            (Some(a), Some(b)) => Some(stats::round3(a.min(b) * THROUGHPUT_TARGET_SHARE)),
            _ => None,
        };
        let (threshold, threshold_batched) = (share_of_lower(single), share_of_lower(batched));
        let (mails_per_sec, peak_rss_mb) = (self.mails_per_sec(), self.peak_rss_mb());
        let d = &self.docs;
        json!({
            "throughput": {
                "rule": "mails_per_sec >= 0.8 × min(ceiling_smtp_per_sec, ceiling_mongo_inserts_per_sec)",
                "threshold_mails_per_sec": threshold,
                "measured": mails_per_sec,
                "met": threshold.map(|t| mails_per_sec >= t),
            },
            "throughput_vs_batched_mongo_ceiling": {
                "rule": "informational, not the issue's target: mails_per_sec >= 0.8 × min(ceiling_smtp_per_sec, ceiling_mongo_inserts_batched_per_sec)",
                "threshold_mails_per_sec": threshold_batched,
                "measured": mails_per_sec,
                "met": threshold_batched.map(|t| mails_per_sec >= t),
            },
            "peak_rss": {
                "rule": "peak_rss_mb <= 40",
                "threshold_mb": RSS_TARGET_MB,
                "measured": peak_rss_mb,
                "met": peak_rss_mb <= RSS_TARGET_MB,
            },
            "no_failures": d.failed == 0 && d.unfinished == 0 && !self.timed_out,
        })
    }
}

/// The notifier's own timings and batch sizes, from its `/metrics` at the end.
fn notifier_metrics(metrics_text: &str) -> Value {
    let smtp_send = prom::timing(metrics_text, "notifier_mail_send_duration_seconds");
    let mongo_write = prom::timing(metrics_text, "notifier_mongodb_write_duration_seconds");
    let batch_sizes = |op: &str| {
        let count = prom::sample_sum(
            metrics_text,
            &format!("notifier_mongodb_batch_size_count{{op=\"{op}\"}}"),
        )?;
        let sum = prom::sample_sum(
            metrics_text,
            &format!("notifier_mongodb_batch_size_sum{{op=\"{op}\"}}"),
        )?;
        Some(json!({
            "writes": count,
            "documents": sum,
            "mean": if count > 0.0 { stats::round3(sum / count) } else { 0.0 },
        }))
    };
    json!({
        "smtp_send_mean_ms": smtp_send.map(|t| t.mean_ms),
        "smtp_send": smtp_send,
        "mongodb_write_mean_ms": mongo_write.map(|t| t.mean_ms),
        "mongodb_write": mongo_write,
        "mongodb_batch_size": {
            "claim": batch_sizes("claim"),
            "outcome": batch_sizes("outcome"),
        },
        "note": "from the notifier's /metrics at the end of the run (warm-up included); a MongoDB write is one command: a batch of claims (insert_many), a batch of outcomes (update), or a single fallback write (before batching: two single writes per mail)",
    })
}

/// What the notifier ran as: its binary and the settings the bench gave it.
fn notifier_settings(args: &Args, notifier_bin: &Path) -> Value {
    let or_default = |v: Option<Value>| v.unwrap_or_else(|| json!("notifier default"));
    json!({
        "binary": notifier_bin.display().to_string(),
        "binary_modified": binary_modified(notifier_bin),
        "binary_bytes": std::fs::metadata(notifier_bin).map(|m| m.len()).ok(),
        "max_in_flight": args.max_in_flight,
        "smtp_pool_size": args.pool_size,
        "partitions": args.partitions,
        "mongodb_driver_pool": "driver default (max 10)",
        "mongodb_batch_max": or_default(args.notifier_batch_max.map(|v| json!(v))),
        "mongodb_batch_window_ms": or_default(args.notifier_batch_window_ms.map(|v| json!(v))),
        "rust_log": "warn",
    })
}

/// When the binary was built (its modification time, UTC), so a result can be matched
/// to the code it measured.
fn binary_modified(path: &Path) -> Option<String> {
    let modified = std::fs::metadata(path).ok()?.modified().ok()?;
    Some(DateTime::<Utc>::from(modified).to_rfc3339_opts(SecondsFormat::Secs, true))
}
