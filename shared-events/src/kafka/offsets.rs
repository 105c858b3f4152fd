//! Which offsets may be stored while many messages of a partition are handled at once.
//!
//! Per partition the tracker keeps the offsets fetched and not yet finished. An offset is
//! stored (and auto-committed by librdkafka) only up to the first unfinished one — the
//! low-water mark of Confluent's Parallel Consumer — so offset N+1 is never committed
//! while N is in flight, however the lanes interleave. Work finished beyond the mark is
//! simply redelivered after a crash; handlers are idempotent.
//!
//! Every assignment of a partition gets a new *generation*: a result that arrives for an
//! earlier generation (the partition was revoked and assigned again meanwhile) is
//! ignored, so a stale finish can never move the new owner's position.

use std::collections::{BTreeSet, HashMap};

/// A topic-partition.
pub type Partition = (String, i32);

#[derive(Debug, Default)]
struct PartitionOffsets {
    generation: u64,
    /// Fetched, not finished.
    pending: BTreeSet<i64>,
    /// Of `pending`, those given up (shutdown, revoke): they hold the position back but
    /// are no longer being worked on.
    abandoned: BTreeSet<i64>,
    /// The next offset to consume as last stored (or the first offset fetched).
    stored: Option<i64>,
    highest_fetched: Option<i64>,
}

impl PartitionOffsets {
    fn position(&self) -> Option<i64> {
        self.pending
            .first()
            .copied()
            .or_else(|| self.highest_fetched.map(|h| h + 1))
    }

    fn in_flight(&self) -> usize {
        self.pending.len() - self.abandoned.len()
    }

    fn uncommitted(&self) -> usize {
        match (self.highest_fetched, self.stored) {
            (Some(high), Some(stored)) => usize::try_from(high + 1 - stored).unwrap_or(0),
            _ => 0,
        }
    }
}

/// Pure bookkeeping; the engine stores what it returns.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    partitions: HashMap<Partition, PartitionOffsets>,
    next_generation: u64,
}

impl OffsetTracker {
    /// A message was fetched. Returns the partition's generation, which the message's
    /// work hands back to [`OffsetTracker::finished`].
    pub fn fetched(&mut self, topic: &str, partition: i32, offset: i64) -> u64 {
        let key = (topic.to_owned(), partition);
        if !self.partitions.contains_key(&key) {
            self.next_generation += 1;
            let fresh = PartitionOffsets {
                generation: self.next_generation,
                ..Default::default()
            };
            self.partitions.insert(key.clone(), fresh);
        }
        let p = self.partitions.get_mut(&key).expect("inserted above");
        p.pending.insert(offset);
        p.highest_fetched = Some(p.highest_fetched.map_or(offset, |h| h.max(offset)));
        if p.stored.is_none() {
            p.stored = Some(offset);
        }
        p.generation
    }

    /// A message's work is finished. Returns the next offset to store for its partition
    /// when that moved forward.
    pub fn finished(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        generation: u64,
    ) -> Option<i64> {
        let p = self.current(topic, partition, generation)?;
        if !p.pending.remove(&offset) {
            return None; // already finished
        }
        p.abandoned.remove(&offset);
        let position = p.position()?;
        if p.stored.is_some_and(|stored| position <= stored) {
            return None;
        }
        p.stored = Some(position);
        Some(position)
    }

    /// A message's work was given up: its offset is not stored and holds back its
    /// partition's position, but it no longer counts as in flight.
    pub fn abandoned(&mut self, topic: &str, partition: i32, offset: i64, generation: u64) {
        if let Some(p) = self.current(topic, partition, generation) {
            if p.pending.contains(&offset) {
                p.abandoned.insert(offset);
            }
        }
    }

    fn current(
        &mut self,
        topic: &str,
        partition: i32,
        generation: u64,
    ) -> Option<&mut PartitionOffsets> {
        self.partitions
            .get_mut(&(topic.to_owned(), partition))
            .filter(|p| p.generation == generation)
    }

