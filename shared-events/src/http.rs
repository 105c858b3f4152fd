//! HTTP pieces every service shares: RFC 9457 problem details (from [`crate::problem`]),
//! the `/healthz` and `/metrics` routes, and the [`HttpMetrics`] middleware.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde::Serialize;

pub use crate::problem::{InvalidParam, Problem};

/// `GET /healthz`: the process is up.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "The process is up", body = Health))
)]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// What `/healthz` and `/readyz` answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok`, `ready`, or `starting` (with `waiting_for`).
    #[schema(example = "ok")]
    pub status: String,
    /// While starting: the dependency or step it waits for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
}

/// `GET /metrics`: Prometheus text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Prometheus text exposition format", content_type = "text/plain", body = String))
)]
pub async fn metrics() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(crate::telemetry::metrics().render())
}

/// `/readyz` of a service still starting: 503 and what it waits for.
pub fn starting(waiting_for: &str) -> HttpResponse {
    HttpResponse::ServiceUnavailable()
        .insert_header((actix_web::http::header::RETRY_AFTER, "1"))
        .json(serde_json::json!({"status": "starting", "waiting_for": waiting_for}))
}

/// Runs `server` until it stops or `shutdown` is cancelled, then stops the service's
/// background `tasks` (they watch the same token) and waits for them, so a stopped
/// service has finished its in-flight work. A task that ends (or panics) before the
/// shutdown is a failure: the service stops and this returns the error, so the process
/// exits non-zero instead of answering `/readyz` without its consumer or relay.
pub async fn serve_until_cancelled(
    server: actix_web::dev::Server,
    shutdown: tokio_util::sync::CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
) -> anyhow::Result<()> {
    let handle = server.handle();
    let mut server = tokio::spawn(server);
    let mut tasks: Vec<_> = tasks;
    let mut server_result = None;
    let failure = tokio::select! {
        _ = shutdown.cancelled() => None,
        served = &mut server => {
            let failure = match &served {
                Ok(Ok(())) => anyhow::anyhow!("the HTTP server stopped unexpectedly"),
                Ok(Err(error)) => anyhow::anyhow!("the HTTP server failed: {error}"),
                Err(panic) => anyhow::anyhow!("the HTTP server panicked: {panic}"),
            };
            server_result = Some(served);
            Some(failure)
        }
        ended = first_to_end(&mut tasks), if !tasks.is_empty() => Some(match ended {
            Ok(()) => anyhow::anyhow!("a background task (consumer, relay or sweep) ended unexpectedly"),
            Err(panic) => anyhow::anyhow!("a background task panicked: {panic}"),
        }),
    };
    if let Some(error) = &failure {
        tracing::error!(%error, "Stopping the service.");
    }
    shutdown.cancel();
    handle.stop(true).await;
    let served = match server_result {
        Some(served) => served,
        None => server.await,
    };
    for task in tasks {
        if let Err(error) = task.await {
            tracing::error!(%error, "A background task panicked.");
        }
    }
    match failure {
        Some(error) => Err(error),
        None => Ok(served??),
    }
}

/// Waits for the first of `tasks` to end and removes it.
async fn first_to_end(
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> Result<(), tokio::task::JoinError> {
    let (ended, index, _) = futures::future::select_all(tasks.iter_mut()).await;
    drop(tasks.remove(index));
    ended
}

/// Middleware recording every request in `saga_http_requests_total{service, method, route,
/// status}` (status class: `2xx`…`5xx`) and `saga_http_request_duration_seconds{service,
/// method, route}`. `route` is the matched pattern (`/orders/{id}`), never the path, and
/// `unmatched` for requests no route took, so ids never become labels. Wrap the `App`
/// with it (outermost, so it sees the final status).
#[derive(Debug, Clone, Copy)]
pub struct HttpMetrics {
    service: &'static str,
}

impl HttpMetrics {
    pub fn new(service: &'static str) -> Self {
        Self { service }
    }
}

impl<S, B> actix_web::dev::Transform<S, actix_web::dev::ServiceRequest> for HttpMetrics
where
    S: actix_web::dev::Service<
            actix_web::dev::ServiceRequest,
            Response = actix_web::dev::ServiceResponse<B>,
            Error = actix_web::Error,
        > + 'static,
    S::Future: 'static,
    B: 'static,
{
    type Response = actix_web::dev::ServiceResponse<B>;
    type Error = actix_web::Error;
    type Transform = HttpMetricsService<S>;
    type InitError = ();
    type Future = std::future::Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        std::future::ready(Ok(HttpMetricsService {
            service,
            name: self.service,
        }))
    }
}

