//! The record codec: building and reading the records inside v2 batches. The broker's data path
//! never decodes records (it moves whole batches); this is for the tools, the group coordinator's
//! own records, and the rare broker paths that must look inside a batch (ListOffsets by time).

use bytes::{Bytes, BytesMut};

use super::batch::BatchHeader;
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// A record to encode: key and value, either of which may be null.
pub type KeyValue = (Option<Bytes>, Option<Bytes>);

/// How to build a batch.
#[derive(Clone, Debug, Default)]
pub struct EncodeOptions {
    /// Kafka compression codec id: 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd.
    pub compression: i16,
    /// Creation timestamp given to every record; `None` means "now".
    pub timestamp_ms: Option<i64>,
}

/// A record read back from a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumedRecord {
    /// The record's offset in its partition.
    pub offset: i64,
    /// Creation or log-append timestamp.
    pub timestamp_ms: i64,
    /// Key bytes, if any.
    pub key: Option<Bytes>,
    /// Value bytes, if any.
    pub value: Option<Bytes>,
    /// Headers in order.
    pub headers: Vec<(String, Option<Bytes>)>,
}

/// Maps a codec name (`none`, `gzip`, `snappy`, `lz4`, `zstd`) to its id.
pub fn compression_id(name: &str) -> Option<i16> {
    match name {
        "none" => Some(0),
        "gzip" => Some(1),
        "snappy" => Some(2),
        "lz4" => Some(3),
        "zstd" => Some(4),
        _ => None,
    }
}

fn compression_of(id: i16) -> Compression {
    match id {
        1 => Compression::Gzip,
        2 => Compression::Snappy,
        3 => Compression::Lz4,
        4 => Compression::Zstd,
        _ => Compression::None,
    }
}

/// Encodes `(key, value)` pairs as one v2 batch with base offset 0.
pub fn encode_batch(records: &[KeyValue], options: &EncodeOptions) -> BytesMut {
    encode_batch_with_headers(records.iter().map(|(k, v)| (k.clone(), v.clone(), Vec::new())), options)
}

/// Encodes records with headers as one v2 batch with base offset 0.
pub fn encode_batch_with_headers(
    records: impl IntoIterator<Item = (Option<Bytes>, Option<Bytes>, Vec<(String, Option<Bytes>)>)>,
    options: &EncodeOptions,
) -> BytesMut {
    let timestamp = options.timestamp_ms.unwrap_or_else(now_ms);
    let records: Vec<Record> = records
        .into_iter()
        .enumerate()
        .map(|(i, (key, value, headers))| Record {
            transactional: false,
            control: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // The encoder groups records into one batch while `offset - sequence` stays constant;
            // starting at -1 keeps the batch's base sequence at -1 (no idempotence).
            sequence: i as i32 - 1,
            timestamp,
            key,
            value,
            headers: headers.into_iter().map(|(k, v)| (StrBytes::from_string(k), v)).collect::<IndexMap<_, _>>(),
            delete_horizon: false,
        })
        .collect();
    let mut buf = BytesMut::new();
    let encode_options = RecordEncodeOptions { version: 2, compression: compression_of(options.compression) };
    RecordBatchEncoder::encode(&mut buf, records.iter(), &encode_options)
        .expect("encoding records into memory cannot fail");
    buf
}

/// Rewrites one produced v2 batch with the same records compressed with Kafka codec `codec`
/// (0: none), as a topic's `compression.type` asks when it names another codec than the
/// producer's. Producer id, epoch and sequences, offset deltas, timestamps, keys, values and
/// headers are kept; each codec's default level is used.
pub fn recompress(batch: &[u8], codec: i16) -> anyhow::Result<BytesMut> {
    let mut input = Bytes::copy_from_slice(batch);
    let set = RecordBatchDecoder::decode(&mut input)?;
    anyhow::ensure!(input.is_empty(), "one batch expected, {} bytes more", input.len());
    let mut out = BytesMut::with_capacity(batch.len());
    let options = RecordEncodeOptions { version: 2, compression: compression_of(codec) };
    RecordBatchEncoder::encode(&mut out, set.records.iter(), &options)?;
    Ok(out)
}

