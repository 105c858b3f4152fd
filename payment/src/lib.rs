//! payment-service: the payment side of the saga, through Kakao Pay.
//!
//! `OrderPlaced` → Kakao Pay `ready` → payment `READY` + `PaymentReady` (where the shopper
//! pays). Kakao Pay sends the shopper back to one of three callbacks: the approval URL
//! (with `pg_token`) → `approve` → `APPROVED` + `PaymentApproved`; the cancel or fail URL
//! → `FAILED` + `PaymentFailed`. Every gateway call is recorded with its latency and
//! outcome.
//!
//! The request and event paths reach PostgreSQL through [`persistence::PaymentDb`]:
//! Diesel on the blocking pool (cases 1–3), or the same queries on diesel-async (case 4,
//! `SAGA_CASE=4`).
//!
//! In case 1 (`SAGA_CASE=1`) the same events travel over synchronous HTTP instead of
//! Kafka, inside the shopper's request: the outbox's in-request delivery, chosen in
//! [`startup`], and the event input in [`routes`].

pub mod checkout;
pub mod config;
pub mod domain;
pub mod error;
pub mod gateway;
pub mod gauges;
pub mod persistence;
pub mod routes;
/// The tables, as `infra/stack schema` generates them from the migrations (not edited).
#[rustfmt::skip]
pub mod schema;
pub mod startup;
pub mod store;

/// The payment database's own migrations (the outbox and inbox come from `shared-events`).
pub const MIGRATIONS: diesel_migrations::EmbeddedMigrations =
    diesel_migrations::embed_migrations!("../diesel-migrations/payment");
