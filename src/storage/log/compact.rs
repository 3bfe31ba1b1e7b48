//! Log compaction (`cleanup.policy=compact`): the cleaner keeps, of every key, only its newest
//! record, and drops tombstones (a key with no value) once `delete.retention.ms` has passed.
//!
//! A pass reads the log's dirty part (the sealed segments after the cleaner's checkpoint, below
//! the high watermark and older than `min.compaction.lag.ms`) into an offset map: a SHA-256 of
//! each key (its first 16 bytes) to the key's newest offset, bounded by the map's entry budget
//! (`log.cleaner.dedupe.buffer.size`). Then it rewrites every sealed segment from the log start
//! up to where the map ends, front to back, each into a new file: a batch keeps its records
//! whose offset is the newest of their key, rebuilt with the same base offset, last offset
//! delta and producer fields (so offsets never change, and sequence numbers stay), or goes
//! whole when no record stays (unless it is an idempotent producer's last batch: that one
//! stays with no records, for the producer's sequence numbers). Control and transactional
//! batches are kept as they are, and so is every record past the map's end. Records without a
//! key (written before the topic was compacted) are dropped, as Kafka does.
//!
//! Crash safety: the new file is written as `<base>.log.cleaned` (O_DIRECT, paced by the
//! shard's cleaner allowance) and fdatasync'd; the old segment's indexes are removed and the
//! directory synced; then the new file is renamed over the old one (atomic) and the directory
//! synced again. A crash leaves either the old segment or the new one, never neither;
//! recovery deletes leftover `.cleaned` files and rebuilds missing indexes. The checkpoint
//! (`cleaner-offset-checkpoint`) moves only after a whole pass, so a pass cut short is done
//! again, and so is one a truncation or a close cuts into (it swaps nothing more and leaves
//! the checkpoint as it was). Older records of a key always lie in earlier segments than its newest, and segments
//! are rewritten in offset order, so a tombstone is never dropped while an older value of its
//! key is still on disk.
//!
//! Compaction leaves gaps in offsets, inside segments and between them: reads, recovery and
//! replication accept batches whose base offsets increase, not only ones that follow on
//! exactly.
//!
//! Ownership: a pass runs on the log's shard (the shard's cleaner task), concurrently with
//! appends (which only touch the active segment) and with reads (which keep the old file open
//! through its `Rc`). The swap of a segment's file holds the log's file lock, which
//! truncation and retention's unlinks also take, so neither can act on the segment between
//! the check that it is unchanged and the rename.

use std::collections::HashMap;
use std::rc::Rc;

use bytes::Bytes;

use super::files::*;
use super::*;
use crate::io::{AlignedBuf, DirectFile, OpenMode, PAGE_BYTES, RateLimit};
use crate::model::batch::BatchHeader;
use crate::model::records::{self, Retained};
use crate::storage::StorageError;
use crate::storage::segment::{self, Offsets, Segment, log_file_name};

/// The cleaner's checkpoint: offsets below the first number are clean; the second, when
/// present, is when the oldest tombstone kept by the last pass may go.
pub(super) const CLEANER_CHECKPOINT_FILE: &str = "cleaner-offset-checkpoint";

/// Suffix of a segment file the cleaner is writing.
pub(super) const CLEANED_SUFFIX: &str = ".cleaned";

/// Bytes read or written by the cleaner at a time.
const WINDOW_BYTES: usize = 1 << 20;

/// The cleaner lets the shard's other tasks run after this many batches (a 1 MiB window of
/// small batches is about a millisecond of hashing and copying: produce latency would wait it out).
const BATCHES_BETWEEN_YIELDS: usize = 32;

/// Memory one key of the offset map takes (hash, offset and the table's own overhead), to turn
/// a byte budget into an entry budget.
pub const OFFSET_MAP_ENTRY_BYTES: usize = 40;

/// How much of a log the cleaner would clean now.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cleanable {
    /// Bytes of sealed segments already cleaned.
    pub clean_bytes: u64,
    /// Bytes of cleanable segments not yet cleaned.
    pub dirty_bytes: u64,
    /// Whether a pass is due: the dirty ratio reached `min.cleanable.dirty.ratio`, the oldest
    /// dirty segment passed `max.compaction.lag.ms`, or a kept tombstone may go now.
    pub due: bool,
}

