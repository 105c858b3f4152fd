//! [`MailerApp`]: the blocking mail service's HTTP API and its event input (Kafka
//! consumers in case 2, `POST /internal/events` in case 1). It binds its port and
//! answers `/healthz` at once; the history's migrations and (case 2) the Kafka topics
//! are retried until their servers answer, and `/readyz` says what it waits for
//! ([`shared_events::readiness`]).

use crate::handlers::MailerState;
use crate::service::{BlockingMailer, MailEvents};
use crate::settings::MailerSettings;
use crate::smtp::BlockingSmtp;
use crate::store::PgHistoryStore;
use actix_web::{web, App, HttpServer};
use anyhow::Context;
use notifier::api::ApiState;
use notifier::render::Renderer;
use secrecy::ExposeSecret;
use shared_events::chain::EventSigner;
use shared_events::db::{self, run_blocking, DbError, PgPool};
use shared_events::http::HttpMetrics;
use shared_events::kafka::{ConsumerLoop, DeadLetterPublisher, EngineConfig, KafkaSettings};
use shared_events::readiness::{retry_until_done, Readiness};
use shared_events::Case;
use std::net::TcpListener;
use std::sync::Arc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The mail history's migrations (`diesel-migrations/mail`).
pub const MIGRATIONS: diesel_migrations::EmbeddedMigrations =
    diesel_migrations::embed_migrations!("../../diesel-migrations/mail");

/// The blocking mail service, running.
pub struct MailerApp {
    port: u16,
    server: actix_web::dev::Server,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

/// Applies the mail history's migrations, off the async executor.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    use diesel_migrations::MigrationHarness;
    run_blocking(pool, |conn| {
        conn.run_pending_migrations(MIGRATIONS)
            .map(|_| ())
            .map_err(|e| MigrationFailed(e.to_string()))
    })
    .await
    .map_err(|MigrationFailed(e)| anyhow::anyhow!("mail history migrations failed: {e}"))
}

struct MigrationFailed(String);

impl From<DbError> for MigrationFailed {
    fn from(error: DbError) -> Self {
        MigrationFailed(error.to_string())
    }
}

/// Case 1's check of `POST /internal/events`, made before anything starts: case 1 never
/// accepts unauthenticated events. `None` in case 2 (events come from Kafka).
fn event_signer(settings: &MailerSettings) -> anyhow::Result<Option<EventSigner>> {
    if settings.case.uses_kafka() {
        return Ok(None);
    }
    let secret = settings.internal_events_secret.as_ref();
    Ok(Some(EventSigner::required(
        secret.map(ExposeSecret::expose_secret),
    )?))
}

