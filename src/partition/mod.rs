//! The partition layer: the one owner of a partition replica's state above its log.
//!
//! A [`Partition`] holds the log and everything Kafka keeps beside it: idempotent-producer state,
//! the leader-epoch cache, the high watermark (and last stable offset), the waiters of produce
//! acknowledgements and fetch long-polls, and the decision of when an append may be
//! acknowledged. Storage below it knows nothing of producers or requests; the Kafka protocol
//! above it talks to it through [`Partition::replicate`], [`Partition::read`] and friends, and
//! gets typed [`PartitionError`]s back.
//!
//! Ownership: a partition belongs to exactly one shard for its whole life (see
//! [`PartitionManager`]); it is `!Send`, and other shards reach it only by running work on its
//! shard.

mod epochs;
mod isr;
mod manager;
mod producers;
mod progress;
mod replica;

pub use epochs::LeaderEpochCache;
pub use isr::{Assignment, ReplicaSet};
pub use manager::{CleanerSettings, PartitionManager, PartitionOpen, PartitionStats, run_cleaner, run_retention};
pub use producers::{PRODUCER_EXPIRATION_MS, ProducerSummary, ProducerTable, SequenceCheck};
pub use progress::ChangeSignal;
pub use replica::{Committed, Partition, PartitionRef, Replicated, partition_dir};

use crate::model::BatchError;
use crate::storage::{LogConfig, StorageError};

/// What an acknowledgement waits for (the Produce request's `acks`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acks {
    /// acks=0: nothing (the client gets no answer).
    None,
    /// acks=1: the leader has the batch (and, under `flush = always`, has synced it).
    Leader,
    /// acks=all: every in-sync replica has it, i.e. the high watermark passed it.
    All,
}

impl Acks {
    /// The `acks` field of a Produce request; `None` for values Kafka refuses.
    pub fn from_wire(acks: i16) -> Option<Self> {
        match acks {
            0 => Some(Self::None),
            1 => Some(Self::Leader),
            -1 => Some(Self::All),
            _ => None,
        }
    }
}

/// How far a read may see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isolation {
    /// Consumers with read_uncommitted: below the high watermark.
    HighWatermark,
    /// Consumers with read_committed: below the last stable offset.
    Committed,
    /// Replicas and the broker's own readers: up to the log end.
    LogEnd,
}

impl Isolation {
    /// The isolation of a consumer's request (`isolation_level` 1 is read_committed).
    pub fn for_consumer(isolation_level: i8) -> Self {
        if isolation_level == 1 { Self::Committed } else { Self::HighWatermark }
    }
}

/// A partition's settings: its topic's configuration resolved on this broker, parsed once.
#[derive(Clone, Debug, PartialEq)]
pub struct PartitionConfig {
    /// Settings of the partition's log (flush policy included).
    pub log: LogConfig,
    /// `min.insync.replicas`: acks=all needs at least this many in-sync replicas.
    pub min_insync_replicas: usize,
}

/// Result of appending one partition's records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Offset of the first record.
    pub base_offset: i64,
    /// Broker append time when the topic uses LogAppendTime, else -1.
    pub log_append_time_ms: i64,
    /// The partition's log start offset.
    pub log_start_offset: i64,
}

/// What a read returned.
#[derive(Debug, Clone, Default)]
pub struct ReadOutcome {
    /// High watermark.
    pub high_watermark: i64,
    /// Last stable offset (no transactions yet: the high watermark).
    pub last_stable_offset: i64,
    /// Log start offset.
    pub log_start_offset: i64,
    /// Log end offset.
    pub log_end_offset: i64,
    /// Whole batches, as stored.
    pub records: Vec<bytes::Bytes>,
}

/// An offset found by ListOffsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListedOffset {
    /// Timestamp of the record (-1 when not applicable).
    pub timestamp: i64,
    /// The offset (-1 when none matches).
    pub offset: i64,
    /// Leader epoch of that offset (-1 when unknown).
    pub leader_epoch: i32,
}

