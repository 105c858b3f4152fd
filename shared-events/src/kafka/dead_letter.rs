//! Dead letters: messages that cannot be handled, parked on the dead-letter topic with
//! their original bytes and headers that say where they came from and why.

use super::event_headers;
use rdkafka::error::KafkaResult;
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::time::Duration;

/// The headers a dead letter carries: where it came from, which consumer gave up on it
/// and why.
pub const DLQ_HEADERS: [&str; 5] = [
    "dlq.source.topic",
    "dlq.source.partition",
    "dlq.source.offset",
    "dlq.reason",
    "dlq.consumer",
];

#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub source_topic: String,
    pub source_partition: i32,
    pub source_offset: i64,
    pub reason: String,
    /// The consumer (group) that dead-lettered it.
    pub consumer: String,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
}

impl DeadLetter {
    pub fn from_message(message: &BorrowedMessage<'_>, reason: &str, consumer: &str) -> Self {
        Self {
            source_topic: message.topic().to_owned(),
            source_partition: message.partition(),
            source_offset: message.offset(),
            reason: reason.to_owned(),
            consumer: consumer.to_owned(),
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().unwrap_or_default().to_vec(),
        }
    }

    /// Reads a dead letter back from the dead-letter topic (for operators and tests).
    pub fn from_dead_letter_message<M: Message>(message: &M) -> Option<Self> {
        let header = |name: &str| -> Option<String> {
            message.headers().and_then(|headers| {
                headers
                    .iter()
                    .find(|h| h.key == name)
                    .and_then(|h| h.value)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            })
        };
        Some(Self {
            source_topic: header(DLQ_HEADERS[0])?,
            source_partition: header(DLQ_HEADERS[1])?.parse().ok()?,
            source_offset: header(DLQ_HEADERS[2])?.parse().ok()?,
            reason: header(DLQ_HEADERS[3])?,
            consumer: header(DLQ_HEADERS[4]).unwrap_or_default(),
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().unwrap_or_default().to_vec(),
        })
    }

    fn headers(&self) -> OwnedHeaders {
        let partition = self.source_partition.to_string();
        let offset = self.source_offset.to_string();
        let values = [
            self.source_topic.as_str(),
            &partition,
            &offset,
            &self.reason,
        ];
        DLQ_HEADERS.iter().zip(values).fold(
            event_headers("DeadLetter", ""),
            |headers, (key, value)| {
                headers.insert(Header {
                    key,
                    value: Some(value),
                })
            },
        )
    }
}

#[derive(Clone)]
pub struct DeadLetterPublisher {
    producer: FutureProducer,
    topic: String,
}

impl DeadLetterPublisher {
    pub fn new(producer: FutureProducer, topic: &str) -> Self {
        Self {
            producer,
            topic: topic.to_owned(),
        }
    }

    pub async fn publish(&self, letter: &DeadLetter) -> KafkaResult<()> {
        let mut record = FutureRecord::to(&self.topic)
            .payload(&letter.payload)
            .headers(letter.headers());
        if let Some(key) = &letter.key {
            record = record.key(key);
        }
        self.producer
            .send(record, Duration::from_secs(30))
            .await
            .map(|_| ())
            .map_err(|(error, _)| error)
    }
}
