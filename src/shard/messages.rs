//! Messages between shards.
//!
//! Ownership: every message is sent by value over the target shard's bounded inbox and carries a
//! oneshot sender for its reply. Record bytes inside travel as `BytesMut`/`Bytes` (moved, or
//! shared read-only); nothing in a message refers to memory owned by the sending shard.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_channel::oneshot;
use uuid::Uuid;

use crate::cluster::{ClusterMetadata, ControllerCall};
use crate::group::GroupCall;
use crate::storage::StorageError;
use crate::storage::batch::BatchSpan;

/// A partition: topic id and partition index.
pub type TopicPartition = (Uuid, i32);

/// Why an operation on a partition failed; mapped to a Kafka error code at the protocol edge.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PartitionError {
    /// The shard does not host the partition (deleted, or metadata not yet applied).
    #[error("this broker does not host the partition")]
    UnknownTopicOrPartition,
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
    /// acks=-1 was not satisfied in time.
    #[error("the produce was not acknowledged within its timeout")]
    Timeout,
    /// The requested offset is beyond the high watermark.
    #[error("offset {0} is beyond the high watermark")]
    OffsetBeyondHighWatermark(i64),
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
    /// The storage layer failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// One partition's records in a Produce, already validated by the receiving shard.
#[derive(Debug)]
pub struct ProducePart {
    /// Target partition.
    pub partition: TopicPartition,
    /// The batches, a slice of the request buffer moved to the owning shard.
    pub records: BytesMut,
    /// Where each batch lies in `records`.
    pub spans: Vec<BatchSpan>,
}

/// Result of appending one partition's records.
#[derive(Debug, Clone)]
pub struct Appended {
    /// Offset of the first record.
    pub base_offset: i64,
    /// Broker append time when the topic uses LogAppendTime, else -1.
    pub log_append_time_ms: i64,
    /// The partition's log start offset.
    pub log_start_offset: i64,
}

/// Produce to partitions owned by the target shard.
#[derive(Debug)]
pub struct ProduceCall {
    /// Partitions and their records.
    pub parts: Vec<ProducePart>,
    /// Wait until the appends are durable (acks != 0 under flush = always).
    pub wait_durable: bool,
    /// How long to wait for durability.
    pub timeout: Duration,
    /// Results, in the order of `parts`.
    pub reply: oneshot::Sender<Vec<Result<Appended, PartitionError>>>,
}

/// One partition of a Fetch.
#[derive(Debug, Clone)]
pub struct FetchPart {
    /// Partition.
    pub partition: TopicPartition,
    /// First offset wanted.
    pub offset: i64,
    /// Byte limit for this partition.
    pub max_bytes: usize,
    /// The client's idea of the leader epoch (-1: unchecked).
    pub current_leader_epoch: i32,
}

/// What a Fetch returned for one partition.
#[derive(Debug, Clone, Default)]
pub struct Fetched {
    /// High watermark.
    pub high_watermark: i64,
    /// Last stable offset (no transactions: the high watermark).
    pub last_stable_offset: i64,
    /// Log start offset.
    pub log_start_offset: i64,
    /// Whole batches.
    pub records: Vec<Bytes>,
}

/// Read from partitions owned by the target shard.
#[derive(Debug)]
pub struct FetchCall {
    /// Partitions to read.
    pub parts: Vec<FetchPart>,
    /// Results in the order of `parts`.
    pub reply: oneshot::Sender<Vec<Result<Fetched, PartitionError>>>,
}

/// Wait until any of the partitions has data at or past the given offset.
#[derive(Debug)]
pub struct WatchCall {
    /// Partitions and the offset each needs.
    pub parts: Vec<(TopicPartition, i64)>,
    /// Completed (or dropped) when data arrives; the caller dropping its receiver cancels.
    pub reply: oneshot::Sender<()>,
}

/// An offset found by ListOffsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListedOffset {
    /// Timestamp of the record (-1 when not applicable).
    pub timestamp: i64,
    /// The offset.
    pub offset: i64,
    /// Leader epoch.
    pub leader_epoch: i32,
}

/// ListOffsets for partitions owned by the target shard.
#[derive(Debug)]
pub struct ListOffsetsCall {
    /// Partition, timestamp (or -1 latest, -2 earliest, -3 max timestamp, -4 earliest local,
    /// -5 latest tiered), current leader epoch.
    pub parts: Vec<(TopicPartition, i64, i32)>,
    /// Read committed (only offsets below the last stable offset).
    pub read_committed: bool,
    /// Results in order.
    pub reply: oneshot::Sender<Vec<Result<ListedOffset, PartitionError>>>,
}

/// DeleteRecords for partitions owned by the target shard.
#[derive(Debug)]
pub struct DeleteRecordsCall {
    /// Partition and the offset before which to delete (-1: the high watermark).
    pub parts: Vec<(TopicPartition, i64)>,
    /// New low watermarks in order.
    pub reply: oneshot::Sender<Vec<Result<i64, PartitionError>>>,
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

/// A shard's counters.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ShardStats {
    /// Shard id.
    pub shard: usize,
    /// CPU the shard thread is pinned to, if pinned.
    pub core: Option<usize>,
    /// Kernel thread id of the shard's thread.
    pub thread_id: i32,
    /// Partitions owned.
    pub partitions: usize,
    /// Open client connections.
    pub connections: u64,
    /// Requests handled (all APIs).
    pub requests: u64,
    /// Requests that ended in a connection-level error.
    pub request_errors: u64,
    /// Partition-level errors returned.
    pub partition_errors: u64,
    /// Record bytes appended.
    pub produce_bytes: u64,
    /// Record bytes served to fetches.
    pub fetch_bytes: u64,
    /// Read cache bytes held.
    pub cache_bytes: u64,
    /// Read cache hits.
    pub cache_hits: u64,
    /// Read cache misses.
    pub cache_misses: u64,
}

/// Everything one shard can ask of another.
pub enum ShardMessage {
    /// Append records.
    Produce(ProduceCall),
    /// Read records.
    Fetch(FetchCall),
    /// Wait for records.
    Watch(WatchCall),
    /// Find offsets.
    ListOffsets(ListOffsetsCall),
    /// Move log start offsets.
    DeleteRecords(DeleteRecordsCall),
    /// Offsets and sizes of partitions.
    Status {
        /// Partitions.
        parts: Vec<TopicPartition>,
        /// Status in order (`None` for unknown partitions).
        reply: oneshot::Sender<Vec<Option<PartitionStatus>>>,
    },
    /// A new metadata snapshot: open and close partitions to match it.
    Metadata {
        /// The snapshot.
        snapshot: Arc<ClusterMetadata>,
        /// Completed when applied.
        reply: oneshot::Sender<()>,
    },
    /// A request for the controller (shard 0 only).
    Controller(ControllerCall),
    /// A request for a group coordinator on this shard.
    Group(GroupCall),
    /// Counters.
    Stats(oneshot::Sender<ShardStats>),
    /// Stop accepting, finish in-flight work, close every log.
    Shutdown(oneshot::Sender<()>),
}
