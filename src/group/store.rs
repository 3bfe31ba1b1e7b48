//! Group records in `__consumer_offsets`, in Kafka's own layouts so Kafka tooling can read them:
//! offset commits (key v1, value v3) and group metadata (key v2, value v3). A record with a null
//! value is a tombstone: the key is gone.

use bytes::{BufMut, Bytes, BytesMut};

use crate::model::wire::Reader;

/// What a key names.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum GroupKey {
    /// A committed offset.
    Offset {
        /// Group.
        group: String,
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
    },
    /// A group's metadata.
    Group {
        /// Group.
        group: String,
    },
}

/// A committed offset as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredOffset {
    /// Offset.
    pub offset: i64,
    /// Leader epoch.
    pub leader_epoch: i32,
    /// Metadata.
    pub metadata: String,
    /// When it was committed.
    pub commit_timestamp: i64,
}

/// A member as stored in group metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredMember {
    /// Member id.
    pub member_id: String,
    /// Static instance id.
    pub group_instance_id: Option<String>,
    /// Client id.
    pub client_id: String,
    /// Client host.
    pub client_host: String,
    /// Rebalance timeout.
    pub rebalance_timeout_ms: i32,
    /// Session timeout.
    pub session_timeout_ms: i32,
    /// Metadata for the chosen protocol.
    pub subscription: Bytes,
    /// Assignment.
    pub assignment: Bytes,
}

/// Group metadata as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredGroup {
    /// Protocol type.
    pub protocol_type: String,
    /// Generation.
    pub generation: i32,
    /// Chosen protocol.
    pub protocol: Option<String>,
    /// Leader.
    pub leader: Option<String>,
    /// When the state last changed.
    pub current_state_timestamp: i64,
    /// Members.
    pub members: Vec<StoredMember>,
}

fn put_string(buf: &mut BytesMut, s: &str) {
    buf.put_i16(s.len() as i16);
    buf.put_slice(s.as_bytes());
}

fn put_nullable_string(buf: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => put_string(buf, s),
        None => buf.put_i16(-1),
    }
}

fn put_bytes(buf: &mut BytesMut, b: &[u8]) {
    buf.put_i32(b.len() as i32);
    buf.put_slice(b);
}

fn string(r: &mut Reader<'_>) -> Option<String> {
    r.nullable_string().ok()?.map(|b| String::from_utf8_lossy(b).into_owned())
}

impl GroupKey {
    /// Encodes the key.
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::new();
        match self {
            GroupKey::Offset { group, topic, partition } => {
                buf.put_i16(1);
                put_string(&mut buf, group);
                put_string(&mut buf, topic);
                buf.put_i32(*partition);
            }
            GroupKey::Group { group } => {
                buf.put_i16(2);
                put_string(&mut buf, group);
            }
        }
        buf.freeze()
    }

    /// Decodes a key (`None` for layouts this broker does not write, e.g. transaction keys).
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let mut r = Reader::new(bytes);
        match r.i16().ok()? {
            0 | 1 => {
                Some(GroupKey::Offset { group: string(&mut r)?, topic: string(&mut r)?, partition: r.i32().ok()? })
            }
            2 => Some(GroupKey::Group { group: string(&mut r)? }),
            _ => None,
        }
    }

    /// The group the key belongs to.
    pub fn group(&self) -> &str {
        match self {
            GroupKey::Offset { group, .. } | GroupKey::Group { group } => group,
        }
    }
}

impl StoredOffset {
    /// Encodes the value (v3).
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::new();
        buf.put_i16(3);
        buf.put_i64(self.offset);
        buf.put_i32(self.leader_epoch);
        put_string(&mut buf, &self.metadata);
        buf.put_i64(self.commit_timestamp);
        buf.freeze()
    }

    /// Decodes v1 or v3 values.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let mut r = Reader::new(bytes);
        let version = r.i16().ok()?;
        let offset = r.i64().ok()?;
        let leader_epoch = if version >= 3 { r.i32().ok()? } else { -1 };
        let metadata = string(&mut r).unwrap_or_default();
        let commit_timestamp = r.i64().ok()?;
        Some(Self { offset, leader_epoch, metadata, commit_timestamp })
    }
}

impl StoredGroup {
    /// Encodes the value (v3).
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::new();
        buf.put_i16(3);
        put_string(&mut buf, &self.protocol_type);
        buf.put_i32(self.generation);
        put_nullable_string(&mut buf, self.protocol.as_deref());
        put_nullable_string(&mut buf, self.leader.as_deref());
        buf.put_i64(self.current_state_timestamp);
        buf.put_i32(self.members.len() as i32);
        for m in &self.members {
            put_string(&mut buf, &m.member_id);
            put_nullable_string(&mut buf, m.group_instance_id.as_deref());
            put_string(&mut buf, &m.client_id);
            put_string(&mut buf, &m.client_host);
            buf.put_i32(m.rebalance_timeout_ms);
            buf.put_i32(m.session_timeout_ms);
            put_bytes(&mut buf, &m.subscription);
            put_bytes(&mut buf, &m.assignment);
        }
        buf.freeze()
    }

    /// Decodes a v3 value.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let mut r = Reader::new(bytes);
        if r.i16().ok()? != 3 {
            return None;
        }
        let protocol_type = string(&mut r)?;
        let generation = r.i32().ok()?;
        let protocol = string(&mut r);
        let leader = string(&mut r);
        let current_state_timestamp = r.i64().ok()?;
        let count = r.array_len().ok()?;
        if count > r.remaining() {
            return None;
        }
        let mut members = Vec::new();
        for _ in 0..count {
            let member_id = string(&mut r)?;
            let group_instance_id = string(&mut r);
            let client_id = string(&mut r)?;
            let client_host = string(&mut r)?;
            let rebalance_timeout_ms = r.i32().ok()?;
            let session_timeout_ms = r.i32().ok()?;
            let subscription = Bytes::copy_from_slice(&bytes[r.nullable_bytes_range().ok()??]);
            let assignment = Bytes::copy_from_slice(&bytes[r.nullable_bytes_range().ok()??]);
            members.push(StoredMember {
                member_id,
                group_instance_id,
                client_id,
                client_host,
                rebalance_timeout_ms,
                session_timeout_ms,
                subscription,
                assignment,
            });
        }
        Some(Self { protocol_type, generation, protocol, leader, current_state_timestamp, members })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_round_trip() {
        let key = GroupKey::Offset { group: "g".into(), topic: "t".into(), partition: 3 };
        assert_eq!(GroupKey::decode(&key.encode()), Some(key));
        let key = GroupKey::Group { group: "g".into() };
        assert_eq!(GroupKey::decode(&key.encode()), Some(key));
        let offset = StoredOffset { offset: 42, leader_epoch: 1, metadata: "m".into(), commit_timestamp: 7 };
        assert_eq!(StoredOffset::decode(&offset.encode()), Some(offset));
        let group = StoredGroup {
            protocol_type: "consumer".into(),
            generation: 5,
            protocol: Some("range".into()),
            leader: Some("m1".into()),
            current_state_timestamp: 9,
            members: vec![StoredMember {
                member_id: "m1".into(),
                group_instance_id: Some("i1".into()),
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                rebalance_timeout_ms: 300_000,
                session_timeout_ms: 45_000,
                subscription: Bytes::from_static(b"sub"),
                assignment: Bytes::from_static(b"asg"),
            }],
        };
        assert_eq!(StoredGroup::decode(&group.encode()), Some(group));
        assert_eq!(StoredGroup::decode(b"\x00\x03\xff"), None);
    }
}
