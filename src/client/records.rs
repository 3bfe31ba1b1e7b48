//! Building and reading record batches on the client side (CLI, load tools, tests), through the
//! `kafka-protocol` crate's encoder and decoder. The broker itself never decodes records.

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

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
    let timestamp = options.timestamp_ms.unwrap_or_else(crate::util::now_ms);
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