impl Cleanable {
    /// Dirty bytes over all cleanable bytes.
    pub fn dirty_ratio(&self) -> f64 {
        let total = self.clean_bytes + self.dirty_bytes;
        if total == 0 { 0.0 } else { self.dirty_bytes as f64 / total as f64 }
    }
}

/// What a cleaning pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CompactionOutcome {
    /// Segments replaced by a cleaned file.
    pub segments_rewritten: usize,
    /// Bytes read (map and rewrite).
    pub bytes_read: u64,
    /// Bytes of the rewritten segments before.
    pub bytes_before: u64,
    /// And after.
    pub bytes_after: u64,
    /// Records dropped.
    pub records_removed: u64,
    /// The checkpoint afterwards: offsets below it are clean.
    pub cleaned_offset: i64,
}

/// A sealed segment a pass may rewrite, as it was when the pass began.
struct Planned {
    base: i64,
    next_offset: i64,
    file: Rc<DirectFile>,
    size: u64,
    /// How its batches follow each other (the log's, when planned).
    offsets: Offsets,
}

struct Plan {
    /// The log's truncation count when planned (see [`LogState::truncations`]).
    truncations: u64,
    first_dirty: i64,
    dirty_end: i64,
    clean_bytes: u64,
    dirty_bytes: u64,
    /// Newest timestamp of the oldest dirty segment.
    oldest_dirty_max_timestamp: Option<i64>,
    segments: Vec<Planned>,
}

type KeyHash = [u8; 16];

fn key_hash(key: &[u8]) -> KeyHash {
    let digest = ring::digest::digest(&ring::digest::SHA256, key);
    digest.as_ref()[..16].try_into().expect("SHA-256 has 32 bytes")
}

/// Whether the cleaner may look inside a batch (transaction markers and transactional data
/// are kept whole until transactions exist).
fn cleanable_batch(header: &BatchHeader) -> bool {
    !header.is_control() && !header.is_transactional()
}

fn plan(state: &LogState, now_ms: i64, upper_bound: i64) -> Plan {
    let config = &state.config;
    let first_dirty = state.cleaned_offset.max(state.log_start_offset);
    let mut plan = Plan {
        truncations: state.truncations,
        first_dirty,
        dirty_end: first_dirty,
        clean_bytes: 0,
        dirty_bytes: 0,
        oldest_dirty_max_timestamp: None,
        segments: Vec::new(),
    };
    let sealed = state.segments.len() - 1;
    for segment in state.segments.iter().take(sealed) {
        let young = config.min_compaction_lag_ms > 0
            && segment.max_timestamp > now_ms.saturating_sub(config.min_compaction_lag_ms);
        let Some(file) = segment.file.clone() else { break };
        if !segment.sealed || segment.next_offset > upper_bound || young {
            break;
        }
        if segment.next_offset <= state.log_start_offset {
            continue;
        }
        if segment.next_offset <= first_dirty {
            plan.clean_bytes += segment.size;
        } else {
            plan.dirty_bytes += segment.size;
            plan.dirty_end = segment.next_offset;
            plan.oldest_dirty_max_timestamp.get_or_insert(segment.max_timestamp);
        }
        plan.segments.push(Planned {
            base: segment.base_offset,
            next_offset: segment.next_offset,
            file,
            size: segment.size,
            offsets: state.offsets,
        });
    }
    plan
}

/// Reads a sealed segment's batches a window at a time, paced.
struct SegmentReader<'a> {
    segment: &'a Planned,
    position: u64,
    expected_base: i64,
}

impl<'a> SegmentReader<'a> {
    fn new(segment: &'a Planned) -> Self {
        Self { segment, position: 0, expected_base: segment.base }
    }

    async fn next(&mut self, pace: &RateLimit, read: &mut u64) -> Result<Option<Vec<Bytes>>, StorageError> {
        let Planned { file, size, offsets, .. } = self.segment;
        if self.position >= *size {
            return Ok(None);
        }
        pace.take((*size - self.position).min(WINDOW_BYTES as u64)).await;
        let batches = segment::read_batches(
            file,
            (self.position, self.expected_base),
            *size,
            i64::MIN,
            WINDOW_BYTES,
            i64::MAX,
            *offsets,
        )
        .await
        .map_err(|failure| failure.into_storage_error(file.path()))?;
        for bytes in &batches {
            let header = BatchHeader::parse(bytes)?;
            self.position += bytes.len() as u64;
            self.expected_base = header.last_offset() + 1;
            *read += bytes.len() as u64;
        }
        Ok((!batches.is_empty()).then_some(batches))
    }
}

