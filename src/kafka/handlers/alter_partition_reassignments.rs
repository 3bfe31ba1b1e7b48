//! AlterPartitionReassignments (KIP-455): move partitions to other replicas, or cancel a move.
//! The active controller adds the new replicas, waits until they are in sync, then drops the old
//! ones (handing leadership over when the leader leaves). This broker forwards.

use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::{AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse};
use kafka_protocol::protocol::StrBytes;

use crate::cluster::{ControllerRequest, ControllerResponse};
use crate::kafka::connection::Connection;
use crate::kafka::errors::{controller_error, controller_result};
use crate::security::acl;

/// Answers AlterPartitionReassignments.
pub async fn handle(
    conn: &Rc<Connection>,
    request: AlterPartitionReassignmentsRequest,
    version: i16,
) -> AlterPartitionReassignmentsResponse {
    if !conn.cluster_allowed(acl::op::ALTER) {
        return AlterPartitionReassignmentsResponse::default()
            .with_error_code(kafka_protocol::error::ResponseError::ClusterAuthorizationFailed.code());
    }
    let response = AlterPartitionReassignmentsResponse::default();
    let allow_factor_change = version < 1 || request.allow_replication_factor_change;
    let view = conn.ctx.view();
    // Refused here, per partition: a change of replication factor the request forbids.
    let mut refused: Vec<Option<(i16, String)>> = Vec::new();
    let mut changes = Vec::new();
    for topic in &request.topics {
        for p in &topic.partitions {
            let target: Option<Vec<i32>> = p.replicas.as_ref().map(|r| r.iter().map(|b| b.0).collect());
            let current = view
                .topic(topic.name.as_str())
                .and_then(|t| t.partition(p.partition_index))
                .map(|p| p.target_replicas().len());
            let changes_factor = matches!((&target, current), (Some(t), Some(c)) if t.len() != c);
            if changes_factor && !allow_factor_change {
                refused.push(Some((
                    ResponseError::InvalidReplicationFactor.code(),
                    "the request does not allow a change of replication factor".into(),
                )));
            } else {
                refused.push(None);
                changes.push((topic.name.as_str().to_owned(), p.partition_index, target));
            }
        }
    }
    let results = match conn.ctx.ask_controller(ControllerRequest::AlterReassignments { changes }).await {
        Ok(ControllerResponse::Done(results)) => results,
        Ok(_) => return response.with_error_code(ResponseError::UnknownServerError.code()),
        Err(err) => return response.with_error_code(controller_error(&err).code()),
    };
    let mut results = results.into_iter();
    let mut refused = refused.into_iter();
    let responses = request
        .topics
        .iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    let (code, message) = match refused.next().flatten() {
                        Some((code, message)) => (code, Some(message)),
                        None => results
                            .next()
                            .map_or((ResponseError::UnknownServerError.code(), None), |r| controller_result(&r)),
                    };
                    ReassignablePartitionResponse::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code)
                        .with_error_message(message.map(StrBytes::from_string))
                })
                .collect();
            ReassignableTopicResponse::default().with_name(topic.name.clone()).with_partitions(partitions)
        })
        .collect();
    response.with_allow_replication_factor_change(allow_factor_change).with_responses(responses)
}
