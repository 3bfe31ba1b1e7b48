//! DeleteRecords: move partitions' log start offsets forward.

use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_records_response::{DeleteRecordsPartitionResult, DeleteRecordsTopicResult};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};

use super::{locate, scatter};
use crate::kafka::connection::Connection;
use crate::kafka::errors::partition_error;
use crate::shard::{DeleteRecordsCall, ShardMessage};

/// Answers DeleteRecords.
pub async fn handle(conn: &Rc<Connection>, request: DeleteRecordsRequest, _version: i16) -> DeleteRecordsResponse {
    let metadata = conn.shard.metadata();
    let mut slots: Vec<DeleteRecordsPartitionResult> = Vec::new();
    let mut shape = Vec::new();
    let mut routed = Vec::new();
    for topic in &request.topics {
        shape.push((topic.name.clone(), topic.partitions.len()));
        let compacted_only =
            metadata.topic(topic.name.as_str()).is_some_and(|t| t.config.compact && !t.config.retention_enabled());
        for p in &topic.partitions {
            let slot = slots.len();
            slots.push(
                DeleteRecordsPartitionResult::default().with_partition_index(p.partition_index).with_low_watermark(-1),
            );
            if compacted_only {
                slots[slot].error_code = ResponseError::PolicyViolation.code();
                continue;
            }
            match locate(&metadata, topic.name.as_str(), p.partition_index) {
                Ok((key, shard)) => routed.push((shard, slot, (key, p.offset))),
                Err(code) => slots[slot].error_code = code.code(),
            }
        }
    }
    let message = |parts, reply| ShardMessage::DeleteRecords(DeleteRecordsCall { parts, reply });
    for (slot, answer) in scatter(&conn.shard.router, routed, message).await.answers().await {
        match answer {
            Some(Ok(low)) => slots[slot].low_watermark = low,
            Some(Err(err)) => slots[slot].error_code = partition_error(&err).code(),
            None => slots[slot].error_code = ResponseError::NotLeaderOrFollower.code(),
        }
    }
    let mut slots = slots.into_iter();
    let topics = shape
        .into_iter()
        .map(|(name, count)| {
            DeleteRecordsTopicResult::default().with_name(name).with_partitions(slots.by_ref().take(count).collect())
        })
        .collect();
    DeleteRecordsResponse::default().with_topics(topics)
}
