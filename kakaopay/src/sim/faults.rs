//! Fault-injection knobs and the per-call plan derived from them.
//!
//! All randomness is drawn in [`Knobs::plan_call`], a plain function called
//! before any `.await`, so no RNG or lock lives across a suspension point.

use std::time::{Duration, Instant};

use rand::Rng;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::SimMode;

/// Faults applied to the API endpoints (`/online/v1/payment/*`); the shopper
/// page, ledger and health endpoints are never affected.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct Faults {
    /// Fixed delay added to every API call.
    pub latency_ms: u64,
    /// Extra uniform delay in `0..=jitter_ms`.
    pub jitter_ms: u64,
    /// Fraction (0.0–1.0) of otherwise valid approves declined with `-780`.
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub decline_rate: f64,
    /// `extras.method_result_code` of a decline; `None` = `DECLINED`.
    /// `USER_LOCKED` leaves the payment approvable (the client treats it as
    /// transient); any other code fails the payment (`FAIL_PAYMENT`).
    pub decline_code: Option<String>,
    /// Fraction of API calls answered HTTP 500 `-500` without any effect.
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub error_rate: f64,
    /// Fraction of API calls that take effect but whose answer is replaced by
    /// HTTP 500 `-500` (a lost response: the caller cannot tell it worked).
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub lost_response_rate: f64,
    /// While true every API call answers HTTP 503 `-9798` without effect.
    pub outage: bool,
    /// Per endpoint, the fraction of calls whose connection is closed without an answer
    /// and without any effect (the request is not applied).
    pub dropped_connection: PerEndpoint,
    /// Per endpoint, the fraction of calls that take effect but whose answer never
    /// comes: the simulator holds the connection for [`LOST_ANSWER_HOLD`], then closes
    /// it without an answer (the caller times out before; it cannot tell it worked).
    pub applied_answer_lost: PerEndpoint,
}

/// How long a call whose answer is lost (`applied_answer_lost`) is held before its
/// connection is closed: longer than any client timeout the shop uses (12 s).
pub const LOST_ANSWER_HOLD: Duration = Duration::from_secs(15);

/// A fraction (0.0–1.0) of the calls of each API endpoint; absent endpoints are 0.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct PerEndpoint {
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub ready: f64,
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub approve: f64,
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub cancel: f64,
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub order: f64,
}

impl PerEndpoint {
    /// The same fraction for every endpoint.
    pub fn all(rate: f64) -> Self {
        Self {
            ready: rate,
            approve: rate,
            cancel: rate,
            order: rate,
        }
    }

    /// The fraction of `endpoint` (`ready`, `approve`, `cancel`, `order`).
    pub fn of(&self, endpoint: &str) -> f64 {
        match endpoint {
            "ready" => self.ready,
            "approve" => self.approve,
            "cancel" => self.cancel,
            "order" => self.order,
            _ => 0.0,
        }
    }

    fn rates(&self, knob: &'static str) -> [(String, f64); 4] {
        [
            (format!("{knob}.ready"), self.ready),
            (format!("{knob}.approve"), self.approve),
            (format!("{knob}.cancel"), self.cancel),
            (format!("{knob}.order"), self.order),
        ]
    }
}

impl Faults {
    fn validate(&self) -> Result<(), String> {
        let mut rates = vec![
            ("decline_rate".to_owned(), self.decline_rate),
            ("error_rate".to_owned(), self.error_rate),
            ("lost_response_rate".to_owned(), self.lost_response_rate),
        ];
        rates.extend(self.dropped_connection.rates("dropped_connection"));
        rates.extend(self.applied_answer_lost.rates("applied_answer_lost"));
        for (name, rate) in rates {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("{name} must be between 0.0 and 1.0"));
            }
        }
        Ok(())
    }
}

/// A scheduled outage, relative to the simulator's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutageWindow {
    /// The outage starts this long after start-up.
    pub after: Duration,
    /// How long it lasts; `None` = until turned off with `PUT /__sim/faults`.
    pub duration: Option<Duration>,
}

