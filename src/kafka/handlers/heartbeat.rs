//! Heartbeat: keeps a member's session alive and tells it when to rejoin.

use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use super::call_group;
use crate::group::GroupCall;
use crate::kafka::connection::Connection;
use crate::kafka::errors::group_code;
use crate::security::acl;

/// Answers Heartbeat.
pub async fn handle(conn: &Rc<Connection>, request: HeartbeatRequest, _version: i16) -> HeartbeatResponse {
    if !conn.allowed(acl::op::READ, acl::resource::GROUP, request.group_id.as_str()) {
        return HeartbeatResponse::default().with_error_code(ResponseError::GroupAuthorizationFailed.code());
    }
    let group_id = request.group_id.as_str().to_owned();
    let error = call_group(conn, &group_id, |reply| GroupCall::Heartbeat {
        group_id: group_id.clone(),
        generation_id: request.generation_id,
        member_id: request.member_id.as_str().to_owned(),
        group_instance_id: request.group_instance_id.as_ref().map(|s| s.as_str().to_owned()),
        reply,
    })
    .await
    .unwrap_or_else(Some);
    HeartbeatResponse::default().with_error_code(group_code(error))
}
