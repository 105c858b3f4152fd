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
//!
//! The parts: `config` (how the shoppers behave), `recorder` (what they saw, counted),
//! `client` (the HTTP clients and the long-polled order read), `visit` (one shopper's
//! steps) and `drive` (the open and closed loops that run them).

mod client;
mod config;
mod drive;
mod recorder;
mod visit;

pub use client::{Shop, LONG_POLL};
pub use config::ShopConfig;
pub use drive::{drive, progress_bar, status_line, Load, Timing};
pub use recorder::{latency_definitions, lock, Outcome, Recorder};
