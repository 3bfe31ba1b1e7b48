//! SyncGroup: the leader's assignment, and every member's share of it.

use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};
use kafka_protocol::protocol::StrBytes;

use super::call_group;
use crate::group::{GroupCall, SyncRequest, SyncResponse};
use crate::kafka::connection::Connection;
use crate::kafka::errors::group_code;
use crate::security::acl;

/// Answers SyncGroup.
pub async fn handle(conn: &Rc<Connection>, request: SyncGroupRequest, version: i16) -> SyncGroupResponse {
    if !conn.allowed(acl::op::READ, acl::resource::GROUP, request.group_id.as_str()) {
        return SyncGroupResponse::default().with_error_code(ResponseError::GroupAuthorizationFailed.code());
    }
    let group_id = request.group_id.as_str().to_owned();
    let sync = SyncRequest {
        group_id: group_id.clone(),
        generation_id: request.generation_id,
        member_id: request.member_id.as_str().to_owned(),
        group_instance_id: request.group_instance_id.as_ref().map(|s| s.as_str().to_owned()),
        protocol_type: request.protocol_type.as_ref().map(|s| s.as_str().to_owned()),
        protocol_name: request.protocol_name.as_ref().map(|s| s.as_str().to_owned()),
        assignments: request
            .assignments
            .iter()
            .map(|a| (a.member_id.as_str().to_owned(), a.assignment.clone()))
            .collect(),
    };
    let outcome = call_group(conn, &group_id, |reply| GroupCall::Sync(sync, reply))
        .await
        .unwrap_or_else(|error| SyncResponse { error: Some(error), ..Default::default() });
    let response =
        SyncGroupResponse::default().with_error_code(group_code(outcome.error)).with_assignment(outcome.assignment);
    if version >= 5 {
        response
            .with_protocol_type(outcome.protocol_type.map(StrBytes::from_string))
            .with_protocol_name(outcome.protocol_name.map(StrBytes::from_string))
    } else {
        response
    }
}
