//! The at-least-once consumer loop every service runs.
//!
//! For each message, in partition order: decode it; hand it to the service's handler;
//! retry transient failures with exponential backoff; dead-letter what cannot be decoded,
//! what the handler rejects as permanent and what keeps failing; then, and only then,
//! store the offset. A message is never skipped without a dead letter, and a dead letter
//! that cannot be published stops the partition rather than losing the message. Beside
//! the loop runs the assignment watchdog ([`super::watch_assignment`]).

use super::{DeadLetter, DeadLetterPublisher, KafkaSettings, SagaConsumerContext};
use crate::event::Event;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// A service's reaction to one event. It must be idempotent: the same event may arrive
/// again after a crash or a rebalance.
pub trait EventHandler: Send + Sync + 'static {
    fn handle(&self, event: &Event) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Worth retrying: a database or gateway hiccup.
    #[error("transient failure: {0:#}")]
    Transient(anyhow::Error),
    /// Retrying cannot help: the event contradicts what the service knows.
    #[error("permanent failure: {0:#}")]
    Permanent(anyhow::Error),
}

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `attempt + 1`: doubling, capped, with up to 50% jitter so
    /// that instances retrying together do not hammer a recovering dependency in step.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let doubled = self
            .initial_backoff
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)));
        let capped = doubled.min(self.max_backoff);
        let jitter = capped.mul_f64(jitter_fraction() * 0.5);
        capped.saturating_sub(jitter)
    }
}

/// A cheap pseudo-random fraction in [0, 1): jitter needs spread, not quality.
fn jitter_fraction() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    f64::from(nanos % 1000) / 1000.0
}

pub struct ConsumerLoop<H> {
    name: String,
    group_id: String,
    topics: Vec<String>,
    consumer: Arc<StreamConsumer<SagaConsumerContext>>,
    handler: H,
    dead_letters: DeadLetterPublisher,
    retry: RetryPolicy,
}

