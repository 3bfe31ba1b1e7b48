//! ListConfigResources (KIP-1142; v0 was ListClientMetricsResources): the resources that have
//! configs, by type. Topics (2) and brokers (4) are listed; groups (32), broker loggers (8) and
//! client metrics (16) have none here. v0 asks for client metrics only.

use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::list_config_resources_response::ConfigResource;
use kafka_protocol::messages::{ListConfigResourcesRequest, ListConfigResourcesResponse};
use kafka_protocol::protocol::StrBytes;

use crate::kafka::connection::Connection;
use crate::security::acl;

const TOPIC: i8 = 2;
const BROKER: i8 = 4;
const BROKER_LOGGER: i8 = 8;
const CLIENT_METRICS: i8 = 16;
const GROUP: i8 = 32;

/// Answers ListConfigResources.
pub async fn handle(
    conn: &Rc<Connection>,
    request: ListConfigResourcesRequest,
    version: i16,
) -> ListConfigResourcesResponse {
    if !conn.cluster_allowed(acl::op::DESCRIBE_CONFIGS) {
        return ListConfigResourcesResponse::default()
            .with_error_code(ResponseError::ClusterAuthorizationFailed.code());
    }
    let types: Vec<i8> = match (version, request.resource_types.is_empty()) {
        (0, _) => vec![CLIENT_METRICS],
        (_, true) => vec![TOPIC, BROKER, BROKER_LOGGER, CLIENT_METRICS, GROUP],
        (_, false) => request.resource_types.clone(),
    };
    if types.iter().any(|t| ![TOPIC, BROKER, BROKER_LOGGER, CLIENT_METRICS, GROUP].contains(t)) {
        return ListConfigResourcesResponse::default().with_error_code(ResponseError::UnsupportedVersion.code());
    }
    let view = conn.ctx.view();
    let resource = |name: String, kind: i8| {
        ConfigResource::default().with_resource_name(StrBytes::from_string(name)).with_resource_type(kind)
    };
    let mut resources = Vec::new();
    if types.contains(&TOPIC) {
        let mut names: Vec<String> = view.image.topics().map(|t| t.name.clone()).collect();
        names.sort();
        resources.extend(names.into_iter().map(|n| resource(n, TOPIC)));
    }
    if types.contains(&BROKER) {
        resources.extend(view.image.live_brokers().into_iter().map(|id| resource(id.to_string(), BROKER)));
    }
    ListConfigResourcesResponse::default().with_config_resources(resources)
}
