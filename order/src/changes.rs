//! Who is waiting for which order to change, and how they learn that it did.
//!
//! A waiter (a long poll of `GET /orders/{id}`, a `GET /orders/{id}/events` stream)
//! [`subscribe`](Changes::subscribe)s to its order, then reads it. Changes reach the
//! registry two ways: this process's own commits call [`Changes::notify`] directly, and
//! the `orders` trigger's `NOTIFY order_changed` (every instance's commits) is fanned out
//! by one [`listen`]ing thread per process. A waiter holds no database connection and no
//! thread: only a `watch` receiver and a permit of the open-wait bound.
//!
//! Memory stays bounded: at most `max_open` subscriptions exist, and an order's entry is
//! removed when its last subscriber leaves.

use shared_events::db::{DbError, PgPool};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The PostgreSQL channel the `orders` trigger notifies, with the order id as payload.
pub const CHANNEL: &str = "order_changed";

/// The registry of waiters, shared by the handlers and the listener.
#[derive(Clone)]
pub struct Changes {
    inner: Arc<Inner>,
}

struct Inner {
    /// One sender per watched order; its value counts the changes seen.
    orders: Mutex<HashMap<Uuid, watch::Sender<u64>>>,
    permits: Arc<Semaphore>,
    shutdown: CancellationToken,
}

/// Every open wait is taken: the caller should come back later.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("too many open waits")]
pub struct Busy;

impl Changes {
    /// A registry admitting `max_open` waiters at once; every wait ends at `shutdown`.
    pub fn new(max_open: usize, shutdown: CancellationToken) -> Self {
        Self {
            inner: Arc::new(Inner {
                orders: Mutex::new(HashMap::new()),
                permits: Arc::new(Semaphore::new(max_open)),
                shutdown,
            }),
        }
    }

    /// Starts watching order `id`. Subscribe before reading the order, so a change
    /// committed between the read and the wait is not missed.
    pub fn subscribe(&self, id: Uuid) -> Result<Subscription, Busy> {
        let permit = self
            .inner
            .permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| {
                metrics::counter!("order_waits_refused_total").increment(1);
                Busy
            })?;
        let receiver = self
            .orders()
            .entry(id)
            .or_insert_with(|| watch::channel(0).0)
            .subscribe();
        metrics::gauge!("order_open_waits").increment(1.0);
        Ok(Subscription {
            id,
            receiver,
            changes: self.clone(),
            _permit: permit,
        })
    }

    /// Order `id` changed: wakes its waiters, if any.
    pub fn notify(&self, id: Uuid) {
        if let Some(sender) = self.orders().get(&id) {
            sender.send_modify(|seen| *seen = seen.wrapping_add(1));
        }
    }

    /// Changes may have been missed (the listener lost its connection): every waiter
    /// looks again.
    pub fn notify_all(&self) {
        for sender in self.orders().values() {
            sender.send_modify(|seen| *seen = seen.wrapping_add(1));
        }
    }

    /// Orders watched right now.
    pub fn watched(&self) -> usize {
        self.orders().len()
    }

    fn orders(&self) -> MutexGuard<'_, HashMap<Uuid, watch::Sender<u64>>> {
        // A panic while holding the lock cannot leave the map inconsistent (one insert
        // or remove at a time), so a poisoned lock is still usable.
        self.inner.orders.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Called as subscription `id` ends; its receiver is still alive, hence `<= 1`.
    fn leave(&self, id: Uuid) {
        let mut orders = self.orders();
        if orders.get(&id).is_some_and(|s| s.receiver_count() <= 1) {
            orders.remove(&id);
        }
    }
}

/// One open wait for one order; leaving (drop) frees its permit.
pub struct Subscription {
    id: Uuid,
    receiver: watch::Receiver<u64>,
    changes: Changes,
    _permit: OwnedSemaphorePermit,
}

