//! The shopper driver: places orders at a steady pace and, for each, does what the
//! shopper means to do — approve, cancel on the payment page, or approve and then cancel
//! the order (a refund). Every request is retried with bounded backoff through outages:
//! the point of a scenario is that nothing *accepted* is lost, so the driver keeps
//! trying to get its orders accepted and its actions through.
//!
//! A load can also hold every shopper at the payment page ([`LoadPlan::hold_at_page`])
//! until the scenario lets them pay ([`Load::pay`]): a fault can then start after every
//! page is shown and before anyone pays, as when a shop's database goes down while its
//! shoppers are on Kakao Pay's page.

use serde::Serialize;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};
use uuid::Uuid;

/// How long one shopper keeps at an order (all steps together) before giving up: the
/// order is then still checked by the invariants (the give-up is noted, not excused).
/// 120 s, plus 0.1 s per order of the load above 200 (a heavy run's backlog).
fn order_deadline(orders: usize) -> Duration {
    Duration::from_secs(120) + Duration::from_millis(100 * orders.saturating_sub(200) as u64)
}

/// What the shopper means to do with an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Intent {
    /// Follow the payment page (approve): the order completes.
    Approve,
    /// `?action=cancel` on the payment page: the order is cancelled unpaid.
    Cancel,
    /// Approve, wait for `COMPLETED`, then `POST /orders/{id}/cancel`: refunded.
    Refund,
    /// Take the payment page and never pay: the payment deadline cancels the order
    /// unpaid.
    Abandon,
}

/// Shares of the shopper actions, in percent (the rest approve).
#[derive(Debug, Clone, Copy)]
pub struct Mix {
    pub cancel_percent: u32,
    pub refund_percent: u32,
    pub abandon_percent: u32,
}

impl Mix {
    /// ~70 % approve, ~15 % cancel on the payment page, ~15 % refunded after approval.
    pub const STANDARD: Mix = Mix {
        cancel_percent: 15,
        refund_percent: 15,
        abandon_percent: 0,
    };
    pub const APPROVE_ONLY: Mix = Mix {
        cancel_percent: 0,
        refund_percent: 0,
        abandon_percent: 0,
    };

    /// The intent of the `n`-th order: deterministic, and spread evenly over the load
    /// (37 is prime to 100, so every 100 consecutive orders use every bucket once).
    pub fn intent(&self, n: usize) -> Intent {
        let bucket = (n * 37 % 100) as u32;
        let refunds_from = self.cancel_percent;
        let abandons_from = refunds_from + self.refund_percent;
        if bucket < refunds_from {
            Intent::Cancel
        } else if bucket < abandons_from {
            Intent::Refund
        } else if bucket < abandons_from + self.abandon_percent {
            Intent::Abandon
        } else {
            Intent::Approve
        }
    }
}

/// A load: how many orders, over how long, how many shoppers at once.
#[derive(Debug, Clone, Copy)]
pub struct LoadPlan {
    pub orders: usize,
    /// Orders are started evenly over this time (so faults land mid-load).
    pub spread: Duration,
    /// Shoppers active at once.
    pub concurrency: usize,
    pub mix: Mix,
    /// Added to each shopper's time at an order: a shopper who keeps retrying through
    /// an outage longer than the usual budget (the services' settings are untouched).
    pub patience: Duration,
    /// Every shopper waits at the payment page until [`Load::pay`].
    pub hold_at_page: bool,
}

impl LoadPlan {
    pub fn new(orders: usize, spread: Duration) -> Self {
        Self {
            orders,
            spread,
            concurrency: 64,
            mix: Mix::STANDARD,
            patience: Duration::ZERO,
            hold_at_page: false,
        }
    }

    /// Shoppers wait at the payment page until [`Load::pay`]. Every shopper of the load
    /// is then active at once (each holds a place while it waits, as a person on the
    /// page would), so the load's `concurrency` becomes its number of orders.
    pub fn hold_at_page(mut self) -> Self {
        self.hold_at_page = true;
        self.concurrency = self.orders.max(1);
        self
    }

    pub fn patience(mut self, extra: Duration) -> Self {
        self.patience = extra;
        self
    }

    pub fn mix(mut self, mix: Mix) -> Self {
        self.mix = mix;
        self
    }
}

