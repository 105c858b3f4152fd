//! Building and running order-service: one `Application::build` used by `main` and by
//! the tests. It runs three things side by side — the HTTP API, the outbox relay and the
//! payment-event consumer — and stops them together, plus the listener that wakes
//! requests waiting for an order to change ([`crate::changes`]). In case 1 the relay and the
//! consumer are replaced by the HTTP chain ([`http_chain_outbox`]). It binds its port first
//! and waits, not ready, for PostgreSQL and Kafka ([`shared_events::readiness`]).

use crate::changes::Changes;
use crate::config::Settings;
use crate::payment_events::PaymentEvents;
use crate::persistence::OrderDb;
use crate::routes;
use crate::state::AppState;
use actix_web::web;
use anyhow::Context;
use secrecy::ExposeSecret;
use shared_events::chain::{self, EventSigner};
use shared_events::db::{self, PgPool};
use shared_events::http::{HttpApi, RunningService};
use shared_events::kafka::{ConsumerLoop, DeadLetterPublisher};
use shared_events::outbox::Outbox;
use shared_events::readiness::{
    migrate_then_create_topics, start_then_supervise, Readiness, Started,
};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// order-service's assembly; `build` returns the running service.
pub struct Application;

impl Application {
    /// Binds the API at once and starts the service's work in the background: the
    /// migrations, then (cases 2–4) the Kafka topics, relay and consumer, then the sweeps —
    /// each start-up step retried until its dependency answers, `/readyz` 503 meanwhile.
    pub async fn build(settings: Settings) -> anyhow::Result<RunningService> {
        let _ = shared_events::telemetry::metrics();
        crate::gauges::describe();
        let pool = db::build_pool(settings.database_url.expose_secret(), settings.db_pool_size);
        let db = crate::persistence::for_case(settings.case, &pool, &settings);
        let shutdown = CancellationToken::new();
        let readiness = Readiness::starting();
        let mut early_tasks = Vec::new();
        let outbox = if settings.case.uses_kafka() {
            Outbox::new(settings.kafka.topics())
        } else {
            http_chain_outbox(&settings, &pool, &shutdown, &mut early_tasks)?
        };
        let changes = Changes::new(settings.max_open_waits, shutdown.clone());
        let work = Work {
            settings: settings.clone(),
            pool: pool.clone(),
            db: db.clone(),
            outbox: outbox.clone(),
            changes: changes.clone(),
            readiness: readiness.clone(),
            shutdown: shutdown.clone(),
        };
        let tasks = vec![tokio::spawn(work.start_then_supervise(early_tasks))];
        let api = HttpApi {
            service: "order",
            host: settings.host.clone(),
            port: settings.port,
            workers: settings.http_workers,
            blocking_threads: settings.blocking_threads(),
            state: web::Data::new(AppState {
                pool,
                db,
                outbox,
                payment_deadline: Duration::from_secs(settings.payment_deadline_secs),
                changes,
                waits: crate::watch::WaitLimits::from(&settings),
                pricing: settings.pricing(),
                event_input: !settings.case.uses_kafka(),
                mail_history: crate::mail_history::MailHistory::new(
                    settings.mail_history_url.clone(),
                    settings.mail_history_token.clone(),
                ),
            }),
            readiness,
            // The shopper's routes check the order's own token (`access`), not an
            // operator's.
            operator_token: None,
            configure: if settings.case.uses_kafka() {
                routes::configure
            } else {
                routes::configure_with_event_input
            },
        };
        RunningService::start(api, shutdown, tasks)
    }
}

/// The service's background work and what it needs to start it.
struct Work {
    settings: Settings,
    pool: PgPool,
    db: OrderDb,
    outbox: Outbox,
    changes: Changes,
    readiness: Readiness,
    shutdown: CancellationToken,
}

impl Work {
    /// Runs the start-up steps and every background task (see
    /// `shared_events::readiness::start_then_supervise`).
    async fn start_then_supervise(self, tasks: Vec<tokio::task::JoinHandle<()>>) {
        let (readiness, shutdown) = (self.readiness.clone(), self.shutdown.clone());
        start_then_supervise("order", &readiness, &shutdown, tasks, self.start()).await;
    }

