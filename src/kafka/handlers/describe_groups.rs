//! DescribeGroups.

use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse};
use kafka_protocol::protocol::StrBytes;

use super::call_group;
use crate::group::{GroupCall, GroupDescription, GroupError};
use crate::kafka::connection::Connection;
use crate::kafka::errors::group_code;
use crate::security::acl;

/// Answers DescribeGroups.
pub async fn handle(conn: &Rc<Connection>, request: DescribeGroupsRequest, version: i16) -> DescribeGroupsResponse {
    let mut groups = Vec::new();
    for group_id in &request.groups {
        let id = group_id.as_str().to_owned();
        let description = if conn.allowed(acl::op::DESCRIBE, acl::resource::GROUP, &id) {
            call_group(conn, &id, |reply| GroupCall::Describe { group_id: id.clone(), reply }).await.unwrap_or_else(
                |error| GroupDescription { error: Some(error), group_id: id.clone(), ..Default::default() },
            )
        } else {
            GroupDescription { error: Some(GroupError::NotAuthorized), group_id: id.clone(), ..Default::default() }
        };
        let mut code = group_code(description.error);
        // v6 reports a group that does not exist as such; older versions say "Dead".
        if version >= 6 && description.error.is_none() && description.state == "Dead" {
            code = ResponseError::GroupIdNotFound.code();
        }
        let members = description
            .members
            .into_iter()
            .map(|m| {
                DescribedGroupMember::default()
                    .with_member_id(StrBytes::from_string(m.member_id))
                    .with_group_instance_id(if version >= 4 {
                        m.group_instance_id.map(StrBytes::from_string)
                    } else {
                        None
                    })
                    .with_client_id(StrBytes::from_string(m.client_id))
                    .with_client_host(StrBytes::from_string(m.client_host))
                    .with_member_metadata(m.metadata)
                    .with_member_assignment(m.assignment)
            })
            .collect();
        // Only when asked for (v3+) and the group was described.
        let operations = if request.include_authorized_operations && code == 0 {
            conn.authorized_operations(acl::resource::GROUP, &id)
        } else {
            i32::MIN
        };
        groups.push(
            DescribedGroup::default()
                .with_authorized_operations(operations)
                .with_error_code(code)
                .with_group_id(group_id.clone())
                .with_group_state(StrBytes::from_string(description.state))
                .with_protocol_type(StrBytes::from_string(description.protocol_type))
                .with_protocol_data(StrBytes::from_string(description.protocol))
                .with_members(members),
        );
    }
    DescribeGroupsResponse::default().with_groups(groups)
}
