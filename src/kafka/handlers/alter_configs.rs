//! AlterConfigs (legacy: the given values replace all of a resource's configs).

use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{AlterConfigsRequest, AlterConfigsResponse};
use kafka_protocol::protocol::StrBytes;

use super::controller_items;
use super::describe_configs::{RESOURCE_BROKER, RESOURCE_TOPIC};
use crate::cluster::{ConfigChange, ControllerError, ControllerRequest, ControllerResponse};
use crate::kafka::connection::Connection;
use crate::kafka::errors::controller_result;
use crate::security::acl;

/// Runs config changes through the controller (topics, and BROKER resources: `""` for every
/// broker or a broker id) and pairs each resource with its outcome.
pub async fn apply(
    conn: &Connection,
    resources: Vec<(i8, StrBytes, ConfigChange)>,
    validate_only: bool,
) -> Vec<(i8, StrBytes, i16, Option<String>)> {
    // ALTER_CONFIGS on each topic, or on the cluster for broker configs.
    let allowed: Vec<bool> = resources
        .iter()
        .map(|(kind, name, _)| match *kind {
            RESOURCE_TOPIC => conn.allowed(acl::op::ALTER_CONFIGS, acl::resource::TOPIC, name.as_str()),
            RESOURCE_BROKER => conn.allowed(acl::op::ALTER_CONFIGS, acl::resource::CLUSTER, acl::CLUSTER_NAME),
            _ => true,
        })
        .collect();
    let of_kind = |wanted: i8| -> Vec<(String, ConfigChange)> {
        resources
            .iter()
            .zip(&allowed)
            .filter(|((kind, _, _), allowed)| *kind == wanted && **allowed)
            .map(|((_, name, change), _)| (name.as_str().to_owned(), change.clone()))
            .collect()
    };
    let (topics, brokers) = (of_kind(RESOURCE_TOPIC), of_kind(RESOURCE_BROKER));
    let ask = async |request: ControllerRequest, count: usize| {
        if count == 0 {
            return Vec::new();
        }
        controller_items(conn, request, count, |r| match r {
            ControllerResponse::Done(results) => Some(results),
            _ => None,
        })
        .await
    };
    let (topic_count, broker_count) = (topics.len(), brokers.len());
    let mut topic_outcomes =
        ask(ControllerRequest::AlterTopicConfigs { changes: topics, validate_only }, topic_count).await.into_iter();
    let mut broker_outcomes =
        ask(ControllerRequest::AlterBrokerConfigs { changes: brokers, validate_only }, broker_count).await.into_iter();
    let no_answer = || Err(ControllerError::Storage("controller did not answer".into()));
    resources
        .into_iter()
        .zip(allowed)
        .map(|((kind, name, _), allowed)| {
            let (code, message) = match kind {
                _ if !allowed && kind == RESOURCE_BROKER => (
                    ResponseError::ClusterAuthorizationFailed.code(),
                    Some("ALTER_CONFIGS on the cluster is needed".into()),
                ),
                _ if !allowed => (
                    ResponseError::TopicAuthorizationFailed.code(),
                    Some("ALTER_CONFIGS on the topic is needed".into()),
                ),
                RESOURCE_TOPIC => controller_result(&topic_outcomes.next().unwrap_or_else(no_answer)),
                RESOURCE_BROKER => controller_result(&broker_outcomes.next().unwrap_or_else(no_answer)),
                _ => (
                    ResponseError::InvalidRequest.code(),
                    Some(format!("only topic and broker configs can be altered (resource type {kind})")),
                ),
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
