//! `report.md`, `summary.json`, the README's summary table, and the definitions.

use crate::targets::find;
use serde_json::{json, Value};
use std::fmt::Write as _;

pub fn fmt(v: &Value) -> String {
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

/// `text` on one table-safe line: its last `max` characters (where the reason is).
pub fn one_line(text: &str, max: usize) -> String {
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

/// `p50 / p99` of a latency summary.
fn p50_p99(summary: &Value) -> String {
    format!("{} / {}", fmt(&summary["p50_ms"]), fmt(&summary["p99_ms"]))
}

/// The case column: `3`, or `3 (payment=2,notifier=2)`.
fn case_label(r: &Value) -> String {
    match r["variant"].as_str() {
        Some(v) => format!("{} ({v})", fmt(&r["case"])),
        None => fmt(&r["case"]),
    }
}

fn key_values(map: &Value) -> String {
    map.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k} {}", fmt(v)))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

fn errors_cell(r: &Value) -> String {
    if r["errors_total"].as_u64().unwrap_or(0) == 0 {
        return "0".to_owned();
    }
    format!("{} ({})", fmt(&r["errors_total"]), key_values(&r["errors"]))
}

fn checkpoints_cell(r: &Value) -> String {
    let marks: Vec<String> = r["checkpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| format!("{}: {}", fmt(&c["what"]), fmt(&c["unfinished"])))
        .collect();
    if marks.is_empty() {
        "–".to_owned()
    } else {
        marks.join("; ")
    }
}

const RUN_HEADER: &str = "| case | status | accepted/s | accept p50 / p99 ms | time to payment page p50 / p99 ms | approval → COMPLETED p50 / p99 ms | approval → last mail p50 / p99 ms | unfinished at the checkpoints | unfinished after the drain | drained after s | errors | e2e p50 / p99 ms | relay lag p99 ms | events/s |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|";

fn run_line(r: &Value) -> String {
    if r["status"] != "ok" {
        let why = one_line(&fmt(&r["error"]), 400);
        return format!(
            "| {} | **{}**: {why} |{}",
            case_label(r),
            fmt(&r["status"]),
            " |".repeat(12)
        );
    }
    let cells = [
        case_label(r),
        "ok".to_owned(),
        fmt(&r["accepted_per_sec"]),
        p50_p99(&r["accept_latency"]),
        p50_p99(&r["payment_page_latency"]),
        p50_p99(&r["approval_to_completed_latency"]),
        p50_p99(&r["approval_to_last_mail_latency"]),
        checkpoints_cell(r),
        fmt(&r["unfinished"]),
        fmt(&r["drained_after_s"]),
        errors_cell(r),
        p50_p99(&r["e2e_latency"]),
        fmt(&r["relay"]["lag_p99_ms"]),
        fmt(&r["relay"]["events_per_sec"]),
    ];
    format!("| {} |", cells.join(" | "))
}

fn header(md: &mut String, results: &Value) {
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
        "Load: open loop at {} orders/s for {} s per scenario (the outage scenario at least outage + 10 s), shoppers polling every {} ms at first, backing off ×1.5 to 1 s; drain at most {} s (longer when a checkpoint is later). Unfinished orders are counted {} s after the load and {} s after the outage ended, from stored timestamps. Capacity: closed loop of {} accept-only shoppers for {} s. Every run has its own stack (`infra/stack up --case N`, private ports, fresh databases, tansu on a fresh SQLite file, its own nx-27017 and SMTP sink). Command: `{}`.\n",
        fmt(&s["rate_per_sec"]),
        fmt(&s["duration_s"]),
        fmt(&s["poll_interval_ms"]),
        fmt(&s["drain_max_s"]),
        fmt(&s["checkpoints"]["after_load_s"]),
        fmt(&s["checkpoints"]["after_outage_s"]),
        fmt(&s["capacity"]["concurrency"]),
        fmt(&s["capacity"]["duration_s"]),
        fmt(&results["command"]),
    );
}

fn targets(md: &mut String, results: &Value) {
    let _ = writeln!(md, "## Targets\n");
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
}

fn error_suffix(v: &Value) -> String {
    v["error"]
        .as_str()
        .map(|e| format!(" error: {e}"))
        .unwrap_or_default()
}

fn ceilings(md: &mut String, results: &Value) {
    let c = &results["ceilings"];
    let _ = writeln!(md, "\n## Ceilings (measured in the same run)\n");
    let _ = writeln!(md, "| server | what | figure |\n|---|---|---|");
    let (pg, kafka, smtp) = (&c["pgbench"], &c["kafka_produce"], &c["smtp"]);
    let _ = writeln!(
        md,
        "| PostgreSQL | pgbench, the place-order transaction, {} clients | {} TPS (avg {} ms){} |",
        fmt(&pg["clients"]),
        fmt(&pg["tps"]),
        fmt(&pg["latency_avg_ms"]),
        error_suffix(pg)
    );
    let _ = writeln!(
        md,
        "| tansu (SQLite engine) | rdkafka producer, services' settings, {}-byte events, acks=all | {} msgs/s (ack p99 {} ms){} |",
        fmt(&kafka["message_bytes"]),
        fmt(&kafka["messages_per_sec"]),
        fmt(&kafka["ack_p99_ms"]),
        error_suffix(kafka)
    );
    let _ = writeln!(
        md,
        "| SMTP | smtp-source → smtp-sink, 16 sessions, 4 kB | {} mails/s{} |",
        fmt(&smtp["mails_per_sec"]),
        error_suffix(smtp)
    );
}

fn processes(md: &mut String, rows: &[&Value]) {
    let ok: Vec<&&Value> = rows.iter().filter(|r| r["status"] == "ok").collect();
    if ok.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "\nCPU seconds over the run (load + drain) and peak RSS (MB) per process:\n"
    );
    let _ = writeln!(md, "| case | CPU s | peak RSS MB |\n|---|---|---|");
    for r in ok {
        let _ = writeln!(
            md,
            "| {} | {} | {} |",
            case_label(r),
            key_values(&r["cpu_seconds"]),
            key_values(&r["peak_rss_mb"])
        );
    }
}

fn scenarios(md: &mut String, results: &Value, figures: &[(String, String)]) {
    let runs: Vec<&Value> = results["runs"].as_array().into_iter().flatten().collect();
    for scenario in results["scenarios"].as_array().into_iter().flatten() {
        let name = scenario.as_str().unwrap_or("?");
        let rows: Vec<&Value> = runs
            .iter()
            .copied()
            .filter(|r| r["scenario"] == *scenario)
            .collect();
        let _ = writeln!(md, "\n## Scenario `{name}`\n");
        let _ = writeln!(md, "{}\n", scenario_text(name));
        let _ = writeln!(md, "{RUN_HEADER}");
        for r in &rows {
            let _ = writeln!(md, "{}", run_line(r));
        }
        processes(md, &rows);
        let suffix = format!("_{name}.svg");
        for (path, caption) in figures.iter().filter(|(p, _)| p.ends_with(&suffix)) {
            let _ = writeln!(md, "\n![{caption}]({path})");
        }
    }
}

pub fn report_md(results: &Value, figures: &[(String, String)]) -> String {
    let mut md = String::new();
    header(&mut md, results);
    targets(&mut md, results);
    let _ = writeln!(md, "\n## Summary (the README's table)\n");
    let _ = writeln!(md, "{}", readme_table(results));
    ceilings(&mut md, results);
    let _ = writeln!(md, "\n## Figures\n");
    for (path, caption) in figures.iter().filter(|(p, _)| !p.contains("cdf_")) {
        let _ = writeln!(md, "![{caption}]({path})\n");
    }
    scenarios(&mut md, results, figures);
    let _ = writeln!(md, "\n## Definitions\n");
    if let Some(d) = results["definitions"].as_object() {
        for (k, v) in d {
            let _ = writeln!(md, "* **{k}** — {}", fmt(v));
        }
    }
    md
}

/// One cell of the README's table.
fn readme_cell(r: &Value) -> String {
    if r["status"] != "ok" {
        return format!("**{}**", fmt(&r["status"]));
    }
    let mut parts = vec![
        format!("{}/s", fmt(&r["accepted_per_sec"])),
        format!("accept p99 {} ms", fmt(&r["accept_latency"]["p99_ms"])),
    ];
    if r["scenario"] == "capacity" {
        return parts.join(", ");
    }
    parts.push(format!(
        "page p99 {} ms",
        fmt(&r["payment_page_latency"]["p99_ms"])
    ));
    parts.push(format!(
        "approval→done p99 {} ms",
        fmt(&r["approval_to_completed_latency"]["p99_ms"])
    ));
    parts.push(format!(
        "approval→mail p99 {} ms",
        fmt(&r["approval_to_last_mail_latency"]["p99_ms"])
    ));
    parts.push(format!("unfinished {}", checkpoints_cell(r)));
    parts.join("; ")
}

/// Scenario × case, one short cell each (the format of README's "What the experiment
/// found"), plus a row per multi-instance run.
pub fn readme_table(results: &Value) -> String {
    let cases: Vec<u64> = results["cases"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_u64)
        .collect();
    let runs = &results["runs"];
    let mut md = format!(
        "| scenario | {} |\n|---|{}\n",
        cases
            .iter()
            .map(|c| format!("case {c}"))
            .collect::<Vec<_>>()
            .join(" | "),
        "---|".repeat(cases.len())
    );
    for scenario in results["scenarios"].as_array().into_iter().flatten() {
        let name = scenario.as_str().unwrap_or("?");
        let cells: Vec<String> = cases
            .iter()
            .map(|&c| {
                let any =
                    runs.as_array().into_iter().flatten().find(|r| {
                        r["case"] == c && r["scenario"] == name && r["variant"].is_null()
                    });
                any.map(readme_cell).unwrap_or_else(|| "–".to_owned())
            })
            .collect();
        let _ = writeln!(md, "| {name} | {} |", cells.join(" | "));
    }
    for r in runs
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| !r["variant"].is_null())
    {
        let _ = writeln!(
            md,
            "\n{} × {}: {}",
            format_args!("case {}", case_label(r)),
            fmt(&r["scenario"]),
            readme_cell(r)
        );
    }
    md
}