pub struct HttpMetricsService<S> {
    service: S,
    name: &'static str,
}

type LocalBoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T>>>;

impl<S, B> actix_web::dev::Service<actix_web::dev::ServiceRequest> for HttpMetricsService<S>
where
    S: actix_web::dev::Service<
            actix_web::dev::ServiceRequest,
            Response = actix_web::dev::ServiceResponse<B>,
            Error = actix_web::Error,
        > + 'static,
    S::Future: 'static,
    B: 'static,
{
    type Response = actix_web::dev::ServiceResponse<B>;
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<Result<Self::Response, Self::Error>>;

    actix_web::dev::forward_ready!(service);

    fn call(&self, request: actix_web::dev::ServiceRequest) -> Self::Future {
        let method = method_label(request.method());
        let service = self.name;
        let started = std::time::Instant::now();
        let response = self.service.call(request);
        Box::pin(async move {
            let result = response.await;
            let (route, status) = match &result {
                Ok(response) => (
                    response
                        .request()
                        .match_pattern()
                        .unwrap_or_else(|| UNMATCHED.to_owned()),
                    response.status(),
                ),
                Err(error) => (
                    UNMATCHED.to_owned(),
                    error.as_response_error().status_code(),
                ),
            };
            metrics::histogram!(
                "saga_http_request_duration_seconds",
                "service" => service,
                "method" => method,
                "route" => route.clone()
            )
            .record(started.elapsed().as_secs_f64());
            metrics::counter!(
                "saga_http_requests_total",
                "service" => service,
                "method" => method,
                "route" => route,
                "status" => status_class(status)
            )
            .increment(1);
            result
        })
    }
}

const UNMATCHED: &str = "unmatched";

fn method_label(method: &actix_web::http::Method) -> &'static str {
    use actix_web::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

fn status_class(status: StatusCode) -> &'static str {
    match status.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// What a service's HTTP API is made of. Every API gets request tracing
/// (`TracingLogger` with credentials redacted, [`crate::request_span`]) and [`HttpMetrics`] around the routes `configure` mounts.
pub struct HttpApi<T: ?Sized> {
    /// Labels the metrics and logs (`order`, `payment`).
    pub service: &'static str,
    pub host: String,
    /// 0 binds any free port.
    pub port: u16,
    pub workers: usize,
    /// Each worker's blocking threads (see `db::blocking_threads`).
    pub blocking_threads: usize,
    /// Shared with every handler as app data.
    pub state: web::Data<T>,
    /// Shared with every handler as app data too (for `/readyz`).
    pub readiness: crate::readiness::Readiness,
    /// The operators' token, for the routes that take a [`crate::bearer::Operator`].
    pub operator_token: Option<crate::bearer::ApiToken>,
    pub configure: fn(&mut web::ServiceConfig),
}

