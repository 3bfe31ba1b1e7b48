//! A partition's log: segments, the write-behind buffer, the flusher, recovery and retention.
//!
//! Write path: `append` is synchronous. It stamps offsets into the batches, copies them once into
//! the page-aligned write buffer of the active segment, records them in the indexes and the
//! shard's read cache, and wakes the log's flusher task. The flusher is the only code that does
//! disk I/O for the log's writes: it takes the buffer (leaving the partial tail page in a fresh
//! one, to be rewritten next time), writes it with io_uring at a page-aligned position, and
//! depending on the flush policy calls fdatasync, then completes the appends' durability
//! futures. Appends that arrive while a write or fdatasync is in flight are gathered into the
//! next round: group commit.
//!
//! Ownership: a `Log` is owned by the shard that owns the partition. It is `!Send` (`Rc`) and is
//! reached from other shards only by messages to that shard.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::rc::{Rc, Weak};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_channel::oneshot;

use super::batch::{self, BatchSpan};
use super::cache::{CacheKey, ReadCache};
use super::index::{OffsetIndex, TimeIndex};
use super::segment::{
    self, ReadFailure, Segment, index_file_name, log_file_name, parse_log_file_name, scan_file, time_index_file_name,
};
use super::{FlushPolicy, LogConfig, StorageError, TimestampType};
use crate::io::{self, AlignedBuf, DirectFile, Faults, OpenMode, round_down_to_page};
use crate::util::{LocalSignal, now_ms};

/// Gap between two segment unlinks by retention. Unlinking a large file frees its extents in a
/// journal transaction that every concurrent fdatasync on the filesystem then waits for (tens of
/// milliseconds for 64 MiB with ext4's online `discard`); back to back, several of them stall
/// durable appends for their sum. One at a time, they cost each sync at most one.
pub const UNLINK_PACE: Duration = Duration::from_millis(50);

/// Segment files are preallocated ahead of the write position in steps of this much, from the
/// first write on (a segment nobody writes to allocates nothing). Smaller steps were tried: on
/// ext4 here, a file that began with 64 KiB, 1 MiB or 4 MiB steps made every later durable 4 KiB
/// append about 60 us slower at p50 (265 vs 203 us) and pushed p99 past 1.5x fio's fdatasync
/// p99, even once the steps had grown to this size.
const PREALLOCATE_STEP_BYTES: u64 = 16 << 20;
/// Under `flush = never`, unwritten data reaches the file at most this long after its append.
const WRITE_BEHIND_MS: u64 = 200;
/// File that remembers a log start offset moved by DeleteRecords.
const LOG_START_FILE: &str = "log-start-offset";
/// Present while the log is closed cleanly: its saved indexes match its data.
const CLEAN_SHUTDOWN_FILE: &str = "clean-shutdown";

/// What a log needs from its shard.
#[derive(Clone)]
pub struct LogContext {
    /// The shard's read cache.
    pub cache: Rc<RefCell<ReadCache>>,
    /// Failure injection for the log's files.
    pub faults: Faults,
}

/// Result of an append.
#[derive(Debug)]
pub struct AppendInfo {
    /// Offset given to the first record.
    pub base_offset: i64,
    /// Offset of the last record.
    pub last_offset: i64,
    /// The broker time stamped into the batches, when the topic uses LogAppendTime.
    pub log_append_time_ms: Option<i64>,
    /// The log start offset at the time of the append.
    pub log_start_offset: i64,
    /// Resolves once the appended bytes are written and fdatasync'd.
    pub durable: Durable,
}

/// A future that resolves when an append has become durable (or failed to).
#[derive(Debug)]
pub struct Durable {
    receiver: Option<oneshot::Receiver<Result<(), StorageError>>>,
}

impl Durable {
    fn ready() -> Self {
        Self { receiver: None }
    }

    /// Waits for durability.
    pub async fn wait(self) -> Result<(), StorageError> {
        match self.receiver {
            None => Ok(()),
            Some(receiver) => receiver.await.unwrap_or(Err(StorageError::Closed)),
        }
    }
}

/// Batches read from a log.
#[derive(Debug, Default)]
pub struct ReadResult {
    /// Whole batches, in offset order, as slices of cache or read buffers.
    pub batches: Vec<Bytes>,
    /// First offset held by the log.
    pub log_start_offset: i64,
    /// Next offset to be written.
    pub log_end_offset: i64,
    /// Offsets below this may be exposed to consumers as far as this log's durability goes.
    pub stable_end_offset: i64,
}

impl ReadResult {
    /// Total bytes of the batches.
    pub fn bytes(&self) -> usize {
        self.batches.iter().map(Bytes::len).sum()
    }
}

/// An offset found by timestamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OffsetAndTimestamp {
    /// The record's offset.
    pub offset: i64,
    /// Its timestamp.
    pub timestamp: i64,
}

/// What retention removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetentionOutcome {
    /// Segments deleted.
    pub segments_deleted: usize,
    /// Bytes deleted.
    pub bytes_deleted: u64,
    /// The log start offset afterwards.
    pub log_start_offset: i64,
}

/// A point-in-time view of a log's offsets and size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogSnapshot {
    /// First offset held.
    pub log_start_offset: i64,
    /// Next offset to be written.
    pub log_end_offset: i64,
    /// Offsets below this are written to the file.
    pub written_offset: i64,
    /// Offsets below this are written and fdatasync'd.
    pub durable_offset: i64,
    /// Offsets below this may be shown to consumers.
    pub stable_end_offset: i64,
    /// Bytes of all segments.
    pub size_bytes: u64,
    /// Number of segments.
    pub segments: usize,
    /// Appended bytes not yet written.
    pub unwritten_bytes: u64,
    /// True after a failed write or fdatasync.
    pub offline: bool,
}

/// The closing bytes of a rolled segment, waiting for the flusher to write, sync and seal them.
struct PendingSeal {
    segment_base: i64,
    buf: AlignedBuf,
    buf_position: u64,
    end_size: u64,
    end_offset: i64,
}

enum Command {
    Truncate { offset: i64, reply: oneshot::Sender<Result<(), StorageError>> },
    Flush { reply: oneshot::Sender<Result<(), StorageError>> },
}

struct Waiter {
    end_offset: i64,
    reply: oneshot::Sender<Result<(), StorageError>>,
}

struct LogState {
    config: LogConfig,
    segments: VecDeque<Segment>,
    next_offset: i64,
    log_start_offset: i64,
    /// Unwritten bytes of the active segment, starting at the page-aligned `buf_position`.
    buf: AlignedBuf,
    buf_position: u64,
    spare_buf: Option<AlignedBuf>,
    pending_seals: VecDeque<PendingSeal>,
    written_offset: i64,
    durable_offset: i64,
    durability_waiters: VecDeque<Waiter>,
    room_waiters: Vec<oneshot::Sender<()>>,
    data_watchers: Vec<(i64, oneshot::Sender<()>)>,
    commands: VecDeque<Command>,
    offline: Option<String>,
    closing: bool,
    last_write_ms: i64,
    last_sync_ms: i64,
}

struct LogInner {
    dir: PathBuf,
    state: RefCell<LogState>,
    wake_flusher: LocalSignal,
    cache: Rc<RefCell<ReadCache>>,
    cache_key: CacheKey,
    faults: Faults,
    flusher_done: RefCell<Option<oneshot::Receiver<()>>>,
}

/// A partition log. Cloning gives another handle to the same log.
#[derive(Clone)]
pub struct Log {
    inner: Rc<LogInner>,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log").field("dir", &self.inner.dir).finish()
    }
}

