//! The controller: the single writer of cluster metadata. It runs as one task on shard 0 and
//! handles one call at a time: validate, append the metadata record (fsync'd), apply it to a new
//! snapshot, send the snapshot to every shard and wait until all have applied it, then answer.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_channel::oneshot;
use uuid::Uuid;

use super::metadata::{CONSUMER_OFFSETS_TOPIC, ClusterMetadata, MetadataRecord, TopicMetadata};
use super::metadata_log::MetadataLog;
use super::topic_config::{self, validate_topic_name};
use crate::config::BrokerConfig;
use crate::io;
use crate::shard::{Router, ShardMessage};

/// A topic to create.
#[derive(Clone, Debug)]
pub struct NewTopic {
    /// Name.
    pub name: String,
    /// Partitions (-1: the broker default).
    pub num_partitions: i32,
    /// Replication factor (-1: the broker default).
    pub replication_factor: i16,
    /// Manual assignment: partition index → broker ids.
    pub assignments: Vec<(i32, Vec<i32>)>,
    /// Config values (`None` values are ignored, as Kafka does).
    pub configs: BTreeMap<String, Option<String>>,
}

/// A topic named by name or id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TopicRef {
    /// By name.
    Name(String),
    /// By id.
    Id(Uuid),
}

/// Incremental config operation (IncrementalAlterConfigs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlterOp {
    /// Set the value.
    Set,
    /// Remove the override (back to the default).
    Delete,
    /// Add to a list value.
    Append,
    /// Remove from a list value.
    Subtract,
}

/// How to change a topic's configuration.
#[derive(Clone, Debug)]
pub enum ConfigChange {
    /// AlterConfigs: the given values replace every override.
    Replace(BTreeMap<String, String>),
    /// IncrementalAlterConfigs: operations on individual keys.
    Incremental(Vec<(String, AlterOp, Option<String>)>),
}

/// Why the controller refused a change; mapped to Kafka error codes at the protocol edge.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ControllerError {
    /// The topic exists already.
    #[error("topic {0:?} already exists")]
    TopicAlreadyExists(String),
    /// Illegal name.
    #[error("{0}")]
    InvalidTopic(String),
    /// Bad partition count.
    #[error("{0}")]
    InvalidPartitions(String),
    /// Bad replication factor.
    #[error("{0}")]
    InvalidReplicationFactor(String),
    /// Bad manual assignment.
    #[error("{0}")]
    InvalidReplicaAssignment(String),
    /// Bad config key or value.
    #[error("{0}")]
    InvalidConfig(String),
    /// No such topic.
    #[error("unknown topic {0:?}")]
    UnknownTopic(String),
    /// No such topic id.
    #[error("unknown topic id {0}")]
    UnknownTopicId(Uuid),
    /// The operation is not allowed (e.g. on an internal topic).
    #[error("{0}")]
    PolicyViolation(String),
    /// The request contradicts itself.
    #[error("{0}")]
    InvalidRequest(String),
    /// The metadata log could not be written.
    #[error("metadata log write failed: {0}")]
    Storage(String),
}

/// A call to the controller. Sent to shard 0 inside [`ShardMessage::Controller`].
pub enum ControllerCall {
    /// CreateTopics.
    CreateTopics {
        /// Topics.
        topics: Vec<NewTopic>,
        /// Only check, create nothing.
        validate_only: bool,
        /// Allow internal topic names (used by the group coordinator).
        internal: bool,
        /// Results in order.
        reply: oneshot::Sender<Vec<Result<Arc<TopicMetadata>, ControllerError>>>,
    },
    /// DeleteTopics.
    DeleteTopics {
        /// Topics.
        topics: Vec<TopicRef>,
        /// Results in order: the deleted topic's name and id.
        reply: oneshot::Sender<Vec<Result<(String, Uuid), ControllerError>>>,
    },
    /// CreatePartitions.
    CreatePartitions {
        /// Topic and new total count.
        topics: Vec<(String, i32)>,
        /// Only check.
        validate_only: bool,
        /// Results in order.
        reply: oneshot::Sender<Vec<Result<(), ControllerError>>>,
    },
    /// A block of producer ids for a shard's InitProducerId answers.
    AllocateProducerIds {
        /// Ids wanted.
        count: i64,
        /// The first id of the block.
        reply: oneshot::Sender<Result<i64, ControllerError>>,
    },
    /// AlterConfigs / IncrementalAlterConfigs on topics.
    AlterTopicConfigs {
        /// Topic and change.
        changes: Vec<(String, ConfigChange)>,
        /// Only check.
        validate_only: bool,
        /// Results in order.
        reply: oneshot::Sender<Vec<Result<(), ControllerError>>>,
    },
}

