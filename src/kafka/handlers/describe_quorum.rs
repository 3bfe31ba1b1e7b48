//! DescribeQuorum (KIP-595): the metadata quorum as its leader sees it: leader, term (the
//! metadata partition's leader epoch), commit index (its high watermark), and how far each voter
//! and each broker that is not a voter has come. Forwarded to the active controller.

use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_quorum_response::{Listener, Node, PartitionData, ReplicaState, TopicData};
use kafka_protocol::messages::{BrokerId, DescribeQuorumRequest, DescribeQuorumResponse};
use kafka_protocol::protocol::StrBytes;

use crate::cluster::{ControllerRequest, ControllerResponse};
use crate::kafka::connection::Connection;
use crate::kafka::errors::controller_error;
use crate::security::acl;

/// The name Kafka gives the metadata log's topic.
const METADATA_TOPIC: &str = "__cluster_metadata";

/// Answers DescribeQuorum.
pub async fn handle(conn: &Rc<Connection>, request: DescribeQuorumRequest, version: i16) -> DescribeQuorumResponse {
    if !conn.cluster_allowed(acl::op::DESCRIBE) {
        return DescribeQuorumResponse::default()
            .with_error_code(kafka_protocol::error::ResponseError::ClusterAuthorizationFailed.code());
    }
    let response = DescribeQuorumResponse::default();
    let asks_metadata = request.topics.len() == 1
        && request.topics[0].topic_name.as_str() == METADATA_TOPIC
        && request.topics[0].partitions.len() == 1
        && request.topics[0].partitions[0].partition_index == 0;
    if !asks_metadata {
        return response.with_error_code(ResponseError::InvalidRequest.code()).with_error_message(Some(
            StrBytes::from_static_str("only partition 0 of __cluster_metadata has a quorum"),
        ));
    }
    let (leader, term, commit, voters, observers) =
        match conn.ctx.ask_controller(ControllerRequest::DescribeQuorum).await {
            Ok(ControllerResponse::Quorum { leader, term, commit, voters, observers }) => {
                (leader, term, commit, voters, observers)
            }
            Ok(_) => return response.with_error_code(ResponseError::UnknownServerError.code()),
            Err(err) => {
                return response
                    .with_error_code(controller_error(&err).code())
                    .with_error_message(Some(StrBytes::from_string(err.to_string())));
            }
        };
    let as_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let current_voters = voters
        .iter()
        .map(|v| {
            let caught_up = v.matched >= commit;
            ReplicaState::default()
                .with_replica_id(BrokerId(v.id))
                .with_log_end_offset(as_i64(v.matched))
                .with_last_fetch_timestamp(if version >= 1 { v.last_heard_ms } else { -1 })
                .with_last_caught_up_timestamp(if version >= 1 && caught_up { v.last_heard_ms } else { -1 })
        })
        .collect();
    let observers = observers
        .iter()
        .map(|(id, applied)| {
            ReplicaState::default()
                .with_replica_id(BrokerId(*id))
                .with_log_end_offset(as_i64(*applied))
                .with_last_fetch_timestamp(-1)
                .with_last_caught_up_timestamp(-1)
        })
        .collect();
    let partition = PartitionData::default()
        .with_partition_index(0)
        .with_leader_id(BrokerId(leader))
        .with_leader_epoch(i32::try_from(term).unwrap_or(i32::MAX))
        .with_high_watermark(as_i64(commit))
        .with_current_voters(current_voters)
        .with_observers(observers);
    let nodes = if version >= 2 {
        voters
            .iter()
            .map(|v| {
                Node::default().with_node_id(BrokerId(v.id)).with_listeners(vec![
                    Listener::default()
                        .with_name(StrBytes::from_static_str("CONTROLLER"))
                        .with_host(StrBytes::from_string(v.addr.ip().to_string()))
                        .with_port(v.addr.port()),
                ])
            })
            .collect()
    } else {
        Vec::new()
    };
    response
        .with_topics(vec![
            TopicData::default()
                .with_topic_name(kafka_protocol::messages::TopicName(StrBytes::from_static_str(METADATA_TOPIC)))
                .with_partitions(vec![partition]),
        ])
        .with_nodes(nodes)
}
