//! `spawn_app()` and friends: a notifier started in-process with unique topics, group,
//! database and recipients, plus readers for what it produced (mails in the Maildir,
//! history documents, dead letters).

use chrono::Utc;
use clap::Parser;
use mongodb::bson::{doc, Document};
use notifier::{Application, Settings};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde_json::Value;
use shared_events::kafka::{DeadLetter, KafkaSettings};
use shared_events::{
    CancelReason, Event, LineItem, OrderCancelled, OrderCompleted, OrderPlaced, OrderSnapshot,
    PaymentApproved, Topics,
};
use std::collections::HashMap;
use std::future::Future;
use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const TOKEN: &str = "test-token-5f1c";
/// How long any asynchronous outcome may take.
pub const DEADLINE: Duration = Duration::from_secs(30);

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

pub fn kafka_brokers() -> String {
    env_or("KAFKA_BROKERS", "127.0.0.1:9092")
}
pub fn mongodb_uri() -> String {
    env_or("MONGODB_URI", "mongodb://127.0.0.1:27017")
}
pub fn smtp_host() -> String {
    env_or("SMTP_HOST", "127.0.0.1")
}
pub fn smtp_port() -> u16 {
    env_or("SMTP_PORT", "2525")
        .parse()
        .expect("SMTP_PORT is a port")
}
pub fn maildir() -> PathBuf {
    PathBuf::from(env_or(
        "SMTP_MAILDIR",
        concat!(env!("CARGO_MANIFEST_DIR"), "/../.stack/mail"),
    ))
}

/// Fails (never skips) when a server is not there.
fn require_reachable(what: &str, address: &str) {
    let reachable = address
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .is_some_and(|addr| {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok()
        });
    assert!(
        reachable,
        "{what} is unreachable at {address}: run `infra/stack deps` first \
         (or point the env vars KAFKA_BROKERS / MONGODB_URI / SMTP_HOST+SMTP_PORT at running servers)"
    );
}

fn mongo_host_port(uri: &str) -> String {
    let rest = uri.split("://").nth(1).unwrap_or(uri);
    let rest = rest.rsplit('@').next().unwrap_or(rest);
    let hosts = rest.split(['/', '?']).next().unwrap_or(rest);
    let first = hosts.split(',').next().unwrap_or(hosts);
    if first.contains(':') {
        first.to_owned()
    } else {
        format!("{first}:27017")
    }
}

pub fn require_servers() {
    let brokers = kafka_brokers();
    require_reachable("Kafka", brokers.split(',').next().unwrap_or(&brokers));
    require_reachable("MongoDB", &mongo_host_port(&mongodb_uri()));
    require_reachable("SMTP", &format!("{}:{}", smtp_host(), smtp_port()));
    assert!(
        maildir().is_dir(),
        "the SMTP sink's Maildir {} does not exist: run `infra/stack deps` (or set SMTP_MAILDIR)",
        maildir().display()
    );
}

/// Settings for one test: unique topics, group and database; fast retries.
pub fn test_settings() -> Settings {
    let id = Uuid::new_v4().simple().to_string();
    let mut settings = Settings::parse_from(["notifier"]);
    settings.host = "127.0.0.1".into();
    settings.port = 0;
    settings.kafka = KafkaSettings::local(&kafka_brokers(), &format!("t-{id}."));
    settings.consumer_group = format!("notifier-test-{id}");
    settings.mongodb_uri = mongodb_uri();
    settings.mongodb_database = format!("notifier_test_{}", &id[..16]);
    settings.mail.smtp_host = smtp_host();
    settings.mail.smtp_port = smtp_port();
    settings.mail.api_token = Some(TOKEN.into());
    settings.mail_retry_initial_ms = 100;
    settings.mail_retry_max_ms = 400;
    settings.shutdown_timeout_secs = 10;
    settings
}

