//! Idempotent producers (KIP-98): per partition, each producer id's epoch and its last few
//! batches' sequence ranges, so a retried batch is recognised and answered with its original
//! offset instead of being appended twice, and a gap in sequences is refused.
//!
//! Ownership: one table per partition, owned by the partition's shard. It is saved to the
//! partition directory now and then (and at close) and rebuilt on open from that snapshot plus
//! the batches written after it.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::PartitionError;
use crate::io::{self, Faults};
use crate::model::batch::BatchHeader;

/// Batches remembered per producer for duplicate detection (Kafka keeps 5, the most a client
/// may have in flight with idempotence).
const BATCHES_PER_PRODUCER: usize = 5;
/// Producers remembered per partition at most; the least recently active go first.
const MAX_PRODUCERS_PER_PARTITION: usize = 10_000;
/// A producer silent this long is forgotten (Kafka's producer.id.expiration.ms).
pub const PRODUCER_EXPIRATION_MS: i64 = 24 * 3600 * 1000;
/// File holding the snapshot.
const SNAPSHOT_FILE: &str = "producer-state.json";

/// One remembered batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SequenceRange {
    /// First sequence.
    pub first_seq: i32,
    /// Last sequence.
    pub last_seq: i32,
    /// Offset the batch was given.
    pub base_offset: i64,
}

/// What the table knows of one producer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerEntry {
    /// Current epoch.
    pub epoch: i16,
    /// Last batches, oldest first.
    pub batches: VecDeque<SequenceRange>,
    /// Wall-clock time of the last append.
    pub last_append_ms: i64,
}

/// The outcome of checking a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Append it.
    Append,
    /// Already appended at this offset: acknowledge without appending.
    Duplicate {
        /// Offset it was given.
        base_offset: i64,
    },
}

/// Producer state of one partition.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerTable {
    producers: HashMap<i64, ProducerEntry>,
    /// Offsets below this are reflected in the table.
    pub covered_offset: i64,
}

fn last_seq(header: &BatchHeader) -> i32 {
    // Sequences wrap from i32::MAX back to 0.
    ((i64::from(header.base_sequence) + i64::from(header.last_offset_delta)) % (i64::from(i32::MAX) + 1)) as i32
}

fn next_seq(seq: i32) -> i32 {
    if seq == i32::MAX { 0 } else { seq + 1 }
}

/// One producer as DescribeProducers shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProducerSummary {
    /// Producer id.
    pub producer_id: i64,
    /// Its current epoch.
    pub epoch: i16,
    /// Sequence of its last record (-1: none remembered).
    pub last_sequence: i32,
    /// Wall-clock time of its last append.
    pub last_append_ms: i64,
}

impl ProducerTable {
    /// Every remembered producer, by id.
    pub fn summaries(&self) -> Vec<ProducerSummary> {
        let mut out: Vec<ProducerSummary> = self
            .producers
            .iter()
            .map(|(id, entry)| ProducerSummary {
                producer_id: *id,
                epoch: entry.epoch,
                last_sequence: entry.batches.back().map_or(-1, |b| b.last_seq),
                last_append_ms: entry.last_append_ms,
            })
            .collect();
        out.sort_by_key(|p| p.producer_id);
        out
    }

    /// Checks a batch about to be appended.
    pub fn check(&self, header: &BatchHeader) -> Result<SequenceCheck, PartitionError> {
        if header.producer_id < 0 {
            return Ok(SequenceCheck::Append);
        }
        let Some(entry) = self.producers.get(&header.producer_id) else {
            // Unknown producer (new, or forgotten after expiry): accept from any sequence.
            return Ok(SequenceCheck::Append);
        };
        if header.producer_epoch < entry.epoch {
            return Err(PartitionError::InvalidProducerEpoch {
                producer_id: header.producer_id,
                epoch: header.producer_epoch,
                current: entry.epoch,
            });
        }
        if header.producer_epoch > entry.epoch {
            return if header.base_sequence == 0 {
                Ok(SequenceCheck::Append)
            } else {
                Err(PartitionError::OutOfOrderSequence {
                    producer_id: header.producer_id,
                    expected: 0,
                    found: header.base_sequence,
                })
            };
        }
        let last = last_seq(header);
        if let Some(dup) = entry.batches.iter().find(|b| b.first_seq == header.base_sequence && b.last_seq == last) {
            return Ok(SequenceCheck::Duplicate { base_offset: dup.base_offset });
        }
        let expected = entry.batches.back().map_or(header.base_sequence, |b| next_seq(b.last_seq));
        if header.base_sequence != expected {
            return Err(PartitionError::OutOfOrderSequence {
                producer_id: header.producer_id,
                expected,
                found: header.base_sequence,
            });
        }
        Ok(SequenceCheck::Append)
    }

