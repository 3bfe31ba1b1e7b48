//! OffsetCommit: committed offsets are stored in the group's `__consumer_offsets` partition
//! before the commit is acknowledged.

use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};

use super::call_group;
use crate::group::{GroupCall, OffsetCommitEntry};
use crate::kafka::connection::Connection;
use crate::kafka::errors::group_code;
use crate::security::acl;

/// Answers OffsetCommit.
pub async fn handle(conn: &Rc<Connection>, request: OffsetCommitRequest, _version: i16) -> OffsetCommitResponse {
    let metadata = conn.ctx.view();
    let group_id = request.group_id.as_str().to_owned();
    // (topic index, partition index) → position in the coordinator call, or an early error.
    let mut results: Vec<Vec<Result<usize, ResponseError>>> = Vec::new();
    let mut offsets = Vec::new();
    // READ on the group and on each topic.
    let group_ok = conn.allowed(acl::op::READ, acl::resource::GROUP, &group_id);
    for topic in &request.topics {
        let known = metadata.topic(topic.name.as_str());
        let topic_ok = group_ok && conn.allowed(acl::op::READ, acl::resource::TOPIC, topic.name.as_str());
        results.push(
            topic
                .partitions
                .iter()
                .map(|p| {
                    if !group_ok {
                        return Err(ResponseError::GroupAuthorizationFailed);
                    }
                    if !topic_ok {
                        return Err(ResponseError::TopicAuthorizationFailed);
                    }
                    let exists = known.is_some_and(|t| (0..t.partitions.len() as i32).contains(&p.partition_index));
                    if !exists {
                        return Err(ResponseError::UnknownTopicOrPartition);
                    }
                    offsets.push(OffsetCommitEntry {
                        topic: topic.name.as_str().to_owned(),
                        partition: p.partition_index,
                        offset: p.committed_offset,
                        leader_epoch: p.committed_leader_epoch,
                        metadata: p.committed_metadata.as_ref().map(|m| m.as_str().to_owned()),
                    });
                    Ok(offsets.len() - 1)
                })
                .collect(),
        );
    }
    let count = offsets.len();
    let outcome = if offsets.is_empty() {
        Ok(Vec::new())
    } else {
        call_group(conn, &group_id, |reply| GroupCall::Commit {
            group_id: group_id.clone(),
            generation_id: request.generation_id_or_member_epoch,
            member_id: request.member_id.as_str().to_owned(),
            group_instance_id: request.group_instance_id.as_ref().map(|s| s.as_str().to_owned()),
            offsets,
            reply,
        })
        .await
    };
    let codes: Vec<i16> = match outcome {
        Ok(errors) => errors.into_iter().map(group_code).collect(),
        Err(error) => vec![group_code(Some(error)); count],
    };
    let topics = request
        .topics
        .iter()
        .zip(results)
        .map(|(topic, partitions)| {
            OffsetCommitResponseTopic::default().with_name(topic.name.clone()).with_partitions(
                topic
                    .partitions
                    .iter()
                    .zip(partitions)
                    .map(|(p, slot)| {
                        let code = match slot {
                            Ok(i) => codes.get(i).copied().unwrap_or(ResponseError::CoordinatorNotAvailable.code()),
                            Err(e) => e.code(),
                        };
                        OffsetCommitResponsePartition::default()
                            .with_partition_index(p.partition_index)
                            .with_error_code(code)
                    })
                    .collect(),
            )
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}
