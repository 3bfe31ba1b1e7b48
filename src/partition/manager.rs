//! The partitions of one shard: opening, finding, closing and deleting them.
//!
//! Ownership: one `PartitionManager` per shard, created on that shard's thread and never sent
//! anywhere; everything in it is `!Send`. Other shards reach its partitions by running work on
//! this shard.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use uuid::Uuid;

use super::isr::Assignment;
use super::replica::PartitionOpenArgs;
use super::{Acks, Isolation, Partition, PartitionConfig, PartitionError, PartitionRef, ReadOutcome, Replicated};
use crate::io::{self, now_ms};
use crate::model::{BatchSpan, BrokerId, TopicPartition};
use crate::storage::{CacheStats, LogContext};

/// A partition this shard should host.
#[derive(Clone, Debug)]
pub struct PartitionOpen {
    /// Topic name.
    pub topic: String,
    /// Topic id.
    pub topic_id: Uuid,
    /// Partition index.
    pub index: i32,
    /// Replicas, leader and epochs.
    pub assignment: Assignment,
    /// Settings.
    pub config: Arc<PartitionConfig>,
}

/// The partitions one shard hosts.
pub struct PartitionManager {
    data_dir: PathBuf,
    broker_id: BrokerId,
    context: LogContext,
    partitions: RefCell<HashMap<TopicPartition, PartitionRef>>,
    appended_bytes: Cell<u64>,
    read_bytes: Cell<u64>,
}

/// Counters of one shard's partitions.
#[derive(Clone, Copy, Debug, Default)]
pub struct PartitionStats {
    /// Partitions hosted.
    pub partitions: usize,
    /// Record bytes appended.
    pub appended_bytes: u64,
    /// Record bytes read for fetches.
    pub read_bytes: u64,
    /// The shard's read cache.
    pub cache: CacheStats,
}

impl PartitionManager {
    /// A manager with no partitions, whose logs live under `data_dir` and share `context` (the
    /// shard's read cache and fault injection).
    pub fn new(data_dir: PathBuf, broker_id: BrokerId, context: LogContext) -> Self {
        Self {
            data_dir,
            broker_id,
            context,
            partitions: RefCell::new(HashMap::new()),
            appended_bytes: Cell::new(0),
            read_bytes: Cell::new(0),
        }
    }

    /// A hosted partition.
    pub fn get(&self, key: &TopicPartition) -> Option<PartitionRef> {
        self.partitions.borrow().get(key).cloned()
    }

    /// Every hosted partition.
    pub fn all(&self) -> Vec<PartitionRef> {
        self.partitions.borrow().values().cloned().collect()
    }

    /// Number of hosted partitions.
    pub fn len(&self) -> usize {
        self.partitions.borrow().len()
    }

    /// True when no partition is hosted.
    pub fn is_empty(&self) -> bool {
        self.partitions.borrow().is_empty()
    }

    /// This shard's counters.
    pub fn stats(&self) -> PartitionStats {
        PartitionStats {
            partitions: self.len(),
            appended_bytes: self.appended_bytes.get(),
            read_bytes: self.read_bytes.get(),
            cache: self.context.cache.borrow().stats(),
        }
    }

    /// [`Partition::replicate`] on the hosted partition `key`.
    pub fn replicate(
        &self,
        key: &TopicPartition,
        records: BytesMut,
        spans: &[BatchSpan],
        acks: Acks,
        now: i64,
    ) -> Result<Replicated, PartitionError> {
        let partition = self.get(key).ok_or(PartitionError::UnknownTopicOrPartition)?;
        let bytes = records.len() as u64;
        let replicated = partition.replicate(records, spans, acks, now)?;
        self.appended_bytes.set(self.appended_bytes.get() + bytes);
        Ok(replicated)
    }

    /// [`Partition::read`] on the hosted partition `key`.
    pub async fn read(
        &self,
        key: &TopicPartition,
        offset: i64,
        max_bytes: usize,
        isolation: Isolation,
        current_leader_epoch: i32,
    ) -> Result<ReadOutcome, PartitionError> {
        let partition = self.get(key).ok_or(PartitionError::UnknownTopicOrPartition)?;
        let outcome = partition.read(offset, max_bytes, isolation, current_leader_epoch).await?;
        let bytes: usize = outcome.records.iter().map(|b| b.len()).sum();
        self.read_bytes.set(self.read_bytes.get() + bytes as u64);
        Ok(outcome)
    }

    /// Hosts `open`: opens (recovering) its log, or, when it is already open, applies its
    /// settings. Returns the partition and whether it was opened just now.
    pub async fn open(&self, open: PartitionOpen) -> Result<(PartitionRef, bool), PartitionError> {
        let key = (open.topic_id, open.index);
        if let Some(existing) = self.get(&key) {
            existing.set_config(open.config);
            existing.assign(open.assignment).await;
            return Ok((existing, false));
        }
        let args = PartitionOpenArgs {
            data_dir: &self.data_dir,
            topic: &open.topic,
            topic_id: open.topic_id,
            index: open.index,
            assignment: open.assignment,
            broker_id: self.broker_id,
            config: open.config,
        };
        let partition = Partition::open(args, &self.context).await?;
        // Another open of the same partition may have finished while this one waited.
        let mut partitions = self.partitions.borrow_mut();
        let partition = partitions.entry(key).or_insert(partition).clone();
        Ok((partition, true))
    }

