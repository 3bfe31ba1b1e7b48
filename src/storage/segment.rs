//! One segment of a partition log: a file named by its base offset plus its sparse indexes.
//!
//! Ownership: a segment belongs to its `Log`, on the shard that owns the partition. Its file is
//! behind an `Rc` so that a disk read in flight keeps the descriptor alive after retention has
//! unlinked the file.

use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;

use super::index::{OffsetIndex, TimeIndex};
use crate::io::{AlignedBuf, DirectFile, PAGE_BYTES, round_down_to_page, round_up_to_page};
use crate::model::batch::{self, BATCH_HEADER_BYTES, BatchError, BatchHeader};

/// Bytes read per window when scanning a segment.
const SCAN_WINDOW_BYTES: usize = 1 << 20;

/// File name of the segment with base offset `base_offset` (Kafka's 20-digit form).
pub(crate) fn log_file_name(base_offset: i64) -> String {
    format!("{base_offset:020}.log")
}

/// File name of a segment's offset index.
pub(crate) fn index_file_name(base_offset: i64) -> String {
    format!("{base_offset:020}.index")
}

/// File name of a segment's time index.
pub(crate) fn time_index_file_name(base_offset: i64) -> String {
    format!("{base_offset:020}.timeindex")
}

/// Parses a segment file name back into its base offset.
pub(crate) fn parse_log_file_name(name: &str) -> Option<i64> {
    let digits = name.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A segment's in-memory state.
#[derive(Debug)]
pub(crate) struct Segment {
    /// Offset of the first batch (also the file name).
    pub base_offset: i64,
    /// Path of the `.log` file.
    pub path: PathBuf,
    /// The open file; `None` until the flusher has created it (a fresh active segment).
    pub file: Option<Rc<DirectFile>>,
    /// Bytes of valid batches.
    pub size: u64,
    /// Bytes of valid batches that have reached the file.
    pub written_size: u64,
    /// Offset the next batch in this segment would get.
    pub next_offset: i64,
    /// Largest batch max-timestamp, -1 when empty.
    pub max_timestamp: i64,
    /// Base offset of the batch that carries `max_timestamp`.
    pub max_timestamp_offset: i64,
    /// Sparse offset → position index.
    pub offset_index: OffsetIndex,
    /// Sparse timestamp → offset index.
    pub time_index: TimeIndex,
    /// Bytes appended since the last index entry.
    pub bytes_since_index: usize,
    /// Wall-clock time of the first append (for `segment.ms`).
    pub created_ms: i64,
    /// The file has reached its final length and will not be written again.
    pub sealed: bool,
    /// Bytes preallocated in the file.
    pub allocated_bytes: u64,
    /// Blocks below this byte hold data or zeros already written (not unwritten extents):
    /// appends there are overwrites. See `storage/log/prepare.rs`.
    pub prepared_bytes: u64,
}

impl Segment {
    /// An empty segment whose file does not exist yet.
    pub fn new(dir: &Path, base_offset: i64, now_ms: i64) -> Self {
        Self {
            base_offset,
            path: dir.join(log_file_name(base_offset)),
            file: None,
            size: 0,
            written_size: 0,
            next_offset: base_offset,
            max_timestamp: -1,
            max_timestamp_offset: base_offset,
            offset_index: OffsetIndex::default(),
            time_index: TimeIndex::default(),
            bytes_since_index: 0,
            created_ms: now_ms,
            sealed: false,
            allocated_bytes: 0,
            prepared_bytes: 0,
        }
    }

    /// True when no batch has been appended.
    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// The offset one past the segment's last offset, relative to its base, as an index key.
    pub fn relative(&self, offset: i64) -> u32 {
        u32::try_from(offset - self.base_offset).expect("segment offsets span at most u32::MAX")
    }

    /// Records a batch that was just placed at byte `position` (indexes and timestamps).
    pub fn note_batch(&mut self, header: &BatchHeader, position: u64, index_interval_bytes: usize) {
        let relative = self.relative(header.base_offset);
        let position32 = u32::try_from(position).expect("segment positions fit in u32");
        if self.offset_index.is_empty() || self.bytes_since_index >= index_interval_bytes {
            self.offset_index.push(relative, position32);
            self.bytes_since_index = 0;
            if header.max_timestamp > self.max_timestamp {
                self.time_index.maybe_push(header.max_timestamp, relative);
            }
        }
        self.bytes_since_index += header.total_bytes();
        if header.max_timestamp > self.max_timestamp {
            self.max_timestamp = header.max_timestamp;
            self.max_timestamp_offset = header.base_offset;
        }
        self.size = position + header.total_bytes() as u64;
        self.next_offset = header.last_offset() + 1;
    }

    /// Makes sure the time index ends with the segment's maximum, so that a reopened sealed
    /// segment learns its max timestamp from the index alone.
    pub fn complete_time_index(&mut self) {
        if self.max_timestamp >= 0 {
            let relative = self.relative(self.max_timestamp_offset);
            self.time_index.maybe_push(self.max_timestamp, relative);
        }
    }

    /// Where to start scanning for `offset`: a batch boundary at or before it, and the base
    /// offset of the batch found there.
    pub fn scan_start(&self, offset: i64) -> (u64, i64) {
        if offset <= self.base_offset {
            return (0, self.base_offset);
        }
        let relative = u32::try_from(offset - self.base_offset).unwrap_or(u32::MAX);
        self.offset_index
            .lookup(relative)
            .map_or((0, self.base_offset), |e| (u64::from(e.position), self.base_offset + i64::from(e.relative_offset)))
    }
}

/// Where a scan stopped.
#[derive(Debug, Default)]
pub(crate) struct ScanEnd {
    /// One past the last good batch.
    pub position: u64,
    /// Why the scan stopped before `end`, if it did.
    pub stopped: Option<ScanStop>,
}

/// Why a scan stopped early.
#[derive(Debug)]
pub(crate) enum ScanStop {
    /// The bytes are not a valid batch.
    Batch(BatchError),
    /// The visitor refused the batch (for instance, offsets that do not continue).
    Refused(String),
}

impl ScanStop {
    /// True when the data simply ended in zero fill (preallocated or zeroed space).
    pub fn is_zero_fill(&self) -> bool {
        matches!(self, Self::Batch(BatchError::BadLength(0)))
    }
}

impl std::fmt::Display for ScanStop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Batch(err) => err.fmt(f),
            Self::Refused(reason) => f.write_str(reason),
        }
    }
}

