//! OffsetDelete: drop a group's committed offsets for partitions it no longer consumes.

use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_delete_response::{OffsetDeleteResponsePartition, OffsetDeleteResponseTopic};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse};

use super::call_group;
use crate::group::GroupCall;
use crate::kafka::connection::Connection;
use crate::kafka::errors::group_code;
use crate::security::acl;

/// Answers OffsetDelete.
pub async fn handle(conn: &Rc<Connection>, request: OffsetDeleteRequest, _version: i16) -> OffsetDeleteResponse {
    let group_id = request.group_id.as_str().to_owned();
    if !conn.allowed(acl::op::DELETE, acl::resource::GROUP, &group_id) {
        return OffsetDeleteResponse::default().with_error_code(ResponseError::GroupAuthorizationFailed.code());
    }
    let partitions: Vec<(String, i32)> = request
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(move |p| (t.name.as_str().to_owned(), p.partition_index)))
        .collect();
    let (error, results) = call_group(conn, &group_id, |reply| GroupCall::DeleteOffsets {
        group_id: group_id.clone(),
        partitions: partitions.clone(),
        reply,
    })
    .await
    .unwrap_or_else(|e| (Some(e), Vec::new()));
    if error.is_some() {
        return OffsetDeleteResponse::default().with_error_code(group_code(error));
    }
    let mut results = results.into_iter();
    let topics = request
        .topics
        .iter()
        .map(|t| {
            OffsetDeleteResponseTopic::default().with_name(t.name.clone()).with_partitions(
                t.partitions
                    .iter()
                    .map(|p| {
                        OffsetDeleteResponsePartition::default()
                            .with_partition_index(p.partition_index)
                            .with_error_code(group_code(results.next().flatten()))
                    })
                    .collect(),
            )
        })
        .collect();
    OffsetDeleteResponse::default().with_topics(topics)
}
