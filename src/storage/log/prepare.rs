//! Preparing the active segment's blocks ahead of the write position: zeros written over the
//! preallocated (fallocated, so unwritten) part of the file in the background, so that the
//! appends that follow overwrite written blocks.
//!
//! Why: on ext4, a write into unwritten extents converts them, and the fdatasync that follows
//! must commit that metadata in the journal; into written blocks it is a plain overwrite and
//! fdatasync is little more than a device flush (on this machine a 4 KiB write + fdatasync took
//! p50 123-145 us into written blocks against 194-242 us into unwritten ones, `cargo bench
//! --bench storage`). Recycled files are written already (`files::RECYCLED_FILE`); this covers
//! a log's first segments, which have nothing to recycle.
//!
//! How: after a write round whose job was small (large writes amortise the conversion, and
//! zero-filling would double their disk traffic), if less than `prepare_ahead_bytes` is
//! prepared past the data, the flusher spawns one zero write of at most [`CHUNK_BYTES`] (then
//! fdatasync, so the extent conversion is committed off the appends' path; paced per shard by
//! [`PACE_BYTES_PER_SEC`]) over preallocated blocks at least [`GAP_BYTES`] past the data's end.
//! At most one is in flight per log. It never writes below the data's end at the time it
//! starts, and the flusher waits for it before writing a job that reaches into its range,
//! before sealing or truncating the segment, and before closing; so zeros never land on data. Only preallocated blocks are prepared (the file's length does not
//! change), so preparing costs no disk space beyond preallocation.

use std::cell::RefCell;

use super::*;
use crate::io::{DirectFile, PAGE_BYTES, Task, round_up_to_page};

/// At most this much is zero-filled by one background write.
pub(super) const CHUNK_BYTES: u64 = 1 << 20;

/// A zero write starts at least this far past the data's end, so the appends that follow
/// while it is in flight do not reach into it (and wait for it).
pub(super) const GAP_BYTES: u64 = 256 << 10;

/// Only write rounds of at most this many bytes start preparation.
pub(super) const SMALL_JOB_BYTES: usize = 256 << 10;

/// A zero write in flight.
pub(super) struct Preparing {
    segment_base: i64,
    start: u64,
    end: u64,
    task: Task<std::io::Result<()>>,
}

/// All the logs of a shard together zero-fill at most this many bytes per second (after a
/// burst of [`PACE_BURST_BYTES`]): under a heavy load of small writes on many partitions, the
/// disk's bandwidth goes to data, and segments are filled as before.
pub(super) const PACE_BYTES_PER_SEC: f64 = 32.0 * 1024.0 * 1024.0;

/// See [`PACE_BYTES_PER_SEC`].
pub(super) const PACE_BURST_BYTES: f64 = 4.0 * 1024.0 * 1024.0;

thread_local! {
    /// Zeroed buffers kept for the next preparation on this shard (at most two).
    static ZEROS: RefCell<Vec<AlignedBuf>> = const { RefCell::new(Vec::new()) };
    /// The shard's zero-fill allowance.
    static PACE: crate::io::RateLimit = crate::io::RateLimit::new(PACE_BYTES_PER_SEC, PACE_BURST_BYTES);
}

/// Takes `bytes` from the shard's zero-fill allowance, if it holds that much.
fn take_pace(bytes: u64) -> bool {
    PACE.with(|pace| pace.try_take(bytes))
}

fn zeros(len: usize) -> AlignedBuf {
    static PAGE: [u8; PAGE_BYTES] = [0; PAGE_BYTES];
    let mut buf =
        ZEROS.with(|z| z.borrow_mut().pop()).unwrap_or_else(|| AlignedBuf::with_capacity(CHUNK_BYTES as usize));
    // Only zeros are ever put in these buffers, so truncating and extending keeps them zero.
    buf.truncate(len.min(buf.len()));
    while buf.len() < len {
        buf.extend_from_slice(&PAGE[..(len - buf.len()).min(PAGE_BYTES)]);
    }
    buf
}