    /// The partition was revoked (or assigned afresh): forget everything about it.
    pub fn forget(&mut self, topic: &str, partition: i32) {
        self.partitions.remove(&(topic.to_owned(), partition));
    }

    /// Offsets fetched and not yet stored, over all partitions.
    pub fn uncommitted(&self) -> usize {
        self.partitions
            .values()
            .map(PartitionOffsets::uncommitted)
            .sum()
    }

    /// Offsets of one partition fetched and not yet stored.
    pub fn uncommitted_in(&self, topic: &str, partition: i32) -> usize {
        self.partitions
            .get(&(topic.to_owned(), partition))
            .map_or(0, PartitionOffsets::uncommitted)
    }

    /// Messages fetched and not yet finished.
    pub fn in_flight(&self) -> usize {
        self.partitions
            .values()
            .map(PartitionOffsets::in_flight)
            .sum()
    }

    /// Messages fetched from these partitions and not yet finished.
    pub fn in_flight_in(&self, partitions: &[Partition]) -> usize {
        partitions
            .iter()
            .filter_map(|key| self.partitions.get(key))
            .map(PartitionOffsets::in_flight)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_stored_only_up_to_the_first_unfinished_one() {
        let mut t = OffsetTracker::default();
        let g = (10..15).map(|o| t.fetched("orders", 0, o)).last().unwrap();
        assert_eq!(t.uncommitted(), 5);
        // 11 and 12 finish before 10: nothing may be stored.
        assert_eq!(t.finished("orders", 0, 11, g), None);
        assert_eq!(t.finished("orders", 0, 12, g), None);
        assert_eq!(t.in_flight(), 3);
        // 10 finishes: everything up to the still-running 13 can be stored.
        assert_eq!(t.finished("orders", 0, 10, g), Some(13));
        assert_eq!(t.uncommitted_in("orders", 0), 2);
        assert_eq!(t.finished("orders", 0, 14, g), None);
        assert_eq!(t.finished("orders", 0, 13, g), Some(15));
        assert_eq!(t.uncommitted(), 0);
        // Finishing twice changes nothing.
        assert_eq!(t.finished("orders", 0, 13, g), None);
    }

    #[test]
    fn partitions_are_tracked_separately() {
        let mut t = OffsetTracker::default();
        let a = t.fetched("orders", 0, 5);
        let b = t.fetched("orders", 1, 7);
        let c = t.fetched("payments", 0, 1);
        assert_eq!(t.finished("orders", 1, 7, b), Some(8));
        assert_eq!(t.finished("payments", 0, 1, c), Some(2));
        assert_eq!(t.in_flight(), 1);
        assert_eq!(t.finished("orders", 0, 5, a), Some(6));
    }

    #[test]
    fn abandoned_work_holds_the_position_but_is_not_in_flight() {
        let mut t = OffsetTracker::default();
        let g = (0..3).map(|o| t.fetched("orders", 0, o)).last().unwrap();
        t.abandoned("orders", 0, 0, g);
        assert_eq!(t.in_flight(), 2);
        assert_eq!(t.in_flight_in(&[("orders".to_owned(), 0)]), 2);
        assert_eq!(t.finished("orders", 0, 1, g), None);
        assert_eq!(
            t.finished("orders", 0, 2, g),
            None,
            "offset 0 was never done"
        );
        assert_eq!(t.in_flight(), 0);
        assert_eq!(t.uncommitted(), 3);
    }

    #[test]
    fn a_finish_from_an_earlier_assignment_is_ignored() {
        let mut t = OffsetTracker::default();
        let old = t.fetched("orders", 0, 1);
        t.fetched("orders", 0, 2);
        t.forget("orders", 0);
        assert_eq!(t.uncommitted(), 0);
        // Assigned again: the same offsets come again under a new generation.
        let new = t.fetched("orders", 0, 1);
        assert_ne!(old, new);
        assert_eq!(t.finished("orders", 0, 1, old), None, "stale result");
        assert_eq!(t.in_flight(), 1);
        assert_eq!(t.finished("orders", 0, 1, new), Some(2));
    }
}
