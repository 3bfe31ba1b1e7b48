//! FindCoordinator: a group's coordinator is the broker leading its `__consumer_offsets`
//! partition (the topic is created on first use, as Kafka does). Transaction and share
//! coordinators are not offered: asked for one, it answers with a code clients do not retry.

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

use super::controller_items;
use crate::cluster::{
    CONSUMER_OFFSETS_TOPIC, ControllerError, ControllerRequest, ControllerResponse, Endpoint, MetadataView, NewTopic,
};
use crate::kafka::connection::Connection;
use crate::security::acl;

/// Replicas of each `__consumer_offsets` partition (at most: fewer brokers, fewer replicas).
const OFFSETS_REPLICATION: usize = 3;
/// Segment size of `__consumer_offsets` partitions (checkpoints keep them short).
const OFFSETS_SEGMENT_BYTES: &str = "16777216";

/// Creates `__consumer_offsets` if it does not exist yet.
pub async fn ensure_offsets_topic(conn: &Connection) -> Result<(), ControllerError> {
    if conn.ctx.view().topic(CONSUMER_OFFSETS_TOPIC).is_some() {
        return Ok(());
    }
    let mut configs = BTreeMap::new();
    configs.insert("cleanup.policy".to_owned(), Some("compact".to_owned()));
    configs.insert("segment.bytes".to_owned(), Some(OFFSETS_SEGMENT_BYTES.to_owned()));
    let topic = NewTopic {
        name: CONSUMER_OFFSETS_TOPIC.to_owned(),
        num_partitions: conn.ctx.config.offsets_topic_num_partitions,
        // Replicated like any topic: by three brokers, or all of them in a smaller cluster.
        replication_factor: conn.ctx.view().image.live_brokers().len().clamp(1, OFFSETS_REPLICATION) as i16,
        assignments: Vec::new(),
        configs,
    };
    let ask = ControllerRequest::CreateTopics { topics: vec![topic], validate_only: false, internal: true };
    let result = controller_items(conn, ask, 1, |r| match r {
        ControllerResponse::CreatedTopics(results) => Some(results),
        _ => None,
    })
    .await
    .pop()
    .unwrap_or(Err(ControllerError::Storage("controller did not answer".into())));
    match result {
        Ok(_) | Err(ControllerError::TopicAlreadyExists(_)) => Ok(()),
        Err(err) => Err(err),
    }
}

/// Answers FindCoordinator.
pub async fn handle(conn: &Rc<Connection>, request: FindCoordinatorRequest, version: i16) -> FindCoordinatorResponse {
    let keys: Vec<StrBytes> = if version >= 4 { request.coordinator_keys.clone() } else { vec![request.key.clone()] };
    // No transaction or share coordinators yet: refused with a code clients do not retry, so
    // `initTransactions()` fails at once with the reason instead of waiting out its timeout.
    let error = if request.key_type == 1 {
        Some((
            ResponseError::TransactionalIdAuthorizationFailed,
            "transactions are not supported by this broker (Moldau has no transaction coordinator yet)".to_owned(),
        ))
    } else if request.key_type != 0 {
        Some((
            ResponseError::InvalidRequest,
            format!("coordinator key type {} is not offered: only consumer groups (0)", request.key_type),
        ))
    } else {
        match ensure_offsets_topic(conn).await {
            Ok(()) => None,
            Err(err) => Some((ResponseError::CoordinatorNotAvailable, err.to_string())),
        }
    };
    let view = conn.ctx.view();
    let coordinators: Vec<Coordinator> = keys
        .into_iter()
        .map(|key| {
            let c = Coordinator::default().with_key(key.clone());
            let found = match &error {
                Some(early) => Err(early.clone()),
                None if !conn.allowed(acl::op::DESCRIBE, acl::resource::GROUP, key.as_str()) => {
                    Err((ResponseError::GroupAuthorizationFailed, "DESCRIBE on the group is needed".to_owned()))
                }
                None => coordinator_of(&view, key.as_str(), &conn.listener.name),
            };
            match found {
                Err((code, message)) => c
                    .with_node_id(BrokerId(-1))
                    .with_port(-1)
                    .with_error_code(code.code())
                    .with_error_message(Some(StrBytes::from_string(message))),
                Ok((id, endpoint)) => c
                    .with_node_id(BrokerId(id))
                    .with_host(StrBytes::from_string(endpoint.host.clone()))
                    .with_port(i32::from(endpoint.port)),
            }
        })
        .collect();
    if version >= 4 {
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let first = coordinators.into_iter().next().unwrap_or_default();
    FindCoordinatorResponse::default()
        .with_error_code(first.error_code)
        .with_error_message(if version >= 1 { first.error_message } else { None })
        .with_node_id(first.node_id)
        .with_host(first.host)
        .with_port(first.port)
}

/// The broker leading the `__consumer_offsets` partition of `group`, and where to reach it.
fn coordinator_of(
    view: &MetadataView,
    group: &str,
    listener: &str,
) -> Result<(i32, Endpoint), (ResponseError, String)> {
    let unavailable = |why: &str| (ResponseError::CoordinatorNotAvailable, why.to_owned());
    let topic =
        view.topic(CONSUMER_OFFSETS_TOPIC).ok_or_else(|| unavailable("the offsets topic does not exist yet"))?;
    let index = crate::group::offsets_partition_for(group, topic.partitions.len() as i32);
    let leader = view.partition(topic, index).map_err(|_| unavailable("no such offsets partition"))?.leader;
    let endpoint = view
        .image
        .broker(leader)
        .and_then(|b| b.endpoint(listener))
        .ok_or_else(|| unavailable("the coordinator's broker is not available"))?;
    Ok((leader, endpoint.clone()))
}
