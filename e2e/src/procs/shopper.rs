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
//!
//! The steps of one shopper (place, pay, cancel, refund) are in `steps`.

mod steps;

use serde::Serialize;
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
}