pub struct TestApp {
    pub settings: Settings,
    pub address: String,
    pub topics: Topics,
    pub producer: FutureProducer,
    pub db: mongodb::Database,
    pub http: reqwest::Client,
    running: Option<(CancellationToken, JoinHandle<anyhow::Result<()>>)>,
    mail_index: Mutex<HashMap<PathBuf, String>>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(customize: impl FnOnce(&mut Settings)) -> TestApp {
    let mut app = test_env_with(customize).await;
    app.start().await;
    app
}

/// Everything [`spawn_app_with`] prepares (settings, producer, database, Maildir reader)
/// without starting a notifier: for tests that run the real binary instead.
pub async fn test_env_with(customize: impl FnOnce(&mut Settings)) -> TestApp {
    require_servers();
    shared_events::telemetry::init("notifier-tests");
    let mut settings = test_settings();
    customize(&mut settings);
    let producer = ClientConfig::new()
        .set("bootstrap.servers", &settings.kafka.brokers)
        .set("linger.ms", "0")
        .set("message.timeout.ms", "30000")
        .create()
        .expect("producer");
    let client = mongodb::Client::with_uri_str(&settings.mongodb_uri)
        .await
        .expect("MongoDB client");
    TestApp {
        topics: settings.kafka.topics(),
        db: client.database(&settings.mongodb_database),
        settings,
        address: String::new(),
        producer,
        http: reqwest::Client::new(),
        running: None,
        mail_index: Mutex::new(HashMap::new()),
    }
}

impl TestApp {
    /// (Re)starts the notifier with the same settings.
    pub async fn start(&mut self) {
        assert!(self.running.is_none(), "already running");
        let app = Application::build(self.settings.clone())
            .await
            .expect("the notifier starts (are the servers up? `infra/stack deps`)");
        self.address = format!("http://127.0.0.1:{}", app.port());
        let token = app.shutdown_token();
        let port = app.port();
        let handle = tokio::spawn(app.run_until_stopped());
        self.running = Some((token, handle));
        until_ready(&self.http, port).await;
    }

    /// Cancels the shutdown token and waits until everything stopped.
    pub async fn stop(&mut self) -> Duration {
        let (token, handle) = self.running.take().expect("running");
        let started = Instant::now();
        token.cancel();
        tokio::time::timeout(Duration::from_secs(60), handle)
            .await
            .expect("the notifier stops within 60 s")
            .expect("the notifier task does not panic")
            .expect("the notifier stops cleanly");
        started.elapsed()
    }

    /// Starts another instance with the same settings (same consumer group).
    pub async fn start_another(&self) -> Instance {
        let app = Application::build(self.settings.clone())
            .await
            .expect("another notifier starts");
        let token = app.shutdown_token();
        let port = app.port();
        let instance = Instance {
            token,
            handle: tokio::spawn(app.run_until_stopped()),
        };
        until_ready(&self.http, port).await;
        instance
    }

    /// Drops this test's database without expecting an in-process notifier (for tests
    /// that ran the binary; call at the end of a passing test).
    pub async fn drop_database(self) {
        self.db.drop().await.expect("test database dropped");
    }

    /// Stops the notifier and drops this test's database (call at the end of a passing
    /// test; a failing one keeps its data for a look).
    pub async fn finish(mut self) {
        if self.running.is_some() {
            self.stop().await;
        }
        self.db.drop().await.expect("test database dropped");
    }

    pub async fn publish(&self, event: &Event) {
        shared_events::kafka::publish(&self.producer, &self.topics, event)
            .await
            .expect("event published");
    }

