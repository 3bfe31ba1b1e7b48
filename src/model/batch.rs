//! Kafka v2 record batches, handled as bytes: the 61-byte header is parsed and checked, the
//! base offset and leader epoch are stamped in place, and the records themselves are never
//! decoded on the produce or fetch path.
//!
//! Layout (big-endian): baseOffset i64 | batchLength i32 | partitionLeaderEpoch i32 | magic i8 |
//! crc u32 | attributes i16 | lastOffsetDelta i32 | baseTimestamp i64 | maxTimestamp i64 |
//! producerId i64 | producerEpoch i16 | baseSequence i32 | recordsCount i32 | records...
//! The CRC-32C covers everything from `attributes` to the end of the batch, so the base offset
//! and the leader epoch can be stamped without recomputing it.

use zerocopy::byteorder::big_endian::{I16, I32, I64, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Bytes in a v2 batch header, records excluded.
pub const BATCH_HEADER_BYTES: usize = 61;
/// Bytes before the part counted by `batchLength` (baseOffset and batchLength themselves).
pub const LOG_OVERHEAD_BYTES: usize = 12;
/// Offset of the first byte covered by the CRC.
const CRC_START: usize = 21;
/// The only record format this broker stores.
pub const MAGIC_V2: i8 = 2;

pub(crate) const ATTR_COMPRESSION_MASK: i16 = 0x07;
const ATTR_LOG_APPEND_TIME: i16 = 0x08;
/// Attribute bit of a batch written inside a transaction.
pub const ATTR_TRANSACTIONAL: i16 = 0x10;
/// Attribute bit of a control batch (transaction markers).
pub const ATTR_CONTROL: i16 = 0x20;

/// The header as it lies on the wire and on disk.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct RawHeader {
    base_offset: I64,
    batch_length: I32,
    partition_leader_epoch: I32,
    magic: i8,
    crc: U32,
    attributes: I16,
    last_offset_delta: I32,
    base_timestamp: I64,
    max_timestamp: I64,
    producer_id: I64,
    producer_epoch: I16,
    base_sequence: I32,
    records_count: I32,
}

const _: () = assert!(std::mem::size_of::<RawHeader>() == BATCH_HEADER_BYTES);

/// Why a batch was refused. The protocol edge maps these to Kafka error codes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// Fewer bytes than the header or the declared length needs.
    #[error("record batch truncated: needs {needed} bytes, {available} present")]
    Truncated {
        /// Bytes the batch claims or needs.
        needed: usize,
        /// Bytes actually present.
        available: usize,
    },
    /// `batchLength` smaller than a header.
    #[error("record batch length {0} is invalid")]
    BadLength(i32),
    /// Magic other than 2.
    #[error("record batch magic {0} is not supported (only v2)")]
    UnsupportedMagic(i8),
    /// The stored CRC does not match the bytes.
    #[error("record batch CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch {
        /// CRC carried by the batch.
        stored: u32,
        /// CRC of the bytes.
        computed: u32,
    },
    /// `recordsCount` disagrees with `lastOffsetDelta + 1`, or is not positive.
    #[error("record batch holds {count} records but its offset range spans {span}")]
    CountMismatch {
        /// recordsCount.
        count: i32,
        /// lastOffsetDelta + 1.
        span: i64,
    },
    /// Larger than the topic's `max.message.bytes`.
    #[error("record batch of {size} bytes exceeds max.message.bytes {max}")]
    TooLarge {
        /// Size of the batch in bytes.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A stored batch's base offset does not continue the one before it.
    #[error("record batch base offset {found} where {expected} was expected")]
    OffsetGap {
        /// The offset that should have come next.
        expected: i64,
        /// The base offset found.
        found: i64,
    },
    /// A produce request carried no batch at all.
    #[error("no record batch in request")]
    Empty,
    /// The records inside do not read back: an unknown codec, a payload that does not
    /// decompress, or broken record framing.
    #[error("corrupt records: {0}")]
    Corrupt(String),
    /// The records read back but break a rule (offset deltas, keys on a compacted topic, a
    /// control batch from a producer).
    #[error("invalid records: {0}")]
    InvalidRecord(String),
    /// A record's timestamp lies outside what the topic accepts
    /// (`message.timestamp.before.max.ms` / `after.max.ms`).
    #[error("invalid timestamp: {0}")]
    InvalidTimestamp(String),
}

