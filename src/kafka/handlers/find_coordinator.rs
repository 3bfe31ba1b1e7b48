//! FindCoordinator: this broker coordinates every group (creating `__consumer_offsets` on first
//! use, as Kafka does). Transaction and share coordinators are not offered.

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

use super::ask_controller;
use crate::cluster::{CONSUMER_OFFSETS_TOPIC, ControllerCall, ControllerError, NewTopic};
use crate::kafka::connection::Connection;

/// Segment size of `__consumer_offsets` partitions (checkpoints keep them short).
const OFFSETS_SEGMENT_BYTES: &str = "16777216";

/// Creates `__consumer_offsets` if it does not exist yet.
pub async fn ensure_offsets_topic(conn: &Connection) -> Result<(), ControllerError> {
    if conn.shard.metadata().topic(CONSUMER_OFFSETS_TOPIC).is_some() {
        return Ok(());
    }
    let mut configs = BTreeMap::new();
    configs.insert("cleanup.policy".to_owned(), Some("compact".to_owned()));
    configs.insert("segment.bytes".to_owned(), Some(OFFSETS_SEGMENT_BYTES.to_owned()));
    let topic = NewTopic {
        name: CONSUMER_OFFSETS_TOPIC.to_owned(),
        num_partitions: conn.shard.config.offsets_topic_num_partitions,
        replication_factor: -1,
        assignments: Vec::new(),
        configs,
    };
    let result = ask_controller(&conn.shard, |reply| ControllerCall::CreateTopics {
        topics: vec![topic],
        validate_only: false,
        internal: true,
        reply,
    })
    .await
    .and_then(|mut r| r.pop())
    .unwrap_or(Err(ControllerError::Storage("controller did not answer".into())));
    match result {
        Ok(_) | Err(ControllerError::TopicAlreadyExists(_)) => Ok(()),
        Err(err) => Err(err),
    }
}

/// Answers FindCoordinator.
pub async fn handle(conn: &Rc<Connection>, request: FindCoordinatorRequest, version: i16) -> FindCoordinatorResponse {
    let keys: Vec<StrBytes> = if version >= 4 { request.coordinator_keys.clone() } else { vec![request.key.clone()] };
    let error = if request.key_type != 0 {
        Some((
            ResponseError::CoordinatorNotAvailable,
            "only consumer group coordinators are offered (no transactions)".to_owned(),
        ))
    } else {
        match ensure_offsets_topic(conn).await {
            Ok(()) => None,
            Err(err) => Some((ResponseError::CoordinatorNotAvailable, err.to_string())),
        }
    };
    let broker = conn.shard.metadata().broker.clone();
    let coordinators: Vec<Coordinator> = keys
        .into_iter()
        .map(|key| {
            let c = Coordinator::default().with_key(key);
            match &error {
                Some((code, message)) => c
                    .with_node_id(BrokerId(-1))
                    .with_port(-1)
                    .with_error_code(code.code())
                    .with_error_message(Some(StrBytes::from_string(message.clone()))),
                None => c
                    .with_node_id(BrokerId(broker.id))
                    .with_host(StrBytes::from_string(broker.host.clone()))
                    .with_port(i32::from(broker.port)),
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