fn summary_entry(r: &Value) -> Value {
    let p = |key: &str, q: &str| r[key][q].clone();
    json!({
        "status": r["status"],
        "accepted_per_sec": r["accepted_per_sec"],
        "accept_p99_ms": p("accept_latency", "p99_ms"),
        "payment_page_p50_ms": p("payment_page_latency", "p50_ms"),
        "payment_page_p99_ms": p("payment_page_latency", "p99_ms"),
        "approval_to_completed_p50_ms": p("approval_to_completed_latency", "p50_ms"),
        "approval_to_completed_p99_ms": p("approval_to_completed_latency", "p99_ms"),
        "approval_to_last_mail_p50_ms": p("approval_to_last_mail_latency", "p50_ms"),
        "approval_to_last_mail_p99_ms": p("approval_to_last_mail_latency", "p99_ms"),
        "e2e_p99_ms": p("e2e_latency", "p99_ms"),
        "unfinished_after_load": r["unfinished_after_load"],
        "unfinished_after_outage": r["unfinished_after_outage"],
        "unfinished": r["unfinished"],
    })
}

pub fn summary_json(results: &Value) -> Value {
    let mut cases = serde_json::Map::new();
    for r in results["runs"].as_array().into_iter().flatten() {
        let scenario = match r["variant"].as_str() {
            Some(v) => format!("{} ({v})", fmt(&r["scenario"])),
            None => fmt(&r["scenario"]),
        };
        if let Some(m) = cases
            .entry(r["case"].to_string())
            .or_insert_with(|| json!({}))
            .as_object_mut()
        {
            m.insert(scenario, summary_entry(r));
        }
    }
    let relay = find(&results["runs"], 3, "baseline").map(|r| r["relay_lag_p99_ms"].clone());
    let verdicts: Vec<Value> = results["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| json!({ "name": t["name"], "met": t["met"], "measured": t["measured"], "threshold": t["threshold"] }))
        .collect();
    json!({
        "mode": results["mode"],
        "profile": results["profile"],
        "started_at": results["started_at"],
        "cases": cases,
        "pgbench_tps": results["ceilings"]["pgbench"]["tps"],
        "relay_lag_p99_ms": relay.unwrap_or(Value::Null),
        "relay_lag_basis": "case 3 baseline",
        "targets": verdicts,
    })
}

pub fn scenario_text(name: &str) -> &'static str {
    match name {
        "baseline" => "No fault.",
        "gateway-200ms" => "Every Kakao Pay API call 200 ms slower (`PUT /__sim/faults {\"latency_ms\": 200}` before the load).",
        "gateway-1s" => "Every Kakao Pay API call 1 s slower (`latency_ms: 1000`). The full matrix also runs case 3 with two payment and two notifier processes (row `3 (payment=2,notifier=2)`).",
        "gateway-outage-30s" => "Kakao Pay answers 503 (`outage: true`) from 5 s into the load for 30 s (short mode: from 1 s for 4 s); payments that exhaust their retries fail and their orders are cancelled.",
        "smtp-slow-500ms" => "The SMTP sink waits 500 ms before accepting each mail (`SMTP_SINK_DELAY_MS=500`).",
        "burst-10x" => "The order rate ×10 for 10 s (short mode: 2 s) a third of the way into the run.",
        "capacity" => "Closed loop of accept-only shoppers (POST /orders, nothing else) at the pgbench concurrency: the order service's accept capacity. Orders stay unpaid, so no drain and no saga figures.",
        _ => "",
    }
}

