//! CreateAcls: ACLs into the cluster metadata (needs ALTER on the cluster).

use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::{CreateAclsRequest, CreateAclsResponse};
use kafka_protocol::protocol::StrBytes;

use crate::cluster::{AclBinding, ControllerRequest};
use crate::kafka::connection::Connection;
use crate::kafka::errors::controller_error;
use crate::security::acl::{invalid_binding, op};

fn failed(code: ResponseError, why: &str) -> AclCreationResult {
    AclCreationResult::default()
        .with_error_code(code.code())
        .with_error_message(Some(StrBytes::from_string(why.to_owned())))
}

/// Answers CreateAcls.
pub async fn handle(conn: &Rc<Connection>, request: CreateAclsRequest, _version: i16) -> CreateAclsResponse {
    if !conn.cluster_allowed(op::ALTER) {
        let results = request
            .creations
            .iter()
            .map(|_| failed(ResponseError::ClusterAuthorizationFailed, "ALTER on the cluster is needed"))
            .collect();
        return CreateAclsResponse::default().with_results(results);
    }
    let mut results: Vec<Option<AclCreationResult>> = Vec::new();
    let mut bindings = Vec::new();
    for creation in &request.creations {
        let binding = AclBinding {
            resource_type: creation.resource_type,
            resource_name: creation.resource_name.as_str().to_owned(),
            pattern_type: creation.resource_pattern_type,
            principal: creation.principal.as_str().to_owned(),
            host: creation.host.as_str().to_owned(),
            operation: creation.operation,
            permission: creation.permission_type,
        };
        match invalid_binding(&binding) {
            Some(why) => results.push(Some(failed(ResponseError::InvalidRequest, why))),
            None => {
                results.push(None);
                bindings.push(binding);
            }
        }
    }
    let outcome = if bindings.is_empty() {
        Ok(())
    } else {
        conn.ctx.ask_controller(ControllerRequest::CreateAcls { bindings }).await.map(|_| ())
    };
    let results = results
        .into_iter()
        .map(|result| match (result, &outcome) {
            (Some(result), _) => result,
            (None, Ok(())) => AclCreationResult::default(),
            (None, Err(err)) => failed(controller_error(err), &err.to_string()),
        })
        .collect();
    CreateAclsResponse::default().with_results(results)
}
