//! HTTP pieces every service shares: RFC 9457 problem details (`application/problem+json`)
//! and the `/healthz` and `/metrics` routes.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde::Serialize;

/// One invalid input field: its JSON path (`items[0].quantity`) and why it was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InvalidParam {
    pub name: String,
    pub reason: String,
}

impl InvalidParam {
    pub fn new(name: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            reason: reason.into(),
        }
    }
}

/// A problem-details body. `type` is a stable, relative URI naming the kind of problem.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub invalid_params: Vec<InvalidParam>,
}

impl Problem {
    pub fn new(
        status: StatusCode,
        kind: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            kind,
            title,
            status: status.as_u16(),
            detail: detail.into(),
            invalid_params: Vec::new(),
        }
    }

    pub fn with_invalid_params(mut self, params: Vec<InvalidParam>) -> Self {
        self.invalid_params = params;
        self
    }

    pub fn response(&self) -> HttpResponse {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        HttpResponse::build(status)
            .content_type("application/problem+json")
            .json(self)
    }
}

/// `GET /healthz`: the process is up.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(crate::telemetry::metrics().render())
}

/// Mounts `/healthz` and `/metrics`.
pub fn configure_common(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/metrics", web::get().to(metrics));
}

/// Runs `server` until it stops or `shutdown` is cancelled, then stops the service's
/// background `tasks` (they watch the same token) and waits for them, so a stopped
/// service has finished its in-flight work.
pub async fn serve_until_cancelled(
    server: actix_web::dev::Server,
    shutdown: tokio_util::sync::CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
) -> anyhow::Result<()> {
    let handle = server.handle();
    let stopper = shutdown.clone();
    let stop = tokio::spawn(async move {
        stopper.cancelled().await;
        handle.stop(true).await;
    });
    let served = server.await;
    shutdown.cancel();
    let _ = stop.await;
    for task in tasks {
        if let Err(error) = task.await {
            tracing::error!(%error, "A background task panicked.");
        }
    }
    Ok(served?)
}