/// Decodes every record of the batches in `bytes` (decompressing as needed). Control batches
/// (transaction markers) are skipped.
pub fn decode_records(bytes: Bytes) -> anyhow::Result<Vec<ConsumedRecord>> {
    let mut buf = bytes;
    let mut out = Vec::new();
    while !buf.is_empty() {
        let set = RecordBatchDecoder::decode(&mut buf)?;
        for record in set.records {
            if record.control {
                continue;
            }
            out.push(ConsumedRecord {
                offset: record.offset,
                timestamp_ms: record.timestamp,
                key: record.key,
                value: record.value,
                headers: record.headers.into_iter().map(|(k, v)| (k.as_str().to_owned(), v)).collect(),
            });
        }
    }
    Ok(out)
}

fn zigzag32(n: i32) -> u32 {
    ((n << 1) ^ (n >> 31)) as u32
}

fn zigzag64(n: i64) -> u64 {
    ((n << 1) ^ (n >> 63)) as u64
}

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

fn put_varint(buf: &mut BytesMut, mut v: u64) {
    use bytes::BufMut;
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

/// Header fields of a batch built by [`BatchBuilder`] beyond its records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchFields {
    /// Attribute bits (compression must stay 0: the builder writes records uncompressed).
    pub attributes: i16,
    /// Producer id, -1 for none.
    pub producer_id: i64,
    /// Producer epoch, -1 for none.
    pub producer_epoch: i16,
    /// Sequence of the first record, -1 for none.
    pub base_sequence: i32,
}

impl Default for BatchFields {
    fn default() -> Self {
        Self { attributes: 0, producer_id: -1, producer_epoch: -1, base_sequence: -1 }
    }
}

/// A fast builder of uncompressed v2 batches for the load tools: records are written straight
/// into the batch buffer, with no per-record allocation.
pub struct BatchBuilder {
    buf: BytesMut,
    count: i32,
    base_timestamp: i64,
    max_timestamp: i64,
}

impl BatchBuilder {
    /// An empty batch whose records' timestamps are relative to `base_timestamp`.
    pub fn new(capacity: usize, base_timestamp: i64) -> Self {
        let mut buf = BytesMut::with_capacity(capacity + 61);
        buf.resize(61, 0);
        Self { buf, count: 0, base_timestamp, max_timestamp: base_timestamp }
    }

    /// Appends a record.
    pub fn push(&mut self, key: Option<&[u8]>, value: &[u8], timestamp: i64) {
        let ts_delta = zigzag64(timestamp - self.base_timestamp);
        let offset_delta = u64::from(zigzag32(self.count));
        let key_len = key.map_or(u64::from(zigzag32(-1)), |k| u64::from(zigzag32(k.len() as i32)));
        let value_len = u64::from(zigzag32(value.len() as i32));
        let body = 1
            + varint_len(ts_delta)
            + varint_len(offset_delta)
            + varint_len(key_len)
            + key.map_or(0, <[u8]>::len)
            + varint_len(value_len)
            + value.len()
            + 1;
        put_varint(&mut self.buf, u64::from(zigzag32(body as i32)));
        self.buf.extend_from_slice(&[0]); // attributes
        put_varint(&mut self.buf, ts_delta);
        put_varint(&mut self.buf, offset_delta);
        put_varint(&mut self.buf, key_len);
        if let Some(k) = key {
            self.buf.extend_from_slice(k);
        }
        put_varint(&mut self.buf, value_len);
        self.buf.extend_from_slice(value);
        self.buf.extend_from_slice(&[0]); // no headers
        self.count += 1;
        self.max_timestamp = self.max_timestamp.max(timestamp);
    }

    /// Records so far.
    pub fn count(&self) -> i32 {
        self.count
    }

