//! Truncation: cutting a log's tail at an offset, on disk and in memory.

use std::collections::VecDeque;

use super::files::*;
use super::flush::*;
use super::recovery::*;
use super::*;
use crate::io::{self, AlignedBuf, now_ms, round_down_to_page};
use crate::storage::StorageError;
use crate::storage::segment::scan_file;

/// Truncation, run by the flusher so no write is in flight: write out everything, cut the
/// segment holding `offset`, delete later segments, zero the cut range on disk, reload the tail
/// page into the write buffer.
pub(super) async fn truncate(inner: &LogInner, offset: i64) -> Result<(), StorageError> {
    run_writes(inner, false).await?;
    let _files = inner.files_lock.lock().await;
    let (doomed, target) = {
        let mut state = inner.state.borrow_mut();
        if offset >= state.next_offset {
            return Ok(());
        }
        // At once: a cleaning pass must not swap in, or count as clean, what is cut now.
        state.truncations += 1;
        let offset = offset.max(state.log_start_offset);
        let mut doomed = Vec::new();
        while state.segments.len() > 1 && state.active().base_offset >= offset {
            doomed.push(state.segments.pop_back().expect("checked"));
        }
        let target = state.active();
        let scan_from = target.scan_start(offset).0;
        (doomed, (target.base_offset, target.file.clone(), scan_from, target.size, target.next_offset, offset))
    };
    for segment in &doomed {
        remove_segment_files(&inner.dir, segment.base_offset, &inner.faults).await;
    }
    if !doomed.is_empty() {
        // Gone for good before the cut below: recovery takes a later segment after a gap as
        // part of the log (compaction leaves gaps), so one left behind would come back.
        sync_dir(&inner.dir, &inner.faults).await?;
    }
    let (base, file, scan_from, old_size, old_next, offset) = target;
    let file = match file {
        Some(file) => file,
        None => ensure_file(inner, base).await?,
    };
    // Find the start of the batch that holds `offset`: that is the new end.
    let mut new_size = scan_from;
    let mut new_next = None;
    scan_file(&file, scan_from, old_size, false, |header, position| {
        if new_next.is_none() && header.last_offset() >= offset {
            // In a gap compaction left, the log ends at `offset` itself.
            new_next = Some(header.base_offset.min(offset));
            new_size = position;
        }
        Ok(())
    })
    .await
    .map_err(|e| StorageError::io(file.path(), &e))?;
    // No batch here reaches `offset`: it was the base of a later segment (removed above), or
    // lies in a gap compaction left after this segment's last batch. The segment is kept whole
    // and becomes the active one again, ending at `offset` at most.
    let new_next = match new_next {
        Some(next) => next,
        None => {
            new_size = old_size;
            old_next.min(offset)
        }
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
    let lowered = {
        let state = inner.state.borrow();
        (state.cleaned_offset > new_next).then_some((new_next, state.tombstones_due_ms))
    };
    if let Some((cleaned, due)) = lowered {
        // Offsets past the cut are written again later, and are not clean.
        super::compact::write_checkpoint(&inner.dir, cleaned, due, &inner.faults).await?;
    }
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
        // The zeroed range past the cut is unwritten extents again.
        segment.prepared_bytes = segment.prepared_bytes.min(zero_from);
    }
    state.buf = buf;
    state.buf_position = tail_position;
    state.next_offset = new_next;
    state.written_offset = new_next;
    state.durable_offset = state.durable_offset.min(new_next);
    state.log_start_offset = state.log_start_offset.min(new_next);
    state.cleaned_offset = state.cleaned_offset.min(new_next);
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

/// Emptying the log to start again at `offset`, run by the flusher: write out what is pending,
/// record the new log start durably (a crash after this leaves a log that starts there or is
/// still behind, never one with a gap), delete every segment and begin an empty one at `offset`.
pub(super) async fn start_at(inner: &LogInner, offset: i64) -> Result<(), StorageError> {
    run_writes(inner, false).await?;
    let _files = inner.files_lock.lock().await;
    inner.state.borrow_mut().truncations += 1;
    write_log_start(&inner.dir, offset, &inner.faults).await?;
    // Nothing is clean in the log that starts there (it only grows from it). A checkpoint at or
    // below `offset` (or none) already says so once clamped to the log start; writing one
    // regardless would make the log pass for a compacted one (see `files::recorded_offsets`).
    if inner.state.borrow().cleaned_offset > offset {
        super::compact::write_checkpoint(&inner.dir, offset, None, &inner.faults).await?;
    }
    let doomed: Vec<Segment> = inner.state.borrow_mut().segments.drain(..).collect();
    for segment in &doomed {
        remove_segment_files(&inner.dir, segment.base_offset, &inner.faults).await;
    }
    let mut segment = Segment::new(&inner.dir, offset, now_ms());
    let file = create_segment_file(&segment.path, &inner.faults).await?;
    segment.file = Some(std::rc::Rc::new(file));
    sync_dir(&inner.dir, &inner.faults).await?;
    let mut state = inner.state.borrow_mut();
    state.segments.push_back(segment);
    state.pending_seals.clear();
    state.buf = state.take_fresh_buf();
    state.buf_position = 0;
    state.next_offset = offset;
    state.written_offset = offset;
    state.durable_offset = offset;
    state.log_start_offset = offset;
    state.cleaned_offset = offset;
    state.tombstones_due_ms = None;
    inner.cache.borrow_mut().truncate(inner.cache_key, i64::MIN);
    for waiter in state.durability_waiters.drain(..) {
        let _ = waiter.reply.send(Err(StorageError::OffsetOutOfRange {
            offset: waiter.end_offset - 1,
            log_start_offset: offset,
            log_end_offset: offset,
        }));
    }
    tracing::info!(dir = %inner.dir.display(), offset, "log emptied to start at the leader's log start");
    Ok(())
}