pub fn definitions() -> Value {
    json!({
        "accepted_per_sec": "202 answers / the issuing phase's seconds (open loop: the schedule's length)",
        "accept_latency": "POST /orders → 202, measured by the load generator; open loop: from the order's scheduled time (coordinated omission corrected). HDR histogram, µs resolution",
        "payment_page_latency (time to payment page)": "per order, orders.created_at → saga_steps.at of its first PaymentReady step with outcome 'applied' (orders database): from the place-order transaction to the order service storing the redirect URL that GET /orders/{id} then shows. Both are PostgreSQL now() (transaction start), µs; the shoppers' polling is not in it",
        "approval_to_completed_latency (approval → COMPLETED)": "per completed order, the approval callback → orders.completed_at. The callback's arrival is not stored; its closest stored timestamp is the start of payment's first approve call to Kakao Pay: min(gateway_calls.called_at − latency_ms) over the payment's kind = 'approve' rows (payments database; called_at is written right after each attempt). It follows the browser's arrival at /payments/{id}/approve by one READY → APPROVING update, and includes the gateway's approve latency",
        "approval_to_last_mail_latency (approval → last mail stored)": "per order whose final mail is stored, the approval callback (as above) → the latest sent_at of its SENT mails (payment_completed, order_completed): when the SMTP server accepted the last mail. Mail history from MongoDB `notifications` (cases 3-4, BSON dates, ms) or PostgreSQL `mail_history` (cases 1-2)",
        "e2e_latency": "per order, orders.created_at → sent_at of its final mail (order_completed, order_cancelled or order_refunded), read from the databases for every order. Includes the shopper's own steps (polling for the payment page, approving)",
        "checkpoints (unfinished at the checkpoints)": "orders accepted by the moment and not finished at it, from stored timestamps: finished = ended (completed_at or cancelled_at) and final mail sent_at, both ≤ the moment. Moments: after_load_s after the last order was issued (every open-loop scenario) and after_outage_s after the gateway outage ended (the outage scenario), on the experiment's clock (the same machine's). The drain always lasts past the last moment",
        "warm_up": "before the measured load (and before the scenario's faults), 6 orders walked through the whole saga until their final mails are stored (at most 90 s): `infra/stack up` returns when every /readyz answers, but the consumers join their groups on tansu seconds later, and that start-up delay would otherwise dominate the first orders' figures. Warm-up orders (created before the load's start) are left out of every figure except orders_by_status",
        "unfinished": "after the drain: orders not COMPLETED or CANCELLED + orders ended without their final mail stored (all orders of the run)",
        "drained_after_s": "seconds after the shoppers finished until no order was left unended and every ended order had a final mail (null: not within the drain)",
        "errors": "shoppers that did not get through: accept_http_NNN, accept_timeout, payment_ready_timeout, cancelled_before_payment_ready, approve_*, in_flight_limit (2,000 shoppers in progress), aborted_at_deadline",
        "shopper_payment_ready_latency, shopper_approve_latency": "the load generator's own view (results.json only): 202 → redirect URL seen by polling; the approval redirect chain. Coarse by a poll interval, and the shoppers' queue is in them",
        "cpu_seconds": "utime+stime (/proc/PID/stat) of each process in the stack's pids/ (and of the load generator itself) between the load's start and the last scrape",
        "peak_rss_mb": "VmHWM (/proc/PID/status) of each process at the end: its peak resident memory over its life. Instances beyond the first are payment-2, notifier-2, …",
        "relay_lag": "saga_outbox_relay_lag_seconds (commit of the outbox row → broker ack) summed over the services (every instance), observations between the scrapes before and after the run; quantiles interpolated in the histogram's buckets (bounds 1, 2.5, 5, 10, 25, 50, 100 ms …)",
        "events_per_sec": "saga_outbox_published_total increase / the load's seconds",
        "variant": "null: one process per service; payment=N,notifier=M: N payment and M notifier processes (infra/stack up with PAYMENT_INSTANCES, NOTIFIER_INSTANCES), each with its own port and KAFKA_GROUP_INSTANCE_ID <service>-<n>, in the same consumer groups",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn results() -> Value {
        let page = json!({ "p50_ms": 12.0, "p99_ms": 40.5 });
        json!({
            "mode": "full",
            "cases": [3],
            "scenarios": ["gateway-1s"],
            "runs": [
                { "case": 3, "scenario": "gateway-1s", "status": "ok", "variant": null,
                  "accepted_per_sec": 100.0, "accept_latency": page, "payment_page_latency": page,
                  "approval_to_completed_latency": page, "approval_to_last_mail_latency": page,
                  "checkpoints": [{ "what": "10 s after the load", "unfinished": 7 }],
                  "unfinished": 0, "errors_total": 0 },
                { "case": 3, "scenario": "gateway-1s", "status": "failed_to_start", "variant": "payment=2,notifier=2",
                  "error": "tansu did not listen" },
            ],
            "targets": [],
        })
    }

    #[test]
    fn tables_show_the_saga_columns_and_the_variant() {
        let r = results();
        let md = report_md(&r, &[]);
        assert!(md.contains("time to payment page p50 / p99 ms"));
        assert!(md.contains("| 3 | ok | 100 | 12 / 40.5 | 12 / 40.5 |"));
        assert!(md.contains("10 s after the load: 7"));
        assert!(
            md.contains("| 3 (payment=2,notifier=2) | **failed_to_start**: tansu did not listen |")
        );
        let table = readme_table(&r);
        assert!(table.contains("| gateway-1s | 100/s; accept p99 40.5 ms; page p99 40.5 ms"));
        assert!(table.contains("page p99 40.5 ms"));
        assert!(table.contains("case 3 (payment=2,notifier=2) × gateway-1s: **failed_to_start**"));
        let summary = summary_json(&r);
        assert_eq!(
            summary["cases"]["3"]["gateway-1s"]["payment_page_p99_ms"],
            40.5
        );
        assert!(summary["cases"]["3"]["gateway-1s (payment=2,notifier=2)"].is_object());
    }
}
