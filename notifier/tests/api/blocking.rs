//! The blocking mail service of cases 1 and 2 (`mailer-blocking`) against the real
//! servers: PostgreSQL for its history, the SMTP sink (whose `tempfail…` recipients get
//! 451 and `reject…` ones 550) and, in case 2, Kafka. Every test starts the service as
//! the binary does, on a fresh database, and checks what a user sees: mails in the
//! Maildir and the history the API serves from PostgreSQL.

use crate::helpers::*;
use clap::Parser;
use mailer_blocking::{MailerApp, MailerSettings};
use serde_json::Value;
use shared_events::chain::{EventSigner, SIGNATURE_HEADER};
use shared_events::kafka::{DeadLetter, KafkaSettings};
use shared_events::{Case, Event};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Case 1: the secret order and payment would sign their events with.
const INTERNAL_SECRET: &str = "mailer-test-internal-secret";

fn postgres_url() -> String {
    std::env::var("POSTGRES_URL")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432".to_owned())
}

struct Mailer {
    url: String,
    port: u16,
    settings: MailerSettings,
    database: String,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
    http: reqwest::Client,
}

/// [`start_mailer`], once `/readyz` answers 200.
async fn spawn_mailer(case: Case, customize: impl FnOnce(&mut MailerSettings)) -> Mailer {
    let mailer = start_mailer(case, customize).await;
    until_ready(&mailer.http, mailer.port).await;
    mailer
}

/// The service as `main` starts it: bound and answering `/healthz`, maybe not ready yet.
async fn start_mailer(case: Case, customize: impl FnOnce(&mut MailerSettings)) -> Mailer {
    require_servers();
    let id = Uuid::new_v4().simple().to_string()[..12].to_owned();
    let database = format!("mail_test_{id}");
    shared_events::db::create_database(&format!("{}/postgres", postgres_url()), &database)
        .expect("creating the test database");
    let mut settings = MailerSettings::try_parse_from(["mailer-blocking"]).expect("defaults");
    settings.case = case;
    settings.port = 0;
    settings.database_url = format!("{}/{database}", postgres_url()).into();
    settings.consumer_group = format!("mailer-{id}");
    settings.kafka = KafkaSettings::local(&kafka_brokers(), &format!("b{id}."));
    settings.mail.smtp_host = smtp_host();
    settings.mail.smtp_port = smtp_port();
    settings.mail.api_token = Some(TOKEN.into());
    settings.internal_events_secret = Some(INTERNAL_SECRET.into());
    settings.mail_retry_initial_ms = 100;
    settings.mail_retry_max_ms = 400;
    customize(&mut settings);
    let app = MailerApp::build(settings.clone())
        .await
        .expect("the mail service starts");
    let port = app.port();
    let url = format!("http://127.0.0.1:{port}");
    let shutdown = app.shutdown_token();
    let task = tokio::spawn(app.run_until_stopped());
    Mailer {
        url,
        port,
        settings,
        database,
        shutdown,
        task,
        http: reqwest::Client::new(),
    }
}

impl Mailer {
    async fn publish(&self, event: &Event) {
        let producer = self.settings.kafka.producer().expect("producer");
        shared_events::kafka::publish(&producer, &self.settings.kafka.topics(), event)
            .await
            .expect("published");
    }

    /// Case 1's input, signed as order and payment sign it.
    async fn post_event(&self, body: &[u8]) -> reqwest::Response {
        let signer = EventSigner::new(INTERNAL_SECRET).expect("a long secret");
        self.post_signed(body, Some(&signer.sign(body))).await
    }

    /// Case 1's input with `signature` (or none) as `X-Saga-Signature`.
    async fn post_signed(&self, body: &[u8], signature: Option<&str>) -> reqwest::Response {
        let mut request = self
            .http
            .post(format!("{}/internal/events", self.url))
            .header("content-type", "application/json")
            .body(body.to_vec());
        if let Some(signature) = signature {
            request = request.header(SIGNATURE_HEADER, signature);
        }
        request.send().await.expect("the mail service answers")
    }

