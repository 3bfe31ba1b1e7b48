//! The records inside a produced batch, checked the way Kafka's log validator checks them: a
//! known codec, a payload that decompresses, and records whose framing holds (lengths, varints,
//! offset deltas 0, 1, 2..., header counts) and fills the batch exactly. A batch whose CRC is
//! right but whose records cannot be read would otherwise be stored and stall every consumer at
//! its offset.
//!
//! Ownership: pure functions over borrowed bytes; compressed payloads are decompressed into a
//! scratch buffer the caller keeps and reuses (one per shard), so nothing is copied per batch
//! once the buffer has grown.

use std::io::Read;

use super::batch::{BATCH_HEADER_BYTES, BatchError, BatchHeader};

/// A compressed batch may decompress to at most this many bytes (a decompression bomb is
/// refused instead of filling memory).
pub const MAX_DECOMPRESSED_BYTES: usize = 256 << 20;
/// Above this the scratch buffer is given back after use, so one huge batch does not pin memory.
const SCRATCH_KEEP_BYTES: usize = 8 << 20;

/// What a topic requires of the records produced to it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecordRules {
    /// A compacted topic's records must have keys.
    pub require_keys: bool,
    /// Producer timestamps must lie in this inclusive range (CreateTime topics:
    /// `message.timestamp.before.max.ms` and `after.max.ms` around the broker's clock).
    pub timestamps: Option<(i64, i64)>,
}

/// Checks the records of the whole batch `batch` (its header already validated, `header`)
/// against `rules`. `scratch` is reused for decompression.
pub fn check_records(
    batch: &[u8],
    header: &BatchHeader,
    rules: &RecordRules,
    scratch: &mut Vec<u8>,
) -> Result<(), BatchError> {
    if header.is_control() {
        return Err(BatchError::InvalidRecord("a producer may not write control batches".into()));
    }
    let payload = &batch[BATCH_HEADER_BYTES..header.total_bytes()];
    let codec = header.compression();
    if codec == 0 {
        return walk(payload, header, rules);
    }
    scratch.clear();
    let decompressed = decompress(codec, payload, scratch);
    let outcome = decompressed.and_then(|()| walk(scratch, header, rules));
    if scratch.capacity() > SCRATCH_KEEP_BYTES {
        *scratch = Vec::new();
    }
    outcome
}

/// Decompresses `payload` with Kafka codec `codec` into `out`, bounded by
/// [`MAX_DECOMPRESSED_BYTES`].
pub(crate) fn decompress(codec: i16, payload: &[u8], out: &mut Vec<u8>) -> Result<(), BatchError> {
    let bad = |what: &str, e: &dyn std::fmt::Display| BatchError::Corrupt(format!("{what} payload: {e}"));
    let limit = MAX_DECOMPRESSED_BYTES as u64 + 1;
    let read = |reader: &mut dyn Read, out: &mut Vec<u8>| reader.take(limit).read_to_end(out).map(|_| ());
    match codec {
        1 => read(&mut flate2::read::GzDecoder::new(payload), out).map_err(|e| bad("gzip", &e))?,
        2 => snappy(payload, out)?,
        3 => {
            let mut decoder = lz4::Decoder::new(payload).map_err(|e| bad("lz4", &e))?;
            read(&mut decoder, out).map_err(|e| bad("lz4", &e))?;
        }
        4 => {
            let mut decoder = zstd::stream::read::Decoder::new(payload).map_err(|e| bad("zstd", &e))?;
            read(&mut decoder, out).map_err(|e| bad("zstd", &e))?;
        }
        other => return Err(BatchError::Corrupt(format!("unknown compression codec {other}"))),
    }
    if out.len() > MAX_DECOMPRESSED_BYTES {
        return Err(BatchError::Corrupt(format!("decompresses to more than {MAX_DECOMPRESSED_BYTES} bytes")));
    }
    Ok(())
}

