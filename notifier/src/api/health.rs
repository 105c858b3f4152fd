//! `/healthz`, `/readyz`, `/metrics`.

use super::ApiState;
use actix_web::{web, HttpResponse};
use shared_events::readiness::Readiness;
use std::time::Duration;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

/// Ready when start-up is done (MongoDB indexes, Kafka topics) and MongoDB answers a
/// ping (within 2 s).
pub async fn readyz(
    state: web::Data<ApiState>,
    readiness: Option<web::Data<Readiness>>,
) -> HttpResponse {
    if let Some(waiting_for) = readiness.and_then(|r| r.waiting_for()) {
        return shared_events::http::starting(&waiting_for);
    }
    let ping = tokio::time::timeout(Duration::from_secs(2), state.store.ping()).await;
    match ping {
        Ok(Ok(())) => HttpResponse::Ok().json(serde_json::json!({
            "status": "ready",
            "checks": { "mongodb": "ok" },
        })),
        Ok(Err(error)) => unavailable(error.to_string()),
        Err(_) => unavailable("MongoDB did not answer a ping within 2 s".to_owned()),
    }
}

fn unavailable(detail: String) -> HttpResponse {
    HttpResponse::ServiceUnavailable().json(serde_json::json!({
        "status": "unavailable",
        "checks": { "mongodb": detail },
    }))
}

pub async fn metrics() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(shared_events::telemetry::metrics().render())
}
