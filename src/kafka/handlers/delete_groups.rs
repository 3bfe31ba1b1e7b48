//! DeleteGroups: only groups without members can be deleted.

use std::rc::Rc;

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};

use super::call_group;
use crate::group::{GroupCall, GroupError};
use crate::kafka::connection::Connection;
use crate::kafka::errors::group_code;
use crate::security::acl;

/// Answers DeleteGroups.
pub async fn handle(conn: &Rc<Connection>, request: DeleteGroupsRequest, _version: i16) -> DeleteGroupsResponse {
    let mut results = Vec::new();
    for group_id in &request.groups_names {
        let id = group_id.as_str().to_owned();
        let error = if conn.allowed(acl::op::DELETE, acl::resource::GROUP, &id) {
            call_group(conn, &id, |reply| GroupCall::Delete { group_id: id.clone(), reply }).await.unwrap_or_else(Some)
        } else {
            Some(GroupError::NotAuthorized)
        };
        results
            .push(DeletableGroupResult::default().with_group_id(group_id.clone()).with_error_code(group_code(error)));
    }
    DeleteGroupsResponse::default().with_results(results)
}