/// Walks the batches of `file` from `start` (a batch boundary) up to byte `end`, calling `visit`
/// with each header and its position. With `verify_crc` each batch's CRC and counts are checked
/// (recovery); otherwise only its framing. Stops at the first batch that fails or that `visit`
/// refuses.
pub(crate) async fn scan_file(
    file: &DirectFile,
    start: u64,
    end: u64,
    verify_crc: bool,
    mut visit: impl FnMut(&BatchHeader, u64) -> Result<(), String>,
) -> io::Result<ScanEnd> {
    let mut position = start;
    let mut window_bytes = SCAN_WINDOW_BYTES;
    while position < end {
        let window_start = round_down_to_page(position);
        let expected = ((end - window_start) as usize).min(window_bytes);
        let (result, buf) = file.read_at(AlignedBuf::with_capacity(round_up_to_page(expected)), window_start).await;
        let got = result?;
        let data = &buf.as_slice()[..got.min(expected)];
        let mut rel = (position - window_start) as usize;
        let mut reread = false;
        while rel < data.len() {
            let outcome = batch::check_frame(&data[rel..]).and_then(|header| {
                if verify_crc { batch::validate_stored(&data[rel..rel + header.total_bytes()]) } else { Ok(header) }
            });
            match outcome {
                Ok(header) => {
                    if let Err(reason) = visit(&header, position) {
                        return Ok(ScanEnd { position, stopped: Some(ScanStop::Refused(reason)) });
                    }
                    position += header.total_bytes() as u64;
                    rel += header.total_bytes();
                }
                Err(BatchError::Truncated { needed, .. })
                    if got == expected && position + needed as u64 <= end && data.len() < needed + rel =>
                {
                    // The batch runs past this window but fits in the file: read it whole.
                    window_bytes = window_bytes.max(needed + PAGE_BYTES);
                    reread = true;
                    break;
                }
                Err(err) => {
                    return Ok(ScanEnd { position, stopped: Some(ScanStop::Batch(err)) });
                }
            }
        }
        if !reread && got < expected {
            return Ok(ScanEnd {
                position,
                stopped: Some(ScanStop::Batch(BatchError::Truncated { needed: BATCH_HEADER_BYTES, available: 0 })),
            });
        }
    }
    Ok(ScanEnd { position, stopped: None })
}

/// How a log's batches follow each other. A base offset lies outside the batch CRC, so the
/// order of the offsets is what catches damage to one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Offsets {
    /// Each batch begins right after the one before: any other base offset is damage.
    Consecutive,
    /// Offsets may be skipped (compaction removed batches, or a follower copied a compacted
    /// leader's log): only a base offset below the expected one is damage.
    MayGap,
}