struct Controller {
    log: MetadataLog,
    current: Arc<ClusterMetadata>,
    broker: Arc<BrokerConfig>,
    router: Router,
}

/// Runs the controller until its inbox closes.
pub async fn run_controller(
    inbox: flume::Receiver<ControllerCall>,
    log: MetadataLog,
    current: Arc<ClusterMetadata>,
    broker: Arc<BrokerConfig>,
    router: Router,
) {
    let mut controller = Controller { log, current, broker, router };
    while let Ok(call) = inbox.recv_async().await {
        controller.handle(call).await;
    }
}

impl Controller {
    async fn handle(&mut self, call: ControllerCall) {
        match call {
            ControllerCall::CreateTopics { topics, validate_only, internal, reply } => {
                let mut results = Vec::new();
                let mut changed = false;
                for topic in topics {
                    let result = match self.plan_topic(&topic, internal) {
                        Ok(record) if validate_only => Ok(self.preview(&record, &topic.name)),
                        Ok(record) => {
                            let name = topic.name.clone();
                            match self.commit(record).await {
                                Ok(()) => {
                                    changed = true;
                                    Ok(self.current.topic(&name).expect("just created").clone())
                                }
                                Err(e) => Err(e),
                            }
                        }
                        Err(e) => Err(e),
                    };
                    results.push(result);
                }
                if changed {
                    self.broadcast().await;
                }
                let _ = reply.send(results);
            }
            ControllerCall::DeleteTopics { topics, reply } => {
                let mut results = Vec::new();
                let mut changed = false;
                for topic in topics {
                    let found = match &topic {
                        TopicRef::Name(name) => {
                            self.current.topic(name).cloned().ok_or_else(|| ControllerError::UnknownTopic(name.clone()))
                        }
                        TopicRef::Id(id) => {
                            self.current.topic_by_id(id).cloned().ok_or(ControllerError::UnknownTopicId(*id))
                        }
                    };
                    let result = match found {
                        Ok(t) if t.internal => Err(ControllerError::PolicyViolation(format!(
                            "internal topic {} cannot be deleted",
                            t.name
                        ))),
                        Ok(t) => match self.commit(MetadataRecord::TopicDeleted { id: t.id }).await {
                            Ok(()) => {
                                changed = true;
                                Ok((t.name.clone(), t.id))
                            }
                            Err(e) => Err(e),
                        },
                        Err(e) => Err(e),
                    };
                    results.push(result);
                }
                if changed {
                    self.broadcast().await;
                }
                let _ = reply.send(results);
            }
            ControllerCall::CreatePartitions { topics, validate_only, reply } => {
                let results = self
                    .plan_and_commit(topics, validate_only, |c, (name, count)| c.plan_partitions(name, *count))
                    .await;
                let _ = reply.send(results);
            }
            ControllerCall::AllocateProducerIds { count, reply } => {
                let first = self.current.next_producer_id;
                let record = MetadataRecord::ProducerIdsAllocated { next: first + count };
                // Persisted before use, so ids are never handed out twice across restarts.
                // Other shards need not hear of it: only the controller allocates.
                let _ = reply.send(self.commit(record).await.map(|()| first));
            }
            ControllerCall::AlterTopicConfigs { changes, validate_only, reply } => {
                let results = self
                    .plan_and_commit(changes, validate_only, |c, (name, change)| c.plan_configs(name, change))
                    .await;
                let _ = reply.send(results);
            }
        }
    }

