//! Running a [`Load`] of shoppers: the open loop (orders on a schedule, whatever the
//! answers) and the closed loop (C shoppers back to back), with a progress bar.

use super::client::Shop;
use super::recorder::{lock, Recorder};
use crate::stats;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;
use tokio::time::Instant as TokioInstant;

/// How often the issuing phase calls `on_tick` and refreshes the progress bar.
const TICK: Duration = Duration::from_millis(100);

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
    let driver = Driver {
        started: Instant::now(),
        shop,
        recorder,
        bar,
    };
    let issue_seconds = match load {
        Load::Open { offsets } => driver.open(&offsets, &mut on_tick).await,
        Load::Closed {
            concurrency,
            duration,
            orders,
        } => {
            driver
                .closed(concurrency, duration, orders, &mut on_tick)
                .await
        }
    };
    driver.bar.finish_and_clear();
    Timing {
        issue_seconds,
        elapsed_seconds: driver.started.elapsed().as_secs_f64(),
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

/// What every phase of one [`drive`] shares.
struct Driver {
    started: Instant,
    shop: Arc<Shop>,
    recorder: Arc<Mutex<Recorder>>,
    bar: ProgressBar,
}

impl Driver {
    /// Issues every order of the schedule at its time, then waits for the shoppers still
    /// in progress (each at most its own bound). Returns the issuing phase's seconds.
    async fn open(&self, offsets: &[Duration], on_tick: &mut impl FnMut(Duration)) -> f64 {
        let in_flight = Arc::new(AtomicUsize::new(0));
        let mut tasks = JoinSet::new();
        let start = TokioInstant::now();
        let mut last_tick = Duration::ZERO;
        for (i, offset) in offsets.iter().enumerate() {
            let due = start + *offset;
            last_tick = sleep_until_due(start, due, last_tick, on_tick).await;
            if in_flight.load(Ordering::Relaxed) >= self.shop.config.max_in_flight {
                lock(&self.recorder).error("in_flight_limit");
                self.bar.inc(1);
                continue;
            }
            in_flight.fetch_add(1, Ordering::Relaxed);
            tasks.spawn(open_shopper(
                self.shop.clone(),
                self.recorder.clone(),
                in_flight.clone(),
                self.bar.clone(),
                due,
            ));
            // Reap finished tasks so the set does not grow with the run.
            while tasks.try_join_next().is_some() {}
            if i % 20 == 0 {
                self.bar.set_message(self.status());
            }
        }
        let issue_seconds = self.started.elapsed().as_secs_f64();
        self.drain(&mut tasks, self.shop.config.shopper_bound())
            .await;
        issue_seconds
    }

    /// Runs `concurrency` shoppers back to back until `duration` and/or `orders` is
    /// used up, aborting the stragglers past the run's bound. Returns the seconds until
    /// the last shopper was done.
    async fn closed(
        &self,
        concurrency: usize,
        duration: Option<Duration>,
        orders: Option<u64>,
        on_tick: &mut impl FnMut(Duration),
    ) -> f64 {
        let remaining = Arc::new(AtomicU64::new(orders.unwrap_or(u64::MAX)));
        let stop_at = duration.map(|d| TokioInstant::now() + d);
        let mut tasks = JoinSet::new();
        for _ in 0..concurrency {
            tasks.spawn(closed_shopper(
                self.shop.clone(),
                self.recorder.clone(),
                remaining.clone(),
                self.bar.clone(),
                stop_at,
            ));
        }
        let bound =
            duration.unwrap_or(Duration::from_secs(3600)) + self.shop.config.shopper_bound();
        let deadline = TokioInstant::now() + bound;
        let start = Instant::now();
        loop {
            let next = tokio::time::timeout(TICK, tasks.join_next());
            if let Ok(None) = next.await {
                break;
            }
            on_tick(start.elapsed());
            self.bar.set_message(self.status());
            if TokioInstant::now() >= deadline {
                self.drain(&mut tasks, Duration::ZERO).await;
                break;
            }
        }
        self.started.elapsed().as_secs_f64()
    }

    fn status(&self) -> String {
        status_line(&self.recorder, self.started)
    }

    /// Waits for the shoppers still in progress, at most `bound`; the rest are aborted
    /// and counted as `aborted_at_deadline`.
    async fn drain(&self, tasks: &mut JoinSet<()>, bound: Duration) {
        let deadline = TokioInstant::now() + bound;
        loop {
            match tokio::time::timeout_at(deadline, tasks.join_next()).await {
                Ok(Some(_)) => self.bar.set_message(self.status()),
                Ok(None) => return,
                Err(_) => {
                    let left = tasks.len() as u64;
                    tasks.abort_all();
                    let mut r = lock(&self.recorder);
                    *r.errors
                        .entry("aborted_at_deadline".to_owned())
                        .or_default() += left;
                    return;
                }
            }
        }
    }
}

/// Sleeps until `due`, in slices so ticks keep coming through gaps in the schedule.
/// Returns the time (since `start`) of the last tick.
async fn sleep_until_due(
    start: TokioInstant,
    due: TokioInstant,
    mut last_tick: Duration,
    on_tick: &mut impl FnMut(Duration),
) -> Duration {
    loop {
        let now = TokioInstant::now();
        let since = now - start;
        if since >= last_tick + TICK {
            last_tick = since;
            on_tick(since);
        }
        if now >= due {
            return last_tick;
        }
        tokio::time::sleep_until(due.min(now + TICK)).await;
    }
}

/// One open-loop shopper, due at `due`; it frees its slot in `in_flight` when done.
async fn open_shopper(
    shop: Arc<Shop>,
    recorder: Arc<Mutex<Recorder>>,
    in_flight: Arc<AtomicUsize>,
    bar: ProgressBar,
    due: TokioInstant,
) {
    let outcome = shop.visit(due).await;
    lock(&recorder).record(outcome);
    in_flight.fetch_sub(1, Ordering::Relaxed);
    bar.inc(1);
}

/// One closed-loop shopper: visits back to back while orders `remaining` can be claimed
/// and `stop_at` has not come.
async fn closed_shopper(
    shop: Arc<Shop>,
    recorder: Arc<Mutex<Recorder>>,
    remaining: Arc<AtomicU64>,
    bar: ProgressBar,
    stop_at: Option<TokioInstant>,
) {
    loop {
        if stop_at.is_some_and(|t| TokioInstant::now() >= t) {
            break;
        }
        let claimed = remaining
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok();
        if !claimed {
            break;
        }
        let outcome = shop.visit(TokioInstant::now()).await;
        lock(&recorder).record(outcome);
        bar.inc(1);
    }
}
