//! Recovery at open: every segment found, tails checked batch by batch (length, CRC, offset
//! continuity), the log cut at the first torn or corrupt batch, damaged indexes rebuilt.

use std::collections::VecDeque;
use std::path::Path;
use std::rc::Rc;

use super::files::*;
use crate::io::{self, AlignedBuf, DirectFile, Faults, OpenMode, now_ms, round_down_to_page};
use crate::model::batch;
use crate::storage::index::{OffsetIndex, TimeIndex};
use crate::storage::segment::{
    Offsets, ScanEnd, ScanStop, Segment, index_file_name, log_file_name, parse_log_file_name, scan_file,
    time_index_file_name,
};
use crate::storage::{LogConfig, StorageError};

/// Opens every segment in `dir`, checks their tails, rebuilds damaged indexes and cuts the log
/// at the first torn or corrupt batch, or the first batch or segment whose base offset does not
/// follow by `offsets` (deleting any later segment).
pub(super) async fn recover_segments(
    dir: &Path,
    config: &LogConfig,
    offsets: Offsets,
    faults: &Faults,
) -> Result<VecDeque<Segment>, StorageError> {
    let names = io::fs::list_dir(dir, faults).await.map_err(|e| StorageError::io(dir, &e))?;
    let mut bases: Vec<i64> = names.iter().filter_map(|name| parse_log_file_name(name)).collect();
    bases.sort_unstable();
    let clean_shutdown = names.iter().any(|name| name == CLEAN_SHUTDOWN_FILE);
    for name in names.iter().filter(|name| name.ends_with(super::compact::CLEANED_SUFFIX)) {
        // A cleaner's rewrite cut short: the segment it was for is still there whole.
        tracing::info!(dir = %dir.display(), file = %name, "removing an unfinished compaction file");
        let _ = io::fs::remove_file(&dir.join(name), faults).await;
    }
    if !clean_shutdown && !bases.is_empty() {
        tracing::info!(dir = %dir.display(), "log was not closed cleanly: checking its active segment in full");
    }
    let mut segments: VecDeque<Segment> = VecDeque::new();
    let mut cut_from = None;
    for (i, &base) in bases.iter().enumerate() {
        // Where compaction may have removed a segment's last batches a gap is fine; an overlap
        // never is.
        if let Some(prev) = segments.back()
            && !offsets.continues(prev.next_offset, base)
        {
            tracing::warn!(dir = %dir.display(), base, expected = prev.next_offset, "segment does not continue the previous one; cutting the log here");
            cut_from = Some(i);
            break;
        }
        let is_last = i + 1 == bases.len();
        // Sealed segments were synced before the next one was written; the active one's saved
        // index only matches its data after a clean close.
        let trust_index = !is_last || clean_shutdown;
        let (mut segment, clean) = recover_segment(dir, base, trust_index, config, offsets, faults).await?;
        let continues = bases.get(i + 1).is_none_or(|next| offsets.continues(segment.next_offset, *next));
        if is_last || !clean || !continues {
            // The log ends here: make sure nothing past the valid end can be read back as data.
            // After a clean close there is nothing to cut: past the data are zeros (preallocated
            // or zero-filled ahead; a truncation zeroes what it removes) or a recycled file's old
            // batches, whose offsets no later batch continues. Zeroing would only turn written
            // blocks back into unwritten ones, which the next appends would pay to convert.
            if !(is_last && clean && clean_shutdown) {
                cut_segment_tail(&segment).await?;
            } else {
                // Kept as they are, the blocks zero-filled ahead (or a recycled file's) stay
                // written: zero-filling ahead goes on from the first unwritten one.
                segment.prepared_bytes = written_through(&segment);
            }
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
            remove_segment_files(dir, base, faults).await;
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

/// Where the written blocks past a segment's data end: its first hole, within its preallocation
/// (the data's end if that cannot be told).
fn written_through(segment: &Segment) -> u64 {
    let data_end = io::round_up_to_page(segment.size as usize) as u64;
    let file = segment.file.as_ref().expect("recovered segments have files");
    match file.first_hole(data_end) {
        Ok(hole) => hole.clamp(data_end, segment.allocated_bytes.max(data_end)),
        Err(err) => {
            tracing::debug!(path = %segment.path.display(), error = %err, "SEEK_HOLE failed");
            data_end
        }
    }
}

/// Zeroes everything in a segment's file past its recovered size and rewrites its partial tail
/// page, so nothing stale can ever be read back as data; then syncs.
pub(super) async fn cut_segment_tail(segment: &Segment) -> Result<(), StorageError> {
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

/// Batches in a segment carry increasing offsets, consecutive unless `offsets` allows gaps; the
/// base offset is outside the CRC, so this is what catches damage to it (or a recycled file's
/// old data, whose offsets are lower).
pub(super) fn check_continuity(
    header: &batch::BatchHeader,
    expected_next: &mut i64,
    offsets: Offsets,
) -> Result<(), String> {
    if !offsets.continues(*expected_next, header.base_offset) {
        return Err(format!("batch base offset {} where {} was expected", header.base_offset, expected_next));
    }
    *expected_next = header.last_offset() + 1;
    Ok(())
}

/// Opens one segment and finds its valid end, resuming from the saved index when it is trusted
/// and matches the data, and rebuilding it otherwise. Every batch scanned has its CRC checked. Returns the segment
/// and whether its data ended cleanly (zeros or end of file, not a torn or corrupt batch).
pub(super) async fn recover_segment(
    dir: &Path,
    base: i64,
    trust_index: bool,
    config: &LogConfig,
    offsets: Offsets,
    faults: &Faults,
) -> Result<(Segment, bool), StorageError> {
    let path = dir.join(log_file_name(base));
    let file =
        DirectFile::open(&path, OpenMode::Existing, faults.clone()).await.map_err(|e| StorageError::io(&path, &e))?;
    let file_len = file.len().await.map_err(|e| StorageError::io(&path, &e))?;
    // A saved index that cannot be read is rebuilt, like a damaged one.
    let read_saved = |name: String| async move { io::fs::read(&dir.join(name), faults).await.ok().flatten() };
    let saved_offsets = match trust_index {
        true => read_saved(index_file_name(base)).await,
        false => None,
    }
    .and_then(|bytes| OffsetIndex::from_bytes(&bytes, file_len.max(1)))
    .filter(|index| !index.is_empty());
    let saved_times =
        read_saved(time_index_file_name(base)).await.and_then(|bytes| TimeIndex::from_bytes(&bytes, u32::MAX));
    let interval = config.index_interval_bytes;
    let mut found = None;
    if let (Some(saved_offsets), Some(times)) = (saved_offsets, saved_times) {
        let last = saved_offsets.last().expect("non-empty");
        let mut segment = Segment::new(dir, base, now_ms());
        segment.offset_index = saved_offsets;
        if let Some(entry) = times.last() {
            segment.max_timestamp = entry.timestamp;
            segment.max_timestamp_offset = base + i64::from(entry.relative_offset);
        }
        segment.time_index = times;
        let expected_first = base + i64::from(last.relative_offset);
        let scan =
            scan_tail(&file, &mut segment, u64::from(last.position), expected_first, file_len, interval, offsets)
                .await
                .map_err(|e| StorageError::io(&path, &e))?;
        if scan.first_matches == Some(true) {
            found = Some((segment, scan));
        } else {
            tracing::warn!(path = %path.display(), "segment index does not match its data; rebuilding it");
        }
    }
    let (mut segment, TailScan { end, stale, .. }) = match found {
        Some(found) => found,
        None => {
            let mut segment = Segment::new(dir, base, now_ms());
            let scan = scan_tail(&file, &mut segment, 0, base, file_len, interval, offsets)
                .await
                .map_err(|e| StorageError::io(&path, &e))?;
            (segment, scan)
        }
    };
    segment.size = end.position;
    segment.written_size = end.position;
    segment.allocated_bytes = file_len;
    // Past the data, the cut (`cut_segment_tail`) leaves unwritten extents; after a clean close
    // the caller finds how far the blocks there are written (`written_through`).
    segment.prepared_bytes = io::round_up_to_page(end.position as usize) as u64;
    segment.file = Some(Rc::new(file));
    let clean = match &end.stopped {
        // Zero fill (preallocation, or a range zeroed by an earlier cut) ends the data normally,
        // and so do the old batches of a recycled file (see `files::RECYCLED_FILE`).
        None => true,
        Some(stop) if stop.is_zero_fill() => true,
        Some(ScanStop::Refused(_)) if stale => {
            tracing::debug!(path = %path.display(), position = end.position, "the data ends at a recycled file's old batches");
            true
        }
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

/// How a recovery scan of a segment went.
struct TailScan {
    /// Where it stopped.
    end: ScanEnd,
    /// Whether its first batch had the base offset expected there (a saved index that matches
    /// the data); `None` when no batch was found.
    first_matches: Option<bool>,
    /// It stopped at a batch older than the segment: a recycled file's old data.
    stale: bool,
}

/// Scans `segment`'s file from byte `from`, where a batch with base offset `expected_first`
/// should start, up to `file_len`: every batch's CRC checked, offsets continuous, the segment's
/// indexes and size noted as it goes.
async fn scan_tail(
    file: &DirectFile,
    segment: &mut Segment,
    from: u64,
    expected_first: i64,
    file_len: u64,
    index_interval_bytes: usize,
    offsets: Offsets,
) -> std::io::Result<TailScan> {
    let base = segment.base_offset;
    let (mut first_matches, mut stale, mut expected_next) = (None, false, expected_first);
    let end = scan_file(file, from, file_len, true, |header, position| {
        first_matches.get_or_insert(header.base_offset == expected_first);
        stale |= header.base_offset < base;
        check_continuity(header, &mut expected_next, offsets)?;
        if header.last_offset() - base > i64::from(u32::MAX) {
            // Only a damaged base offset lands this far past the segment's own.
            return Err(format!("batch offsets up to {} do not fit a segment based at {base}", header.last_offset()));
        }
        segment.note_batch(header, position, index_interval_bytes);
        Ok(())
    })
    .await?;
    Ok(TailScan { end, first_matches, stale })
}

/// Rebuilds a segment's indexes by reading its batch headers up to `size`.
pub(super) async fn rebuild_indexes(
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

/// The log is open for writing again: the clean-shutdown marker and the active segment's saved
/// indexes stop describing the data, so both go (durably) before anything is appended.
pub(super) async fn forget_clean_shutdown(
    dir: &Path,
    active_base: Option<i64>,
    faults: &Faults,
) -> Result<(), StorageError> {
    let mut names = vec![CLEAN_SHUTDOWN_FILE.to_owned()];
    if let Some(base) = active_base {
        names.push(index_file_name(base));
        names.push(time_index_file_name(base));
    }
    let mut removed = false;
    for name in names {
        let path = dir.join(&name);
        removed |= io::fs::remove_file(&path, faults).await.map_err(|e| StorageError::io(&path, &e))?;
    }
    if removed {
        sync_dir(dir, faults).await?;
    }
    Ok(())
}
