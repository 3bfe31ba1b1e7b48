//! Zero-copy parsing of Produce requests (v3 to v13): the records of each partition are reported
//! as byte ranges of the request body, so they can be split off the request buffer and appended
//! without a copy. Checked against the `kafka-protocol` crate's encoder in the tests.

use std::ops::Range;

use crate::model::wire::{Reader, WireError};

/// One partition's data in a Produce request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionData {
    /// Partition index.
    pub index: i32,
    /// Where the records lie in the request body (`None` when null).
    pub records: Option<Range<usize>>,
}

/// One topic's data in a Produce request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicData {
    /// Topic name (v3 to v12).
    pub name: Option<String>,
    /// Topic id (v13+).
    pub topic_id: uuid::Uuid,
    /// Partitions.
    pub partitions: Vec<PartitionData>,
}

/// A parsed Produce request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceRequestView {
    /// Transactional id, if any.
    pub transactional_id: Option<String>,
    /// 0, 1 or -1.
    pub acks: i16,
    /// How long to wait for acks=-1.
    pub timeout_ms: i32,
    /// Topics.
    pub topics: Vec<TopicData>,
}

fn utf8(bytes: &[u8]) -> Result<String, WireError> {
    std::str::from_utf8(bytes).map(str::to_owned).map_err(|_| WireError("string is not UTF-8"))
}

/// Parses a Produce request body of `version` (3..=13).
pub fn parse(body: &[u8], version: i16) -> Result<ProduceRequestView, WireError> {
    if !(3..=13).contains(&version) {
        return Err(WireError("unsupported Produce version"));
    }
    let flexible = version >= 9;
    let mut r = Reader::new(body);
    let transactional_id =
        if flexible { r.compact_nullable_string()? } else { r.nullable_string()? }.map(utf8).transpose()?;
    let acks = r.i16()?;
    let timeout_ms = r.i32()?;
    let topic_count = if flexible { r.compact_array_len()? } else { r.array_len()? };
    if topic_count > r.remaining() {
        return Err(WireError("topic count exceeds the request"));
    }
    let mut topics = Vec::new();
    for _ in 0..topic_count {
        let (name, topic_id) = if version >= 13 {
            (None, r.uuid()?)
        } else {
            let name = if flexible { r.compact_nullable_string()? } else { r.nullable_string()? }
                .ok_or(WireError("null topic name"))?;
            (Some(utf8(name)?), uuid::Uuid::nil())
        };
        let partition_count = if flexible { r.compact_array_len()? } else { r.array_len()? };
        if partition_count > r.remaining() {
            return Err(WireError("partition count exceeds the request"));
        }
        let mut partitions = Vec::new();
        for _ in 0..partition_count {
            let index = r.i32()?;
            let records = if flexible { r.compact_nullable_bytes_range()? } else { r.nullable_bytes_range()? };
            if flexible {
                r.skip_tagged_fields()?;
            }
            partitions.push(PartitionData { index, records });
        }
        if flexible {
            r.skip_tagged_fields()?;
        }
        topics.push(TopicData { name, topic_id, partitions });
    }
    if flexible {
        r.skip_tagged_fields()?;
    }
    Ok(ProduceRequestView { transactional_id, acks, timeout_ms, topics })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{Bytes, BytesMut};
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ProduceRequest, TopicName};
    use kafka_protocol::protocol::{Encodable, StrBytes};
    use proptest::prelude::*;

    fn encode(request: &ProduceRequest, version: i16) -> BytesMut {
        let mut buf = BytesMut::new();
        request.encode(&mut buf, version).unwrap();
        buf
    }

    proptest! {
        #[test]
        fn matches_the_protocol_crate_for_every_version(
            version in 3i16..=13,
            acks in prop_oneof![Just(-1i16), Just(0), Just(1)],
            topics in proptest::collection::vec(
                ("[a-z]{1,12}", proptest::collection::vec((0i32..100, proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300))), 0..4)),
                0..4),
        ) {
            let id = uuid::Uuid::new_v4();
            let request = ProduceRequest::default()
                .with_acks(acks)
                .with_timeout_ms(1234)
                .with_topic_data(topics.iter().map(|(name, parts)| {
                    let mut topic = TopicProduceData::default().with_partition_data(parts.iter().map(|(index, records)| {
                        PartitionProduceData::default().with_index(*index).with_records(records.clone().map(Bytes::from))
                    }).collect());
                    if version >= 13 { topic = topic.with_topic_id(id); } else { topic = topic.with_name(TopicName(StrBytes::from_string(name.clone()))); }
                    topic
                }).collect());
            let body = encode(&request, version);
            let view = parse(&body, version).unwrap();
            prop_assert_eq!(view.acks, acks);
            prop_assert_eq!(view.timeout_ms, 1234);
            prop_assert_eq!(view.topics.len(), topics.len());
            for (parsed, (name, parts)) in view.topics.iter().zip(&topics) {
                if version >= 13 { prop_assert_eq!(parsed.topic_id, id); } else { prop_assert_eq!(parsed.name.as_deref(), Some(name.as_str())); }
                prop_assert_eq!(parsed.partitions.len(), parts.len());
                for (p, (index, records)) in parsed.partitions.iter().zip(parts) {
                    prop_assert_eq!(p.index, *index);
                    prop_assert_eq!(p.records.clone().map(|r| body[r].to_vec()), records.clone());
                }
            }
        }

        #[test]
        fn garbage_never_panics(version in 3i16..=13, body in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse(&body, version);
        }
    }

    #[test]
    fn huge_counts_are_refused_without_allocating() {
        let mut body = vec![0xff, 0xff, 0, 1, 0, 0, 0, 0];
        body.extend_from_slice(&i32::MAX.to_be_bytes());
        assert!(parse(&body, 3).is_err());
    }
}
