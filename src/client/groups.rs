//! Consumer group admin calls: list, describe, committed offsets, reset, delete.

use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup;
use kafka_protocol::messages::{
    DeleteGroupsRequest, DescribeGroupsRequest, FindCoordinatorRequest, GroupId, ListGroupsRequest,
    OffsetCommitRequest, OffsetFetchRequest,
};
use kafka_protocol::protocol::StrBytes;

use super::{BrokerConnection, ClientError, KafkaClient, topic_name};

/// A group member as described.
#[derive(Clone, Debug)]
pub struct GroupMember {
    /// Member id.
    pub member_id: String,
    /// Static instance id.
    pub instance_id: Option<String>,
    /// Client id.
    pub client_id: String,
    /// Client host.
    pub host: String,
    /// Assigned partitions (decoded from the consumer protocol).
    pub assignment: Vec<(String, i32)>,
}

/// A group as described.
#[derive(Clone, Debug)]
pub struct GroupInfo {
    /// Group id.
    pub group_id: String,
    /// State.
    pub state: String,
    /// Protocol type.
    pub protocol_type: String,
    /// Chosen assignor.
    pub protocol: String,
    /// Members.
    pub members: Vec<GroupMember>,
}

pub(super) fn group_id(id: &str) -> GroupId {
    GroupId(StrBytes::from_string(id.to_owned()))
}

/// Commits `offsets` (topic, partition, next offset to read) to `group` through its coordinator
/// `conn`, as member `member_id` of `generation` (-1 and "" for a group without members).
pub(super) async fn commit_on(
    conn: &BrokerConnection,
    group: &str,
    generation: i32,
    member_id: &str,
    offsets: &[(String, i32, i64)],
) -> Result<(), ClientError> {
    let mut topics: Vec<OffsetCommitRequestTopic> = Vec::new();
    for (topic, partition, offset) in offsets {
        let entry = OffsetCommitRequestPartition::default()
            .with_partition_index(*partition)
            .with_committed_offset(*offset)
            .with_committed_leader_epoch(-1);
        match topics.iter_mut().find(|t| t.name.as_str() == topic) {
            Some(t) => t.partitions.push(entry),
            None => topics
                .push(OffsetCommitRequestTopic::default().with_name(topic_name(topic)).with_partitions(vec![entry])),
        }
    }
    let request = OffsetCommitRequest::default()
        .with_group_id(group_id(group))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(StrBytes::from_string(member_id.to_owned()))
        .with_topics(topics);
    let response = conn.send(request).await?;
    for t in response.topics {
        for p in t.partitions {
            if let Some(err) = ClientError::from_code(
                format!("commit {}-{} for {group}", t.name.as_str(), p.partition_index),
                p.error_code,
                None,
            ) {
                return Err(err);
            }
        }
    }
    Ok(())
}

/// Decodes a consumer protocol assignment: version, then (topic, [partition]) pairs.
pub fn decode_assignment(bytes: &[u8]) -> Vec<(String, i32)> {
    let mut r = crate::model::wire::Reader::new(bytes);
    let mut out = Vec::new();
    let parse = |r: &mut crate::model::wire::Reader<'_>, out: &mut Vec<(String, i32)>| -> Option<()> {
        r.i16().ok()?;
        let topics = r.array_len().ok()?;
        for _ in 0..topics.min(r.remaining()) {
            let topic = String::from_utf8_lossy(r.nullable_string().ok()??).into_owned();
            let partitions = r.array_len().ok()?;
            for _ in 0..partitions.min(r.remaining()) {
                out.push((topic.clone(), r.i32().ok()?));
            }
        }
        Some(())
    };
    let _ = parse(&mut r, &mut out);
    out
}

impl KafkaClient {
    /// The coordinator of a group.
    pub async fn coordinator(&self, group: &str) -> Result<BrokerConnection, ClientError> {
        let conn = self.any().await?;
        let version = conn.version_for::<FindCoordinatorRequest>(i16::MAX)?;
        let request = if version >= 4 {
            FindCoordinatorRequest::default().with_coordinator_keys(vec![StrBytes::from_string(group.to_owned())])
        } else {
            FindCoordinatorRequest::default().with_key(StrBytes::from_string(group.to_owned()))
        };
        let response = conn.send_version(request, version).await?;
        let (code, node, message) = match response.coordinators.first() {
            Some(c) => (c.error_code, c.node_id.0, c.error_message.clone()),
            None => (response.error_code, response.node_id.0, response.error_message.clone()),
        };
        if let Some(err) =
            ClientError::from_code(format!("find coordinator of {group}"), code, message.map(|m| m.as_str().to_owned()))
        {
            return Err(err);
        }
        if self.broker(node).await.is_err() {
            self.metadata(Some(&[]), false).await?;
        }
        self.broker(node).await
    }