/// Body of `PUT /__sim/faults`: only the fields present change (`null`: unchanged).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)] // a typo in a test's knob must fail loudly
pub struct FaultsPatch {
    pub latency_ms: Option<u64>,
    pub jitter_ms: Option<u64>,
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub decline_rate: Option<f64>,
    pub decline_code: Option<String>,
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub error_rate: Option<f64>,
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub lost_response_rate: Option<f64>,
    /// Replaces all four endpoints' rates (absent endpoints: 0).
    pub dropped_connection: Option<PerEndpoint>,
    /// Replaces all four endpoints' rates (absent endpoints: 0).
    pub applied_answer_lost: Option<PerEndpoint>,
    /// Also clears a scheduled outage window: runtime control wins.
    pub outage: Option<bool>,
    pub mode: Option<SimMode>,
    pub tid_ttl_secs: Option<u64>,
}

/// Body of `GET /__sim/faults`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FaultsView {
    #[serde(flatten)]
    pub faults: Faults,
    pub mode: SimMode,
    pub tid_ttl_secs: u64,
    /// Whether an outage is in effect now (manual flag or scheduled window).
    pub outage_active: bool,
}

/// What to do with one API call, decided up front.
#[derive(Debug)]
pub(crate) struct CallPlan {
    pub delay: Duration,
    /// Answer with this error and do nothing else.
    pub reject: Option<ApiError>,
    /// Process the call, then answer with a 500 instead.
    pub lose_response: bool,
    /// Decline this call if it is an otherwise valid approve.
    pub decline: bool,
    /// Close the connection without an answer and do nothing else.
    pub drop_connection: bool,
    /// Process the call, then never answer (hold, then close the connection).
    pub lose_answer: bool,
}

/// Runtime-adjustable settings (behind one mutex in the simulator state).
#[derive(Debug)]
pub(crate) struct Knobs {
    pub faults: Faults,
    pub mode: SimMode,
    pub tid_ttl: Duration,
    /// Scheduled outage as absolute instants `[start, end)`.
    window: Option<(Instant, Option<Instant>)>,
}

impl Knobs {
    pub fn new(
        faults: Faults,
        mode: SimMode,
        tid_ttl: Duration,
        window: Option<OutageWindow>,
    ) -> Self {
        let started = Instant::now();
        Self {
            faults,
            mode,
            tid_ttl,
            window: window.map(|w| {
                let start = started + w.after;
                (start, w.duration.map(|d| start + d))
            }),
        }
    }

    pub fn outage_active(&self) -> bool {
        self.faults.outage || self.window_active(Instant::now())
    }

    fn window_active(&self, now: Instant) -> bool {
        match self.window {
            Some((start, end)) => now >= start && end.is_none_or(|end| now < end),
            None => false,
        }
    }

    pub fn view(&self) -> FaultsView {
        FaultsView {
            faults: self.faults.clone(),
            mode: self.mode,
            tid_ttl_secs: self.tid_ttl.as_secs(),
            outage_active: self.outage_active(),
        }
    }

    /// Replaces the fault knobs (mode and TTL stay).
    pub fn set_faults(&mut self, faults: Faults) -> Result<(), String> {
        faults.validate()?;
        self.faults = faults;
        self.window = None;
        Ok(())
    }

    /// Applies a partial update; nothing changes if any value is invalid.
    pub fn apply(&mut self, patch: FaultsPatch) -> Result<(), String> {
        let mut faults = self.faults.clone();
        if let Some(code) = patch.decline_code {
            faults.decline_code = Some(code);
        }
        faults.latency_ms = patch.latency_ms.unwrap_or(faults.latency_ms);
        faults.jitter_ms = patch.jitter_ms.unwrap_or(faults.jitter_ms);
        faults.decline_rate = patch.decline_rate.unwrap_or(faults.decline_rate);
        faults.error_rate = patch.error_rate.unwrap_or(faults.error_rate);
        faults.lost_response_rate = patch
            .lost_response_rate
            .unwrap_or(faults.lost_response_rate);
        faults.dropped_connection = patch
            .dropped_connection
            .unwrap_or(faults.dropped_connection);
        faults.applied_answer_lost = patch
            .applied_answer_lost
            .unwrap_or(faults.applied_answer_lost);
        faults.validate()?;
        if let Some(outage) = patch.outage {
            faults.outage = outage;
            self.window = None;
        }
        self.faults = faults;
        if let Some(mode) = patch.mode {
            self.mode = mode;
        }
        if let Some(secs) = patch.tid_ttl_secs {
            self.tid_ttl = Duration::from_secs(secs);
        }
        Ok(())
    }

