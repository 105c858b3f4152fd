//! The end-to-end harness: the whole shop, in-process, against real servers.
//!
//! [`Stack::spawn`] starts the Kakao Pay simulator and the three services with the same
//! `Application::build` their binaries use, each on a free port, against fresh PostgreSQL
//! databases, a fresh MongoDB database, Kafka topics of their own (a unique prefix) and
//! the shared SMTP sink, so tests run side by side without seeing each other's traffic.
//! Any service can be stopped and started again on the same port mid-test.
//!
//! Logs are shown when `TEST_LOG` is set. The servers are found through the environment `infra/stack test` sets: `POSTGRES_URL`,
//! `KAFKA_BROKERS`, `MONGODB_URI`, `SMTP_HOST`, `SMTP_PORT`, `SMTP_MAILDIR`.

pub mod audit;
pub mod mail;
pub mod procs;
mod services;
pub mod watch;

pub use mail::{Mail, Maildir};
pub use services::{Kind, Options, Service};

use anyhow::{bail, Context};
use kakaopay::sim::{SimConfig, SimHandle};
use serde_json::{json, Value};
use shared_events::kafka::KafkaSettings;
use std::future::Future;
use std::net::TcpStream;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// How long an asynchronous outcome may take before a test gives up.
pub const DEADLINE: Duration = Duration::from_secs(45);

/// Where the real servers are.
#[derive(Debug, Clone)]
pub struct Infra {
    pub postgres_url: String,
    pub kafka_brokers: String,
    pub mongodb_uri: String,
    pub smtp_host: String,
    pub smtp_port: u16,
    pub maildir: Maildir,
}

impl Infra {
    /// Reads the environment and checks every server answers; fails with a hint if not.
    pub fn from_env() -> anyhow::Result<Self> {
        let var =
            |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_owned());
        let infra = Self {
            postgres_url: var("POSTGRES_URL", "postgres://postgres@127.0.0.1:5432"),
            kafka_brokers: var("KAFKA_BROKERS", "127.0.0.1:9092"),
            mongodb_uri: var("MONGODB_URI", "mongodb://127.0.0.1:27017"),
            smtp_host: var("SMTP_HOST", "127.0.0.1"),
            smtp_port: var("SMTP_PORT", "2525").parse().context("SMTP_PORT")?,
            maildir: Maildir::new(var(
                "SMTP_MAILDIR",
                concat!(env!("CARGO_MANIFEST_DIR"), "/../.stack/mail"),
            )),
        };
        let mongo = infra
            .mongodb_uri
            .trim_start_matches("mongodb://")
            .split('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        let postgres = infra
            .postgres_url
            .trim_start_matches("postgres://")
            .rsplit('@')
            .next()
            .unwrap_or_default();
        let postgres = postgres.split('/').next().unwrap_or_default().to_owned();
        let smtp = format!("{}:{}", infra.smtp_host, infra.smtp_port);
        for (name, address) in [
            ("PostgreSQL", postgres),
            ("Kafka", infra.kafka_brokers.clone()),
            ("MongoDB", mongo),
            ("SMTP", smtp),
        ] {
            if TcpStream::connect(&address).is_err() {
                bail!("{name} is not reachable at {address}: start the servers with `infra/stack deps` (or run the suite with `infra/stack test`)");
            }
        }
        Ok(infra)
    }

    pub fn kafka(&self, topic_prefix: &str) -> KafkaSettings {
        KafkaSettings::local(&self.kafka_brokers, topic_prefix)
    }
}

/// The shop, running.
pub struct Stack {
    pub infra: Infra,
    pub id: String,
    pub sim: SimHandle,
    pub order: Service,
    pub payment: Service,
    pub notifier: Service,
    pub http: reqwest::Client,
    pub notifier_token: String,
    /// The operators' token of payment's look-ups (`GET /payments…`).
    pub payment_token: String,
    /// Case 1: the secret the services sign `POST /internal/events` with.
    pub internal_secret: String,
    /// The token of every order this stack placed (`POST /orders` shows it once).
    tokens: std::sync::Mutex<std::collections::HashMap<Uuid, String>>,
    plan: services::Plan,
}

impl Stack {
    /// Starts everything with the simulator configured by `sim`.
    pub async fn spawn(sim: SimConfig) -> anyhow::Result<Self> {
        Self::spawn_with(sim, Options::default()).await
    }

    pub async fn spawn_with(sim: SimConfig, options: Options) -> anyhow::Result<Self> {
        if std::env::var_os("TEST_LOG").is_some() {
            shared_events::telemetry::init("e2e");
        }
        let infra = Infra::from_env()?;
        let id = Uuid::new_v4().simple().to_string()[..12].to_owned();
        let sim = kakaopay::sim::spawn(sim)
            .await
            .context("starting the Kakao Pay simulator")?;
        let plan = services::Plan::new(&infra, &id, &sim, options)?;
        let payment = Service::start(services::Kind::Payment, plan.clone()).await?;
        let order = Service::start(services::Kind::Order, plan.clone()).await?;
        let notifier = Service::start(services::Kind::Notifier, plan.clone()).await?;
        Ok(Self {
            infra,
            id,
            sim,
            order,
            payment,
            notifier,
            http: reqwest::Client::new(),
            notifier_token: plan.notifier_token.clone(),
            payment_token: plan.payment_token.clone(),
            internal_secret: plan.internal_secret.clone(),
            tokens: Default::default(),
            plan,
        })
    }