/// The fields of a v2 batch header, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record.
    pub base_offset: i64,
    /// Bytes after the `batchLength` field.
    pub batch_length: i32,
    /// Leader epoch stamped when the batch was appended.
    pub partition_leader_epoch: i32,
    /// Record format (2).
    pub magic: i8,
    /// CRC-32C of attributes..end.
    pub crc: u32,
    /// Compression, timestamp type, transactional and control bits.
    pub attributes: i16,
    /// Offset of the last record relative to the base offset.
    pub last_offset_delta: i32,
    /// Timestamp of the first record.
    pub base_timestamp: i64,
    /// Largest timestamp in the batch.
    pub max_timestamp: i64,
    /// Idempotent/transactional producer id, or -1.
    pub producer_id: i64,
    /// Producer epoch, or -1.
    pub producer_epoch: i16,
    /// Sequence of the first record, or -1.
    pub base_sequence: i32,
    /// Number of records.
    pub records_count: i32,
}

impl BatchHeader {
    /// Decodes the header at the start of `bytes` without checking the CRC.
    pub fn parse(bytes: &[u8]) -> Result<Self, BatchError> {
        let Ok((raw, _)) = RawHeader::ref_from_prefix(bytes) else {
            return Err(BatchError::Truncated { needed: BATCH_HEADER_BYTES, available: bytes.len() });
        };
        Ok(Self {
            base_offset: raw.base_offset.get(),
            batch_length: raw.batch_length.get(),
            partition_leader_epoch: raw.partition_leader_epoch.get(),
            magic: raw.magic,
            crc: raw.crc.get(),
            attributes: raw.attributes.get(),
            last_offset_delta: raw.last_offset_delta.get(),
            base_timestamp: raw.base_timestamp.get(),
            max_timestamp: raw.max_timestamp.get(),
            producer_id: raw.producer_id.get(),
            producer_epoch: raw.producer_epoch.get(),
            base_sequence: raw.base_sequence.get(),
            records_count: raw.records_count.get(),
        })
    }

    /// Bytes the whole batch occupies (header included).
    pub fn total_bytes(&self) -> usize {
        LOG_OVERHEAD_BYTES + self.batch_length.max(0) as usize
    }

    /// Offset of the last record.
    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    /// Number of offsets the batch occupies.
    pub fn offset_count(&self) -> i64 {
        i64::from(self.last_offset_delta) + 1
    }

    /// Compression codec id (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd).
    pub fn compression(&self) -> i16 {
        self.attributes & ATTR_COMPRESSION_MASK
    }

    /// True when the timestamps are the broker's append time.
    pub fn is_log_append_time(&self) -> bool {
        self.attributes & ATTR_LOG_APPEND_TIME != 0
    }

    /// True for a transactional batch.
    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTR_TRANSACTIONAL != 0
    }

    /// True for a control batch (transaction markers).
    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }
}

/// CRC-32C of a whole batch's covered range.
fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[CRC_START..])
}

/// Checks the framing of the batch at the start of `bytes` (header present, length sane, whole
/// batch present, magic 2) and returns its header. Does not check the CRC.
pub fn check_frame(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::parse(bytes)?;
    if (header.batch_length as i64) < (BATCH_HEADER_BYTES - LOG_OVERHEAD_BYTES) as i64 {
        return Err(BatchError::BadLength(header.batch_length));
    }
    if header.magic != MAGIC_V2 {
        return Err(BatchError::UnsupportedMagic(header.magic));
    }
    let total = header.total_bytes();
    if bytes.len() < total {
        return Err(BatchError::Truncated { needed: total, available: bytes.len() });
    }
    Ok(header)
}

/// Fully checks the batch at the start of `bytes`: framing, CRC, and that the record count
/// matches the offset range (a produced batch). Returns the header; the batch is
/// `header.total_bytes()` long.
pub fn validate(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
    validate_with(bytes, false)
}

/// Like [`validate`], for a batch already in a log: compaction may have removed some of its
/// records, so it may hold fewer records than its offset range spans (never more), or none (an
/// idempotent producer's last batch, kept for its sequence numbers).
pub fn validate_stored(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
    validate_with(bytes, true)
}

