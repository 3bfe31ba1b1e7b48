//! DescribeTopicPartitions (KIP-966): topics and their partitions as newer admin clients ask for
//! them instead of Metadata, a page at a time (`response_partition_limit`, resumed from a
//! cursor). Topics come in name order; an empty request lists every topic the client may see.

use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_topic_partitions_response::{
    Cursor, DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
};
use kafka_protocol::messages::{BrokerId, DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse};

use super::metadata::{brokers, offline_replicas};
use crate::kafka::connection::Connection;
use crate::model::wire::topic_name;
use crate::security::acl;

/// Answers DescribeTopicPartitions.
pub async fn handle(
    conn: &Rc<Connection>,
    request: DescribeTopicPartitionsRequest,
    _version: i16,
) -> DescribeTopicPartitionsResponse {
    let view = conn.ctx.view();
    let describable = |name: &str| conn.allowed(acl::op::DESCRIBE, acl::resource::TOPIC, name);
    let listing_all = request.topics.is_empty();
    let mut names: Vec<String> = if listing_all {
        view.image.topics().map(|t| t.name.clone()).filter(|n| describable(n)).collect()
    } else {
        request.topics.iter().map(|t| t.name.as_str().to_owned()).collect()
    };
    names.sort();
    names.dedup();
    // Resume where the cursor points: its topic from its partition, later topics whole.
    let (from_topic, from_partition) =
        request.cursor.as_ref().map_or((String::new(), 0), |c| (c.topic_name.as_str().to_owned(), c.partition_index));
    let mut budget =
        if request.response_partition_limit > 0 { request.response_partition_limit as usize } else { 2000 };
    let mut topics = Vec::new();
    let mut next_cursor = None;
    for name in names.into_iter().filter(|n| *n >= from_topic) {
        let first = if name == from_topic { from_partition.max(0) } else { 0 };
        let error = |code: ResponseError| {
            DescribeTopicPartitionsResponseTopic::default()
                .with_error_code(code.code())
                .with_name(Some(topic_name(&name)))
                .with_topic_authorized_operations(i32::MIN)
        };
        if !describable(&name) {
            topics.push(error(ResponseError::TopicAuthorizationFailed));
            continue;
        }
        let Some(topic) = view.topic(&name) else {
            topics.push(error(ResponseError::UnknownTopicOrPartition));
            continue;
        };
        if budget == 0 {
            next_cursor = Some(Cursor::default().with_topic_name(topic_name(&name)).with_partition_index(first));
            break;
        }
        let mut partitions = Vec::new();
        for p in topic.partitions.iter().filter(|p| p.index >= first) {
            if budget == 0 {
                next_cursor = Some(Cursor::default().with_topic_name(topic_name(&name)).with_partition_index(p.index));
                break;
            }
            budget -= 1;
            let offline = offline_replicas(p, &view);
            partitions.push(
                DescribeTopicPartitionsResponsePartition::default()
                    .with_error_code(if p.leader < 0 { ResponseError::LeaderNotAvailable.code() } else { 0 })
                    .with_partition_index(p.index)
                    .with_leader_id(BrokerId(p.leader))
                    .with_leader_epoch(p.leader_epoch)
                    .with_replica_nodes(brokers(&p.replicas))
                    .with_isr_nodes(brokers(&p.isr))
                    // No eligible leader replicas (KIP-966's ELR is not kept here).
                    .with_eligible_leader_replicas(Some(Vec::new()))
                    .with_last_known_elr(Some(Vec::new()))
                    .with_offline_replicas(brokers(&offline)),
            );
        }
        topics.push(
            DescribeTopicPartitionsResponseTopic::default()
                .with_name(Some(topic_name(&name)))
                .with_topic_id(topic.id)
                .with_is_internal(topic.internal)
                .with_partitions(partitions)
                .with_topic_authorized_operations(conn.authorized_operations(acl::resource::TOPIC, &name)),
        );
        if next_cursor.is_some() {
            break;
        }
    }
    DescribeTopicPartitionsResponse::default().with_topics(topics).with_next_cursor(next_cursor)
}