impl MailerApp {
    /// Migrates the history database, then starts the HTTP API and (case 2) the Kafka
    /// consumers.
    pub async fn build(settings: MailerSettings) -> anyhow::Result<Self> {
        let _ = shared_events::telemetry::metrics();
        crate::service::describe_metrics();
        if !settings.case.blocking_mail() {
            anyhow::bail!(
                "the blocking mail service runs cases 1 and 2, not {}",
                settings.case
            );
        }
        let api_token = notifier::api::auth::required_token(settings.mail.api_token.as_ref())?;
        let signer = event_signer(&settings)?;
        let listener = TcpListener::bind((settings.host.as_str(), settings.port))
            .with_context(|| format!("could not bind {}:{}", settings.host, settings.port))?;
        let port = listener.local_addr()?.port();

        // The pool connects lazily: PostgreSQL may still be down.
        let pool = db::build_pool(
            settings.database_url.expose_secret(),
            settings.db_pool_size.max(2),
        );
        let smtp = BlockingSmtp::new(&settings.smtp())?;
        let renderer = Renderer::new(&smtp.from_domain()).context("mail templates")?;
        let mailer = Arc::new(BlockingMailer::new(
            renderer,
            pool.clone(),
            smtp,
            settings.delivery_policy(),
        ));
        let shutdown = CancellationToken::new();
        let readiness = Readiness::starting();
        let consumers = settings
            .case
            .uses_kafka()
            .then(|| Consumers::from_settings(&settings, mailer.clone()));
        let tasks = vec![tokio::spawn(start_then_consume(
            pool.clone(),
            consumers,
            readiness.clone(),
            shutdown.clone(),
        ))];

        let api_state = web::Data::new(ApiState {
            store: Arc::new(PgHistoryStore::new(pool.clone())),
        });
        let api_token = web::Data::new(api_token);
        let mailer_state = web::Data::new(MailerState {
            mailer,
            pool,
            signer,
            readiness,
            case: settings.case,
        });
        let case = settings.case;
        let server = HttpServer::new(move || {
            App::new()
                .wrap(shared_events::request_span::tracing_logger())
                .wrap(HttpMetrics::new("mailer"))
                .app_data(api_state.clone())
                .app_data(api_token.clone())
                .app_data(mailer_state.clone())
                .configure(|cfg| configure(cfg, case))
        })
        .listen(listener)?
        .workers(settings.http_workers.max(1))
        .disable_signals()
        .shutdown_timeout(5)
        .run();
        tracing::info!(port, case = %settings.case, "Blocking mail service started.");
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

    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Serves until the token is cancelled, then stops the consumers (each finishes the
    /// mail it is on and commits its offsets).
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        shared_events::http::serve_until_cancelled(self.server, self.shutdown, self.tasks).await
    }
}

/// Case 2's Kafka input: one consumer loop per `MAILER_CONSUMERS`, made once the topics
/// exist.
struct Consumers {
    kafka: KafkaSettings,
    group: String,
    count: usize,
    engine: EngineConfig,
    mailer: Arc<BlockingMailer>,
}

impl Consumers {
    fn from_settings(settings: &MailerSettings, mailer: Arc<BlockingMailer>) -> Self {
        // Each mail holds a blocking thread, an SMTP connection and a database
        // connection from claim to commit: more in flight than SMTP connections would
        // only queue on the pools.
        let engine = EngineConfig {
            max_in_flight: settings.smtp_pool_size.max(1) as usize,
            backoff: settings.delivery_policy().backoff(),
            ..settings.kafka.engine_config()
        };
        Self {
            kafka: settings.kafka.clone(),
            group: settings.consumer_group.clone(),
            count: settings.consumers.max(1),
            engine,
            mailer,
        }
    }

    /// Runs every consumer until the shutdown; an error if one cannot be made.
    async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let topics = self.kafka.topics();
        let producer = self.kafka.producer()?;
        let mut running = tokio::task::JoinSet::new();
        for n in 0..self.count {
            let consumer = ConsumerLoop::with_config(
                &format!("mailer-blocking-{n}"),
                &self.kafka,
                &self.group,
                &[&topics.orders, &topics.payments],
                MailEvents(self.mailer.clone()),
                DeadLetterPublisher::new(producer.clone(), &topics.dead_letter),
                self.engine,
            )
            .context("could not create the Kafka consumer")?;
            running.spawn(consumer.run(shutdown.clone()));
        }
        while running.join_next().await.is_some() {}
        Ok(())
    }
}

/// The start-up steps, each retried until its server answers, then (case 2) the
/// consumers until the shutdown. Ending early is a failure the runner stops on.
async fn start_then_consume(
    pool: PgPool,
    consumers: Option<Consumers>,
    readiness: Readiness,
    shutdown: CancellationToken,
) {
    let steps = async {
        retry_until_done(
            &readiness,
            "the mail database (migrations)",
            &shutdown,
            || migrate(&pool),
        )
        .await?;
        if let Some(consumers) = &consumers {
            retry_until_done(&readiness, "Kafka (topics)", &shutdown, || {
                consumers.kafka.ensure_topics()
            })
            .await?;
        }
        Some(())
    };
    if steps.await.is_none() {
        return;
    }
    readiness.mark_started();
    let Some(consumers) = consumers else {
        shutdown.cancelled().await;
        return;
    };
    tracing::info!("Blocking mail service started its consumers.");
    if let Err(error) = consumers.run(shutdown).await {
        tracing::error!(
            error = format!("{error:#}"),
            "The Kafka input could not start."
        );
    }
}

/// Mounts `case`'s routes.
pub fn configure(cfg: &mut web::ServiceConfig, case: Case) {
    if case.uses_kafka() {
        shared_events::routes::mount(cfg, crate::routes);
    } else {
        shared_events::routes::mount(cfg, crate::routes_with_event_input);
    }
}
