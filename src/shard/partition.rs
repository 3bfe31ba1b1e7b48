//! A partition replica as its owning shard sees it, and the partition-level operations the
//! shard performs for Produce, Fetch, ListOffsets, DeleteRecords and long-poll watches.
//!
//! Ownership: a `Partition` lives in exactly one shard's partition map for its whole life and is
//! `!Send`; other shards reach it only through [`super::messages::ShardMessage`].

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use futures_channel::oneshot;
use uuid::Uuid;

use super::messages::{Appended, Fetched, ListedOffset, PartitionError, PartitionStatus, TopicPartition};
use super::producers::{self, ProducerTable, SequenceCheck};
use crate::cluster::TopicConfig;
use crate::io;
use crate::storage::batch::BatchSpan;
use crate::storage::{BatchHeader, Durable, Log, LogConfig, LogContext, StorageError};
use crate::util::now_ms;

/// Save the producer table after this many appended bytes...
const PRODUCER_SNAPSHOT_BYTES: u64 = 64 << 20;
/// ...or this long after the last save, whichever comes first.
const PRODUCER_SNAPSHOT_INTERVAL_MS: i64 = 30_000;

/// File in each partition directory naming the topic id it belongs to.
const PARTITION_METADATA_FILE: &str = "partition.metadata";

/// A partition hosted by this shard (the leader, while there is one broker).
pub struct Partition {
    /// Topic name.
    pub topic: String,
    /// Topic id.
    pub topic_id: Uuid,
    /// Partition index.
    pub index: i32,
    /// The log.
    pub log: Log,
    /// Leader epoch stamped into appended batches.
    pub leader_epoch: i32,
    config: RefCell<Arc<TopicConfig>>,
    producers: RefCell<ProducerTable>,
    bytes_since_snapshot: Cell<u64>,
    last_snapshot_ms: Cell<i64>,
}

/// What appending one partition's batches led to.
pub struct AppendOutcome {
    /// The answer for the producer.
    pub appended: Appended,
    /// Resolves when the data is durable.
    pub durable: Durable,
}

impl std::fmt::Debug for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Partition({}-{})", self.topic, self.index)
    }
}

/// Directory of a partition's log.
pub fn partition_dir(data_dir: &Path, topic: &str, index: i32) -> PathBuf {
    data_dir.join(format!("{topic}-{index}"))
}

impl Partition {
    /// Opens (recovering) or creates the partition's log. A directory left by an earlier topic of
    /// the same name (another topic id) is set aside first, so deleted data never reappears.
    pub async fn open(
        data_dir: &Path,
        topic: &str,
        topic_id: Uuid,
        index: i32,
        leader_epoch: i32,
        config: Arc<TopicConfig>,
        ctx: &LogContext,
    ) -> Result<Self, StorageError> {
        let dir = partition_dir(data_dir, topic, index);
        let id_file = dir.join(PARTITION_METADATA_FILE);
        match std::fs::read_to_string(&id_file) {
            Ok(text) if text.trim() == format!("topic_id: {topic_id}") => {}
            Ok(_) => {
                let stale = dir.with_extension(format!("{}-delete", Uuid::new_v4().simple()));
                tracing::warn!(dir = %dir.display(), "partition directory belongs to an older topic of the same name; removing it");
                std::fs::rename(&dir, &stale).map_err(|e| StorageError::io(&dir, &e))?;
                let _ = std::fs::remove_dir_all(&stale);
            }
            Err(_) => {}
        }
        std::fs::create_dir_all(&dir).map_err(|e| StorageError::io(&dir, &e))?;
        if !id_file.exists() {
            std::fs::write(&id_file, format!("topic_id: {topic_id}\n")).map_err(|e| StorageError::io(&id_file, &e))?;
        }
        let log = Log::open(&dir, config.log.clone(), ctx).await?;
        let producers = rebuild_producers(&log).await?;
        Ok(Self {
            topic: topic.to_owned(),
            topic_id,
            index,
            log,
            leader_epoch,
            config: RefCell::new(config),
            producers: RefCell::new(producers),
            bytes_since_snapshot: Cell::new(0),
            last_snapshot_ms: Cell::new(now_ms()),
        })
    }