impl LogState {
    fn active(&self) -> &Segment {
        self.segments.back().expect("a log always has an active segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments.back_mut().expect("a log always has an active segment")
    }

    fn stable_end_offset(&self) -> i64 {
        if self.offline.is_some() || self.config.flush == FlushPolicy::Always {
            self.durable_offset
        } else {
            self.next_offset
        }
    }

    fn unwritten_bytes(&self) -> u64 {
        let sealing: u64 = self.pending_seals.iter().map(|p| p.end_size - p.buf_position).sum();
        let active = self.active();
        sealing + (active.size - active.written_size)
    }

    fn size_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.size).sum()
    }

    fn segment_index_for(&self, offset: i64) -> Option<usize> {
        let idx = self.segments.partition_point(|s| s.base_offset <= offset);
        idx.checked_sub(1)
    }

    fn has_write_work(&self) -> bool {
        !self.pending_seals.is_empty() || self.active().size > self.active().written_size
    }

    fn needs_sync(&self) -> bool {
        self.durable_offset < self.written_offset
    }

    /// Frees the spare write buffer if a burst grew it past the write-behind size.
    fn release_grown_spare(&mut self) {
        if self.spare_buf.as_ref().is_some_and(|b| b.capacity() > self.config.write_behind_bytes.max(io::PAGE_BYTES)) {
            self.spare_buf = None;
        }
    }

    fn take_fresh_buf(&mut self) -> AlignedBuf {
        let capacity = self.config.write_behind_bytes.max(io::PAGE_BYTES);
        match self.spare_buf.take() {
            Some(mut buf) => {
                buf.clear();
                buf
            }
            None => AlignedBuf::with_capacity(capacity),
        }
    }

    /// Starts a new active segment at `next_offset`; the old one's unwritten bytes go to the
    /// flusher for sealing.
    fn roll(&mut self, dir: &Path, now_ms: i64) {
        let fresh = self.take_fresh_buf();
        let buf = std::mem::replace(&mut self.buf, fresh);
        let active = self.active();
        self.pending_seals.push_back(PendingSeal {
            segment_base: active.base_offset,
            buf,
            buf_position: self.buf_position,
            end_size: active.size,
            end_offset: self.next_offset,
        });
        self.buf_position = 0;
        let segment = Segment::new(dir, self.next_offset, now_ms);
        tracing::debug!(dir = %dir.display(), base_offset = self.next_offset, "rolled segment");
        self.segments.push_back(segment);
    }

    fn should_roll(&self, incoming_bytes: u64, incoming_offsets: i64, now_ms: i64) -> bool {
        let active = self.active();
        if active.is_empty() {
            return false;
        }
        active.size + incoming_bytes > self.config.segment_bytes
            || now_ms - active.created_ms > self.config.segment_ms
            || self.next_offset + incoming_offsets - active.base_offset > i64::from(u32::MAX)
    }

    fn complete_durability(&mut self, outcome: &Result<(), StorageError>) {
        while let Some(waiter) = self.durability_waiters.front() {
            let done = match outcome {
                Ok(()) => waiter.end_offset <= self.durable_offset,
                Err(_) => true,
            };
            if !done {
                break;
            }
            let waiter = self.durability_waiters.pop_front().expect("checked");
            let _ = waiter.reply.send(outcome.clone());
        }
    }

    fn release_room_waiters(&mut self) {
        if self.unwritten_bytes() <= self.config.max_unwritten_bytes as u64 || self.offline.is_some() {
            for waiter in self.room_waiters.drain(..) {
                let _ = waiter.send(());
            }
        }
    }

    fn notify_data_watchers(&mut self) {
        let stable = self.stable_end_offset();
        self.data_watchers.retain_mut(|(offset, _)| *offset >= stable);
        // Dropping the senders above wakes the receivers; also prune abandoned watchers.
        self.data_watchers.retain(|(_, sender)| !sender.is_canceled());
    }

    fn go_offline(&mut self, reason: String) {
        tracing::error!(reason = %reason, "log goes offline");
        self.offline = Some(reason.clone());
        self.complete_durability(&Err(StorageError::Offline(reason)));
        for cmd in self.commands.drain(..) {
            let reply = match cmd {
                Command::Truncate { reply, .. } | Command::Flush { reply } => reply,
            };
            let _ = reply.send(Err(StorageError::Offline(self.offline.clone().unwrap_or_default())));
        }
        self.release_room_waiters();
        self.notify_data_watchers();
    }
}

impl Log {
    /// Opens (recovering) or creates the log in `dir`.
    pub async fn open(dir: &Path, config: LogConfig, ctx: &LogContext) -> Result<Self, StorageError> {
        let now = now_ms();
        std::fs::create_dir_all(dir).map_err(|e| StorageError::io(dir, &e))?;
        let persisted_start = read_log_start(dir);
        let mut segments = recover_segments(dir, &config, &ctx.faults).await?;
        forget_clean_shutdown(dir, segments.back().map(|s| s.base_offset)).await?;
        if segments.is_empty() {
            let base = persisted_start.unwrap_or(0);
            let mut segment = Segment::new(dir, base, now);
            let file = create_segment_file(&segment.path, &ctx.faults).await?;
            segment.allocated_bytes = file.len().await.map_err(|e| StorageError::io(&segment.path, &e))?;
            segment.file = Some(Rc::new(file));
            sync_dir(dir).await?;
            segments.push_back(segment);
        }
        let active = segments.back().expect("at least one segment");
        let next_offset = active.next_offset;
        let log_start_offset =
            persisted_start.unwrap_or(i64::MIN).max(segments.front().expect("segment").base_offset).min(next_offset);
        let tail_position = round_down_to_page(active.size);
        let mut buf = AlignedBuf::with_capacity(config.write_behind_bytes.max(io::PAGE_BYTES));
        if active.size > tail_position {
            let file = active.file.as_ref().expect("recovered segments have files");
            let (result, page) = file.read_at(AlignedBuf::with_capacity(io::PAGE_BYTES), tail_position).await;
            result.map_err(|e| StorageError::io(&active.path, &e))?;
            let keep = (active.size - tail_position) as usize;
            if page.len() < keep {
                return Err(StorageError::Corrupt {
                    path: active.path.clone(),
                    position: tail_position,
                    reason: "tail page shorter than the recovered size".into(),
                });
            }
            buf.extend_from_slice(&page.as_slice()[..keep]);
        }
        let cache_key = ctx.cache.borrow_mut().register();
        let state = LogState {
            config,
            segments,
            next_offset,
            log_start_offset,
            buf,
            buf_position: tail_position,
            spare_buf: None,
            pending_seals: VecDeque::new(),
            written_offset: next_offset,
            durable_offset: next_offset,
            durability_waiters: VecDeque::new(),
            room_waiters: Vec::new(),
            data_watchers: Vec::new(),
            commands: VecDeque::new(),
            offline: None,
            closing: false,
            last_write_ms: now,
            last_sync_ms: now,
        };
        let inner = Rc::new(LogInner {
            dir: dir.to_owned(),
            state: RefCell::new(state),
            wake_flusher: LocalSignal::new(),
            cache: ctx.cache.clone(),
            cache_key,
            faults: ctx.faults.clone(),
            flusher_done: RefCell::new(None),
        });
        let (done_tx, done_rx) = oneshot::channel();
        *inner.flusher_done.borrow_mut() = Some(done_rx);
        io::spawn_detached(flusher(Rc::downgrade(&inner), done_tx));
        Ok(Self { inner })
    }

    /// The directory holding the log.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Current offsets and sizes.
    pub fn snapshot(&self) -> LogSnapshot {
        let state = self.inner.state.borrow();
        LogSnapshot {
            log_start_offset: state.log_start_offset,
            log_end_offset: state.next_offset,
            written_offset: state.written_offset,
            durable_offset: state.durable_offset,
            stable_end_offset: state.stable_end_offset(),
            size_bytes: state.size_bytes(),
            segments: state.segments.len(),
            unwritten_bytes: state.unwritten_bytes(),
            offline: state.offline.is_some(),
        }
    }

