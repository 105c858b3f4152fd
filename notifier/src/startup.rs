//! [`Application`]: the history API and the consumer pipeline on one Tokio runtime, run by
//! the workspace's one service runner. It binds its port first and waits, not ready, for MongoDB and Kafka
//! ([`shared_events::readiness`]).

use crate::api::{self, ApiState};
use crate::pipeline::PipelineConfig;
use crate::render::Renderer;
use crate::service::MailService;
use crate::settings::Settings;
use crate::store::{HistoryStore, MongoHistoryStore};
use crate::transport::SmtpTransport;
use actix_web::web;
use anyhow::Context;
use shared_events::http::{HttpApi, RunningService};
use shared_events::kafka::DeadLetterPublisher;
use shared_events::readiness::{retry_until_done, Readiness};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// The notifier's assembly; `build` returns the running service (the workspace's one
/// runner, [`RunningService`]): cancel its shutdown token to stop it, and a pipeline that
/// ends before the shutdown stops the process with an error.
pub struct Application;

impl Application {
    /// Binds the HTTP listener and starts the HTTP server and, in the background, the
    /// start-up steps — a MongoDB ping and its indexes, the Kafka topics, each retried
    /// until its server answers (`/readyz` 503 meanwhile) — and then the consumer
    /// pipeline. Fails only for what waiting cannot cure (a bad setting, a taken port).
    pub async fn build(settings: Settings) -> anyhow::Result<RunningService> {
        // Install the process's metrics recorder before anything records.
        let _ = shared_events::telemetry::metrics();
        crate::service::describe_metrics();
        metrics::counter!("saga_dead_letters_total", "consumer" => crate::pipeline::CONSUMER)
            .increment(0);
        let api_token = crate::api::auth::required_token(settings.mail.api_token.as_ref())?;

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
        let pipeline = pipeline(&settings, store.clone())?;

        let readiness = Readiness::starting();
        let shutdown = CancellationToken::new();
        let pipeline_task = tokio::spawn(start_then_run(
            settings.kafka.clone(),
            mongo,
            pipeline,
            readiness.clone(),
            shutdown.clone(),
        ));
        let api = HttpApi {
            service: "notifier",
            host: settings.host.clone(),
            port: settings.port,
            workers: settings.http_workers,
            // The history API awaits MongoDB; nothing of it blocks a thread.
            blocking_threads: 1,
            state: web::Data::new(ApiState { store }),
            readiness,
            operator_token: Some(api_token),
            configure: api::configure,
        };
        let running = RunningService::start(api, shutdown, vec![pipeline_task])?;
        tracing::info!(port = running.port(), group = %settings.consumer_group, "Notifier started.");
        Ok(running)
    }
}

/// The mail service and the consumer pipeline around it, not yet running.
fn pipeline(settings: &Settings, store: Arc<dyn HistoryStore>) -> anyhow::Result<Pipeline> {
    let transport = SmtpTransport::new(
        &settings
            .mail
            .smtp(settings.smtp_timeout(), settings.smtp_pool_size),
    )?;
    let renderer = Renderer::new(&transport.from_domain()).context("mail templates")?;
    let service = MailService::new(
        Arc::new(renderer),
        store,
        Arc::new(transport),
        settings.delivery_policy(),
    );
    let topics = settings.kafka.topics();
    let dead_letters = DeadLetterPublisher::new(settings.kafka.producer()?, &topics.dead_letter);
    Ok(Pipeline {
        config: PipelineConfig {
            consumer_group: settings.consumer_group.clone(),
            topics: vec![topics.orders.clone(), topics.payments.clone()],
            engine: settings.engine_config(),
        },
        service,
        dead_letters,
    })
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