impl Subscription {
    /// True when the order may have changed since the last call (or since subscribing);
    /// false when `deadline` passed or the service is stopping first.
    pub async fn changed_before(&mut self, deadline: tokio::time::Instant) -> bool {
        tokio::select! {
            changed = self.receiver.changed() => changed.is_ok(),
            () = tokio::time::sleep_until(deadline) => false,
            () = self.changes.inner.shutdown.cancelled() => false,
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.changes.leave(self.id);
        metrics::gauge!("order_open_waits").decrement(1.0);
    }
}

/// Fans the `order_changed` notifications of every instance out to this process's
/// waiters, on a thread of its own holding one pooled connection, until `shutdown`.
/// Reconnects when the connection is lost.
pub fn listen(pool: PgPool, changes: Changes, shutdown: CancellationToken) {
    let spawned = std::thread::Builder::new()
        .name("order-change-listener".into())
        .spawn(move || {
            while !shutdown.is_cancelled() {
                match listen_once(&pool, &changes, &shutdown) {
                    Ok(()) => break,
                    Err(error) => {
                        tracing::warn!(%error, "Order change listener lost its connection; reconnecting.");
                        std::thread::sleep(Duration::from_secs(1));
                    }
                }
            }
        });
    if let Err(error) = spawned {
        tracing::warn!(%error, "No order change listener: only this process's own changes wake waiters.");
    }
}

fn listen_once(
    pool: &PgPool,
    changes: &Changes,
    shutdown: &CancellationToken,
) -> Result<(), DbError> {
    use diesel::RunQueryDsl;
    let mut conn = pool.get()?;
    diesel::sql_query(format!("LISTEN {CHANNEL}")).execute(&mut conn)?;
    // Whatever changed while no one listened (start-up, a lost connection) is unknown.
    changes.notify_all();
    while !shutdown.is_cancelled() {
        for id in pending(&mut conn)? {
            changes.notify(id);
        }
        // Reading pending notifications is a non-blocking socket read; 5 ms keeps the
        // wake-up far below any wait without a busy loop (as the outbox listener does).
        std::thread::sleep(Duration::from_millis(5));
    }
    diesel::sql_query("UNLISTEN *").execute(&mut conn)?;
    Ok(())
}

/// The distinct orders named by the notifications received so far.
fn pending(conn: &mut diesel::PgConnection) -> Result<HashSet<Uuid>, DbError> {
    let mut ids = HashSet::new();
    for notification in conn.notifications_iter() {
        let notification = notification?;
        match notification.payload.parse() {
            Ok(id) => {
                ids.insert(id);
            }
            Err(_) => tracing::debug!(payload = %notification.payload, "Not an order id; ignored."),
        }
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    #[tokio::test]
    async fn a_notified_change_wakes_the_order_s_waiters_only() {
        let changes = Changes::new(10, CancellationToken::new());
        let (one, other) = (Uuid::now_v7(), Uuid::now_v7());
        let mut waiter = changes.subscribe(one).expect("a permit");
        let mut bystander = changes.subscribe(other).expect("a permit");
        changes.notify(one);
        assert!(waiter.changed_before(soon()).await);
        assert!(!bystander.changed_before(Instant::now()).await);
    }

    #[tokio::test]
    async fn entries_go_with_their_last_waiter_and_permits_are_bounded() {
        let changes = Changes::new(2, CancellationToken::new());
        let id = Uuid::now_v7();
        let first = changes.subscribe(id).expect("a permit");
        let second = changes.subscribe(id).expect("a permit");
        assert!(changes.subscribe(Uuid::now_v7()).is_err(), "bound reached");
        drop(first);
        assert_eq!(changes.watched(), 1, "one waiter left");
        drop(second);
        assert_eq!(changes.watched(), 0);
        assert!(changes.subscribe(id).is_ok(), "permits are given back");
    }

    #[tokio::test]
    async fn shutdown_ends_every_wait() {
        let shutdown = CancellationToken::new();
        let changes = Changes::new(1, shutdown.clone());
        let mut waiter = changes.subscribe(Uuid::now_v7()).expect("a permit");
        shutdown.cancel();
        assert!(!waiter.changed_before(soon()).await);
    }
}
