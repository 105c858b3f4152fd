//! Integration tests of the notifier against the real local servers (Kafka-protocol
//! broker, MongoDB-protocol server, SMTP sink). Start them with `infra/stack deps`.
//!
//! Every test uses its own topic prefix, consumer group, Mongo database and recipient
//! addresses, so tests (and other crates' tests) can share the servers concurrently.

mod blocking;
mod dead_letters;
mod delivery;
mod helpers;
mod history_api;
mod idempotency;
mod mails;
mod shutdown;
mod store_batching;