    async fn history(&self, order_id: Uuid) -> Vec<Value> {
        let response = self
            .http
            .get(format!("{}/notifications?order_id={order_id}", self.url))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("the mail service answers");
        assert_eq!(response.status(), 200);
        let mut page: Value = response.json().await.expect("JSON");
        match page["items"].take() {
            Value::Array(items) => items,
            other => panic!("no items: {other}"),
        }
    }

    /// Waits until the order has `count` records, all SENT or FAILED.
    async fn final_history(&self, order_id: Uuid, count: usize) -> Vec<Value> {
        eventually(&format!("{count} finished record(s)"), || async {
            let history = self.history(order_id).await;
            (history.len() == count
                && history
                    .iter()
                    .all(|n| n["status"] == "SENT" || n["status"] == "FAILED"))
            .then_some(history)
        })
        .await
    }

    async fn finish(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
        drop_database(&self.database);
    }
}

fn drop_database(name: &str) {
    use diesel::{Connection, RunQueryDsl};
    if let Ok(mut conn) = diesel::PgConnection::establish(&format!("{}/postgres", postgres_url())) {
        let _ = diesel::sql_query(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .execute(&mut conn);
    }
}

/// Mails in the shared sink's Maildir addressed to `recipient`.
fn mails_to(recipient: &str) -> usize {
    mails_in(&maildir(), recipient)
}

/// Mails in `maildir` addressed to `recipient` (the sink's `X-RcptTo` header).
fn mails_in(maildir: &std::path::Path, recipient: &str) -> usize {
    let needle = format!("X-RcptTo: {recipient}");
    ["new", "cur"]
        .iter()
        .filter_map(|sub| std::fs::read_dir(maildir.join(sub)).ok())
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|entry| std::fs::read_to_string(entry.path()).ok())
        .filter(|raw| raw.lines().any(|line| line.eq_ignore_ascii_case(&needle)))
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn case_2_mails_each_event_once_and_keeps_the_history_in_postgres() {
    let mailer = spawn_mailer(Case::KafkaBlockingMail, |_| {}).await;
    let email = unique_recipient("blocking");
    let order_id = Uuid::now_v7();
    let order = snapshot(&email, "ko", "Pie");
    let approved = payment_approved(order_id, &order);
    mailer.publish(&order_placed(order_id, &order)).await; // needs no mail
    mailer.publish(&approved).await;
    mailer.publish(&order_completed(order_id, &order)).await;
    mailer.publish(&approved).await; // a redelivery

    let history = mailer.final_history(order_id, 2).await;
    assert!(history
        .iter()
        .all(|n| n["status"] == "SENT" && n["attempts"] == 1 && n["recipient"] == email.as_str()));
    let mut types: Vec<&str> = history.iter().filter_map(|n| n["type"].as_str()).collect();
    types.sort_unstable();
    assert_eq!(types, ["order_completed", "payment_completed"]);
    eventually("both mails in the Maildir", || async {
        (mails_to(&email) == 2).then_some(())
    })
    .await;
    // The redelivered event was consumed (a later event went through) and sent nothing.
    let later = unique_recipient("later");
    let later_order = Uuid::now_v7();
    mailer
        .publish(&order_completed(
            later_order,
            &snapshot(&later, "en", "Tart"),
        ))
        .await;
    mailer.final_history(later_order, 1).await;
    assert_eq!(mails_to(&email), 2, "no mail twice");
    mailer.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_451_is_retried_with_backoff_then_failed_and_a_550_fails_at_once() {
    let mailer = spawn_mailer(Case::KafkaBlockingMail, |s| s.mail_max_attempts = 3).await;
    let flaky = unique_recipient("tempfail");
    let flaky_order = Uuid::now_v7();
    mailer
        .publish(&order_completed(
            flaky_order,
            &snapshot(&flaky, "en", "Pie"),
        ))
        .await;
    let rejected = unique_recipient("reject");
    let rejected_order = Uuid::now_v7();
    mailer
        .publish(&order_completed(
            rejected_order,
            &snapshot(&rejected, "en", "Pie"),
        ))
        .await;

    let flaky_record = &mailer.final_history(flaky_order, 1).await[0];
    assert_eq!(flaky_record["status"], "FAILED");
    assert_eq!(flaky_record["attempts"], 3, "retried up to the limit");
    let error = flaky_record["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("gave up after 3 attempts") && error.contains("451"),
        "{error}"
    );

    let rejected_record = &mailer.final_history(rejected_order, 1).await[0];
    assert_eq!(rejected_record["status"], "FAILED");
    assert_eq!(rejected_record["attempts"], 1, "a 5xx is not retried");
    let error = rejected_record["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("550"), "{error}");
    assert_eq!(mails_to(&flaky) + mails_to(&rejected), 0);

    mailer.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn case_2_dead_letters_a_poison_message_and_keeps_mailing() {
    let mailer = spawn_mailer(Case::KafkaBlockingMail, |_| {}).await;
    let topics = mailer.settings.kafka.topics();
    let producer = mailer.settings.kafka.producer().expect("producer");
    let poison = format!("{{\"not\": \"an event {}\"}}", Uuid::new_v4());
    producer
        .send(
            rdkafka::producer::FutureRecord::to(&topics.orders)
                .key("poison")
                .payload(poison.as_bytes()),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .expect("published");
    let email = unique_recipient("after-poison");
    let order_id = Uuid::now_v7();
    mailer
        .publish(&order_completed(order_id, &snapshot(&email, "ko", "Pie")))
        .await;
    mailer.final_history(order_id, 1).await;

    let letters = tokio::task::spawn_blocking({
        let kafka = mailer.settings.kafka.clone();
        move || shared_events::kafka::dead_letter_tools::read_all(&kafka, Duration::from_secs(10))
    })
    .await
    .expect("task")
    .expect("dead letters readable");
    let letter: &DeadLetter = letters
        .iter()
        .find(|l| l.payload == poison.as_bytes())
        .expect("the poison message was dead-lettered");
    assert_eq!(letter.source_topic, topics.orders);
    assert!(
        letter.reason.contains("not a valid event"),
        "{}",
        letter.reason
    );
    mailer.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn case_1_takes_events_over_http_once_each_and_refuses_garbage() {
    let mailer = spawn_mailer(Case::SyncChain, |_| {}).await;
    let email = unique_recipient("http");
    let order_id = Uuid::now_v7();
    let event = order_completed(order_id, &snapshot(&email, "en", "Pie"));
    let body = event.to_json();

    // Both deliveries at once (the relay retrying while the first still runs).
    let (first, second) = tokio::join!(
        mailer.post_event(body.as_bytes()),
        mailer.post_event(body.as_bytes())
    );
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    let mut outcomes = vec![
        first.json::<Value>().await.expect("JSON")["outcome"].clone(),
        second.json::<Value>().await.expect("JSON")["outcome"].clone(),
    ];
    outcomes.sort_by_key(|o| o.to_string());
    assert_eq!(outcomes, ["duplicate", "sent"]);
    // Answered after the mail was sent and recorded.
    assert_eq!(mails_to(&email), 1);
    let history = mailer.history(order_id).await;
    assert_eq!(history.len(), 1);
    assert_eq!(history[0]["status"], "SENT");

    let garbage = mailer.post_event(b"{\"event_type\": 5}").await;
    assert_eq!(garbage.status(), 400);
    assert_eq!(
        garbage.headers()["content-type"],
        "application/problem+json"
    );
    let unauthorized = mailer
        .http
        .get(format!("{}/notifications?order_id={order_id}", mailer.url))
        .send()
        .await
        .expect("answers");
    assert_eq!(unauthorized.status(), 401);
    mailer.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn case_1_refuses_events_not_signed_with_the_services_secret_and_mails_nothing() {
    let mailer = spawn_mailer(Case::SyncChain, |_| {}).await;
    let email = unique_recipient("forged");
    let order_id = Uuid::now_v7();
    let body = order_completed(order_id, &snapshot(&email, "en", "Pie")).to_json();
    let stranger = EventSigner::new("not-the-services-secret").expect("a long secret");
    let forged = [
        None,
        Some("sha256=00".to_owned()),
        Some(stranger.sign(body.as_bytes())),
    ];
    for signature in forged {
        let response = mailer
            .post_signed(body.as_bytes(), signature.as_deref())
            .await;
        assert_eq!(response.status(), 401, "signature {signature:?}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
    }
    // The same event, signed with the services' secret, is the first one mailed.
    let genuine = mailer.post_event(body.as_bytes()).await;
    assert_eq!(genuine.status(), 200);
    let history = mailer.history(order_id).await;
    assert_eq!(history.len(), 1, "only the signed delivery was recorded");
    assert_eq!(mails_to(&email), 1, "only the signed delivery was mailed");
    mailer.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn case_1_without_a_secret_refuses_to_start() {
    require_servers();
    let mut settings = MailerSettings::try_parse_from(["mailer-blocking"]).expect("defaults");
    settings.case = Case::SyncChain;
    settings.port = 0;
    settings.mail.api_token = Some(TOKEN.into());
    settings.internal_events_secret = None;
    let error = match MailerApp::build(settings).await {
        Ok(_) => panic!("case 1 started without INTERNAL_EVENTS_SECRET"),
        Err(error) => format!("{error:#}"),
    };
    assert!(error.contains("INTERNAL_EVENTS_SECRET"), "{error}");
}

/// Started while its database cannot be reached (here: not created yet), the service
/// answers `/healthz`, says in `/readyz` what it waits for, refuses case 1's events with
/// 503 (the sender retries) and, once the database is there, migrates it and mails.
#[tokio::test(flavor = "multi_thread")]
async fn started_before_its_database_exists_it_waits_then_mails() {
    let late = format!("mail_late_{}", &Uuid::new_v4().simple().to_string()[..12]);
    let late_url = format!("{}/{late}", postgres_url());
    let mailer = start_mailer(Case::SyncChain, |s| s.database_url = late_url.into()).await;
    let get = |path: &str| mailer.http.get(format!("{}{path}", mailer.url)).send();
    assert_eq!(get("/healthz").await.expect("answers").status(), 200);
    let readyz = get("/readyz").await.expect("answers");
    assert_eq!(readyz.status(), 503);
    let body: Value = readyz.json().await.expect("JSON");
    assert_eq!(body["waiting_for"], "the mail database (migrations)");

    let email = unique_recipient("late-db");
    let order_id = Uuid::now_v7();
    let body = order_completed(order_id, &snapshot(&email, "en", "Pie")).to_json();
    assert_eq!(mailer.post_event(body.as_bytes()).await.status(), 503);
    assert_eq!(mails_to(&email), 0, "nothing mailed while it cannot record");

    shared_events::db::create_database(&format!("{}/postgres", postgres_url()), &late)
        .expect("creating the database");
    until_ready(&mailer.http, mailer.port).await;
    let sent = mailer.post_event(body.as_bytes()).await;
    assert_eq!(sent.status(), 200);
    assert_eq!(mails_to(&email), 1);
    assert_eq!(mailer.history(order_id).await[0]["status"], "SENT");
    mailer.finish().await;
    drop_database(&late);
}

/// An SMTP server that is away, then comes back: a port with nothing listening, on
/// which [`SmtpOutage::end`] starts the project's SMTP sink (`infra/smtp_sink.py`, a real
/// aiosmtpd server) with a Maildir of its own.
struct SmtpOutage {
    port: u16,
    maildir: std::path::PathBuf,
    sink: Option<std::process::Child>,
}

impl SmtpOutage {
    fn begin() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        Self {
            port,
            maildir: std::env::temp_dir().join(format!("smtp-outage-{}", Uuid::new_v4().simple())),
            sink: None,
        }
    }

    /// Starts the sink on the port and waits until it takes connections.
    async fn end(&mut self) {
        let venv = std::env::var_os("SAGA_CACHE_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| {
                std::path::Path::new(&std::env::var("HOME").expect("HOME")).join(".cache/saga-shop")
            })
            .join("venv/bin/python");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../infra/smtp_sink.py");
        let sink = std::process::Command::new(venv)
            .args([
                script,
                "--host",
                "127.0.0.1",
                "--port",
                &self.port.to_string(),
            ])
            .arg("--maildir")
            .arg(&self.maildir)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("the SMTP sink starts (run `infra/stack deps` for its venv)");
        self.sink = Some(sink);
        let address = format!("127.0.0.1:{}", self.port);
        eventually("the SMTP sink to listen", || async {
            tokio::net::TcpStream::connect(&address).await.ok()
        })
        .await;
    }

    /// Mails in the sink's own Maildir addressed to `recipient`.
    fn mails_to(&self, recipient: &str) -> usize {
        mails_in(&self.maildir, recipient)
    }
}

impl Drop for SmtpOutage {
    fn drop(&mut self) {
        if let Some(mut sink) = self.sink.take() {
            let _ = sink.kill();
            let _ = sink.wait();
        }
        let _ = std::fs::remove_dir_all(&self.maildir);
    }
}

/// The mail's one history record once it has been tried at least `attempts` times and
/// is still `RETRYING` (never `FAILED`).
async fn retrying(mailer: &Mailer, order_id: Uuid, attempts: i64) -> Value {
    eventually(
        &format!("a RETRYING record after {attempts} attempts"),
        || async {
            let history = mailer.history(order_id).await;
            assert!(
                history.iter().all(|n| n["status"] != "FAILED"),
                "a mail failed during the outage: {history:?}"
            );
            history
                .into_iter()
                .find(|n| n["status"] == "RETRYING" && n["attempts"].as_i64() >= Some(attempts))
        },
    )
    .await
}

/// More attempts than the budget the service once had (5): with the shipped
/// `MAILER_MAIL_MAX_ATTEMPTS` (no limit) the mail is still waiting, not failed.
const PAST_THE_OLD_BUDGET: i64 = 6;

#[tokio::test(flavor = "multi_thread")]
async fn case_2_a_mail_waits_out_an_smtp_outage_and_is_sent_once() {
    let mut outage = SmtpOutage::begin();
    let mailer = spawn_mailer(Case::KafkaBlockingMail, |s| s.mail.smtp_port = outage.port).await;
    let email = unique_recipient("outage2");
    let order_id = Uuid::now_v7();
    mailer
        .publish(&order_completed(order_id, &snapshot(&email, "en", "Pie")))
        .await;

    let waiting = retrying(&mailer, order_id, PAST_THE_OLD_BUDGET).await;
    assert!(waiting["last_error"]
        .as_str()
        .is_some_and(|e| !e.is_empty()));
    outage.end().await;
    let history = mailer.final_history(order_id, 1).await;
    assert_eq!(history[0]["status"], "SENT", "{history:?}");
    eventually("the mail in the Maildir", || async {
        (outage.mails_to(&email) == 1).then_some(())
    })
    .await;
    mailer.finish().await;
    assert_eq!(outage.mails_to(&email), 1, "sent once");
}

/// Case 1: the sender (order or payment's HTTP relay) is told `503` for as long as the
/// server is away, and the mail is sent on the first delivery after it is back.
#[tokio::test(flavor = "multi_thread")]
async fn case_1_a_mail_waits_out_an_smtp_outage_and_is_sent_once() {
    let mut outage = SmtpOutage::begin();
    let mailer = spawn_mailer(Case::SyncChain, |s| s.mail.smtp_port = outage.port).await;
    let email = unique_recipient("outage1");
    let order_id = Uuid::now_v7();
    let body = order_completed(order_id, &snapshot(&email, "en", "Pie")).to_json();

    for _ in 0..PAST_THE_OLD_BUDGET {
        let answer = mailer.post_event(body.as_bytes()).await;
        assert_eq!(answer.status(), 503, "retry later, while SMTP is away");
    }
    retrying(&mailer, order_id, PAST_THE_OLD_BUDGET).await;
    outage.end().await;
    let answer = mailer.post_event(body.as_bytes()).await;
    assert_eq!(answer.status(), 200);
    assert_eq!(
        answer.json::<Value>().await.expect("JSON")["outcome"],
        "sent"
    );
    assert_eq!(outage.mails_to(&email), 1, "answered once the mail is sent");
    let again = mailer.post_event(body.as_bytes()).await;
    assert_eq!(
        again.json::<Value>().await.expect("JSON")["outcome"],
        "duplicate"
    );
    assert_eq!(mailer.final_history(order_id, 1).await[0]["status"], "SENT");
    mailer.finish().await;
    assert_eq!(outage.mails_to(&email), 1, "sent once");
}