    /// First offset held.
    pub fn log_start_offset(&self) -> i64 {
        self.inner.state.borrow().log_start_offset
    }

    /// Next offset to be written (log end offset).
    pub fn log_end_offset(&self) -> i64 {
        self.inner.state.borrow().next_offset
    }

    /// The log's configuration.
    pub fn config(&self) -> LogConfig {
        self.inner.state.borrow().config.clone()
    }

    /// Replaces the configuration (topic config change). Takes effect for later appends,
    /// rolls and retention passes.
    pub fn set_config(&self, config: LogConfig) {
        self.inner.state.borrow_mut().config = config;
        self.inner.wake_flusher.notify();
    }

    /// Appends the batches in `records` (already checked by [`batch::validate_all`], which gave
    /// `spans`), giving them consecutive offsets and stamping `leader_epoch`. Nothing is written
    /// if the log is offline. The batches are copied once, into the write buffer; `records`
    /// itself becomes the cached copy that fetches are served from.
    pub fn append(
        &self,
        mut records: BytesMut,
        spans: &[BatchSpan],
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo, StorageError> {
        let inner = &*self.inner;
        let mut guard = inner.state.borrow_mut();
        let state = &mut *guard;
        if let Some(reason) = &state.offline {
            return Err(StorageError::Offline(reason.clone()));
        }
        if state.closing {
            return Err(StorageError::Closed);
        }
        let offsets: i64 = spans.iter().map(|s| s.header.offset_count()).sum();
        if state.should_roll(records.len() as u64, offsets, now_ms) {
            state.roll(&inner.dir, now_ms);
        }
        let base_offset = state.next_offset;
        let log_append_time = (state.config.timestamp_type == TimestampType::LogAppendTime).then_some(now_ms);
        let index_interval = state.config.index_interval_bytes;
        let mut placed = Vec::with_capacity(spans.len());
        for span in spans {
            let bytes = &mut records[span.start..span.end()];
            batch::stamp(bytes, state.next_offset, leader_epoch);
            if let Some(time) = log_append_time {
                batch::set_log_append_time(bytes, time);
            }
            let header = batch::BatchHeader::parse(bytes).expect("validated batch");
            let position = state.active().size;
            assert_eq!(state.buf_position + state.buf.len() as u64, position, "write buffer ends at segment end");
            state.buf.extend_from_slice(bytes);
            state.active_mut().note_batch(&header, position, index_interval);
            assert!(header.base_offset == state.next_offset, "offsets are assigned in order");
            state.next_offset = header.last_offset() + 1;
            placed.push((header.base_offset, header.last_offset(), span.start, span.end()));
        }
        let last_offset = state.next_offset - 1;
        let frozen = records.freeze();
        {
            let mut cache = inner.cache.borrow_mut();
            for (base, last, start, end) in placed {
                cache.insert(inner.cache_key, base, last, frozen.slice(start..end));
            }
        }
        let durable = if state.durable_offset >= state.next_offset {
            Durable::ready()
        } else {
            let (tx, rx) = oneshot::channel();
            state.durability_waiters.push_back(Waiter { end_offset: state.next_offset, reply: tx });
            Durable { receiver: Some(rx) }
        };
        let log_start_offset = state.log_start_offset;
        if state.config.flush != FlushPolicy::Always {
            state.notify_data_watchers();
        }
        drop(guard);
        inner.wake_flusher.notify();
        Ok(AppendInfo { base_offset, last_offset, log_append_time_ms: log_append_time, log_start_offset, durable })
    }

    /// A future that resolves once every offset below `end_offset` is durable (for an
    /// acknowledgement that refers to data appended earlier, such as a retried batch).
    pub fn durable_up_to(&self, end_offset: i64) -> Durable {
        let mut state = self.inner.state.borrow_mut();
        if state.durable_offset >= end_offset {
            return Durable::ready();
        }
        if let Some(reason) = &state.offline {
            let (tx, rx) = oneshot::channel();
            let _ = tx.send(Err(StorageError::Offline(reason.clone())));
            return Durable { receiver: Some(rx) };
        }
        let (tx, rx) = oneshot::channel();
        // Waiters are completed in end-offset order; keep the queue sorted.
        let at = state.durability_waiters.partition_point(|w| w.end_offset <= end_offset);
        state.durability_waiters.insert(at, Waiter { end_offset, reply: tx });
        Durable { receiver: Some(rx) }
    }

    /// Waits while more than `max.unwritten.bytes` of appended data is not yet written: callers
    /// hold produce acknowledgements behind this, so producers cannot outrun the disk forever.
    pub async fn wait_for_write_room(&self) {
        let receiver = {
            let mut state = self.inner.state.borrow_mut();
            if state.unwritten_bytes() <= state.config.max_unwritten_bytes as u64 || state.offline.is_some() {
                return;
            }
            let (tx, rx) = oneshot::channel();
            state.room_waiters.push(tx);
            rx
        };
        self.inner.wake_flusher.notify();
        let _ = receiver.await;
    }

    /// A receiver that completes when offsets at or past `offset` become visible (or the log
    /// closes); `None` when they already are.
    pub fn watch(&self, offset: i64) -> Option<oneshot::Receiver<()>> {
        let mut state = self.inner.state.borrow_mut();
        if state.stable_end_offset() > offset || state.closing {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        state.data_watchers.push((offset, tx));
        Some(rx)
    }

    /// Reads whole batches starting with the one holding `offset`, stopping before batches
    /// whose base offset reaches `upper_bound` (and before data that is not yet stable), with
    /// at most `max_bytes` (but always one whole batch when there is one and `max_bytes > 0`).
    pub async fn read(&self, offset: i64, max_bytes: usize, upper_bound: i64) -> Result<ReadResult, StorageError> {
        let inner = &*self.inner;
        let mut offset = offset;
        loop {
            let (file, position, end, segment_next, upper, mut result) = {
                let state = inner.state.borrow();
                let mut result = ReadResult {
                    batches: Vec::new(),
                    log_start_offset: state.log_start_offset,
                    log_end_offset: state.next_offset,
                    stable_end_offset: state.stable_end_offset(),
                };
                if offset < state.log_start_offset || offset > state.next_offset {
                    return Err(StorageError::OffsetOutOfRange {
                        offset,
                        log_start_offset: state.log_start_offset,
                        log_end_offset: state.next_offset,
                    });
                }
                let upper = upper_bound.min(result.stable_end_offset);
                if offset >= upper || max_bytes == 0 {
                    return Ok(result);
                }
                if let Some(batches) = inner.cache.borrow_mut().read(inner.cache_key, offset, max_bytes, upper) {
                    result.batches = batches;
                    return Ok(result);
                }
                let Some(idx) = state.segment_index_for(offset) else {
                    return Ok(result);
                };
                let segment = &state.segments[idx];
                let Some(file) = segment.file.clone() else {
                    return Ok(result);
                };
                let next = state.segments.get(idx + 1).map(|s| s.base_offset);
                (file, segment.scan_start(offset), segment.written_size, next, upper, result)
            };
            let batches =
                segment::read_batches(&file, position, end, offset, max_bytes, upper).await.map_err(|failure| {
                    match failure {
                        ReadFailure::Io(err) => StorageError::io(file.path(), &err),
                        ReadFailure::Corrupt { position, error } => {
                            StorageError::Corrupt { path: file.path().to_owned(), position, reason: error.to_string() }
                        }
                    }
                })?;
            if batches.is_empty() {
                // Nothing at or after `offset` in this segment (a gap): continue in the next.
                if let Some(next) = segment_next.filter(|n| *n > offset) {
                    offset = next;
                    continue;
                }
            }
            result.batches = batches;
            return Ok(result);
        }
    }

    /// The first offset whose record timestamp is at least `timestamp` (ListOffsets by time).
    pub async fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<OffsetAndTimestamp>, StorageError> {
        let start = {
            let state = self.inner.state.borrow();
            let Some(segment) =
                state.segments.iter().find(|s| s.max_timestamp >= timestamp && s.next_offset > state.log_start_offset)
            else {
                return Ok(None);
            };
            let from = segment
                .time_index
                .lookup_before(timestamp)
                .map_or(segment.base_offset, |e| segment.base_offset + i64::from(e.relative_offset));
            from.max(state.log_start_offset)
        };
        self.find_record(start, |header| header.max_timestamp >= timestamp, |ts| ts >= timestamp).await
    }

    /// The record with the largest timestamp (ListOffsets MAX_TIMESTAMP).
    pub async fn offset_of_max_timestamp(&self) -> Result<Option<OffsetAndTimestamp>, StorageError> {
        let (start, max) = {
            let state = self.inner.state.borrow();
            let Some(segment) = state
                .segments
                .iter()
                .filter(|s| s.max_timestamp >= 0 && s.next_offset > state.log_start_offset)
                .max_by_key(|s| (s.max_timestamp, -s.base_offset))
            else {
                return Ok(None);
            };
            (segment.max_timestamp_offset.max(state.log_start_offset), segment.max_timestamp)
        };
        self.find_record(start, |header| header.max_timestamp >= max, |ts| ts >= max).await
    }

    /// Scans batches from `start` for the first one accepted by `batch_matches`, then decodes
    /// it to find its first record whose timestamp satisfies `record_matches`.
    async fn find_record(
        &self,
        start: i64,
        batch_matches: impl Fn(&batch::BatchHeader) -> bool,
        record_matches: impl Fn(i64) -> bool,
    ) -> Result<Option<OffsetAndTimestamp>, StorageError> {
        const SCAN_BYTES: usize = 1 << 20;
        let mut offset = start;
        loop {
            let result = self.read(offset, SCAN_BYTES, i64::MAX).await?;
            if result.batches.is_empty() {
                return Ok(None);
            }
            for bytes in &result.batches {
                let header = batch::BatchHeader::parse(bytes)?;
                offset = header.last_offset() + 1;
                if !batch_matches(&header) {
                    continue;
                }
                if header.is_log_append_time() {
                    return Ok(Some(OffsetAndTimestamp {
                        offset: header.base_offset,
                        timestamp: header.max_timestamp,
                    }));
                }
                let records =
                    crate::client::records::decode_records(bytes.clone()).map_err(|e| StorageError::Corrupt {
                        path: self.inner.dir.clone(),
                        position: 0,
                        reason: format!("undecodable batch at offset {}: {e}", header.base_offset),
                    })?;
                if let Some(record) = records.iter().find(|r| record_matches(r.timestamp_ms)) {
                    return Ok(Some(OffsetAndTimestamp { offset: record.offset, timestamp: record.timestamp_ms }));
                }
            }
        }
    }

    /// Deletes closed segments that retention (time, size, or a log start offset moved by
    /// DeleteRecords) no longer keeps. Appends are not held up: segments leave the log's state
    /// at once and their files are unlinked afterwards, [`UNLINK_PACE`] apart.
    pub async fn enforce_retention(&self, now_ms: i64) -> Result<RetentionOutcome, StorageError> {
        let inner = &*self.inner;
        let expired = |retention_ms: i64, s: &Segment| {
            retention_ms >= 0 && s.max_timestamp >= 0 && now_ms - s.max_timestamp > retention_ms
        };
        let rolled = {
            let mut state = inner.state.borrow_mut();
            if state.offline.is_some() {
                return Ok(RetentionOutcome {
                    log_start_offset: state.log_start_offset,
                    ..RetentionOutcome::default()
                });
            }
            // When even the active segment has expired, roll it so it can go too (Kafka does).
            let retention_ms = if state.config.delete_retention { state.config.retention_ms } else { -1 };
            let roll = !state.active().is_empty() && state.segments.iter().all(|s| expired(retention_ms, s));
            if roll {
                state.roll(&inner.dir, now_ms);
            }
            roll
        };
        if rolled {
            // Seal the rolled segment and give the new active one its file before anything
            // older is unlinked, so the log's end survives a restart.
            self.flush().await?;
        }
        let (retention_ms, retention_bytes) = {
            let state = inner.state.borrow();
            if state.config.delete_retention {
                (state.config.retention_ms, state.config.retention_bytes)
            } else {
                // cleanup.policy=compact alone: only a moved log start offset removes segments.
                (-1, -1)
            }
        };
        let mut size = inner.state.borrow().size_bytes();
        Ok(self
            .remove_leading_segments(
                |segment, log_start_offset| {
                    let by_time = expired(retention_ms, segment);
                    let by_size = retention_bytes >= 0 && size - segment.size >= retention_bytes as u64;
                    let by_start = segment.next_offset <= log_start_offset;
                    let remove = by_time || by_size || by_start;
                    if remove {
                        size -= segment.size;
                    }
                    remove
                },
                UNLINK_PACE,
            )
            .await)
    }

    /// Removes sealed segments from the front while `doomed` says so (it sees each segment and
    /// the log start offset), moves the log start offset past them, then unlinks their files,
    /// `pace` apart.
    async fn remove_leading_segments(
        &self,
        mut doomed: impl FnMut(&Segment, i64) -> bool,
        pace: Duration,
    ) -> RetentionOutcome {
        let inner = &*self.inner;
        let removed = {
            let mut state = inner.state.borrow_mut();
            let mut removed = Vec::new();
            while state.segments.len() > 1
                && state.segments[0].sealed
                && doomed(&state.segments[0], state.log_start_offset)
            {
                removed.push(state.segments.pop_front().expect("checked"));
            }
            let first_base = state.segments[0].base_offset;
            state.log_start_offset = state.log_start_offset.max(first_base);
            let start = state.log_start_offset;
            inner.cache.borrow_mut().trim_front(inner.cache_key, start);
            removed
        };
        let mut outcome = RetentionOutcome { log_start_offset: self.log_start_offset(), ..RetentionOutcome::default() };
        for (i, segment) in removed.into_iter().enumerate() {
            if i > 0 && !pace.is_zero() {
                crate::io::sleep(pace).await;
            }
            outcome.segments_deleted += 1;
            outcome.bytes_deleted += segment.size;
            tracing::info!(path = %segment.path.display(), bytes = segment.size, "retention deleted segment");
            remove_segment_files(&inner.dir, segment.base_offset).await;
        }
        outcome
    }

    /// Moves the log start offset forward to `offset` (DeleteRecords) and deletes the segments
    /// wholly below it.
    pub async fn delete_records_before(&self, offset: i64) -> Result<i64, StorageError> {
        let start = {
            let mut state = self.inner.state.borrow_mut();
            if offset > state.next_offset || offset < 0 {
                return Err(StorageError::OffsetOutOfRange {
                    offset,
                    log_start_offset: state.log_start_offset,
                    log_end_offset: state.next_offset,
                });
            }
            state.log_start_offset = state.log_start_offset.max(offset);
            state.log_start_offset
        };
        write_log_start(&self.inner.dir, start).await?;
        self.remove_leading_segments(
            |segment, log_start_offset| segment.next_offset <= log_start_offset,
            Duration::ZERO,
        )
        .await;
        Ok(self.log_start_offset())
    }

    /// Removes every batch at or after `offset` (rounding down to the start of the batch that
    /// contains it), on disk and in memory. For replication (divergent tails) and tests.
    pub async fn truncate_to(&self, offset: i64) -> Result<(), StorageError> {
        let (tx, rx) = oneshot::channel();
        self.push_command(Command::Truncate { offset, reply: tx })?;
        rx.await.unwrap_or(Err(StorageError::Closed))
    }

    /// Writes and fdatasyncs everything appended so far, whatever the flush policy.
    pub async fn flush(&self) -> Result<(), StorageError> {
        let (tx, rx) = oneshot::channel();
        self.push_command(Command::Flush { reply: tx })?;
        rx.await.unwrap_or(Err(StorageError::Closed))
    }

    fn push_command(&self, command: Command) -> Result<(), StorageError> {
        {
            let mut state = self.inner.state.borrow_mut();
            if let Some(reason) = &state.offline {
                return Err(StorageError::Offline(reason.clone()));
            }
            if state.closing {
                return Err(StorageError::Closed);
            }
            state.commands.push_back(command);
        }
        self.inner.wake_flusher.notify();
        Ok(())
    }

    /// Flushes and syncs everything, saves the indexes, and stops the flusher.
    pub async fn close(&self) -> Result<(), StorageError> {
        {
            let mut state = self.inner.state.borrow_mut();
            if state.closing {
                return Ok(());
            }
            state.closing = true;
            for (_, sender) in state.data_watchers.drain(..) {
                drop(sender);
            }
        }
        self.inner.wake_flusher.notify();
        let done = self.inner.flusher_done.borrow_mut().take();
        if let Some(done) = done {
            let _ = done.await;
        }
        self.inner.cache.borrow_mut().unregister(self.inner.cache_key);
        let state = self.inner.state.borrow();
        match &state.offline {
            Some(reason) => Err(StorageError::Offline(reason.clone())),
            None => Ok(()),
        }
    }

    /// Closes the log and removes its directory.
    pub async fn delete(&self) -> Result<(), StorageError> {
        let _ = self.close().await;
        let dir = self.inner.dir.clone();
        let doomed = dir.with_extension(format!("{}-delete", uuid::Uuid::new_v4().simple()));
        std::fs::rename(&dir, &doomed).map_err(|e| StorageError::io(&dir, &e))?;
        io::blocking(move || std::fs::remove_dir_all(&doomed))
            .await
            .map_err(|e| StorageError::io(&dir, &e))?
            .map_err(|e| StorageError::io(&dir, &e))
    }

    /// Descriptor of the active segment's file, for tests that inspect `/proc/self/fdinfo`.
    pub fn active_segment_fd(&self) -> Option<i32> {
        self.inner.state.borrow().active().file.as_ref().map(|f| f.raw_fd())
    }

    /// The fault-injection handle the log's files use.
    pub fn faults(&self) -> &Faults {
        &self.inner.faults
    }
}

/// The log's background writer: one per log, the only task writing its files.
async fn flusher(log: Weak<LogInner>, done: oneshot::Sender<()>) {
    loop {
        let Some(inner) = log.upgrade() else { break };
        match next_flush_step(&inner) {
            Step::Work { sync } => {
                if let Err(err) = run_writes(&inner, sync).await {
                    inner.state.borrow_mut().go_offline(err.to_string());
                }
            }
            Step::Command(command) => run_command(&inner, command).await,
            Step::SleepMs(ms) => {
                drop(inner);
                let Some(inner) = log.upgrade() else { break };
                let _ = io::timeout(Duration::from_millis(ms), inner.wake_flusher.notified()).await;
            }
            Step::Idle => {
                inner.state.borrow_mut().release_grown_spare();
                // Hold only a weak reference while idle so the log can be dropped.
                let signal = &inner.wake_flusher as *const LocalSignal;
                drop(inner);
                let Some(inner) = log.upgrade() else { break };
                debug_assert_eq!(signal, &inner.wake_flusher as *const LocalSignal);
                inner.wake_flusher.notified().await;
            }
            Step::Exit => {
                let offline = inner.state.borrow().offline.is_some();
                if offline {
                    // Nothing more is written once the log has failed: on restart, recovery
                    // starts from what is really on disk.
                    inner.state.borrow_mut().complete_durability(&Err(StorageError::Closed));
                } else if let Err(err) = finish_close(&inner).await {
                    inner.state.borrow_mut().go_offline(err.to_string());
                }
                break;
            }
        }
    }
    let _ = done.send(());
}

enum Step {
    Work { sync: bool },
    Command(Command),
    SleepMs(u64),
    Idle,
    Exit,
}

fn next_flush_step(inner: &LogInner) -> Step {
    let mut state = inner.state.borrow_mut();
    if state.offline.is_some() {
        return if state.closing { Step::Exit } else { Step::Idle };
    }
    if let Some(command) = state.commands.pop_front() {
        return Step::Command(command);
    }
    if state.closing {
        return Step::Exit;
    }
    if !state.pending_seals.is_empty() {
        return Step::Work { sync: state.config.flush == FlushPolicy::Always };
    }
    let now = now_ms();
    let unwritten = state.unwritten_bytes();
    let over_limit = unwritten >= state.config.write_behind_bytes as u64 || !state.room_waiters.is_empty();
    match state.config.flush {
        FlushPolicy::Always => {
            if state.has_write_work() || state.needs_sync() {
                Step::Work { sync: true }
            } else {
                Step::Idle
            }
        }
        FlushPolicy::IntervalMs(interval) => {
            if !state.has_write_work() && !state.needs_sync() {
                return Step::Idle;
            }
            let due = state.last_sync_ms + interval as i64;
            if now >= due {
                Step::Work { sync: true }
            } else if over_limit {
                Step::Work { sync: false }
            } else {
                Step::SleepMs((due - now) as u64)
            }
        }
        FlushPolicy::Never => {
            if !state.has_write_work() {
                return Step::Idle;
            }
            let due = state.last_write_ms + WRITE_BEHIND_MS as i64;
            if over_limit || now >= due { Step::Work { sync: false } } else { Step::SleepMs((due - now) as u64) }
        }
    }
}

/// A buffer of one segment's bytes to put on disk.
struct WriteJob {
    segment_base: i64,
    buf: AlignedBuf,
    position: u64,
    end_size: u64,
    end_offset: i64,
    seal: bool,
}

/// Writes all pending data (sealing rolled segments on the way) and, with `sync`, fdatasyncs the
/// active segment; then completes whatever became durable.
async fn run_writes(inner: &LogInner, sync: bool) -> Result<(), StorageError> {
    loop {
        let job = {
            let mut state = inner.state.borrow_mut();
            take_write_job(&mut state)
        };
        let Some(job) = job else {
            // A freshly rolled active segment gets its file even before its first write, so
            // the log's end survives a restart after retention removed every older segment.
            let active_base = inner.state.borrow().active().base_offset;
            ensure_file(inner, active_base).await?;
            break;
        };
        let seal = job.seal;
        let file = ensure_file(inner, job.segment_base).await?;
        write_job(inner, &file, job).await?;
        if seal {
            seal_segment(inner, &file).await?;
        }
    }
    if sync {
        sync_active(inner).await?;
    }
    let mut state = inner.state.borrow_mut();
    state.release_room_waiters();
    Ok(())
}

fn take_write_job(state: &mut LogState) -> Option<WriteJob> {
    if let Some(pending) = state.pending_seals.pop_front() {
        return Some(WriteJob {
            segment_base: pending.segment_base,
            buf: pending.buf,
            position: pending.buf_position,
            end_size: pending.end_size,
            end_offset: pending.end_offset,
            seal: true,
        });
    }
    let active = state.active();
    if active.size == active.written_size {
        return None;
    }
    let (segment_base, end_size) = (active.base_offset, active.size);
    let mut fresh = state.take_fresh_buf();
    let tail_start = round_down_to_page(end_size);
    let carried = (tail_start - state.buf_position) as usize;
    fresh.extend_from_slice(&state.buf.as_slice()[carried..]);
    let buf = std::mem::replace(&mut state.buf, fresh);
    let position = state.buf_position;
    state.buf_position = tail_start;
    Some(WriteJob { segment_base, buf, position, end_size, end_offset: state.next_offset, seal: false })
}

/// Opens (creating) the file of segment `base`, if not yet done; `write_job` preallocates it.
async fn ensure_file(inner: &LogInner, base: i64) -> Result<Rc<DirectFile>, StorageError> {
    let (existing, path) = {
        let state = inner.state.borrow();
        let segment = state.segments.iter().find(|s| s.base_offset == base).ok_or(StorageError::Closed)?;
        (segment.file.clone(), segment.path.clone())
    };
    if let Some(file) = existing {
        return Ok(file);
    }
    let file = Rc::new(create_segment_file(&path, &inner.faults).await?);
    sync_dir(&inner.dir).await?;
    let allocated = file.len().await.map_err(|e| StorageError::io(&path, &e))?;
    let mut state = inner.state.borrow_mut();
    if let Some(segment) = state.segments.iter_mut().find(|s| s.base_offset == base) {
        segment.file = Some(file.clone());
        segment.allocated_bytes = allocated;
    }
    Ok(file)
}

async fn write_job(inner: &LogInner, file: &Rc<DirectFile>, job: WriteJob) -> Result<(), StorageError> {
    let WriteJob { segment_base, mut buf, position, end_size, end_offset, .. } = job;
    let (preallocate, allocated, step) = {
        let state = inner.state.borrow();
        let segment = state.segments.iter().find(|s| s.base_offset == segment_base);
        (
            state.config.preallocate,
            segment.map_or(0, |s| s.allocated_bytes),
            preallocate_step(state.config.segment_bytes),
        )
    };
    let padded_end = position + io::round_up_to_page(buf.len()) as u64;
    if preallocate && padded_end > allocated {
        let new_allocated = padded_end.div_ceil(step) * step;
        file.allocate(allocated, new_allocated - allocated).await.map_err(|e| StorageError::io(file.path(), &e))?;
        let mut state = inner.state.borrow_mut();
        if let Some(segment) = state.segments.iter_mut().find(|s| s.base_offset == segment_base) {
            segment.allocated_bytes = new_allocated;
        }
    }
    buf.pad_to_page();
    let (result, buf) = file.write_all_at(buf, position).await;
    result.map_err(|e| StorageError::io(file.path(), &e))?;
    let mut state = inner.state.borrow_mut();
    // Keep the buffer for the next round even when a burst grew it: a fresh one would be
    // page-faulted in, and growing it again copies (realloc of page-aligned memory moves it).
    // An idle log gives a grown spare back (see `flusher`).
    if state.spare_buf.is_none()
        && buf.capacity() <= state.config.max_unwritten_bytes.max(state.config.write_behind_bytes)
    {
        state.spare_buf = Some(buf);
    }
    if let Some(segment) = state.segments.iter_mut().find(|s| s.base_offset == segment_base) {
        segment.written_size = segment.written_size.max(end_size);
    }
    if end_offset > state.written_offset {
        state.written_offset = end_offset;
        inner.cache.borrow_mut().set_written(inner.cache_key, end_offset);
    }
    state.last_write_ms = now_ms();
    Ok(())
}

/// fdatasync of the active segment; everything written before it is durable afterwards (rolled
/// segments are synced when sealed, before anything is written to the next one).
async fn sync_active(inner: &LogInner) -> Result<(), StorageError> {
    let (file, covered) = {
        let state = inner.state.borrow();
        (state.active().file.clone(), state.written_offset)
    };
    if let Some(file) = file
        && covered > inner.state.borrow().durable_offset
    {
        file.sync_data().await.map_err(|e| StorageError::io(file.path(), &e))?;
    }
    mark_durable(inner, covered);
    Ok(())
}

fn mark_durable(inner: &LogInner, covered: i64) {
    let mut state = inner.state.borrow_mut();
    state.last_sync_ms = now_ms();
    if covered > state.durable_offset {
        state.durable_offset = covered;
        state.complete_durability(&Ok(()));
        if state.config.flush == FlushPolicy::Always {
            state.notify_data_watchers();
        }
    }
}

/// Final steps for a rolled segment whose last bytes were just written: fdatasync, cut the
/// preallocated tail, save the indexes.
async fn seal_segment(inner: &LogInner, file: &Rc<DirectFile>) -> Result<(), StorageError> {
    let (size, base, offset_index, time_index, covered) = {
        let mut state = inner.state.borrow_mut();
        let covered = state.written_offset;
        let segment = state
            .segments
            .iter_mut()
            .find(|s| s.file.as_ref().is_some_and(|f| Rc::ptr_eq(f, file)))
            .ok_or(StorageError::Closed)?;
        segment.complete_time_index();
        (segment.size, segment.base_offset, segment.offset_index.clone(), segment.time_index.clone(), covered)
    };
    file.set_len(size).await.map_err(|e| StorageError::io(file.path(), &e))?;
    file.sync_data().await.map_err(|e| StorageError::io(file.path(), &e))?;
    save_indexes(&inner.dir, base, &offset_index, &time_index).await;
    {
        let mut state = inner.state.borrow_mut();
        if let Some(segment) = state.segments.iter_mut().find(|s| s.base_offset == base) {
            segment.sealed = true;
            segment.allocated_bytes = size;
        }
    }
    mark_durable(inner, covered);
    Ok(())
}

async fn run_command(inner: &LogInner, command: Command) {
    match command {
        Command::Flush { reply } => {
            let result = run_writes(inner, true).await;
            if let Err(err) = &result {
                inner.state.borrow_mut().go_offline(err.to_string());
            }
            let _ = reply.send(result);
        }
        Command::Truncate { offset, reply } => {
            let result = truncate(inner, offset).await;
            if let Err(err) = &result {
                inner.state.borrow_mut().go_offline(err.to_string());
            }
            let _ = reply.send(result);
        }
    }
}

/// Truncation, run by the flusher so no write is in flight: write out everything, cut the
/// segment holding `offset`, delete later segments, zero the cut range on disk, reload the tail
/// page into the write buffer.
async fn truncate(inner: &LogInner, offset: i64) -> Result<(), StorageError> {
    run_writes(inner, false).await?;
    let (doomed, target) = {
        let mut state = inner.state.borrow_mut();
        if offset >= state.next_offset {
            return Ok(());
        }
        let offset = offset.max(state.log_start_offset);
        let mut doomed = Vec::new();
        while state.segments.len() > 1 && state.active().base_offset >= offset {
            doomed.push(state.segments.pop_back().expect("checked"));
        }
        let target = state.active();
        (doomed, (target.base_offset, target.file.clone(), target.scan_start(offset).0, target.size, offset))
    };
    for segment in &doomed {
        remove_segment_files(&inner.dir, segment.base_offset).await;
    }
    let (base, file, scan_from, old_size, offset) = target;
    let file = match file {
        Some(file) => file,
        None => ensure_file(inner, base).await?,
    };
    // Find the start of the batch that holds `offset`: that is the new end.
    let mut new_size = scan_from;
    let mut new_next = None;
    scan_file(&file, scan_from, old_size, false, |header, position| {
        if new_next.is_none() && header.last_offset() >= offset {
            new_next = Some(header.base_offset);
            new_size = position;
        }
        Ok(())
    })
    .await
    .map_err(|e| StorageError::io(file.path(), &e))?;
    let Some(new_next) = new_next.or_else(|| (scan_from == 0).then_some(base)) else {
        return Ok(());
    };
    if new_next == base {
        new_size = 0;
    }
    let zero_from = io::round_up_to_page(new_size as usize) as u64;
    let allocated = file.len().await.map_err(|e| StorageError::io(file.path(), &e))?;
    if allocated > zero_from {
        file.zero_range(zero_from, allocated - zero_from).await.map_err(|e| StorageError::io(file.path(), &e))?;
    }
    let tail_position = round_down_to_page(new_size);
    let mut buf = AlignedBuf::with_capacity(io::PAGE_BYTES);
    if new_size > tail_position {
        let (result, page) = file.read_at(AlignedBuf::with_capacity(io::PAGE_BYTES), tail_position).await;
        result.map_err(|e| StorageError::io(file.path(), &e))?;
        buf.extend_from_slice(&page.as_slice()[..(new_size - tail_position) as usize]);
    }
    // The partial tail page is rewritten now, so the bytes past the cut are zero on disk too.
    let mut page = AlignedBuf::with_capacity(io::PAGE_BYTES);
    page.extend_from_slice(buf.as_slice());
    page.pad_to_page();
    let (result, _) = file.write_all_at(page, tail_position).await;
    result.map_err(|e| StorageError::io(file.path(), &e))?;
    file.sync_data().await.map_err(|e| StorageError::io(file.path(), &e))?;
    // Rebuild the segment's in-memory view up to the cut.
    let index_interval = inner.state.borrow().config.index_interval_bytes;
    let (offset_index, time_index, max_ts, max_ts_offset) =
        rebuild_indexes(&file, base, new_size, index_interval).await?;
    let mut state = inner.state.borrow_mut();
    {
        let segment = state.active_mut();
        segment.size = new_size;
        segment.written_size = new_size;
        segment.next_offset = new_next;
        segment.offset_index = offset_index;
        segment.time_index = time_index;
        segment.max_timestamp = max_ts;
        segment.max_timestamp_offset = max_ts_offset;
        segment.bytes_since_index = usize::MAX / 2;
        segment.sealed = false;
    }
    state.buf = buf;
    state.buf_position = tail_position;
    state.next_offset = new_next;
    state.written_offset = new_next;
    state.durable_offset = state.durable_offset.min(new_next);
    state.log_start_offset = state.log_start_offset.min(new_next);
    inner.cache.borrow_mut().truncate(inner.cache_key, new_next);
    // Appends beyond the cut can no longer become durable.
    let cut = new_next;
    let mut kept = VecDeque::new();
    while let Some(waiter) = state.durability_waiters.pop_front() {
        if waiter.end_offset > cut {
            let _ = waiter.reply.send(Err(StorageError::OffsetOutOfRange {
                offset: waiter.end_offset - 1,
                log_start_offset: state.log_start_offset,
                log_end_offset: cut,
            }));
        } else {
            kept.push_back(waiter);
        }
    }
    state.durability_waiters = kept;
    state.complete_durability(&Ok(()));
    tracing::info!(dir = %inner.dir.display(), offset = cut, "log truncated");
    Ok(())
}

async fn finish_close(inner: &LogInner) -> Result<(), StorageError> {
    run_writes(inner, true).await?;
    let (base, offset_index, time_index) = {
        let mut state = inner.state.borrow_mut();
        let active = state.active_mut();
        active.complete_time_index();
        (active.base_offset, active.offset_index.clone(), active.time_index.clone())
    };
    save_indexes(&inner.dir, base, &offset_index, &time_index).await;
    let marker = inner.dir.join(CLEAN_SHUTDOWN_FILE);
    if let Err(err) = std::fs::write(&marker, b"") {
        tracing::warn!(path = %marker.display(), error = %err, "could not mark clean shutdown");
    }
    sync_dir(&inner.dir).await?;
    let mut state = inner.state.borrow_mut();
    state.complete_durability(&Err(StorageError::Closed));
    for waiter in state.room_waiters.drain(..) {
        let _ = waiter.send(());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Files: creation, recovery, indexes.

async fn create_segment_file(path: &Path, faults: &Faults) -> Result<DirectFile, StorageError> {
    let file =
        DirectFile::open(path, OpenMode::CreateOrOpen, faults.clone()).await.map_err(|e| StorageError::io(path, &e))?;
    // A leftover file of the same name (a segment deleted by truncation) must not leak into the
    // new one.
    file.set_len(0).await.map_err(|e| StorageError::io(path, &e))?;
    Ok(file)
}

/// How far to preallocate past the write position of a segment file that has `allocated` bytes.
fn preallocate_step(segment_bytes: u64) -> u64 {
    PREALLOCATE_STEP_BYTES.min(segment_bytes.max(io::PAGE_BYTES as u64))
}

async fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    let owned = dir.to_owned();
    io::blocking(move || std::fs::File::open(&owned).and_then(|f| f.sync_all()))
        .await
        .map_err(|e| StorageError::io(dir, &e))?
        .map_err(|e| StorageError::io(dir, &e))
}

async fn save_indexes(dir: &Path, base: i64, offset_index: &OffsetIndex, time_index: &TimeIndex) {
    let offset_bytes = offset_index.to_bytes();
    let time_bytes = time_index.to_bytes();
    let index_path = dir.join(index_file_name(base));
    let time_path = dir.join(time_index_file_name(base));
    let result = io::blocking(move || {
        std::fs::write(&index_path, offset_bytes)?;
        std::fs::write(&time_path, time_bytes)
    })
    .await;
    if let Err(err) | Ok(Err(err)) = result {
        // Indexes are rebuilt from the segment when missing, so this only costs time at restart.
        tracing::warn!(dir = %dir.display(), base, error = %err, "could not save segment indexes");
    }
}

async fn remove_segment_files(dir: &Path, base: i64) {
    for name in [log_file_name(base), index_file_name(base), time_index_file_name(base)] {
        let path = dir.join(name);
        if let Err(err) = compio::fs::remove_file(&path).await
            && err.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), error = %err, "could not delete segment file");
        }
    }
}

