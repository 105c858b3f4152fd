//! Virtual shoppers against a running shop, shared by `loadgen` and `experiment`.
//!
//! Each shopper: `POST /orders` (→ 202) → long-polls `GET /orders/{id}` (`Prefer: wait`,
//! `If-None-Match` = the last `ETag`: the order service answers as soon as the order
//! changes) until `payment.redirect_url` → follows it with redirects on (the simulator's
//! page sends the browser to payment's approval callback: 200, `APPROVED`) → optionally
//! long-polls until the order is `COMPLETED`.
//!
//! * Open loop ([`Load::Open`]): orders are issued at fixed offsets from the start
//!   whatever the answers; accept latency counts from the scheduled time (no
//!   coordinated omission).
//! * Closed loop ([`Load::Closed`]): C shoppers, each starting the next order when the
//!   previous one is done.
//!
//! Always bounded: the schedule (or duration/count) ends, every request has a timeout,
//! every waiting step a deadline, and shoppers still in progress after their own bound
//! are aborted and counted as `aborted_at_deadline`. Only 127.0.0.1 is ever contacted.

use crate::loopback;
use crate::stats::{self, Latency};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::redirect::Policy;
use reqwest::{StatusCode, Url};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::time::Instant as TokioInstant;

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
    /// Keep the id of every accepted order in the [`Recorder`] (for later reads).
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

/// What one shopper saw.
#[derive(Debug, Default)]
pub struct Outcome {
    pub order_id: Option<String>,
    pub accept: Option<Duration>,
    pub ready: Option<Duration>,
    pub approve: Option<Duration>,
    pub end_to_end: Option<Duration>,
    pub end_to_end_server_ms: Option<i64>,
    pub error: Option<String>,
}

/// Counts and latency histograms of every shopper.
#[derive(Debug, Default)]
pub struct Recorder {
    pub started: u64,
    pub accepted: u64,
    pub payment_ready: u64,
    pub approved: u64,
    pub completed: u64,
    pub errors: BTreeMap<String, u64>,
    pub accept: Latency,
    pub ready: Latency,
    pub approve: Latency,
    pub end_to_end: Latency,
    pub end_to_end_server: Latency,
    /// Accepted order ids (only with [`ShopConfig::keep_order_ids`]).
    pub order_ids: Vec<String>,
    keep_ids: bool,
}

impl Recorder {
    pub fn new(keep_order_ids: bool) -> Self {
        Self {
            keep_ids: keep_order_ids,
            ..Self::default()
        }
    }

    pub fn record(&mut self, outcome: Outcome) {
        self.started += 1;
        if let Some(d) = outcome.accept {
            self.accepted += 1;
            self.accept.record(d);
            if self.keep_ids {
                if let Some(id) = outcome.order_id {
                    self.order_ids.push(id);
                }
            }
        }
        if let Some(d) = outcome.ready {
            self.payment_ready += 1;
            self.ready.record(d);
        }
        if let Some(d) = outcome.approve {
            self.approved += 1;
            self.approve.record(d);
        }
        if let Some(d) = outcome.end_to_end {
            self.completed += 1;
            self.end_to_end.record(d);
        }
        if let Some(ms) = outcome.end_to_end_server_ms {
            self.end_to_end_server.record_millis(ms);
        }
        if let Some(kind) = outcome.error {
            *self.errors.entry(kind).or_default() += 1;
        }
    }

    pub fn error(&mut self, kind: &str) {
        *self.errors.entry(kind.to_owned()).or_default() += 1;
    }

    pub fn errors_total(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Shoppers scheduled, including those refused by the in-flight limit.
    pub fn shoppers(&self) -> u64 {
        self.started + self.errors.get("in_flight_limit").copied().unwrap_or(0)
    }

    /// Per latency: count, percentiles and the CDF table (milliseconds).
    pub fn latency_json(&self) -> Value {
        json!({
            "accept": self.accept.summary(),
            "payment_ready": self.ready.summary(),
            "approve": self.approve.summary(),
            "end_to_end": self.end_to_end.summary(),
            "end_to_end_server": self.end_to_end_server.summary(),
        })
    }
}

/// What every latency of the [`Recorder`] measures.
pub fn latency_definitions() -> Value {
    json!({
        "accept": "POST /orders → 202 received; open loop: from the scheduled start (coordinated omission corrected)",
        "payment_ready": "202 received → GET /orders/{id} first shows payment.redirect_url (long poll: answered when the order changes)",
        "approve": "GET payment.redirect_url, redirects followed, → 200 APPROVED from payment's callback",
        "end_to_end": "202 received → GET /orders/{id} first shows COMPLETED (client view, long poll)",
        "end_to_end_server": "completed_at - created_at of the order (server clock)",
    })
}

pub fn lock(recorder: &Mutex<Recorder>) -> MutexGuard<'_, Recorder> {
    recorder.lock().unwrap_or_else(|p| p.into_inner())
}

