//! Building and running payment-service: one `Application::build` used by `main` and by
//! the tests. It runs the HTTP API (Kakao Pay's return URLs), the outbox relay and the
//! order-event consumer side by side, and stops them together.

use crate::checkout::{Checkout, OrderEvents};
use crate::config::Settings;
use crate::gateway::{CallbackUrls, Gateway};
use crate::routes;
use actix_web::dev::Server;
use actix_web::{web, App, HttpServer};
use anyhow::Context;
use kakaopay::{KakaoPayClient, KakaoPayConfig};
use secrecy::ExposeSecret;
use shared_events::db::{self, run_blocking, PgPool};
use shared_events::kafka::{ConsumerLoop, DeadLetterPublisher};
use shared_events::outbox::Outbox;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing_actix_web::TracingLogger;

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
        let client = KakaoPayClient::new(KakaoPayConfig {
            base_url: settings.kakaopay_base_url.clone(),
            secret_key: settings.kakaopay_secret_key.clone(),
            cid: settings.kakaopay_cid.clone(),
            timeout: Duration::from_millis(settings.kakaopay_timeout_ms),
        })
        .context("creating the Kakao Pay client")?;
        let checkout = Arc::new(Checkout {
            pool: pool.clone(),
            outbox: outbox.clone(),
            gateway: Gateway::new(
                client,
                pool.clone(),
                settings.gateway_max_attempts,
                Duration::from_millis(settings.gateway_backoff_ms),
            ),
            urls: CallbackUrls::new(settings.public_url.clone()),
        });
        let shutdown = CancellationToken::new();
        let consumer = ConsumerLoop::new(
            "payment-order-events",
            &settings.kafka,
            &settings.consumer_group,
            &[&topics.orders],
            OrderEvents(checkout.clone()),
            DeadLetterPublisher::new(producer.clone(), &topics.dead_letter),
        )
        .context("creating the Kafka consumer")?;
        let tasks = vec![
            tokio::spawn(
                outbox
                    .relay("payment", pool, producer)
                    .run(shutdown.clone()),
            ),
            tokio::spawn(consumer.run(shutdown.clone())),
        ];

        let listener = TcpListener::bind((settings.host.as_str(), settings.port))
            .with_context(|| format!("binding {}:{}", settings.host, settings.port))?;
        let port = listener.local_addr()?.port();
        let state = web::Data::from(checkout);
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
        tracing::info!(port, "payment-service listening.");
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
