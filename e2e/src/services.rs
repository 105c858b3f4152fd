//! Starting, stopping and restarting the services in-process.

use crate::Infra;
use anyhow::Context;
use clap::Parser;
use kakaopay::sim::SimHandle;
use secrecy::{ExposeSecret, SecretString};
use std::net::TcpListener;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Everything the services of one stack share: ports (kept across restarts, so URLs
/// handed out before a restart still work), databases, topics and the simulator.
#[derive(Clone)]
pub(crate) struct Plan {
    infra: Infra,
    id: String,
    sim_url: url::Url,
    sim_secret: SecretString,
    order_port: u16,
    payment_port: u16,
    notifier_port: u16,
    pub(crate) notifier_token: String,
    /// The operators' token of payment's look-ups (`PAYMENT_API_TOKEN`).
    pub(crate) payment_token: String,
    /// Case 1: the secret order, payment and the mail service sign their events with.
    pub(crate) internal_secret: String,
    pub(crate) options: Options,
    /// Bumped by a replay: new consumer groups start from the first offset.
    generation: u32,
}

/// Per-test tuning of the services.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// How long an order may wait for its payment (default: the services' 15 minutes).
    pub payment_deadline: Option<std::time::Duration>,
    /// Short gateway timeouts and a frequent reconciler, so a payment stuck mid-call is
    /// settled within seconds.
    pub fast_reconcile: bool,
    /// Which of the seed's architectures to run (default: case 3, the product). Cases 1
    /// and 2 run the blocking mail service (history in PostgreSQL) in the notifier's place.
    pub case: shared_events::Case,
}

impl Plan {
    pub(crate) fn new(
        infra: &Infra,
        id: &str,
        sim: &SimHandle,
        options: Options,
    ) -> anyhow::Result<Self> {
        for database in databases(options.case) {
            shared_events::db::create_database(
                &format!("{}/postgres", infra.postgres_url),
                &format!("{database}_{id}"),
            )
            .with_context(|| format!("creating database {database}_{id}"))?;
        }
        Ok(Self {
            infra: infra.clone(),
            id: id.to_owned(),
            sim_url: sim.base_url.clone(),
            sim_secret: sim.client_config().secret_key,
            order_port: free_port()?,
            payment_port: free_port()?,
            notifier_port: free_port()?,
            notifier_token: format!("token-{id}"),
            payment_token: format!("payment-token-{id}"),
            internal_secret: format!("internal-{}", uuid::Uuid::new_v4().simple()),
            options,
            generation: 0,
        })
    }

    /// Consumer group of `service` (new after a replay).
    fn group(&self, service: &str) -> String {
        format!("{service}-{}-g{}", self.id, self.generation)
    }

    /// From now on, services start in new consumer groups, reading every topic again.
    pub(crate) fn replay(&mut self) {
        self.generation += 1;
    }

    fn url(&self, port: u16) -> anyhow::Result<url::Url> {
        Ok(format!("http://127.0.0.1:{port}").parse()?)
    }

    fn topic_prefix(&self) -> String {
        format!("t{}.", self.id)
    }
}

/// The stack's PostgreSQL databases (the blocking mail service keeps its history in one).
fn databases(case: shared_events::Case) -> &'static [&'static str] {
    if case.blocking_mail() {
        &["orders", "payments", "mail"]
    } else {
        &["orders", "payments"]
    }
}

pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub(crate) fn database_url(infra: &Infra, database: &str, id: &str) -> String {
    format!("{}/{database}_{id}", infra.postgres_url)
}

/// Drops the stack's databases (connections still open are terminated).
pub(crate) fn drop_databases(infra: &Infra, id: &str) {
    use diesel::{Connection, RunQueryDsl};
    let Ok(mut conn) = diesel::PgConnection::establish(&format!("{}/postgres", infra.postgres_url))
    else {
        return;
    };
    for database in ["orders", "payments", "mail"] {
        let sql = format!("DROP DATABASE IF EXISTS \"{database}_{id}\" WITH (FORCE)");
        if let Err(error) = diesel::sql_query(sql).execute(&mut conn) {
            tracing::warn!(%error, "Could not drop a test database.");
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Order,
    Payment,
    Notifier,
}

/// One running service.
pub struct Service {
    kind: Kind,
    plan: Plan,
    port: u16,
    shutdown: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Service {
    pub(crate) async fn start(kind: Kind, plan: Plan) -> anyhow::Result<Self> {
        Self::start_on(kind, plan, None).await
    }

    /// Starts a service; `port` overrides the plan's (a second instance).
    pub(crate) async fn start_on(
        kind: Kind,
        mut plan: Plan,
        port: Option<u16>,
    ) -> anyhow::Result<Self> {
        if let Some(port) = port {
            match kind {
                Kind::Order => plan.order_port = port,
                Kind::Payment => plan.payment_port = port,
                Kind::Notifier => plan.notifier_port = port,
            }
        }
        let (port, shutdown, task) = launch(kind, &plan).await?;
        Ok(Self {
            kind,
            plan,
            port,
            shutdown,
            task: Some(task),
        })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the service gracefully and waits until it has.
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    tracing::warn!(?self.kind, %error, "Service stopped with an error.")
                }
                Err(error) => tracing::warn!(?self.kind, %error, "Service task failed."),
            }
        }
    }

    /// Starts the service again, on the same port, with the same databases and topics.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        self.launch().await
    }

    pub(crate) fn set_plan(&mut self, plan: Plan) {
        self.plan = plan;
    }

    async fn launch(&mut self) -> anyhow::Result<()> {
        let (port, shutdown, task) = launch(self.kind, &self.plan).await?;
        self.port = port;
        self.shutdown = shutdown;
        self.task = Some(task);
        Ok(())
    }
}

