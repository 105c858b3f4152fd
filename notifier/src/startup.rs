//! [`Application`]: the history API and the consumer pipeline on one Tokio runtime. It
//! binds its port first and waits, not ready, for MongoDB and Kafka
//! ([`shared_events::readiness`]).

use crate::api::{self, ApiState};
use crate::pipeline::PipelineConfig;
use crate::render::Renderer;
use crate::service::MailService;
use crate::settings::Settings;
use crate::store::{HistoryStore, MongoHistoryStore};
use crate::transport::{SmtpSettings, SmtpTransport};
use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpServer};
use anyhow::Context;
use shared_events::http::HttpMetrics;
use shared_events::kafka::DeadLetterPublisher;
use shared_events::readiness::{retry_until_done, Readiness};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A running notifier. `build` starts everything; cancel [`Application::shutdown_token`]
/// to stop it and await [`Application::run_until_stopped`].
pub struct Application {
    port: u16,
    shutdown: CancellationToken,
    server: ServerHandle,
    server_task: JoinHandle<std::io::Result<()>>,
    pipeline_task: JoinHandle<()>,
}

impl Application {
    /// Binds the HTTP listener and starts the HTTP server and, in the background, the
    /// start-up steps — a MongoDB ping and its indexes, the Kafka topics, each retried
    /// until its server answers (`/readyz` 503 meanwhile) — and then the consumer
    /// pipeline. Fails only for what waiting cannot cure (a bad setting, a taken port).
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        // Install the process's metrics recorder before anything records.
        let _ = shared_events::telemetry::metrics();
        crate::service::describe_metrics();
        metrics::counter!("saga_dead_letters_total", "consumer" => crate::pipeline::CONSUMER)
            .increment(0);
        let api_token = crate::api::auth::required_token(settings.api_token.as_ref())?;

        let listener = TcpListener::bind((settings.host.as_str(), settings.port))
            .with_context(|| format!("could not bind {}:{}", settings.host, settings.port))?;
        let port = listener.local_addr()?.port();

        // Parses the URI only; the driver connects when first used.
        let mongo = MongoHistoryStore::connect(
            &settings.mongodb_uri,
            &settings.mongodb_database,
            settings.mongodb_batching(),
        )
        .await
        .context("invalid MONGODB_URI")?;
        let mongo = Arc::new(mongo);
        let store: Arc<dyn HistoryStore> = mongo.clone();

        let transport = SmtpTransport::new(&SmtpSettings {
            host: settings.smtp_host.clone(),
            port: settings.smtp_port,
            timeout: settings.smtp_timeout(),
            pool_size: settings.smtp_pool_size,
            from: settings.mail_from.clone(),
        })?;
        let renderer = Renderer::new(&transport.from_domain()).context("mail templates")?;
        let service = MailService::new(
            Arc::new(renderer),
            store.clone(),
            Arc::new(transport),
            settings.delivery_policy(),
        );
        let topics = settings.kafka.topics();
        let dead_letters =
            DeadLetterPublisher::new(settings.kafka.producer()?, &topics.dead_letter);
        let pipeline = Pipeline {
            config: PipelineConfig {
                consumer_group: settings.consumer_group.clone(),
                topics: vec![topics.orders.clone(), topics.payments.clone()],
                engine: settings.engine_config(),
            },
            service,
            dead_letters,
        };

        let state = web::Data::new(ApiState { store, api_token });
        let readiness = Readiness::starting();
        let ready = web::Data::new(readiness.clone());
        let server = HttpServer::new(move || {
            App::new()
                .wrap(shared_events::request_span::tracing_logger())
                .wrap(HttpMetrics::new("notifier"))
                .app_data(state.clone())
                .app_data(ready.clone())
                .configure(api::configure)
        })
        .listen(listener)?
        .workers(settings.http_workers.max(1))
        .disable_signals()
        .shutdown_timeout(5)
        .run();
        let server_handle = server.handle();
        let server_task = tokio::spawn(server);

