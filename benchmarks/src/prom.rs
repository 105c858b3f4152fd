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
}
