//! Waiting for an order to change, against the real service and a real PostgreSQL: the
//! long poll of `GET /orders/{id}` and the change stream of `GET /orders/{id}/events`.
//!
//! Each test starts order-service on a free port against a fresh database. It runs as
//! case 1 (events over HTTP to a payment service that is not there), so no broker is
//! needed: the routes under test are the same in every case, and a shopper's cancel
//! changes an unpaid order without any other service.

use clap::Parser;
use serde_json::{json, Value};
use std::time::Duration;
use uuid::Uuid;

/// Longest a test waits for anything before it fails.
const PATIENCE: Duration = Duration::from_secs(20);

struct App {
    url: String,
    http: reqwest::Client,
    server_url: String,
    database: String,
    shutdown: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    /// The token of each order placed (needed to cancel it).
    tokens: std::sync::Mutex<std::collections::HashMap<Uuid, String>>,
}

impl App {
    async fn start(max_open_waits: usize) -> App {
        let server_url = std::env::var("POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned());
        let database = format!("orders_wait_{}", Uuid::new_v4().simple());
        let (admin, name) = (format!("{server_url}/postgres"), database.clone());
        tokio::task::spawn_blocking(move || shared_events::db::create_database(&admin, &name))
            .await
            .expect("joins")
            .expect("PostgreSQL at 127.0.0.1:5432 creates the test database");
        let nowhere = format!("http://127.0.0.1:{}", closed_port());
        let mut settings = order::config::Settings::try_parse_from([
            "order",
            "--port=0",
            "--case=1",
            "--max-wait-secs=30",
            // A stream whose client left is noticed at its next keep-alive.
            "--events-keepalive-secs=1",
            &format!("--max-open-waits={max_open_waits}"),
            &format!("--payment-url={nowhere}"),
            &format!("--mailer-url={nowhere}"),
            "--internal-events-secret=waiting-tests-internal-secret",
        ])
        .expect("settings");
        settings.database_url = format!("{server_url}/{database}").into();
        let app = order::startup::Application::build(settings)
            .await
            .expect("order-service starts");
        let app = App {
            url: format!("http://127.0.0.1:{}", app.port()),
            http: reqwest::Client::new(),
            server_url,
            database,
            shutdown: app.shutdown_token(),
            task: tokio::spawn(app.run_until_stopped()),
            tokens: Default::default(),
        };
        app.until_ready().await;
        app
    }

    /// `build` returns once the port is bound, while the migrations still run.
    async fn until_ready(&self) {
        let started = std::time::Instant::now();
        loop {
            let ready = self.http.get(format!("{}/readyz", self.url)).send().await;
            if ready.is_ok_and(|response| response.status().is_success()) {
                return;
            }
            assert!(started.elapsed() < PATIENCE, "order-service ready in time");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
        let (admin, name) = (format!("{}/postgres", self.server_url), self.database);
        let _ = tokio::task::spawn_blocking(move || run_sql(&admin, &drop_database(&name))).await;
    }

    async fn place_order(&self) -> Uuid {
        let response = self
            .http
            .post(format!("{}/orders", self.url))
            .json(&json!({
                "customer_id": "waiter",
                "customer_email": "waiter@example.com",
                "items": [{"name": "Latte", "quantity": 1, "unit_price": 5000}]
            }))
            .send()
            .await
            .expect("order-service answers");
        assert_eq!(response.status(), 202);
        let order: Value = response.json().await.expect("order JSON");
        let id = order["id"].as_str().expect("id").parse().expect("uuid");
        let token = order["access_token"].as_str().expect("access_token");
        self.tokens
            .lock()
            .expect("tokens")
            .insert(id, token.to_owned());
        id
    }

    fn get(&self, id: Uuid) -> reqwest::RequestBuilder {
        self.http
            .get(format!("{}/orders/{id}", self.url))
            .timeout(PATIENCE)
    }

    /// The order's tag and body, without waiting.
    async fn current(&self, id: Uuid) -> (String, String) {
        let response = self.get(id).send().await.expect("answers");
        assert_eq!(response.status(), 200);
        let etag = etag(&response);
        (etag, response.text().await.expect("body"))
    }

    async fn cancel(&self, id: Uuid) {
        let token = self.tokens.lock().expect("tokens")[&id].clone();
        let response = self
            .http
            .post(format!("{}/orders/{id}/cancel", self.url))
            .bearer_auth(token)
            .send()
            .await
            .expect("answers");
        assert_eq!(response.status(), 202);
    }

    /// Changes the row as another instance (or anything outside this process) would: only
    /// the trigger's `NOTIFY` can tell this instance.
    async fn update_elsewhere(&self, sql: String) {
        let url = format!("{}/{}", self.server_url, self.database);
        tokio::task::spawn_blocking(move || run_sql(&url, &sql))
            .await
            .expect("joins");
    }

    async fn events(&self, id: Uuid) -> reqwest::Response {
        self.http
            .get(format!("{}/orders/{id}/events", self.url))
            .send()
            .await
            .expect("answers")
    }
}

fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

fn drop_database(name: &str) -> String {
    format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")
}

fn run_sql(url: &str, sql: &str) {
    use diesel::{Connection, RunQueryDsl};
    let mut conn = diesel::PgConnection::establish(url).expect("connects");
    diesel::sql_query(sql).execute(&mut conn).expect("runs");
}

fn etag(response: &reqwest::Response) -> String {
    header(response, "etag").expect("an ETag")
}

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Reads a `text/event-stream` body event by event.
struct Events {
    response: reqwest::Response,
    buffer: String,
}

impl Events {
    fn new(response: reqwest::Response) -> Self {
        assert_eq!(response.status(), 200);
        assert_eq!(
            header(&response, "content-type").as_deref(),
            Some("text/event-stream")
        );
        Self {
            response,
            buffer: String::new(),
        }
    }

    /// The data of the next `order` event; `None` when the stream ended.
    async fn next(&mut self) -> Option<Value> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let frame: String = self.buffer.drain(..end + 2).collect();
                if let Some(data) = frame.lines().find_map(|l| l.strip_prefix("data: ")) {
                    assert!(frame.contains("event: order\n"), "{frame}");
                    return Some(serde_json::from_str(data).expect("event JSON"));
                }
                continue; // a keep-alive comment
            }
            let chunk = tokio::time::timeout(PATIENCE, self.response.chunk())
                .await
                .expect("the stream sends or ends in time")
                .expect("the stream reads");
            self.buffer
                .push_str(std::str::from_utf8(&chunk?).expect("UTF-8"));
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_wait_the_order_is_answered_at_once_with_its_etag() {
    let app = App::start(10).await;
    let id = app.place_order().await;
    let response = app.get(id).send().await.expect("answers");
    assert_eq!(response.status(), 200);
    assert!(etag(&response).starts_with('"'), "a strong, quoted tag");
    assert_eq!(header(&response, "preference-applied"), None);
    let stale = app
        .get(id)
        .header("If-None-Match", etag(&response))
        .send()
        .await
        .expect("answers");
    assert_eq!(stale.status(), 200, "no wait asked: answered as before");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_waiting_request_returns_with_the_change() {
    let app = App::start(10).await;
    let id = app.place_order().await;
    let (before, _) = app.current(id).await;
    let waiting = app
        .get(id)
        .header("Prefer", "wait=30")
        .header("If-None-Match", &before)
        .send();
    let waiting = tokio::spawn(waiting);
    app.cancel(id).await;
    // The client gives up long before the server's 30 s: an answer means the change did.
    let response = waiting.await.expect("joins").expect("answered before 20 s");
    assert_eq!(response.status(), 200);
    assert_eq!(
        header(&response, "preference-applied").as_deref(),
        Some("wait=30")
    );
    assert_ne!(etag(&response), before);
    let order: Value = response.json().await.expect("JSON");
    assert_eq!(order["status"], "CANCELLED");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn at_its_timeout_a_wait_answers_with_the_unchanged_order() {
    let app = App::start(10).await;
    let id = app.place_order().await;
    let (before, body) = app.current(id).await;
    for request in [
        app.get(id)
            .header("Prefer", "wait=1")
            .header("If-None-Match", &before),
        app.get(id).query(&[("wait", "1s")]),
    ] {
        let response = request.send().await.expect("answers");
        assert_eq!(response.status(), 200);
        assert_eq!(etag(&response), before);
        assert_eq!(response.text().await.expect("body"), body);
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stale_etag_is_answered_at_once() {
    let app = App::start(10).await;
    let id = app.place_order().await;
    let (current, _) = app.current(id).await;
    let response = app
        .get(id)
        .query(&[("wait", "30")])
        .header("If-None-Match", "\"stale\", W/\"older\"")
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("answered long before the 30 s wait");
    assert_eq!(response.status(), 200);
    assert_eq!(etag(&response), current);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_wait_is_refused_naming_the_parameter_and_changes_nothing() {
    let app = App::start(10).await;
    let id = app.place_order().await;
    let (before, _) = app.current(id).await;
    let cases = [
        (app.get(id).query(&[("wait", "abc")]), "wait"),
        (app.get(id).query(&[("wait", "-1")]), "wait"),
        (app.get(id).query(&[("wait", "31")]), "wait"),
        (app.get(id).header("Prefer", "wait=abc"), "Prefer: wait"),
        (app.get(id).header("Prefer", "wait=3600"), "Prefer: wait"),
    ];
    for (request, name) in cases {
        let response = request.send().await.expect("answers");
        assert_eq!(response.status(), 400);
        assert_eq!(
            header(&response, "content-type").as_deref(),
            Some("application/problem+json")
        );
        let problem: Value = response.json().await.expect("problem JSON");
        assert_eq!(problem["type"], "/problems/invalid-parameter");
        assert_eq!(problem["invalid_params"][0]["name"], name, "{problem}");
    }
    assert_eq!(app.current(id).await.0, before, "the order is as it was");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn waits_beyond_the_bound_are_refused_with_retry_after() {
    let app = App::start(1).await;
    let (id, other) = (app.place_order().await, app.place_order().await);
    let mut stream = Events::new(app.events(id).await);
    stream
        .next()
        .await
        .expect("the first event: the stream holds the only wait");

    let refused = app
        .get(other)
        .query(&[("wait", "1")])
        .send()
        .await
        .expect("answers");
    assert_eq!(refused.status(), 503);
    assert_eq!(header(&refused, "retry-after").as_deref(), Some("1"));
    let problem: Value = refused.json().await.expect("problem JSON");
    assert_eq!(problem["type"], "/problems/too-many-waits");
    assert_eq!(app.events(other).await.status(), 503, "streams count too");
    assert_eq!(
        app.get(other).send().await.expect("answers").status(),
        200,
        "plain reads do not"
    );

    drop(stream);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let status = app
            .get(other)
            .query(&[("wait", "1")])
            .send()
            .await
            .expect("answers")
            .status();
        if status == 200 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the wait was never given back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_event_stream_sends_the_order_then_its_changes_and_ends_when_settled() {
    let app = App::start(10).await;
    let id = app.place_order().await;
    let mut events = Events::new(app.events(id).await);
    let first = events.next().await.expect("the current order at once");
    assert_eq!(first["status"], "PENDING_PAYMENT");
    assert!(first["payment"].is_null());

    // As payment's PaymentReady would, but from outside this process.
    app.update_elsewhere(format!(
        "UPDATE orders SET payment_status = 'READY', payment_redirect_url = 'http://127.0.0.1:1/pay' WHERE id = '{id}'"
    ))
    .await;
    let ready = events.next().await.expect("the change");
    assert_eq!(ready["payment"]["redirect_url"], "http://127.0.0.1:1/pay");

    app.cancel(id).await;
    let cancelled = events.next().await.expect("the cancellation");
    assert_eq!(cancelled["status"], "CANCELLED");
    assert_eq!(events.next().await, None, "a settled order ends the stream");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_orders_are_not_found_for_waits_and_streams() {
    let app = App::start(10).await;
    let unknown = Uuid::now_v7();
    let waited = app
        .get(unknown)
        .query(&[("wait", "5")])
        .send()
        .await
        .expect("answers");
    assert_eq!(waited.status(), 404);
    let streamed = app.events(unknown).await;
    assert_eq!(streamed.status(), 404);
    assert_eq!(
        header(&streamed, "content-type").as_deref(),
        Some("application/problem+json")
    );
    app.stop().await;
}