/// An order the shop accepted (`202`), and what the driver did with it.
#[derive(Debug, Clone, Serialize)]
pub struct Placed {
    pub n: usize,
    pub id: Uuid,
    pub email: String,
    pub total: i64,
    pub intent: Intent,
    /// The approval callback answered `APPROVED` (or the order completed).
    pub approved: bool,
    /// `POST /orders/{id}/cancel` was accepted (the refund intent's last step).
    pub cancel_requested: bool,
    /// Why the driver stopped short of its intent, if it did.
    pub note: Option<String>,
    /// The order's token (`POST /orders` shows it once); needed to cancel. Never written
    /// to a result file.
    #[serde(skip)]
    pub token: String,
}

/// What a load did.
#[derive(Debug, Clone, Serialize)]
pub struct LoadOutcome {
    pub placed: Vec<Placed>,
    /// Orders never accepted within the retry deadline, with the last error.
    pub not_accepted: Vec<String>,
    pub duration: Duration,
    /// Requests that failed and were retried.
    pub retries: usize,
}

#[derive(Default)]
struct Progress {
    accepted: AtomicUsize,
    /// Shoppers who have seen their payment page (or learnt it failed).
    at_page: AtomicUsize,
    finished: AtomicUsize,
    retries: AtomicUsize,
}

/// A load running in the background.
pub struct Load {
    progress: Arc<Progress>,
    orders: usize,
    /// Opens the payment pages' gate (`true`) for a load held there.
    pay: tokio::sync::watch::Sender<bool>,
    task: JoinHandle<LoadOutcome>,
}

impl Load {
    /// Orders accepted so far.
    pub fn accepted(&self) -> usize {
        self.progress.accepted.load(Ordering::SeqCst)
    }

