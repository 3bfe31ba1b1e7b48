//! The storage layer: per-partition segmented logs on O_DIRECT files.
//!
//! It knows nothing of Kafka requests or sockets; it talks only to the io layer. See
//! `docs/ARCHITECTURE.md` (Storage) for the write path, the durability policy and recovery.

pub mod cache;
pub mod index;
mod log;
mod segment;

use std::io;
use std::path::PathBuf;

pub use cache::{CacheKey, CacheStats, ReadCache};
pub use log::{
    AppendInfo, Cleanable, CompactionOutcome, Durable, Log, LogContext, LogSnapshot, OFFSET_MAP_ENTRY_BYTES,
    OffsetAndTimestamp, PREALLOCATE_STEP_BYTES, PREPARE_AHEAD_BYTES, ReadResult, RetentionOutcome,
};

/// When appended data is made durable with fdatasync. Written `always`, `interval:<ms>` or
/// `never` in configuration files and on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlushPolicy {
    /// Every append is written and fdatasync'd before it is reported durable; concurrent appends
    /// share one fdatasync (group commit). Produce acks (1 / all) wait for it.
    Always,
    /// Written and fdatasync'd at most this many milliseconds after the append. Acks do not wait.
    IntervalMs(u64),
    /// Written in the background (write-behind), fdatasync'd only when a segment is sealed and
    /// at shutdown. Acks do not wait.
    Never,
}

impl FlushPolicy {
    /// Parses `always`, `never` or `interval:<ms>`.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "always" => Ok(Self::Always),
            "never" => Ok(Self::Never),
            other => match other.strip_prefix("interval:").map(str::parse::<u64>) {
                Some(Ok(ms)) if ms > 0 => Ok(Self::IntervalMs(ms)),
                _ => {
                    Err(format!("invalid flush policy {other:?}: expected always, never or interval:<ms> with ms > 0"))
                }
            },
        }
    }
}

impl serde::Serialize for FlushPolicy {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for FlushPolicy {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl std::fmt::Display for FlushPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Always => f.write_str("always"),
            Self::Never => f.write_str("never"),
            Self::IntervalMs(ms) => write!(f, "interval:{ms}"),
        }
    }
}

/// Whose clock stamps a batch's timestamp (`message.timestamp.type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum TimestampType {
    /// The producer's creation time is kept.
    CreateTime,
    /// The broker overwrites it with its append time.
    LogAppendTime,
}

/// Per-log settings (a topic's configuration plus the broker's flush policy).
#[derive(Clone, Debug, PartialEq)]
pub struct LogConfig {
    /// Roll to a new segment when the active one would exceed this size.
    pub segment_bytes: u64,
    /// Roll when the active segment's first batch is older than this.
    pub segment_ms: i64,
    /// Delete closed segments whose newest record is older than this; -1 keeps forever.
    pub retention_ms: i64,
    /// Delete the oldest closed segments while the log is larger than this; -1 for no limit.
    pub retention_bytes: i64,
    /// Whether retention by time and size applies (`cleanup.policy` includes `delete`).
    pub delete_retention: bool,
    /// Whether the cleaner compacts the log (`cleanup.policy` includes `compact`): see
    /// `storage/log/compact.rs`.
    pub compact: bool,
    /// `min.cleanable.dirty.ratio`: the share of the cleanable bytes not yet cleaned that makes a
    /// log due for cleaning.
    pub min_cleanable_dirty_ratio: f64,
    /// `min.compaction.lag.ms`: a segment whose newest record is younger is not cleaned yet.
    pub min_compaction_lag_ms: i64,
    /// `max.compaction.lag.ms`: a log whose oldest uncleaned segment's newest record is older is
    /// cleaned whatever its dirty ratio.
    pub max_compaction_lag_ms: i64,
    /// `delete.retention.ms`: how long a tombstone (a record with a key and no value) is kept
    /// after its batch's newest timestamp, so consumers reading from the start see deletions.
    pub delete_retention_ms: i64,
    /// Largest batch accepted (`max.message.bytes`).
    pub max_message_bytes: usize,
    /// Add an index entry every this many bytes.
    pub index_interval_bytes: usize,
    /// Durability policy.
    pub flush: FlushPolicy,
    /// Timestamp policy.
    pub timestamp_type: TimestampType,
    /// Preallocate segment files (fallocate) so appends need no block allocation.
    pub preallocate: bool,
    /// How far ahead of the write position a segment is preallocated at a time (capped by the
    /// segment size): 16 MiB for user topics, less for internal ones whose partitions stay
    /// small (a group's first commit need not take 16 MiB of disk).
    pub preallocate_step_bytes: u64,
    /// Keep one segment file that retention removes, and write the log's next segment into it
    /// instead of into fresh (unwritten) blocks: see `storage/log/files.rs`.
    pub recycle_segments: bool,
    /// Zero-fill the active segment's preallocated blocks this far ahead of the write position,
    /// in the background, while the log's writes are small (see `storage/log/prepare.rs`); 0 turns
    /// it off. The default is [`PREPARE_AHEAD_BYTES`].
    pub prepare_ahead_bytes: u64,
    /// Write unwritten data once this much has accumulated, whatever the flush policy.
    pub write_behind_bytes: usize,
    /// Produce acknowledgements are held back while more than this much appended data is not yet
    /// written to the file (back-pressure on producers that outrun the disk).
    pub max_unwritten_bytes: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            delete_retention: true,
            compact: false,
            min_cleanable_dirty_ratio: 0.5,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
            delete_retention_ms: 24 * 3600 * 1000,
            max_message_bytes: 1_048_588,
            index_interval_bytes: 4096,
            flush: FlushPolicy::Always,
            timestamp_type: TimestampType::CreateTime,
            preallocate: true,
            preallocate_step_bytes: PREALLOCATE_STEP_BYTES,
            recycle_segments: true,
            prepare_ahead_bytes: PREPARE_AHEAD_BYTES,
            write_behind_bytes: 1 << 20,
            max_unwritten_bytes: 64 << 20,
        }
    }
}