fn corrupt(dir: &std::path::Path, what: impl std::fmt::Display) -> StorageError {
    StorageError::Corrupt { path: dir.to_owned(), position: 0, reason: what.to_string() }
}

/// What one pass keeps: the offset map and where it ends, and the tombstone horizon.
struct Keep<'a> {
    map: &'a HashMap<KeyHash, i64>,
    map_end: i64,
    /// Each idempotent producer's last batch (base offset) in the dirty part. A producer's last
    /// batch stays, emptied if need be, so its sequence numbers survive a restart or a
    /// failover; one not seen there may have its last batch anywhere, so all of its stay.
    producers_last: &'a HashMap<i64, i64>,
    /// Tombstones in batches whose newest timestamp is below this go.
    tombstone_horizon: i64,
    delete_retention_ms: i64,
}

/// A segment rewritten into its `.cleaned` file, ready to take the segment's place.
struct Rewritten {
    segment: Segment,
    records_removed: u64,
}

impl Log {
    /// How much the cleaner would clean now, for a compacted log; `None` otherwise. Only sealed
    /// segments wholly below `upper_bound` (the high watermark) are cleanable.
    pub fn cleanable(&self, now_ms: i64, upper_bound: i64) -> Option<Cleanable> {
        let state = self.inner.state.borrow();
        if !state.config.compact || state.offline.is_some() || state.closing {
            return None;
        }
        let plan = plan(&state, now_ms, upper_bound);
        let mut cleanable = Cleanable { clean_bytes: plan.clean_bytes, dirty_bytes: plan.dirty_bytes, due: false };
        let ratio_due = plan.dirty_bytes > 0 && cleanable.dirty_ratio() >= state.config.min_cleanable_dirty_ratio;
        let lag_due = plan
            .oldest_dirty_max_timestamp
            .is_some_and(|ts| ts >= 0 && now_ms.saturating_sub(ts) > state.config.max_compaction_lag_ms);
        let tombstones_due = state.tombstones_due_ms.is_some_and(|due| now_ms >= due);
        cleanable.due = ratio_due || lag_due || tombstones_due;
        Some(cleanable)
    }

    /// One cleaning pass (see the module comment), reading and writing through `pace`, with an
    /// offset map of at most `map_entries` keys. Segments are cleaned only wholly below
    /// `upper_bound` (the high watermark: what a leader change can still truncate is left
    /// alone).
    pub async fn compact(
        &self,
        now_ms: i64,
        upper_bound: i64,
        map_entries: usize,
        pace: &RateLimit,
    ) -> Result<CompactionOutcome, StorageError> {
        let truncations = self.inner.state.borrow().truncations;
        let result = self.pass(now_ms, upper_bound, map_entries, pace).await;
        let state = self.inner.state.borrow();
        match result {
            // A truncation zeroes what the pass was reading, and a close takes the files away:
            // the pass just ends (the checkpoint stays where it was).
            Err(err) if state.truncations != truncations || state.closing => {
                tracing::debug!(dir = %self.inner.dir.display(), error = %err, "cleaning pass cut short");
                Ok(CompactionOutcome { cleaned_offset: state.cleaned_offset, ..Default::default() })
            }
            other => other,
        }
    }