fn validate_with(bytes: &[u8], compacted: bool) -> Result<BatchHeader, BatchError> {
    let header = check_frame(bytes)?;
    let computed = compute_crc(&bytes[..header.total_bytes()]);
    if computed != header.crc {
        return Err(BatchError::CrcMismatch { stored: header.crc, computed });
    }
    let span = header.offset_count();
    let count = i64::from(header.records_count);
    let count_fits = if compacted { count <= span } else { count == span };
    let count_valid = header.records_count > 0 || (compacted && header.records_count == 0);
    if !count_valid || header.last_offset_delta < 0 || !count_fits {
        return Err(BatchError::CountMismatch { count: header.records_count, span });
    }
    Ok(header)
}

/// A batch found in a buffer: its header and where it lies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchSpan {
    /// The decoded header.
    pub header: BatchHeader,
    /// Byte offset of the batch within the scanned buffer.
    pub start: usize,
}

impl BatchSpan {
    /// One past the last byte of the batch within the scanned buffer.
    pub fn end(&self) -> usize {
        self.start + self.header.total_bytes()
    }
}

/// Validates a produce payload: one or more whole batches back to back, each no larger than
/// `max_batch_bytes`. Nothing partial is accepted.
pub fn validate_all(bytes: &[u8], max_batch_bytes: usize) -> Result<Vec<BatchSpan>, BatchError> {
    validate_all_with(bytes, max_batch_bytes, validate)
}

/// [`validate_all`] for batches copied from a leader's log (compacted ones included, see
/// [`validate_stored`]).
pub fn validate_all_stored(bytes: &[u8], max_batch_bytes: usize) -> Result<Vec<BatchSpan>, BatchError> {
    validate_all_with(bytes, max_batch_bytes, validate_stored)
}

fn validate_all_with(
    bytes: &[u8],
    max_batch_bytes: usize,
    validate: fn(&[u8]) -> Result<BatchHeader, BatchError>,
) -> Result<Vec<BatchSpan>, BatchError> {
    if bytes.is_empty() {
        return Err(BatchError::Empty);
    }
    let mut spans = Vec::with_capacity(1);
    let mut start = 0;
    while start < bytes.len() {
        let header = validate(&bytes[start..])?;
        let size = header.total_bytes();
        if size > max_batch_bytes {
            return Err(BatchError::TooLarge { size, max: max_batch_bytes });
        }
        spans.push(BatchSpan { header, start });
        start += size;
    }
    Ok(spans)
}

/// Writes the base offset and partition leader epoch into a batch (outside the CRC range).
pub fn stamp(batch: &mut [u8], base_offset: i64, partition_leader_epoch: i32) {
    let (raw, _) = RawHeader::mut_from_prefix(batch).expect("stamp needs a whole header");
    raw.base_offset = I64::new(base_offset);
    raw.partition_leader_epoch = I32::new(partition_leader_epoch);
}

/// Marks a batch as carrying log-append time `timestamp_ms` (topic config
/// `message.timestamp.type = LogAppendTime`) and recomputes its CRC.
pub fn set_log_append_time(batch: &mut [u8], timestamp_ms: i64) {
    {
        let (raw, _) = RawHeader::mut_from_prefix(batch).expect("header");
        raw.attributes = I16::new(raw.attributes.get() | ATTR_LOG_APPEND_TIME);
        raw.max_timestamp = I64::new(timestamp_ms);
    }
    let total = BatchHeader::parse(batch).expect("header").total_bytes();
    let crc = compute_crc(&batch[..total]);
    let (raw, _) = RawHeader::mut_from_prefix(batch).expect("header");
    raw.crc = U32::new(crc);
}

