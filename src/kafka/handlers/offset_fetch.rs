//! OffsetFetch, for one group (v1 to v7) or several at once (v8+).

use std::rc::Rc;

use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions, OffsetFetchResponseTopic,
    OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{GroupId, OffsetFetchRequest, OffsetFetchResponse};
use kafka_protocol::protocol::StrBytes;

use super::call_group;
use crate::group::{GroupCall, GroupError, OffsetCommitEntry};
use crate::kafka::connection::Connection;
use crate::kafka::errors::group_code;
use crate::model::wire::topic_name;
use crate::security::acl;

async fn fetch_group(
    conn: &Connection,
    group_id: &str,
    topics: Option<Vec<(String, Vec<i32>)>>,
) -> (Option<GroupError>, Vec<OffsetCommitEntry>) {
    if !conn.allowed(acl::op::DESCRIBE, acl::resource::GROUP, group_id) {
        return (Some(GroupError::NotAuthorized), Vec::new());
    }
    let (error, mut entries) =
        call_group(conn, group_id, |reply| GroupCall::FetchOffsets { group_id: group_id.to_owned(), topics, reply })
            .await
            .unwrap_or_else(|e| (Some(e), Vec::new()));
    // Offsets of topics the principal may not DESCRIBE are not shown.
    entries.retain(|e| conn.allowed(acl::op::DESCRIBE, acl::resource::TOPIC, &e.topic));
    (error, entries)
}

/// Groups entries by topic, keeping first-seen order.
fn by_topic(entries: Vec<OffsetCommitEntry>) -> Vec<(String, Vec<OffsetCommitEntry>)> {
    let mut out: Vec<(String, Vec<OffsetCommitEntry>)> = Vec::new();
    for entry in entries {
        match out.iter_mut().find(|(t, _)| *t == entry.topic) {
            Some((_, list)) => list.push(entry),
            None => out.push((entry.topic.clone(), vec![entry])),
        }
    }
    out
}

/// Answers OffsetFetch.
pub async fn handle(conn: &Rc<Connection>, request: OffsetFetchRequest, version: i16) -> OffsetFetchResponse {
    if version >= 8 {
        let mut groups = Vec::new();
        for group in &request.groups {
            let topics = group.topics.as_ref().map(|topics| {
                topics.iter().map(|t| (t.name.as_str().to_owned(), t.partition_indexes.clone())).collect()
            });
            let (error, entries) = fetch_group(conn, group.group_id.as_str(), topics).await;
            let topics = by_topic(entries)
                .into_iter()
                .map(|(name, entries)| {
                    OffsetFetchResponseTopics::default().with_name(topic_name(&name)).with_partitions(
                        entries
                            .into_iter()
                            .map(|e| {
                                OffsetFetchResponsePartitions::default()
                                    .with_partition_index(e.partition)
                                    .with_committed_offset(e.offset)
                                    .with_committed_leader_epoch(e.leader_epoch)
                                    .with_metadata(e.metadata.map(StrBytes::from_string))
                            })
                            .collect(),
                    )
                })
                .collect();
            groups.push(
                OffsetFetchResponseGroup::default()
                    .with_group_id(GroupId(group.group_id.0.clone()))
                    .with_error_code(group_code(error))
                    .with_topics(topics),
            );
        }
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let topics = request
        .topics
        .as_ref()
        .map(|topics| topics.iter().map(|t| (t.name.as_str().to_owned(), t.partition_indexes.clone())).collect());
    let (error, entries) = fetch_group(conn, request.group_id.as_str(), topics).await;
    let topics = by_topic(entries)
        .into_iter()
        .map(|(name, entries)| {
            OffsetFetchResponseTopic::default().with_name(topic_name(&name)).with_partitions(
                entries
                    .into_iter()
                    .map(|e| {
                        OffsetFetchResponsePartition::default()
                            .with_partition_index(e.partition)
                            .with_committed_offset(e.offset)
                            .with_committed_leader_epoch(if version >= 5 { e.leader_epoch } else { -1 })
                            .with_metadata(e.metadata.map(StrBytes::from_string))
                            // Before v2 the group error is reported on every partition.
                            .with_error_code(if version < 2 { group_code(error) } else { 0 })
                    })
                    .collect(),
            )
        })
        .collect();
    let response = OffsetFetchResponse::default().with_topics(topics);
    if version >= 2 { response.with_error_code(group_code(error)) } else { response }
}