    pub async fn publish_raw(&self, topic: &str, key: &str, payload: &[u8]) {
        self.producer
            .send(
                FutureRecord::to(topic).key(key).payload(payload),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("raw message published");
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.get(format!("{}{path}", self.address))
    }

    pub fn get_authed(&self, path: &str) -> reqwest::RequestBuilder {
        self.get(path).bearer_auth(TOKEN)
    }

    /// `GET /notifications?order_id=…` → the items.
    pub async fn history(&self, order_id: Uuid) -> Vec<Value> {
        let response = self
            .get_authed(&format!("/notifications?order_id={order_id}"))
            .send()
            .await
            .expect("history request");
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.expect("json");
        body["items"].as_array().cloned().expect("items")
    }

    /// The history documents of an order, read directly from MongoDB.
    pub async fn documents(&self, filter: Document) -> Vec<Document> {
        use futures::TryStreamExt;
        self.db
            .collection::<Document>("notifications")
            .find(filter)
            .await
            .expect("find")
            .try_collect()
            .await
            .expect("documents")
    }

    /// Polls until the order has `count` documents in a final state.
    pub async fn wait_for_final_documents(&self, order_id: Uuid, count: usize) -> Vec<Document> {
        let filter =
            doc! { "order_id": order_id.to_string(), "status": { "$in": ["SENT", "FAILED"] } };
        eventually(
            &format!("{count} finished history documents for order {order_id}"),
            || async {
                let docs = self.documents(filter.clone()).await;
                (docs.len() >= count).then_some(docs)
            },
        )
        .await
    }

    /// Mails in the Maildir addressed to `recipient` (by the sink's `X-RcptTo`).
    pub fn mails_to(&self, recipient: &str) -> Vec<ReceivedMail> {
        let mut index = self.mail_index.lock().expect("index");
        let mut found = Vec::new();
        for sub in ["new", "cur"] {
            let Ok(entries) = std::fs::read_dir(maildir().join(sub)) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let rcpt = match index.get(&path) {
                    Some(rcpt) => rcpt.clone(),
                    None => {
                        let Some(rcpt) = read_rcpt_to(&path) else {
                            continue;
                        };
                        index.insert(path.clone(), rcpt.clone());
                        rcpt
                    }
                };
                if rcpt
                    .split(',')
                    .any(|r| r.trim().eq_ignore_ascii_case(recipient))
                {
                    if let Ok(raw) = std::fs::read(&path) {
                        found.push(ReceivedMail::parse(raw));
                    }
                }
            }
        }
        found
    }

    /// Polls until at least `count` mails reached `recipient`.
    pub async fn wait_for_mails(&self, recipient: &str, count: usize) -> Vec<ReceivedMail> {
        eventually(&format!("{count} mail(s) to {recipient}"), || async {
            let mails = self.mails_to(recipient);
            (mails.len() >= count).then_some(mails)
        })
        .await
    }

    /// Dead letters on this test's dead-letter topic.
    pub async fn wait_for_dead_letter(&self, payload: &[u8]) -> DeadLetter {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.settings.kafka.brokers)
            .set("group.id", format!("dlq-reader-{}", Uuid::new_v4()))
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        consumer
            .subscribe(&[self.topics.dead_letter.as_str()])
            .expect("subscribe");
        let deadline = Instant::now() + DEADLINE;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            assert!(
                !remaining.is_zero(),
                "no dead letter with the poison payload within {DEADLINE:?}"
            );
            if let Ok(Ok(message)) = tokio::time::timeout(remaining, consumer.recv()).await {
                if let Some(letter) = DeadLetter::from_dead_letter_message(&message) {
                    if letter.payload == payload {
                        return letter;
                    }
                }
            }
        }
    }
}

/// Another notifier instance (see [`TestApp::start_another`]).
pub struct Instance {
    token: CancellationToken,
    handle: JoinHandle<anyhow::Result<()>>,
}

impl Instance {
    pub async fn stop(self) {
        self.token.cancel();
        tokio::time::timeout(Duration::from_secs(60), self.handle)
            .await
            .expect("the instance stops within 60 s")
            .expect("no panic")
            .expect("stops cleanly");
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some((token, _)) = self.running.take() {
            token.cancel();
        }
    }
}

fn read_rcpt_to(path: &std::path::Path) -> Option<String> {
    use std::io::Read;
    let mut head = vec![0u8; 2048];
    let mut file = std::fs::File::open(path).ok()?;
    let n = file.read(&mut head).ok()?;
    let head = String::from_utf8_lossy(&head[..n]);
    head.lines()
        .find_map(|line| line.strip_prefix("X-RcptTo:"))
        .map(|v| v.trim().to_owned())
}

/// One received mail, parsed.
#[derive(Debug, Clone)]
pub struct ReceivedMail {
    pub subject: String,
    pub message_id: String,
    pub from: String,
    pub to: String,
    pub has_date: bool,
    pub content_type: String,
    pub text: String,
    pub html: String,
}

