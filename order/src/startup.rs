//! Building and running order-service: one `Application::build` used by `main` and by
//! the tests. It runs three things side by side — the HTTP API, the outbox relay and the
//! payment-event consumer — and stops them together, plus the listener that wakes
//! requests waiting for an order to change ([`crate::changes`]). In case 1 the relay and the
//! consumer are replaced by the HTTP chain ([`crate::sync_chain`]).

use crate::changes::Changes;
use crate::config::Settings;
use crate::persistence::OrderDb;
use crate::routes;
use crate::saga::PaymentEvents;
use actix_web::web;
use anyhow::Context;
use secrecy::ExposeSecret;
use shared_events::db::{self, PgPool};
use shared_events::http::{HttpApi, RunningService};
use shared_events::kafka::{ConsumerLoop, DeadLetterPublisher};
use shared_events::outbox::Outbox;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What the handlers share.
pub struct AppState {
    pub pool: PgPool,
    /// Where the handlers run their SQL (the blocking pool, or the async one in case 4).
    pub db: OrderDb,
    pub outbox: Outbox,
    pub payment_deadline: Duration,
    /// Who waits for which order (long polls, change streams).
    pub changes: Changes,
    pub waits: crate::watch::WaitLimits,
}

/// order-service's assembly; `build` returns the running service.
pub struct Application;

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<RunningService> {
        let _ = shared_events::telemetry::metrics();
        crate::gauges::describe();
        let pool = db::build_pool(settings.database_url.expose_secret(), settings.db_pool_size);
        db::migrate(&pool, crate::MIGRATIONS)
            .await
            .map_err(|e| anyhow::anyhow!("migrations failed: {e}"))?;
        let topics = settings.kafka.topics();
        let db = crate::persistence::for_case(settings.case, &pool, &settings);
        let shutdown = CancellationToken::new();
        let mut tasks = Vec::new();
        let outbox = if settings.case.uses_kafka() {
            let outbox = Outbox::new(topics.clone());
            tasks.extend(kafka_tasks(&settings, &pool, &db, &outbox, &shutdown).await?);
            outbox
        } else {
            crate::sync_chain::outbox(&settings, &pool, &shutdown, &mut tasks)?
        };
        tasks.extend([
            tokio::spawn(crate::deadline::run(
                pool.clone(),
                outbox.clone(),
                Duration::from_millis(settings.deadline_check_ms),
                shutdown.clone(),
            )),
            tokio::spawn(crate::gauges::run(
                pool.clone(),
                Duration::from_millis(settings.metrics_refresh_ms.max(100)),
                shutdown.clone(),
            )),
        ]);

        let changes = Changes::new(settings.max_open_waits, shutdown.clone());
        crate::changes::listen(pool.clone(), changes.clone(), shutdown.clone());
        let api = HttpApi {
            service: "order",
            host: settings.host.clone(),
            port: settings.port,
            workers: settings.http_workers,
            state: web::Data::new(AppState {
                pool,
                db,
                outbox,
                payment_deadline: Duration::from_secs(settings.payment_deadline_secs),
                changes,
                waits: crate::watch::WaitLimits::from(&settings),
            }),
            configure: if settings.case.uses_kafka() {
                routes::configure
            } else {
                crate::sync_chain::configure
            },
        };
        RunningService::start(api, shutdown, tasks)
    }
}

/// Cases 2–4: the outbox relay to Kafka (on the blocking pool) and the payment-event
/// consumer (on `db`).
async fn kafka_tasks(
    settings: &Settings,
    pool: &PgPool,
    db: &OrderDb,
    outbox: &Outbox,
    shutdown: &CancellationToken,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    settings
        .kafka
        .ensure_topics()
        .await
        .context("creating Kafka topics")?;
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