    /// Checks idempotent producers' sequences and appends; a retried batch that was appended
    /// before is acknowledged with its original offset instead of being written again.
    pub fn append(
        &self,
        records: bytes::BytesMut,
        spans: &[BatchSpan],
        now: i64,
    ) -> Result<AppendOutcome, PartitionError> {
        let mut duplicate = None;
        {
            let table = self.producers.borrow();
            for span in spans {
                match table.check(&span.header)? {
                    SequenceCheck::Append if duplicate.is_some() => {
                        return Err(PartitionError::OutOfOrderSequence {
                            producer_id: span.header.producer_id,
                            expected: -1,
                            found: span.header.base_sequence,
                        });
                    }
                    SequenceCheck::Append => {}
                    SequenceCheck::Duplicate { base_offset } => {
                        duplicate.get_or_insert(base_offset);
                    }
                }
            }
        }
        if let Some(base_offset) = duplicate {
            let end: i64 = base_offset + spans.iter().map(|s| s.header.offset_count()).sum::<i64>();
            return Ok(AppendOutcome {
                appended: Appended {
                    base_offset,
                    log_append_time_ms: -1,
                    log_start_offset: self.log.log_start_offset(),
                },
                durable: self.log.durable_up_to(end),
            });
        }
        let bytes = records.len() as u64;
        let info = self.log.append(records, spans, self.leader_epoch, now)?;
        {
            let mut table = self.producers.borrow_mut();
            let mut base = info.base_offset;
            for span in spans {
                let stamped = BatchHeader { base_offset: base, ..span.header };
                table.record(&stamped, now);
                base += span.header.offset_count();
            }
        }
        self.bytes_since_snapshot.set(self.bytes_since_snapshot.get() + bytes);
        if self.bytes_since_snapshot.get() >= PRODUCER_SNAPSHOT_BYTES {
            self.maybe_snapshot_producers(now);
        }
        Ok(AppendOutcome {
            appended: Appended {
                base_offset: info.base_offset,
                log_append_time_ms: info.log_append_time_ms.unwrap_or(-1),
                log_start_offset: info.log_start_offset,
            },
            durable: info.durable,
        })
    }

