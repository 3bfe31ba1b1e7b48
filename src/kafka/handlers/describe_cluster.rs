//! DescribeCluster: this cluster's id, its brokers and its controller.

use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use kafka_protocol::protocol::StrBytes;

use crate::kafka::connection::Connection;

/// Answers DescribeCluster.
pub async fn handle(conn: &Rc<Connection>, request: DescribeClusterRequest, _version: i16) -> DescribeClusterResponse {
    let metadata = conn.shard.metadata();
    let response = DescribeClusterResponse::default().with_endpoint_type(request.endpoint_type);
    // Endpoint type 1 is "brokers"; 2 ("controllers") is for KRaft controller listeners, which
    // this broker does not expose separately.
    if request.endpoint_type > 1 {
        return response
            .with_error_code(ResponseError::UnsupportedEndpointType.code())
            .with_error_message(Some(StrBytes::from_static_str("only the broker endpoint type is served")));
    }
    let broker = &metadata.broker;
    response
        .with_cluster_id(StrBytes::from_string(metadata.cluster_id.clone()))
        .with_controller_id(BrokerId(broker.id))
        .with_brokers(vec![
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(broker.id))
                .with_host(StrBytes::from_string(broker.host.clone()))
                .with_port(i32::from(broker.port))
                .with_rack(broker.rack.clone().map(StrBytes::from_string)),
        ])
}
