//! How the shoppers behave: [`ShopConfig`], with `loadgen`'s defaults.

use crate::loopback;
use reqwest::Url;
use std::time::Duration;

/// How the shoppers behave.
#[derive(Debug, Clone)]
pub struct ShopConfig {
    /// The order service (`http://127.0.0.1:PORT/`).
    pub order_url: Url,
    /// Timeout of every HTTP request.
    pub request_timeout: Duration,
    /// Pause before asking again when the order service refuses a wait (503, e.g. at its
    /// open-wait bound) without a `Retry-After`; shoppers never poll otherwise.
    pub poll: Duration,
    /// Longest such pause: each is 1.5× the previous one up to this.
    pub poll_max: Duration,
    /// Deadline of each waiting step (redirect URL ready; COMPLETED).
    pub step_timeout: Duration,
    /// Also wait for each order to be COMPLETED.
    pub wait_complete: bool,
    /// Open loop: most shoppers in progress at once; a scheduled order beyond it is
    /// counted as the error `in_flight_limit` instead of being issued.
    pub max_in_flight: usize,
    /// Keep the id of every accepted order in the [`Recorder`](super::Recorder) (for
    /// later reads).
    pub keep_order_ids: bool,
    /// Stop after the 202: measures how fast orders are accepted, nothing else.
    pub accept_only: bool,
}

impl ShopConfig {
    /// Defaults of `loadgen` for the order service at `order_url` (checked: 127.0.0.1).
    pub fn new(order_url: &str) -> anyhow::Result<Self> {
        let url = loopback::check_url(order_url)?;
        let url = if url.path().ends_with('/') {
            url
        } else {
            Url::parse(&format!("{url}/"))?
        };
        Ok(Self {
            order_url: url,
            request_timeout: Duration::from_secs(10),
            poll: Duration::from_millis(100),
            poll_max: Duration::from_millis(100),
            step_timeout: Duration::from_secs(60),
            wait_complete: false,
            max_in_flight: 2_000,
            keep_order_ids: false,
            accept_only: false,
        })
    }

    /// The longest one shopper can take: request + two waiting steps (each may end with
    /// one long poll answered up to a second and a request timeout after its deadline) +
    /// approval.
    pub fn shopper_bound(&self) -> Duration {
        self.request_timeout * 6 + self.step_timeout * 2 + Duration::from_secs(2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_order_urls_are_accepted() {
        assert!(ShopConfig::new("http://example.com:8081").is_err());
        let c = ShopConfig::new("http://127.0.0.1:8081").expect("config");
        assert_eq!(c.order_url.as_str(), "http://127.0.0.1:8081/");
    }
}
