//! Reads: whole batches from the read cache or from disk, and lookups by timestamp.

use super::*;
use crate::model::batch;
use crate::storage::StorageError;
use crate::storage::segment;

impl Log {
    /// Reads whole batches starting with the one holding `offset`, stopping before batches
    /// whose base offset reaches `upper_bound` (and before data that is not yet stable), with
    /// at most `max_bytes` (but always one whole batch when there is one and `max_bytes > 0`).
    pub async fn read(&self, offset: i64, max_bytes: usize, upper_bound: i64) -> Result<ReadResult, StorageError> {
        let inner = &*self.inner;
        let mut offset = offset;
        loop {
            let (file, position, end, segment_next, upper, mut result, offsets) = {
                let state = inner.state.borrow();
                let mut result = ReadResult {
                    batches: Vec::new(),
                    log_start_offset: state.log_start_offset,
                    log_end_offset: state.next_offset,
                };
                if offset < state.log_start_offset || offset > state.next_offset {
                    return Err(StorageError::OffsetOutOfRange {
                        offset,
                        log_start_offset: state.log_start_offset,
                        log_end_offset: state.next_offset,
                    });
                }
                let upper = upper_bound;
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
                (file, segment.scan_start(offset), segment.written_size, next, upper, result, state.offsets)
            };
            let batches = segment::read_batches(&file, position, end, offset, max_bytes, upper, offsets)
                .await
                .map_err(|failure| failure.into_storage_error(file.path()))?;
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
                    crate::model::records::decode_records(bytes.clone()).map_err(|e| StorageError::Corrupt {
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
}
