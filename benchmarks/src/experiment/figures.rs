//! SVG figures: grouped bars per scenario and case, latency CDFs per scenario.

use crate::log;
use crate::targets::find;
use benchmarks::plots::{self, Bars, Cdf};
use serde_json::Value;
use std::path::Path;

type Pick = fn(&Value) -> Option<f64>;

/// (file, caption, title, y label, figure).
const BARS: [(&str, &str, &str, &str, Pick); 5] = [
    (
        "throughput.svg",
        "Accepted orders per second, per case and scenario",
        "accepted orders/s",
        "orders/s",
        |r| r["accepted_per_sec"].as_f64(),
    ),
    (
        "accept_p99.svg",
        "Accept latency p99 (ms), per case and scenario",
        "accept latency p99",
        "ms",
        |r| r["accept_latency"]["p99_ms"].as_f64(),
    ),
    (
        "payment_page_p99.svg",
        "Time to payment page p99 (created → PaymentReady applied, ms)",
        "time to payment page p99",
        "ms",
        |r| r["payment_page_latency"]["p99_ms"].as_f64(),
    ),
    (
        "approval_to_last_mail_p99.svg",
        "Approval callback → last mail stored, p99 (ms)",
        "approval → last mail p99",
        "ms",
        |r| r["approval_to_last_mail_latency"]["p99_ms"].as_f64(),
    ),
    (
        "e2e_p99.svg",
        "End-to-end latency p99 (accept → final mail stored, ms)",
        "end-to-end latency p99",
        "ms",
        |r| r["e2e_latency"]["p99_ms"].as_f64(),
    ),
];

/// (row key, file stem, title).
const CDFS: [(&str, &str, &str); 4] = [
    ("accept_latency", "accept", "accept latency"),
    (
        "payment_page_latency",
        "payment_page",
        "time to payment page",
    ),
    (
        "approval_to_last_mail_latency",
        "approval_to_last_mail",
        "approval → last mail",
    ),
    ("e2e_latency", "e2e", "end-to-end latency"),
];

struct Matrix<'a> {
    cases: Vec<u8>,
    scenarios: Vec<String>,
    runs: &'a Value,
}

impl Matrix<'_> {
    fn bars<'t>(&self, title: &'t str, y_label: &'t str, pick: Pick) -> Bars<'t> {
        let series = self
            .cases
            .iter()
            .map(|&c| {
                let values = self
                    .scenarios
                    .iter()
                    .map(|s| find(self.runs, c, s).and_then(pick))
                    .collect();
                (
                    format!("case {c}"),
                    usize::from(c.saturating_sub(1)),
                    values,
                )
            })
            .collect();
        Bars {
            title,
            y_label,
            groups: self.scenarios.clone(),
            series,
        }
    }

    fn cdf_series(&self, scenario: &str, key: &str) -> Vec<plots::CdfSeries> {
        self.cases
            .iter()
            .filter_map(|&c| {
                let r = find(self.runs, c, scenario)?;
                let pts: Vec<(f64, f64)> = r[key]["percentiles"]
                    .as_array()?
                    .iter()
                    .filter_map(|p| Some((p["value_ms"].as_f64()?, p["percentile"].as_f64()?)))
                    .collect();
                (!pts.is_empty()).then(|| (format!("case {c}"), usize::from(c - 1), pts))
            })
            .collect()
    }
}

fn matrix(results: &Value) -> Matrix<'_> {
    Matrix {
        cases: results["cases"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c.as_u64().and_then(|c| u8::try_from(c).ok()))
            .collect(),
        scenarios: results["scenarios"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect(),
        runs: &results["runs"],
    }
}

/// Draws every figure into `dir`; returns (relative path, caption) of those drawn.
pub fn draw_figures(results: &Value, dir: &Path) -> Vec<(String, String)> {
    let m = matrix(results);
    let mut figures = Vec::new();
    for (file, caption, title, y, pick) in BARS {
        match plots::grouped_bars(&dir.join(file), &m.bars(title, y, pick)) {
            Ok(()) => figures.push((format!("figures/{file}"), caption.to_owned())),
            Err(e) => log(format!("figure {file}: {e:#}")),
        }
    }
    for scenario in &m.scenarios {
        for (key, stem, what) in CDFS {
            let series = m.cdf_series(scenario, key);
            if series.is_empty() {
                continue;
            }
            let file = format!("cdf_{stem}_{scenario}.svg");
            let title = format!("{what} CDF — {scenario}");
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