/// The shoppers' HTTP clients and settings.
pub struct Shop {
    config: ShopConfig,
    api: reqwest::Client,
    browser: reqwest::Client,
    run: String,
    seq: AtomicU64,
}

/// A short name for a request error.
fn kind(step: &str, error: &reqwest::Error) -> String {
    let what = if error.is_timeout() {
        "timeout"
    } else if error.is_connect() {
        "connect"
    } else if error.is_redirect() {
        "redirect"
    } else if error.is_decode() || error.is_body() {
        "body"
    } else {
        "request"
    };
    format!("{step}_{what}")
}

impl Shop {
    pub fn new(config: ShopConfig) -> anyhow::Result<Self> {
        let api = reqwest::Client::builder()
            .no_proxy()
            .timeout(config.request_timeout)
            .redirect(Policy::none())
            .pool_max_idle_per_host(256)
            .build()?;
        let browser = reqwest::Client::builder()
            .no_proxy()
            .timeout(config.request_timeout)
            .redirect(Policy::custom(|attempt| {
                if attempt.previous().len() >= 5 {
                    attempt.error("more than 5 redirects")
                } else if loopback::is_loopback_url(attempt.url()) {
                    attempt.follow()
                } else {
                    attempt.stop()
                }
            }))
            .build()?;
        Ok(Self {
            config,
            api,
            browser,
            run: uuid::Uuid::now_v7().simple().to_string()[20..].to_owned(),
            seq: AtomicU64::new(0),
        })
    }

    pub fn config(&self) -> &ShopConfig {
        &self.config
    }

    /// The order service's JSON client (no redirects; loopback only).
    pub fn api(&self) -> &reqwest::Client {
        &self.api
    }

    fn next_poll(&self, poll: Duration) -> Duration {
        poll.mul_f64(1.5)
            .min(self.config.poll_max.max(self.config.poll))
    }

    /// `GET /orders/{id}`: the order and its `ETag`. With `seen` (an `ETag`), the order
    /// service waits (`Prefer: wait`) until the order differs from it or the wait (at most
    /// [`LONG_POLL`], never past `deadline`) is over. A refused wait (503) is asked again
    /// after `Retry-After` (or [`ShopConfig::poll`]) until `deadline`. `token` is the
    /// order's (from `POST /orders`): the shopper reads its own full view, whose `ETag` is
    /// the POST answer's.
    pub async fn get_order(
        &self,
        id: &str,
        token: &str,
        seen: Option<&str>,
        deadline: TokioInstant,
    ) -> Result<(Value, Option<String>), String> {
        let url = self
            .config
            .order_url
            .join(&format!("orders/{id}"))
            .map_err(|_| "poll_bad_url".to_owned())?;
        let mut pause = self.config.poll;
        loop {
            let mut request = self.api.get(url.clone()).bearer_auth(token);
            if let Some(seen) = seen {
                let wait = whole_seconds_until(deadline);
                request = request
                    .header("Prefer", format!("wait={}", wait.as_secs()))
                    .header("If-None-Match", seen)
                    .timeout(wait + self.config.request_timeout);
            }
            let response = request.send().await.map_err(|e| kind("poll", &e))?;
            match response.status() {
                StatusCode::OK => {
                    // Without a tag the next request could not wait: it would poll.
                    let etag = etag_of(&response).ok_or_else(|| "poll_no_etag".to_owned())?;
                    let order = response.json().await.map_err(|e| kind("poll", &e))?;
                    return Ok((order, Some(etag)));
                }
                StatusCode::SERVICE_UNAVAILABLE if TokioInstant::now() + pause < deadline => {
                    tokio::time::sleep(retry_after(&response).unwrap_or(pause)).await;
                    pause = self.next_poll(pause);
                }
                status => return Err(format!("poll_http_{}", status.as_u16())),
            }
        }
    }

