//! DescribeProducers: the idempotent producers a partition's leader remembers (id, epoch, last
//! sequence, when it last appended), as `kafka-producer-state` and admin clients show them.

use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_producers_response::{PartitionResponse, ProducerState, TopicResponse};
use kafka_protocol::messages::{DescribeProducersRequest, DescribeProducersResponse, ProducerId};

use crate::kafka::connection::Connection;
use crate::security::acl;

/// Answers DescribeProducers.
pub async fn handle(
    conn: &Rc<Connection>,
    request: DescribeProducersRequest,
    _version: i16,
) -> DescribeProducersResponse {
    let view = conn.ctx.view();
    let mut topics = Vec::new();
    for topic in &request.topics {
        let name = topic.name.as_str();
        let found = view.topic(name).cloned();
        let authorized = conn.allowed(acl::op::READ, acl::resource::TOPIC, name);
        let mut partitions = Vec::new();
        for &index in &topic.partition_indexes {
            let mut out = PartitionResponse::default().with_partition_index(index);
            let located = match &found {
                _ if !authorized => Err(ResponseError::TopicAuthorizationFailed),
                None => Err(ResponseError::UnknownTopicOrPartition),
                Some(meta) => super::locate_in(&view, meta, index),
            };
            match located {
                Err(code) => out.error_code = code.code(),
                Ok((key, shard)) => {
                    let producers = conn
                        .ctx
                        .partitions
                        .control_on(shard, move |manager| async move {
                            manager.get(&key).filter(|p| p.is_leader()).map(|p| p.producers())
                        })
                        .await;
                    match producers {
                        Ok(Some(producers)) => {
                            out.active_producers = producers
                                .into_iter()
                                .map(|p| {
                                    ProducerState::default()
                                        .with_producer_id(ProducerId(p.producer_id))
                                        .with_producer_epoch(i32::from(p.epoch))
                                        .with_last_sequence(p.last_sequence)
                                        .with_last_timestamp(p.last_append_ms)
                                        .with_coordinator_epoch(-1)
                                        .with_current_txn_start_offset(-1)
                                })
                                .collect();
                        }
                        Ok(None) | Err(_) => out.error_code = ResponseError::NotLeaderOrFollower.code(),
                    }
                }
            }
            partitions.push(out);
        }
        topics.push(TopicResponse::default().with_name(topic.name.clone()).with_partitions(partitions));
    }
    DescribeProducersResponse::default().with_topics(topics)
}
