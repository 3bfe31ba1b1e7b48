//! The log's background writer (the only code writing its files): write-behind rounds, group
//! commit, segment sealing, the flush and truncate commands, and the final flush at close.

use std::rc::{Rc, Weak};
use std::time::Duration;

use futures_channel::oneshot;

use super::files::*;
use super::prepare::{self, maybe_prepare, settle_before_writing};
use super::truncate::{start_at, truncate};
use super::*;
use crate::io::{self, AlignedBuf, DirectFile, LocalSignal, now_ms, round_down_to_page};
use crate::storage::{FlushPolicy, StorageError};

/// The log's background writer: one per log, the only task writing its files.
pub(super) async fn flusher(log: Weak<LogInner>, done: oneshot::Sender<()>) {
    loop {
        let Some(inner) = log.upgrade() else { break };
        match next_flush_step(&inner) {
            Step::Work { sync } => {
                if let Err(err) = run_writes(&inner, sync).await {
                    inner.state.borrow_mut().go_offline(err.to_string());
                }
                report_progress(&inner);
                maybe_prepare(&inner).await;
            }
            Step::Command(command) => {
                prepare::settle(&inner).await;
                run_command(&inner, command).await;
                report_progress(&inner);
            }
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
                prepare::settle(&inner).await;
                let offline = inner.state.borrow().offline.is_some();
                if offline {
                    // Nothing more is written once the log has failed: on restart, recovery
                    // starts from what is really on disk.
                    inner.state.borrow_mut().complete_durability(&Err(StorageError::Closed));
                } else if let Err(err) = finish_close(&inner).await {
                    inner.state.borrow_mut().go_offline(err.to_string());
                }
                report_progress(&inner);
                break;
            }
        }
    }
    let _ = done.send(());
}

/// Tells the log's progress listener, if any, that its durable offset or state may have changed.
fn report_progress(inner: &LogInner) {
    let listener = inner.progress_listener.borrow().clone();
    if let Some(listener) = listener {
        listener();
    }
}

pub(super) enum Step {
    Work { sync: bool },
    Command(Command),
    SleepMs(u64),
    Idle,
    Exit,
}

