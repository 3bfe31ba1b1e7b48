//! ElectLeaders: move leadership back to the preferred replica, or (unclean) give a leaderless
//! partition any live replica. The active controller decides; this broker forwards.

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::cluster::{ControllerRequest, ControllerResponse};
use crate::kafka::connection::Connection;
use crate::kafka::errors::{controller_error, controller_result};
use crate::security::acl;

/// Kafka's election type for an unclean election.
const ELECTION_UNCLEAN: i8 = 1;

/// Answers ElectLeaders.
pub async fn handle(conn: &Rc<Connection>, request: ElectLeadersRequest, version: i16) -> ElectLeadersResponse {
    if !conn.cluster_allowed(acl::op::ALTER) {
        return ElectLeadersResponse::default()
            .with_error_code(kafka_protocol::error::ResponseError::ClusterAuthorizationFailed.code());
    }
    let unclean = version >= 1 && request.election_type == ELECTION_UNCLEAN;
    let partitions: Option<Vec<(String, i32)>> = request.topic_partitions.as_ref().map(|topics| {
        topics.iter().flat_map(|t| t.partitions.iter().map(move |p| (t.topic.as_str().to_owned(), *p))).collect()
    });
    let response = ElectLeadersResponse::default();
    let elections = match conn.ctx.ask_controller(ControllerRequest::ElectLeaders { partitions, unclean }).await {
        Ok(ControllerResponse::Elections(elections)) => elections,
        Ok(_) => return response.with_error_code(kafka_protocol::error::ResponseError::UnknownServerError.code()),
        Err(err) => return response.with_error_code(controller_error(&err).code()),
    };
    let mut by_topic: BTreeMap<String, Vec<PartitionResult>> = BTreeMap::new();
    for (topic, partition, outcome) in elections {
        let (code, message) = controller_result(&outcome);
        by_topic.entry(topic).or_default().push(
            PartitionResult::default()
                .with_partition_id(partition)
                .with_error_code(code)
                .with_error_message(message.map(StrBytes::from_string)),
        );
    }
    let results = by_topic
        .into_iter()
        .map(|(topic, partition_result)| {
            ReplicaElectionResult::default()
                .with_topic(TopicName(StrBytes::from_string(topic)))
                .with_partition_result(partition_result)
        })
        .collect();
    response.with_replica_election_results(results)
}