    /// Saves the producer table when enough has been appended or time has passed, provided all
    /// it covers is durable (a snapshot must never claim batches a crash could lose).
    pub fn maybe_snapshot_producers(&self, now: i64) {
        let due = self.bytes_since_snapshot.get() >= PRODUCER_SNAPSHOT_BYTES
            || now - self.last_snapshot_ms.get() >= PRODUCER_SNAPSHOT_INTERVAL_MS;
        let durable = self.log.snapshot().durable_offset;
        let bytes = {
            let mut table = self.producers.borrow_mut();
            if !due || table.covered_offset > durable {
                return;
            }
            table.expire(now);
            table.to_json()
        };
        self.bytes_since_snapshot.set(0);
        self.last_snapshot_ms.set(now);
        let dir = self.log.dir().to_owned();
        io::spawn_detached(async move {
            match io::blocking(move || producers::save_snapshot(&dir, &bytes)).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) | Err(err) => tracing::warn!(error = %err, "could not save producer state"),
            }
        });
    }

    /// Closes the log (flushing it) and saves the producer table.
    pub async fn close(&self) -> Result<(), StorageError> {
        let closed = self.log.close().await;
        let bytes = {
            let mut table = self.producers.borrow_mut();
            table.covered_offset = table.covered_offset.max(self.log.log_end_offset());
            table.to_json()
        };
        let dir = self.log.dir().to_owned();
        if closed.is_ok()
            && let Ok(Err(err)) | Err(err) = io::blocking(move || producers::save_snapshot(&dir, &bytes)).await
        {
            tracing::warn!(error = %err, "could not save producer state");
        }
        closed
    }

    /// The partition key.
    pub fn key(&self) -> TopicPartition {
        (self.topic_id, self.index)
    }

    /// The topic's current configuration.
    pub fn config(&self) -> Arc<TopicConfig> {
        self.config.borrow().clone()
    }

    /// Applies a new topic configuration (keeps the broker-level flush policy).
    pub fn set_config(&self, config: Arc<TopicConfig>) {
        if *self.config.borrow() != config {
            let log_config: LogConfig = config.log.clone();
            self.log.set_config(log_config);
            *self.config.borrow_mut() = config;
        }
    }

    /// Offsets below this are visible to consumers (single replica: what the log holds stable).
    pub fn high_watermark(&self) -> i64 {
        self.log.snapshot().stable_end_offset
    }

    /// Checks the leader epoch a client sent (-1 skips the check).
    pub fn check_epoch(&self, client_epoch: i32) -> Result<(), PartitionError> {
        if client_epoch < 0 || client_epoch == self.leader_epoch {
            Ok(())
        } else if client_epoch < self.leader_epoch {
            Err(PartitionError::FencedLeaderEpoch { client: client_epoch, current: self.leader_epoch })
        } else {
            Err(PartitionError::UnknownLeaderEpoch { client: client_epoch, current: self.leader_epoch })
        }
    }

    /// Reads for a Fetch.
    pub async fn fetch(
        &self,
        offset: i64,
        max_bytes: usize,
        current_leader_epoch: i32,
    ) -> Result<Fetched, PartitionError> {
        self.check_epoch(current_leader_epoch)?;
        let result = self.log.read(offset, max_bytes, self.high_watermark()).await?;
        let high_watermark = result.stable_end_offset;
        Ok(Fetched {
            high_watermark,
            last_stable_offset: high_watermark,
            log_start_offset: result.log_start_offset,
            records: result.batches,
        })
    }

    /// ListOffsets for one timestamp (or special value).
    pub async fn list_offset(&self, timestamp: i64, current_leader_epoch: i32) -> Result<ListedOffset, PartitionError> {
        self.check_epoch(current_leader_epoch)?;
        let epoch = self.leader_epoch;
        let at = |offset: i64| ListedOffset { timestamp: -1, offset, leader_epoch: epoch };
        Ok(match timestamp {
            -2 | -4 => at(self.log.log_start_offset()),
            -1 => at(self.high_watermark()),
            -5 => ListedOffset { timestamp: -1, offset: -1, leader_epoch: -1 },
            -3 => match self.log.offset_of_max_timestamp().await? {
                Some(found) => ListedOffset { timestamp: found.timestamp, offset: found.offset, leader_epoch: epoch },
                None => ListedOffset { timestamp: -1, offset: -1, leader_epoch: -1 },
            },
            t => match self.log.offset_for_timestamp(t).await? {
                Some(found) if found.offset < self.high_watermark() => {
                    ListedOffset { timestamp: found.timestamp, offset: found.offset, leader_epoch: epoch }
                }
                _ => ListedOffset { timestamp: -1, offset: -1, leader_epoch: -1 },
            },
        })
    }

    /// DeleteRecords: moves the log start offset to `offset` (-1: the high watermark).
    pub async fn delete_records(&self, offset: i64) -> Result<i64, PartitionError> {
        let high_watermark = self.high_watermark();
        let offset = if offset == -1 { high_watermark } else { offset };
        if offset < 0 || offset > high_watermark {
            return Err(PartitionError::OffsetBeyondHighWatermark(offset));
        }
        Ok(self.log.delete_records_before(offset).await?)
    }

    /// Offsets and size.
    pub fn status(&self) -> PartitionStatus {
        let snapshot = self.log.snapshot();
        PartitionStatus {
            log_start_offset: snapshot.log_start_offset,
            log_end_offset: snapshot.log_end_offset,
            high_watermark: snapshot.stable_end_offset,
            size_bytes: snapshot.size_bytes,
        }
    }

    /// A receiver completing when data at `offset` becomes visible; `None` if it already is.
    pub fn watch(&self, offset: i64) -> Option<oneshot::Receiver<()>> {
        self.log.watch(offset)
    }
}

/// Loads the producer snapshot and replays the batches written after it.
async fn rebuild_producers(log: &Log) -> Result<ProducerTable, StorageError> {
    let mut table = ProducerTable::load(log.dir());
    let (start, end) = (log.log_start_offset(), log.log_end_offset());
    if table.covered_offset > end || table.covered_offset < start {
        table = ProducerTable::default();
        table.covered_offset = start;
    }
    let mut offset = table.covered_offset;
    while offset < end {
        let read = log.read(offset, 1 << 20, i64::MAX).await?;
        if read.batches.is_empty() {
            break;
        }
        for batch in &read.batches {
            let header = BatchHeader::parse(batch)?;
            table.record(&header, header.max_timestamp);
            offset = header.last_offset() + 1;
        }
    }
    table.expire(now_ms());
    Ok(table)
}

/// Shared handle to a partition within its shard.
pub type PartitionRef = Rc<Partition>;