    /// Bytes so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// True when no record was pushed.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The finished batch (base offset 0, no producer id).
    pub fn finish(self) -> Bytes {
        self.finish_with(&BatchFields::default())
    }

    /// The finished batch with the given header fields (base offset 0).
    pub fn finish_with(mut self, fields: &BatchFields) -> Bytes {
        let total = self.buf.len();
        let header = &mut self.buf[..61];
        header[0..8].copy_from_slice(&0i64.to_be_bytes());
        header[8..12].copy_from_slice(&((total - 12) as i32).to_be_bytes());
        header[12..16].copy_from_slice(&(-1i32).to_be_bytes());
        header[16] = 2;
        header[21..23].copy_from_slice(&fields.attributes.to_be_bytes());
        header[23..27].copy_from_slice(&(self.count - 1).to_be_bytes());
        header[27..35].copy_from_slice(&self.base_timestamp.to_be_bytes());
        header[35..43].copy_from_slice(&self.max_timestamp.to_be_bytes());
        header[43..51].copy_from_slice(&fields.producer_id.to_be_bytes());
        header[51..53].copy_from_slice(&fields.producer_epoch.to_be_bytes());
        header[53..57].copy_from_slice(&fields.base_sequence.to_be_bytes());
        header[57..61].copy_from_slice(&self.count.to_be_bytes());
        let crc = crc32c::crc32c(&self.buf[21..]);
        self.buf[17..21].copy_from_slice(&crc.to_be_bytes());
        self.buf.freeze()
    }
}

/// A record seen by [`for_each_record`]: borrowed from the batch.
pub struct RecordRef<'a> {
    /// Offset.
    pub offset: i64,
    /// Timestamp.
    pub timestamp_ms: i64,
    /// Key.
    pub key: Option<&'a [u8]>,
    /// Value.
    pub value: Option<&'a [u8]>,
}

fn read_varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*at)?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Calls `f` for every record of the batches in `bytes` without allocating per record
/// (uncompressed batches are walked in place; compressed ones are decoded first). Control
/// batches are skipped. A truncated final batch (possible in fetch responses) is ignored.
pub fn for_each_record(bytes: &Bytes, mut f: impl FnMut(RecordRef<'_>)) -> anyhow::Result<()> {
    let mut start = 0usize;
    while start + 61 <= bytes.len() {
        let header = BatchHeader::parse(&bytes[start..])?;
        let end = start + header.total_bytes();
        if end > bytes.len() {
            break;
        }
        if header.is_control() {
            start = end;
            continue;
        }
        if header.compression() != 0 {
            for r in decode_records(bytes.slice(start..end))? {
                f(RecordRef {
                    offset: r.offset,
                    timestamp_ms: r.timestamp_ms,
                    key: r.key.as_deref(),
                    value: r.value.as_deref(),
                });
            }
            start = end;
            continue;
        }
        walk_uncompressed(&bytes[start..end], &header, &mut f)?;
        start = end;
    }
    Ok(())
}

/// The next `len` bytes of `batch` at `at` (advancing it), or `None` past the end: lengths come
/// from the wire, so they are checked, never trusted.
fn take<'a>(batch: &'a [u8], at: &mut usize, len: i64) -> Option<&'a [u8]> {
    let end = at.checked_add(usize::try_from(len).ok()?)?;
    let bytes = batch.get(*at..end)?;
    *at = end;
    Some(bytes)
}

