//! [`Application`]: the history API and the consumer pipeline on one Tokio runtime.

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
    /// Binds the HTTP listener, connects MongoDB and creates its indexes, creates missing
    /// Kafka topics, then starts the HTTP server and the consumer pipeline in the
    /// background. Fails if MongoDB or Kafka cannot be reached.
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        // Install the process's metrics recorder before anything records.
        let _ = shared_events::telemetry::metrics();
        crate::service::describe_metrics();
        let api_token = crate::api::auth::required_token(settings.api_token.as_ref())?;

        let listener = TcpListener::bind((settings.host.as_str(), settings.port))
            .with_context(|| format!("could not bind {}:{}", settings.host, settings.port))?;
        let port = listener.local_addr()?.port();

        let store = MongoHistoryStore::connect(
            &settings.mongodb_uri,
            &settings.mongodb_database,
            settings.mongodb_batching(),
        )
        .await
        .context("invalid MONGODB_URI")?;
        store
            .ping()
            .await
            .context("MongoDB (MONGODB_URI) did not answer a ping")?;
        store
            .ensure_indexes()
            .await
            .context("could not create the MongoDB indexes")?;
        let store: Arc<dyn HistoryStore> = Arc::new(store);

        settings.kafka.ensure_topics().await.with_context(|| {
            format!(
                "could not create the Kafka topics on {}",
                settings.kafka.brokers
            )
        })?;

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
        let pipeline = crate::pipeline::consumer(
            &settings.kafka,
            PipelineConfig {
                consumer_group: settings.consumer_group.clone(),
                topics: vec![topics.orders.clone(), topics.payments.clone()],
                engine: settings.engine_config(),
            },
            service,
            dead_letters,
        )
        .context("could not create the Kafka consumer")?;

        let state = web::Data::new(ApiState { store, api_token });
        let server = HttpServer::new(move || {
            App::new()
                .wrap(shared_events::request_span::tracing_logger())
                .wrap(HttpMetrics::new("notifier"))
                .app_data(state.clone())
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
        let pipeline_task = tokio::spawn(pipeline.run(shutdown.clone()));
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
        tracing::info!("Notifier stopped.");
        Ok(())
    }
}