    /// Every group (from every broker).
    pub async fn list_groups(&self) -> Result<Vec<(String, String, String)>, ClientError> {
        self.metadata(Some(&[]), false).await?;
        let response = self.any().await?.send(ListGroupsRequest::default()).await?;
        if let Some(err) = ClientError::from_code("list groups", response.error_code, None) {
            return Err(err);
        }
        let mut groups: Vec<(String, String, String)> = response
            .groups
            .into_iter()
            .map(|g| {
                (g.group_id.as_str().to_owned(), g.group_state.as_str().to_owned(), g.protocol_type.as_str().to_owned())
            })
            .collect();
        groups.sort();
        Ok(groups)
    }

    /// Describes a group.
    pub async fn describe_group(&self, group: &str) -> Result<GroupInfo, ClientError> {
        let conn = self.coordinator(group).await?;
        let response = conn.send(DescribeGroupsRequest::default().with_groups(vec![group_id(group)])).await?;
        let g = response.groups.into_iter().next().ok_or_else(|| ClientError::Protocol("empty describe".into()))?;
        if let Some(err) = ClientError::from_code(
            format!("describe group {group}"),
            g.error_code,
            g.error_message.map(|m| m.as_str().to_owned()),
        ) {
            return Err(err);
        }
        Ok(GroupInfo {
            group_id: group.to_owned(),
            state: g.group_state.as_str().to_owned(),
            protocol_type: g.protocol_type.as_str().to_owned(),
            protocol: g.protocol_data.as_str().to_owned(),
            members: g
                .members
                .into_iter()
                .map(|m| GroupMember {
                    member_id: m.member_id.as_str().to_owned(),
                    instance_id: m.group_instance_id.map(|s| s.as_str().to_owned()),
                    client_id: m.client_id.as_str().to_owned(),
                    host: m.client_host.as_str().to_owned(),
                    assignment: decode_assignment(&m.member_assignment),
                })
                .collect(),
        })
    }

    /// Committed offsets of a group: (topic, partition, offset).
    pub async fn committed_offsets(&self, group: &str) -> Result<Vec<(String, i32, i64)>, ClientError> {
        let conn = self.coordinator(group).await?;
        let version = conn.version_for::<OffsetFetchRequest>(i16::MAX)?;
        let request = if version >= 8 {
            OffsetFetchRequest::default()
                .with_groups(vec![OffsetFetchRequestGroup::default().with_group_id(group_id(group)).with_topics(None)])
        } else {
            OffsetFetchRequest::default().with_group_id(group_id(group)).with_topics(None)
        };
        let response = conn.send_version(request, version).await?;
        let mut out = Vec::new();
        if version >= 8 {
            for g in response.groups {
                if let Some(err) = ClientError::from_code(format!("fetch offsets of {group}"), g.error_code, None) {
                    return Err(err);
                }
                for t in g.topics {
                    for p in t.partitions {
                        out.push((t.name.as_str().to_owned(), p.partition_index, p.committed_offset));
                    }
                }
            }
        } else {
            if let Some(err) = ClientError::from_code(format!("fetch offsets of {group}"), response.error_code, None) {
                return Err(err);
            }
            for t in response.topics {
                for p in t.partitions {
                    out.push((t.name.as_str().to_owned(), p.partition_index, p.committed_offset));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Commits offsets for a group that has no active members.
    pub async fn commit_offsets(&self, group: &str, offsets: &[(String, i32, i64)]) -> Result<(), ClientError> {
        commit_on(&self.coordinator(group).await?, group, -1, "", offsets).await
    }

    /// Deletes a group (it must have no members).
    pub async fn delete_group(&self, group: &str) -> Result<(), ClientError> {
        let conn = self.coordinator(group).await?;
        let response = conn.send(DeleteGroupsRequest::default().with_groups_names(vec![group_id(group)])).await?;
        for r in response.results {
            if let Some(err) = ClientError::from_code(format!("delete group {group}"), r.error_code, None) {
                return Err(err);
            }
        }
        Ok(())
    }
}
