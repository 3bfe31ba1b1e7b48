//! The log's side files: segment file creation, saved indexes, the persisted log start offset,
//! the clean-shutdown and offset-gaps markers, directory syncs.

use std::path::Path;

use super::*;
use crate::io::{self, DirectFile, Faults, OpenMode};
use crate::storage::StorageError;
use crate::storage::index::{OffsetIndex, TimeIndex};
use crate::storage::segment::{Offsets, Segment, index_file_name, log_file_name, time_index_file_name};

/// File that remembers a log start offset moved by DeleteRecords.
pub(super) const LOG_START_FILE: &str = "log-start-offset";

/// Present while the log is closed cleanly: its saved indexes match its data.
pub(super) const CLEAN_SHUTDOWN_FILE: &str = "clean-shutdown";

/// Present once the log's offsets may have gaps (see [`Offsets`]): written, and the directory
/// synced, before the first compacted segment takes its place or the first batch past the log
/// end is written. Without it every batch must begin right after the one before, and one that
/// does not is damage.
pub(super) const GAPS_FILE: &str = "offset-gaps";

/// How the batches of the log in `dir` follow each other: with gaps once [`GAPS_FILE`] was
/// written, or once the cleaner ever checkpointed (logs compacted before the file existed).
pub(super) async fn recorded_offsets(dir: &Path, faults: &Faults) -> Result<Offsets, StorageError> {
    for name in [GAPS_FILE, super::compact::CLEANER_CHECKPOINT_FILE] {
        let path = dir.join(name);
        if io::fs::read_len(&path, faults).await.map_err(|e| StorageError::io(&path, &e))?.is_some() {
            return Ok(Offsets::MayGap);
        }
    }
    Ok(Offsets::Consecutive)
}

/// Makes sure the log is known, on disk too, to have gaps before any are written: a no-op once
/// recorded. (Creating an empty file needs only the directory synced.)
pub(super) async fn record_gaps(inner: &LogInner) -> Result<(), StorageError> {
    {
        let state = inner.state.borrow();
        if state.offsets == Offsets::MayGap && !state.gaps_unrecorded {
            return Ok(());
        }
    }
    let path = inner.dir.join(GAPS_FILE);
    io::fs::write(&path, Vec::new(), &inner.faults).await.map_err(|e| StorageError::io(&path, &e))?;
    sync_dir(&inner.dir, &inner.faults).await?;
    let mut state = inner.state.borrow_mut();
    state.offsets = Offsets::MayGap;
    state.gaps_unrecorded = false;
    Ok(())
}

/// A segment file retention removed, kept to be written again as the log's next segment.
///
/// Writing into blocks that already hold data is an overwrite: no extent conversion for each
/// fdatasync to commit in the journal, no block allocation, and no unlink (which on a filesystem
/// with online discard stalls every concurrent fdatasync). The old batches it still holds can
/// never pass for new ones: only files that retention removed from the front of the log are
/// kept, so every batch in one has an offset below the log start, and recovery stops a segment
/// at the first batch whose base offset does not continue the one before (an old batch's is
/// lower than the segment's own base offset). Files cut away by truncation, whose batches could
/// carry offsets the log will use again, are always deleted.
pub(super) const RECYCLED_FILE: &str = "recycled.segment";

/// Files smaller than this are not worth keeping for reuse.
const MIN_RECYCLED_BYTES: u64 = 1 << 20;

/// Whether `dir` holds a recycled segment file (deleted when recycling is off).
pub(super) async fn recycled_file_present(dir: &Path, config: &LogConfig, faults: &Faults) -> bool {
    let path = dir.join(RECYCLED_FILE);
    match io::fs::read_len(&path, faults).await {
        Ok(Some(_)) if config.recycle_segments => true,
        Ok(Some(_)) => {
            let _ = io::fs::remove_file(&path, faults).await;
            false
        }
        _ => false,
    }
}

