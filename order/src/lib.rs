//! order-service: the storefront's REST API and the order side of the saga.
//!
//! `POST /orders` stores the order `PENDING_PAYMENT` together with its `OrderPlaced`
//! event (outbox) and answers `202` at once: the shopper never waits for payment. The
//! payment service's events then settle the order: `PaymentApproved` completes it,
//! `PaymentFailed` cancels it (the compensation), each with its own event.
//!
//! The request and event paths reach PostgreSQL through [`persistence::OrderDb`]: Diesel
//! on the blocking pool (cases 1–3), or the same queries on diesel-async (case 4,
//! `SAGA_CASE=4`).
//!
//! In case 1 (`SAGA_CASE=1`) the same events travel over synchronous HTTP instead of
//! Kafka, inside the shopper's request: the outbox's in-request delivery, chosen in
//! [`startup`], and the event input in [`routes`].
//!
//! A storefront waiting for the payment page need not poll: `GET /orders/{id}` waits for a
//! change when asked (`Prefer: wait=N`), and `GET /orders/{id}/events` streams every
//! change; see [`watch`] and [`changes`].

pub mod access;
pub mod catalog;
pub mod changes;
pub mod config;
pub mod deadline;
pub mod domain;
pub mod email;
pub mod error;
pub mod gauges;
pub mod idempotency;
pub mod mail_history;
pub mod orders;
pub mod payment_events;
pub mod persistence;
pub mod request;
pub mod retention;
pub mod routes;
pub mod saga;
/// The tables, as `infra/stack schema` generates them from the migrations (not edited).
#[rustfmt::skip]
pub mod schema;
pub mod startup;
pub mod state;
pub mod store;
pub mod storefront;
pub mod view;
pub mod watch;

/// The order database's own migrations (the outbox and inbox come from `shared-events`).
pub const MIGRATIONS: diesel_migrations::EmbeddedMigrations =
    diesel_migrations::embed_migrations!("../diesel-migrations/order");