    /// `None` when shut down while waiting; `Err` for what waiting cannot cure (a bad
    /// setting).
    async fn start(&self) -> Started {
        let kafka = self
            .settings
            .case
            .uses_kafka()
            .then_some(&self.settings.kafka);
        migrate_then_create_topics(
            &self.readiness,
            &self.shutdown,
            "orders",
            &self.pool,
            || crate::MIGRATIONS,
            kafka,
        )
        .await?;
        let mut tasks = Vec::new();
        if kafka.is_some() {
            match kafka_tasks(
                &self.settings,
                &self.pool,
                &self.db,
                &self.outbox,
                &self.shutdown,
            ) {
                Ok(kafka) => tasks.extend(kafka),
                Err(error) => return Some(Err(error)),
            }
        }
        tasks.extend([
            tokio::spawn(crate::deadline::run(
                self.pool.clone(),
                self.outbox.clone(),
                Duration::from_millis(self.settings.deadline_check_ms),
                self.shutdown.clone(),
            )),
            tokio::spawn(crate::retention::run(
                self.pool.clone(),
                Duration::from_secs(self.settings.idempotency_key_ttl_secs),
                Duration::from_secs(300),
                self.shutdown.clone(),
            )),
            tokio::spawn(crate::gauges::run(
                self.pool.clone(),
                Duration::from_millis(self.settings.metrics_refresh_ms.max(100)),
                self.shutdown.clone(),
            )),
        ]);
        crate::changes::listen(
            self.pool.clone(),
            self.changes.clone(),
            self.shutdown.clone(),
        );
        Some(Ok(tasks))
    }
}

/// Cases 2–4: the outbox relay to Kafka (on the blocking pool) and the payment-event
/// consumer (on `db`).
fn kafka_tasks(
    settings: &Settings,
    pool: &PgPool,
    db: &OrderDb,
    outbox: &Outbox,
    shutdown: &CancellationToken,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let topics = settings.kafka.topics();
    let producer = settings
        .kafka
        .producer()
        .context("creating the Kafka producer")?;
    let relay = outbox.relay("order", pool.clone(), producer.clone());
    let consumer = ConsumerLoop::new(
        "order-payment-events",
        &settings.kafka,
        &settings.consumer_group,
        &[&topics.payments],
        PaymentEvents {
            db: db.clone(),
            outbox: outbox.clone(),
        },
        DeadLetterPublisher::new(producer, &topics.dead_letter),
    )
    .context("creating the Kafka consumer")?;
    Ok(vec![
        tokio::spawn(relay.run(shutdown.clone())),
        tokio::spawn(consumer.run(shutdown.clone())),
    ])
}

/// Case 1: the saga as one synchronous HTTP chain, with order-service orchestrating. The
/// domain code is the one of the Kafka cases; only the outbox's delivery differs. Order
/// events are written to the outbox in the transaction of their change, then delivered
/// over HTTP ([`shared_events::chain`]) to payment-service and the mail service by the
/// request that wrote them, which waits for them:
///
/// * `POST /orders` returns after payment-service called Kakao Pay `ready` and its
///   `PaymentReady` came back (the answer carries `payment.redirect_url`), or after the
///   order was cancelled because the payment could not start (compensation).
/// * `POST /internal/events` receives payment-service's events and runs the consumer's
///   handler: `PaymentApproved` → `COMPLETED`, whose `OrderCompleted` is mailed before the
///   answer; `PaymentFailed` → `CANCELLED` + mail.
/// * `POST /orders/{id}/cancel` runs the refund chain (`RefundRequested` → payment →
///   `PaymentRefunded` → `CANCELLED` + mail) before it answers.
///
/// A delivery that fails (a service down, a mail server refusing for now) does not fail
/// the shopper's request: the event stays in the outbox and the HTTP relay (added to
/// `tasks`) retries it.
fn http_chain_outbox(
    settings: &Settings,
    pool: &PgPool,
    shutdown: &CancellationToken,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> anyhow::Result<Outbox> {
    let topics = settings.kafka.topics();
    let own = topics.orders.clone();
    let subscribers = vec![settings.payment_url.clone(), settings.mailer_url.clone()];
    let secret = settings.internal_events_secret.as_ref();
    let signer = EventSigner::required(secret.map(ExposeSecret::expose_secret))?;
    Ok(chain::http_outbox(
        "order",
        pool,
        topics,
        (own, subscribers),
        signer,
        shutdown,
        tasks,
    )?)
}
