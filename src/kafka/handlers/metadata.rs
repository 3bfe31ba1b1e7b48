//! Metadata: brokers, controller and topics (creating unknown topics when allowed).

use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::ask_controller;
use crate::cluster::{ClusterMetadata, ControllerCall, ControllerError, NewTopic, TopicMetadata, topic_config};
use crate::kafka::connection::Connection;
use crate::kafka::errors::controller_error;

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_owned()))
}

/// The Metadata description of one topic.
pub fn describe_topic(topic: &TopicMetadata, broker_id: i32, version: i16) -> MetadataResponseTopic {
    let partitions = topic
        .partitions
        .iter()
        .map(|p| {
            MetadataResponsePartition::default()
                .with_partition_index(p.index)
                .with_leader_id(BrokerId(broker_id))
                .with_leader_epoch(if version >= 7 { p.leader_epoch } else { -1 })
                .with_replica_nodes(vec![BrokerId(broker_id)])
                .with_isr_nodes(vec![BrokerId(broker_id)])
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(topic_name(&topic.name)))
        .with_topic_id(if version >= 10 { topic.id } else { uuid::Uuid::nil() })
        .with_is_internal(topic.internal)
        .with_partitions(partitions)
}

fn error_topic(name: Option<&str>, id: uuid::Uuid, error: ResponseError) -> MetadataResponseTopic {
    MetadataResponseTopic::default().with_error_code(error.code()).with_name(name.map(topic_name)).with_topic_id(id)
}

/// Creates topics with the broker's defaults, as Kafka's auto.create.topics.enable does.
pub async fn auto_create(conn: &Connection, names: Vec<String>) -> Vec<Result<(), ControllerError>> {
    let topics = names
        .into_iter()
        .map(|name| NewTopic {
            name,
            num_partitions: -1,
            replication_factor: -1,
            assignments: Vec::new(),
            configs: Default::default(),
        })
        .collect();
    let results = ask_controller(&conn.shard, |reply| ControllerCall::CreateTopics {
        topics,
        validate_only: false,
        internal: false,
        reply,
    })
    .await
    .unwrap_or_default();
    results
        .into_iter()
        .map(|r| match r {
            Ok(_) | Err(ControllerError::TopicAlreadyExists(_)) => Ok(()),
            Err(e) => Err(e),
        })
        .collect()
}

/// Answers Metadata.
pub async fn handle(conn: &Rc<Connection>, request: MetadataRequest, version: i16) -> MetadataResponse {
    let mut metadata = conn.shard.metadata();
    // v0: an empty list means all topics; v1+: null means all topics.
    let requested = match request.topics {
        None => None,
        Some(topics) if topics.is_empty() && version == 0 => None,
        Some(topics) => Some(topics),
    };
    let allow_create = (version < 4 || request.allow_auto_topic_creation) && conn.shard.config.auto_create_topics;
    if let (Some(requested), true) = (&requested, allow_create) {
        let missing: Vec<String> = requested
            .iter()
            .filter_map(|t| t.name.as_ref().map(|n| n.as_str().to_owned()))
            .filter(|n| metadata.topic(n).is_none() && topic_config::validate_topic_name(n).is_ok())
            .collect();
        if !missing.is_empty() {
            for (name, result) in missing.iter().zip(auto_create(conn, missing.clone()).await) {
                if let Err(err) = result {
                    tracing::warn!(topic = %name, error = %err, "auto-creating topic failed");
                }
            }
            metadata = conn.shard.metadata();
        }
    }
    let broker_id = metadata.broker.id;
    let topics = match requested {
        None => metadata.topics.values().map(|t| describe_topic(t, broker_id, version)).collect(),
        Some(requested) => requested
            .iter()
            .map(|t| lookup(&metadata, t.name.as_ref().map(|n| n.as_str()), t.topic_id, broker_id, version))
            .collect(),
    };
    let broker = &metadata.broker;
    MetadataResponse::default()
        .with_brokers(vec![
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(broker.id))
                .with_host(StrBytes::from_string(broker.host.clone()))
                .with_port(i32::from(broker.port))
                .with_rack(broker.rack.clone().map(StrBytes::from_string)),
        ])
        .with_cluster_id(Some(StrBytes::from_string(metadata.cluster_id.clone())))
        .with_controller_id(BrokerId(broker.id))
        .with_topics(topics)
}

fn lookup(
    metadata: &ClusterMetadata,
    name: Option<&str>,
    id: uuid::Uuid,
    broker_id: i32,
    version: i16,
) -> MetadataResponseTopic {
    match name {
        Some(name) => match metadata.topic(name) {
            Some(topic) => describe_topic(topic, broker_id, version),
            None if topic_config::validate_topic_name(name).is_err() => {
                error_topic(Some(name), uuid::Uuid::nil(), ResponseError::InvalidTopicException)
            }
            None => error_topic(Some(name), uuid::Uuid::nil(), ResponseError::UnknownTopicOrPartition),
        },
        None => match metadata.topic_by_id(&id) {
            Some(topic) => describe_topic(topic, broker_id, version),
            None => error_topic(None, id, ResponseError::UnknownTopicId),
        },
    }
}

/// Kafka error code for an auto-creation failure.
pub fn auto_create_error(err: &ControllerError) -> ResponseError {
    controller_error(err)
}