/// Walks batches stored back to back (a segment, or a read buffer) from the start of `bytes`,
/// stopping at the first torn, corrupt or zero-filled one. Each batch found is fully validated
/// (CRC included). Returns the spans and, when the walk stopped early, why.
pub fn scan(bytes: &[u8]) -> (Vec<BatchSpan>, Option<BatchError>) {
    let mut spans = Vec::new();
    let mut start = 0;
    while start < bytes.len() {
        match validate_stored(&bytes[start..]) {
            Ok(header) => {
                spans.push(BatchSpan { header, start });
                start += header.total_bytes();
            }
            Err(err) => return (spans, Some(err)),
        }
    }
    (spans, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::records::{EncodeOptions, KeyValue, encode_batch};
    use bytes::Bytes;
    use proptest::prelude::*;

    fn sample(records: usize, value_bytes: usize) -> Vec<u8> {
        let values: Vec<KeyValue> = (0..records)
            .map(|i| (Some(Bytes::from(format!("k{i}"))), Some(Bytes::from(vec![b'v'; value_bytes]))))
            .collect();
        encode_batch(&values, &EncodeOptions::default()).to_vec()
    }

    #[test]
    fn parses_a_client_encoded_batch() {
        let batch = sample(3, 10);
        let header = validate(&batch).expect("valid");
        assert_eq!(header.magic, 2);
        assert_eq!(header.records_count, 3);
        assert_eq!(header.last_offset_delta, 2);
        assert_eq!(header.total_bytes(), batch.len());
    }

    #[test]
    fn stamping_keeps_the_crc_valid() {
        let mut batch = sample(5, 100);
        stamp(&mut batch, 1_000_000, 7);
        let header = validate(&batch).expect("still valid");
        assert_eq!(header.base_offset, 1_000_000);
        assert_eq!(header.partition_leader_epoch, 7);
        assert_eq!(header.last_offset(), 1_000_004);
    }

    #[test]
    fn log_append_time_rewrites_crc() {
        let mut batch = sample(2, 10);
        set_log_append_time(&mut batch, 42);
        let header = validate(&batch).expect("valid after rewrite");
        assert!(header.is_log_append_time());
        assert_eq!(header.max_timestamp, 42);
    }

    #[test]
    fn rejects_bad_magic_length_count_and_truncation() {
        let good = sample(2, 10);
        let mut bad_magic = good.clone();
        bad_magic[16] = 1;
        assert_eq!(validate(&bad_magic), Err(BatchError::UnsupportedMagic(1)));

        let mut bad_len = good.clone();
        bad_len[8..12].copy_from_slice(&10i32.to_be_bytes());
        assert_eq!(validate(&bad_len), Err(BatchError::BadLength(10)));

        assert!(matches!(validate(&good[..good.len() - 1]), Err(BatchError::Truncated { .. })));
        assert!(matches!(validate(&good[..30]), Err(BatchError::Truncated { .. })));

        // Change the record count and fix up the CRC: the count check must still refuse it.
        let mut bad_count = good.clone();
        bad_count[57..61].copy_from_slice(&5i32.to_be_bytes());
        let crc = crc32c::crc32c(&bad_count[21..]);
        bad_count[17..21].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(validate(&bad_count), Err(BatchError::CountMismatch { count: 5, .. })));
    }

    #[test]
    fn validate_all_enforces_max_batch_bytes_and_empty() {
        let batch = sample(1, 1000);
        assert!(matches!(validate_all(&batch, 100), Err(BatchError::TooLarge { .. })));
        assert_eq!(validate_all(&[], 100), Err(BatchError::Empty));
        let mut two = batch.clone();
        two.extend_from_slice(&batch);
        let spans = validate_all(&two, 1 << 20).expect("two batches");
        assert_eq!(spans.len(), 2);
        assert_eq!(spans[1].start, batch.len());
    }

    #[test]
    fn scan_stops_at_zero_fill() {
        let batch = sample(3, 10);
        let mut buffer = batch.clone();
        buffer.extend_from_slice(&batch);
        buffer.extend_from_slice(&[0u8; 4096]);
        let (spans, stop) = scan(&buffer);
        assert_eq!(spans.len(), 2);
        assert!(stop.is_some());
    }

    proptest! {
        #[test]
        fn any_single_byte_flip_in_the_crc_range_is_caught(
            records in 1usize..20,
            value_bytes in 0usize..300,
            position_seed in any::<usize>(),
            flip in 1u8..=255,
        ) {
            let mut batch = sample(records, value_bytes);
            let position = CRC_START + position_seed % (batch.len() - CRC_START);
            batch[position] ^= flip;
            prop_assert!(validate(&batch).is_err());
        }

        #[test]
        fn batches_of_any_shape_validate_and_stamp(
            records in 1usize..50,
            value_bytes in 0usize..2000,
            base in 0i64..i64::MAX / 2,
            compression in 0usize..5,
        ) {
            let values: Vec<KeyValue> = (0..records)
                .map(|i| (None, Some(Bytes::from(vec![(i % 251) as u8; value_bytes]))))
                .collect();
            let options = EncodeOptions { compression: compression as i16, ..EncodeOptions::default() };
            let mut batch = encode_batch(&values, &options).to_vec();
            stamp(&mut batch, base, 3);
            let header = validate(&batch).unwrap();
            prop_assert_eq!(header.base_offset, base);
            prop_assert_eq!(header.records_count as usize, records);
            prop_assert_eq!(header.compression(), compression as i16);
        }
    }
}
