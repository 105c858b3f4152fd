//! Fault injection: the shop as real processes (see `e2e::procs`), a load of orders, and
//! one fault per scenario — a service killed with SIGKILL, the broker restarted,
//! database sessions terminated, MongoDB or SMTP down, Kakao Pay down or slow, a full
//! replay of every topic, poison messages — injected while orders are being placed and
//! paid. After recovery every scenario checks the same invariants (`e2e::procs::verify`):
//! nothing accepted is lost, nothing is charged, refunded or mailed twice — and then
//! runs `saga-audit` on the stack's databases, mail history and ledger, which must find
//! no violated invariant and every order terminal.
//!
//! Each scenario starts private servers of its own (it needs only PostgreSQL at
//! `POSTGRES_URL`, tansu and the Python venv installed), so it does not depend on, or
//! disturb, the shared ones `infra/stack deps` starts. Scenarios run one at a time.
//!
//! `FAULT_ORDERS` sets the orders per scenario (default 150); `FAULT_RESULTS` names a
//! JSON file each scenario adds its result to (`infra/stack faults` does both).

mod deadlines;
mod gateway;
mod guarantees;
mod outages;
mod processes;
mod servers;

use e2e::procs::{
    record, saga_audit, verify, Expect, Load, LoadOutcome, LoadPlan, Options, ProcStack, Verdict,
};
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, MutexGuard};

/// The operator's check every scenario ends with (`e2e/src/bin/saga-audit.rs`).
const SAGA_AUDIT: &str = env!("CARGO_BIN_EXE_saga-audit");

/// Scenarios run one at a time: each starts a dozen processes on a 2-core machine.
static SERIAL: Mutex<()> = Mutex::const_new(());

/// Orders per scenario: `FAULT_ORDERS`, default 150.
pub fn orders() -> usize {
    std::env::var("FAULT_ORDERS")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(150)
}

/// One scenario: its own stack, its timing, its result.
pub struct Scenario {
    pub name: &'static str,
    pub stack: ProcStack,
    pub orders: usize,
    started: Instant,
    recovered_at: std::cell::Cell<Option<Instant>>,
    _serial: MutexGuard<'static, ()>,
}

impl Scenario {
    /// Waits for the scenarios before it, then starts a fresh stack.
    pub async fn begin(name: &'static str) -> Self {
        Self::begin_with(name, Options::default()).await
    }

    /// [`Scenario::begin`] with other stack options (a private PostgreSQL, more
    /// notifier instances' settings, …).
    pub async fn begin_with(name: &'static str, options: Options) -> Self {
        let serial = SERIAL.lock().await;
        let started = Instant::now();
        let stack = ProcStack::start_with(options)
            .await
            .expect("the process stack starts");
        eprintln!(
            "[{name}] stack {} up in {:.1}s (folder {})",
            stack.id,
            started.elapsed().as_secs_f64(),
            stack.dir.display()
        );
        Self {
            name,
            stack,
            orders: orders(),
            started,
            recovered_at: std::cell::Cell::new(None),
            _serial: serial,
        }
    }

    /// The scenario's load, started evenly over at least `min_spread` (longer for big
    /// loads: at most ~12 new orders a second), so faults land mid-load.
    pub fn load(&self, min_spread: Duration) -> LoadPlan {
        let spread = min_spread.max(Duration::from_secs_f64(self.orders as f64 / 12.0));
        LoadPlan::new(self.orders, spread)
    }

    pub fn start(&self, plan: LoadPlan) -> Load {
        self.stack.shopper().start(plan)
    }

    /// Logs a step with the time since the scenario began.
    pub fn note(&self, what: &str) {
        eprintln!(
            "[{}] {:6.1}s {what}",
            self.name,
            self.started.elapsed().as_secs_f64()
        );
    }

    /// Marks the end of the last fault: orders must settle within the deadline from here.
    pub fn recovered(&self) {
        self.recovered_at.set(Some(Instant::now()));
        self.note("recovered");
    }

    /// The default expectations, from the recovery on.
    pub fn expect(&self) -> Expect {
        Expect {
            recovered_at: self.recovered_at.get(),
            ..Expect::default()
        }
    }

    /// A check that the fault reached the system: `part`'s counter `metric` is at least
    /// `min`.
    pub async fn fault_seen(
        &self,
        part: e2e::procs::Part,
        metric: &str,
        min: f64,
    ) -> e2e::procs::Check {
        let value = self.stack.metric(part, metric).await;
        self.note(&format!("{} {metric} = {value:?}", part.name()));
        e2e::procs::Check::new(
            "the fault reached the system",
            match value {
                Ok(v) if v >= min => vec![],
                other => vec![format!("{} {metric} = {other:?}", part.name())],
            },
        )
    }

    /// Checks every invariant, records the result, and fails the test loudly with the
    /// violations and the logs when one does not hold.
    pub async fn conclude(&self, load: &LoadOutcome, expect: Expect, details: Value) -> Verdict {
        let verdict = self.verify(load, expect).await;
        self.finish(load, verdict, details)
    }

    /// The invariants, without failing yet (a scenario may add checks of its own).
    pub async fn verify(&self, load: &LoadOutcome, mut expect: Expect) -> Verdict {
        if expect.recovered_at.is_none() {
            expect.recovered_at = self.recovered_at.get();
        }
        self.note(&format!(
            "load done: {} accepted in {:.1}s ({} retried requests); checking invariants",
            load.placed.len(),
            load.duration.as_secs_f64(),
            load.retries
        ));
        let mut verdict = verify(&self.stack, load, expect).await;
        let (checks, report) = saga_audit(&self.stack, Path::new(SAGA_AUDIT)).await;
        self.note(&format!(
            "saga-audit: {} violation(s), {} not terminal, orders {}",
            report["violations"].as_array().map_or(0, Vec::len),
            report["not_terminal"],
            report["orders"]
        ));
        verdict.checks.extend(checks);
        verdict
    }

    /// Records the result and fails the test when a check did not hold.
    pub fn finish(&self, load: &LoadOutcome, verdict: Verdict, details: Value) -> Verdict {
        record(self.name, load, &verdict, self.started.elapsed(), details);
        self.note(&format!("verdict:\n{}", verdict.summary()));
        verdict.assert_holds(&self.stack);
        verdict
    }
}