    /// Records an appended batch (its header carries the base offset it was given).
    pub fn record(&mut self, header: &BatchHeader, now_ms: i64) {
        self.covered_offset = self.covered_offset.max(header.last_offset() + 1);
        if header.producer_id < 0 {
            return;
        }
        let entry = self.producers.entry(header.producer_id).or_insert_with(|| ProducerEntry {
            epoch: header.producer_epoch,
            batches: VecDeque::new(),
            last_append_ms: now_ms,
        });
        if header.producer_epoch != entry.epoch {
            entry.epoch = header.producer_epoch;
            entry.batches.clear();
        }
        entry.batches.push_back(SequenceRange {
            first_seq: header.base_sequence,
            last_seq: last_seq(header),
            base_offset: header.base_offset,
        });
        while entry.batches.len() > BATCHES_PER_PRODUCER {
            entry.batches.pop_front();
        }
        entry.last_append_ms = now_ms;
        if self.producers.len() > MAX_PRODUCERS_PER_PARTITION {
            self.evict_oldest();
        }
    }

    fn evict_oldest(&mut self) {
        if let Some((&id, _)) = self.producers.iter().min_by_key(|(_, e)| e.last_append_ms) {
            self.producers.remove(&id);
        }
    }

    /// Forgets producers silent since before `now_ms - PRODUCER_EXPIRATION_MS`.
    pub fn expire(&mut self, now_ms: i64) {
        self.producers.retain(|_, e| now_ms - e.last_append_ms <= PRODUCER_EXPIRATION_MS);
    }

    /// Number of producers known.
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    /// True when no producer is known.
    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Path of the snapshot in a partition directory.
    pub fn snapshot_path(dir: &Path) -> PathBuf {
        dir.join(SNAPSHOT_FILE)
    }

    /// Loads the snapshot of a partition directory (empty when missing or unreadable: the
    /// partition then rebuilds the table from its log).
    pub async fn load(dir: &Path, faults: &Faults) -> Self {
        match io::fs::read(&Self::snapshot_path(dir), faults).await {
            Ok(Some(bytes)) => serde_json::from_slice(&bytes).unwrap_or_default(),
            Ok(None) => Self::default(),
            Err(err) => {
                tracing::warn!(dir = %dir.display(), error = %err, "cannot read the producer snapshot; rebuilding it");
                Self::default()
            }
        }
    }

    /// Serialized snapshot.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("producer table serializes")
    }
}

/// Writes a snapshot atomically; a failure only costs rebuild time at the next open.
pub async fn save_snapshot(dir: &Path, bytes: Vec<u8>, faults: &Faults) {
    if let Err(err) = io::fs::write_atomic(&ProducerTable::snapshot_path(dir), bytes, faults).await {
        tracing::warn!(dir = %dir.display(), error = %err, "could not save producer state");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(producer_id: i64, epoch: i16, base_sequence: i32, records: i32, base_offset: i64) -> BatchHeader {
        BatchHeader {
            base_offset,
            batch_length: 100,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: records - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id,
            producer_epoch: epoch,
            base_sequence,
            records_count: records,
        }
    }

    #[test]
    fn retries_are_duplicates_and_gaps_are_refused() {
        let mut table = ProducerTable::default();
        let first = header(7, 0, 0, 3, 100);
        assert_eq!(table.check(&first).ok(), Some(SequenceCheck::Append));
        table.record(&first, 1);
        assert_eq!(table.check(&header(7, 0, 0, 3, -1)).ok(), Some(SequenceCheck::Duplicate { base_offset: 100 }));
        assert!(matches!(
            table.check(&header(7, 0, 5, 1, -1)),
            Err(PartitionError::OutOfOrderSequence { expected: 3, .. })
        ));
        let second = header(7, 0, 3, 2, 103);
        assert_eq!(table.check(&second).ok(), Some(SequenceCheck::Append));
        table.record(&second, 2);
        assert!(table.check(&header(7, -1, 5, 1, -1)).is_err(), "older epoch is fenced");
        assert!(matches!(table.check(&header(7, 1, 5, 1, -1)), Err(PartitionError::OutOfOrderSequence { .. })));
        assert_eq!(table.check(&header(7, 1, 0, 1, -1)).ok(), Some(SequenceCheck::Append), "new epoch starts at 0");
        assert_eq!(table.check(&header(-1, -1, -1, 1, -1)).ok(), Some(SequenceCheck::Append), "not idempotent");
    }

    #[test]
    fn sequences_wrap_and_snapshots_round_trip() {
        let mut table = ProducerTable::default();
        let near_end = header(1, 0, i32::MAX - 1, 2, 0);
        table.record(&near_end, 1);
        assert_eq!(table.check(&header(1, 0, 0, 1, -1)).ok(), Some(SequenceCheck::Append));
        let restored: ProducerTable = serde_json::from_slice(&table.to_json()).unwrap();
        assert_eq!(restored, table);
        table.expire(PRODUCER_EXPIRATION_MS + 2);
        assert!(table.is_empty());
    }
}