    /// Plans and commits one record per item, in order (each plan sees the previous commits),
    /// then tells the shards once if anything changed. `validate_only` plans without committing.
    async fn plan_and_commit<T>(
        &mut self,
        items: Vec<T>,
        validate_only: bool,
        plan: impl Fn(&Self, &T) -> Result<MetadataRecord, ControllerError>,
    ) -> Vec<Result<(), ControllerError>> {
        let mut results = Vec::with_capacity(items.len());
        let mut changed = false;
        for item in &items {
            let result = match plan(self, item) {
                Ok(_) if validate_only => Ok(()),
                Ok(record) => {
                    let committed = self.commit(record).await;
                    changed |= committed.is_ok();
                    committed
                }
                Err(e) => Err(e),
            };
            results.push(result);
        }
        if changed {
            self.broadcast().await;
        }
        results
    }

    fn plan_topic(&self, topic: &NewTopic, internal: bool) -> Result<MetadataRecord, ControllerError> {
        validate_topic_name(&topic.name).map_err(ControllerError::InvalidTopic)?;
        if !internal && topic.name.starts_with("__") && topic.name == CONSUMER_OFFSETS_TOPIC {
            return Err(ControllerError::InvalidTopic(format!("{} is reserved for internal use", topic.name)));
        }
        if self.current.topic(&topic.name).is_some() {
            return Err(ControllerError::TopicAlreadyExists(topic.name.clone()));
        }
        let broker_id = self.current.broker.id;
        let partitions = if !topic.assignments.is_empty() {
            if topic.num_partitions != -1 || topic.replication_factor != -1 {
                return Err(ControllerError::InvalidRequest(
                    "both a replica assignment and a partition count or replication factor were given".into(),
                ));
            }
            let mut indexes: Vec<i32> = topic.assignments.iter().map(|(i, _)| *i).collect();
            indexes.sort_unstable();
            if indexes.iter().enumerate().any(|(i, p)| *p != i as i32) {
                return Err(ControllerError::InvalidReplicaAssignment(
                    "partition indexes in the assignment must be 0..n without gaps".into(),
                ));
            }
            for (_, replicas) in &topic.assignments {
                if replicas.as_slice() != [broker_id] {
                    return Err(ControllerError::InvalidReplicaAssignment(format!(
                        "replicas {replicas:?} name brokers that do not exist (this cluster has broker {broker_id})"
                    )));
                }
            }
            topic.assignments.len() as i32
        } else {
            let partitions = if topic.num_partitions == -1 { self.broker.num_partitions } else { topic.num_partitions };
            if partitions <= 0 {
                return Err(ControllerError::InvalidPartitions(format!(
                    "number of partitions must be positive, got {partitions}"
                )));
            }
            let replication = if topic.replication_factor == -1 {
                self.broker.default_replication_factor
            } else {
                topic.replication_factor
            };
            if replication <= 0 {
                return Err(ControllerError::InvalidReplicationFactor(format!(
                    "replication factor must be positive, got {replication}"
                )));
            }
            if replication > 1 {
                return Err(ControllerError::InvalidReplicationFactor(format!(
                    "replication factor {replication} is larger than the 1 available broker"
                )));
            }
            partitions
        };
        if partitions > 100_000 {
            return Err(ControllerError::InvalidPartitions(format!(
                "{partitions} partitions is more than the 100000 this broker allows per topic"
            )));
        }
        let mut configs = BTreeMap::new();
        for (key, value) in &topic.configs {
            let Some(value) = value else { continue };
            topic_config::validate_entry(key, value).map_err(ControllerError::InvalidConfig)?;
            configs.insert(key.clone(), value.clone());
        }
        Ok(MetadataRecord::TopicCreated {
            name: topic.name.clone(),
            id: Uuid::new_v4(),
            shards: self.current.place_partitions(partitions as usize),
            configs,
            internal,
        })
    }