    /// Stops every service and starts it again in a new consumer group, so every event
    /// ever published is consumed again — as if every group's offsets were reset to 0.
    pub async fn replay_everything(&mut self) -> anyhow::Result<()> {
        self.plan.replay();
        for service in [&mut self.notifier, &mut self.order, &mut self.payment] {
            service.stop().await;
            service.set_plan(self.plan.clone());
            service.start_again().await?;
        }
        Ok(())
    }

    /// Another instance of `kind` in the same consumer group, on a port of its own.
    pub async fn another(&self, kind: Kind) -> anyhow::Result<Service> {
        Service::start_on(kind, self.plan.clone(), Some(services::free_port()?)).await
    }

    /// Stops the services and drops the test's databases.
    pub async fn stop(mut self) {
        for service in [&mut self.notifier, &mut self.order, &mut self.payment] {
            service.stop().await;
        }
        services::drop_databases(&self.infra, &self.id);
    }

    /// A recipient address no other test uses.
    pub fn shopper_email(&self, tag: &str) -> String {
        format!(
            "{tag}-{}-{}@example.com",
            self.id,
            &Uuid::new_v4().simple().to_string()[..6]
        )
    }

    pub fn order_request(&self, email: &str) -> Value {
        json!({
            "customer_id": format!("shopper-{}", self.id),
            "customer_email": email,
            "items": [
                {"name": "아메리카노", "quantity": 2, "unit_price": 4500},
                {"name": "Cookie <b>", "quantity": 1, "unit_price": 3000}
            ]
        })
    }

    /// `POST /orders`; the token of an accepted order is kept for [`Stack::token`] (read
    /// the answer's body as usual: it is buffered here).
    pub async fn post_order(&self, body: &Value) -> reqwest::Response {
        let response = self
            .http
            .post(format!("{}/orders", self.order.url()))
            .json(body)
            .send()
            .await
            .expect("order-service answers");
        if response.status() != 202 {
            return response;
        }
        let (status, headers) = (response.status(), response.headers().clone());
        let bytes = response.bytes().await.expect("order body");
        if let Ok(order) = serde_json::from_slice::<Value>(&bytes) {
            let id = order["id"].as_str().and_then(|id| id.parse().ok());
            if let (Some(id), Some(token)) = (id, order["access_token"].as_str()) {
                self.lock_tokens().insert(id, token.to_owned());
            }
        }
        let mut rebuilt = http_response(status, bytes.to_vec());
        *rebuilt.headers_mut() = headers;
        rebuilt.into()
    }

