//! The targets, evaluated on case 3 (one process per service) in full mode.

use crate::cli::Plan;
use benchmarks::stats::round3;
use serde_json::{json, Value};

/// The default (one instance of each) run of `case` × `scenario` that went through.
pub fn find<'a>(runs: &'a Value, case: u8, scenario: &str) -> Option<&'a Value> {
    runs.as_array()?.iter().find(|r| {
        r["case"] == case
            && r["scenario"] == scenario
            && r["status"] == "ok"
            && r["variant"].is_null()
    })
}

fn verdict(met: Option<bool>, by: String) -> String {
    match met {
        Some(true) => format!("met ({by})"),
        Some(false) => format!("missed ({by})"),
        None => format!("not evaluated ({by})"),
    }
}

/// Which figure of a run a target reads.
#[derive(Clone, Copy)]
enum Pick {
    /// A number at the top of the row.
    Field(&'static str),
    /// `p99_ms` of a latency summary.
    P99(&'static str),
    /// A process's peak RSS, MB.
    Rss(&'static str),
    /// The idle orders walked one at a time before the load: POST → redirect visible,
    /// median.
    Idle,
}

impl Pick {
    fn read(self, run: &Value) -> Option<f64> {
        match self {
            Pick::Field(key) => run[key].as_f64(),
            Pick::P99(key) => run[key]["p99_ms"].as_f64(),
            Pick::Rss(name) => run["peak_rss_mb"][name].as_f64(),
            Pick::Idle => run["warm_up"]["idle_post_to_redirect_ms"]["p50"].as_f64(),
        }
    }
}

/// A figure of one case-3 run against an upper limit, judged in full mode at the
/// targets' load (100 orders/s × 20 s).
struct Rule {
    name: &'static str,
    rule: &'static str,
    scenario: &'static str,
    pick: Pick,
    limit: f64,
    unit: &'static str,
}

const PAGE: Pick = Pick::P99("payment_page_latency");

const RULES: [Rule; 11] = [
    Rule { name: "unfinished 10 s after the load, gateway +200 ms", rule: "case 3 gateway-200ms, 100 orders/s × 20 s: orders not finished (ended, final mail stored) 10 s after the last order was issued = 0", scenario: "gateway-200ms", pick: Pick::Field("unfinished_after_load"), limit: 0.0, unit: "" },
    Rule { name: "unfinished 10 s after the load, gateway +1 s", rule: "case 3 gateway-1s, 100 orders/s × 20 s: orders not finished 10 s after the last order was issued = 0", scenario: "gateway-1s", pick: Pick::Field("unfinished_after_load"), limit: 0.0, unit: "" },
    Rule { name: "unfinished 30 s after a 30 s gateway outage", rule: "case 3 gateway-outage-30s, 100 orders/s: orders not finished 30 s after the outage ended = 0", scenario: "gateway-outage-30s", pick: Pick::Field("unfinished_after_outage"), limit: 0.0, unit: "" },
    Rule { name: "time to payment page p99, baseline", rule: "case 3 baseline: created_at → PaymentReady applied, p99 ≤ 50 ms", scenario: "baseline", pick: PAGE, limit: 50.0, unit: " ms" },
    Rule { name: "time to payment page p99, gateway +200 ms", rule: "case 3 gateway-200ms: created_at → PaymentReady applied, p99 ≤ 300 ms", scenario: "gateway-200ms", pick: PAGE, limit: 300.0, unit: " ms" },
    Rule { name: "time to payment page p99, gateway +1 s", rule: "case 3 gateway-1s: created_at → PaymentReady applied, p99 ≤ 1,150 ms", scenario: "gateway-1s", pick: PAGE, limit: 1150.0, unit: " ms" },
    Rule { name: "approval → last mail stored p99, baseline", rule: "case 3 baseline: approval callback → the order's last mail accepted by the SMTP server, p99 ≤ 150 ms", scenario: "baseline", pick: Pick::P99("approval_to_last_mail_latency"), limit: 150.0, unit: " ms" },
    Rule { name: "idle stack, one order: POST → redirect visible", rule: "case 3, before the baseline's load: orders placed one at a time, POST /orders sent → the long poll answers with payment.redirect_url, median ≤ 30 ms", scenario: "baseline", pick: Pick::Idle, limit: 30.0, unit: " ms" },
    Rule { name: "peak RSS order, gateway +1 s", rule: "case 3 gateway-1s: VmHWM of the order service ≤ 80 MB", scenario: "gateway-1s", pick: Pick::Rss("order"), limit: 80.0, unit: " MB" },
    Rule { name: "peak RSS payment, gateway +1 s", rule: "case 3 gateway-1s: VmHWM of the payment service ≤ 80 MB", scenario: "gateway-1s", pick: Pick::Rss("payment"), limit: 80.0, unit: " MB" },
    Rule { name: "peak RSS notifier, gateway +1 s", rule: "case 3 gateway-1s: VmHWM of the notifier ≤ 40 MB", scenario: "gateway-1s", pick: Pick::Rss("notifier"), limit: 40.0, unit: " MB" },
];

fn evaluate(rule: &Rule, runs: &Value, plan: &Plan) -> Value {
    let measured = find(runs, 3, rule.scenario).and_then(|r| rule.pick.read(r));
    let applies = plan.full && plan.at_target_load();
    let met = if applies {
        measured.map(|m| m <= rule.limit)
    } else {
        None
    };
    let unit = rule.unit;
    let text = match measured {
        None => format!("needs case 3 {}", rule.scenario),
        Some(m) if !applies => format!(
            "{}{unit} at {} orders/s × {} s in {} mode; the target is for full mode at 100 orders/s × 20 s",
            round3(m),
            plan.rate,
            plan.duration.as_secs_f64(),
            if plan.full { "full" } else { "short" }
        ),
        Some(m) if m <= rule.limit => format!("{}{unit} ≤ {}{unit}", round3(m), rule.limit),
        Some(m) => format!(
            "{}{unit} > {}{unit}: {:+}{unit}",
            round3(m),
            rule.limit,
            round3(m - rule.limit)
        ),
    };
    json!({
        "name": rule.name,
        "rule": rule.rule,
        "run": format!("case 3 × {}", rule.scenario),
        "measured": measured.map(round3),
        "threshold": rule.limit,
        "unit": unit.trim(),
        "met": met,
        "verdict": verdict(met, text),
    })
}

/// Case 3 capacity accepted/s ÷ pgbench TPS ≥ 0.7 (a lower limit, unlike the rules).
fn capacity_target(runs: &Value, ceilings: &Value, plan: &Plan) -> Value {
    let tps = ceilings["pgbench"]["tps"].as_f64();
    let capacity = find(runs, 3, "capacity");
    let accepted = capacity.and_then(|r| r["accepted_per_sec"].as_f64());
    let ratio = accepted
        .zip(tps)
        .map(|(a, t)| if t > 0.0 { a / t } else { 0.0 });
    let met = if plan.full {
        ratio.map(|r| r >= 0.7)
    } else {
        None
    };
    let text = match ratio {
        Some(r) if plan.full => format!(
            "{:.0}/s ÷ {:.0} TPS = {r:.2} vs 0.70: {:+.0} % of the threshold",
            accepted.unwrap_or(0.0),
            tps.unwrap_or(0.0),
            (r / 0.7 - 1.0) * 100.0
        ),
        Some(r) => format!("{r:.2} in short mode (a few seconds, debug builds)"),
        None => "needs case 3 capacity and the pgbench ceiling".to_owned(),
    };
    json!({
        "name": "accept capacity vs pgbench",
        "rule": "case 3 capacity (closed loop, accept only) accepted orders/s ÷ pgbench TPS of the same transaction at the same concurrency ≥ 0.7",
        "run": "case 3 × capacity",
        "accepted_per_sec": accepted,
        "pgbench_tps": tps,
        "measured": ratio.map(round3),
        "threshold": 0.7,
        "unit": "",
        "met": met,
        "verdict": verdict(met, text),
    })
}

pub fn evaluate_targets(runs: &[Value], ceilings: &Value, plan: &Plan) -> Value {
    let runs = Value::Array(runs.to_vec());
    let mut targets: Vec<Value> = RULES.iter().map(|r| evaluate(r, &runs, plan)).collect();
    targets.insert(7, capacity_target(&runs, ceilings, plan));
    Value::Array(targets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Args;
    use clap::Parser;

    fn run(scenario: &str, extra: Value) -> Value {
        crate::stack::merge(
            json!({ "case": 3, "scenario": scenario, "status": "ok", "variant": null }),
            extra,
        )
    }

    #[test]
    fn targets_say_met_or_missed_with_the_figure() {
        let runs = vec![
            run(
                "baseline",
                json!({ "payment_page_latency": { "p99_ms": 40.0 }, "approval_to_last_mail_latency": { "p99_ms": 180.0 }, "warm_up": { "idle_post_to_redirect_ms": { "p50": 24.5 } } }),
            ),
            run(
                "gateway-200ms",
                json!({ "unfinished_after_load": 0, "payment_page_latency": { "p99_ms": 290.0 } }),
            ),
            run(
                "gateway-1s",
                json!({ "unfinished_after_load": 1863, "peak_rss_mb": { "order": 53.5, "payment": 81.0, "notifier": 24.0 } }),
            ),
            // The two-instance run never stands in for the default one.
            crate::stack::merge(
                run(
                    "gateway-outage-30s",
                    json!({ "unfinished_after_outage": 0 }),
                ),
                json!({ "variant": "payment=2,notifier=2" }),
            ),
            run("capacity", json!({ "accepted_per_sec": 800.0 })),
        ];
        let plan = Plan::new(&Args::parse_from(["experiment", "--mode", "full"]));
        let t = evaluate_targets(&runs, &json!({ "pgbench": { "tps": 1000.0 } }), &plan);
        let by = |name: &str| {
            t.as_array()
                .unwrap()
                .iter()
                .find(|x| x["name"] == name)
                .unwrap()
                .clone()
        };
        assert_eq!(
            by("unfinished 10 s after the load, gateway +200 ms")["met"],
            true
        );
        let slow = by("unfinished 10 s after the load, gateway +1 s");
        assert_eq!(slow["met"], false);
        assert!(slow["verdict"].as_str().unwrap().contains("1863"));
        assert_eq!(
            by("unfinished 30 s after a 30 s gateway outage")["met"],
            Value::Null
        );
        assert_eq!(by("time to payment page p99, baseline")["met"], true);
        assert_eq!(by("time to payment page p99, gateway +200 ms")["met"], true);
        let mail = by("approval → last mail stored p99, baseline");
        assert_eq!(mail["met"], false);
        assert!(mail["verdict"].as_str().unwrap().contains("+30 ms"));
        assert_eq!(by("accept capacity vs pgbench")["measured"], 0.8);
        assert_eq!(by("accept capacity vs pgbench")["met"], true);
        assert_eq!(by("peak RSS payment, gateway +1 s")["met"], false);
        assert_eq!(by("peak RSS notifier, gateway +1 s")["met"], true);
        assert_eq!(
            by("idle stack, one order: POST → redirect visible")["met"],
            true
        );
        assert_eq!(t.as_array().unwrap().len(), 12);
    }

    #[test]
    fn short_mode_does_not_judge() {
        let runs = vec![run(
            "baseline",
            json!({ "payment_page_latency": { "p99_ms": 40.0 } }),
        )];
        let plan = Plan::new(&Args::parse_from(["experiment"]));
        let t = evaluate_targets(&runs, &json!({}), &plan);
        assert_eq!(t[3]["met"], Value::Null);
        assert!(t[3]["verdict"].as_str().unwrap().contains("short mode"));
    }
}