        let shutdown = CancellationToken::new();
        let pipeline_task = tokio::spawn(start_then_run(
            settings.kafka.clone(),
            mongo,
            pipeline,
            readiness,
            shutdown.clone(),
        ));
        tracing::info!(port, group = %settings.consumer_group, "Notifier started.");

        Ok(Application {
            port,
            shutdown,
            server: server_handle,
            server_task,
            pipeline_task,
        })
    }

    /// The HTTP port (useful with `NOTIFIER_PORT=0`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Cancelling it stops fetching, finishes in-flight mails, commits offsets and stops
    /// the HTTP server.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Returns once the pipeline and the HTTP server have stopped (after the shutdown
    /// token is cancelled, or if either of them fails).
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let Application {
            shutdown,
            server,
            mut server_task,
            mut pipeline_task,
            ..
        } = self;
        let mut server_result = None;
        let mut pipeline_result = None;
        tokio::select! {
            _ = shutdown.cancelled() => {}
            result = &mut server_task => {
                tracing::error!("The HTTP server stopped unexpectedly.");
                server_result = Some(result);
            }
            result = &mut pipeline_task => {
                tracing::error!("The consumer pipeline stopped unexpectedly.");
                pipeline_result = Some(result);
            }
        }
        let ended_early = pipeline_result.is_some();
        shutdown.cancel();
        let stop_server = async {
            server.stop(true).await;
            match server_result {
                Some(result) => result,
                None => match tokio::time::timeout(Duration::from_secs(10), &mut server_task).await
                {
                    Ok(result) => result,
                    Err(_) => {
                        server_task.abort();
                        Ok(Ok(()))
                    }
                },
            }
        };
        let stop_pipeline = async {
            match pipeline_result {
                Some(result) => result,
                None => (&mut pipeline_task).await,
            }
        };
        let (server_result, pipeline_result) = tokio::join!(stop_server, stop_pipeline);
        server_result
            .context("HTTP server task")?
            .context("HTTP server")?;
        pipeline_result.context("consumer pipeline task")?;
        if ended_early {
            anyhow::bail!("the consumer pipeline ended before the shutdown");
        }
        tracing::info!("Notifier stopped.");
        Ok(())
    }
}

/// What the consumer pipeline is made of. It is created only once its topics exist: a
/// consumer subscribed to a topic the broker does not know yet gets its partitions only
/// at a later metadata refresh (seen: 10 s on tansu).
struct Pipeline {
    config: PipelineConfig,
    service: MailService,
    dead_letters: DeadLetterPublisher,
}

/// The start-up steps, each retried until its server answers, then the pipeline until
/// the shutdown.
async fn start_then_run(
    kafka: shared_events::kafka::KafkaSettings,
    mongo: Arc<MongoHistoryStore>,
    pipeline: Pipeline,
    readiness: Readiness,
    shutdown: CancellationToken,
) {
    let steps = async {
        retry_until_done(&readiness, "MongoDB (ping)", &shutdown, || mongo.ping()).await?;
        retry_until_done(&readiness, "MongoDB (indexes)", &shutdown, || {
            mongo.ensure_indexes()
        })
        .await?;
        retry_until_done(&readiness, "Kafka (topics)", &shutdown, || {
            kafka.ensure_topics()
        })
        .await
    };
    if steps.await.is_none() {
        return;
    }
    let Pipeline {
        config,
        service,
        dead_letters,
    } = pipeline;
    let consumer = match crate::pipeline::consumer(&kafka, config, service, dead_letters) {
        Ok(consumer) => consumer,
        Err(error) => {
            tracing::error!(%error, "Could not create the Kafka consumer.");
            return;
        }
    };
    readiness.mark_started();
    tracing::info!("Notifier started its consumer pipeline.");
    consumer.run(shutdown).await;
}