    /// One shopper's visit. `due` is when it should have started (open loop: its slot
    /// in the schedule; closed loop: now).
    pub async fn visit(&self, due: TokioInstant) -> Outcome {
        let mut outcome = Outcome::default();
        if let Err(kind) = self.steps(due, &mut outcome).await {
            outcome.error = Some(kind);
        }
        outcome
    }

    async fn steps(&self, due: TokioInstant, outcome: &mut Outcome) -> Result<(), String> {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let body = json!({
            "customer_id": format!("loadgen-{}-{n}", self.run),
            "customer_email": format!("loadgen-{n}@example.com"),
            "items": [
                { "name": "Load test item", "quantity": 1, "unit_price": 12_000 },
                { "name": "Sticker", "quantity": 2, "unit_price": 1_500 },
            ],
        });
        let url = self
            .config
            .order_url
            .join("orders")
            .map_err(|_| "accept_bad_url".to_owned())?;
        let response = self
            .api
            .post(url)
            .json(&body)
            .send()
            .await
            .map_err(|e| kind("accept", &e))?;
        if response.status() != StatusCode::ACCEPTED {
            return Err(format!("accept_http_{}", response.status().as_u16()));
        }
        let mut etag = etag_of(&response);
        let mut order: Value = response.json().await.map_err(|e| kind("accept", &e))?;
        let accepted = TokioInstant::now();
        let id = order["id"]
            .as_str()
            .ok_or_else(|| "accept_no_id".to_owned())?
            .to_owned();
        let token = order["access_token"]
            .as_str()
            .ok_or_else(|| "accept_no_token".to_owned())?
            .to_owned();
        outcome.accept = Some(accepted - due);
        outcome.order_id = Some(id.clone());
        if self.config.accept_only {
            return Ok(());
        }

        // Wait for the payment to be ready: the answer to the POST is the first view, and
        // each long poll returns as soon as the order differs from the last one seen.
        let deadline = accepted + self.config.step_timeout;
        let redirect = loop {
            if let Some(url) = order["payment"]["redirect_url"].as_str() {
                break url.to_owned();
            }
            if order["status"] == "CANCELLED" {
                return Err("cancelled_before_payment_ready".to_owned());
            }
            if TokioInstant::now() >= deadline {
                return Err("payment_ready_timeout".to_owned());
            }
            (order, etag) = self
                .get_order(&id, &token, etag.as_deref(), deadline)
                .await?;
        };
        let ready = TokioInstant::now();
        outcome.ready = Some(ready - accepted);

        // The shopper approves on the payment page.
        let redirect = Url::parse(&redirect).map_err(|_| "redirect_bad_url".to_owned())?;
        if !loopback::is_loopback_url(&redirect) {
            return Err("redirect_not_loopback".to_owned());
        }
        let approve_started = TokioInstant::now();
        let response = self
            .browser
            .get(redirect)
            .send()
            .await
            .map_err(|e| kind("approve", &e))?;
        let status = response.status();
        let final_host_ok = loopback::is_loopback_url(response.url());
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !final_host_ok {
            return Err("approve_left_loopback".to_owned());
        }
        if status != StatusCode::OK {
            return Err(format!("approve_http_{}", status.as_u16()));
        }
        if body["status"] != "APPROVED" {
            return Err(format!(
                "approve_status_{}",
                body["status"].as_str().unwrap_or("missing")
            ));
        }
        outcome.approve = Some(approve_started.elapsed());

        if !self.config.wait_complete {
            return Ok(());
        }
        let deadline = TokioInstant::now() + self.config.step_timeout;
        let mut etag = None;
        loop {
            let order;
            (order, etag) = self
                .get_order(&id, &token, etag.as_deref(), deadline)
                .await?;
            match order["status"].as_str() {
                Some("COMPLETED") => {
                    outcome.end_to_end = Some(accepted.elapsed());
                    let at = |field: &str| {
                        order[field]
                            .as_str()
                            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
                    };
                    if let (Some(created), Some(completed)) = (at("created_at"), at("completed_at"))
                    {
                        outcome.end_to_end_server_ms =
                            Some((completed - created).num_milliseconds());
                    }
                    return Ok(());
                }
                Some("CANCELLED") => return Err("cancelled_after_approval".to_owned()),
                _ => {}
            }
            if TokioInstant::now() >= deadline {
                return Err("complete_timeout".to_owned());
            }
        }
    }
}