pub(super) fn next_flush_step(inner: &LogInner) -> Step {
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
pub(super) struct WriteJob {
    segment_base: i64,
    buf: AlignedBuf,
    position: u64,
    end_size: u64,
    end_offset: i64,
    seal: bool,
}

/// Writes all pending data (sealing rolled segments on the way) and, with `sync`, fdatasyncs the
/// active segment; then completes whatever became durable.
pub(super) async fn run_writes(inner: &LogInner, sync: bool) -> Result<(), StorageError> {
    if inner.state.borrow().gaps_unrecorded {
        record_gaps(inner).await?;
    }
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
        // Under a sync, the active segment's data is written durable in the same operation
        // (`RWF_DSYNC`: one io_uring operation instead of a write and an fdatasync, each of
        // which may wait on a kernel worker). A rolled segment is synced when sealed.
        write_job(inner, &file, job, sync && !seal).await?;
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

pub(super) fn take_write_job(state: &mut LogState) -> Option<WriteJob> {
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
pub(super) async fn ensure_file(inner: &LogInner, base: i64) -> Result<Rc<DirectFile>, StorageError> {
    let (existing, path) = {
        let state = inner.state.borrow();
        let segment = state.segments.iter().find(|s| s.base_offset == base).ok_or(StorageError::Closed)?;
        (segment.file.clone(), segment.path.clone())
    };
    if let Some(file) = existing {
        return Ok(file);
    }
    let recycled = std::mem::take(&mut inner.state.borrow_mut().recycled);
    let reused = match recycled {
        true => take_recycled(&inner.dir, &path, &inner.faults).await,
        false => None,
    };
    let (file, allocated) = match reused {
        Some(reused) => reused,
        None => (create_segment_file(&path, &inner.faults).await?, 0),
    };
    let file = Rc::new(file);
    sync_dir(&inner.dir, &inner.faults).await?;
    let mut state = inner.state.borrow_mut();
    if let Some(segment) = state.segments.iter_mut().find(|s| s.base_offset == base) {
        // A new file is empty: `allocated_bytes` stays at 0 until `write_job` preallocates. A
        // recycled one has its blocks already (old batches, overwritten as the segment grows).
        segment.allocated_bytes = allocated;
        segment.prepared_bytes = allocated;
        segment.file = Some(file.clone());
    }
    Ok(file)
}

/// Writes one job; `durable` makes it an `RWF_DSYNC` write.
pub(super) async fn write_job(
    inner: &LogInner,
    file: &Rc<DirectFile>,
    job: WriteJob,
    durable: bool,
) -> Result<(), StorageError> {
    let WriteJob { segment_base, mut buf, position, end_size, end_offset, .. } = job;
    let (preallocate, allocated, step) = {
        let state = inner.state.borrow();
        let segment = state.segments.iter().find(|s| s.base_offset == segment_base);
        (state.config.preallocate, segment.map_or(0, |s| s.allocated_bytes), preallocate_step(&state.config))
    };
    let padded_end = position + io::round_up_to_page(buf.len()) as u64;
    settle_before_writing(inner, segment_base, Some(padded_end)).await;
    inner.state.borrow_mut().last_job_bytes = buf.len();
    if preallocate && padded_end > allocated {
        let new_allocated = padded_end.div_ceil(step) * step;
        file.allocate(allocated, new_allocated - allocated).await.map_err(|e| StorageError::io(file.path(), &e))?;
        let mut state = inner.state.borrow_mut();
        if let Some(segment) = state.segments.iter_mut().find(|s| s.base_offset == segment_base) {
            segment.allocated_bytes = new_allocated;
        }
    }
    buf.pad_to_page();
    let (result, buf) = match durable {
        true => file.write_all_at_durable(buf, position).await,
        false => file.write_all_at(buf, position).await,
    };
    result.map_err(|e| StorageError::io(file.path(), &e))?;
    let mut state = inner.state.borrow_mut();
    state.unsynced_write |= !durable;
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
pub(super) async fn sync_active(inner: &LogInner) -> Result<(), StorageError> {
    let (file, covered, unsynced) = {
        let state = inner.state.borrow();
        let covered = state.written_offset;
        (state.active().file.clone(), covered, covered > state.durable_offset && state.unsynced_write)
    };
    if let Some(file) = file
        && unsynced
    {
        file.sync_data().await.map_err(|e| StorageError::io(file.path(), &e))?;
        inner.state.borrow_mut().unsynced_write = false;
    }
    mark_durable(inner, covered);
    Ok(())
}

pub(super) fn mark_durable(inner: &LogInner, covered: i64) {
    let mut state = inner.state.borrow_mut();
    state.last_sync_ms = now_ms();
    if covered > state.durable_offset {
        state.durable_offset = covered;
        state.complete_durability(&Ok(()));
    }
}

/// Final steps for a rolled segment whose last bytes were just written: fdatasync, cut the
/// preallocated tail, save the indexes.
pub(super) async fn seal_segment(inner: &LogInner, file: &Rc<DirectFile>) -> Result<(), StorageError> {
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
    settle_before_writing(inner, base, None).await;
    file.set_len(size).await.map_err(|e| StorageError::io(file.path(), &e))?;
    file.sync_data().await.map_err(|e| StorageError::io(file.path(), &e))?;
    save_indexes(&inner.dir, base, &offset_index, &time_index, &inner.faults).await;
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

pub(super) async fn run_command(inner: &LogInner, command: Command) {
    match command {
        Command::Flush { reply } => {
            let result = run_writes(inner, true).await;
            if let Err(err) = &result {
                inner.state.borrow_mut().go_offline(err.to_string());
            }
            let _ = reply.send(result);
        }
        Command::StartAt { offset, reply } => {
            let result = start_at(inner, offset).await;
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

pub(super) async fn finish_close(inner: &LogInner) -> Result<(), StorageError> {
    run_writes(inner, true).await?;
    let (base, offset_index, time_index) = {
        let mut state = inner.state.borrow_mut();
        let active = state.active_mut();
        active.complete_time_index();
        (active.base_offset, active.offset_index.clone(), active.time_index.clone())
    };
    save_indexes(&inner.dir, base, &offset_index, &time_index, &inner.faults).await;
    let marker = inner.dir.join(CLEAN_SHUTDOWN_FILE);
    if let Err(err) = io::fs::write(&marker, Vec::new(), &inner.faults).await {
        tracing::warn!(path = %marker.display(), error = %err, "could not mark clean shutdown");
    }
    sync_dir(&inner.dir, &inner.faults).await?;
    let mut state = inner.state.borrow_mut();
    state.complete_durability(&Err(StorageError::Closed));
    for waiter in state.room_waiters.drain(..) {
        let _ = waiter.send(());
    }
    Ok(())
}

impl Log {
    /// Writes and fdatasyncs everything appended so far, whatever the flush policy.
    pub async fn flush(&self) -> Result<(), StorageError> {
        let (tx, rx) = oneshot::channel();
        self.push_command(Command::Flush { reply: tx })?;
        rx.await.unwrap_or(Err(StorageError::Closed))
    }

    /// Removes every batch at or after `offset` (rounding down to the start of the batch that
    /// contains it), on disk and in memory. For replication (divergent tails) and tests.
    pub async fn truncate_to(&self, offset: i64) -> Result<(), StorageError> {
        let (tx, rx) = oneshot::channel();
        self.push_command(Command::Truncate { offset, reply: tx })?;
        rx.await.unwrap_or(Err(StorageError::Closed))
    }

    /// Removes every batch and starts the log again, empty, at `offset` (a follower whose log
    /// ends before its leader's log start: Kafka's truncate-fully-and-start-at).
    pub async fn start_at(&self, offset: i64) -> Result<(), StorageError> {
        let (tx, rx) = oneshot::channel();
        self.push_command(Command::StartAt { offset, reply: tx })?;
        rx.await.unwrap_or(Err(StorageError::Closed))
    }
}