impl Offsets {
    /// Whether a batch (or segment) with base offset `base` may follow where `expected` was due.
    pub(crate) fn continues(self, expected: i64, base: i64) -> bool {
        match self {
            Self::Consecutive => base == expected,
            Self::MayGap => base >= expected,
        }
    }
}

/// Reads whole batches from `file` starting at the batch boundary `position`, skipping batches
/// that end before `offset`, and stopping at `end` bytes, at `upper_bound` (exclusive base
/// offset), or once `max_bytes` are gathered (the first batch is returned whole even if larger).
/// A batch whose base offset does not follow by `offsets` ends the read like a failed CRC.
/// The returned `Bytes` are slices of one aligned read buffer: no copy. A batch that fails its
/// CRC is never returned: the read stops before it, or fails if it is the first.
pub(crate) async fn read_batches(
    file: &DirectFile,
    (position, first_base_offset): (u64, i64),
    end: u64,
    offset: i64,
    max_bytes: usize,
    upper_bound: i64,
    offsets: Offsets,
) -> Result<Vec<Bytes>, ReadFailure> {
    let mut position = position;
    let mut expected_base = first_base_offset;
    let mut wanted_bytes = max_bytes + PAGE_BYTES;
    while position < end {
        let window_start = round_down_to_page(position);
        let lead = (position - window_start) as usize;
        let expected = ((end - window_start) as usize).min(lead + wanted_bytes);
        let read_len = round_up_to_page(expected);
        let (result, buf) = file.read_at(AlignedBuf::with_capacity(read_len), window_start).await;
        let got = result.map_err(ReadFailure::Io)?;
        if got < expected {
            return Err(ReadFailure::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("segment read {got} bytes at {window_start}, expected {expected}"),
            )));
        }
        let bytes = buf.freeze();
        let data_end = expected;
        let mut rel = lead;
        let mut out = Vec::new();
        let mut total = 0usize;
        let mut reread_from = None;
        while rel < data_end {
            let header = match batch::check_frame(&bytes[rel..data_end]) {
                Ok(header) => header,
                Err(BatchError::Truncated { needed, .. }) if window_start + (data_end as u64) < end => {
                    if !out.is_empty() {
                        return Ok(out);
                    }
                    reread_from = Some((window_start + rel as u64, needed, expected_base));
                    break;
                }
                // Damage: serve what came before it; fail only if nothing did.
                Err(_) if !out.is_empty() => return Ok(out),
                Err(error) => {
                    return Err(ReadFailure::Corrupt { position: window_start + rel as u64, error });
                }
            };
            let size = header.total_bytes();
            if !offsets.continues(expected_base, header.base_offset) {
                if !out.is_empty() {
                    return Ok(out);
                }
                return Err(ReadFailure::Corrupt {
                    position: window_start + rel as u64,
                    error: BatchError::OffsetGap { expected: expected_base, found: header.base_offset },
                });
            }
            if header.base_offset >= upper_bound {
                return Ok(out);
            }
            if header.last_offset() >= offset {
                if !out.is_empty() && total + size > max_bytes {
                    return Ok(out);
                }
                // Served batches are checked again (CRC-32C) on their way out of the disk.
                if let Err(error) = batch::validate_stored(&bytes[rel..rel + size]) {
                    if !out.is_empty() {
                        return Ok(out);
                    }
                    return Err(ReadFailure::Corrupt { position: window_start + rel as u64, error });
                }
                out.push(bytes.slice(rel..rel + size));
                total += size;
                if total >= max_bytes {
                    return Ok(out);
                }
            }
            expected_base = header.last_offset() + 1;
            rel += size;
        }
        match reread_from {
            Some((batch_position, needed, base)) => {
                position = batch_position;
                expected_base = base;
                wanted_bytes = wanted_bytes.max(needed);
            }
            None => return Ok(out),
        }
    }
    Ok(Vec::new())
}

/// Why a disk read failed.
#[derive(Debug)]
pub(crate) enum ReadFailure {
    /// The read itself failed.
    Io(io::Error),
    /// The bytes at `position` are not a batch.
    Corrupt {
        /// Byte position in the segment.
        position: u64,
        /// What was wrong.
        error: BatchError,
    },
}

impl ReadFailure {
    /// The storage error for a failed read of `path`.
    pub(crate) fn into_storage_error(self, path: &Path) -> crate::storage::StorageError {
        use crate::storage::StorageError;
        match self {
            Self::Io(err) => StorageError::io(path, &err),
            Self::Corrupt { position, error } => {
                StorageError::Corrupt { path: path.to_owned(), position, reason: error.to_string() }
            }
        }
    }
}
