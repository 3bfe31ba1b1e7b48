//! Metadata: brokers, controller and topics (creating unknown topics when allowed).

use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse};
use kafka_protocol::protocol::StrBytes;

use super::controller_items;
use crate::cluster::{
    ControllerError, ControllerRequest, ControllerResponse, MetadataView, NewTopic, PartitionImage, TopicImage,
    topic_config,
};
use crate::kafka::connection::Connection;
use crate::kafka::errors::controller_error;
use crate::model::wire::topic_name;
use crate::security::acl;

/// The Metadata description of one topic: per partition its leader, leader epoch, replicas,
/// in-sync replicas and the replicas on brokers that are not live (offline: unregistered or
/// fenced).
pub fn describe_topic(topic: &TopicImage, view: &MetadataView, version: i16) -> MetadataResponseTopic {
    let partitions = topic
        .partitions
        .iter()
        .map(|p| {
            let offline = offline_replicas(p, view);
            MetadataResponsePartition::default()
                .with_partition_index(p.index)
                .with_error_code(if p.leader < 0 { ResponseError::LeaderNotAvailable.code() } else { 0 })
                .with_leader_id(BrokerId(p.leader))
                .with_leader_epoch(if version >= 7 { p.leader_epoch } else { -1 })
                .with_replica_nodes(brokers(&p.replicas))
                .with_isr_nodes(brokers(&p.isr))
                .with_offline_replicas(if version >= 5 { brokers(&offline) } else { Vec::new() })
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(topic_name(&topic.name)))
        .with_topic_id(if version >= 10 { topic.id } else { uuid::Uuid::nil() })
        .with_is_internal(topic.internal)
        .with_partitions(partitions)
}

/// Broker ids as the protocol's lists carry them.
pub fn brokers(ids: &[i32]) -> Vec<BrokerId> {
    ids.iter().map(|b| BrokerId(*b)).collect()
}

/// The replicas of `partition` on brokers that are not live (unregistered or fenced).
pub fn offline_replicas(partition: &PartitionImage, view: &MetadataView) -> Vec<i32> {
    partition.replicas.iter().copied().filter(|b| !view.image.is_live(*b)).collect()
}

/// Every live broker (registered, not fenced), as Metadata lists them.
/// `listener`: the one the request came in on, whose endpoints clients are told.
pub fn describe_brokers(view: &MetadataView, listener: &str) -> Vec<MetadataResponseBroker> {
    view.image
        .brokers
        .values()
        .filter(|b| !b.fenced)
        .filter_map(|b| {
            let endpoint = b.endpoint(listener)?;
            Some(
                MetadataResponseBroker::default()
                    .with_node_id(BrokerId(b.id))
                    .with_host(StrBytes::from_string(endpoint.host.clone()))
                    .with_port(i32::from(endpoint.port))
                    .with_rack(b.rack.clone().map(StrBytes::from_string)),
            )
        })
        .collect()
}

fn error_topic(name: Option<&str>, id: uuid::Uuid, error: ResponseError) -> MetadataResponseTopic {
    MetadataResponseTopic::default().with_error_code(error.code()).with_name(name.map(topic_name)).with_topic_id(id)
}

/// Creates topics with the broker's defaults, as Kafka's auto.create.topics.enable does.
pub async fn auto_create(conn: &Connection, names: Vec<String>) -> Vec<Result<(), ControllerError>> {
    let topics: Vec<NewTopic> = names
        .into_iter()
        .map(|name| NewTopic {
            name,
            num_partitions: -1,
            replication_factor: -1,
            assignments: Vec::new(),
            configs: Default::default(),
        })
        .collect();
    let count = topics.len();
    let ask = ControllerRequest::CreateTopics { topics, validate_only: false, internal: false };
    let results = controller_items(conn, ask, count, |r| match r {
        ControllerResponse::CreatedTopics(results) => Some(results),
        _ => None,
    })
    .await;
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
    let mut metadata = conn.ctx.view();
    // v0: an empty list means all topics; v1+: null means all topics.
    let requested = match request.topics {
        None => None,
        Some(topics) if topics.is_empty() && version == 0 => None,
        Some(topics) => Some(topics),
    };
    let allow_create = (version < 4 || request.allow_auto_topic_creation) && conn.ctx.config.auto_create_topics;
    if let (Some(requested), true) = (&requested, allow_create) {
        let missing: Vec<String> = requested
            .iter()
            .filter_map(|t| t.name.as_ref().map(|n| n.as_str().to_owned()))
            .filter(|n| metadata.topic(n).is_none() && topic_config::validate_topic_name(n).is_ok())
            // Auto-creation needs CREATE on the cluster or the topic.
            .filter(|n| conn.cluster_allowed(acl::op::CREATE) || conn.allowed(acl::op::CREATE, acl::resource::TOPIC, n))
            .collect();
        if !missing.is_empty() {
            for (name, result) in missing.iter().zip(auto_create(conn, missing.clone()).await) {
                if let Err(err) = result {
                    tracing::warn!(topic = %name, error = %err, "auto-creating topic failed");
                }
            }
            metadata = conn.ctx.view();
        }
    }
    // Topics the principal may not DESCRIBE are left out of "all topics" and refused by name.
    let describable = |name: &str| conn.allowed(acl::op::DESCRIBE, acl::resource::TOPIC, name);
    let topics: Vec<MetadataResponseTopic> = match requested {
        None => metadata
            .image
            .topics()
            .filter(|t| describable(&t.name))
            .map(|t| describe_topic(t, &metadata, version))
            .collect(),
        Some(requested) => requested
            .iter()
            .map(|t| {
                let name = t.name.as_ref().map(|n| n.as_str()).filter(|n| !n.is_empty());
                let resolved =
                    name.map(str::to_owned).or_else(|| metadata.topic_by_id(&t.topic_id).map(|t| t.name.clone()));
                match resolved {
                    Some(resolved) if !describable(&resolved) => {
                        error_topic(name, t.topic_id, ResponseError::TopicAuthorizationFailed)
                    }
                    _ => lookup(&metadata, t.name.as_ref().map(|n| n.as_str()), t.topic_id, version),
                }
            })
            .collect(),
    };
    // Authorized operations only when asked for (v8+; the cluster's in v8-10): the field's
    // default says "not asked".
    let topics = if request.include_topic_authorized_operations {
        topics
            .into_iter()
            .map(|mut t| {
                if let Some(name) = t.name.as_ref().filter(|_| t.error_code == 0) {
                    t.topic_authorized_operations = conn.authorized_operations(acl::resource::TOPIC, name.as_str());
                }
                t
            })
            .collect()
    } else {
        topics
    };
    let cluster_operations = if request.include_cluster_authorized_operations {
        conn.authorized_operations(acl::resource::CLUSTER, acl::CLUSTER_NAME)
    } else {
        i32::MIN
    };
    MetadataResponse::default()
        .with_cluster_authorized_operations(cluster_operations)
        .with_brokers(describe_brokers(&metadata, &conn.listener.name))
        .with_cluster_id(Some(StrBytes::from_string(metadata.image.cluster_id.clone())))
        .with_controller_id(BrokerId(metadata.controller_id()))
        .with_topics(topics)
}

/// One requested topic, by name or (v10+, name null or empty, as the Java admin client sends
/// it) by id.
fn lookup(metadata: &MetadataView, name: Option<&str>, id: uuid::Uuid, version: i16) -> MetadataResponseTopic {
    match name.filter(|n| !n.is_empty() || id.is_nil()) {
        Some(name) => match metadata.topic(name) {
            Some(topic) => describe_topic(topic, metadata, version),
            None if topic_config::validate_topic_name(name).is_err() => {
                error_topic(Some(name), uuid::Uuid::nil(), ResponseError::InvalidTopicException)
            }
            None => error_topic(Some(name), uuid::Uuid::nil(), ResponseError::UnknownTopicOrPartition),
        },
        None => match metadata.topic_by_id(&id) {
            Some(topic) => describe_topic(topic, metadata, version),
            None => error_topic(None, id, ResponseError::UnknownTopicId),
        },
    }
}

/// Kafka error code for an auto-creation failure.
pub fn auto_create_error(err: &ControllerError) -> ResponseError {
    controller_error(err)
}
