//! Starting while a dependency is down.
//!
//! A service binds its HTTP port at once, so `/healthz` answers and an orchestrator sees
//! the process alive, and reports not ready (`/readyz` 503, naming what it waits for)
//! while it keeps trying what must work before it can serve — migrations, Kafka topics,
//! MongoDB indexes — with capped, jittered backoff. A dependency down at start delays
//! the service; it never makes it exit (Kubernetes would only restart it into the same
//! wait, and a compose stack would need a start order it cannot enforce).

use crate::retry::Backoff;
use std::fmt::Display;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Between attempts at start-up work: quick at first (a dependency starting alongside
/// is usually up within a second), then every few seconds.
pub const START_BACKOFF: Backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));

/// Whether the service has finished starting, and if not, what it waits for. Cloned
/// into the HTTP state (for `/readyz`) and into the start-up task.
#[derive(Clone, Debug)]
pub struct Readiness {
    waiting_for: Arc<Mutex<Option<String>>>,
}

impl Readiness {
    /// A service that has not started its work yet.
    pub fn starting() -> Self {
        Self {
            waiting_for: Arc::new(Mutex::new(Some("start-up".to_owned()))),
        }
    }

    /// A service with nothing to wait for (tests, tools).
    pub fn started() -> Self {
        Self {
            waiting_for: Arc::new(Mutex::new(None)),
        }
    }

    /// `None` once started; else what start-up waits for (for `/readyz`).
    pub fn waiting_for(&self) -> Option<String> {
        self.lock().clone()
    }

    /// Start-up is done: every background task runs.
    pub fn mark_started(&self) {
        *self.lock() = None;
    }

    fn set_waiting_for(&self, what: &str) {
        *self.lock() = Some(what.to_owned());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        // A panic while holding this lock cannot leave the value half-written.
        self.waiting_for
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Runs `attempt` until it succeeds, waiting [`START_BACKOFF`] between failures and
/// reporting `what` as the thing the service waits for. Returns `None` if `shutdown` is
/// cancelled first.
pub async fn retry_until_done<T, E, F, Fut>(
    readiness: &Readiness,
    what: &str,
    shutdown: &CancellationToken,
    mut attempt: F,
) -> Option<T>
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    readiness.set_waiting_for(what);
    let mut failures: u32 = 0;
    loop {
        let outcome = tokio::select! {
            _ = shutdown.cancelled() => return None,
            outcome = attempt() => outcome,
        };
        match outcome {
            Ok(value) => {
                if failures > 0 {
                    tracing::info!(what, failures, "Start-up step done after waiting.");
                }
                return Some(value);
            }
            Err(error) => {
                let delay = START_BACKOFF.delay(failures);
                failures = failures.saturating_add(1);
                tracing::warn!(what, failures, %error, retry_in_ms = delay.as_millis() as u64,
                    "Start-up step failed; the service stays not ready and retries.");
                tokio::select! {
                    _ = shutdown.cancelled() => return None,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// What a service's start-up gives: its background tasks, or (`Err`) why it cannot start
/// for a reason waiting cannot cure (a bad setting); `None` when shut down while waiting.
pub type Started = Option<anyhow::Result<Vec<tokio::task::JoinHandle<()>>>>;

/// Runs `start`, marks the service ready, then supervises the tasks it started with
/// `tasks` (see [`supervise`]): returns when the shutdown has drained them all, or at once
/// when one of them ends unexpectedly (the service runner then stops the process).
pub async fn start_then_supervise(
    service: &'static str,
    readiness: &Readiness,
    shutdown: &CancellationToken,
    mut tasks: Vec<tokio::task::JoinHandle<()>>,
    start: impl Future<Output = Started>,
) {
    match start.await {
        None => return,
        Some(Ok(more)) => tasks.extend(more),
        Some(Err(error)) => {
            tracing::error!(service, error = %format!("{error:#}"), "The service cannot start.");
            return;
        }
    }
    readiness.mark_started();
    tracing::info!(service, "The service started its background work.");
    supervise(tasks, shutdown).await;
}

/// The first start-up steps of a service with a database: its migrations, then (with
/// Kafka) its topics, each retried until its server answers. `None` when shut down while
/// waiting.
#[cfg(feature = "outbox")]
pub async fn migrate_then_create_topics(
    readiness: &Readiness,
    shutdown: &CancellationToken,
    database: &str,
    pool: &crate::db::PgPool,
    migrations: fn() -> diesel_migrations::EmbeddedMigrations,
    kafka: Option<&crate::kafka::KafkaSettings>,
) -> Option<()> {
    let what = format!("the {database} database (migrations)");
    retry_until_done(readiness, &what, shutdown, || {
        crate::db::migrate(pool, migrations())
    })
    .await?;
    if let Some(kafka) = kafka {
        retry_until_done(readiness, "Kafka (topics)", shutdown, || {
            kafka.ensure_topics()
        })
        .await?;
    }
    Some(())
}

/// Waits on a service's background tasks: after a shutdown, until every one has drained;
/// before it, returns as soon as one ends, since that is a failure the caller's
/// runner must see (its own task then ends early, and it stops the service).
pub async fn supervise(mut tasks: Vec<tokio::task::JoinHandle<()>>, shutdown: &CancellationToken) {
    while !tasks.is_empty() {
        let (ended, index, _) = futures::future::select_all(tasks.iter_mut()).await;
        drop(tasks.remove(index));
        if let Err(panic) = ended {
            tracing::error!(%panic, "A background task panicked.");
        }
        if !shutdown.is_cancelled() {
            tracing::error!("A background task ended before the shutdown.");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test(start_paused = true)]
    async fn a_failing_step_is_retried_until_it_works_and_shows_what_it_waits_for() {
        let readiness = Readiness::starting();
        let calls = Arc::new(AtomicU32::new(0));
        let seen = calls.clone();
        let observer = readiness.clone();
        let done = retry_until_done(
            &readiness,
            "the database",
            &CancellationToken::new(),
            || {
                let n = seen.fetch_add(1, Ordering::SeqCst);
                let waiting = observer.waiting_for();
                async move {
                    assert_eq!(waiting.as_deref(), Some("the database"));
                    if n < 3 {
                        Err("connection refused")
                    } else {
                        Ok(n)
                    }
                }
            },
        )
        .await;
        assert_eq!(done, Some(3));
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        readiness.mark_started();
        assert_eq!(readiness.waiting_for(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_ends_the_wait() {
        let readiness = Readiness::starting();
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        let done: Option<()> = retry_until_done(&readiness, "Kafka", &shutdown, || async {
            Err::<(), _>("broker down")
        })
        .await;
        assert_eq!(done, None);
        assert_eq!(readiness.waiting_for().as_deref(), Some("Kafka"));
    }
}