/// The xerial framing Java clients write (a magic header, then length-prefixed raw blocks), or
/// one raw snappy block (librdkafka and others).
fn snappy(payload: &[u8], out: &mut Vec<u8>) -> Result<(), BatchError> {
    const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";
    const XERIAL_HEADER_BYTES: usize = 16;
    let bad = |e: &dyn std::fmt::Display| BatchError::Corrupt(format!("snappy payload: {e}"));
    let block = |raw: &[u8], out: &mut Vec<u8>| {
        let len = snap::raw::decompress_len(raw).map_err(|e| bad(&e))?;
        if out.len() + len > MAX_DECOMPRESSED_BYTES {
            return Err(BatchError::Corrupt(format!("decompresses to more than {MAX_DECOMPRESSED_BYTES} bytes")));
        }
        let start = out.len();
        out.resize(start + len, 0);
        snap::raw::Decoder::new().decompress(raw, &mut out[start..]).map_err(|e| bad(&e))?;
        Ok(())
    };
    if !payload.starts_with(XERIAL_MAGIC) {
        return block(payload, out);
    }
    let mut rest = payload.get(XERIAL_HEADER_BYTES..).ok_or_else(|| bad(&"truncated xerial header"))?;
    while !rest.is_empty() {
        let len = rest.get(..4).map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")) as usize);
        let raw = len.and_then(|len| rest.get(4..4 + len)).ok_or_else(|| bad(&"truncated xerial block"))?;
        block(raw, out)?;
        rest = &rest[4 + raw.len()..];
    }
    Ok(())
}

/// Reads a zigzag varint of at most `max_bytes` bytes.
fn varint(bytes: &[u8], at: &mut usize, max_bytes: usize) -> Option<i64> {
    let mut value = 0u64;
    for i in 0..max_bytes {
        let byte = *bytes.get(*at)?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some(((value >> 1) as i64) ^ -((value & 1) as i64));
        }
    }
    None
}

/// A varint (i32 range: at most 5 bytes).
fn varint32(bytes: &[u8], at: &mut usize) -> Option<i64> {
    varint(bytes, at, 5).filter(|v| i32::try_from(*v).is_ok())
}

/// Skips a length-prefixed field: `Some(true)` for a present one, `Some(false)` for null
/// (length -1, allowed when `nullable`), `None` when it does not fit.
fn field(bytes: &[u8], at: &mut usize, end: usize, nullable: bool) -> Option<bool> {
    let len = varint32(bytes, at)?;
    if len == -1 && nullable {
        return Some(false);
    }
    let next = at.checked_add(usize::try_from(len).ok()?)?;
    if next > end {
        return None;
    }
    *at = next;
    Some(true)
}