/// The log is open for writing again: the clean-shutdown marker and the active segment's saved
/// indexes stop describing the data, so both go (durably) before anything is appended.
async fn forget_clean_shutdown(dir: &Path, active_base: Option<i64>) -> Result<(), StorageError> {
    let mut names = vec![CLEAN_SHUTDOWN_FILE.to_owned()];
    if let Some(base) = active_base {
        names.push(index_file_name(base));
        names.push(time_index_file_name(base));
    }
    let mut removed = false;
    for name in names {
        match std::fs::remove_file(dir.join(&name)) {
            Ok(()) => removed = true,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(StorageError::io(&dir.join(name), &err)),
        }
    }
    if removed {
        sync_dir(dir).await?;
    }
    Ok(())
}

fn read_log_start(dir: &Path) -> Option<i64> {
    std::fs::read_to_string(dir.join(LOG_START_FILE)).ok().and_then(|s| s.trim().parse().ok())
}

async fn write_log_start(dir: &Path, offset: i64) -> Result<(), StorageError> {
    let tmp = dir.join(format!("{LOG_START_FILE}.tmp"));
    let path = dir.join(LOG_START_FILE);
    let dir_owned = dir.to_owned();
    io::blocking(move || -> std::io::Result<()> {
        std::fs::write(&tmp, offset.to_string())?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(&dir_owned)?.sync_all()
    })
    .await
    .map_err(|e| StorageError::io(dir, &e))?
    .map_err(|e| StorageError::io(dir, &e))
}

