//! The saga shop's notifier (case 3 of the design): a Tokio-native Kafka consumer that
//! mails shoppers about their orders and keeps the mail history in MongoDB.
//!
//! * [`render`]: pure rendering of an event into a mail (minijinja templates, Korean and
//!   English, HTML + text).
//! * [`store`]: the history port ([`store::HistoryStore`]) and its MongoDB adapter.
//! * [`transport`]: the mail transport port ([`transport::MailTransport`]) and its SMTP
//!   adapter (lettre, pooled, async).
//! * [`service`]: one event → claim the history record → send with retries → record.
//! * [`pipeline`]: the concurrent, ordered, back-pressured Kafka consumer.
//! * [`api`]: the actix-web history API (`/notifications…`, `/healthz`, `/readyz`,
//!   `/metrics`).
//! * [`startup`]: [`Application`], wiring all of it on one Tokio runtime.
//!
//! The blocking mail service of cases 1 and 2 (`mailer-blocking`, crate
//! `notifier/blocking`) reuses the domain, the templates, the SMTP settings and the
//! history API; it alone brings Diesel, so this crate's dependencies have none.
//!
//! Configuration: [`settings`] (every environment variable is listed there).

pub mod api;
pub mod domain;
pub mod pipeline;
pub mod render;
pub mod service;
pub mod settings;
pub mod startup;
pub mod store;
pub mod transport;

pub use settings::Settings;
pub use startup::Application;
