//! Building and running payment-service: one `Application::build` used by `main` and by
//! the tests. It runs the HTTP API (Kakao Pay's return URLs), the outbox relay and the
//! order-event consumer side by side, and stops them together. It binds its port first
//! and waits, not ready, for PostgreSQL and Kafka ([`shared_events::readiness`]). In case 1 the relay and
//! the consumer are replaced by the HTTP chain ([`http_chain_outbox`]).

use crate::checkout::{Checkout, OrderEvents};
use crate::config::Settings;
use crate::gateway::{CallbackUrls, Gateway};
use crate::routes;
use actix_web::web;
use anyhow::Context;
use kakaopay::{KakaoPayClient, KakaoPayConfig};
use secrecy::ExposeSecret;
use shared_events::bearer::ApiToken;
use shared_events::chain::{self, EventSigner};
use shared_events::db::{self, PgPool};
use shared_events::http::{HttpApi, RunningService};
use shared_events::kafka::{ConsumerLoop, DeadLetterPublisher};
use shared_events::outbox::Outbox;
use shared_events::readiness::{
    migrate_then_create_topics, start_then_supervise, Readiness, Started,
};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// payment-service's assembly; `build` returns the running service.
pub struct Application;

impl Application {
    /// Binds the API at once and starts the service's work in the background: the
    /// migrations, then (cases 2–4) the Kafka topics, relay and consumer, then the
    /// reconciler and gauges — each start-up step retried until its dependency answers,
    /// `/readyz` 503 meanwhile.
    pub async fn build(settings: Settings) -> anyhow::Result<RunningService> {
        let _ = shared_events::telemetry::metrics();
        crate::gauges::describe();
        let operator_token = ApiToken::required(
            settings.api_token.as_ref(),
            "PAYMENT_API_TOKEN",
            "payment",
            "the payment look-ups (GET /payments, GET /payments/{id})",
        )?;
        let pool = db::build_pool(settings.database_url.expose_secret(), settings.db_pool_size);
        let topics = settings.kafka.topics();
        let shutdown = CancellationToken::new();
        let readiness = Readiness::starting();
        let mut early_tasks = Vec::new();
        let outbox = if settings.case.uses_kafka() {
            Outbox::new(topics.clone())
        } else {
            http_chain_outbox(&settings, &pool, &shutdown, &mut early_tasks)?
        };
        let client = KakaoPayClient::new(KakaoPayConfig {
            base_url: settings.kakaopay_base_url.clone(),
            secret_key: settings.kakaopay_secret_key.clone(),
            cid: settings.kakaopay_cid.clone(),
            timeout: Duration::from_millis(settings.kakaopay_timeout_ms),
        })
        .context("creating the Kakao Pay client")?;
        let db = crate::persistence::for_case(settings.case, &pool, &settings);
        let checkout = Arc::new(Checkout {
            db: db.clone(),
            outbox: outbox.clone(),
            gateway: Gateway::new(
                client,
                db,
                settings.gateway_max_attempts,
                Duration::from_millis(settings.gateway_backoff_ms),
            ),
            urls: CallbackUrls::new(settings.public_url.clone(), settings.storefront_url.clone()),
            recheck: shared_events::retry::Backoff::new(
                Duration::from_millis(settings.reconcile_ms.max(100)),
                Duration::from_millis(settings.reconcile_max_backoff_ms.max(100)),
            ),
        });
        let work = Work {
            settings: settings.clone(),
            pool,
            outbox,
            checkout: checkout.clone(),
            readiness: readiness.clone(),
            shutdown: shutdown.clone(),
        };
        let tasks = vec![tokio::spawn(work.start_then_supervise(early_tasks))];
        let api = HttpApi {
            service: "payment",
            host: settings.host.clone(),
            port: settings.port,
            workers: settings.http_workers,
            blocking_threads: settings.blocking_threads(),
            state: web::Data::from(checkout),
            readiness,
            operator_token: Some(operator_token),
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
    outbox: Outbox,
    checkout: Arc<Checkout>,
    readiness: Readiness,
    shutdown: CancellationToken,
}

impl Work {
    /// Runs the start-up steps and every background task (see
    /// `shared_events::readiness::start_then_supervise`).
    async fn start_then_supervise(self, tasks: Vec<tokio::task::JoinHandle<()>>) {
        let (readiness, shutdown) = (self.readiness.clone(), self.shutdown.clone());
        start_then_supervise("payment", &readiness, &shutdown, tasks, self.start()).await;
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
            "payments",
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
                &self.outbox,
                &self.checkout,
                &self.shutdown,
            ) {
                Ok(kafka) => tasks.extend(kafka),
                Err(error) => return Some(Err(error)),
            }
        }
        tasks.extend([
            tokio::spawn(reconcile(
                self.checkout.clone(),
                Duration::from_millis(self.settings.reconcile_ms.max(100)),
                self.settings.longest_gateway_call(),
                self.shutdown.clone(),
            )),
            tokio::spawn(crate::gauges::run(
                self.pool.clone(),
                Duration::from_millis(self.settings.metrics_refresh_ms.max(100)),
                self.shutdown.clone(),
            )),
        ]);
        Some(Ok(tasks))
    }
}