/// A service, running: its HTTP API and its background tasks (consumers, relay, sweeps),
/// which watch the same shutdown token and are stopped together.
pub struct RunningService {
    port: u16,
    server: actix_web::dev::Server,
    shutdown: tokio_util::sync::CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl RunningService {
    /// Binds the API's address and starts serving; `tasks` already run.
    pub fn start<T: ?Sized + Send + Sync + 'static>(
        api: HttpApi<T>,
        shutdown: tokio_util::sync::CancellationToken,
        tasks: Vec<tokio::task::JoinHandle<()>>,
    ) -> anyhow::Result<Self> {
        use anyhow::Context;
        let listener = std::net::TcpListener::bind((api.host.as_str(), api.port))
            .with_context(|| format!("binding {}:{}", api.host, api.port))?;
        let port = listener.local_addr()?.port();
        let (service, state, configure) = (api.service, api.state, api.configure);
        let readiness = web::Data::new(api.readiness);
        let operator_token = api.operator_token.map(web::Data::new);
        let server = actix_web::HttpServer::new(move || {
            let app = actix_web::App::new()
                .wrap(crate::request_span::tracing_logger())
                .wrap(HttpMetrics::new(service))
                .app_data(state.clone())
                .app_data(readiness.clone());
            match &operator_token {
                Some(token) => app.app_data(token.clone()),
                None => app,
            }
            .configure(configure)
        })
        .listen(listener)?
        .workers(api.workers.max(1))
        .worker_max_blocking_threads(api.blocking_threads.max(1))
        .disable_signals()
        .shutdown_timeout(5)
        .run();
        tracing::info!(service, port, "Listening.");
        Ok(Self {
            port,
            server,
            shutdown,
            tasks,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Cancelling this token stops the service gracefully.
    pub fn shutdown_token(&self) -> tokio_util::sync::CancellationToken {
        self.shutdown.clone()
    }

    /// Serves until the token is cancelled (or the server stops), then stops the tasks
    /// and waits for them: a stopped service has finished its in-flight work.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        serve_until_cancelled(self.server, self.shutdown, self.tasks).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::{test, App};
    use std::sync::atomic::AtomicBool;

    #[actix_web::test]
    async fn requests_are_counted_by_route_pattern_and_status_class() {
        let _ = crate::telemetry::metrics();
        let app = test::init_service(
            App::new()
                .wrap(HttpMetrics::new("unit"))
                .route("/things/{id}", web::get().to(healthz)),
        )
        .await;
        for path in ["/things/1", "/things/2", "/nowhere/3"] {
            let _ = test::call_service(&app, test::TestRequest::get().uri(path).to_request()).await;
        }
        let text = crate::telemetry::metrics().render();
        assert!(
            text.contains(r#"saga_http_requests_total{service="unit",method="GET",route="/things/{id}",status="2xx"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"saga_http_requests_total{service="unit",method="GET",route="unmatched",status="4xx"} 1"#),
            "{text}"
        );
        assert!(!text.contains("/things/1"), "no path in labels");
    }

    fn empty_server() -> actix_web::dev::Server {
        actix_web::HttpServer::new(|| App::new().route("/healthz", web::get().to(healthz)))
            .bind(("127.0.0.1", 0))
            .expect("binds")
            .disable_signals()
            .run()
    }

    #[actix_web::test]
    async fn a_background_task_ending_before_the_shutdown_stops_the_service_with_an_error() {
        let shutdown = tokio_util::sync::CancellationToken::new();
        let waiting = shutdown.clone();
        let tasks = vec![
            tokio::spawn(async move { waiting.cancelled().await }),
            tokio::spawn(async {}),
        ];
        let served = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            serve_until_cancelled(empty_server(), shutdown.clone(), tasks),
        )
        .await
        .expect("the service stops by itself");
        let error = served.expect_err("an early end is a failure");
        assert!(error.to_string().contains("ended unexpectedly"), "{error}");
        assert!(shutdown.is_cancelled(), "the other tasks were told to stop");
    }

    #[actix_web::test]
    async fn a_shutdown_stops_the_service_cleanly_once_its_tasks_have_drained() {
        let shutdown = tokio_util::sync::CancellationToken::new();
        let (waiting, drained) = (
            shutdown.clone(),
            std::sync::Arc::new(AtomicBool::new(false)),
        );
        let seen = drained.clone();
        let tasks = vec![tokio::spawn(async move {
            waiting.cancelled().await;
            seen.store(true, std::sync::atomic::Ordering::SeqCst);
        })];
        shutdown.cancel();
        serve_until_cancelled(empty_server(), shutdown, tasks)
            .await
            .expect("a requested stop is no failure");
        assert!(drained.load(std::sync::atomic::Ordering::SeqCst));
    }
}
