//! DescribeAcls: the ACLs a filter matches, grouped by resource pattern (needs DESCRIBE on the
//! cluster).

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::{DescribeAclsRequest, DescribeAclsResponse};
use kafka_protocol::protocol::StrBytes;

use crate::kafka::connection::Connection;
use crate::security::acl::{AclFilter, op};

/// Answers DescribeAcls.
pub async fn handle(conn: &Rc<Connection>, request: DescribeAclsRequest, _version: i16) -> DescribeAclsResponse {
    if !conn.cluster_allowed(op::DESCRIBE) {
        return DescribeAclsResponse::default()
            .with_error_code(ResponseError::ClusterAuthorizationFailed.code())
            .with_error_message(Some(StrBytes::from_static_str("DESCRIBE on the cluster is needed")));
    }
    let filter = AclFilter {
        resource_type: request.resource_type_filter,
        resource_name: request.resource_name_filter.map(|s| s.as_str().to_owned()),
        pattern_type: request.pattern_type_filter,
        principal: request.principal_filter.map(|s| s.as_str().to_owned()),
        host: request.host_filter.map(|s| s.as_str().to_owned()),
        operation: request.operation,
        permission: request.permission_type,
    };
    let view = conn.ctx.view();
    let mut resources: BTreeMap<(i8, String, i8), Vec<AclDescription>> = BTreeMap::new();
    for binding in view.image.acls.values().filter(|b| filter.matches(b)) {
        resources
            .entry((binding.resource_type, binding.resource_name.clone(), binding.pattern_type))
            .or_default()
            .push(
                AclDescription::default()
                    .with_principal(StrBytes::from_string(binding.principal.clone()))
                    .with_host(StrBytes::from_string(binding.host.clone()))
                    .with_operation(binding.operation)
                    .with_permission_type(binding.permission),
            );
    }
    let resources = resources
        .into_iter()
        .map(|((resource_type, name, pattern_type), acls)| {
            DescribeAclsResource::default()
                .with_resource_type(resource_type)
                .with_resource_name(StrBytes::from_string(name))
                .with_pattern_type(pattern_type)
                .with_acls(acls)
        })
        .collect();
    DescribeAclsResponse::default().with_resources(resources)
}
