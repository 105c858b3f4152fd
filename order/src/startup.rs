//! Building and running order-service: one `Application::build` used by `main` and by
//! the tests. It runs three things side by side — the HTTP API, the outbox relay and the
//! payment-event consumer — and stops them together.

use crate::config::Settings;
use crate::routes;
use crate::saga::PaymentEvents;
use actix_web::dev::Server;
use actix_web::{web, App, HttpServer};
use anyhow::Context;
use secrecy::ExposeSecret;
use shared_events::db::{self, run_blocking, PgPool};
use shared_events::kafka::{ConsumerLoop, DeadLetterPublisher};
use shared_events::outbox::Outbox;
use std::net::TcpListener;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing_actix_web::TracingLogger;

/// What the handlers share.
pub struct AppState {
    pub pool: PgPool,
    pub outbox: Outbox,
    pub payment_deadline: Duration,
}

pub struct Application {
    port: u16,
    server: Server,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let pool = db::build_pool(settings.database_url.expose_secret(), settings.db_pool_size);
        migrate(&pool).await?;
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
        let outbox = Outbox::new(topics.clone());
        let shutdown = CancellationToken::new();

        let relay = outbox.relay("order", pool.clone(), producer.clone());
        let consumer = ConsumerLoop::new(
            "order-payment-events",
            &settings.kafka,
            &settings.consumer_group,
            &[&topics.payments],
            PaymentEvents {
                pool: pool.clone(),
                outbox: outbox.clone(),
            },
            DeadLetterPublisher::new(producer, &topics.dead_letter),
        )
        .context("creating the Kafka consumer")?;
        let tasks = vec![
            tokio::spawn(relay.run(shutdown.clone())),
            tokio::spawn(consumer.run(shutdown.clone())),
            tokio::spawn(crate::deadline::run(
                pool.clone(),
                outbox.clone(),
                Duration::from_millis(settings.deadline_check_ms),
                shutdown.clone(),
            )),
        ];

        let listener = TcpListener::bind((settings.host.as_str(), settings.port))
            .with_context(|| format!("binding {}:{}", settings.host, settings.port))?;
        let port = listener.local_addr()?.port();
        let state = web::Data::new(AppState {
            pool,
            outbox,
            payment_deadline: Duration::from_secs(settings.payment_deadline_secs),
        });
        let server = HttpServer::new(move || {
            App::new()
                .wrap(TracingLogger::default())
                .app_data(state.clone())
                .configure(routes::configure)
        })
        .listen(listener)?
        .workers(settings.http_workers)
        .disable_signals()
        .shutdown_timeout(5)
        .run();
        tracing::info!(port, "order-service listening.");
        Ok(Self {
            port,
            server,
            shutdown,
            tasks,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Cancelling this token stops the service gracefully.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        shared_events::http::serve_until_cancelled(self.server, self.shutdown, self.tasks).await
    }
}

async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    run_blocking(pool, |conn| {
        db::run_migrations(conn, crate::MIGRATIONS)
            .map_err(|e| anyhow::anyhow!("migrations failed: {e}"))
    })
    .await
}
