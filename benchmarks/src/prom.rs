//! Reads sums and counts out of a Prometheus text exposition (`GET /metrics`), to say
//! where a service spends its time (e.g. mean SMTP send vs. mean MongoDB write).

/// The sum over every label set of the samples named exactly `name`
/// (e.g. `notifier_mail_send_duration_seconds_sum`). `None` if there is none.
pub fn sample_sum(text: &str, name: &str) -> Option<f64> {
    let mut found = false;
    let mut total = 0.0;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let value = if let Some(labelled) = rest.strip_prefix('{') {
            labelled.split_once('}').map(|(_, v)| v)
        } else if rest.starts_with(' ') {
            Some(rest)
        } else {
            None // a longer name that starts with `name`
        };
        if let Some(v) = value.and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok()) {
            found = true;
            total += v;
        }
    }
    found.then_some(total)
}

/// Count, total seconds and mean milliseconds of a histogram or summary `name`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Timing {
    pub count: f64,
    pub total_seconds: f64,
    pub mean_ms: f64,
}

pub fn timing(text: &str, name: &str) -> Option<Timing> {
    let count = sample_sum(text, &format!("{name}_count"))?;
    let total_seconds = sample_sum(text, &format!("{name}_sum"))?;
    let mean_ms = if count > 0.0 {
        crate::stats::round3(total_seconds / count * 1000.0)
    } else {
        0.0
    };
    Some(Timing {
        count,
        total_seconds: crate::stats::round3(total_seconds),
        mean_ms,
    })
}

/// The cumulative buckets `(le, count)` of histogram `name` (samples `name_bucket`),
/// summed over every label set but `le`, ascending by `le` (`+Inf` last).
pub fn buckets(text: &str, name: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{");
    let mut by_le: Vec<(f64, f64)> = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(&prefix) else {
            continue;
        };
        let Some((labels, value)) = rest.split_once('}') else {
            continue;
        };
        let Some(le) = labels.split(',').find_map(|l| {
            let v = l.trim().strip_prefix("le=\"")?.strip_suffix('"')?;
            if v == "+Inf" {
                Some(f64::INFINITY)
            } else {
                v.parse::<f64>().ok()
            }
        }) else {
            continue;
        };
        let Some(count) = value
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        else {
            continue;
        };
        match by_le.iter_mut().find(|(l, _)| *l == le) {
            Some((_, c)) => *c += count,
            None => by_le.push((le, count)),
        }
    }
    by_le.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
    by_le
}

/// `after - before`, bucket by bucket (buckets missing before count as 0): what was
/// observed between two scrapes.
pub fn bucket_delta(before: &[(f64, f64)], after: &[(f64, f64)]) -> Vec<(f64, f64)> {
    after
        .iter()
        .map(|&(le, count)| {
            let was = before
                .iter()
                .find(|(l, _)| *l == le)
                .map_or(0.0, |(_, c)| *c);
            (le, (count - was).max(0.0))
        })
        .collect()
}

/// The `q` quantile (0–1) of cumulative buckets, as Prometheus' `histogram_quantile`:
/// linear interpolation inside the bucket holding the rank; a rank in the `+Inf` bucket
/// gives the highest finite bound. `None` without observations.
pub fn bucket_quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total;
    let mut lower = 0.0;
    let mut below = 0.0;
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return Some(lower);
            }
            let in_bucket = count - below;
            if in_bucket <= 0.0 {
                return Some(le);
            }
            return Some(lower + (le - lower) * (rank - below) / in_bucket);
        }
        if le.is_finite() {
            lower = le;
        }
        below = count;
    }
    Some(lower)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# TYPE notifier_mail_send_duration_seconds summary
notifier_mail_send_duration_seconds{outcome=\"sent\",quantile=\"0.5\"} 0.002
notifier_mail_send_duration_seconds_sum{outcome=\"sent\"} 3
notifier_mail_send_duration_seconds_count{outcome=\"sent\"} 1000
notifier_mail_send_duration_seconds_sum{outcome=\"error\"} 1
notifier_mail_send_duration_seconds_count{outcome=\"error\"} 0
notifier_mongodb_write_duration_seconds_sum 8
notifier_mongodb_write_duration_seconds_count 2000
";

    #[test]
    fn sums_over_label_sets() {
        assert_eq!(
            sample_sum(TEXT, "notifier_mail_send_duration_seconds_count"),
            Some(1000.0)
        );
        assert_eq!(
            sample_sum(TEXT, "notifier_mongodb_write_duration_seconds_sum"),
            Some(8.0)
        );
        assert_eq!(sample_sum(TEXT, "notifier_missing"), None);
        let t = timing(TEXT, "notifier_mail_send_duration_seconds").expect("timing");
        assert_eq!(t.mean_ms, 4.0);
        let t = timing(TEXT, "notifier_mongodb_write_duration_seconds").expect("timing");
        assert_eq!(t.mean_ms, 4.0);
    }

    const HIST: &str = "\
saga_outbox_relay_lag_seconds_bucket{service=\"order\",le=\"0.001\"} 10
saga_outbox_relay_lag_seconds_bucket{service=\"order\",le=\"0.01\"} 90
saga_outbox_relay_lag_seconds_bucket{service=\"order\",le=\"+Inf\"} 100
saga_outbox_relay_lag_seconds_bucket{service=\"payment\",le=\"0.001\"} 0
saga_outbox_relay_lag_seconds_bucket{service=\"payment\",le=\"0.01\"} 0
saga_outbox_relay_lag_seconds_bucket{service=\"payment\",le=\"+Inf\"} 0
saga_outbox_relay_lag_seconds_sum{service=\"order\"} 1
";

    #[test]
    fn histogram_quantiles_from_buckets() {
        let b = buckets(HIST, "saga_outbox_relay_lag_seconds");
        assert_eq!(b, vec![(0.001, 10.0), (0.01, 90.0), (f64::INFINITY, 100.0)]);
        // Rank 50 lies in (0.001, 0.01]: 40 of its 80 observations.
        let p50 = bucket_quantile(&b, 0.5).expect("p50");
        assert!((p50 - 0.0055).abs() < 1e-9, "{p50}");
        // Rank 99 lies in +Inf: the highest finite bound.
        assert_eq!(bucket_quantile(&b, 0.99), Some(0.01));
        assert_eq!(bucket_quantile(&[], 0.99), None);
        let before = vec![(0.001, 10.0), (0.01, 10.0), (f64::INFINITY, 10.0)];
        let d = bucket_delta(&before, &b);
        assert_eq!(d, vec![(0.001, 0.0), (0.01, 80.0), (f64::INFINITY, 90.0)]);
        assert_eq!(bucket_quantile(&d, 0.5).map(|v| v > 0.001), Some(true));
        assert!(buckets(HIST, "missing").is_empty());
    }
}