/// Per-partition numbers for describe commands and group lag.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PartitionStatus {
    /// First offset.
    pub log_start_offset: i64,
    /// Next offset.
    pub log_end_offset: i64,
    /// High watermark.
    pub high_watermark: i64,
    /// Bytes on disk.
    pub size_bytes: u64,
}

/// Why an operation on a partition failed; mapped to a Kafka error code at the protocol edge.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PartitionError {
    /// This broker does not host the partition (deleted, or metadata not yet applied).
    #[error("this broker does not host the partition")]
    UnknownTopicOrPartition,
    /// The partition is closing or moved away.
    #[error("this broker is not the leader of the partition")]
    NotLeaderOrFollower,
    /// The client's leader epoch is older than the partition's.
    #[error("leader epoch {client} is older than the current {current}")]
    FencedLeaderEpoch {
        /// Epoch sent by the client.
        client: i32,
        /// Current epoch.
        current: i32,
    },
    /// The client's leader epoch is newer than the partition's.
    #[error("leader epoch {client} is newer than the current {current}")]
    UnknownLeaderEpoch {
        /// Epoch sent by the client.
        client: i32,
        /// Current epoch.
        current: i32,
    },
    /// The acknowledgement did not come within the request's timeout.
    #[error("the produce was not acknowledged within its timeout")]
    Timeout,
    /// The in-sync replicas shrank below `min.insync.replicas` after an acks=all batch was
    /// appended (it is stored, but not acknowledged as replicated).
    #[error("min.insync.replicas is {required} but only {in_sync} replicas were in sync after the append")]
    NotEnoughReplicasAfterAppend {
        /// `min.insync.replicas`.
        required: usize,
        /// In-sync replicas then.
        in_sync: usize,
    },
    /// Fewer in-sync replicas than `min.insync.replicas` for an acks=all produce.
    #[error("min.insync.replicas is {required} but {in_sync} replicas are in sync")]
    NotEnoughReplicas {
        /// `min.insync.replicas`.
        required: usize,
        /// In-sync replicas now.
        in_sync: usize,
    },
    /// An offset outside the log.
    #[error("offset {offset} is outside the log [{log_start_offset}, {log_end_offset}]")]
    OffsetOutOfRange {
        /// The requested offset.
        offset: i64,
        /// First offset held.
        log_start_offset: i64,
        /// Next offset to be written.
        log_end_offset: i64,
    },
    /// An idempotent producer's epoch is older than the partition has seen.
    #[error("producer {producer_id} epoch {epoch} is older than the current {current}")]
    InvalidProducerEpoch {
        /// Producer id.
        producer_id: i64,
        /// Epoch in the batch.
        epoch: i16,
        /// Current epoch.
        current: i16,
    },
    /// An idempotent producer skipped or repeated sequence numbers.
    #[error("producer {producer_id} sent sequence {found} where {expected} was expected")]
    OutOfOrderSequence {
        /// Producer id.
        producer_id: i64,
        /// Next expected sequence.
        expected: i32,
        /// Sequence in the batch.
        found: i32,
    },
    /// A batch was refused before anything was written.
    #[error(transparent)]
    InvalidBatch(#[from] BatchError),
    /// The disk failed (or is full); the partition's log may be offline.
    #[error("{0}")]
    Storage(String),
}

impl From<StorageError> for PartitionError {
    fn from(err: StorageError) -> Self {
        match err {
            StorageError::Batch(batch) => Self::InvalidBatch(batch),
            StorageError::OffsetOutOfRange { offset, log_start_offset, log_end_offset } => {
                Self::OffsetOutOfRange { offset, log_start_offset, log_end_offset }
            }
            StorageError::Closed => Self::NotLeaderOrFollower,
            other @ (StorageError::Io { .. }
            | StorageError::Offline(_)
            | StorageError::Corrupt { .. }
            | StorageError::OutOfOrder { .. }) => Self::Storage(other.to_string()),
        }
    }
}
