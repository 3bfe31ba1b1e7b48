//! Zero-copy Fetch responses (v4 to v18): the response fields are encoded into small buffers and
//! the stored record batches are placed between them as the `Bytes` the log returned, so the
//! socket write gathers them with one vectored write and record bytes are never copied or
//! re-encoded. Checked against the `kafka-protocol` crate's decoder in the tests.

use bytes::{BufMut, Bytes, BytesMut};

use crate::model::wire::{put_array_len, put_bytes_len, put_string, put_uvarint};

/// One partition of a Fetch response.
#[derive(Debug, Clone, Default)]
pub struct PartitionOut {
    /// Partition index.
    pub index: i32,
    /// Kafka error code (0 for none).
    pub error_code: i16,
    /// High watermark.
    pub high_watermark: i64,
    /// Last stable offset.
    pub last_stable_offset: i64,
    /// Log start offset.
    pub log_start_offset: i64,
    /// Whole record batches, in order.
    pub records: Vec<Bytes>,
    /// The replica the consumer should fetch from instead (KIP-392; v11+).
    pub preferred_read_replica: Option<i32>,
}

impl PartitionOut {
    /// Bytes of record data.
    pub fn records_bytes(&self) -> usize {
        self.records.iter().map(Bytes::len).sum()
    }
}

/// One topic of a Fetch response.
#[derive(Debug, Clone, Default)]
pub struct TopicOut {
    /// Topic name (v4 to v12).
    pub name: String,
    /// Topic id (v13+).
    pub topic_id: uuid::Uuid,
    /// Partitions.
    pub partitions: Vec<PartitionOut>,
}

/// The pieces of an encoded Fetch response body, to be written back to back.
#[derive(Debug, Default)]
pub struct EncodedBody {
    /// Buffers in order; record batches are separate entries, shared with the log.
    pub parts: Vec<Bytes>,
    /// Total length.
    pub len: usize,
}

struct Builder {
    parts: Vec<Bytes>,
    current: BytesMut,
    len: usize,
}

impl Builder {
    fn flush(&mut self) {
        if !self.current.is_empty() {
            let chunk = self.current.split().freeze();
            self.len += chunk.len();
            self.parts.push(chunk);
        }
    }

    fn push_shared(&mut self, bytes: &Bytes) {
        if bytes.is_empty() {
            return;
        }
        self.flush();
        self.len += bytes.len();
        self.parts.push(bytes.clone());
    }
}

/// Encodes a Fetch response body of `version`.
pub fn encode(
    version: i16,
    throttle_time_ms: i32,
    error_code: i16,
    session_id: i32,
    topics: &[TopicOut],
) -> EncodedBody {
    debug_assert!((4..=18).contains(&version));
    let flexible = version >= 12;
    let mut b = Builder { parts: Vec::new(), current: BytesMut::with_capacity(256), len: 0 };
    b.current.put_i32(throttle_time_ms);
    if version >= 7 {
        b.current.put_i16(error_code);
        b.current.put_i32(session_id);
    }
    put_array_len(&mut b.current, topics.len(), flexible);
    for topic in topics {
        if version <= 12 {
            put_string(&mut b.current, &topic.name, flexible);
        }
        if version >= 13 {
            b.current.put_slice(topic.topic_id.as_bytes());
        }
        put_array_len(&mut b.current, topic.partitions.len(), flexible);
        for partition in &topic.partitions {
            b.current.put_i32(partition.index);
            b.current.put_i16(partition.error_code);
            b.current.put_i64(partition.high_watermark);
            b.current.put_i64(partition.last_stable_offset);
            if version >= 5 {
                b.current.put_i64(partition.log_start_offset);
            }
            // aborted_transactions: empty (no transactions are aborted here)
            put_array_len(&mut b.current, 0, flexible);
            if version >= 11 {
                b.current.put_i32(partition.preferred_read_replica.unwrap_or(-1));
            }
            put_bytes_len(&mut b.current, Some(partition.records_bytes()), flexible);
            for batch in &partition.records {
                b.push_shared(batch);
            }
            if flexible {
                put_uvarint(&mut b.current, 0); // partition tagged fields
            }
        }
        if flexible {
            put_uvarint(&mut b.current, 0); // topic tagged fields
        }
    }
    if flexible {
        put_uvarint(&mut b.current, 0); // response tagged fields
    }
    b.flush();
    EncodedBody { parts: b.parts, len: b.len }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::FetchResponse;
    use kafka_protocol::protocol::Decodable;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn decodes_with_the_protocol_crate_for_every_version(
            version in 4i16..=18,
            topics in proptest::collection::vec(
                ("[a-z]{1,10}", proptest::collection::vec((0i32..50, -5i16..100, proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..200), 0..4)), 0..4)),
                0..4),
        ) {
            let input: Vec<TopicOut> = topics.iter().map(|(name, parts)| TopicOut {
                name: name.clone(),
                topic_id: uuid::Uuid::new_v4(),
                partitions: parts.iter().map(|(index, error, batches)| PartitionOut {
                    index: *index,
                    error_code: *error,
                    high_watermark: 100 + i64::from(*index),
                    last_stable_offset: 99,
                    log_start_offset: 7,
                    records: batches.iter().map(|b| Bytes::from(b.clone())).collect(),
                    preferred_read_replica: (*index % 3 == 0).then_some(*index / 3),
                }).collect(),
            }).collect();
            let body = encode(version, 3, 0, 0, &input);
            let mut joined = BytesMut::new();
            for part in &body.parts { joined.extend_from_slice(part); }
            prop_assert_eq!(joined.len(), body.len);
            let mut bytes = joined.freeze();
            let decoded = FetchResponse::decode(&mut bytes, version).unwrap();
            prop_assert!(bytes.is_empty(), "trailing bytes");
            prop_assert_eq!(decoded.throttle_time_ms, 3);
            prop_assert_eq!(decoded.responses.len(), input.len());
            for (got, want) in decoded.responses.iter().zip(&input) {
                if version <= 12 { prop_assert_eq!(got.topic.as_str(), want.name.as_str()); } else { prop_assert_eq!(got.topic_id, want.topic_id); }
                prop_assert_eq!(got.partitions.len(), want.partitions.len());
                for (gp, wp) in got.partitions.iter().zip(&want.partitions) {
                    prop_assert_eq!(gp.partition_index, wp.index);
                    prop_assert_eq!(gp.error_code, wp.error_code);
                    prop_assert_eq!(gp.high_watermark, wp.high_watermark);
                    prop_assert_eq!(gp.last_stable_offset, wp.last_stable_offset);
                    if version >= 5 { prop_assert_eq!(gp.log_start_offset, wp.log_start_offset); }
                    if version >= 11 { prop_assert_eq!(gp.preferred_read_replica.0, wp.preferred_read_replica.unwrap_or(-1)); }
                    let want_records: Vec<u8> = wp.records.iter().flat_map(|b| b.to_vec()).collect();
                    prop_assert_eq!(gp.records.as_deref().unwrap_or(&[]), &want_records[..]);
                }
            }
        }
    }

    #[test]
    fn record_bytes_are_shared_not_copied() {
        let batch = Bytes::from(vec![7u8; 1000]);
        let body = encode(
            16,
            0,
            0,
            0,
            &[TopicOut {
                name: "t".into(),
                topic_id: uuid::Uuid::nil(),
                partitions: vec![PartitionOut { records: vec![batch.clone()], ..PartitionOut::default() }],
            }],
        );
        assert!(body.parts.iter().any(|p| p.as_ptr() == batch.as_ptr()), "the batch itself is one of the parts");
    }
}
