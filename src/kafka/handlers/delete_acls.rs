//! DeleteAcls: every ACL each filter matches is removed (needs ALTER on the cluster).

use std::collections::BTreeSet;
use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_acls_response::{DeleteAclsFilterResult, DeleteAclsMatchingAcl};
use kafka_protocol::messages::{DeleteAclsRequest, DeleteAclsResponse};
use kafka_protocol::protocol::StrBytes;

use crate::cluster::ControllerRequest;
use crate::kafka::connection::Connection;
use crate::kafka::errors::controller_error;
use crate::security::acl::{AclFilter, op};

/// Answers DeleteAcls.
pub async fn handle(conn: &Rc<Connection>, request: DeleteAclsRequest, _version: i16) -> DeleteAclsResponse {
    let failed = |code: ResponseError, why: String| {
        DeleteAclsFilterResult::default()
            .with_error_code(code.code())
            .with_error_message(Some(StrBytes::from_string(why)))
    };
    if !conn.cluster_allowed(op::ALTER) {
        let results = request
            .filters
            .iter()
            .map(|_| failed(ResponseError::ClusterAuthorizationFailed, "ALTER on the cluster is needed".into()))
            .collect();
        return DeleteAclsResponse::default().with_filter_results(results);
    }
    let view = conn.ctx.view();
    let mut ids = BTreeSet::new();
    let mut matched = Vec::new();
    for f in &request.filters {
        let filter = AclFilter {
            resource_type: f.resource_type_filter,
            resource_name: f.resource_name_filter.as_ref().map(|s| s.as_str().to_owned()),
            pattern_type: f.pattern_type_filter,
            principal: f.principal_filter.as_ref().map(|s| s.as_str().to_owned()),
            host: f.host_filter.as_ref().map(|s| s.as_str().to_owned()),
            operation: f.operation,
            permission: f.permission_type,
        };
        let acls: Vec<DeleteAclsMatchingAcl> = view
            .image
            .acls
            .iter()
            .filter(|(_, b)| filter.matches(b))
            .map(|(id, b)| {
                ids.insert(*id);
                DeleteAclsMatchingAcl::default()
                    .with_resource_type(b.resource_type)
                    .with_resource_name(StrBytes::from_string(b.resource_name.clone()))
                    .with_pattern_type(b.pattern_type)
                    .with_principal(StrBytes::from_string(b.principal.clone()))
                    .with_host(StrBytes::from_string(b.host.clone()))
                    .with_operation(b.operation)
                    .with_permission_type(b.permission)
            })
            .collect();
        matched.push(acls);
    }
    let outcome = if ids.is_empty() {
        Ok(())
    } else {
        conn.ctx.ask_controller(ControllerRequest::DeleteAcls { ids: ids.into_iter().collect() }).await.map(|_| ())
    };
    let results = matched
        .into_iter()
        .map(|acls| match &outcome {
            Ok(()) => DeleteAclsFilterResult::default().with_matching_acls(acls),
            Err(err) => failed(controller_error(err), err.to_string()),
        })
        .collect();
    DeleteAclsResponse::default().with_filter_results(results)
}