    async fn pass(
        &self,
        now_ms: i64,
        upper_bound: i64,
        map_entries: usize,
        pace: &RateLimit,
    ) -> Result<CompactionOutcome, StorageError> {
        let inner = &*self.inner;
        let (plan, delete_retention_ms) = {
            let state = inner.state.borrow();
            let outcome = CompactionOutcome { cleaned_offset: state.cleaned_offset, ..Default::default() };
            if !state.config.compact || state.offline.is_some() || state.closing {
                return Ok(outcome);
            }
            let plan = plan(&state, now_ms, upper_bound);
            if plan.segments.is_empty() {
                // Nothing is cleanable now: no kept tombstone is waiting on a pass either.
                drop(state);
                inner.state.borrow_mut().tombstones_due_ms = None;
                return Ok(outcome);
            }
            (plan, state.config.delete_retention_ms)
        };
        let current = || inner.state.borrow().still_planned(plan.truncations);
        let unfinished =
            |done: CompactionOutcome| CompactionOutcome { cleaned_offset: inner.state.borrow().cleaned_offset, ..done };
        let mut outcome = CompactionOutcome::default();
        // The offset map: each key's newest offset in the dirty part.
        let mut map: HashMap<KeyHash, i64> = HashMap::new();
        let mut producers_last: HashMap<i64, i64> = HashMap::new();
        let mut map_end = plan.first_dirty;
        'map: for segment in plan.segments.iter().filter(|s| s.next_offset > plan.first_dirty) {
            let mut reader = SegmentReader::new(segment);
            while let Some(batches) = reader.next(pace, &mut outcome.bytes_read).await? {
                for (i, bytes) in batches.iter().enumerate() {
                    if i % BATCHES_BETWEEN_YIELDS == BATCHES_BETWEEN_YIELDS - 1 {
                        io::yield_now().await;
                    }
                    let header = BatchHeader::parse(bytes)?;
                    if header.last_offset() < plan.first_dirty {
                        continue;
                    }
                    if cleanable_batch(&header) {
                        let records = header.records_count.max(0) as usize;
                        if !map.is_empty() && map.len() + producers_last.len() + records > map_entries {
                            // The map is full: this pass cleans up to here.
                            break 'map;
                        }
                        records::for_each_record(bytes, |record| {
                            if let Some(key) = record.key
                                && record.offset >= plan.first_dirty
                            {
                                map.insert(key_hash(key), record.offset);
                            }
                        })
                        .map_err(|e| corrupt(&inner.dir, format!("batch at offset {}: {e}", header.base_offset)))?;
                    }
                    if header.producer_id >= 0 {
                        producers_last.insert(header.producer_id, header.base_offset);
                    }
                    map_end = header.last_offset() + 1;
                }
            }
            map_end = map_end.max(segment.next_offset);
        }
        let keep = Keep {
            map: &map,
            map_end,
            producers_last: &producers_last,
            tombstone_horizon: now_ms.saturating_sub(delete_retention_ms),
            delete_retention_ms,
        };
        let mut tombstones_due: Option<i64> = None;
        for segment in plan.segments.iter().filter(|s| s.base < map_end) {
            if !current() {
                // The checkpoint stays: what this pass did not clean must not count as clean.
                return Ok(unfinished(outcome));
            }
            let Some(rewritten) =
                self.rewrite_segment(segment, &keep, pace, &mut outcome.bytes_read, &mut tombstones_due).await?
            else {
                continue;
            };
            let size = rewritten.segment.size;
            let removed = rewritten.records_removed;
            if self.swap_segment(segment, plan.truncations, rewritten).await? {
                outcome.segments_rewritten += 1;
                outcome.bytes_before += segment.size;
                outcome.bytes_after += size;
                outcome.records_removed += removed;
            } else if !current() {
                return Ok(unfinished(outcome));
            }
            // (Otherwise retention removed the segment meanwhile: nothing of it to clean.)
        }
        // Under the file lock: a truncation (which holds it throughout) either happened before,
        // and is seen here, or waits for the checkpoint and then lowers it.
        let _files = inner.files_lock.lock().await;
        let cleaned = {
            let mut state = inner.state.borrow_mut();
            if !state.still_planned(plan.truncations) {
                drop(state);
                return Ok(unfinished(outcome));
            }
            state.cleaned_offset = map_end.min(state.next_offset).max(state.cleaned_offset.min(state.next_offset));
            state.tombstones_due_ms = tombstones_due;
            state.cleaned_offset
        };
        write_checkpoint(&inner.dir, cleaned, tombstones_due, &inner.faults).await?;
        outcome.cleaned_offset = cleaned;
        Ok(outcome)
    }

    /// Writes the records of `segment` that `keep` keeps into its `.cleaned` file; `None` when
    /// nothing would go (the file is removed again).
    async fn rewrite_segment(
        &self,
        segment: &Planned,
        keep: &Keep<'_>,
        pace: &RateLimit,
        read: &mut u64,
        tombstones_due: &mut Option<i64>,
    ) -> Result<Option<Rewritten>, StorageError> {
        let inner = &*self.inner;
        let path = cleaned_path(&inner.dir, segment.base);
        let out = DirectFile::open(&path, OpenMode::CreateOrOpen, inner.faults.clone())
            .await
            .map_err(|e| StorageError::io(&path, &e))?;
        let io_err = |e: std::io::Error| StorageError::io(&path, &e);
        out.set_len(0).await.map_err(io_err)?;
        let interval = inner.state.borrow().config.index_interval_bytes;
        let mut fresh = Segment::new(&inner.dir, segment.base, now_ms());
        let mut buf = AlignedBuf::with_capacity(WINDOW_BYTES + PAGE_BYTES);
        let mut flushed = 0u64;
        let mut removed = 0u64;
        let mut dropped_batches = 0u64;
        let mut reader = SegmentReader::new(segment);
        while let Some(batches) = reader.next(pace, read).await? {
            for (i, bytes) in batches.iter().enumerate() {
                if i % BATCHES_BETWEEN_YIELDS == BATCHES_BETWEEN_YIELDS - 1 {
                    io::yield_now().await;
                }
                let header = BatchHeader::parse(bytes)?;
                // Whether this is (or may be) its idempotent producer's last batch.
                let producers_last = header.producer_id >= 0
                    && keep.producers_last.get(&header.producer_id).is_none_or(|&last| last <= header.base_offset);
                let retained = if !cleanable_batch(&header) || header.base_offset >= keep.map_end {
                    Retained::All
                } else if header.records_count == 0 {
                    // An emptied producer's batch kept by an earlier pass: until a later one.
                    if producers_last { Retained::All } else { Retained::Nothing }
                } else {
                    let expired = header.max_timestamp < keep.tombstone_horizon;
                    let mut kept_tombstone = false;
                    let (retained, gone) = records::retain_records(bytes, |record| {
                        if record.offset >= keep.map_end {
                            return true;
                        }
                        let Some(key) = record.key else { return false };
                        if keep.map.get(&key_hash(key)).is_some_and(|&newest| record.offset < newest) {
                            return false;
                        }
                        if record.value.is_none() {
                            if expired {
                                return false;
                            }
                            kept_tombstone = true;
                        }
                        true
                    })
                    .map_err(|e| corrupt(&inner.dir, format!("batch at offset {}: {e}", header.base_offset)))?;
                    if kept_tombstone {
                        let due = header.max_timestamp.saturating_add(keep.delete_retention_ms).saturating_add(1);
                        *tombstones_due = Some(tombstones_due.map_or(due, |d| d.min(due)));
                    }
                    removed += gone as u64;
                    match retained {
                        Retained::Nothing if producers_last => {
                            Retained::Some(records::emptied(bytes).map_err(|e| {
                                corrupt(&inner.dir, format!("batch at offset {}: {e}", header.base_offset))
                            })?)
                        }
                        retained => retained,
                    }
                };
                let kept: &[u8] = match &retained {
                    Retained::All => bytes,
                    Retained::Nothing => {
                        dropped_batches += 1;
                        continue;
                    }
                    Retained::Some(rebuilt) => rebuilt,
                };
                let kept_header = BatchHeader::parse(kept)?;
                fresh.note_batch(&kept_header, flushed + buf.len() as u64, interval);
                buf.extend_from_slice(kept);
                if buf.len() >= WINDOW_BYTES {
                    let whole = buf.len() / PAGE_BYTES * PAGE_BYTES;
                    let mut rest = AlignedBuf::with_capacity(WINDOW_BYTES + PAGE_BYTES);
                    rest.extend_from_slice(&buf.as_slice()[whole..]);
                    buf.truncate(whole);
                    pace.take(whole as u64).await;
                    let (result, _) = out.write_all_at(buf, flushed).await;
                    result.map_err(io_err)?;
                    flushed += whole as u64;
                    buf = rest;
                }
            }
        }
        if removed == 0 && dropped_batches == 0 {
            drop(out);
            let _ = io::fs::remove_file(&path, &inner.faults).await;
            return Ok(None);
        }
        if !buf.is_empty() {
            buf.pad_to_page();
            pace.take(buf.len() as u64).await;
            let (result, _) = out.write_all_at(buf, flushed).await;
            result.map_err(io_err)?;
        }
        out.set_len(fresh.size).await.map_err(io_err)?;
        out.sync_data().await.map_err(io_err)?;
        fresh.complete_time_index();
        Ok(Some(Rewritten { segment: fresh, records_removed: removed }))
    }

    /// Puts a rewritten segment in the place of `planned`, on disk and in memory, if the log
    /// still holds it unchanged; otherwise drops the rewrite. Returns whether it swapped.
    async fn swap_segment(
        &self,
        planned: &Planned,
        truncations: u64,
        rewritten: Rewritten,
    ) -> Result<bool, StorageError> {
        let inner = &*self.inner;
        let cleaned = cleaned_path(&inner.dir, planned.base);
        let _files = inner.files_lock.lock().await;
        let unchanged = {
            let state = inner.state.borrow();
            state.still_planned(truncations)
                && state.segments.iter().any(|s| {
                    s.base_offset == planned.base
                        && s.sealed
                        && s.size == planned.size
                        && s.file.as_ref().is_some_and(|f| Rc::ptr_eq(f, &planned.file))
                })
        };
        if !unchanged {
            let _ = io::fs::remove_file(&cleaned, &inner.faults).await;
            return Ok(false);
        }
        // The log has gaps from now on (recorded before there are any).
        record_gaps(inner).await?;
        let base = planned.base;
        // The old indexes stop describing the file about to take the segment's name: they go
        // first (a crash in between leaves the old file, whose indexes are rebuilt).
        for name in [segment::index_file_name(base), segment::time_index_file_name(base)] {
            io::fs::remove_file(&inner.dir.join(name), &inner.faults)
                .await
                .map_err(|e| StorageError::io(&inner.dir, &e))?;
        }
        sync_dir(&inner.dir, &inner.faults).await?;
        let path = inner.dir.join(log_file_name(base));
        io::fs::rename(&cleaned, &path, &inner.faults).await.map_err(|e| StorageError::io(&path, &e))?;
        sync_dir(&inner.dir, &inner.faults).await?;
        let file = DirectFile::open(&path, OpenMode::Existing, inner.faults.clone())
            .await
            .map_err(|e| StorageError::io(&path, &e))?;
        let Rewritten { segment: fresh, .. } = rewritten;
        let (offset_index, time_index) = (fresh.offset_index.clone(), fresh.time_index.clone());
        {
            let mut state = inner.state.borrow_mut();
            if let Some(segment) = state.segments.iter_mut().find(|s| s.base_offset == base) {
                segment.file = Some(Rc::new(file));
                segment.size = fresh.size;
                segment.written_size = fresh.size;
                segment.allocated_bytes = fresh.size;
                segment.prepared_bytes = io::round_up_to_page(fresh.size as usize) as u64;
                segment.offset_index = fresh.offset_index;
                segment.time_index = fresh.time_index;
                if fresh.max_timestamp >= 0 {
                    segment.max_timestamp = fresh.max_timestamp;
                    segment.max_timestamp_offset = fresh.max_timestamp_offset;
                }
            }
            // Cached copies of what was just cleaned would serve the removed records again.
            inner.cache.borrow_mut().trim_front(inner.cache_key, planned.next_offset);
        }
        save_indexes(&inner.dir, base, &offset_index, &time_index, &inner.faults).await;
        tracing::debug!(dir = %inner.dir.display(), base, before = planned.size, after = fresh.size, "segment compacted");
        Ok(true)
    }
}

