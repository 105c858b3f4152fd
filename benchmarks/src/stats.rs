//! Latency histograms and their JSON summaries.
//!
//! Values are recorded in **microseconds** (HDR histogram, 3 significant digits, up to
//! one hour) and reported in **milliseconds**.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest recordable value: one hour, in microseconds. Larger values are clamped.
pub const MAX_MICROS: u64 = 3_600_000_000;

/// A latency histogram in microseconds.
#[derive(Debug, Clone)]
pub struct Latency {
    hist: Histogram<u64>,
}

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl Latency {
    pub fn new() -> Self {
        Self {
            hist: Histogram::new_with_bounds(1, MAX_MICROS, 3)
                .expect("1 µs .. 1 h with 3 significant digits is a valid histogram"),
        }
    }

    /// Records one value in microseconds (0 counts as 1 µs, beyond an hour as an hour).
    pub fn record_micros(&mut self, micros: u64) {
        self.hist.saturating_record(micros.clamp(1, MAX_MICROS));
    }

    pub fn record(&mut self, duration: std::time::Duration) {
        self.record_micros(u64::try_from(duration.as_micros()).unwrap_or(MAX_MICROS));
    }

    /// Records a value in whole milliseconds (e.g. from BSON dates); negative → 0.
    pub fn record_millis(&mut self, millis: i64) {
        let millis = u64::try_from(millis.max(0)).unwrap_or(0);
        self.record_micros(millis.saturating_mul(1000));
    }

    pub fn add(&mut self, other: &Latency) {
        self.hist
            .add(&other.hist)
            .expect("histograms with the same bounds always add");
    }

    pub fn len(&self) -> u64 {
        self.hist.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hist.is_empty()
    }

    /// The value at percentile `p` (0–100), in milliseconds; `None` when empty.
    pub fn percentile_ms(&self, p: f64) -> Option<f64> {
        (!self.is_empty()).then(|| micros_to_ms(self.hist.value_at_percentile(p)))
    }

    /// Counts, mean, percentiles and the percentile table (for CDF plots).
    pub fn summary(&self) -> Summary {
        if self.is_empty() {
            return Summary::default();
        }
        let at = |p: f64| Some(micros_to_ms(self.hist.value_at_percentile(p)));
        Summary {
            count: self.hist.len(),
            min_ms: Some(micros_to_ms(self.hist.min())),
            mean_ms: Some(round3(self.hist.mean() / 1000.0)),
            p50_ms: at(50.0),
            p90_ms: at(90.0),
            p95_ms: at(95.0),
            p99_ms: at(99.0),
            p999_ms: at(99.9),
            max_ms: Some(micros_to_ms(self.hist.max())),
            percentiles: self.percentile_table(),
        }
    }

    /// HdrHistogram's percentile distribution: steps halve their distance to 100 %
    /// (5 ticks per half), so the tail gets as many rows as the body.
    pub fn percentile_table(&self) -> Vec<PercentileRow> {
        if self.is_empty() {
            return Vec::new();
        }
        let total = self.hist.len();
        let mut rows: Vec<PercentileRow> = self
            .hist
            .iter_quantiles(5)
            .map(|v| PercentileRow {
                percentile: round6(v.quantile_iterated_to() * 100.0),
                value_ms: micros_to_ms(v.value_iterated_to()),
                count_at_or_below: v.count_since_last_iteration(),
            })
            .collect();
        // Turn per-step counts into cumulative counts (the CDF).
        let mut cumulative = 0;
        for row in &mut rows {
            cumulative += row.count_at_or_below;
            row.count_at_or_below = cumulative.min(total);
        }
        rows
    }
}

/// A histogram summarised for JSON. Every value in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    pub count: u64,
    pub min_ms: Option<f64>,
    pub mean_ms: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub p999_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// (percentile, value, values at or below it), ascending.
    pub percentiles: Vec<PercentileRow>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PercentileRow {
    pub percentile: f64,
    pub value_ms: f64,
    pub count_at_or_below: u64,
}

fn micros_to_ms(micros: u64) -> f64 {
    round3(micros as f64 / 1000.0)
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn round6(x: f64) -> f64 {
    (x * 1_000_000.0).round() / 1_000_000.0
}

/// `count / seconds`, or 0 when no time passed.
pub fn rate(count: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        round3(count as f64 / seconds)
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn an_empty_histogram_summarises_to_nothing() {
        let summary = Latency::new().summary();
        assert_eq!(summary.count, 0);
        assert_eq!(summary.p50_ms, None);
        assert!(summary.percentiles.is_empty());
    }

    #[test]
    fn percentiles_of_one_to_a_thousand_ms() {
        let mut latency = Latency::new();
        for ms in 1..=1000 {
            latency.record(Duration::from_millis(ms));
        }
        let s = latency.summary();
        assert_eq!(s.count, 1000);
        // 3 significant digits: values are within 0.1 % of the exact answer.
        let close = |got: Option<f64>, want: f64| {
            let got = got.expect("a value");
            assert!(
                (got - want).abs() <= want * 0.001 + 0.001,
                "{got} vs {want}"
            );
        };
        close(s.p50_ms, 500.0);
        close(s.p95_ms, 950.0);
        close(s.p99_ms, 990.0);
        close(s.max_ms, 1000.0);
        close(s.min_ms, 1.0);
        close(s.mean_ms, 500.5);
        // The table is a CDF: ascending, ending at 100 % with every value counted.
        let last = s.percentiles.last().expect("rows");
        assert_eq!(last.percentile, 100.0);
        assert_eq!(last.count_at_or_below, 1000);
        assert!(s
            .percentiles
            .windows(2)
            .all(|w| w[0].percentile <= w[1].percentile
                && w[0].value_ms <= w[1].value_ms
                && w[0].count_at_or_below <= w[1].count_at_or_below));
    }

    #[test]
    fn odd_values_are_clamped_not_lost() {
        let mut latency = Latency::new();
        latency.record_millis(-5);
        latency.record_micros(0);
        latency.record_micros(u64::MAX);
        assert_eq!(latency.len(), 3);
        let s = latency.summary();
        assert_eq!(s.min_ms, Some(0.001));
        assert!(s.max_ms.expect("max") >= 3_600_000.0);
    }

    #[test]
    fn histograms_add_up() {
        let mut a = Latency::new();
        let mut b = Latency::new();
        a.record_millis(10);
        b.record_millis(20);
        a.add(&b);
        assert_eq!(a.len(), 2);
        let max = a.percentile_ms(100.0).expect("a value");
        assert!((20.0..=20.02).contains(&max), "{max}");
    }

    #[test]
    fn rates() {
        assert_eq!(rate(100, 0.0), 0.0);
        assert_eq!(rate(100, 4.0), 25.0);
        assert_eq!(rate(1, 3.0), 0.333);
    }
}
