//! Waiting for an order to change: the long poll of `GET /orders/{id}` and the change
//! stream of `GET /orders/{id}/events`.
//!
//! Both subscribe to the order in [`Changes`] first, then read it through the use case
//! (`orders::get`, which runs its SQL on the blocking or async pool and gives the
//! connection back at once), and after each wake-up read it again and compare tags. While
//! waiting they hold no connection and no thread.

use crate::access::{self, Presented};
use crate::changes::{Changes, Subscription};
use crate::domain::OrderError;
use crate::orders;
use crate::persistence::OrderDb;
use crate::view::{ETag, Rendered};
use actix_web::web::Bytes;
use std::convert::Infallible;
use std::time::Duration;
use tokio::time::Instant;
use uuid::Uuid;

/// The bounds of waiting requests (`ORDER_MAX_WAIT_SECS`, `ORDER_EVENTS_MAX_SECS`,
/// `ORDER_EVENTS_KEEPALIVE_SECS`).
#[derive(Debug, Clone, Copy)]
pub struct WaitLimits {
    /// The longest wait a long poll may ask for.
    pub max_wait: Duration,
    /// The longest life of one change stream.
    pub max_stream: Duration,
    /// How often a change stream sends a comment when nothing changes.
    pub keep_alive: Duration,
}

impl From<&crate::config::Settings> for WaitLimits {
    fn from(settings: &crate::config::Settings) -> Self {
        Self {
            max_wait: Duration::from_secs(settings.max_wait_secs),
            max_stream: Duration::from_secs(settings.events_max_secs),
            keep_alive: Duration::from_secs(settings.events_keepalive_secs.max(1)),
        }
    }
}

/// Order `id` once its tag is none of `seen` (`None`: the tag it has now), or as it is
/// when `wait` is over or the service stops.
/// What `presented` may see of it, as every read below.
pub async fn until_changed(
    db: &OrderDb,
    changes: &Changes,
    id: Uuid,
    presented: &Presented,
    seen: Option<Vec<ETag>>,
    wait: Duration,
) -> Result<Rendered, OrderError> {
    let mut subscription = changes
        .subscribe(id)
        .map_err(|_| OrderError::TooManyWaits)?;
    let deadline = Instant::now() + wait;
    let mut current = read(db, id, presented).await?;
    let seen = seen.unwrap_or_else(|| vec![current.etag.clone()]);
    while seen.contains(&current.etag) && subscription.changed_before(deadline).await {
        current = read(db, id, presented).await?;
    }
    Ok(current)
}

/// Order `id` as `presented` may see it: the shopper's view with its token, the public
/// one without (`403` with a wrong token).
pub async fn read(db: &OrderDb, id: Uuid, presented: &Presented) -> Result<Rendered, OrderError> {
    let order = orders::get(db, id).await?;
    let access = access::view_access(&order, presented)?;
    Ok(Rendered::of(order, access))
}

/// The `text/event-stream` body of order `id`'s changes: its view at once, then each new
/// one, until the order is settled, `limits.max_stream` has passed or the service stops;
/// a comment every `limits.keep_alive` in between. Unknown orders and a full bound are
/// refused before the stream starts.
///
/// actix-web notices that a stream's client left only when a write fails, so the
/// keep-alive is also what gives an abandoned stream's wait back.
pub async fn events(
    db: OrderDb,
    changes: &Changes,
    id: Uuid,
    presented: Presented,
    limits: WaitLimits,
) -> Result<impl futures::Stream<Item = Result<Bytes, Infallible>>, OrderError> {
    let subscription = changes
        .subscribe(id)
        .map_err(|_| OrderError::TooManyWaits)?;
    let first = read(&db, id, &presented).await?;
    let stream = Stream {
        db,
        id,
        presented,
        subscription,
        deadline: Instant::now() + limits.max_stream,
        every: limits.keep_alive,
        keep_alive: Instant::now() + limits.keep_alive,
        last: first.etag.clone(),
        next: Some(first),
        ended: false,
    };
    Ok(futures::stream::unfold(stream, |mut stream| async move {
        let frame = stream.next_frame().await?;
        Some((Ok(frame), stream))
    }))
}

/// The state of one change stream between frames.
struct Stream {
    db: OrderDb,
    id: Uuid,
    presented: Presented,
    subscription: Subscription,
    deadline: Instant,
    every: Duration,
    keep_alive: Instant,
    last: ETag,
    /// A view to send before waiting again.
    next: Option<Rendered>,
    ended: bool,
}

impl Stream {
    /// The next frame to send, or `None` when the stream is over.
    async fn next_frame(&mut self) -> Option<Bytes> {
        if self.ended {
            return None;
        }
        if let Some(view) = self.next.take() {
            self.ended = view.status.is_settled();
            return Some(event_frame(&view));
        }
        loop {
            let until = self.deadline.min(self.keep_alive);
            if self.subscription.changed_before(until).await {
                match self.look_again().await {
                    Look::Changed(frame) => return Some(frame),
                    Look::Unreadable => return None,
                    Look::Same => {}
                }
            } else if Instant::now() >= self.keep_alive && Instant::now() < self.deadline {
                self.keep_alive = Instant::now() + self.every;
                return Some(Bytes::from_static(b": keep-alive\n\n"));
            } else {
                return None;
            }
        }
    }

    /// Reads the order again after a wake-up.
    async fn look_again(&mut self) -> Look {
        let view = match read(&self.db, self.id, &self.presented).await {
            Ok(view) => view,
            Err(error) => {
                // The client reconnects and gets the current view first.
                tracing::warn!(order_id = %self.id, %error, "Change stream ended: the order could not be read.");
                return Look::Unreadable;
            }
        };
        if view.etag == self.last {
            return Look::Same;
        }
        self.last = view.etag.clone();
        self.ended = view.status.is_settled();
        Look::Changed(event_frame(&view))
    }
}

/// What a second look at the order found.
enum Look {
    Changed(Bytes),
    Same,
    Unreadable,
}

/// One server-sent event: the order's view, with its tag as the event id.
fn event_frame(view: &Rendered) -> Bytes {
    let mut frame = Vec::with_capacity(view.body.len() + 64);
    frame.extend_from_slice(b"id: ");
    frame.extend_from_slice(view.etag.header_value().as_bytes());
    frame.extend_from_slice(b"\nevent: order\ndata: ");
    frame.extend_from_slice(&view.body);
    frame.extend_from_slice(b"\n\n");
    frame.into()
}