/// The longest wait one request asks of the order service (its maximum is 30 s unless
/// `ORDER_MAX_WAIT_SECS` says otherwise).
pub const LONG_POLL: Duration = Duration::from_secs(25);

/// The wait to ask for so the answer comes by `deadline`: whole seconds, 1 to
/// [`LONG_POLL`] (rounded up, so a step never ends in a burst of short requests).
fn whole_seconds_until(deadline: TokioInstant) -> Duration {
    let left = deadline.saturating_duration_since(TokioInstant::now());
    Duration::from_secs(
        left.as_secs_f64()
            .ceil()
            .clamp(1.0, LONG_POLL.as_secs_f64()) as u64,
    )
}

fn etag_of(response: &reqwest::Response) -> Option<String> {
    let etag = response.headers().get(reqwest::header::ETAG)?;
    etag.to_str().ok().map(str::to_owned)
}

fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    let value = response.headers().get(reqwest::header::RETRY_AFTER)?;
    value.to_str().ok()?.parse().ok().map(Duration::from_secs)
}

/// The load to drive.
#[derive(Debug, Clone)]
pub enum Load {
    /// Open loop: order `i` is due at `offsets[i]` after the start (ascending).
    Open { offsets: Vec<Duration> },
    /// Closed loop: `concurrency` shoppers back to back, until `duration` and/or
    /// `orders` (whichever ends first; at least one must be given).
    Closed {
        concurrency: usize,
        duration: Option<Duration>,
        orders: Option<u64>,
    },
}

impl Load {
    /// How many shoppers the load will start, when known up front.
    pub fn total(&self) -> Option<u64> {
        match self {
            Load::Open { offsets } => Some(offsets.len() as u64),
            Load::Closed { orders, .. } => *orders,
        }
    }
}

/// How long the load took.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Start → the last order issued (open loop) or the last shopper done (closed).
    pub issue_seconds: f64,
    /// Start → every shopper done (or aborted at its bound).
    pub elapsed_seconds: f64,
}

/// A progress bar on stderr, hidden when `quiet` or when stderr is not a terminal.
pub fn progress_bar(quiet: bool, total: Option<u64>) -> ProgressBar {
    let bar = match total {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::no_length(),
    };
    if quiet || !std::io::stderr().is_terminal() {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    } else {
        bar.set_style(
            ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {pos}/{len} shoppers done  {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
    }
    bar
}

/// Runs `load` with shoppers of `shop`, recording into `recorder`. `on_tick` is called
/// about every 100 ms of the issuing phase with the time since the start (the
/// experiment applies timed faults from it).
pub async fn drive(
    shop: Arc<Shop>,
    load: Load,
    recorder: Arc<Mutex<Recorder>>,
    bar: ProgressBar,
    mut on_tick: impl FnMut(Duration),
) -> Timing {
    let started = Instant::now();
    let shopper_bound = shop.config.shopper_bound();
    let issue_seconds;
    match load {
        Load::Open { offsets } => {
            let in_flight = Arc::new(AtomicUsize::new(0));
            let mut tasks = tokio::task::JoinSet::new();
            let start = TokioInstant::now();
            let mut last_tick = Duration::ZERO;
            for (i, offset) in offsets.iter().enumerate() {
                let due = start + *offset;
                // Sleep in slices so ticks keep coming through gaps in the schedule.
                loop {
                    let now = TokioInstant::now();
                    let since = now - start;
                    if since >= last_tick + Duration::from_millis(100) {
                        last_tick = since;
                        on_tick(since);
                    }
                    if now >= due {
                        break;
                    }
                    tokio::time::sleep_until(due.min(now + Duration::from_millis(100))).await;
                }
                if in_flight.load(Ordering::Relaxed) >= shop.config.max_in_flight {
                    lock(&recorder).error("in_flight_limit");
                    bar.inc(1);
                    continue;
                }
                in_flight.fetch_add(1, Ordering::Relaxed);
                let (shop, task_recorder, task_in_flight, task_bar) = (
                    shop.clone(),
                    recorder.clone(),
                    in_flight.clone(),
                    bar.clone(),
                );
                tasks.spawn(async move {
                    let outcome = shop.visit(due).await;
                    lock(&task_recorder).record(outcome);
                    task_in_flight.fetch_sub(1, Ordering::Relaxed);
                    task_bar.inc(1);
                });
                // Reap finished tasks so the set does not grow with the run.
                while tasks.try_join_next().is_some() {}
                if i % 20 == 0 {
                    bar.set_message(status_line(&recorder, started));
                }
            }
            issue_seconds = started.elapsed().as_secs_f64();
            drain(&mut tasks, shopper_bound, &bar, &recorder, started).await;
        }
        Load::Closed {
            concurrency,
            duration,
            orders,
        } => {
            let remaining = Arc::new(AtomicU64::new(orders.unwrap_or(u64::MAX)));
            let stop_at = duration.map(|d| TokioInstant::now() + d);
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..concurrency {
                let shop = shop.clone();
                let recorder = recorder.clone();
                let remaining = remaining.clone();
                let bar = bar.clone();
                tasks.spawn(async move {
                    loop {
                        if stop_at.is_some_and(|t| TokioInstant::now() >= t) {
                            break;
                        }
                        let claimed = remaining
                            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                                n.checked_sub(1)
                            })
                            .is_ok();
                        if !claimed {
                            break;
                        }
                        let outcome = shop.visit(TokioInstant::now()).await;
                        lock(&recorder).record(outcome);
                        bar.inc(1);
                    }
                });
            }
            let bound = duration.unwrap_or(Duration::from_secs(3600)) + shopper_bound;
            let deadline = TokioInstant::now() + bound;
            let start = Instant::now();
            loop {
                let next = tokio::time::timeout(Duration::from_millis(100), tasks.join_next());
                if let Ok(None) = next.await {
                    break;
                }
                on_tick(start.elapsed());
                bar.set_message(status_line(&recorder, started));
                if TokioInstant::now() >= deadline {
                    drain(&mut tasks, Duration::ZERO, &bar, &recorder, started).await;
                    break;
                }
            }
            issue_seconds = started.elapsed().as_secs_f64();
        }
    }
    bar.finish_and_clear();
    Timing {
        issue_seconds,
        elapsed_seconds: started.elapsed().as_secs_f64(),
    }
}