impl ReceivedMail {
    fn parse(raw: Vec<u8>) -> Self {
        use mail_parser::MimeHeaders;
        let message = mail_parser::MessageParser::default()
            .parse(&raw)
            .expect("a parseable mail");
        let address = |a: Option<&mail_parser::Address<'_>>| {
            a.and_then(|a| a.first())
                .and_then(|a| a.address())
                .unwrap_or_default()
                .to_owned()
        };
        let ct = message.root_part().content_type();
        let content_type = ct
            .map(|ct| format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or_default()))
            .unwrap_or_default();
        let part_of = |kind: &str| {
            message
                .parts
                .iter()
                .find(|part| {
                    part.content_type()
                        .is_some_and(|ct| ct.ctype() == "text" && ct.subtype() == Some(kind))
                })
                .and_then(|part| part.text_contents())
                .unwrap_or_default()
                .to_owned()
        };
        Self {
            subject: message.subject().unwrap_or_default().to_owned(),
            message_id: message.message_id().unwrap_or_default().to_owned(),
            from: address(message.from()),
            to: address(message.to()),
            has_date: message.date().is_some(),
            content_type,
            text: part_of("plain"),
            html: part_of("html"),
        }
    }
}

/// Polls `check` every 100 ms until it returns `Some`, failing after [`DEADLINE`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {DEADLINE:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls `check` every 100 ms until it returns `Ok`; `Err(Stalled)` reports how far the
/// work has got. Fails once `progress` has not grown for [`DEADLINE`]: a long burst on a
/// slow machine may take as long as it needs while it moves, and work that stopped for
/// good (a lost mail) still fails the test.
pub async fn eventually_while_progressing<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Stalled>>,
{
    let mut best = 0;
    let mut stalled_since = Instant::now();
    loop {
        let state = match check().await {
            Ok(value) => return value,
            Err(state) => state,
        };
        if state.progress > best {
            best = state.progress;
            stalled_since = Instant::now();
        }
        assert!(
            stalled_since.elapsed() < DEADLINE,
            "no progress for {DEADLINE:?} waiting for {what} (stuck at {best}): {}",
            state.detail
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How far unfinished work has got, and what a failure message should say about it.
pub struct Stalled {
    pub progress: usize,
    pub detail: String,
}

// ---------------------------------------------------------------------------------
// Events

pub fn unique_recipient(prefix: &str) -> String {
    format!("{prefix}-{}@example.com", Uuid::new_v4().simple())
}

pub fn snapshot(email: &str, locale: &str, item: &str) -> OrderSnapshot {
    OrderSnapshot {
        customer_id: "customer-42".into(),
        customer_email: email.into(),
        locale: locale.into(),
        items: vec![
            LineItem {
                name: item.into(),
                quantity: 2,
                unit_price: 4500,
            },
            LineItem {
                name: "Tumbler".into(),
                quantity: 1,
                unit_price: 23_000,
            },
        ],
        total_amount: 32_000,
    }
}

pub fn order_placed(order_id: Uuid, order: &OrderSnapshot) -> Event {
    Event::new(
        order_id,
        None,
        OrderPlaced {
            order: order.clone(),
            payment_deadline: Utc::now(),
        },
    )
}

pub fn payment_approved(order_id: Uuid, order: &OrderSnapshot) -> Event {
    Event::new(
        order_id,
        None,
        PaymentApproved {
            payment_id: Uuid::now_v7(),
            tid: "T0000000000000000001".into(),
            amount: order.total_amount,
            payment_method: Some("MONEY".into()),
            approved_at: Utc::now(),
            order: order.clone(),
        },
    )
}

pub fn order_completed(order_id: Uuid, order: &OrderSnapshot) -> Event {
    Event::new(
        order_id,
        None,
        OrderCompleted {
            order: order.clone(),
            payment_id: Uuid::now_v7(),
            completed_at: Utc::now(),
        },
    )
}

pub fn order_cancelled(order_id: Uuid, order: &OrderSnapshot, refunded: Option<i64>) -> Event {
    Event::new(
        order_id,
        None,
        OrderCancelled {
            order: order.clone(),
            reason: if refunded.is_some() {
                CancelReason::CancelledByShopper
            } else {
                CancelReason::PaymentDeclined
            },
            refunded_amount: refunded,
            cancelled_at: Utc::now(),
        },
    )
}

/// Polls `/readyz` until it answers 200: `build` returns once the port is bound, while
/// the MongoDB indexes and Kafka topics are still being made.
pub async fn until_ready(http: &reqwest::Client, port: u16) {
    let url = format!("http://127.0.0.1:{port}/readyz");
    let started = Instant::now();
    loop {
        if let Ok(response) = http.get(&url).send().await {
            if response.status().is_success() {
                return;
            }
        }
        assert!(
            started.elapsed() < DEADLINE,
            "the notifier was not ready within {DEADLINE:?} (are the servers up? `infra/stack deps`)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