    /// Stops hosting `key` and deletes its data.
    pub async fn delete(&self, key: &TopicPartition) -> Option<Rc<Partition>> {
        let partition = self.partitions.borrow_mut().remove(key)?;
        tracing::info!(partition = ?partition, "deleting partition");
        if let Err(err) = partition.delete().await {
            tracing::error!(partition = ?partition, error = %err, "deleting partition log failed");
        }
        Some(partition)
    }

    /// Whether some hosted partition's log is offline (a disk error).
    pub fn any_offline(&self) -> bool {
        self.partitions.borrow().values().any(|p| p.is_offline())
    }

    /// Stops hosting the partitions whose logs are offline, keeping their data, so they can be
    /// opened again (recovered from disk) once the disk works: returns them.
    pub async fn close_offline(&self) -> Vec<TopicPartition> {
        let offline: Vec<PartitionRef> =
            self.partitions.borrow_mut().extract_if(|_, p| p.is_offline()).map(|(_, p)| p).collect();
        let mut closed = Vec::with_capacity(offline.len());
        for partition in offline {
            // Its log takes nothing more; closing releases its files.
            let _ = partition.close().await;
            closed.push(partition.key());
        }
        closed
    }

    /// Closes every partition (flushing their logs).
    pub async fn close_all(&self) {
        let partitions: Vec<PartitionRef> = self.partitions.borrow_mut().drain().map(|(_, p)| p).collect();
        for partition in partitions {
            if let Err(err) = partition.close().await {
                tracing::error!(partition = ?partition, error = %err, "closing log failed");
            }
        }
    }
}

/// Retention and producer-state snapshots for one shard's partitions, every `interval`, one
/// partition at a time (its log paces its own unlinks).
pub async fn run_retention(manager: Rc<PartitionManager>, interval: Duration) {
    loop {
        io::sleep(interval).await;
        for partition in manager.all() {
            partition.maybe_snapshot_producers(now_ms());
            match partition.enforce_retention(now_ms()).await {
                Ok(outcome) if outcome.segments_deleted > 0 => tracing::info!(
                    partition = ?partition,
                    segments = outcome.segments_deleted,
                    bytes = outcome.bytes_deleted,
                    log_start_offset = outcome.log_start_offset,
                    "retention"
                ),
                Ok(_) => {}
                Err(err) => tracing::warn!(partition = ?partition, error = %err, "retention failed"),
            }
        }
    }
}

/// What a shard's cleaner may use.
#[derive(Clone, Copy, Debug)]
pub struct CleanerSettings {
    /// Keys its offset map may hold.
    pub map_entries: usize,
    /// Bytes per second it may read and write.
    pub bytes_per_sec: f64,
    /// How long it sleeps when no log is due.
    pub backoff: Duration,
}

/// Log compaction for one shard's partitions: the log with the highest dirty ratio among those
/// due is cleaned, then the next, one pass at a time, paced by one allowance for the shard.
pub async fn run_cleaner(manager: Rc<PartitionManager>, settings: CleanerSettings) {
    let pace = io::RateLimit::new(settings.bytes_per_sec, (settings.bytes_per_sec / 10.0).max(256.0 * 1024.0));
    loop {
        let now = now_ms();
        let due = manager
            .all()
            .into_iter()
            .filter_map(|p| p.cleanable(now).filter(|c| c.due).map(|c| (c.dirty_ratio(), p)))
            .max_by(|a, b| a.0.total_cmp(&b.0));
        let Some((ratio, partition)) = due else {
            io::sleep(settings.backoff).await;
            continue;
        };
        let started = std::time::Instant::now();
        match partition.compact(now, settings.map_entries, &pace).await {
            Ok(outcome) if outcome.bytes_read == 0 => {
                // Due, yet nothing to read (the log is closing, or what was due went): not a
                // reason to ask again at once.
                io::sleep(settings.backoff).await;
            }
            Ok(outcome) => tracing::info!(
                partition = ?partition,
                dirty_ratio = format!("{ratio:.2}"),
                segments = outcome.segments_rewritten,
                bytes_read = outcome.bytes_read,
                bytes_before = outcome.bytes_before,
                bytes_after = outcome.bytes_after,
                records_removed = outcome.records_removed,
                cleaned_offset = outcome.cleaned_offset,
                ms = started.elapsed().as_millis() as u64,
                "log cleaned"
            ),
            Err(err) => {
                tracing::warn!(partition = ?partition, error = %err, "log cleaning failed");
                io::sleep(settings.backoff).await;
            }
        }
        io::yield_now().await;
    }
}
