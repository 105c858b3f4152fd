//! order-service's HTTP API against the real service and a real PostgreSQL (see
//! `support`): waiting for changes, the catalog and its prices, idempotent retries.

mod catalog;
mod idempotency;
mod support;
mod waiting;
