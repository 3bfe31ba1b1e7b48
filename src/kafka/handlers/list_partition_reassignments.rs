//! ListPartitionReassignments (KIP-455): the reassignments in progress, from this broker's
//! metadata image (every broker holds the same one).

use std::rc::Rc;

use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{BrokerId, ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse};

use crate::cluster::PartitionImage;
use crate::kafka::connection::Connection;
use crate::security::acl;

fn ids(brokers: &[i32]) -> Vec<BrokerId> {
    brokers.iter().copied().map(BrokerId).collect()
}

/// Answers ListPartitionReassignments.
pub async fn handle(
    conn: &Rc<Connection>,
    request: ListPartitionReassignmentsRequest,
    _version: i16,
) -> ListPartitionReassignmentsResponse {
    if !conn.cluster_allowed(acl::op::DESCRIBE) {
        return ListPartitionReassignmentsResponse::default()
            .with_error_code(kafka_protocol::error::ResponseError::ClusterAuthorizationFailed.code());
    }
    let view = conn.ctx.view();
    let describe = |p: &PartitionImage| {
        OngoingPartitionReassignment::default()
            .with_partition_index(p.index)
            .with_replicas(ids(&p.replicas))
            .with_adding_replicas(ids(&p.adding))
            .with_removing_replicas(ids(&p.removing))
    };
    let mut topics = Vec::new();
    match &request.topics {
        None => {
            for topic in view.image.topics() {
                let partitions: Vec<_> = topic.partitions.iter().filter(|p| p.reassigning()).map(describe).collect();
                if !partitions.is_empty() {
                    topics.push(
                        OngoingTopicReassignment::default()
                            .with_name(kafka_protocol::messages::TopicName(topic.name.clone().into()))
                            .with_partitions(partitions),
                    );
                }
            }
        }
        Some(asked) => {
            for t in asked {
                let Some(topic) = view.topic(t.name.as_str()) else { continue };
                let partitions: Vec<_> = t
                    .partition_indexes
                    .iter()
                    .filter_map(|i| topic.partition(*i))
                    .filter(|p| p.reassigning())
                    .map(describe)
                    .collect();
                if !partitions.is_empty() {
                    topics.push(
                        OngoingTopicReassignment::default().with_name(t.name.clone()).with_partitions(partitions),
                    );
                }
            }
        }
    }
    ListPartitionReassignmentsResponse::default().with_topics(topics)
}
