//! The HTTP API (actix-web):
//!
//! | route | |
//! |---|---|
//! | `GET /healthz` | 200 while the process runs |
//! | `GET /readyz` | 200 when MongoDB answers a ping, 503 otherwise |
//! | `GET /metrics` | Prometheus text |
//! | `GET /openapi.json` | the OpenAPI 3.1 document of these routes (see [`doc`]) |
//! | `GET /notifications` | history records, newest first, filtered and paginated (see [`notifications`]) |
//! | `GET /notifications/stats?window=15m` | counts by type and status, send latency percentiles |
//! | `GET /notifications/{id}` | one record |
//!
//! The `/notifications` routes need `Authorization: Bearer <NOTIFIER_API_TOKEN>`. Errors
//! are `application/problem+json` (RFC 9457) — see [`error`].

pub mod auth;
pub mod doc;
pub mod error;
pub mod health;
pub mod notifications;

use crate::store::HistoryStore;
use actix_web::http::Method;
use actix_web::web;
use shared_events::routes::Router;
use std::sync::Arc;

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    pub store: Arc<dyn HistoryStore>,
}

/// Every route, in one table that actix-web mounts ([`configure`]) and the document's
/// test lists ([`doc`]).
pub fn routes<R: Router>(r: &mut R) {
    shared_events::routes::common_routes(r);
    r.route(Method::GET, "/readyz", health::readyz)
        .route(Method::GET, "/openapi.json", doc::openapi_json)
        .route(Method::GET, "/notifications", notifications::list)
        .route(Method::GET, "/notifications/stats", notifications::stats)
        .route(Method::GET, "/notifications/{id}", notifications::get);
}

/// Registers every route (used by the server and by tests).
pub fn configure(cfg: &mut web::ServiceConfig) {
    shared_events::routes::mount(cfg, routes);
}
