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
use std::rc::Rc;

use bytes::Bytes;
use futures_channel::oneshot;

use crate::io::{self, AlignedBuf, Faults, LocalSignal, now_ms, round_down_to_page};
use crate::storage::cache::{CacheKey, ReadCache};
use crate::storage::segment::{Offsets, Segment};
use crate::storage::{LogConfig, StorageError};

mod append;
mod compact;
mod files;
mod flush;
mod prepare;
mod read;
mod recovery;
mod retention;
mod truncate;

pub use compact::{Cleanable, CompactionOutcome, OFFSET_MAP_ENTRY_BYTES};
use files::*;
use flush::flusher;
use recovery::{forget_clean_shutdown, recover_segments};

/// Segment files are preallocated ahead of the write position in steps of this much, from the
/// first write on (a segment nobody writes to allocates nothing). Smaller steps were tried: on
/// ext4 here, a file that began with 64 KiB, 1 MiB or 4 MiB steps made every later durable 4 KiB
/// append about 60 us slower at p50 (265 vs 203 us) and pushed p99 past 1.5x fio's fdatasync
/// p99, even once the steps had grown to this size.
pub const PREALLOCATE_STEP_BYTES: u64 = 16 << 20;

/// How far past its data a log that opts in (`LogConfig::prepare_ahead_bytes`, off by default)
/// zero-fills the active segment's preallocated blocks while its writes are small (`prepare.rs`).
pub const PREPARE_AHEAD_BYTES: u64 = 2 << 20;