    fn lock_tokens(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<Uuid, String>> {
        self.tokens
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The token of order `id`, placed through this stack.
    pub fn token(&self, id: Uuid) -> String {
        self.lock_tokens()
            .get(&id)
            .cloned()
            .unwrap_or_else(|| panic!("no token for order {id}: not placed through this stack"))
    }

    /// Places a valid order for `email` and returns its id.
    pub async fn place_order(&self, email: &str) -> Uuid {
        let response = self.post_order(&self.order_request(email)).await;
        assert_eq!(response.status(), 202, "order accepted");
        let order: Value = response.json().await.expect("order JSON");
        order["id"]
            .as_str()
            .and_then(|id| id.parse().ok())
            .expect("order id")
    }

    /// The order as its shopper sees it (with its token).
    pub async fn get_order(&self, id: Uuid) -> Value {
        self.get_as_shopper(id, "").await
    }

    /// `GET /orders/{id}{rest}` with the order's token, as JSON.
    async fn get_as_shopper(&self, id: Uuid, rest: &str) -> Value {
        self.http
            .get(format!("{}/orders/{id}{rest}", self.order.url()))
            .bearer_auth(self.token(id))
            .send()
            .await
            .expect("order-service answers")
            .json()
            .await
            .expect("order-service answers JSON")
    }

    /// `POST /orders/{id}/cancel` as the order's shopper.
    pub async fn cancel_order(&self, id: Uuid) -> reqwest::Response {
        self.http
            .post(format!("{}/orders/{id}/cancel", self.order.url()))
            .bearer_auth(self.token(id))
            .send()
            .await
            .expect("order-service answers")
    }

    /// The order's timeline as its shopper sees it (with its token).
    pub async fn timeline(&self, id: Uuid) -> Value {
        self.get_as_shopper(id, "/timeline").await
    }

    /// Waits until the order's payment is ready and returns where the shopper pays.
    pub async fn redirect_url(&self, id: Uuid) -> String {
        self.watch_order(id, "the payment redirect URL", |order| {
            order["payment"]["redirect_url"].as_str().map(str::to_owned)
        })
        .await
    }

    /// Long-polls order `id` (see [`watch::OrderWatch`]) until `check` finds what it
    /// looks for; fails the test after [`DEADLINE`].
    pub async fn watch_order<T>(
        &self,
        id: Uuid,
        what: &str,
        check: impl Fn(&Value) -> Option<T>,
    ) -> T {
        let token = self.lock_tokens().get(&id).cloned();
        let mut watch = watch::OrderWatch::new(&self.order.url(), id).with_token(token);
        let started = Instant::now();
        loop {
            match watch.next(&self.http).await {
                Ok(order) => {
                    if let Some(found) = check(&order) {
                        return found;
                    }
                }
                Err(watch::WatchError::Retry(after, error)) => {
                    tracing::debug!(%error, "Order not read; trying again.");
                    tokio::time::sleep(after).await;
                }
                Err(watch::WatchError::Refused(status, body)) => {
                    panic!("waiting for {what}: order-service refused: {status} {body}")
                }
            }
            assert!(
                started.elapsed() < DEADLINE,
                "gave up waiting for {what} after {DEADLINE:?}"
            );
        }
    }

    /// The shopper opens the Kakao Pay page and follows every redirect (approval, in the
    /// simulator's `auto` mode). `action` picks another button: `cancel` or `fail`.
    pub async fn shopper_visits(
        &self,
        redirect_url: &str,
        action: Option<&str>,
    ) -> reqwest::Response {
        let url = match action {
            Some(action) => format!("{redirect_url}?action={action}"),
            None => redirect_url.to_owned(),
        };
        self.http
            .get(url)
            .send()
            .await
            .expect("the payment page answers")
    }

    pub async fn wait_for_status(&self, id: Uuid, status: &str) -> Value {
        self.watch_order(id, &format!("order {id} to be {status}"), |order| {
            (order["status"] == status).then(|| order.clone())
        })
        .await
    }

    /// A GET of payment's operator look-ups (`GET /payments…`), with their token.
    pub fn payment_lookup(&self, url: impl reqwest::IntoUrl) -> reqwest::RequestBuilder {
        self.http.get(url).bearer_auth(&self.payment_token)
    }

    /// The notifier's history for the order.
    pub async fn notifications(&self, order_id: Uuid) -> Vec<Value> {
        let response = self
            .http
            .get(format!(
                "{}/notifications?order_id={order_id}",
                self.notifier.url()
            ))
            .bearer_auth(&self.notifier_token)
            .send()
            .await
            .expect("notifier answers");
        assert_eq!(response.status(), 200, "history readable with the token");
        let body: Value = response.json().await.expect("history JSON");
        match body {
            Value::Array(items) => items,
            Value::Object(mut page) => match page.remove("items") {
                Some(Value::Array(items)) => items,
                _ => Vec::new(),
            },
            _ => Vec::new(),
        }
    }

    /// Waits until `count` mails to `recipient` have arrived and the stack has nothing
    /// left to mail ([`Stack::wait_until_mail_is_quiet`]), then returns them: exactly
    /// `count`, so a duplicate that would arrive late fails the test.
    pub async fn mails_to(&self, recipient: &str, count: usize) -> Vec<Mail> {
        eventually(&format!("{count} mail(s) to {recipient}"), || async {
            (self.infra.maildir.to(recipient).len() >= count).then_some(())
        })
        .await;
        self.wait_until_mail_is_quiet().await;
        let mails = self.infra.maildir.to(recipient);
        assert_eq!(
            mails.len(),
            count,
            "mails to {recipient} once nothing was left to mail: {:?}",
            mails.iter().map(|m| &m.subject).collect::<Vec<_>>()
        );
        mails
    }

    /// Waits until order's and payment's outboxes are delivered and the mail service has
    /// committed every message of their topics.
    pub async fn wait_until_mail_is_quiet(&self) {
        eventually("nothing left to mail", || async {
            match self.plan.mail_is_quiet().await {
                Ok(quiet) => quiet.then_some(()),
                Err(error) => {
                    tracing::debug!(%error, "Cannot tell yet whether mail is quiet.");
                    None
                }
            }
        })
        .await
    }

    /// A fresh payment-service database URL, for tests that look at rows directly.
    pub fn payment_database_url(&self) -> String {
        services::database_url(&self.infra, "payments", &self.id)
    }

    pub fn order_database_url(&self) -> String {
        services::database_url(&self.infra, "orders", &self.id)
    }

    /// The blocking mail service's history database (cases 1 and 2).
    pub fn mail_database_url(&self) -> String {
        services::database_url(&self.infra, "mail", &self.id)
    }

    /// The MongoDB database of the Tokio notifier's history (cases 3 and 4).
    pub fn notifier_mongodb_database(&self) -> String {
        format!("notifier_{}", self.id)
    }
}

/// Polls `check` until it yields a value, failing the test after [`DEADLINE`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    let mut wait = Duration::from_millis(20);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "gave up waiting for {what} after {DEADLINE:?}"
        );
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_millis(250));
    }
}

/// A `reqwest::Response` made from a status and a body already read.
fn http_response(status: reqwest::StatusCode, body: Vec<u8>) -> ::http::Response<Vec<u8>> {
    let mut response = ::http::Response::new(body);
    *response.status_mut() = status;
    response
}
