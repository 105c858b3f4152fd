//! The open-loop schedule: request `i` is due at `start + i / rate`, whatever happened
//! to the requests before it. Latency is measured from that due time, not from when the
//! request actually left, so a stalled system cannot hide its stall by slowing the
//! generator down (coordinated omission).

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OpenLoop {
    /// Requests per second (> 0).
    rate: f64,
    /// How many requests in all.
    count: u64,
}

impl OpenLoop {
    /// `rate` requests per second for `duration`; `None` if the rate is not positive.
    pub fn for_duration(rate: f64, duration: Duration) -> Option<Self> {
        if !(rate.is_finite() && rate > 0.0) {
            return None;
        }
        let count = (rate * duration.as_secs_f64()).floor() as u64;
        Some(Self { rate, count })
    }

    /// `count` requests at `rate` per second; `None` if the rate is not positive.
    pub fn for_count(rate: f64, count: u64) -> Option<Self> {
        (rate.is_finite() && rate > 0.0).then_some(Self { rate, count })
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// When request `i` (0-based) is due, measured from the start.
    pub fn offset(&self, i: u64) -> Duration {
        Duration::from_secs_f64(i as f64 / self.rate)
    }

    /// How long issuing the whole schedule takes (the last request's due time).
    pub fn span(&self) -> Duration {
        self.offset(self.count.saturating_sub(1))
    }

    /// How many requests are due by `elapsed` (for progress and catch-up checks).
    pub fn due_by(&self, elapsed: Duration) -> u64 {
        let due = (elapsed.as_secs_f64() * self.rate).floor() as u64 + 1;
        due.min(self.count)
    }
}

/// An open-loop schedule in phases of constant rate (e.g. a burst: 100/s for 10 s,
/// 1,000/s for 10 s, 100/s for 10 s). Within a phase request `i` is due at
/// `phase start + i / rate`.
#[derive(Debug, Clone, PartialEq)]
pub struct Phases {
    phases: Vec<(f64, Duration)>,
}

impl Phases {
    /// `(rate, duration)` pairs in order; `None` if a rate is not positive.
    pub fn new(phases: Vec<(f64, Duration)>) -> Option<Self> {
        phases
            .iter()
            .all(|(rate, _)| rate.is_finite() && *rate > 0.0)
            .then_some(Self { phases })
    }

    /// Every request's due time, ascending.
    pub fn offsets(&self) -> Vec<Duration> {
        let mut offsets = Vec::new();
        let mut start = Duration::ZERO;
        for &(rate, duration) in &self.phases {
            if let Some(phase) = OpenLoop::for_duration(rate, duration) {
                offsets.extend((0..phase.count()).map(|i| start + phase.offset(i)));
            }
            start += duration;
        }
        offsets
    }

    /// The whole schedule's length.
    pub fn duration(&self) -> Duration {
        self.phases.iter().map(|(_, d)| *d).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twenty_per_second_for_twenty_seconds() {
        let s = OpenLoop::for_duration(20.0, Duration::from_secs(20)).expect("schedule");
        assert_eq!(s.count(), 400);
        assert_eq!(s.offset(0), Duration::ZERO);
        assert_eq!(s.offset(1), Duration::from_millis(50));
        assert_eq!(s.offset(20), Duration::from_secs(1));
        assert_eq!(s.span(), Duration::from_millis(19_950));
    }

    #[test]
    fn fractional_rates_and_counts() {
        let s = OpenLoop::for_count(0.5, 3).expect("schedule");
        assert_eq!(s.offset(2), Duration::from_secs(4));
        assert_eq!(s.span(), Duration::from_secs(4));
        let s = OpenLoop::for_duration(2.5, Duration::from_secs(3)).expect("schedule");
        assert_eq!(s.count(), 7);
    }

    #[test]
    fn schedule_is_independent_of_responses() {
        let s = OpenLoop::for_duration(100.0, Duration::from_secs(10)).expect("schedule");
        assert_eq!(s.due_by(Duration::ZERO), 1);
        assert_eq!(s.due_by(Duration::from_millis(999)), 100);
        assert_eq!(s.due_by(Duration::from_secs(1)), 101);
        assert_eq!(s.due_by(Duration::from_secs(3600)), 1000);
        // Evenly spaced.
        let gaps: Vec<Duration> = (1..s.count())
            .map(|i| s.offset(i) - s.offset(i - 1))
            .collect();
        assert!(gaps
            .iter()
            .all(|g| g.as_secs_f64() > 0.0099 && g.as_secs_f64() < 0.0101));
    }

    #[test]
    fn non_positive_rates_are_refused() {
        assert!(OpenLoop::for_duration(0.0, Duration::from_secs(1)).is_none());
        assert!(OpenLoop::for_duration(-1.0, Duration::from_secs(1)).is_none());
        assert!(OpenLoop::for_count(f64::NAN, 1).is_none());
        assert_eq!(
            OpenLoop::for_count(1.0, 0).expect("schedule").span(),
            Duration::ZERO
        );
    }

    #[test]
    fn a_burst_in_phases() {
        let p = Phases::new(vec![
            (10.0, Duration::from_secs(2)),
            (100.0, Duration::from_secs(1)),
            (10.0, Duration::from_secs(2)),
        ])
        .expect("phases");
        let offsets = p.offsets();
        assert_eq!(offsets.len(), 20 + 100 + 20);
        assert_eq!(offsets[20], Duration::from_secs(2));
        assert_eq!(offsets[21], Duration::from_millis(2010));
        assert_eq!(offsets[120], Duration::from_secs(3));
        assert!(offsets.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(p.duration(), Duration::from_secs(5));
        assert!(Phases::new(vec![(0.0, Duration::from_secs(1))]).is_none());
    }
}