/// Under `flush = never`, unwritten data reaches the file at most this long after its append.
pub(super) const WRITE_BEHIND_MS: u64 = 200;

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
    pub(super) fn ready() -> Self {
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
pub(super) struct PendingSeal {
    segment_base: i64,
    buf: AlignedBuf,
    buf_position: u64,
    end_size: u64,
    end_offset: i64,
}

pub(super) enum Command {
    Truncate { offset: i64, reply: oneshot::Sender<Result<(), StorageError>> },
    StartAt { offset: i64, reply: oneshot::Sender<Result<(), StorageError>> },
    Flush { reply: oneshot::Sender<Result<(), StorageError>> },
}

impl Command {
    /// Answers the command with `err` without running it.
    pub(super) fn refuse(self, err: StorageError) {
        let reply = match self {
            Command::Truncate { reply, .. } | Command::StartAt { reply, .. } | Command::Flush { reply } => reply,
        };
        let _ = reply.send(Err(err));
    }
}

pub(super) struct Waiter {
    end_offset: i64,
    reply: oneshot::Sender<Result<(), StorageError>>,
}

pub(super) struct LogState {
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
    commands: VecDeque<Command>,
    offline: Option<String>,
    closing: bool,
    /// Whether a removed segment's file waits in the directory to be written again (see
    /// [`files::RECYCLED_FILE`]).
    recycled: bool,
    last_write_ms: i64,
    last_sync_ms: i64,
    /// Bytes of the last write round's job (small ones start zero-filling ahead).
    last_job_bytes: usize,
    /// The zero write ahead of the active segment's data, if one is in flight.
    preparing: Option<prepare::Preparing>,
    /// The cleaner's checkpoint: offsets below this are compacted (see `compact.rs`).
    cleaned_offset: i64,
    /// When the oldest tombstone the last cleaning pass kept may go.
    tombstones_due_ms: Option<i64>,
    /// Bumped whenever the log's tail is cut or the log emptied: a cleaning pass planned before
    /// then swaps nothing in and leaves the checkpoint alone.
    truncations: u64,
    /// How the log's batches follow each other (reads and recovery check it).
    offsets: Offsets,
    /// A follower appended past a gap: the flusher records the gaps ([`files::GAPS_FILE`])
    /// before it writes anything more.
    gaps_unrecorded: bool,
    /// Something was written to the active segment without `RWF_DSYNC` since its last fdatasync
    /// (write-behind rounds, or anything before the first sync after opening).
    unsynced_write: bool,
}

pub(super) struct LogInner {
    dir: PathBuf,
    state: RefCell<LogState>,
    wake_flusher: LocalSignal,
    cache: Rc<RefCell<ReadCache>>,
    cache_key: CacheKey,
    faults: Faults,
    flusher_done: RefCell<Option<oneshot::Receiver<()>>>,
    /// Told when the durable offset moves or the log goes offline (see [`Log::set_progress_listener`]).
    progress_listener: RefCell<Option<Rc<dyn Fn()>>>,
    /// Held while segment files are replaced or removed (the cleaner's swap, truncation,
    /// retention's unlinks), so none acts on a segment another is changing.
    files_lock: futures_util::lock::Mutex<()>,
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
    pub(super) fn active(&self) -> &Segment {
        self.segments.back().expect("a log always has an active segment")
    }

    pub(super) fn active_mut(&mut self) -> &mut Segment {
        self.segments.back_mut().expect("a log always has an active segment")
    }

    pub(super) fn unwritten_bytes(&self) -> u64 {
        let sealing: u64 = self.pending_seals.iter().map(|p| p.end_size - p.buf_position).sum();
        let active = self.active();
        sealing + (active.size - active.written_size)
    }

    pub(super) fn size_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.size).sum()
    }

    pub(super) fn segment_index_for(&self, offset: i64) -> Option<usize> {
        let idx = self.segments.partition_point(|s| s.base_offset <= offset);
        idx.checked_sub(1)
    }

    pub(super) fn has_write_work(&self) -> bool {
        !self.pending_seals.is_empty() || self.active().size > self.active().written_size
    }

    pub(super) fn needs_sync(&self) -> bool {
        self.durable_offset < self.written_offset
    }

    /// Frees the spare write buffer if a burst grew it past the write-behind size.
    pub(super) fn release_grown_spare(&mut self) {
        if self.spare_buf.as_ref().is_some_and(|b| b.capacity() > self.config.write_behind_bytes.max(io::PAGE_BYTES)) {
            self.spare_buf = None;
        }
    }

    pub(super) fn take_fresh_buf(&mut self) -> AlignedBuf {
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
    pub(super) fn roll(&mut self, dir: &Path, now_ms: i64) {
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

    /// Whether the log is still the one a cleaning pass planned for when it had seen
    /// `truncations`: online, not closing, and not truncated since.
    pub(super) fn still_planned(&self, truncations: u64) -> bool {
        self.offline.is_none() && !self.closing && self.truncations == truncations
    }

    /// Whether `incoming_bytes` of batches start a new segment (by size or age; a batch whose
    /// offsets a segment cannot span is rolled for by the append itself).
    pub(super) fn should_roll(&self, incoming_bytes: u64, now_ms: i64) -> bool {
        let active = self.active();
        if active.is_empty() {
            return false;
        }
        active.size + incoming_bytes > self.config.segment_bytes || now_ms - active.created_ms > self.config.segment_ms
    }

    pub(super) fn complete_durability(&mut self, outcome: &Result<(), StorageError>) {
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

    pub(super) fn release_room_waiters(&mut self) {
        if self.unwritten_bytes() <= self.config.max_unwritten_bytes as u64 || self.offline.is_some() {
            for waiter in self.room_waiters.drain(..) {
                let _ = waiter.send(());
            }
        }
    }

    pub(super) fn go_offline(&mut self, reason: String) {
        // The first failure is the one to report; whatever failed after it followed from it.
        let reason = match &self.offline {
            Some(first) => first.clone(),
            None => {
                tracing::error!(reason = %reason, "log goes offline");
                self.offline = Some(reason.clone());
                reason
            }
        };
        self.complete_durability(&Err(StorageError::Offline(reason.clone())));
        for cmd in self.commands.drain(..) {
            cmd.refuse(StorageError::Offline(reason.clone()));
        }
        self.release_room_waiters();
    }
}

impl Log {
    /// Opens (recovering) or creates the log in `dir`.
    pub async fn open(dir: &Path, config: LogConfig, ctx: &LogContext) -> Result<Self, StorageError> {
        let now = now_ms();
        io::fs::create_dir_all(dir, &ctx.faults).await.map_err(|e| StorageError::io(dir, &e))?;
        let persisted_start = read_log_start(dir, &ctx.faults).await?;
        let offsets = recorded_offsets(dir, &ctx.faults).await?;
        let mut segments = recover_segments(dir, &config, offsets, &ctx.faults).await?;
        forget_clean_shutdown(dir, segments.back().map(|s| s.base_offset), &ctx.faults).await?;
        let recycled = recycled_file_present(dir, &config, &ctx.faults).await;
        let (cleaned_offset, tombstones_due_ms) = compact::read_checkpoint(dir, &ctx.faults).await;
        if segments.is_empty() {
            let base = persisted_start.unwrap_or(0);
            let mut segment = Segment::new(dir, base, now);
            let file = create_segment_file(&segment.path, &ctx.faults).await?;
            segment.file = Some(Rc::new(file));
            sync_dir(dir, &ctx.faults).await?;
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
            commands: VecDeque::new(),
            offline: None,
            closing: false,
            recycled,
            last_write_ms: now,
            last_sync_ms: now,
            last_job_bytes: 0,
            preparing: None,
            cleaned_offset: cleaned_offset.clamp(log_start_offset, next_offset),
            tombstones_due_ms,
            truncations: 0,
            offsets,
            gaps_unrecorded: false,
            unsynced_write: true,
        };
        let inner = Rc::new(LogInner {
            dir: dir.to_owned(),
            state: RefCell::new(state),
            wake_flusher: LocalSignal::new(),
            cache: ctx.cache.clone(),
            cache_key,
            faults: ctx.faults.clone(),
            flusher_done: RefCell::new(None),
            progress_listener: RefCell::new(None),
            files_lock: futures_util::lock::Mutex::new(()),
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

    /// Offsets below this are written and fdatasync'd.
    pub fn durable_offset(&self) -> i64 {
        self.inner.state.borrow().durable_offset
    }

    /// True after a failed write or fdatasync: nothing more is appended or written.
    pub fn is_offline(&self) -> bool {
        self.inner.state.borrow().offline.is_some()
    }

    /// Sets the callback the log's writer calls (outside any borrow of the log) after its durable
    /// offset moved, after a truncation, and when the log went offline. Replaces any earlier one.
    pub fn set_progress_listener(&self, listener: Rc<dyn Fn()>) {
        *self.inner.progress_listener.borrow_mut() = Some(listener);
    }

    /// Current offsets and sizes.
    pub fn snapshot(&self) -> LogSnapshot {
        let state = self.inner.state.borrow();
        LogSnapshot {
            log_start_offset: state.log_start_offset,
            log_end_offset: state.next_offset,
            written_offset: state.written_offset,
            durable_offset: state.durable_offset,
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

    pub(super) fn push_command(&self, command: Command) -> Result<(), StorageError> {
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
        let dir = &self.inner.dir;
        io::fs::discard_dir(dir, &self.inner.faults).await.map_err(|e| StorageError::io(dir, &e))
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