/// Walks the batch's records, which must fill `records` exactly.
fn walk(records: &[u8], header: &BatchHeader, rules: &RecordRules) -> Result<(), BatchError> {
    let mut at = 0usize;
    for index in 0..header.records_count {
        let corrupt = |what: &str| BatchError::Corrupt(format!("record {index}: {what}"));
        let len = varint32(records, &mut at).ok_or_else(|| corrupt("bad length"))?;
        let end = usize::try_from(len)
            .ok()
            .and_then(|len| at.checked_add(len))
            .filter(|end| *end <= records.len())
            .ok_or_else(|| corrupt("length past the batch"))?;
        let body = &records[..end];
        at += 1; // attributes (unused)
        let delta = varint(body, &mut at, 10).ok_or_else(|| corrupt("bad timestamp delta"))?;
        if let Some((earliest, latest)) = rules.timestamps {
            // -1 is "no timestamp" (Kafka does not check it either).
            let timestamp = header.base_timestamp.saturating_add(delta);
            if timestamp != -1 && (timestamp < earliest || timestamp > latest) {
                return Err(BatchError::InvalidTimestamp(format!(
                    "record {index} has timestamp {timestamp}, outside [{earliest}, {latest}]"
                )));
            }
        }
        let offset_delta = varint32(body, &mut at).ok_or_else(|| corrupt("bad offset delta"))?;
        if offset_delta != i64::from(index) {
            return Err(BatchError::InvalidRecord(format!("record {index} has offset delta {offset_delta}")));
        }
        let has_key = field(body, &mut at, end, true).ok_or_else(|| corrupt("bad key"))?;
        if rules.require_keys && !has_key {
            return Err(BatchError::InvalidRecord("a compacted topic's records must have keys".into()));
        }
        field(body, &mut at, end, true).ok_or_else(|| corrupt("bad value"))?;
        let headers = varint32(body, &mut at).filter(|h| *h >= 0).ok_or_else(|| corrupt("bad header count"))?;
        for _ in 0..headers {
            field(body, &mut at, end, false).ok_or_else(|| corrupt("bad header key"))?;
            field(body, &mut at, end, true).ok_or_else(|| corrupt("bad header value"))?;
        }
        if at != end {
            return Err(corrupt("length disagrees with its fields"));
        }
    }
    if at != records.len() {
        return Err(BatchError::Corrupt(format!("{} bytes after the last record", records.len() - at)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::model::batch;
    use crate::model::records::{EncodeOptions, KeyValue, encode_batch};

    fn encoded(compression: i16, keys: bool) -> Vec<u8> {
        let values: Vec<KeyValue> = (0..50)
            .map(|i| {
                (keys.then(|| Bytes::from(format!("key-{i}"))), Some(Bytes::from(format!("value {i} ").repeat(20))))
            })
            .collect();
        encode_batch(&values, &EncodeOptions { compression, ..EncodeOptions::default() }).to_vec()
    }

    fn check(bytes: &[u8], require_keys: bool) -> Result<(), BatchError> {
        let header = batch::validate(bytes)?;
        check_records(bytes, &header, &RecordRules { require_keys, timestamps: None }, &mut Vec::new())
    }

    #[test]
    fn timestamps_outside_the_topics_window_are_refused_per_record() {
        for compression in [0, 1, 4] {
            let values: Vec<KeyValue> = (0..3).map(|i| (None, Some(Bytes::from(format!("v{i}"))))).collect();
            let bytes = encode_batch(&values, &EncodeOptions { compression, timestamp_ms: Some(5_000) }).to_vec();
            let header = batch::validate(&bytes).unwrap();
            let rules = |earliest, latest| RecordRules { require_keys: false, timestamps: Some((earliest, latest)) };
            assert!(check_records(&bytes, &header, &rules(5_000, 5_000), &mut Vec::new()).is_ok());
            for (earliest, latest) in [(5_001, 9_000), (0, 4_999)] {
                let err = check_records(&bytes, &header, &rules(earliest, latest), &mut Vec::new()).unwrap_err();
                assert!(matches!(err, BatchError::InvalidTimestamp(_)), "{err}");
            }
        }
    }

    /// Rewrites the CRC so a change to the records passes the batch checks.
    fn recrc(bytes: &mut [u8]) {
        let crc = crc32c::crc32c(&bytes[21..]);
        bytes[17..21].copy_from_slice(&crc.to_be_bytes());
    }

    #[test]
    fn well_formed_batches_of_every_codec_pass() {
        for codec in 0..=4 {
            check(&encoded(codec, true), true).unwrap_or_else(|e| panic!("codec {codec}: {e}"));
            check(&encoded(codec, false), false).unwrap_or_else(|e| panic!("codec {codec}: {e}"));
        }
    }

    #[test]
    fn poison_pills_are_refused() {
        // An unknown codec.
        let mut b = encoded(0, true);
        b[22] |= 7;
        recrc(&mut b);
        assert!(matches!(check(&b, false), Err(BatchError::Corrupt(m)) if m.contains("codec 7")));
        // A gzip/zstd/lz4/snappy payload that does not decompress.
        for codec in 1..=4 {
            let mut b = encoded(codec, true);
            let mid = 61 + (b.len() - 61) / 2;
            for byte in &mut b[mid..mid + 8] {
                *byte ^= 0x5a;
            }
            recrc(&mut b);
            assert!(check(&b, false).is_err(), "codec {codec}: a damaged payload passes");
        }
        // Garbage instead of records.
        let mut b = encoded(0, true);
        for byte in &mut b[61..] {
            *byte = 0xff;
        }
        recrc(&mut b);
        assert!(matches!(check(&b, false), Err(BatchError::Corrupt(_))));
        // A record length varint out of range.
        let mut b = encoded(0, true);
        b[61..66].copy_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x7f]);
        recrc(&mut b);
        assert!(matches!(check(&b, false), Err(BatchError::Corrupt(_))));
        // A missing key on a compacted topic.
        assert!(matches!(check(&encoded(0, false), true), Err(BatchError::InvalidRecord(_))));
        assert!(matches!(check(&encoded(3, false), true), Err(BatchError::InvalidRecord(_))));
    }

    #[test]
    fn a_decompression_bomb_is_refused() {
        let mut big = Vec::new();
        let mut encoder = zstd::stream::write::Encoder::new(&mut big, 19).unwrap();
        std::io::copy(&mut std::io::repeat(0).take(MAX_DECOMPRESSED_BYTES as u64 + 4096), &mut encoder).unwrap();
        encoder.finish().unwrap();
        let mut scratch = Vec::new();
        assert!(decompress(4, &big, &mut scratch).is_err());
        assert!(scratch.len() <= MAX_DECOMPRESSED_BYTES + 1);
    }
}
