//! The node-local placement table: which shard of this broker owns which partition replica.
//!
//! It is not cluster metadata (another broker places its replicas its own way, and a restart may
//! place them anew): each broker derives it from the replicas the metadata gives it, putting a new
//! replica on the least-loaded shard, so a topic's partitions spread round-robin.
//!
//! Ownership: an immutable value. Whoever changes placement builds a new one and hands every
//! shard an `Arc` of it; shards read it without locks.

use std::collections::HashMap;

use super::runtime::ShardId;
use crate::model::TopicPartition;

/// Which shard owns each partition replica hosted by this broker.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Placement {
    owners: HashMap<TopicPartition, ShardId>,
    load: Vec<usize>,
}

impl Placement {
    /// An empty placement over `shards` shards.
    pub fn new(shards: usize) -> Self {
        Self { owners: HashMap::new(), load: vec![0; shards.max(1)] }
    }

    /// The shard owning `partition`, if this broker hosts it.
    pub fn shard_of(&self, partition: &TopicPartition) -> Option<ShardId> {
        self.owners.get(partition).copied()
    }

    /// Replicas per shard.
    pub fn load(&self) -> &[usize] {
        &self.load
    }

    /// Every placed replica and its shard.
    pub fn iter(&self) -> impl Iterator<Item = (&TopicPartition, &ShardId)> {
        self.owners.iter()
    }

    /// Number of placed replicas.
    pub fn len(&self) -> usize {
        self.owners.len()
    }

    /// True when nothing is placed.
    pub fn is_empty(&self) -> bool {
        self.owners.is_empty()
    }

    /// This placement with `wanted` exactly: replicas no longer wanted are dropped, the ones
    /// already placed keep their shard, and new ones (in the given order) go to the least-loaded
    /// shard, the lowest-numbered on ties.
    pub fn reconciled(&self, wanted: impl IntoIterator<Item = TopicPartition>) -> Self {
        let wanted: Vec<TopicPartition> = wanted.into_iter().collect();
        let mut next = Self::new(self.load.len());
        let mut fresh = Vec::new();
        for partition in wanted {
            match self.owners.get(&partition) {
                Some(&shard) => {
                    next.owners.insert(partition, shard);
                    next.load[shard] += 1;
                }
                None => fresh.push(partition),
            }
        }
        for partition in fresh {
            if next.owners.contains_key(&partition) {
                continue;
            }
            let shard = (0..next.load.len()).min_by_key(|&s| (next.load[s], s)).expect("at least one shard");
            next.owners.insert(partition, shard);
            next.load[shard] += 1;
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(topic: u128, index: i32) -> TopicPartition {
        (uuid::Uuid::from_u128(topic), index)
    }

    #[test]
    fn new_replicas_go_to_the_least_loaded_shard_and_placed_ones_stay() {
        let empty = Placement::new(3);
        let first = empty.reconciled((0..7).map(|i| tp(1, i)));
        let shards: Vec<ShardId> = (0..7).map(|i| first.shard_of(&tp(1, i)).unwrap()).collect();
        assert_eq!(shards, vec![0, 1, 2, 0, 1, 2, 0]);
        assert_eq!(first.load(), &[3, 2, 2]);
        // Drop partition 1 of topic 1, add two of topic 2: the survivors keep their shards.
        let wanted = (0..7).filter(|i| *i != 1).map(|i| tp(1, i)).chain([tp(2, 0), tp(2, 1)]);
        let second = first.reconciled(wanted);
        assert_eq!(second.shard_of(&tp(1, 1)), None);
        for i in [0, 2, 3, 4, 5, 6] {
            assert_eq!(second.shard_of(&tp(1, i)), first.shard_of(&tp(1, i)));
        }
        assert_eq!(second.shard_of(&tp(2, 0)), Some(1));
        assert_eq!(second.shard_of(&tp(2, 1)), Some(1), "ties go to the lowest shard");
        assert_eq!(second.load(), &[3, 3, 2]);
    }
}