impl<H: EventHandler> ConsumerLoop<H> {
    /// Subscribes `group_id` to `topics`. `name` labels the loop in logs.
    pub fn new(
        name: &str,
        settings: &KafkaSettings,
        group_id: &str,
        topics: &[&str],
        handler: H,
        dead_letters: DeadLetterPublisher,
    ) -> rdkafka::error::KafkaResult<Self> {
        let consumer = settings
            .consumer_with_statistics(group_id, SagaConsumerContext::new(name, group_id))?;
        consumer.subscribe(topics)?;
        // Every series exists from the start (at 0), so rates and alerts see them.
        for outcome in ["handled", "dead_lettered"] {
            metrics::counter!("saga_consumer_messages_total", "consumer" => name.to_owned(), "outcome" => outcome)
                .increment(0);
        }
        metrics::counter!("saga_consumer_retries_total", "consumer" => name.to_owned())
            .increment(0);
        metrics::counter!("saga_dead_letters_total", "consumer" => name.to_owned()).increment(0);
        Ok(Self {
            name: name.to_owned(),
            group_id: group_id.to_owned(),
            topics: topics.iter().map(|t| (*t).to_owned()).collect(),
            consumer: Arc::new(consumer),
            handler,
            dead_letters,
            retry: RetryPolicy::default(),
        })
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Consumes until `shutdown` is cancelled, then commits what was stored. A message
    /// being handled when shutdown comes is finished first.
    pub async fn run(self, shutdown: CancellationToken) {
        tracing::info!(consumer = %self.name, "Consumer started.");
        let watchdog = tokio::spawn(super::watch_assignment(
            self.name.clone(),
            self.consumer.clone(),
            self.topics.clone(),
            shutdown.clone(),
        ));
        loop {
            let message = tokio::select! {
                _ = shutdown.cancelled() => break,
                message = self.consumer.recv() => message,
            };
            match message {
                Ok(message) => self.process(&message, &shutdown).await,
                Err(error) => {
                    tracing::warn!(consumer = %self.name, %error, "Kafka receive failed.");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        watchdog.abort();
        if let Err(error) = self.consumer.commit_consumer_state(CommitMode::Sync) {
            tracing::debug!(consumer = %self.name, %error, "Nothing committed at shutdown.");
        }
        tracing::info!(consumer = %self.name, "Consumer stopped.");
    }

    /// Handles one message in its trace (see [`super::message_span`]).
    async fn process(&self, message: &BorrowedMessage<'_>, shutdown: &CancellationToken) {
        let decoded = Event::from_json(message.payload().unwrap_or_default());
        let span = super::message_span(&self.name, message, decoded.as_ref().ok());
        self.process_decoded(message, decoded, shutdown)
            .instrument(span)
            .await
    }

    async fn process_decoded(
        &self,
        message: &BorrowedMessage<'_>,
        decoded: Result<Event, crate::DecodeError>,
        shutdown: &CancellationToken,
    ) {
        let reason = match decoded {
            Err(error) => Some(error.to_string()),
            Ok(event) => self.handle_with_retries(&event, shutdown).await,
        };
        if shutdown.is_cancelled() && reason.as_deref() == Some(INTERRUPTED) {
            return; // not handled: leave the offset so the message comes again
        }
        let outcome = if reason.is_some() {
            "dead_lettered"
        } else {
            "handled"
        };
        if let Some(reason) = reason {
            if !self.dead_letter(message, &reason, shutdown).await {
                return;
            }
        }
        metrics::counter!("saga_consumer_messages_total", "consumer" => self.name.clone(), "outcome" => outcome)
            .increment(1);
        if let Err(error) = self.consumer.store_offset_from_message(message) {
            tracing::warn!(consumer = %self.name, %error, "Could not store offset.");
        }
    }

    /// Handles one event; `None` when done, `Some(reason)` when it must be dead-lettered.
    async fn handle_with_retries(
        &self,
        event: &Event,
        shutdown: &CancellationToken,
    ) -> Option<String> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.handler.handle(event).await {
                Ok(()) => return None,
                Err(HandlerError::Permanent(error)) => return Some(format!("{error:#}")),
                Err(HandlerError::Transient(error)) if attempt >= self.retry.max_attempts => {
                    return Some(format!("gave up after {attempt} attempts: {error:#}"));
                }
                Err(HandlerError::Transient(error)) => {
                    metrics::counter!("saga_consumer_retries_total", "consumer" => self.name.clone()).increment(1);
                    tracing::warn!(
                        consumer = %self.name, event_id = %event.event_id, attempt, error = %format!("{error:#}"),
                        "Handling failed; retrying."
                    );
                    tokio::select! {
                        _ = shutdown.cancelled() => return Some(INTERRUPTED.to_owned()),
                        _ = tokio::time::sleep(self.retry.backoff(attempt)) => {}
                    }
                }
            }
        }
    }

    /// Publishes the dead letter, retrying until it is out. Returns false if shutdown
    /// came first (the offset is then not stored and the message comes again).
    async fn dead_letter(
        &self,
        message: &BorrowedMessage<'_>,
        reason: &str,
        shutdown: &CancellationToken,
    ) -> bool {
        let letter = DeadLetter::from_message(message, reason, &self.group_id);
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.dead_letters.publish(&letter).await {
                Ok(()) => {
                    metrics::counter!("saga_dead_letters_total", "consumer" => self.name.clone())
                        .increment(1);
                    tracing::warn!(
                        consumer = %self.name, topic = %letter.source_topic, partition = letter.source_partition,
                        offset = letter.source_offset, %reason, "Message dead-lettered."
                    );
                    return true;
                }
                Err(error) => {
                    tracing::error!(consumer = %self.name, %error, attempt, "Could not publish a dead letter; retrying.");
                    tokio::select! {
                        _ = shutdown.cancelled() => return false,
                        _ = tokio::time::sleep(self.retry.backoff(attempt)) => {}
                    }
                }
            }
        }
    }
}

const INTERRUPTED: &str = "interrupted by shutdown";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let policy = RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
        };
        let first = policy.backoff(1);
        assert!(first <= Duration::from_millis(100) && first >= Duration::from_millis(50));
        let third = policy.backoff(3);
        assert!(third <= Duration::from_millis(400) && third >= Duration::from_millis(200));
        assert!(policy.backoff(30) <= Duration::from_secs(1));
    }
}
