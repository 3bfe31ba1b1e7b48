//! JoinGroup (with the MEMBER_ID_REQUIRED round trip of KIP-394 from v4).

use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};
use kafka_protocol::protocol::StrBytes;

use super::{call_group, client_host};
use crate::group::{GroupCall, GroupError, JoinRequest, JoinResponse};
use crate::kafka::connection::Connection;
use crate::kafka::errors::group_code;
use crate::security::acl;

/// Answers JoinGroup (after the rebalance completes).
pub async fn handle(conn: &Rc<Connection>, request: JoinGroupRequest, version: i16) -> JoinGroupResponse {
    if !conn.allowed(acl::op::READ, acl::resource::GROUP, request.group_id.as_str()) {
        return JoinGroupResponse::default().with_error_code(ResponseError::GroupAuthorizationFailed.code());
    }
    let join = JoinRequest {
        group_id: request.group_id.as_str().to_owned(),
        member_id: request.member_id.as_str().to_owned(),
        group_instance_id: request.group_instance_id.as_ref().map(|s| s.as_str().to_owned()),
        client_id: String::new(),
        client_host: client_host(conn),
        session_timeout_ms: request.session_timeout_ms,
        rebalance_timeout_ms: if version >= 1 { request.rebalance_timeout_ms } else { request.session_timeout_ms },
        protocol_type: request.protocol_type.as_str().to_owned(),
        protocols: request.protocols.iter().map(|p| (p.name.as_str().to_owned(), p.metadata.clone())).collect(),
        require_known_member_id: version >= 4,
    };
    let group_id = join.group_id.clone();
    let outcome: JoinResponse =
        call_group(conn, &group_id, |reply| GroupCall::Join(join_with_client(join, conn), reply)).await.unwrap_or_else(
            |error| JoinResponse {
                error: Some(error),
                generation_id: -1,
                member_id: request.member_id.as_str().to_owned(),
                ..Default::default()
            },
        );
    let response = JoinGroupResponse::default()
        .with_error_code(group_code(outcome.error))
        .with_generation_id(outcome.generation_id)
        .with_protocol_type(if version >= 7 { outcome.protocol_type.map(StrBytes::from_string) } else { None })
        .with_protocol_name(
            outcome.protocol_name.map(StrBytes::from_string).or_else(|| (version < 7).then(StrBytes::default)),
        )
        .with_leader(StrBytes::from_string(outcome.leader))
        .with_member_id(StrBytes::from_string(outcome.member_id))
        .with_members(
            outcome
                .members
                .into_iter()
                .map(|m| {
                    JoinGroupResponseMember::default()
                        .with_member_id(StrBytes::from_string(m.member_id))
                        .with_group_instance_id(if version >= 5 {
                            m.group_instance_id.map(StrBytes::from_string)
                        } else {
                            None
                        })
                        .with_metadata(m.metadata)
                })
                .collect(),
        );
    if outcome.error == Some(GroupError::MemberIdRequired) && version < 4 {
        // Cannot happen (v4+ only), kept as a guard against answering an old client with it.
        return response.with_error_code(group_code(Some(GroupError::UnknownMemberId)));
    }
    response
}

fn join_with_client(mut join: JoinRequest, conn: &Connection) -> JoinRequest {
    join.client_id = conn.client_id.borrow().clone().unwrap_or_default();
    join
}
