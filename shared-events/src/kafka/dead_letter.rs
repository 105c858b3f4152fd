//! Dead letters: messages that cannot be handled, parked on the dead-letter topic with
//! their original bytes and headers that say where they came from and why.

use rdkafka::error::KafkaResult;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
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
    pub fn from_message<M: Message>(message: &M, reason: &str, consumer: &str) -> Self {
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
            &self.consumer,
        ];
        DLQ_HEADERS
            .iter()
            .zip(values)
            .fold(OwnedHeaders::new(), |headers, (key, value)| {
                headers.insert(Header {
                    key,
                    value: Some(value),
                })
            })
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

/// Reads every dead letter now on the dead-letter topic, without joining a group, so
/// listing never changes anything. Blocking: call it off the async executor.
pub fn read_all(
    settings: &super::KafkaSettings,
    timeout: Duration,
) -> KafkaResult<Vec<DeadLetter>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Offset, TopicPartitionList};
    let topic = settings.topics().dead_letter;
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &settings.brokers)
        .set("group.id", "dead-letters-list")
        .set("enable.auto.commit", "false")
        .create()?;
    let metadata = consumer.fetch_metadata(Some(&topic), timeout)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut assignment = TopicPartitionList::new();
    let mut expected = 0i64;
    for &partition in &partitions {
        let (low, high) = consumer.fetch_watermarks(&topic, partition, timeout)?;
        expected += high - low;
        assignment.add_partition_offset(&topic, partition, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    // Read until the expected count is in and the topic has gone quiet: the watermarks
    // say how much to expect, but a broker may report them a message short.
    let deadline = std::time::Instant::now() + timeout;
    let mut letters = Vec::new();
    let mut received = 0i64;
    while std::time::Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(300)) {
            Some(Ok(message)) => {
                received += 1;
                letters.extend(DeadLetter::from_dead_letter_message(&message));
            }
            Some(Err(error)) => return Err(error),
            None if received >= expected => break,
            None => {}
        }
    }
    Ok(letters)
}

/// Sends dead letters back to the topics they came from, so their consumers try them
/// again (idempotently). Letters already replayed are not replayed twice: the replay
/// keeps its position in its own consumer group. `source_topic` limits the replay to one
/// source; at most `limit` letters are sent. Returns how many were.
pub async fn replay(
    settings: &super::KafkaSettings,
    source_topic: Option<&str>,
    limit: usize,
    idle: Duration,
) -> KafkaResult<usize> {
    use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
    let consumer: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &settings.brokers)
        .set("group.id", "dead-letters-replay")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()?;
    consumer.subscribe(&[&settings.topics().dead_letter])?;
    let producer = settings.producer()?;
    let mut replayed = 0;
    while replayed < limit {
        let message = match tokio::time::timeout(idle, consumer.recv()).await {
            Err(_) => break, // nothing more within `idle`
            Ok(message) => message?,
        };
        let letter = DeadLetter::from_dead_letter_message(&message);
        if let Some(letter) = letter.filter(|l| source_topic.is_none_or(|t| t == l.source_topic)) {
            let mut record = FutureRecord::to(&letter.source_topic)
                .payload(&letter.payload)
                .headers(OwnedHeaders::new().insert(Header {
                    key: "dlq.replayed",
                    value: Some("true"),
                }));
            if let Some(key) = &letter.key {
                record = record.key(key);
            }
            producer
                .send(record, Duration::from_secs(30))
                .await
                .map_err(|(error, _)| error)?;
            replayed += 1;
        }
        consumer.commit_message(&message, CommitMode::Sync)?;
    }
    Ok(replayed)
}

/// A dead letter as one JSON object (payload as text when it is UTF-8).
pub fn to_json(letter: &DeadLetter) -> String {
    serde_json::json!({
        "source_topic": letter.source_topic,
        "source_partition": letter.source_partition,
        "source_offset": letter.source_offset,
        "consumer": letter.consumer,
        "reason": letter.reason,
        "key": letter.key.as_deref().map(String::from_utf8_lossy),
        "payload": String::from_utf8_lossy(&letter.payload),
    })
    .to_string()
}