/// Rebuilds a segment's indexes by reading its batch headers up to `size`.
async fn rebuild_indexes(
    file: &DirectFile,
    base: i64,
    size: u64,
    index_interval_bytes: usize,
) -> Result<(OffsetIndex, TimeIndex, i64, i64), StorageError> {
    let mut segment = Segment::new(Path::new(""), base, 0);
    scan_file(file, 0, size, false, |header, position| {
        segment.note_batch(header, position, index_interval_bytes);
        Ok(())
    })
    .await
    .map_err(|e| StorageError::io(file.path(), &e))?;
    segment.complete_time_index();
    Ok((segment.offset_index, segment.time_index, segment.max_timestamp, segment.max_timestamp_offset))
}

/// Opens every segment in `dir`, checks their tails, rebuilds damaged indexes and cuts the log
/// at the first torn or corrupt batch (deleting any later segment).
async fn recover_segments(dir: &Path, config: &LogConfig, faults: &Faults) -> Result<VecDeque<Segment>, StorageError> {
    let mut bases: Vec<i64> = std::fs::read_dir(dir)
        .map_err(|e| StorageError::io(dir, &e))?
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| parse_log_file_name(&entry.file_name().to_string_lossy()))
        .collect();
    bases.sort_unstable();
    let clean_shutdown = dir.join(CLEAN_SHUTDOWN_FILE).exists();
    if !clean_shutdown && !bases.is_empty() {
        tracing::info!(dir = %dir.display(), "log was not closed cleanly: checking its active segment in full");
    }
    let mut segments: VecDeque<Segment> = VecDeque::new();
    let mut cut_from = None;
    for (i, &base) in bases.iter().enumerate() {
        if let Some(prev) = segments.back()
            && prev.next_offset != base
        {
            tracing::warn!(dir = %dir.display(), base, expected = prev.next_offset, "segment does not continue the previous one; cutting the log here");
            cut_from = Some(i);
            break;
        }
        let is_last = i + 1 == bases.len();
        // Sealed segments were synced before the next one was written; the active one's saved
        // index only matches its data after a clean close.
        let trust_index = !is_last || clean_shutdown;
        let (segment, clean) = recover_segment(dir, base, trust_index, config, faults).await?;
        let continues = bases.get(i + 1).is_none_or(|next| segment.next_offset == *next);
        if is_last || !clean || !continues {
            // The log ends here: make sure nothing past the valid end can be read back as data.
            cut_segment_tail(&segment).await?;
            if !is_last {
                cut_from = Some(i + 1);
            }
            segments.push_back(segment);
            if !is_last {
                break;
            }
        } else {
            if segment.allocated_bytes > segment.size {
                // Rolled but not sealed before a stop: drop the preallocated tail now.
                let file = segment.file.as_ref().expect("recovered segments have files");
                file.set_len(segment.size).await.map_err(|e| StorageError::io(&segment.path, &e))?;
            }
            segments.push_back(segment);
        }
    }
    if let Some(from) = cut_from {
        for &base in &bases[from..] {
            tracing::warn!(dir = %dir.display(), base, "deleting segment after the cut");
            remove_segment_files(dir, base).await;
        }
    }
    let count = segments.len();
    for (i, segment) in segments.iter_mut().enumerate() {
        segment.sealed = i + 1 < count;
        if segment.sealed {
            segment.allocated_bytes = segment.size;
        }
    }
    Ok(segments)
}

