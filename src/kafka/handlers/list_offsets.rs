//! ListOffsets: earliest, latest, by timestamp, max timestamp.

use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use super::{locate, scatter};
use crate::kafka::connection::Connection;
use crate::kafka::errors::partition_error;
use crate::model::TopicPartition;
use crate::partition::{Isolation, PartitionError, PartitionManager};
use crate::security::acl;

/// Answers ListOffsets.
pub async fn handle(conn: &Rc<Connection>, request: ListOffsetsRequest, version: i16) -> ListOffsetsResponse {
    let metadata = conn.ctx.view();
    let isolation = Isolation::for_consumer(request.isolation_level);
    // One slot per requested partition, in request order.
    let mut slots: Vec<ListOffsetsPartitionResponse> = Vec::new();
    let mut shape: Vec<(kafka_protocol::messages::TopicName, usize)> = Vec::new();
    let mut routed = Vec::new();
    for topic in &request.topics {
        shape.push((topic.name.clone(), topic.partitions.len()));
        let authorized = conn.allowed(acl::op::DESCRIBE, acl::resource::TOPIC, topic.name.as_str());
        for p in &topic.partitions {
            let slot = slots.len();
            slots.push(ListOffsetsPartitionResponse::default().with_partition_index(p.partition_index));
            if !authorized {
                slots[slot].error_code = ResponseError::TopicAuthorizationFailed.code();
                continue;
            }
            match locate(&metadata, topic.name.as_str(), p.partition_index) {
                Ok((key, shard)) => routed.push((shard, slot, (key, p.timestamp, p.current_leader_epoch))),
                Err(code) => slots[slot].error_code = code.code(),
            }
            if p.timestamp == -3 && version < 7 || p.timestamp == -4 && version < 8 || p.timestamp == -5 && version < 9
            {
                slots[slot].error_code = ResponseError::UnsupportedVersion.code();
            }
        }
    }
    let routed = routed.into_iter().filter(|(_, slot, _)| slots[*slot].error_code == 0);
    let work = move |partitions: Rc<PartitionManager>, parts: Vec<(TopicPartition, i64, i32)>| async move {
        let mut results = Vec::with_capacity(parts.len());
        for (key, timestamp, epoch) in parts {
            results.push(match partitions.get(&key) {
                None => Err(PartitionError::UnknownTopicOrPartition),
                Some(partition) => partition.list_offset(timestamp, epoch, isolation).await,
            });
        }
        results
    };
    for (slot, answer) in scatter(&conn.ctx.partitions, routed, work).await.answers().await {
        match answer {
            Some(Ok(listed)) => {
                slots[slot].timestamp = listed.timestamp;
                slots[slot].offset = listed.offset;
                slots[slot].leader_epoch = if version >= 4 { listed.leader_epoch } else { -1 };
            }
            Some(Err(err)) => slots[slot].error_code = partition_error(&err).code(),
            None => slots[slot].error_code = ResponseError::NotLeaderOrFollower.code(),
        }
    }
    let mut slots = slots.into_iter();
    let topics = shape
        .into_iter()
        .map(|(name, count)| {
            ListOffsetsTopicResponse::default().with_name(name).with_partitions(slots.by_ref().take(count).collect())
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}
