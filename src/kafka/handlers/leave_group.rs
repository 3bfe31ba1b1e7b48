//! LeaveGroup (single member before v3, batched from v3): leaving triggers a rebalance at once.

use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};
use kafka_protocol::protocol::StrBytes;

use super::call_group;
use crate::group::GroupCall;
use crate::kafka::connection::Connection;
use crate::kafka::errors::group_code;
use crate::security::acl;

/// Answers LeaveGroup.
pub async fn handle(conn: &Rc<Connection>, request: LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
    if !conn.allowed(acl::op::READ, acl::resource::GROUP, request.group_id.as_str()) {
        return LeaveGroupResponse::default().with_error_code(ResponseError::GroupAuthorizationFailed.code());
    }
    let group_id = request.group_id.as_str().to_owned();
    let members: Vec<(String, Option<String>)> = if version >= 3 {
        request
            .members
            .iter()
            .map(|m| (m.member_id.as_str().to_owned(), m.group_instance_id.as_ref().map(|s| s.as_str().to_owned())))
            .collect()
    } else {
        vec![(request.member_id.as_str().to_owned(), None)]
    };
    let (error, results) = call_group(conn, &group_id, |reply| GroupCall::Leave {
        group_id: group_id.clone(),
        members: members.clone(),
        reply,
    })
    .await
    .unwrap_or_else(|e| (Some(e), Vec::new()));
    if version < 3 {
        let error = error.or_else(|| results.first().copied().flatten());
        return LeaveGroupResponse::default().with_error_code(group_code(error));
    }
    let responses = members
        .into_iter()
        .zip(results.into_iter().chain(std::iter::repeat(None)))
        .map(|((member_id, instance), error)| {
            MemberResponse::default()
                .with_member_id(StrBytes::from_string(member_id))
                .with_group_instance_id(instance.map(StrBytes::from_string))
                .with_error_code(group_code(error))
        })
        .collect();
    LeaveGroupResponse::default().with_error_code(group_code(error)).with_members(if error.is_some() {
        Vec::new()
    } else {
        responses
    })
}
