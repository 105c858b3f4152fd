//! The contract between the shop's services and the plumbing they share.
//!
//! * [`case`]: which of the seed's four architectures a process runs as (`SAGA_CASE`).
//! * [`event`]: the JSON envelope and the typed events of the saga, with a decoder that
//!   rejects malformed JSON, unknown event types and unsupported schema versions with a
//!   typed error (so the consumer can dead-letter them with a reason).
//! * [`topics`]: topic names. Every event is keyed by its order id, which is also the saga
//!   id, so one order's events stay in order within a partition.
//! * `kafka` (feature `kafka`): producer/consumer configuration, the at-least-once consumer
//!   loop with retries and dead letters, topic creation.
//! * `db`, `outbox`, `inbox` (feature `outbox`): the r2d2 pool and the one helper that runs
//!   Diesel work off the async executor, the transactional outbox and its relay, and the
//!   processed-event table that makes consumers idempotent.
//! * `async_db` (feature `async-db`): case 4's async pool (diesel-async on tokio-postgres,
//!   deadpool), for the request and event paths of order and payment.
//! * `chain` (feature `outbox`): case 1's transport — the outbox delivered over
//!   synchronous HTTP (`POST /internal/events`) by the request that wrote it.
//! * `telemetry` (feature `telemetry`): the tracing subscriber every binary installs and
//!   the process's Prometheus recorder.
//! * `readiness` (feature `http`): starting while a dependency is down — not ready, and
//!   start-up work retried with backoff, instead of exiting.
//! * `http` (feature `http`): RFC 9457 problem details and the `/healthz` and `/metrics`
//!   routes every service serves.
//! * `bearer` (feature `http`): the bearer token of an operators' API (mail history,
//!   payment look-ups).

#[cfg(feature = "async-db")]
pub mod async_db;
pub mod case;
pub mod cli;
pub mod event;
#[cfg(feature = "http")]
pub mod problem;
#[cfg(feature = "http")]
pub mod readiness;
#[cfg(any(feature = "kafka", feature = "http"))]
pub mod retry;
pub mod topics;

#[cfg(feature = "http")]
pub mod bearer;
#[cfg(feature = "outbox")]
pub mod chain;
#[cfg(feature = "outbox")]
pub mod db;
#[cfg(feature = "outbox")]
/// The tables, as `infra/stack schema` generates them from the migrations (not edited).
#[rustfmt::skip]
pub mod schema;
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "async-db")]
pub mod inbox;
#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "outbox")]
pub mod outbox;
#[cfg(feature = "http")]
pub mod request_span;
#[cfg(feature = "http")]
pub mod routes;
#[cfg(feature = "outbox")]
pub mod signing;
#[cfg(feature = "async-db")]
pub mod sql;
#[cfg(feature = "telemetry")]
pub mod telemetry;

pub use case::Case;
pub use event::{
    CancelReason, DecodeError, Event, EventBody, EventType, LineItem, OrderCancelled,
    OrderCompleted, OrderPlaced, OrderSnapshot, PaymentApproved, PaymentCloseOutcome,
    PaymentCloseRequested, PaymentClosed, PaymentFailed, PaymentFailureReason, PaymentReady,
    PaymentRefunded, RefundRequested,
};
pub use topics::Topics;