    /// Draws the delay and fault outcome of a call to `endpoint` (`ready`, `approve`,
    /// `cancel`, `order`).
    pub fn plan_call(&self, endpoint: &str) -> CallPlan {
        let mut rng = rand::rng();
        let f = &self.faults;
        let jitter = if f.jitter_ms > 0 {
            rng.random_range(0..=f.jitter_ms)
        } else {
            0
        };
        let reject = if self.outage_active() {
            Some(ApiError::maintenance())
        } else if roll(&mut rng, f.error_rate) {
            Some(ApiError::internal())
        } else {
            None
        };
        CallPlan {
            delay: Duration::from_millis(f.latency_ms.saturating_add(jitter)),
            reject,
            lose_response: roll(&mut rng, f.lost_response_rate),
            decline: roll(&mut rng, f.decline_rate),
            drop_connection: roll(&mut rng, f.dropped_connection.of(endpoint)),
            lose_answer: roll(&mut rng, f.applied_answer_lost.of(endpoint)),
        }
    }
}

/// True with probability `rate` (exactly never at 0.0, always at 1.0).
fn roll(rng: &mut impl Rng, rate: f64) -> bool {
    rate > 0.0 && rng.random::<f64>() < rate
}

#[cfg(test)]
mod tests {
    use super::*;

    fn knobs(faults: Faults, window: Option<OutageWindow>) -> Knobs {
        Knobs::new(faults, SimMode::Auto, Duration::from_secs(900), window)
    }

    #[test]
    fn rates_of_zero_and_one_are_exact() {
        let k = knobs(
            Faults {
                decline_rate: 1.0,
                ..Faults::default()
            },
            None,
        );
        for _ in 0..100 {
            let plan = k.plan_call("approve");
            assert!(plan.decline && plan.reject.is_none() && !plan.lose_response);
        }
    }

    #[test]
    fn connection_knobs_are_per_endpoint() {
        let mut k = knobs(Faults::default(), None);
        let patch: FaultsPatch = serde_json::from_value(serde_json::json!({
            "dropped_connection": {"cancel": 1.0},
            "applied_answer_lost": {"approve": 1.0},
        }))
        .expect("a valid patch");
        k.apply(patch).expect("valid");
        assert!(k.plan_call("cancel").drop_connection);
        assert!(!k.plan_call("approve").drop_connection);
        assert!(k.plan_call("approve").lose_answer);
        assert!(!k.plan_call("order").lose_answer);
        let bad: FaultsPatch = serde_json::from_value(serde_json::json!({
            "dropped_connection": {"approve": 2.0},
        }))
        .expect("parses");
        let err = k.apply(bad).expect_err("out of range");
        assert!(err.contains("dropped_connection.approve"), "{err}");
        let typo = serde_json::from_value::<FaultsPatch>(serde_json::json!({
            "dropped_connection": {"aprove": 1.0},
        }));
        assert!(typo.is_err(), "a typo fails loudly");
    }

    #[test]
    fn outage_window_and_runtime_override() {
        let mut k = knobs(
            Faults::default(),
            Some(OutageWindow {
                after: Duration::ZERO,
                duration: None,
            }),
        );
        assert!(k.outage_active());
        k.apply(FaultsPatch {
            outage: Some(false),
            ..FaultsPatch::default()
        })
        .expect("valid");
        assert!(!k.outage_active());
        let future = knobs(
            Faults::default(),
            Some(OutageWindow {
                after: Duration::from_secs(3600),
                duration: Some(Duration::from_secs(1)),
            }),
        );
        assert!(!future.outage_active());
    }

    #[test]
    fn invalid_patch_changes_nothing() {
        let mut k = knobs(Faults::default(), None);
        let err = k
            .apply(FaultsPatch {
                latency_ms: Some(5),
                error_rate: Some(1.5),
                ..FaultsPatch::default()
            })
            .expect_err("invalid");
        assert!(err.contains("error_rate"));
        assert_eq!(k.faults, Faults::default());
    }
}
