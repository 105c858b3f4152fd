//! The heavy run's result file.
//!
//! When `FAULT_RESULTS` names a file, every scenario adds its entry to it (a JSON
//! object: `{"suite", "updated_at", "scenarios": {name: {...}}}`); `infra/stack faults`
//! points it at `benchmarks/results/faults/latest.json`. Scenarios run one at a time
//! (the suite serialises them), so read-modify-write is safe.

use super::invariants::Verdict;
use super::shopper::LoadOutcome;
use serde_json::{json, Value};
use std::time::Duration;

/// Adds scenario `name`'s result to `$FAULT_RESULTS` (nothing when it is not set).
/// `details` holds scenario-specific facts (fault timings, counts).
pub fn record(
    name: &str,
    load: &LoadOutcome,
    verdict: &Verdict,
    duration: Duration,
    details: Value,
) {
    let Some(path) = std::env::var_os("FAULT_RESULTS") else {
        return;
    };
    let path = std::path::PathBuf::from(path);
    let mut document: Value = std::fs::read(&path)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_else(|| json!({"suite": "e2e faults", "scenarios": {}}));
    let entry = json!({
        "passed": verdict.holds(),
        "orders": verdict.orders,
        "not_accepted": verdict.not_accepted,
        "completed": verdict.completed,
        "cancelled": verdict.cancelled,
        "refunded": verdict.refunded,
        "payment_failed": verdict.payment_failed,
        "mails": verdict.mails,
        "resent_after_crash": verdict.resent_after_crash,
        "duration_secs": round(duration.as_secs_f64()),
        "load_secs": round(load.duration.as_secs_f64()),
        "settle_secs": round(verdict.settle_secs),
        "mail_secs": round(verdict.mail_secs),
        "driver_retries": load.retries,
        "invariants": verdict.checks,
        "details": details,
    });
    document["updated_at"] = json!(chrono::Utc::now().to_rfc3339());
    document["orders_per_scenario"] = json!(std::env::var("FAULT_ORDERS").ok());
    if !document["scenarios"].is_object() {
        document["scenarios"] = json!({});
    }
    document["scenarios"][name] = entry;
    if let Some(parent) = path.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    let text = serde_json::to_string_pretty(&document).expect("JSON");
    let temp = path.with_extension("json.tmp");
    if let Err(error) =
        std::fs::write(&temp, text + "\n").and_then(|()| std::fs::rename(&temp, &path))
    {
        eprintln!("could not write {}: {error}", path.display());
    }
}

fn round(secs: f64) -> f64 {
    (secs * 10.0).round() / 10.0
}