/// Errors from the storage layer; the protocol edge maps each to a Kafka error code.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    /// The batch was refused before anything was written.
    #[error(transparent)]
    Batch(#[from] crate::model::BatchError),
    /// A disk operation failed.
    #[error("I/O error on {path}: {message}")]
    Io {
        /// File involved.
        path: PathBuf,
        /// The OS error number, when there is one (ENOSPC for a full disk).
        errno: Option<i32>,
        /// Human-readable cause.
        message: String,
    },
    /// A read asked for an offset the log does not hold.
    #[error("offset {offset} is outside the log [{log_start_offset}, {log_end_offset}]")]
    OffsetOutOfRange {
        /// The requested offset.
        offset: i64,
        /// First offset held.
        log_start_offset: i64,
        /// Next offset to be written.
        log_end_offset: i64,
    },
    /// Replicated batches that do not start where the log ends.
    #[error("replicated batch at offset {found}, but the log ends at {expected}")]
    OutOfOrder {
        /// The log end.
        expected: i64,
        /// The batch's base offset.
        found: i64,
    },
    /// A previous write or fdatasync failed; the log accepts no more appends until reopened.
    #[error("log is offline after an I/O failure: {0}")]
    Offline(String),
    /// Bytes on disk that should be a batch are not.
    #[error("corrupt log data in {path} at byte {position}: {reason}")]
    Corrupt {
        /// File involved.
        path: PathBuf,
        /// Byte position.
        position: u64,
        /// What was wrong.
        reason: String,
    },
    /// The log was closed or deleted.
    #[error("log is closed")]
    Closed,
}

impl StorageError {
    pub(crate) fn io(path: &std::path::Path, err: &io::Error) -> Self {
        Self::Io { path: path.to_owned(), errno: err.raw_os_error(), message: err.to_string() }
    }

    /// True when the disk is full.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, Self::Io { errno: Some(e), .. } if *e == libc::ENOSPC)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flush_policy_parses_and_prints() {
        assert_eq!(FlushPolicy::parse("always"), Ok(FlushPolicy::Always));
        assert_eq!(FlushPolicy::parse("never"), Ok(FlushPolicy::Never));
        assert_eq!(FlushPolicy::parse("interval:25"), Ok(FlushPolicy::IntervalMs(25)));
        assert!(FlushPolicy::parse("interval:0").is_err());
        assert!(FlushPolicy::parse("sometimes").is_err());
        assert_eq!(FlushPolicy::IntervalMs(7).to_string(), "interval:7");
    }
}