fn cleaned_path(dir: &std::path::Path, base: i64) -> std::path::PathBuf {
    dir.join(format!("{}{CLEANED_SUFFIX}", log_file_name(base)))
}

/// The cleaner's checkpoint in `dir`: the clean offset and when a kept tombstone may go. A
/// missing or unreadable one means nothing is clean (the next pass reads the whole log).
pub(super) async fn read_checkpoint(dir: &std::path::Path, faults: &crate::io::Faults) -> (i64, Option<i64>) {
    let bytes = io::fs::read(&dir.join(CLEANER_CHECKPOINT_FILE), faults).await.ok().flatten().unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    let mut numbers = text.split_whitespace().map(str::parse::<i64>);
    match (numbers.next(), numbers.next()) {
        (Some(Ok(offset)), Some(Ok(due))) => (offset, Some(due)),
        (Some(Ok(offset)), _) => (offset, None),
        _ => (i64::MIN, None),
    }
}

pub(super) async fn write_checkpoint(
    dir: &std::path::Path,
    offset: i64,
    tombstones_due: Option<i64>,
    faults: &crate::io::Faults,
) -> Result<(), StorageError> {
    let path = dir.join(CLEANER_CHECKPOINT_FILE);
    let text = match tombstones_due {
        Some(due) => format!("{offset} {due}\n"),
        None => format!("{offset}\n"),
    };
    io::fs::write_atomic(&path, text.into_bytes(), faults).await.map_err(|e| StorageError::io(&path, &e))
}