pub fn status_line(recorder: &Mutex<Recorder>, started: Instant) -> String {
    let r = lock(recorder);
    format!(
        "accepted {} ({:.1}/s)  approved {}  completed {}  errors {}",
        r.accepted,
        stats::rate(r.accepted, started.elapsed().as_secs_f64()),
        r.approved,
        r.completed,
        r.errors_total()
    )
}

/// Waits for the shoppers still in progress, at most `bound`; the rest are aborted and
/// counted as `aborted_at_deadline`.
async fn drain(
    tasks: &mut tokio::task::JoinSet<()>,
    bound: Duration,
    bar: &ProgressBar,
    recorder: &Mutex<Recorder>,
    started: Instant,
) {
    let deadline = TokioInstant::now() + bound;
    loop {
        match tokio::time::timeout_at(deadline, tasks.join_next()).await {
            Ok(Some(_)) => bar.set_message(status_line(recorder, started)),
            Ok(None) => return,
            Err(_) => {
                let left = tasks.len() as u64;
                tasks.abort_all();
                let mut r = lock(recorder);
                *r.errors
                    .entry("aborted_at_deadline".to_owned())
                    .or_default() += left;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recorder_counts_and_keeps_ids_when_asked() {
        let mut r = Recorder::new(true);
        r.record(Outcome {
            order_id: Some("a".into()),
            accept: Some(Duration::from_millis(5)),
            ..Outcome::default()
        });
        r.record(Outcome {
            error: Some("accept_http_503".into()),
            ..Outcome::default()
        });
        r.error("in_flight_limit");
        assert_eq!(r.started, 2);
        assert_eq!(r.accepted, 1);
        assert_eq!(r.order_ids, vec!["a".to_owned()]);
        assert_eq!(r.errors_total(), 2);
        assert_eq!(r.shoppers(), 3);
        let mut r = Recorder::new(false);
        r.record(Outcome {
            order_id: Some("a".into()),
            accept: Some(Duration::from_millis(5)),
            ..Outcome::default()
        });
        assert!(r.order_ids.is_empty());
    }

    #[test]
    fn only_loopback_order_urls_are_accepted() {
        assert!(ShopConfig::new("http://example.com:8081").is_err());
        let c = ShopConfig::new("http://127.0.0.1:8081").expect("config");
        assert_eq!(c.order_url.as_str(), "http://127.0.0.1:8081/");
    }
}
