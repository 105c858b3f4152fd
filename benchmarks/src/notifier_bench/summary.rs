//! The summary `notifier-bench` prints at the end, read back from the result document.

use super::RSS_TARGET_MB;
use serde_json::Value;

pub fn print_summary(r: &Value) {
    println!();
    println!("notifier benchmark ({} events)", r["events"]);
    if let Some(runs) = r["runs"].as_array() {
        for run in runs {
            println!(
                "  SMTP {:<9} {:>8} mails/s   send p50 {} ms  p99 {} ms ({})   end-to-end p50 {} ms  p99 {} ms   peak RSS {} MB   failed {}",
                run["smtp_target"].as_str().unwrap_or("?"),
                run["mails_per_sec"],
                run["send_p50_ms"],
                run["send_p99_ms"],
                run["latency_basis"].as_str().unwrap_or("?"),
                run["end_to_end_p50_ms"],
                run["end_to_end_p99_ms"],
                run["peak_rss_mb"],
                run["failed"],
            );
            println!(
                "    ceilings: SMTP {} mails/s (smtp-source, {} sessions), MongoDB {} inserts/s; target ≥ {} mails/s: {}; RSS ≤ {RSS_TARGET_MB} MB: {}",
                run["ceiling_smtp_per_sec"],
                run["notifier_settings"]["smtp_pool_size"],
                r["ceiling_mongo_inserts_per_sec"],
                run["targets_met"]["throughput"]["threshold_mails_per_sec"],
                run["targets_met"]["throughput"]["met"],
                run["targets_met"]["peak_rss"]["met"],
            );
            if let Some(cpu) = run["cpu_share_during_run"].as_object() {
                let parts: Vec<String> = cpu
                    .iter()
                    .map(|(name, share)| format!("{name} {share}"))
                    .collect();
                println!("    CPU (cores busy during the run): {}", parts.join(", "));
            }
            if run["lettre_probe"].is_object() {
                println!(
                    "    lettre alone: pooled transport {} mails/s; own connections: TCP_NODELAY {} mails/s, without {} mails/s",
                    run["lettre_probe"]["pooled_transport"]["per_sec"],
                    run["lettre_probe"]["own_connections_nodelay"]["per_sec"],
                    run["lettre_probe"]["own_connections_default"]["per_sec"],
                );
            }
            if let Some(mean) = run["notifier_metrics"]["smtp_send_mean_ms"].as_f64() {
                println!(
                    "    notifier's own timings: SMTP send mean {mean} ms, MongoDB write mean {} ms",
                    run["notifier_metrics"]["mongodb_write_mean_ms"]
                );
            }
        }
    }
    println!(
        "  MongoDB inserts: single {} docs/s (the target's ceiling), batched {} docs/s",
        r["ceiling_mongo_inserts_per_sec"], r["ceiling_mongo_inserts_batched_per_sec"]
    );
    println!(
        "  MongoDB notifier write path (insert + replace, all indexes): single {} mails/s, batched {} mails/s",
        r["ceiling_mongo_notifier_path_per_sec"], r["ceiling_mongo_notifier_path_batched_per_sec"]
    );
}
