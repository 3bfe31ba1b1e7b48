//! Retention: deleting whole sealed segments by time, by size, or below a log start offset moved
//! by DeleteRecords, without holding appends up. One removed file per log is kept to be written
//! again as its next segment (see [`super::files::RECYCLED_FILE`]).

use std::time::Duration;

use super::files::*;
use super::*;
use crate::storage::StorageError;
use crate::storage::segment::Segment;

/// Wait before each segment unlink by retention. Unlinking a large file frees its extents in a
/// journal transaction that every concurrent fdatasync on the filesystem then waits for (tens of
/// milliseconds for 64 MiB with ext4's online `discard`); back to back, several of them stall
/// durable appends for their sum. A shard enforces retention one partition at a time, so this
/// spaces all of its unlinks, not only one log's.
pub(super) const UNLINK_PACE: Duration = Duration::from_millis(50);

impl Log {
    /// Deletes closed segments that retention (time, size, or a log start offset moved by
    /// DeleteRecords) no longer keeps. Appends are not held up: segments leave the log's state
    /// at once and their files are unlinked afterwards, each after [`UNLINK_PACE`].
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
    /// waiting `pace` before each.
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
        for segment in removed {
            if !pace.is_zero() {
                crate::io::sleep(pace).await;
            }
            outcome.segments_deleted += 1;
            outcome.bytes_deleted += segment.size;
            let (path, bytes) = (segment.path.clone(), segment.size);
            // One file at a time waits to be written again (the slot is taken before the rename).
            let keep = {
                let mut state = inner.state.borrow_mut();
                let keep = state.config.recycle_segments && !state.recycled && state.offline.is_none();
                state.recycled |= keep;
                keep
            };
            let kept = {
                // Not while the cleaner swaps a file in (it might be this segment's).
                let _files = inner.files_lock.lock().await;
                recycle_or_remove(&inner.dir, segment, keep, &inner.faults).await
            };
            if keep && !kept {
                inner.state.borrow_mut().recycled = false;
            }
            let fate = if kept { "kept for reuse" } else { "deleted" };
            tracing::info!(path = %path.display(), bytes, fate, "retention removed segment");
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
        write_log_start(&self.inner.dir, start, &self.inner.faults).await?;
        self.remove_leading_segments(
            |segment, log_start_offset| segment.next_offset <= log_start_offset,
            Duration::ZERO,
        )
        .await;
        Ok(self.log_start_offset())
    }
}