/// Zeroes everything in a segment's file past its recovered size and rewrites its partial tail
/// page, so nothing stale can ever be read back as data; then syncs.
async fn cut_segment_tail(segment: &Segment) -> Result<(), StorageError> {
    let file = segment.file.as_ref().expect("recovered segments have files");
    let file_len = file.len().await.map_err(|e| StorageError::io(&segment.path, &e))?;
    let zero_from = io::round_up_to_page(segment.size as usize) as u64;
    if file_len > zero_from {
        file.zero_range(zero_from, file_len - zero_from).await.map_err(|e| StorageError::io(&segment.path, &e))?;
    }
    let tail = round_down_to_page(segment.size);
    if segment.size > tail {
        let (result, page) = file.read_at(AlignedBuf::with_capacity(io::PAGE_BYTES), tail).await;
        result.map_err(|e| StorageError::io(&segment.path, &e))?;
        let mut fixed = AlignedBuf::with_capacity(io::PAGE_BYTES);
        fixed.extend_from_slice(&page.as_slice()[..(segment.size - tail) as usize]);
        fixed.pad_to_page();
        let (result, _) = file.write_all_at(fixed, tail).await;
        result.map_err(|e| StorageError::io(&segment.path, &e))?;
    }
    file.sync_data().await.map_err(|e| StorageError::io(&segment.path, &e))
}