/// Walks the records of one uncompressed batch in place.
fn walk_uncompressed(batch: &[u8], header: &BatchHeader, f: &mut impl FnMut(RecordRef<'_>)) -> anyhow::Result<()> {
    walk_records(batch.get(61..).unwrap_or_default(), header, &mut |record, _| f(record))
}

/// Walks the records in `records` (a batch's record bytes after its header, decompressed),
/// giving each with its byte range in `records`.
fn walk_records(
    records: &[u8],
    header: &BatchHeader,
    f: &mut impl FnMut(RecordRef<'_>, std::ops::Range<usize>),
) -> anyhow::Result<()> {
    let mut at = 0usize;
    for _ in 0..header.records_count {
        let start = at;
        let bad = || anyhow::anyhow!("malformed record at offset {}", header.base_offset);
        let _len = read_varint(records, &mut at).ok_or_else(bad)?;
        at += 1; // attributes
        let ts_delta = unzigzag(read_varint(records, &mut at).ok_or_else(bad)?);
        let offset_delta = unzigzag(read_varint(records, &mut at).ok_or_else(bad)?);
        let key_len = unzigzag(read_varint(records, &mut at).ok_or_else(bad)?);
        let key = if key_len >= 0 { Some(take(records, &mut at, key_len).ok_or_else(bad)?) } else { None };
        let value_len = unzigzag(read_varint(records, &mut at).ok_or_else(bad)?);
        let value = if value_len >= 0 { Some(take(records, &mut at, value_len).ok_or_else(bad)?) } else { None };
        let headers = unzigzag(read_varint(records, &mut at).ok_or_else(bad)?);
        for _ in 0..headers.max(0) {
            let hk = unzigzag(read_varint(records, &mut at).ok_or_else(bad)?);
            take(records, &mut at, hk.max(0)).ok_or_else(bad)?;
            let hv = unzigzag(read_varint(records, &mut at).ok_or_else(bad)?);
            take(records, &mut at, hv.max(0)).ok_or_else(bad)?;
        }
        let timestamp_ms =
            if header.is_log_append_time() { header.max_timestamp } else { header.base_timestamp + ts_delta };
        f(RecordRef { offset: header.base_offset + offset_delta, timestamp_ms, key, value }, start..at);
    }
    Ok(())
}

/// What [`retain_records`] made of a batch.
#[derive(Debug)]
pub enum Retained {
    /// Every record stays: keep the batch as it is.
    All,
    /// No record stays: drop the batch.
    Nothing,
    /// Some records stay, in this rebuilt batch.
    Some(BytesMut),
}

/// Keeps the records of the v2 batch `batch` for which `keep` says so (log compaction). A
/// rebuilt batch keeps the original's header (base offset, last offset delta, base timestamp,
/// producer id, epoch and base sequence, attributes and codec) with the kept records copied
/// unchanged (their offset and timestamp deltas stay right), its record count, length, max
/// timestamp (CreateTime) and CRC worked out again. Returns it and how many records went.
pub fn retain_records(batch: &[u8], mut keep: impl FnMut(&RecordRef<'_>) -> bool) -> anyhow::Result<(Retained, usize)> {
    let header = BatchHeader::parse(batch)?;
    let end = header.total_bytes();
    anyhow::ensure!(end <= batch.len() && end >= 61, "batch of {end} bytes in {}", batch.len());
    let payload = &batch[61..end];
    let codec = header.compression();
    let mut scratch = Vec::new();
    let records: &[u8] = if codec == 0 {
        payload
    } else {
        super::validate::decompress(codec, payload, &mut scratch)?;
        &scratch
    };
    let mut kept = Vec::new();
    let mut removed = 0usize;
    let mut max_timestamp = i64::MIN;
    walk_records(records, &header, &mut |record, range| {
        if keep(&record) {
            kept.push(range);
            max_timestamp = max_timestamp.max(record.timestamp_ms);
        } else {
            removed += 1;
        }
    })?;
    if removed == 0 {
        return Ok((Retained::All, 0));
    }
    if kept.is_empty() {
        return Ok((Retained::Nothing, removed));
    }
    let mut body = BytesMut::with_capacity(records.len());
    for range in &kept {
        body.extend_from_slice(&records[range.clone()]);
    }
    let body = if codec == 0 { body } else { compress(codec, body)? };
    let mut out = BytesMut::with_capacity(61 + body.len());
    out.extend_from_slice(&batch[..61]);
    out.extend_from_slice(&body);
    let length = i32::try_from(out.len() - 12)?;
    out[8..12].copy_from_slice(&length.to_be_bytes());
    if !header.is_log_append_time() {
        out[35..43].copy_from_slice(&max_timestamp.to_be_bytes());
    }
    out[57..61].copy_from_slice(&(kept.len() as i32).to_be_bytes());
    let crc = crc32c::crc32c(&out[21..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    Ok((Retained::Some(out), removed))
}

/// `batch` with no records left: the same header (offsets, producer fields, timestamps) over an
/// empty, uncompressed body, as the cleaner keeps an idempotent producer's last batch.
pub fn emptied(batch: &[u8]) -> anyhow::Result<BytesMut> {
    anyhow::ensure!(batch.len() >= 61, "batch of {} bytes", batch.len());
    let mut out = BytesMut::from(&batch[..61]);
    out[8..12].copy_from_slice(&49i32.to_be_bytes());
    let attributes = i16::from_be_bytes([out[21], out[22]]) & !super::batch::ATTR_COMPRESSION_MASK;
    out[21..23].copy_from_slice(&attributes.to_be_bytes());
    out[57..61].copy_from_slice(&0i32.to_be_bytes());
    let crc = crc32c::crc32c(&out[21..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    Ok(out)
}

/// Compresses record bytes with Kafka codec `codec` the way the protocol crate's encoder does.
fn compress(codec: i16, records: BytesMut) -> anyhow::Result<BytesMut> {
    use kafka_protocol::compression::{Compressor, Gzip, Lz4, Snappy, Zstd};
    let mut out = BytesMut::with_capacity(records.len() / 2 + 64);
    macro_rules! with {
        ($codec:ty) => {
            <$codec as Compressor<BytesMut>>::compress(&mut out, |buf: &mut BytesMut| {
                buf.extend_from_slice(&records);
                Ok(())
            })?
        };
    }
    match codec {
        1 => with!(Gzip),
        2 => with!(Snappy),
        3 => with!(Lz4),
        4 => with!(Zstd),
        other => anyhow::bail!("unknown compression codec {other}"),
    }
    Ok(out)
}

/// Calls `f` with the key and value of every record of the control batch `batch` (control
/// records are never compressed).
pub fn for_each_control_record(batch: &Bytes, mut f: impl FnMut(&[u8], Option<&[u8]>)) -> anyhow::Result<()> {
    let header = BatchHeader::parse(batch)?;
    let end = header.total_bytes().min(batch.len());
    walk_uncompressed(&batch[..end], &header, &mut |r: RecordRef<'_>| f(r.key.unwrap_or_default(), r.value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn recompressing_keeps_the_records_and_the_producer_fields() {
        let mut builder = BatchBuilder::new(4096, 1_000);
        for i in 0..20 {
            builder.push(Some(format!("k{i}").as_bytes()), format!("value {i} ").repeat(10).as_bytes(), 1_000 + i);
        }
        let fields = BatchFields { attributes: 0, producer_id: 7, producer_epoch: 2, base_sequence: 40 };
        let original = builder.finish_with(&fields);
        let before = crate::model::batch::validate(&original).unwrap();
        for codec in [1, 2, 3, 4, 0] {
            let rewritten = recompress(&original, codec).unwrap();
            let after = crate::model::batch::validate(&rewritten).expect("a valid batch, CRC and all");
            assert_eq!(after.compression(), codec);
            assert_eq!(
                (after.producer_id, after.producer_epoch, after.base_sequence, after.records_count),
                (before.producer_id, before.producer_epoch, before.base_sequence, before.records_count)
            );
            assert_eq!((after.base_timestamp, after.max_timestamp), (1_000, 1_019));
            let decoded = decode_records(rewritten.freeze()).unwrap();
            let expected = decode_records(original.clone()).unwrap();
            assert_eq!(decoded.len(), 20);
            assert!(
                decoded
                    .iter()
                    .zip(&expected)
                    .all(|(a, b)| a.key == b.key && a.value == b.value && a.offset == b.offset)
            );
        }
        // Without a producer id (sequence -1) the records stay one batch too.
        let values: Vec<KeyValue> = (0..5).map(|i| (None, Some(Bytes::from(format!("v{i}"))))).collect();
        let plain = encode_batch(&values, &EncodeOptions::default());
        let rewritten = recompress(&plain, 4).unwrap();
        let header = crate::model::batch::validate(&rewritten).unwrap();
        assert_eq!((header.base_sequence, header.records_count, header.total_bytes()), (-1, 5, rewritten.len()));
    }

    #[test]
    fn an_emptied_batch_keeps_its_header_and_is_valid_only_in_a_log() {
        let mut builder = BatchBuilder::new(4096, 1_000);
        for i in 0..5 {
            builder.push(Some(format!("k{i}").as_bytes()), b"value", 1_000 + i);
        }
        let fields = BatchFields { attributes: 0, producer_id: 7, producer_epoch: 2, base_sequence: 40 };
        let mut original = BytesMut::from(&builder.finish_with(&fields)[..]);
        crate::model::batch::stamp(&mut original, 100, 3);
        let original = recompress(&original, 3).unwrap();
        let before = crate::model::batch::validate(&original).unwrap();
        let empty = emptied(&original).unwrap();
        assert_eq!(empty.len(), 61);
        assert!(crate::model::batch::validate(&empty).is_err(), "a producer never sends one");
        let after = crate::model::batch::validate_stored(&empty).expect("valid in a log, CRC and all");
        assert_eq!(after.records_count, 0);
        assert_eq!(after.compression(), 0);
        assert_eq!(
            (after.base_offset, after.last_offset(), after.partition_leader_epoch, after.max_timestamp),
            (before.base_offset, before.last_offset(), before.partition_leader_epoch, before.max_timestamp)
        );
        assert_eq!(
            (after.producer_id, after.producer_epoch, after.base_sequence),
            (before.producer_id, before.producer_epoch, before.base_sequence)
        );
        assert!(decode_records(empty.freeze()).unwrap().is_empty());
    }

    proptest! {
        #[test]
        fn builder_output_decodes_with_the_protocol_crate_and_the_fast_reader(
            records in proptest::collection::vec((proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)), proptest::collection::vec(any::<u8>(), 0..300), 0i64..100_000), 1..50),
        ) {
            let base = 1_700_000_000_000i64;
            let mut builder = BatchBuilder::new(1024, base);
            for (key, value, dt) in &records {
                builder.push(key.as_deref(), value, base + dt);
            }
            let batch = builder.finish();
            crate::model::batch::validate(&batch).expect("valid batch");
            let decoded = decode_records(batch.clone()).unwrap();
            prop_assert_eq!(decoded.len(), records.len());
            let mut fast = Vec::new();
            for_each_record(&batch, |r| fast.push((r.offset, r.timestamp_ms, r.key.map(<[u8]>::to_vec), r.value.map(<[u8]>::to_vec)))).unwrap();
            for (i, ((key, value, dt), d)) in records.iter().zip(&decoded).enumerate() {
                prop_assert_eq!(d.offset, i as i64);
                prop_assert_eq!(d.timestamp_ms, base + dt);
                prop_assert_eq!(d.key.as_deref(), key.as_deref());
                prop_assert_eq!(d.value.as_deref(), Some(value.as_slice()));
                prop_assert_eq!(&fast[i], &(i as i64, base + dt, key.clone(), Some(value.clone())));
            }
        }
    }

    #[test]
    fn fast_reader_handles_compressed_batches() {
        let values: Vec<KeyValue> = (0..10).map(|i| (None, Some(Bytes::from(format!("v{i}"))))).collect();
        let batch = encode_batch(&values, &EncodeOptions { compression: 4, timestamp_ms: Some(5) }).freeze();
        let mut seen = Vec::new();
        for_each_record(&batch, |r| seen.push(r.value.unwrap().to_vec())).unwrap();
        assert_eq!(seen.len(), 10);
        assert_eq!(seen[9], b"v9");
    }
}
