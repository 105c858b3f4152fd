//! The order service under test: started in-process on a free port against a fresh
//! database, as case 1 (events over HTTP to payment and mail services that are not
//! there), so no broker is needed — the routes under test are the same in every case.

use clap::Parser;
use serde_json::{json, Value};
use std::time::Duration;
use uuid::Uuid;

/// Longest a test waits for anything before it fails.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub struct App {
    pub url: String,
    pub http: reqwest::Client,
    server_url: String,
    database: String,
    shutdown: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    /// The token of each order placed (needed to cancel it).
    tokens: std::sync::Mutex<std::collections::HashMap<Uuid, String>>,
}

impl App {
    /// With `max_open_waits` waits allowed, free-form items allowed (as the tests' stacks
    /// run), and no other setting changed.
    pub async fn start(max_open_waits: usize) -> App {
        App::start_with(&[
            format!("--max-open-waits={max_open_waits}"),
            "--allow-custom-items=true".into(),
        ])
        .await
    }

    /// With `settings` (flags) on top of the test defaults; otherwise the shipped ones.
    pub async fn start_with(settings: &[String]) -> App {
        let server_url = std::env::var("POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned());
        let database = format!("orders_wait_{}", Uuid::new_v4().simple());
        let (admin, name) = (format!("{server_url}/postgres"), database.clone());
        tokio::task::spawn_blocking(move || shared_events::db::create_database(&admin, &name))
            .await
            .expect("joins")
            .expect("PostgreSQL at 127.0.0.1:5432 creates the test database");
        let nowhere = format!("http://127.0.0.1:{}", closed_port());
        let mut args = vec![
            "order".to_owned(),
            "--port=0".into(),
            "--case=1".into(),
            "--max-wait-secs=30".into(),
            // A stream whose client left is noticed at its next keep-alive.
            "--events-keepalive-secs=1".into(),
            format!("--payment-url={nowhere}"),
            format!("--mailer-url={nowhere}"),
            "--internal-events-secret=waiting-tests-internal-secret".into(),
        ];
        // The shipped default, whatever the environment says (`infra/stack test` exports
        // the local stack's ORDER_ALLOW_CUSTOM_ITEMS=true, which clap would read).
        if !settings
            .iter()
            .any(|s| s.starts_with("--allow-custom-items"))
        {
            args.push("--allow-custom-items=false".into());
        }
        args.extend_from_slice(settings);
        let mut settings = order::config::Settings::try_parse_from(args).expect("settings");
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
    pub async fn until_ready(&self) {
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

    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
        let (admin, name) = (format!("{}/postgres", self.server_url), self.database);
        let _ = tokio::task::spawn_blocking(move || run_sql(&admin, &drop_database(&name))).await;
    }

    pub async fn place_order(&self) -> Uuid {
        let response = self
            .http
            .post(format!("{}/orders", self.url))
            .json(&json!({
                "customer_id": "waiter",
                "customer_email": "waiter@example.com",
                "items": [{"sku": "drip-bags-10", "quantity": 1}]
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

    /// `POST /orders` with `body` (and an `Idempotency-Key` if given).
    pub async fn post_order(&self, body: &Value, key: Option<&str>) -> reqwest::Response {
        let mut request = self.http.post(format!("{}/orders", self.url)).json(body);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        request.send().await.expect("order-service answers")
    }

    /// The test database's URL.
    pub fn database_url(&self) -> String {
        format!("{}/{}", self.server_url, self.database)
    }

    /// The value of `SELECT count(*) FROM <from>` in the orders database.
    pub async fn count(&self, from: &str) -> i64 {
        use diesel::{Connection, RunQueryDsl};
        let url = format!("{}/{}", self.server_url, self.database);
        let sql = format!("(SELECT count(*) FROM {from})");
        tokio::task::spawn_blocking(move || {
            let mut conn = diesel::PgConnection::establish(&url).expect("connects");
            diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(&sql))
                .get_result::<i64>(&mut conn)
                .expect("counts")
        })
        .await
        .expect("joins")
    }

    pub fn get(&self, id: Uuid) -> reqwest::RequestBuilder {
        self.http
            .get(format!("{}/orders/{id}", self.url))
            .timeout(PATIENCE)
    }

    /// The order's tag and body, without waiting.
    pub async fn current(&self, id: Uuid) -> (String, String) {
        let response = self.get(id).send().await.expect("answers");
        assert_eq!(response.status(), 200);
        let etag = etag(&response);
        (etag, response.text().await.expect("body"))
    }

    pub async fn cancel(&self, id: Uuid) {
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
    pub async fn update_elsewhere(&self, sql: String) {
        let url = format!("{}/{}", self.server_url, self.database);
        tokio::task::spawn_blocking(move || run_sql(&url, &sql))
            .await
            .expect("joins");
    }

    pub async fn events(&self, id: Uuid) -> reqwest::Response {
        self.http
            .get(format!("{}/orders/{id}/events", self.url))
            .send()
            .await
            .expect("answers")
    }
}

pub fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

pub fn drop_database(name: &str) -> String {
    format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")
}

pub fn run_sql(url: &str, sql: &str) {
    use diesel::{Connection, RunQueryDsl};
    let mut conn = diesel::PgConnection::establish(url).expect("connects");
    diesel::sql_query(sql).execute(&mut conn).expect("runs");
}

pub fn etag(response: &reqwest::Response) -> String {
    header(response, "etag").expect("an ETag")
}

pub fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Reads a `text/event-stream` body event by event.
pub struct Events {
    response: reqwest::Response,
    buffer: String,
}

impl Events {
    pub fn new(response: reqwest::Response) -> Self {
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
    pub async fn next(&mut self) -> Option<Value> {
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
