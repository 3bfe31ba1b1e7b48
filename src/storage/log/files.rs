//! The log's side files: segment file creation, saved indexes, the persisted log start offset,
//! the clean-shutdown marker, directory syncs.

use std::path::Path;

use super::*;
use crate::io::{self, DirectFile, Faults, OpenMode};
use crate::storage::StorageError;
use crate::storage::index::{OffsetIndex, TimeIndex};
use crate::storage::segment::{index_file_name, log_file_name, time_index_file_name};

/// File that remembers a log start offset moved by DeleteRecords.
pub(super) const LOG_START_FILE: &str = "log-start-offset";

/// Present while the log is closed cleanly: its saved indexes match its data.
pub(super) const CLEAN_SHUTDOWN_FILE: &str = "clean-shutdown";

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
