//! `/readyz` (`/healthz` and `/metrics` are the workspace's, `shared_events::http`).

use super::ApiState;
use actix_web::{web, HttpResponse};
use serde::Serialize;
use shared_events::readiness::Readiness;
use std::collections::BTreeMap;
use std::time::Duration;

/// Where readiness stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReadyStatus {
    /// Started, and its store answers.
    Ready,
    /// Started, but its store does not answer.
    Unavailable,
    /// Still starting (`waiting_for` says on what).
    Starting,
}

/// What `/readyz` answers (the mail services' shape, also `shared_events::http::starting`'s
/// while starting).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ReadyzBody {
    pub status: ReadyStatus,
    /// Once started: each store checked (`mongodb`, `postgres`) → `ok`, or why not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checks: Option<BTreeMap<String, String>>,
    /// While starting: the start-up step it waits for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
}

impl ReadyzBody {
    /// The answer after `store` was pinged: `Ok` ready (200), else unavailable (503)
    /// with the reason.
    pub fn checked(store: &str, ping: Result<(), String>) -> HttpResponse {
        let (status, check) = match ping {
            Ok(()) => (ReadyStatus::Ready, "ok".to_owned()),
            Err(reason) => (ReadyStatus::Unavailable, reason),
        };
        let body = ReadyzBody {
            status,
            checks: Some(BTreeMap::from([(store.to_owned(), check)])),
            waiting_for: None,
        };
        match status {
            ReadyStatus::Ready => HttpResponse::Ok().json(body),
            _ => HttpResponse::ServiceUnavailable().json(body),
        }
    }
}

/// Ready when start-up is done (MongoDB indexes, Kafka topics) and MongoDB answers a
/// ping (within 2 s).
#[utoipa::path(
    get, path = "/readyz", tag = "operations", operation_id = "readyz",
    description = "200 once start-up is done (MongoDB indexes, Kafka topics) and MongoDB answers a ping within 2 s; 503 (readiness JSON, not a problem: probes read `status`) while starting or while MongoDB does not answer.",
    responses(
        (status = 200, description = "Ready", body = ReadyzBody),
        (status = 503, description = "Starting (`waiting_for`, `Retry-After: 1`) or MongoDB unavailable (`checks`)", body = ReadyzBody),
    )
)]
pub async fn readyz(
    state: web::Data<ApiState>,
    readiness: Option<web::Data<Readiness>>,
) -> HttpResponse {
    if let Some(waiting_for) = readiness.and_then(|r| r.waiting_for()) {
        return shared_events::http::starting(&waiting_for);
    }
    let ping = tokio::time::timeout(Duration::from_secs(2), state.store.ping()).await;
    let ping = match ping {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err("MongoDB did not answer a ping within 2 s".to_owned()),
    };
    ReadyzBody::checked("mongodb", ping)
}
