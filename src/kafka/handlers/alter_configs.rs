//! AlterConfigs (legacy: the given values replace all of a topic's overrides).

use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{AlterConfigsRequest, AlterConfigsResponse};
use kafka_protocol::protocol::StrBytes;

use super::controller_items;
use super::describe_configs::RESOURCE_TOPIC;
use crate::cluster::{ConfigChange, ControllerError, ControllerRequest, ControllerResponse};
use crate::kafka::connection::Connection;
use crate::kafka::errors::controller_result;
use crate::security::acl;

/// Runs topic config changes through the controller and pairs each resource with its outcome
/// (resources that are not topics are refused here).
pub async fn apply(
    conn: &Connection,
    resources: Vec<(i8, StrBytes, ConfigChange)>,
    validate_only: bool,
) -> Vec<(i8, StrBytes, i16, Option<String>)> {
    // ALTER_CONFIGS on each topic.
    let allowed: Vec<bool> = resources
        .iter()
        .map(|(kind, name, _)| {
            *kind != RESOURCE_TOPIC || conn.allowed(acl::op::ALTER_CONFIGS, acl::resource::TOPIC, name.as_str())
        })
        .collect();
    let changes: Vec<(String, ConfigChange)> = resources
        .iter()
        .zip(&allowed)
        .filter(|((kind, _, _), allowed)| *kind == RESOURCE_TOPIC && **allowed)
        .map(|(resource, _)| resource)
        .map(|(_, name, change)| (name.as_str().to_owned(), change.clone()))
        .collect();
    let count = changes.len();
    let ask = ControllerRequest::AlterTopicConfigs { changes, validate_only };
    let mut outcomes = controller_items(conn, ask, count, |r| match r {
        ControllerResponse::Done(results) => Some(results),
        _ => None,
    })
    .await
    .into_iter();
    resources
        .into_iter()
        .zip(allowed)
        .map(|((kind, name, _), allowed)| {
            let (code, message) = if !allowed {
                (ResponseError::TopicAuthorizationFailed.code(), Some("ALTER_CONFIGS on the topic is needed".into()))
            } else if kind == RESOURCE_TOPIC {
                let outcome: Result<(), ControllerError> =
                    outcomes.next().unwrap_or(Err(ControllerError::Storage("controller did not answer".into())));
                controller_result(&outcome)
            } else {
                (
                    ResponseError::InvalidRequest.code(),
                    Some(format!("only topic configs can be altered (resource type {kind})")),
                )
            };
            (kind, name, code, message)
        })
        .collect()
}

/// Answers AlterConfigs.
pub async fn handle(conn: &Rc<Connection>, request: AlterConfigsRequest, _version: i16) -> AlterConfigsResponse {
    let resources = request
        .resources
        .into_iter()
        .map(|r| {
            let values = r
                .configs
                .iter()
                .filter_map(|c| c.value.as_ref().map(|v| (c.name.as_str().to_owned(), v.as_str().to_owned())))
                .collect();
            (r.resource_type, r.resource_name, ConfigChange::Replace(values))
        })
        .collect();
    let responses = apply(conn, resources, request.validate_only)
        .await
        .into_iter()
        .map(|(kind, name, code, message)| {
            AlterConfigsResourceResponse::default()
                .with_resource_type(kind)
                .with_resource_name(name)
                .with_error_code(code)
                .with_error_message(message.map(StrBytes::from_string))
        })
        .collect();
    AlterConfigsResponse::default().with_responses(responses)
}
