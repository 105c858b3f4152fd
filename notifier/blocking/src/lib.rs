//! The blocking mail service of cases 1 and 2 (binary `mailer-blocking`).
//!
//! The same mails as the Tokio notifier — [`notifier::domain`] decides which events call for
//! which mail and to whom, [`notifier::render`] renders them from the same templates — but
//! every mail is handled start to finish on one thread of a blocking pool: Diesel over
//! r2d2 for the history (PostgreSQL, one row per (event, recipient), unique), lettre's
//! synchronous SMTP connection in a small pool ([`smtp`]), `thread::sleep` between retries.
//!
//! * case 2: the events come from Kafka through the shared at-least-once consumer loop
//!   (`MAILER_CONSUMERS` consumers in one group); the offset is stored only after the
//!   history row committed; poison messages are dead-lettered.
//! * case 1: the events come over HTTP (`POST /internal/events`) from order-service and
//!   payment-service, inside the shopper's request; no Kafka.
//!
//! The history API is the notifier's ([`notifier::api::notifications`]): same JSON, filters,
//! pagination and bearer token. Every route is in one table per case ([`routes`],
//! [`routes_with_event_input`]), which `GET /openapi.json` describes ([`api_doc`]).

pub mod api_doc;
pub mod handlers;
/// The tables, as `infra/stack schema` generates them from the migrations (not edited).
#[rustfmt::skip]
pub mod schema;
pub mod service;
pub mod settings;
pub mod smtp;
pub mod startup;
pub mod store;

pub use service::BlockingMailer;
pub use settings::MailerSettings;
pub use startup::MailerApp;

use actix_web::http::Method;
use shared_events::routes::Router;

/// Case 2's routes: `/healthz`, `/readyz`, `/metrics`, `/openapi.json` and the
/// notifier's history routes (same JSON, filters and token), in one table that
/// actix-web mounts ([`startup::configure`]) and the document's test lists ([`api_doc`]).
pub fn routes<R: Router>(r: &mut R) {
    shared_events::routes::common_routes(r);
    r.route(Method::GET, "/readyz", handlers::readyz)
        .route(Method::GET, "/openapi.json", api_doc::openapi_json)
        .route(
            Method::GET,
            "/notifications",
            notifier::api::notifications::list,
        )
        .route(
            Method::GET,
            "/notifications/stats",
            notifier::api::notifications::stats,
        )
        .route(
            Method::GET,
            "/notifications/{id}",
            notifier::api::notifications::get,
        );
}

/// Case 1's routes: every route above, and the event input.
pub fn routes_with_event_input<R: Router>(r: &mut R) {
    routes(r);
    r.route(
        Method::POST,
        shared_events::chain::EVENTS_PATH,
        handlers::receive_event,
    );
}
