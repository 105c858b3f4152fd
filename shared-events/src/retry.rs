//! The one backoff every retry in the shop uses: capped exponential growth with "equal
//! jitter" (a random point in the upper half of the step), so that work failing together
//! — every lane of a consumer when the database goes away — does not retry together and
//! hammer the dependency the moment it comes back.

use rand::Rng;
use std::time::Duration;

/// Capped exponential backoff with equal jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The step after the first failure.
    pub initial: Duration,
    /// No step is longer than this.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
        }
    }
}

impl Backoff {
    pub const fn new(initial: Duration, max: Duration) -> Self {
        Self { initial, max }
    }

    /// The wait after failed attempt number `attempt` (1-based): `initial × 2^(attempt-1)`,
    /// capped at `max`, then a random point between half of it and all of it.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = 2u32.saturating_pow(attempt.saturating_sub(1).min(31));
        let capped = self.initial.saturating_mul(exp).min(self.max);
        let half = capped / 2;
        half + half.mul_f64(rand::rng().random::<f64>())
    }
}

/// A bounded retry: for calls whose caller has its own answer to "still failing" (an
/// HTTP request that must end, a gateway call whose outcome the reconciler settles).
/// Consumers never use a bound: their transient failures are retried for as long as
/// they last (see `kafka`'s engine).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first one included.
    pub max_attempts: u32,
    pub backoff: Backoff,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            backoff: Backoff::default(),
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `attempt + 1`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        self.backoff.delay(attempt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_doubles_is_capped_and_jittered_within_the_upper_half() {
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let first = backoff.delay(1);
            assert!((50..=100).contains(&first.as_millis()), "{first:?}");
            let third = backoff.delay(3);
            assert!((200..=400).contains(&third.as_millis()), "{third:?}");
            let late = backoff.delay(1_000);
            assert!((500..=1000).contains(&late.as_millis()), "{late:?}");
            seen.insert(third.as_micros());
        }
        assert!(seen.len() > 50, "jitter must spread the waits: {seen:?}");
    }
}
