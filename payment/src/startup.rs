//! Building and running payment-service: one `Application::build` used by `main` and by
//! the tests. It runs the HTTP API (Kakao Pay's return URLs), the outbox relay and the
//! order-event consumer side by side, and stops them together. In case 1 the relay and
//! the consumer are replaced by the HTTP chain ([`crate::sync_chain`]).

use crate::checkout::{Checkout, OrderEvents};
use crate::config::Settings;
use crate::gateway::{CallbackUrls, Gateway};
use crate::routes;
use actix_web::web;
use anyhow::Context;
use kakaopay::{KakaoPayClient, KakaoPayConfig};
use secrecy::ExposeSecret;
use shared_events::db::{self, PgPool};
use shared_events::http::{HttpApi, RunningService};
use shared_events::kafka::{ConsumerLoop, DeadLetterPublisher};
use shared_events::outbox::Outbox;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// payment-service's assembly; `build` returns the running service.
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
        let shutdown = CancellationToken::new();
        let mut tasks = Vec::new();
        let outbox = if settings.case.uses_kafka() {
            Outbox::new(topics.clone())
        } else {
            crate::sync_chain::outbox(&settings, &pool, &shutdown, &mut tasks)?
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
            urls: CallbackUrls::new(settings.public_url.clone()),
            recheck: shared_events::retry::Backoff::new(
                Duration::from_millis(settings.reconcile_ms.max(100)),
                Duration::from_millis(settings.reconcile_max_backoff_ms.max(100)),
            ),
        });
        if settings.case.uses_kafka() {
            tasks.extend(kafka_tasks(&settings, &pool, &outbox, &checkout, &shutdown).await?);
        }
        tasks.extend([
            tokio::spawn(reconcile(
                checkout.clone(),
                Duration::from_millis(settings.reconcile_ms.max(100)),
                settings.longest_gateway_call(),
                shutdown.clone(),
            )),
            tokio::spawn(crate::gauges::run(
                pool,
                Duration::from_millis(settings.metrics_refresh_ms.max(100)),
                shutdown.clone(),
            )),
        ]);

        let api = HttpApi {
            service: "payment",
            host: settings.host.clone(),
            port: settings.port,
            workers: settings.http_workers,
            state: web::Data::from(checkout),
            configure: if settings.case.uses_kafka() {
                routes::configure
            } else {
                crate::sync_chain::configure
            },
        };
        RunningService::start(api, shutdown, tasks)
    }
}

/// Cases 2–4: the outbox relay to Kafka (on the blocking pool) and the order-event
/// consumer (on the checkout's `db`).
async fn kafka_tasks(
    settings: &Settings,
    pool: &PgPool,
    outbox: &Outbox,
    checkout: &Arc<Checkout>,
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