/// Cases 2–4: the outbox relay to Kafka (on the blocking pool) and the order-event
/// consumer (on the checkout's `db`).
fn kafka_tasks(
    settings: &Settings,
    pool: &PgPool,
    outbox: &Outbox,
    checkout: &Arc<Checkout>,
    shutdown: &CancellationToken,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let topics = settings.kafka.topics();
    let producer = settings
        .kafka
        .producer()
        .context("creating the Kafka producer")?;
    let consumer = ConsumerLoop::new(
        "payment-order-events",
        &settings.kafka,
        &settings.consumer_group,
        &[&topics.orders],
        OrderEvents(checkout.clone()),
        DeadLetterPublisher::new(producer.clone(), &topics.dead_letter),
    )
    .context("creating the Kafka consumer")?;
    Ok(vec![
        tokio::spawn(
            outbox
                .relay("payment", pool.clone(), producer)
                .run(shutdown.clone()),
        ),
        tokio::spawn(consumer.run(shutdown.clone())),
    ])
}

/// Every `every`, settles payments stuck mid-call for longer than `older_than`.
async fn reconcile(
    checkout: std::sync::Arc<crate::checkout::Checkout>,
    every: Duration,
    older_than: Duration,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(every) => {}
        }
        match checkout.reconcile_stuck(older_than).await {
            Ok(0) => {}
            Ok(settled) => tracing::info!(settled, "Stuck payments settled."),
            Err(error) => tracing::warn!(%error, "Payment reconciliation failed; will retry."),
        }
    }
}

/// Case 1: payment-service as a link of one synchronous HTTP chain. The domain code is
/// the one of the Kafka cases; only the outbox's delivery differs: payment events are
/// delivered over HTTP ([`shared_events::chain`]) to order-service and the mail service
/// by the request that wrote them, which waits for them. A delivery that fails stays in
/// the outbox for the HTTP relay (added to `tasks`).
fn http_chain_outbox(
    settings: &Settings,
    pool: &PgPool,
    shutdown: &CancellationToken,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> anyhow::Result<Outbox> {
    let topics = settings.kafka.topics();
    let own = topics.payments.clone();
    let subscribers = vec![settings.order_url.clone(), settings.mailer_url.clone()];
    let secret = settings.internal_events_secret.as_ref();
    let signer = EventSigner::required(secret.map(ExposeSecret::expose_secret))?;
    Ok(chain::http_outbox(
        "payment",
        pool,
        topics,
        (own, subscribers),
        signer,
        shutdown,
        tasks,
    )?)
}