/// Removes a segment retention no longer keeps: its indexes are deleted, and its file is kept
/// as the recycled file when `keep` and nothing else still reads it; otherwise deleted. Returns
/// whether it was kept.
pub(super) async fn recycle_or_remove(dir: &Path, segment: Segment, keep: bool, faults: &Faults) -> bool {
    let base = segment.base_offset;
    let unread = segment.file.as_ref().is_some_and(|f| std::rc::Rc::strong_count(f) == 1);
    let worth = segment.size >= MIN_RECYCLED_BYTES;
    drop(segment);
    if keep && unread && worth {
        match io::fs::rename(&dir.join(log_file_name(base)), &dir.join(RECYCLED_FILE), faults).await {
            Ok(()) => {
                for name in [index_file_name(base), time_index_file_name(base)] {
                    let _ = io::fs::remove_file(&dir.join(name), faults).await;
                }
                return true;
            }
            Err(err) => {
                tracing::warn!(dir = %dir.display(), base, error = %err, "could not keep a segment file for reuse")
            }
        }
    }
    remove_segment_files(dir, base, faults).await;
    false
}

/// The recycled file, renamed to `path` and opened, if there is one. The caller syncs the
/// directory.
pub(super) async fn take_recycled(dir: &Path, path: &Path, faults: &Faults) -> Option<(DirectFile, u64)> {
    let recycled = dir.join(RECYCLED_FILE);
    if let Err(err) = io::fs::rename(&recycled, path, faults).await {
        tracing::warn!(dir = %dir.display(), error = %err, "recycled segment file unusable; creating a new one");
        return None;
    }
    let file = DirectFile::open(path, OpenMode::Existing, faults.clone()).await.ok()?;
    let len = file.len().await.ok()?;
    Some((file, len))
}

pub(super) async fn create_segment_file(path: &Path, faults: &Faults) -> Result<DirectFile, StorageError> {
    let file =
        DirectFile::open(path, OpenMode::CreateOrOpen, faults.clone()).await.map_err(|e| StorageError::io(path, &e))?;
    // A leftover file of the same name (a segment deleted by truncation) must not leak into the
    // new one.
    file.set_len(0).await.map_err(|e| StorageError::io(path, &e))?;
    Ok(file)
}

/// How far ahead of the write position a segment file is preallocated at a time.
pub(super) fn preallocate_step(config: &LogConfig) -> u64 {
    let page = io::PAGE_BYTES as u64;
    config.preallocate_step_bytes.max(page).min(config.segment_bytes.max(page))
}

pub(super) async fn sync_dir(dir: &Path, faults: &Faults) -> Result<(), StorageError> {
    io::fs::sync_dir(dir, faults).await.map_err(|e| StorageError::io(dir, &e))
}

pub(super) async fn save_indexes(
    dir: &Path,
    base: i64,
    offset_index: &OffsetIndex,
    time_index: &TimeIndex,
    faults: &Faults,
) {
    let saved = async {
        io::fs::write(&dir.join(index_file_name(base)), offset_index.to_bytes(), faults).await?;
        io::fs::write(&dir.join(time_index_file_name(base)), time_index.to_bytes(), faults).await
    };
    if let Err(err) = saved.await {
        // Indexes are rebuilt from the segment when missing, so this only costs time at restart.
        tracing::warn!(dir = %dir.display(), base, error = %err, "could not save segment indexes");
    }
}

pub(super) async fn remove_segment_files(dir: &Path, base: i64, faults: &Faults) {
    for name in [log_file_name(base), index_file_name(base), time_index_file_name(base)] {
        let path = dir.join(name);
        if let Err(err) = io::fs::remove_file(&path, faults).await {
            tracing::warn!(path = %path.display(), error = %err, "could not delete segment file");
        }
    }
}

/// The log start offset DeleteRecords moved, if any. An unreadable file is an error: guessing
/// would bring deleted records back.
pub(super) async fn read_log_start(dir: &Path, faults: &Faults) -> Result<Option<i64>, StorageError> {
    let path = dir.join(LOG_START_FILE);
    match io::fs::read(&path, faults).await.map_err(|e| StorageError::io(&path, &e))? {
        None => Ok(None),
        Some(bytes) => match std::str::from_utf8(&bytes).ok().and_then(|s| s.trim().parse().ok()) {
            Some(offset) => Ok(Some(offset)),
            None => {
                Err(StorageError::Corrupt { path, position: 0, reason: "log start offset file is not a number".into() })
            }
        },
    }
}

pub(super) async fn write_log_start(dir: &Path, offset: i64, faults: &Faults) -> Result<(), StorageError> {
    let path = dir.join(LOG_START_FILE);
    io::fs::write_atomic(&path, offset.to_string().into_bytes(), faults).await.map_err(|e| StorageError::io(&path, &e))
}