fn give_back(buf: AlignedBuf) {
    ZEROS.with(|z| {
        let mut pool = z.borrow_mut();
        if pool.len() < 2 && buf.capacity() == CHUNK_BYTES as usize {
            pool.push(buf);
        }
    });
}

/// Waits for the preparation in flight, if any, and records what it prepared.
pub(super) async fn settle(inner: &LogInner) {
    let Some(preparing) = inner.state.borrow_mut().preparing.take() else { return };
    let Preparing { segment_base, start, end, task } = preparing;
    match task.await {
        Ok(Ok(())) => {
            let mut state = inner.state.borrow_mut();
            if let Some(segment) = state.segments.iter_mut().find(|s| s.base_offset == segment_base) {
                // A gap left between the old mark and `start` (see GAP_BYTES) stays unwritten;
                // the mark only says where the next zero write starts.
                tracing::trace!(start, end, "segment zero-filled ahead");
                segment.prepared_bytes = segment.prepared_bytes.max(end);
            }
        }
        // Not a loss of data: the blocks stay unwritten, and appends into them work as before.
        Ok(Err(err)) => {
            tracing::warn!(dir = %inner.dir.display(), error = %err, "could not zero-fill a segment ahead of its writes")
        }
        Err(_) => tracing::warn!(dir = %inner.dir.display(), "segment zero-fill task failed"),
    }
}

/// Waits for the preparation in flight if a write of segment `base` up to byte `end` would
/// reach into it (or `end` is `None`: anything of that segment).
pub(super) async fn settle_before_writing(inner: &LogInner, base: i64, end: Option<u64>) {
    let overlaps = inner
        .state
        .borrow()
        .preparing
        .as_ref()
        .is_some_and(|p| p.segment_base == base && end.is_none_or(|end| end > p.start));
    if overlaps {
        settle(inner).await;
    }
}

/// After a write round: starts the next zero write if the round was small and less than
/// `prepare_ahead_bytes` past the data is prepared.
pub(super) async fn maybe_prepare(inner: &LogInner) {
    let finished = inner.state.borrow().preparing.as_ref().map(|p| p.task.is_finished());
    match finished {
        Some(true) => settle(inner).await,
        Some(false) => return,
        None => {}
    }
    let mut state = inner.state.borrow_mut();
    let ahead = state.config.prepare_ahead_bytes;
    if ahead == 0 || state.last_job_bytes > SMALL_JOB_BYTES || state.offline.is_some() || state.closing {
        return;
    }
    let active = state.active();
    if active.file.is_none() || active.sealed {
        return;
    }
    let data_end = round_up_to_page(active.size as usize) as u64;
    let start = active.prepared_bytes.max(data_end + GAP_BYTES);
    let end = (start + CHUNK_BYTES).min(active.allocated_bytes);
    if start >= data_end + ahead || end <= start || !take_pace(end - start) {
        return;
    }
    let segment_base = active.base_offset;
    let task = io::spawn(zero_fill(active.path.clone(), start, end));
    state.preparing = Some(Preparing { segment_base, start, end, task });
}

/// Zero-fills `[start, end)` of the segment file at `path` through a descriptor of its own, then
/// fdatasyncs it. Its own, because the kernel reports a writeback error once per open file
/// description: had this fdatasync shared the log's descriptor, it could take an error that
/// belongs to data written before it, and the data's next fdatasync would succeed. Apart, the
/// data's fdatasync sees every error of the file, and a failure here loses nothing (the blocks
/// stay unwritten). For the same reason it does not share the log's injected faults, which
/// model failures of the data path.
async fn zero_fill(path: std::path::PathBuf, start: u64, end: u64) -> std::io::Result<()> {
    let file = DirectFile::open(&path, io::OpenMode::Existing, io::Faults::none()).await?;
    let (result, buf) = file.write_all_at(zeros((end - start) as usize), start).await;
    give_back(buf);
    result?;
    file.sync_data().await
}
