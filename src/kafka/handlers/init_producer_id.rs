//! InitProducerId: producer ids for idempotent producers. Transactions are not supported, so a
//! request with a transactional id is refused.

use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use crate::kafka::connection::Connection;
use crate::security::acl;

/// Answers InitProducerId.
pub async fn handle(conn: &Rc<Connection>, request: InitProducerIdRequest, _version: i16) -> InitProducerIdResponse {
    let response = InitProducerIdResponse::default().with_producer_id(ProducerId(-1)).with_producer_epoch(-1);
    if request.transactional_id.is_some() {
        return response.with_error_code(ResponseError::TransactionalIdAuthorizationFailed.code());
    }
    // Idempotence needs IDEMPOTENT_WRITE on the cluster or WRITE on some topic (Kafka 3.2+).
    if conn.ctx.security.authorizer.enabled()
        && !conn.cluster_allowed(acl::op::IDEMPOTENT_WRITE)
        && !conn.ctx.view().image.topics().any(|t| conn.allowed(acl::op::WRITE, acl::resource::TOPIC, &t.name))
    {
        return response.with_error_code(ResponseError::ClusterAuthorizationFailed.code());
    }
    // KIP-360: a producer that already has an id asks for a bumped epoch after an error.
    if request.producer_id.0 >= 0 && request.producer_epoch >= 0 && request.producer_epoch < i16::MAX - 1 {
        return response.with_producer_id(request.producer_id).with_producer_epoch(request.producer_epoch + 1);
    }
    match conn.ctx.next_producer_id().await {
        Ok(id) => response.with_producer_id(ProducerId(id)).with_producer_epoch(0),
        Err(err) => {
            tracing::warn!(error = %err, "could not allocate a producer id");
            response.with_error_code(ResponseError::CoordinatorNotAvailable.code())
        }
    }
}