    /// Orders whose shopper is done.
    pub fn finished(&self) -> usize {
        self.progress.finished.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` orders were accepted (or the load ended).
    pub async fn until_accepted(&self, n: usize) {
        self.until(n, "accepted orders", Self::accepted).await;
    }

    /// Polls `count` until it reaches `n` (at most the load's orders) or the load ends;
    /// fails after 10 minutes.
    async fn until(&self, n: usize, what: &str, count: fn(&Self) -> usize) {
        let n = n.min(self.orders);
        let started = Instant::now();
        while count(self) < n && !self.task.is_finished() {
            assert!(
                started.elapsed() < Duration::from_secs(600),
                "gave up waiting for {n} {what} ({} so far)",
                count(self)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Shoppers who have seen their payment page (or learnt the payment failed).
    pub fn at_payment_page(&self) -> usize {
        self.progress.at_page.load(Ordering::SeqCst)
    }

    /// Waits until every accepted order's shopper is at the payment page, `n` at least,
    /// or the load ended.
    pub async fn until_at_payment_page(&self, n: usize) {
        self.until(n, "shoppers at the payment page", Self::at_payment_page)
            .await;
    }

    /// Lets the shoppers held at the payment page (see [`LoadPlan::hold_at_page`]) go on.
    pub fn pay(&self) {
        self.pay.send_replace(true);
    }

    /// Waits until at least `n` shoppers are done (or the load ended).
    pub async fn until_finished(&self, n: usize) {
        let n = n.min(self.orders);
        while self.finished() < n && !self.task.is_finished() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for every shopper to be done.
    pub async fn finish(self) -> LoadOutcome {
        self.task.await.expect("the load's task")
    }
}

/// Places and drives orders against one order-service.
#[derive(Clone)]
pub struct Shopper {
    order_url: String,
    http: reqwest::Client,
    tag: String,
}

impl Shopper {
    pub fn new(order_url: String, http: reqwest::Client, tag: &str) -> Self {
        Self {
            order_url,
            http,
            tag: tag.to_owned(),
        }
    }

    /// Starts `plan` in the background.
    pub fn start(&self, plan: LoadPlan) -> Load {
        let progress = Arc::new(Progress::default());
        let shopper = self.clone();
        let shared = progress.clone();
        let (pay, gate) = tokio::sync::watch::channel(!plan.hold_at_page);
        let task = tokio::spawn(async move { shopper.run(plan, shared, gate).await });
        Load {
            progress,
            orders: plan.orders,
            pay,
            task,
        }
    }

    async fn run(
        self,
        plan: LoadPlan,
        progress: Arc<Progress>,
        pay: tokio::sync::watch::Receiver<bool>,
    ) -> LoadOutcome {
        let started = Instant::now();
        let gate = Arc::new(Semaphore::new(plan.concurrency.max(1)));
        let mut tasks = JoinSet::new();
        let budget = order_deadline(plan.orders) + plan.patience;
        for n in 0..plan.orders {
            let at = plan.spread.mul_f64(n as f64 / plan.orders.max(1) as f64);
            let shopper = self.clone();
            let gate = gate.clone();
            let progress = progress.clone();
            let intent = plan.mix.intent(n);
            let pay = pay.clone();
            tasks.spawn(async move {
                tokio::time::sleep_until(tokio::time::Instant::from_std(started + at)).await;
                // The shopper's time runs from its scheduled start, queueing included.
                let deadline = Instant::now() + budget;
                let _permit = gate.acquire_owned().await.expect("semaphore open");
                let result = shopper.one(n, intent, &progress, pay, deadline).await;
                progress.finished.fetch_add(1, Ordering::SeqCst);
                result
            });
        }
        let mut placed = Vec::new();
        let mut not_accepted = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            match joined.expect("shopper task") {
                Ok(order) => placed.push(order),
                Err(error) => not_accepted.push(error),
            }
        }
        placed.sort_by_key(|p| p.n);
        LoadOutcome {
            placed,
            not_accepted,
            duration: started.elapsed(),
            retries: progress.retries.load(Ordering::SeqCst),
        }
    }

    /// One shopper: place the order, then act on it.
    async fn one(
        &self,
        n: usize,
        intent: Intent,
        progress: &Progress,
        pay: tokio::sync::watch::Receiver<bool>,
        deadline: Instant,
    ) -> Result<Placed, String> {
        let email = format!("f{n}-{}@example.com", self.tag);
        let (id, total, token) = self.place(n, &email, progress, deadline).await?;
        progress.accepted.fetch_add(1, Ordering::SeqCst);
        let mut order = Placed {
            n,
            id,
            email,
            total,
            intent,
            approved: false,
            cancel_requested: false,
            note: None,
            token,
        };
        if let Err(note) = self.act(&mut order, progress, pay, deadline).await {
            order.note = Some(note);
        }
        Ok(order)
    }

    /// `POST /orders` until it is accepted; returns the order id, total and token.
    async fn place(
        &self,
        n: usize,
        email: &str,
        progress: &Progress,
        deadline: Instant,
    ) -> Result<(Uuid, i64, String), String> {
        let body = json!({
            "customer_id": format!("shopper-{}-{n}", self.tag),
            "customer_email": email,
            "items": [
                {"name": "아메리카노", "quantity": 1 + n % 3, "unit_price": 4500},
                {"name": "Cookie", "quantity": 1, "unit_price": 1000 + (n % 5) * 500}
            ]
        });
        let url = format!("{}/orders", self.order_url);
        let mut backoff = Backoff::new(deadline);
        loop {
            let error = match self.http.post(&url).json(&body).send().await {
                Ok(response) if response.status() == 202 => {
                    let order: Value = response
                        .json()
                        .await
                        .map_err(|e| format!("order {n}: accepted, body unreadable: {e}"))?;
                    let id = order["id"]
                        .as_str()
                        .and_then(|id| id.parse().ok())
                        .ok_or_else(|| format!("order {n}: no id in {order}"))?;
                    let total = order["total_amount"].as_i64().unwrap_or_default();
                    let token = order["access_token"]
                        .as_str()
                        .ok_or_else(|| format!("order {n}: no access_token"))?;
                    return Ok((id, total, token.to_owned()));
                }
                Ok(response) if response.status().is_client_error() => {
                    let status = response.status();
                    let text = response.text().await.unwrap_or_default();
                    return Err(format!("order {n}: refused {status}: {text}"));
                }
                Ok(response) => format!("{}", response.status()),
                Err(error) => error.to_string(),
            };
            progress.retries.fetch_add(1, Ordering::SeqCst);
            backoff
                .wait()
                .await
                .map_err(|elapsed| format!("order {n}: not accepted after {elapsed:?}: {error}"))?;
        }
    }

    /// Acts on an accepted order as `order.intent` says.
    async fn act(
        &self,
        order: &mut Placed,
        progress: &Progress,
        mut pay: tokio::sync::watch::Receiver<bool>,
        deadline: Instant,
    ) -> Result<(), String> {
        let page = self.redirect_url(order.id, deadline).await;
        progress.at_page.fetch_add(1, Ordering::SeqCst);
        let Some(redirect) = page? else {
            return Err("the payment failed before it was ready".to_owned());
        };
        if order.intent == Intent::Abandon {
            return Ok(()); // never pays, so never waits for the gate
        }
        let gate = pay.wait_for(|open| *open);
        match tokio::time::timeout_at(tokio::time::Instant::from_std(deadline), gate).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return Err("the load ended before the shopper could pay".to_owned()),
            Err(_) => return Err("held at the payment page past the shopper's time".to_owned()),
        }
        match order.intent {
            Intent::Abandon => Ok(()),
            Intent::Cancel => {
                let mut url = url::Url::parse(&redirect).map_err(|e| e.to_string())?;
                url.query_pairs_mut().append_pair("action", "cancel");
                self.visit_until(
                    order.id,
                    url.as_str(),
                    progress,
                    deadline,
                    |status, body| status == 200 || body.is_some_and(|b| b["status"] == "FAILED"),
                )
                .await
            }
            Intent::Approve | Intent::Refund => {
                order.approved = self
                    .approve(order.id, &redirect, progress, deadline)
                    .await?;
                if order.intent == Intent::Refund && order.approved {
                    self.until_status(order.id, "COMPLETED", deadline).await?;
                    self.cancel_order(order.id, &order.token, progress, deadline)
                        .await?;
                    order.cancel_requested = true;
                }
                Ok(())
            }
        }
    }

    /// The order as it is now (one plain read, after a failed step).
    async fn get_order(&self, id: Uuid) -> Option<Value> {
        let response = self
            .http
            .get(format!("{}/orders/{id}", self.order_url))
            .send()
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.json().await.ok()
    }

    /// Long-polls the order (see [`crate::watch::OrderWatch`]) until `found` says what
    /// it is waiting for; a failed request is retried with backoff through outages.
    async fn watch<T>(
        &self,
        id: Uuid,
        deadline: Instant,
        found: impl Fn(&Value) -> Option<T>,
    ) -> Result<T, String> {
        let mut watch = crate::watch::OrderWatch::new(&self.order_url, id);
        let mut backoff = Backoff::new(deadline);
        let mut last = String::new();
        loop {
            match watch.next(&self.http).await {
                Ok(order) => {
                    if let Some(value) = found(&order) {
                        return Ok(value);
                    }
                    last = order["status"].to_string();
                    backoff.check()
                }
                Err(error) => {
                    tracing::debug!(?error, "Order not read; trying again.");
                    backoff.wait().await
                }
            }
            .map_err(|elapsed| format!("{last} after {elapsed:?}"))?;
        }
    }

    /// Waits until the order's payment is ready (`Some(url)`) or the order was cancelled
    /// before (`None`: the payment failed, e.g. the gateway was down).
    async fn redirect_url(&self, id: Uuid, deadline: Instant) -> Result<Option<String>, String> {
        self.watch(id, deadline, |order| {
            match order["payment"]["redirect_url"].as_str() {
                Some(url) => Some(Some(url.to_owned())),
                None => (order["status"] == "CANCELLED").then_some(None),
            }
        })
        .await
        .map_err(|last| format!("no payment redirect URL: {last}"))
    }

    async fn until_status(&self, id: Uuid, status: &str, deadline: Instant) -> Result<(), String> {
        self.watch(id, deadline, |order| {
            (order["status"] == status).then_some(())
        })
        .await
        .map_err(|last| format!("not {status}: last {last}"))
    }

    /// Follows the payment page (auto mode approves) until the approval callback says
    /// `APPROVED`, the order completes, or the payment is certainly not approved
    /// (`Ok(false)`: e.g. declined, or cancelled meanwhile).
    async fn approve(
        &self,
        id: Uuid,
        redirect: &str,
        progress: &Progress,
        deadline: Instant,
    ) -> Result<bool, String> {
        let mut backoff = Backoff::new(deadline);
        loop {
            let mut last = match self.http.get(redirect).send().await {
                Ok(response) => {
                    let status = response.status();
                    let body: Option<Value> = response.json().await.ok();
                    match body.as_ref().and_then(|b| b["status"].as_str()) {
                        Some("APPROVED" | "REFUNDING" | "REFUNDED") if status == 200 => {
                            return Ok(true)
                        }
                        Some("FAILED") => return Ok(false),
                        _ => format!("{status} {}", body.unwrap_or_default()),
                    }
                }
                Err(error) => error.to_string(),
            };
            // The callback may have failed after the approval went through (a restart):
            // the order knows.
            if let Some(order) = self.get_order(id).await {
                match order["status"].as_str() {
                    Some("COMPLETED" | "CANCELLING") => return Ok(true),
                    Some("CANCELLED") => return Ok(false),
                    status => last.push_str(&format!(" (order {})", status.unwrap_or("?"))),
                }
            }
            progress.retries.fetch_add(1, Ordering::SeqCst);
            backoff
                .wait()
                .await
                .map_err(|elapsed| format!("approval not through after {elapsed:?}: {last}"))?;
        }
    }

    /// GETs `url` until `done(status, body)` or the order is cancelled.
    async fn visit_until(
        &self,
        id: Uuid,
        url: &str,
        progress: &Progress,
        deadline: Instant,
        done: impl Fn(u16, Option<&Value>) -> bool,
    ) -> Result<(), String> {
        let mut backoff = Backoff::new(deadline);
        loop {
            let last = match self.http.get(url).send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let body: Option<Value> = response.json().await.ok();
                    if done(status, body.as_ref()) {
                        return Ok(());
                    }
                    format!("{status} {}", body.unwrap_or_default())
                }
                Err(error) => error.to_string(),
            };
            if self
                .get_order(id)
                .await
                .is_some_and(|order| order["status"] == "CANCELLED")
            {
                return Ok(());
            }
            progress.retries.fetch_add(1, Ordering::SeqCst);
            backoff
                .wait()
                .await
                .map_err(|elapsed| format!("{url} not through after {elapsed:?}: {last}"))?;
        }
    }

    /// `POST /orders/{id}/cancel` until accepted.
    async fn cancel_order(
        &self,
        id: Uuid,
        token: &str,
        progress: &Progress,
        deadline: Instant,
    ) -> Result<(), String> {
        let url = format!("{}/orders/{id}/cancel", self.order_url);
        let mut backoff = Backoff::new(deadline);
        loop {
            let last = match self.http.post(&url).bearer_auth(token).send().await {
                Ok(response) if response.status().is_success() => return Ok(()),
                Ok(response) => {
                    let status = response.status();
                    format!("{status} {}", response.text().await.unwrap_or_default())
                }
                Err(error) => error.to_string(),
            };
            progress.retries.fetch_add(1, Ordering::SeqCst);
            backoff
                .wait()
                .await
                .map_err(|elapsed| format!("cancel not accepted after {elapsed:?}: {last}"))?;
        }
    }
}

/// Doubling waits until the order's deadline.
struct Backoff {
    started: Instant,
    deadline: Instant,
    wait: Duration,
    max: Duration,
}

impl Backoff {
    /// For retrying a failed request: 100 ms doubling to 2 s.
    fn new(deadline: Instant) -> Self {
        Self {
            started: Instant::now(),
            deadline,
            wait: Duration::from_millis(100),
            max: Duration::from_secs(2),
        }
    }

    /// `Err(time spent on this step)` once the order's deadline has passed.
    fn check(&self) -> Result<(), Duration> {
        if Instant::now() > self.deadline {
            return Err(self.started.elapsed());
        }
        Ok(())
    }

    /// Sleeps before the next try; `Err(time spent on this step)` once the order's
    /// deadline has passed.
    async fn wait(&mut self) -> Result<(), Duration> {
        let elapsed = self.started.elapsed();
        if Instant::now() > self.deadline {
            return Err(elapsed);
        }
        tokio::time::sleep(self.wait).await;
        self.wait = (self.wait * 2).min(self.max);
        Ok(())
    }
}