/// Batches in a segment carry consecutive offsets; the base offset is outside the CRC, so this is
/// what catches damage to it.
fn check_continuity(header: &batch::BatchHeader, expected_next: &mut i64) -> Result<(), String> {
    if header.base_offset != *expected_next {
        return Err(format!("batch base offset {} where {} was expected", header.base_offset, expected_next));
    }
    *expected_next = header.last_offset() + 1;
    Ok(())
}

/// Opens one segment and finds its valid end, resuming from the saved index when it is trusted
/// and matches the data, and rebuilding it otherwise. Every batch scanned has its CRC checked. Returns the segment
/// and whether its data ended cleanly (zeros or end of file, not a torn or corrupt batch).
async fn recover_segment(
    dir: &Path,
    base: i64,
    trust_index: bool,
    config: &LogConfig,
    faults: &Faults,
) -> Result<(Segment, bool), StorageError> {
    let path = dir.join(log_file_name(base));
    let file =
        DirectFile::open(&path, OpenMode::Existing, faults.clone()).await.map_err(|e| StorageError::io(&path, &e))?;
    let file_len = file.len().await.map_err(|e| StorageError::io(&path, &e))?;
    let saved_offsets = trust_index
        .then(|| std::fs::read(dir.join(index_file_name(base))).ok())
        .flatten()
        .and_then(|bytes| OffsetIndex::from_bytes(&bytes, file_len.max(1)))
        .filter(|index| !index.is_empty());
    let saved_times = std::fs::read(dir.join(time_index_file_name(base)))
        .ok()
        .and_then(|bytes| TimeIndex::from_bytes(&bytes, u32::MAX));
    let mut found = None;
    if let (Some(offsets), Some(times)) = (saved_offsets, saved_times) {
        let last = offsets.last().expect("non-empty");
        let mut segment = Segment::new(dir, base, now_ms());
        segment.offset_index = offsets;
        if let Some(entry) = times.last() {
            segment.max_timestamp = entry.timestamp;
            segment.max_timestamp_offset = base + i64::from(entry.relative_offset);
        }
        segment.time_index = times;
        let expected_first = base + i64::from(last.relative_offset);
        let mut first_matches = None;
        let mut expected_next = expected_first;
        let end = scan_file(&file, u64::from(last.position), file_len, true, |header, position| {
            first_matches.get_or_insert(header.base_offset == expected_first);
            check_continuity(header, &mut expected_next)?;
            segment.note_batch(header, position, config.index_interval_bytes);
            Ok(())
        })
        .await
        .map_err(|e| StorageError::io(&path, &e))?;
        if first_matches == Some(true) {
            found = Some((segment, end));
        } else {
            tracing::warn!(path = %path.display(), "segment index does not match its data; rebuilding it");
        }
    }
    let (mut segment, end) = match found {
        Some(found) => found,
        None => {
            let mut segment = Segment::new(dir, base, now_ms());
            let mut expected_next = base;
            let end = scan_file(&file, 0, file_len, true, |header, position| {
                check_continuity(header, &mut expected_next)?;
                segment.note_batch(header, position, config.index_interval_bytes);
                Ok(())
            })
            .await
            .map_err(|e| StorageError::io(&path, &e))?;
            (segment, end)
        }
    };
    segment.size = end.position;
    segment.written_size = end.position;
    segment.allocated_bytes = file_len;
    segment.file = Some(Rc::new(file));
    let clean = match &end.stopped {
        // Zero fill (preallocation, or a range zeroed by an earlier cut) ends the data normally.
        None => true,
        Some(stop) if stop.is_zero_fill() => true,
        Some(err) => {
            tracing::warn!(
                path = %path.display(),
                position = end.position,
                bytes_after = file_len - end.position,
                error = %err,
                "recovery cut the segment at a torn or corrupt batch"
            );
            false
        }
    };
    Ok((segment, clean))
}