type Launched = (u16, CancellationToken, JoinHandle<anyhow::Result<()>>);

/// Starts the service and waits until it is ready: `build` returns once the port is
/// bound, while migrations and topics are still under way.
async fn launch(kind: Kind, plan: &Plan) -> anyhow::Result<Launched> {
    let launched = build(kind, plan).await?;
    until_ready(launched.0).await?;
    Ok(launched)
}

/// Polls `/readyz` until it answers 200 (at most 60 s).
async fn until_ready(port: u16) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/readyz");
    let started = std::time::Instant::now();
    loop {
        let ready = http
            .get(&url)
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .is_ok_and(|response| response.status().is_success());
        if ready {
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(60),
            "{url} not ready after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn build(kind: Kind, plan: &Plan) -> anyhow::Result<Launched> {
    let running = match kind {
        Kind::Order => order::startup::Application::build(order_settings(plan)?).await?,
        Kind::Payment => payment::startup::Application::build(payment_settings(plan)?).await?,
        Kind::Notifier if plan.options.case.blocking_mail() => {
            let app = mailer_blocking::MailerApp::build(mailer_settings(plan)?).await?;
            return Ok((
                app.port(),
                app.shutdown_token(),
                tokio::spawn(app.run_until_stopped()),
            ));
        }
        Kind::Notifier => notifier::Application::build(notifier_settings(plan)?).await?,
    };
    Ok((
        running.port(),
        running.shutdown_token(),
        tokio::spawn(running.run_until_stopped()),
    ))
}

fn order_settings(plan: &Plan) -> anyhow::Result<order::config::Settings> {
    let mut settings = order::config::Settings::try_parse_from(["order"])?;
    settings.port = plan.order_port;
    settings.database_url = database_url(&plan.infra, "orders", &plan.id).into();
    settings.consumer_group = plan.group("order");
    settings.metrics_refresh_ms = 1000;
    // The tests' orders carry free-form lines (a name with markup tests the mails'
    // escaping); the catalog's own tests run order-service's default.
    settings.allow_custom_items = true;
    settings.case = plan.options.case;
    settings.payment_url = plan.url(plan.payment_port)?;
    settings.mailer_url = plan.url(plan.notifier_port)?;
    settings.internal_events_secret = Some(plan.internal_secret.clone().into());
    settings.mail_history_url = plan.url(plan.notifier_port)?;
    settings.mail_history_token = Some(plan.notifier_token.clone().into());
    if let Some(deadline) = plan.options.payment_deadline {
        settings.payment_deadline_secs = deadline.as_secs().max(1);
        settings.deadline_check_ms = 100;
    }
    settings.kafka = plan.infra.kafka(&plan.topic_prefix());
    Ok(settings)
}

fn payment_settings(plan: &Plan) -> anyhow::Result<payment::config::Settings> {
    let secret = plan.sim_secret.expose_secret().to_owned();
    let mut settings =
        payment::config::Settings::try_parse_from(["payment", "--kakaopay-secret-key", &secret])?;
    settings.port = plan.payment_port;
    settings.public_url = format!("http://127.0.0.1:{}", plan.payment_port).parse()?;
    settings.storefront_url = plan.url(plan.order_port)?;
    settings.database_url = database_url(&plan.infra, "payments", &plan.id).into();
    settings.consumer_group = plan.group("payment");
    settings.kakaopay_base_url = plan.sim_url.clone();
    settings.gateway_backoff_ms = 50;
    if plan.options.fast_reconcile {
        settings.kakaopay_timeout_ms = 1_000;
        settings.gateway_max_attempts = 2;
        settings.reconcile_ms = 200;
    }
    settings.metrics_refresh_ms = 1000;
    settings.case = plan.options.case;
    settings.order_url = plan.url(plan.order_port)?;
    settings.mailer_url = plan.url(plan.notifier_port)?;
    settings.internal_events_secret = Some(plan.internal_secret.clone().into());
    settings.api_token = Some(plan.payment_token.clone().into());
    settings.kafka = plan.infra.kafka(&plan.topic_prefix());
    Ok(settings)
}

fn mailer_settings(plan: &Plan) -> anyhow::Result<mailer_blocking::MailerSettings> {
    let mut settings = mailer_blocking::MailerSettings::try_parse_from(["mailer-blocking"])?;
    settings.case = plan.options.case;
    settings.port = plan.notifier_port;
    settings.database_url = database_url(&plan.infra, "mail", &plan.id).into();
    settings.consumer_group = plan.group("mailer");
    settings.mail.smtp_host = plan.infra.smtp_host.clone();
    settings.mail.smtp_port = plan.infra.smtp_port;
    settings.mail.api_token = Some(plan.notifier_token.clone().into());
    settings.internal_events_secret = Some(plan.internal_secret.clone().into());
    settings.kafka = plan.infra.kafka(&plan.topic_prefix());
    Ok(settings)
}

fn notifier_settings(plan: &Plan) -> anyhow::Result<notifier::settings::Settings> {
    let mut settings = notifier::settings::Settings::try_parse_from(["notifier"])?;
    settings.port = plan.notifier_port;
    settings.consumer_group = plan.group("notifier");
    settings.mongodb_uri = plan.infra.mongodb_uri.clone();
    settings.mongodb_database = format!("notifier_{}", plan.id);
    settings.mail.smtp_host = plan.infra.smtp_host.clone();
    settings.mail.smtp_port = plan.infra.smtp_port;
    settings.mail.api_token = Some(plan.notifier_token.clone().into());
    settings.kafka = plan.infra.kafka(&plan.topic_prefix());
    Ok(settings)
}

impl Plan {
    /// Whether the stack has nothing left to do for mail: order's and payment's outboxes
    /// hold no undelivered event, and (with Kafka) the mail service's consumer group has
    /// committed every message of the order and payment topics. No mail can follow then
    /// but one the services would send without an event, which is the bug an exact count
    /// catches.
    pub(crate) async fn mail_is_quiet(&self) -> anyhow::Result<bool> {
        for database in ["orders", "payments"] {
            if undelivered_events(&database_url(&self.infra, database, &self.id))? > 0 {
                return Ok(false);
            }
        }
        if !self.options.case.uses_kafka() {
            return Ok(true);
        }
        let service = if self.options.case.blocking_mail() {
            "mailer"
        } else {
            "notifier"
        };
        let (brokers, group) = (self.infra.kafka_brokers.clone(), self.group(service));
        let topics = shared_events::Topics::with_prefix(&self.topic_prefix());
        tokio::task::spawn_blocking(move || {
            group_has_committed_everything(&brokers, &group, &[&topics.orders, &topics.payments])
        })
        .await?
    }
}

/// Outbox rows of the database at `url` not yet delivered.
fn undelivered_events(url: &str) -> anyhow::Result<i64> {
    use diesel::{Connection, RunQueryDsl};
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        count: i64,
    }
    let mut conn = diesel::PgConnection::establish(url)?;
    let row: Count =
        diesel::sql_query("SELECT count(*) AS count FROM outbox WHERE published_at IS NULL")
            .get_result(&mut conn)?;
    Ok(row.count)
}

/// Whether `group`'s committed offset is at the end of every partition of `topics`.
fn group_has_committed_everything(
    brokers: &str,
    group: &str,
    topics: &[&str],
) -> anyhow::Result<bool> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{ClientConfig, Offset, TopicPartitionList};
    let timeout = std::time::Duration::from_secs(5);
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()?;
    let mut partitions = TopicPartitionList::new();
    let metadata = consumer.fetch_metadata(None, timeout)?;
    for topic in metadata
        .topics()
        .iter()
        .filter(|t| topics.contains(&t.name()))
    {
        for partition in topic.partitions() {
            partitions.add_partition(topic.name(), partition.id());
        }
    }
    let committed = consumer.committed_offsets(partitions, timeout)?;
    for element in committed.elements() {
        let (_, high) = consumer.fetch_watermarks(element.topic(), element.partition(), timeout)?;
        let caught_up = match element.offset() {
            Offset::Offset(offset) => offset >= high,
            _ => high == 0,
        };
        if !caught_up {
            return Ok(false);
        }
    }
    Ok(true)
}
