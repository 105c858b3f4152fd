//! The notifier's Kafka consumer: the shared consumer engine
//! ([`shared_events::kafka::ConsumerLoop`]) with the mail service as its handler. The
//! engine gives it lanes by order id, the in-flight bound, offsets at the low-water mark,
//! retries in the order's own lane and the revoke that finishes or cancels a partition's
//! mails before another instance gets it; this module only says what an event's outcome
//! means to the engine.

use crate::service::{HandleError, MailService, Outcome};
use shared_events::kafka::{
    ConsumerLoop, DeadLetterPublisher, EngineConfig, EventHandler, HandlerError, KafkaSettings,
};
use shared_events::Event;

/// The `consumer` label of the notifier's consumer metrics (`saga_consumer_*`,
/// `saga_dead_letters_total`, `saga_consumer_lag_messages`).
pub const CONSUMER: &str = "notifier";

/// The consumer group and the topics it reads.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub consumer_group: String,
    pub topics: Vec<String>,
    pub engine: EngineConfig,
}

/// Creates the consumer and subscribes; nothing is fetched before `run`.
pub fn consumer(
    kafka: &KafkaSettings,
    config: PipelineConfig,
    service: MailService,
    dead_letters: DeadLetterPublisher,
) -> rdkafka::error::KafkaResult<ConsumerLoop<MailEvents>> {
    let topics: Vec<&str> = config.topics.iter().map(String::as_str).collect();
    ConsumerLoop::with_config(
        CONSUMER,
        kafka,
        &config.consumer_group,
        &topics,
        MailEvents(service),
        dead_letters,
        config.engine,
    )
}

/// One event through the mail service.
pub struct MailEvents(pub MailService);

impl EventHandler for MailEvents {
    async fn handle(&self, event: &Event) -> Result<(), HandlerError> {
        let event_type = event.event_type().as_str();
        let count = |outcome: &'static str| {
            metrics::counter!("notifier_events_total", "event_type" => event_type, "outcome" => outcome)
                .increment(1);
        };
        match self.0.handle(event).await {
            Ok(outcome) => {
                count(outcome_label(outcome));
                Ok(())
            }
            Err(HandleError::Unavailable(reason)) => {
                Err(HandlerError::Transient(anyhow::anyhow!(reason)))
            }
            Err(error) => {
                count("dead_letter");
                Err(HandlerError::Permanent(error.into()))
            }
        }
    }
}

/// The `outcome` label of `notifier_events_total`.
pub fn outcome_label(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::NoMail => "no_mail",
        Outcome::Sent(_) => "sent",
        Outcome::Failed(_) => "failed",
        Outcome::AlreadyDone(_) => "duplicate",
    }
}
