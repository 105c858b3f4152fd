//! The HTTP API (actix-web):
//!
//! | route | |
//! |---|---|
//! | `GET /healthz` | 200 while the process runs |
//! | `GET /readyz` | 200 when MongoDB answers a ping, 503 otherwise |
//! | `GET /metrics` | Prometheus text |
//! | `GET /notifications` | history records, newest first, filtered and paginated (see [`notifications`]) |
//! | `GET /notifications/stats?window=15m` | counts by type and status, send latency percentiles |
//! | `GET /notifications/{id}` | one record |
//!
//! The `/notifications` routes need `Authorization: Bearer <NOTIFIER_API_TOKEN>`. Errors
//! are `application/problem+json` (RFC 9457) — see [`error`].

pub mod auth;
pub mod error;
pub mod health;
pub mod notifications;

use crate::store::HistoryStore;
use actix_web::web;
use secrecy::SecretString;
use std::sync::Arc;

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    pub store: Arc<dyn HistoryStore>,
    pub api_token: SecretString,
}

/// Registers every route (used by the server and by tests).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .route("/metrics", web::get().to(health::metrics))
        .route("/notifications", web::get().to(notifications::list))
        .route("/notifications/stats", web::get().to(notifications::stats))
        .route("/notifications/{id}", web::get().to(notifications::get));
}
