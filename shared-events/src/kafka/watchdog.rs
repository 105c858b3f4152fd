//! The assignment watchdog: rejoins the consumer group when this consumer owns nothing
//! while events wait in partitions nobody is consuming.
//!
//! Why: a group can look settled while some partitions belong to nobody, and their
//! events then wait for a rebalance that may never come. The fault suite's broker
//! restart on tansu 0.6 showed two such states: a member handed an empty assignment,
//! and a generation led by a member the coordinator had already evicted (every
//! SyncGroup answered "rebalance in progress"; see [`super::SESSION_TIMEOUT`] for how
//! that state arises and how it is avoided). A healthy broker never does this, so the
//! check is cheap insurance, not a protocol of its own.
//!
//! Every [`CHECK_EVERY`] the watchdog looks at this consumer's own assignment. Only when
//! it is empty does it ask the broker, for every partition of its topics, the group's
//! committed offset (OffsetFetch) and the high watermark (ListOffsets). A partition with
//! events past its committed offset whose committed offset did not move over
//! [`STUCK_CHECKS`] checks in a row is stuck: nobody consumes it. Then the consumer
//! warns, unsubscribes (leaving the group), pauses [`REJOIN_PAUSE`] and subscribes
//! again — a fresh JoinGroup, so the coordinator runs a new rebalance. A consumer that
//! owns something is never disturbed, and an idle member of a group whose partitions
//! move (more instances than partitions) sees nothing stuck.
//!
//! What it cannot do: cure a coordinator that keeps an evicted leader (seen: rejoins
//! every 6 s for minutes, none assigned). Its warning is then the operator's signal;
//! restarting the broker clears that state. (DescribeGroups would name the owners
//! directly, but tansu 0.6 does not answer it.)

use rdkafka::consumer::{Consumer, ConsumerContext, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the assignment is checked.
pub const CHECK_EVERY: Duration = Duration::from_secs(10);
/// Checks in a row a lagging partition's committed offset must stand still.
pub const STUCK_CHECKS: usize = 3;
/// Between leaving the group and joining it again, so the coordinator sees the leave.
pub const REJOIN_PAUSE: Duration = Duration::from_secs(3);
/// How long one broker request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Per partition with events past its committed offset: that committed offset.
pub type Lagging = BTreeMap<(String, i32), i64>;

/// Runs until `shutdown`; see the module doc. `name` labels the log lines.
pub async fn watch_assignment<C: ConsumerContext + 'static>(
    name: String,
    consumer: Arc<StreamConsumer<C>>,
    topics: Vec<String>,
    shutdown: CancellationToken,
) {
    let mut history: Vec<Lagging> = Vec::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(CHECK_EVERY) => {}
        }
        let check = {
            let (consumer, topics) = (consumer.clone(), topics.clone());
            tokio::task::spawn_blocking(move || lagging_while_idle(&consumer, &topics))
        };
        match check.await {
            Ok(Ok(Some(lagging))) => history.push(lagging),
            Ok(Ok(None)) => history.clear(),
            Ok(Err(error)) => {
                tracing::debug!(consumer = %name, %error, "Assignment check skipped.");
                history.clear();
                continue;
            }
            Err(_) => return, // the runtime is shutting down
        }
        if history.len() > STUCK_CHECKS {
            history.remove(0);
        }
        let stuck = stuck(&history);
        if stuck.is_empty() || history.len() < STUCK_CHECKS || shutdown.is_cancelled() {
            continue;
        }
        tracing::warn!(
            consumer = %name, stuck = ?stuck,
            "This consumer owns no partition while these have not moved for {:?}; rejoining the group.",
            CHECK_EVERY * (STUCK_CHECKS as u32 - 1)
        );
        // Leave, then a fresh JoinGroup: the coordinator must run a new rebalance.
        let left = {
            let consumer = consumer.clone();
            tokio::task::spawn_blocking(move || consumer.unsubscribe())
        };
        if left.await.is_err() {
            return;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(REJOIN_PAUSE) => {}
        }
        let rejoin = {
            let consumer = consumer.clone();
            let topics = topics.clone();
            tokio::task::spawn_blocking(move || {
                let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
                consumer.subscribe(&topics)
            })
        };
        if let Ok(Err(error)) = rejoin.await {
            tracing::error!(consumer = %name, %error, "Could not subscribe again.");
        }
        history.clear();
    }
}

/// The partitions lagging in every snapshot with the same committed offset in each.
pub fn stuck(history: &[Lagging]) -> Vec<(String, i32)> {
    let Some((first, rest)) = history.split_first() else {
        return Vec::new();
    };
    first
        .iter()
        .filter(|(key, committed)| rest.iter().all(|l| l.get(*key) == Some(committed)))
        .map(|(key, _)| key.clone())
        .collect()
}

/// `None` when this consumer owns partitions; otherwise the lagging partitions of
/// `topics` (see [`lagging_partitions`]).
fn lagging_while_idle<C: ConsumerContext>(
    consumer: &StreamConsumer<C>,
    topics: &[String],
) -> Result<Option<Lagging>, String> {
    let own = consumer.assignment().map_err(|e| e.to_string())?;
    if own.count() > 0 {
        return Ok(None);
    }
    lagging_partitions(consumer, topics).map(Some)
}

/// The partitions of `topics` whose high watermark is past the group's committed offset
/// (the low watermark when nothing was committed), with that committed offset.
pub fn lagging_partitions<C: ConsumerContext>(
    consumer: &StreamConsumer<C>,
    topics: &[String],
) -> Result<Lagging, String> {
    let mut all = TopicPartitionList::new();
    for topic in topics {
        let metadata = consumer
            .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
            .map_err(|e| format!("metadata: {e}"))?;
        for t in metadata.topics() {
            for p in t.partitions() {
                all.add_partition(t.name(), p.id());
            }
        }
    }
    let committed = consumer
        .committed_offsets(all, REQUEST_TIMEOUT)
        .map_err(|e| format!("committed offsets: {e}"))?;
    let mut lagging = Lagging::new();
    for element in committed.elements() {
        let (topic, partition) = (element.topic(), element.partition());
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, REQUEST_TIMEOUT)
            .map_err(|e| format!("watermarks: {e}"))?;
        let position = match element.offset() {
            Offset::Offset(n) => n,
            _ => low,
        };
        if high > position {
            lagging.insert((topic.to_owned(), partition), position);
        }
    }
    Ok(lagging)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lagging(entries: &[(&str, i32, i64)]) -> Lagging {
        entries
            .iter()
            .map(|(t, p, o)| (((*t).to_owned(), *p), *o))
            .collect()
    }

    #[test]
    fn a_partition_is_stuck_only_when_it_lags_at_the_same_offset_in_every_check() {
        let history = [
            lagging(&[("orders", 0, 5), ("orders", 1, 7), ("orders", 2, 1)]),
            lagging(&[("orders", 0, 5), ("orders", 1, 9), ("orders", 2, 1)]),
            lagging(&[("orders", 0, 5), ("orders", 2, 1)]),
        ];
        assert_eq!(
            stuck(&history),
            vec![("orders".to_owned(), 0), ("orders".to_owned(), 2)]
        );
        // Partition 1 moved (7 → 9) and then caught up: not stuck.
        assert!(stuck(&history[..0]).is_empty());
        assert!(stuck(&[lagging(&[]), lagging(&[("orders", 0, 5)])]).is_empty());
    }
}
