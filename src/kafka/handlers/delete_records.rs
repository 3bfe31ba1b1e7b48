//! DeleteRecords: move partitions' log start offsets forward.

use std::rc::Rc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_records_response::{DeleteRecordsPartitionResult, DeleteRecordsTopicResult};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};

use super::{locate, scatter};
use crate::io;
use crate::kafka::connection::Connection;
use crate::kafka::errors::partition_error;
use crate::model::TopicPartition;
use crate::partition::{PartitionError, PartitionManager};
use crate::security::acl;

/// Answers DeleteRecords.
pub async fn handle(conn: &Rc<Connection>, request: DeleteRecordsRequest, _version: i16) -> DeleteRecordsResponse {
    let metadata = conn.ctx.view();
    let mut slots: Vec<DeleteRecordsPartitionResult> = Vec::new();
    let mut shape = Vec::new();
    let mut routed = Vec::new();
    for topic in &request.topics {
        shape.push((topic.name.clone(), topic.partitions.len()));
        let compacted_only = metadata
            .topic(topic.name.as_str())
            .and_then(|t| metadata.config_of(&t.id))
            .is_some_and(|c| c.compacted() && !c.retention_enabled());
        let authorized = conn.allowed(acl::op::DELETE, acl::resource::TOPIC, topic.name.as_str());
        for p in &topic.partitions {
            let slot = slots.len();
            slots.push(
                DeleteRecordsPartitionResult::default().with_partition_index(p.partition_index).with_low_watermark(-1),
            );
            if !authorized {
                slots[slot].error_code = ResponseError::TopicAuthorizationFailed.code();
                continue;
            }
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
    // Deleted here first, then the answer waits (within the request's timeout) until the
    // in-sync followers have deleted too.
    let timeout = Duration::from_millis(request.timeout_ms.max(0) as u64);
    let work = move |partitions: Rc<PartitionManager>, parts: Vec<(TopicPartition, i64)>| async move {
        let mut deleted = Vec::with_capacity(parts.len());
        for (key, offset) in parts {
            deleted.push(match partitions.get(&key) {
                None => Err(PartitionError::UnknownTopicOrPartition),
                Some(partition) => partition.delete_records(offset).await.map(|low| (partition, low)),
            });
        }
        let waits = deleted.into_iter().map(|d| async move {
            let (partition, low) = d?;
            io::timeout(timeout, partition.low_watermark_reached(low)).await.unwrap_or(Err(PartitionError::Timeout))
        });
        futures_util::future::join_all(waits).await
    };
    for (slot, answer) in scatter(&conn.ctx.partitions, routed, work).await.answers().await {
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