    fn preview(&self, record: &MetadataRecord, name: &str) -> Arc<TopicMetadata> {
        self.current.apply(record, &self.broker).topic(name).expect("planned topic").clone()
    }

    fn plan_partitions(&self, name: &str, count: i32) -> Result<MetadataRecord, ControllerError> {
        let topic = self.current.topic(name).ok_or_else(|| ControllerError::UnknownTopic(name.to_owned()))?;
        let existing = topic.partitions.len() as i32;
        if count <= existing {
            return Err(ControllerError::InvalidPartitions(format!(
                "topic {name} has {existing} partitions; the new count {count} must be larger"
            )));
        }
        if count > 100_000 {
            return Err(ControllerError::InvalidPartitions(format!("{count} partitions is too many")));
        }
        Ok(MetadataRecord::PartitionsAdded {
            id: topic.id,
            shards: self.current.place_partitions((count - existing) as usize),
        })
    }

    fn plan_configs(&self, name: &str, change: &ConfigChange) -> Result<MetadataRecord, ControllerError> {
        let topic = self.current.topic(name).ok_or_else(|| ControllerError::UnknownTopic(name.to_owned()))?;
        let mut configs = topic.config.overrides.clone();
        match change {
            ConfigChange::Replace(values) => configs = values.clone(),
            ConfigChange::Incremental(ops) => {
                for (key, op, value) in ops {
                    let known = topic_config::config_key(key)
                        .ok_or_else(|| ControllerError::InvalidConfig(format!("unknown topic config {key:?}")))?;
                    match op {
                        AlterOp::Set => {
                            let value = value
                                .clone()
                                .ok_or_else(|| ControllerError::InvalidConfig(format!("no value to set for {key}")))?;
                            configs.insert(key.clone(), value);
                        }
                        AlterOp::Delete => {
                            configs.remove(key);
                        }
                        AlterOp::Append | AlterOp::Subtract => {
                            if known.kind != topic_config::ConfigType::List {
                                return Err(ControllerError::InvalidConfig(format!("{key} is not a list")));
                            }
                            let current =
                                configs.get(key).cloned().unwrap_or_else(|| known.default_value(&self.broker));
                            let mut items: Vec<String> =
                                current.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect();
                            for item in
                                value.as_deref().unwrap_or("").split(',').map(str::trim).filter(|s| !s.is_empty())
                            {
                                if *op == AlterOp::Append {
                                    if !items.iter().any(|i| i == item) {
                                        items.push(item.to_owned());
                                    }
                                } else {
                                    items.retain(|i| i != item);
                                }
                            }
                            configs.insert(key.clone(), items.join(","));
                        }
                    }
                }
            }
        }
        for (key, value) in &configs {
            topic_config::validate_entry(key, value).map_err(ControllerError::InvalidConfig)?;
        }
        Ok(MetadataRecord::TopicConfigsSet { id: topic.id, configs })
    }

    /// Appends the record to the metadata log (fsync'd) and applies it to `current`.
    async fn commit(&mut self, record: MetadataRecord) -> Result<(), ControllerError> {
        let log = self.log.clone();
        let persisted = record.clone();
        io::blocking(move || log.append(&persisted))
            .await
            .map_err(|e| ControllerError::Storage(e.to_string()))?
            .map_err(|e| ControllerError::Storage(e.to_string()))?;
        self.current = Arc::new(self.current.apply(&record, &self.broker));
        Ok(())
    }

    /// Sends the current snapshot to every shard and waits until each has applied it.
    async fn broadcast(&self) {
        let mut acks = Vec::new();
        for shard in 0..self.router.shard_count() {
            let (reply, ack) = oneshot::channel();
            self.router.send(shard, ShardMessage::Metadata { snapshot: self.current.clone(), reply }).await;
            acks.push(ack);
        }
        for ack in acks {
            let _ = ack.await;
        }
    }
}
