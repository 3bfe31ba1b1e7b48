//! OffsetForLeaderEpoch (KIP-101, KIP-320): where a leader epoch ended in a partition's log, so a
//! consumer (or, later, a follower) can tell whether its position survived a leader change.

use std::rc::Rc;

use kafka_protocol::messages::offset_for_leader_epoch_response::{EpochEndOffset, OffsetForLeaderTopicResult};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use super::{locate, scatter};
use crate::kafka::connection::Connection;
use crate::kafka::errors::partition_error;
use crate::model::TopicPartition;
use crate::partition::{PartitionError, PartitionManager};
use crate::security::acl;

/// Answers OffsetForLeaderEpoch.
pub async fn handle(
    conn: &Rc<Connection>,
    request: OffsetForLeaderEpochRequest,
    _version: i16,
) -> OffsetForLeaderEpochResponse {
    let metadata = conn.ctx.view();
    let mut slots: Vec<EpochEndOffset> = Vec::new();
    let mut shape = Vec::new();
    let mut routed = Vec::new();
    // Followers (replica id >= 0) need CLUSTER_ACTION on the cluster; clients DESCRIBE on the topic.
    let replica = request.replica_id.0 >= 0;
    let replicating = replica && conn.cluster_allowed(acl::op::CLUSTER_ACTION);
    for topic in &request.topics {
        shape.push((topic.topic.clone(), topic.partitions.len()));
        let authorized = if replica {
            replicating
        } else {
            conn.allowed(acl::op::DESCRIBE, acl::resource::TOPIC, topic.topic.as_str())
        };
        for p in &topic.partitions {
            let slot = slots.len();
            slots.push(EpochEndOffset::default().with_partition(p.partition).with_leader_epoch(-1).with_end_offset(-1));
            if !authorized {
                slots[slot].error_code = kafka_protocol::error::ResponseError::TopicAuthorizationFailed.code();
                continue;
            }
            match locate(&metadata, topic.topic.as_str(), p.partition) {
                Ok((key, shard)) => routed.push((shard, slot, (key, p.leader_epoch, p.current_leader_epoch))),
                Err(code) => slots[slot].error_code = code.code(),
            }
        }
    }
    let work = |partitions: Rc<PartitionManager>, parts: Vec<(TopicPartition, i32, i32)>| async move {
        parts
            .into_iter()
            .map(|(key, epoch, current)| match partitions.get(&key) {
                None => Err(PartitionError::UnknownTopicOrPartition),
                Some(partition) => partition.offset_for_leader_epoch(epoch, current),
            })
            .collect::<Vec<_>>()
    };
    for (slot, answer) in scatter(&conn.ctx.partitions, routed, work).await.answers().await {
        match answer {
            Some(Ok((epoch, end))) => {
                slots[slot].leader_epoch = epoch;
                slots[slot].end_offset = end;
            }
            Some(Err(err)) => slots[slot].error_code = partition_error(&err).code(),
            None => slots[slot].error_code = kafka_protocol::error::ResponseError::NotLeaderOrFollower.code(),
        }
    }
    let mut slots = slots.into_iter();
    let topics = shape
        .into_iter()
        .map(|(name, count)| {
            OffsetForLeaderTopicResult::default().with_topic(name).with_partitions(slots.by_ref().take(count).collect())
        })
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}
