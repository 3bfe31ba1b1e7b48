//! DescribeCluster: this cluster's id, its brokers and its controller.

use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use kafka_protocol::protocol::StrBytes;

use crate::kafka::connection::Connection;
use crate::security::acl;

/// Answers DescribeCluster.
pub async fn handle(conn: &Rc<Connection>, request: DescribeClusterRequest, _version: i16) -> DescribeClusterResponse {
    if !conn.cluster_allowed(acl::op::DESCRIBE) {
        return DescribeClusterResponse::default()
            .with_error_code(kafka_protocol::error::ResponseError::ClusterAuthorizationFailed.code());
    }
    let metadata = conn.ctx.view();
    let response = DescribeClusterResponse::default().with_endpoint_type(request.endpoint_type);
    // Endpoint type 1 is "brokers"; 2 ("controllers") is for KRaft controller listeners, which
    // this broker does not expose separately.
    if request.endpoint_type > 1 {
        return response
            .with_error_code(ResponseError::UnsupportedEndpointType.code())
            .with_error_message(Some(StrBytes::from_static_str("only the broker endpoint type is served")));
    }
    let brokers = metadata
        .image
        .brokers
        .values()
        // Fenced brokers only when asked for (v2+), as Kafka answers.
        .filter(|b| !b.fenced || request.include_fenced_brokers)
        .filter_map(|b| {
            let endpoint = b.endpoint(&conn.listener.name)?;
            Some(
                DescribeClusterBroker::default()
                    .with_broker_id(BrokerId(b.id))
                    .with_host(StrBytes::from_string(endpoint.host.clone()))
                    .with_port(i32::from(endpoint.port))
                    .with_rack(b.rack.clone().map(StrBytes::from_string))
                    .with_is_fenced(b.fenced),
            )
        })
        .collect();
    let operations = if request.include_cluster_authorized_operations {
        conn.authorized_operations(acl::resource::CLUSTER, acl::CLUSTER_NAME)
    } else {
        i32::MIN
    };
    response
        .with_cluster_authorized_operations(operations)
        .with_cluster_id(StrBytes::from_string(metadata.image.cluster_id.clone()))
        .with_controller_id(BrokerId(metadata.controller_id()))
        .with_brokers(brokers)
}
