//! The controller: the single writer of cluster metadata. It is active on the metadata quorum's
//! leader only. Changes are made one at a time: plan the records against the current image
//! (`plan.rs`), propose them to the quorum, and answer once they are committed, with the index the
//! caller waits for before it answers its own client (so a client sees its change on the broker
//! it asked).
//!
//! It also keeps brokers honest: registrations, heartbeats, fencing a broker whose session
//! expired (its leaderships move to another in-sync replica), unfencing one that caught up, and
//! moving leadership back to preferred replicas.
//!
//! Ownership: the [`Controller`] lives on shard 0 of a voter (`Rc`); [`ControllerHandle`] is the
//! `Send + Sync` way in from any shard.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_channel::oneshot;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::plan::Planner;
use super::quorum::{Quorum, QuorumError};
use super::records::MetadataRecord;
use super::rpc::{Answer, ControllerRequest, ControllerResponse, CreatedTopicInfo};
use crate::config::BrokerConfig;
use crate::io;
use crate::model::BrokerId;

/// A topic to create.
#[derive(Clone, Debug, Serialize, Deserialize)]
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
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TopicRef {
    /// By name.
    Name(String),
    /// By id.
    Id(Uuid),
}

/// Incremental config operation (IncrementalAlterConfigs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ConfigChange {
    /// AlterConfigs: the given values replace every override.
    Replace(BTreeMap<String, String>),
    /// IncrementalAlterConfigs: operations on individual keys.
    Incremental(Vec<(String, AlterOp, Option<String>)>),
}

/// Why the controller refused or could not make a change; mapped to Kafka error codes at the
/// protocol edge.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
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
    /// This node is not the active controller (the leader, when known).
    #[error("this node is not the active controller (the active one is {0:?})")]
    NotController(Option<BrokerId>),
    /// No active controller answered in time (no quorum reachable).
    #[error("{0}")]
    Timeout(String),
    /// A heartbeat of a registration that was replaced.
    #[error("broker {0} registered again since; this registration is stale")]
    StaleBrokerEpoch(BrokerId),
    /// A broker of another cluster.
    #[error("{0}")]
    InconsistentClusterId(String),
    /// The metadata log could not be written.
    #[error("metadata log write failed: {0}")]
    Storage(String),
    /// A request of a leader epoch that is not the partition's (an old leader).
    #[error("leader epoch {0} is not the partition's")]
    FencedLeaderEpoch(i32),
    /// A request made against an older partition epoch.
    #[error("partition epoch {0} is not the partition's")]
    InvalidUpdateVersion(i32),
    /// A proposed ISR member is not a live replica.
    #[error("{0}")]
    IneligibleReplica(String),
    /// The requester does not lead the partition.
    #[error("broker {0} does not lead the partition")]
    NotLeader(BrokerId),
    /// The partition's leader already is the one an election would pick.
    #[error("leader election not needed")]
    ElectionNotNeeded,
    /// The preferred replica is not live or not in sync.
    #[error("the preferred leader is not live and in sync")]
    PreferredLeaderNotAvailable,
    /// No live replica to lead.
    #[error("no live replica is eligible to lead")]
    EligibleLeadersNotAvailable,
    /// A cancellation of a reassignment that is not running.
    #[error("no reassignment is in progress for the partition")]
    NoReassignmentInProgress,
}

impl From<QuorumError> for ControllerError {
    fn from(err: QuorumError) -> Self {
        match err {
            QuorumError::NotLeader(leader) => Self::NotController(leader),
            QuorumError::Timeout => Self::Timeout(err.to_string()),
            QuorumError::Storage(reason) => Self::Storage(reason),
        }
    }
}

/// A call to the controller with its reply.
pub struct ControllerCall {
    /// What is asked.
    pub request: ControllerRequest,
    /// Where the answer goes.
    pub reply: oneshot::Sender<Answer>,
}

/// Where controller calls are sent from any shard. `Send + Sync`; the queue is bounded, so callers
/// wait when the control plane falls behind.
#[derive(Clone)]
pub struct ControllerHandle {
    calls: flume::Sender<ControllerCall>,
}

impl ControllerHandle {
    /// A handle and the receiving end for the control plane, queueing at most `capacity` calls.
    pub fn new(capacity: usize) -> (Self, flume::Receiver<ControllerCall>) {
        let (calls, inbox) = flume::bounded(capacity.max(1));
        (Self { calls }, inbox)
    }

    /// Sends `request` to the active controller (wherever it is) and waits for its answer.
    pub async fn call(&self, request: ControllerRequest) -> Answer {
        let (reply, rx) = oneshot::channel();
        let stopped =
            || Answer { index: 0, response: Err(ControllerError::Timeout("the control plane stopped".into())) };
        if self.calls.send_async(ControllerCall { request, reply }).await.is_err() {
            return stopped();
        }
        rx.await.unwrap_or_else(|_| stopped())
    }
}

/// What the active controller knows of a broker's liveness (not replicated: a new active
/// controller starts everyone's session afresh).
struct Session {
    epoch: u64,
    last_heartbeat: Instant,
    /// The metadata index the broker last said it applied.
    applied_index: u64,
}

/// Work for the controller's serial executor.
enum Mutation {
    Request(ControllerRequest, oneshot::Sender<Answer>),
    Fence(BrokerId, u64),
    Unfence(BrokerId, u64),
    Rebalance,
    /// A new cluster gets its id from its first active controller.
    Bootstrap,
}

/// The controller of a voter node (active while the node leads the quorum).
pub struct Controller {
    quorum: Rc<Quorum>,
    config: Arc<BrokerConfig>,
    sessions: RefCell<HashMap<BrokerId, Session>>,
    mutations: flume::Sender<Mutation>,
    was_leader: std::cell::Cell<bool>,
}

/// Mutations queued for the executor at most.
const MUTATION_QUEUE: usize = 1024;
/// How often sessions and leader balance are checked.
const CHECK_EVERY: Duration = Duration::from_millis(250);

impl Controller {
    /// The controller over `quorum`, with its executor and its session checks running on the
    /// calling shard.
    pub fn start(quorum: Rc<Quorum>, config: Arc<BrokerConfig>) -> Rc<Self> {
        let (mutations, queue) = flume::bounded(MUTATION_QUEUE);
        let controller = Rc::new(Self {
            quorum,
            config,
            sessions: RefCell::new(HashMap::new()),
            mutations,
            was_leader: std::cell::Cell::new(false),
        });
        io::spawn_detached(execute(controller.clone(), queue));
        io::spawn_detached(watch_sessions(controller.clone()));
        controller
    }

    /// Whether this node is the active controller (it leads the quorum and has applied
    /// everything committed before its term).
    pub fn is_active(&self) -> bool {
        self.quorum.status().is_active()
    }

    /// The active controller's id, when known.
    pub fn leader(&self) -> Option<BrokerId> {
        self.quorum.status().leader
    }

    /// Handles a request on the active controller. Heartbeats and metadata fetches are answered
    /// at once; changes wait their turn in the executor.
    pub async fn handle(&self, request: ControllerRequest) -> Answer {
        match request {
            ControllerRequest::BrokerHeartbeat { broker_id, broker_epoch, applied_index } => {
                self.heartbeat(broker_id, broker_epoch, applied_index)
            }
            ControllerRequest::FetchMetadata { after_index, wait_ms } => {
                self.fetch_metadata(after_index, wait_ms).await
            }
            ControllerRequest::DescribeQuorum => self.describe_quorum(),
            request => {
                if !self.is_active() {
                    return not_controller(self.leader());
                }
                let (reply, rx) = oneshot::channel();
                if self.mutations.send_async(Mutation::Request(request, reply)).await.is_err() {
                    return not_controller(None);
                }
                rx.await.unwrap_or_else(|_| not_controller(self.leader()))
            }
        }
    }

    fn heartbeat(&self, broker_id: BrokerId, broker_epoch: u64, applied_index: u64) -> Answer {
        if !self.is_active() {
            return not_controller(self.leader());
        }
        let image = self.quorum.image();
        let index = image.applied_index;
        let Some(registration) = image.broker(broker_id) else {
            return Answer { index, response: Err(ControllerError::StaleBrokerEpoch(broker_id)) };
        };
        if registration.epoch != broker_epoch {
            return Answer { index, response: Err(ControllerError::StaleBrokerEpoch(broker_id)) };
        }
        self.sessions
            .borrow_mut()
            .insert(broker_id, Session { epoch: broker_epoch, last_heartbeat: Instant::now(), applied_index });
        // A broker starts fenced; it may lead again once it has applied its own registration.
        if registration.fenced && applied_index >= broker_epoch {
            let _ = self.mutations.try_send(Mutation::Unfence(broker_id, broker_epoch));
        }
        Answer { index, response: Ok(ControllerResponse::HeartbeatAck { fenced: registration.fenced }) }
    }

    fn describe_quorum(&self) -> Answer {
        if !self.is_active() {
            return not_controller(self.leader());
        }
        let status = self.quorum.status();
        let voters = self.quorum.voter_states();
        let observers = self
            .sessions
            .borrow()
            .iter()
            .filter(|(id, _)| !voters.iter().any(|v| v.id == **id))
            .map(|(id, s)| (*id, s.applied_index))
            .collect();
        let response = ControllerResponse::Quorum {
            leader: self.quorum.node_id(),
            term: status.term,
            commit: status.applied,
            voters,
            observers,
        };
        Answer { index: 0, response: Ok(response) }
    }

    async fn fetch_metadata(&self, after_index: u64, wait_ms: u32) -> Answer {
        let (mut snapshot, mut entries) = self.quorum.entries_after(after_index);
        if snapshot.is_none() && entries.is_empty() {
            self.quorum.wait_applied_after(after_index, Duration::from_millis(u64::from(wait_ms.min(30_000)))).await;
            (snapshot, entries) = self.quorum.entries_after(after_index);
        }
        Answer { index: self.quorum.status().applied, response: Ok(ControllerResponse::Metadata { snapshot, entries }) }
    }

    /// Plans and commits one request; returns the answer.
    async fn mutate(&self, request: ControllerRequest) -> Answer {
        let image = self.quorum.image();
        let planner = Planner { image: &image, broker: &self.config };
        match request {
            ControllerRequest::CreateTopics { topics, validate_only, internal } => {
                let mut index = image.applied_index;
                let mut results = Vec::with_capacity(topics.len());
                for topic in &topics {
                    let current = self.quorum.image();
                    let planner = Planner { image: &current, broker: &self.config };
                    let result = match planner.plan_topic(topic, internal) {
                        Ok(records) => {
                            let info = created_info(&current.apply_all(&records), &topic.name);
                            if validate_only {
                                Ok(info)
                            } else {
                                self.quorum
                                    .propose(records)
                                    .await
                                    .map(|i| {
                                        index = i;
                                        info
                                    })
                                    .map_err(ControllerError::from)
                            }
                        }
                        Err(e) => Err(e),
                    };
                    results.push(result);
                }
                Answer { index, response: Ok(ControllerResponse::CreatedTopics(results)) }
            }
            ControllerRequest::DeleteTopics { topics } => {
                let (index, results) = self.each(topics.len(), |i, p| p.plan_delete(&topics[i]), false).await;
                Answer { index, response: Ok(ControllerResponse::DeletedTopics(results)) }
            }
            ControllerRequest::CreatePartitions { topics, validate_only } => {
                let (index, results) = self
                    .each(
                        topics.len(),
                        |i, p| p.plan_partitions(&topics[i].0, topics[i].1, &topics[i].2).map(|r| (r, ())),
                        validate_only,
                    )
                    .await;
                Answer { index, response: Ok(ControllerResponse::Done(results)) }
            }
            ControllerRequest::AlterTopicConfigs { changes, validate_only } => {
                let (index, results) = self
                    .each(
                        changes.len(),
                        |i, p| p.plan_configs(&changes[i].0, &changes[i].1).map(|r| (r, ())),
                        validate_only,
                    )
                    .await;
                Answer { index, response: Ok(ControllerResponse::Done(results)) }
            }
            ControllerRequest::AlterBrokerConfigs { changes, validate_only } => {
                let (index, results) = self
                    .each(
                        changes.len(),
                        |i, p| p.plan_broker_configs(&changes[i].0, &changes[i].1).map(|r| (r, ())),
                        validate_only,
                    )
                    .await;
                Answer { index, response: Ok(ControllerResponse::Done(results)) }
            }
            ControllerRequest::CreateAcls { bindings } => {
                // Bindings already there are not added twice.
                let mut records = Vec::new();
                for binding in bindings {
                    let present = image.acls.values().any(|b| **b == binding)
                        || records.iter().any(|r| matches!(r, MetadataRecord::Acl { binding: b, .. } if *b == binding));
                    if !present {
                        records.push(MetadataRecord::Acl { id: Uuid::new_v4(), binding });
                    }
                }
                self.propose_all(records).await
            }
            ControllerRequest::AlterClientQuotas { changes } => {
                let records = changes
                    .into_iter()
                    .map(|(entity, key, value)| MetadataRecord::ClientQuota { entity, key, value })
                    .collect();
                self.propose_all(records).await
            }
            ControllerRequest::DeleteAcls { ids } => {
                let records = ids
                    .into_iter()
                    .filter(|id| image.acls.contains_key(id))
                    .map(|id| MetadataRecord::RemoveAcl { id })
                    .collect();
                self.propose_all(records).await
            }
            ControllerRequest::AlterScramCredentials { upserts, deletions } => {
                let mut records: Vec<MetadataRecord> = deletions
                    .into_iter()
                    .map(|(name, mechanism)| MetadataRecord::RemoveUserScramCredential { name, mechanism })
                    .collect();
                records.extend(
                    upserts
                        .into_iter()
                        .map(|(name, credential)| MetadataRecord::UserScramCredential { name, credential }),
                );
                self.propose_all(records).await
            }
            ControllerRequest::AllocateProducerIds { broker_id, count } => {
                let first = image.next_producer_id;
                let record = MetadataRecord::ProducerIds { broker_id, next: first + count.max(1) };
                match self.quorum.propose(vec![record]).await {
                    Ok(index) => Answer { index, response: Ok(ControllerResponse::ProducerIds(first)) },
                    Err(e) => Answer { index: 0, response: Err(e.into()) },
                }
            }
            ControllerRequest::RegisterBroker { broker_id, incarnation, endpoints, rack, cluster_id } => {
                let foreign = match cluster_id {
                    Some(theirs) if image.cluster_id.is_empty() => {
                        Some(format!("broker {broker_id} holds data of cluster {theirs}, but this cluster is new"))
                    }
                    Some(theirs) if theirs != image.cluster_id => Some(format!(
                        "broker {broker_id} holds data of cluster {theirs}, but this is cluster {}",
                        image.cluster_id
                    )),
                    _ => None,
                };
                if let Some(message) = foreign {
                    return Answer {
                        index: image.applied_index,
                        response: Err(ControllerError::InconsistentClusterId(message)),
                    };
                }
                let mut records = Vec::new();
                // No broker joins a cluster without an id: the first registration records it
                // (whichever id is committed first stays).
                if image.cluster_id.is_empty() {
                    records.push(MetadataRecord::ClusterId { cluster_id: crate::model::new_cluster_id() });
                }
                // A broker registering again crashed or restarted: what it led moves first.
                if image.broker(broker_id).is_some_and(|old| !old.fenced) {
                    records.extend(planner.plan_fence(broker_id));
                }
                let broker_epoch = image.applied_index + 1;
                records.push(MetadataRecord::RegisterBroker {
                    broker_id,
                    incarnation,
                    endpoints,
                    rack,
                    broker_epoch,
                    fenced: true,
                });
                match self.quorum.propose(records).await {
                    Ok(index) => {
                        self.sessions.borrow_mut().insert(
                            broker_id,
                            Session { epoch: broker_epoch, last_heartbeat: Instant::now(), applied_index: 0 },
                        );
                        Answer { index, response: Ok(ControllerResponse::Registered { broker_epoch }) }
                    }
                    Err(e) => Answer { index: 0, response: Err(e.into()) },
                }
            }
            ControllerRequest::AlterPartition { broker_id, broker_epoch, changes } => {
                if image.broker(broker_id).is_none_or(|b| b.epoch != broker_epoch) {
                    return Answer {
                        index: image.applied_index,
                        response: Err(ControllerError::StaleBrokerEpoch(broker_id)),
                    };
                }
                let mut records = Vec::new();
                let mut results = Vec::with_capacity(changes.len());
                for change in &changes {
                    results.push(planner.plan_alter_partition(broker_id, change).map(|r| records.push(r)));
                }
                if records.is_empty() {
                    return Answer { index: image.applied_index, response: Ok(ControllerResponse::Done(results)) };
                }
                match self.quorum.propose(records).await {
                    Ok(index) => Answer { index, response: Ok(ControllerResponse::Done(results)) },
                    Err(e) => Answer { index: 0, response: Err(e.into()) },
                }
            }
            ControllerRequest::ControlledShutdown { broker_id, broker_epoch } => {
                let records = match image.broker(broker_id) {
                    Some(b) if b.epoch == broker_epoch && !b.fenced => planner.plan_fence(broker_id),
                    _ => Vec::new(),
                };
                if records.is_empty() {
                    return Answer { index: image.applied_index, response: Ok(ControllerResponse::Done(Vec::new())) };
                }
                self.sessions.borrow_mut().remove(&broker_id);
                match self.quorum.propose(records).await {
                    Ok(index) => Answer { index, response: Ok(ControllerResponse::Done(Vec::new())) },
                    Err(e) => Answer { index: 0, response: Err(e.into()) },
                }
            }
            ControllerRequest::OfflineReplicas { broker_id, broker_epoch, partitions } => {
                let records = match image.broker(broker_id) {
                    Some(b) if b.epoch == broker_epoch && !b.fenced => {
                        planner.plan_offline_replicas(broker_id, &partitions)
                    }
                    Some(_) => {
                        return Answer { index: 0, response: Err(ControllerError::StaleBrokerEpoch(broker_id)) };
                    }
                    None => Vec::new(),
                };
                if records.is_empty() {
                    return Answer { index: image.applied_index, response: Ok(ControllerResponse::Done(Vec::new())) };
                }
                match self.quorum.propose(records).await {
                    Ok(index) => Answer { index, response: Ok(ControllerResponse::Done(Vec::new())) },
                    Err(e) => Answer { index: 0, response: Err(e.into()) },
                }
            }
            ControllerRequest::AlterReassignments { changes } => {
                let (index, results) = self
                    .each(
                        changes.len(),
                        |i, p| {
                            let (topic, partition, target) = &changes[i];
                            p.plan_reassignment(topic, *partition, target.as_deref()).map(|r| (r, ()))
                        },
                        false,
                    )
                    .await;
                Answer { index, response: Ok(ControllerResponse::Done(results)) }
            }
            ControllerRequest::ElectLeaders { partitions, unclean } => {
                let (records, results) = planner.plan_elections(partitions.as_deref(), unclean);
                if records.is_empty() {
                    return Answer { index: image.applied_index, response: Ok(ControllerResponse::Elections(results)) };
                }
                match self.quorum.propose(records).await {
                    Ok(index) => Answer { index, response: Ok(ControllerResponse::Elections(results)) },
                    Err(e) => Answer { index: 0, response: Err(e.into()) },
                }
            }
            ControllerRequest::BrokerHeartbeat { .. }
            | ControllerRequest::FetchMetadata { .. }
            | ControllerRequest::DescribeQuorum => {
                Answer { index: 0, response: Err(ControllerError::InvalidRequest("not a change".into())) }
            }
        }
    }

    /// Commits `records` as one entry (nothing to commit: done at once).
    async fn propose_all(&self, records: Vec<MetadataRecord>) -> Answer {
        if records.is_empty() {
            return Answer { index: 0, response: Ok(ControllerResponse::Done(Vec::new())) };
        }
        match self.quorum.propose(records).await {
            Ok(index) => Answer { index, response: Ok(ControllerResponse::Done(Vec::new())) },
            Err(e) => Answer { index: 0, response: Err(e.into()) },
        }
    }

    /// Plans and commits `count` items in order, each against the image the previous commits
    /// made; `validate_only` plans without committing. Returns the last index and the results.
    async fn each<R>(
        &self,
        count: usize,
        plan: impl Fn(usize, &Planner<'_>) -> Result<(Vec<MetadataRecord>, R), ControllerError>,
        validate_only: bool,
    ) -> (u64, Vec<Result<R, ControllerError>>) {
        let mut index = self.quorum.image().applied_index;
        let mut results = Vec::with_capacity(count);
        for i in 0..count {
            let image = self.quorum.image();
            let planned = plan(i, &Planner { image: &image, broker: &self.config });
            results.push(match planned {
                Ok((_, answer)) if validate_only => Ok(answer),
                Ok((records, answer)) if records.is_empty() => Ok(answer),
                Ok((records, answer)) => match self.quorum.propose(records).await {
                    Ok(committed) => {
                        index = committed;
                        Ok(answer)
                    }
                    Err(e) => Err(e.into()),
                },
                Err(e) => Err(e),
            });
        }
        (index, results)
    }

    /// Commits the records of a liveness change, if there are any and this node still leads.
    async fn commit_internal(&self, records: Vec<MetadataRecord>) {
        if records.is_empty() || !self.is_active() {
            return;
        }
        if let Err(err) = self.quorum.propose(records).await {
            tracing::warn!(error = %err, "could not commit a broker liveness change");
        }
    }
}

fn not_controller(leader: Option<BrokerId>) -> Answer {
    Answer { index: 0, response: Err(ControllerError::NotController(leader)) }
}

fn created_info(image: &super::MetadataImage, name: &str) -> CreatedTopicInfo {
    let topic = image.topic(name).expect("a planned topic");
    CreatedTopicInfo {
        name: topic.name.clone(),
        id: topic.id,
        partitions: topic.partitions.len() as i32,
        replication_factor: topic.partitions.first().map_or(0, |p| p.replicas.len()) as i16,
        configs: topic.configs.clone(),
    }
}

/// The serial executor: one change at a time, each planned against the image the last one made.
async fn execute(controller: Rc<Controller>, queue: flume::Receiver<Mutation>) {
    while let Ok(mutation) = queue.recv_async().await {
        match mutation {
            Mutation::Request(request, reply) => {
                let answer = controller.mutate(request).await;
                let _ = reply.send(answer);
            }
            Mutation::Fence(broker, epoch) => {
                let image = controller.quorum.image();
                if image.broker(broker).is_some_and(|b| b.epoch == epoch && !b.fenced) {
                    tracing::warn!(broker, "broker session expired: fencing it and moving its leaderships");
                    let records = Planner { image: &image, broker: &controller.config }.plan_fence(broker);
                    controller.commit_internal(records).await;
                }
            }
            Mutation::Unfence(broker, epoch) => {
                let image = controller.quorum.image();
                if image.broker(broker).is_some_and(|b| b.epoch == epoch && b.fenced) {
                    tracing::info!(broker, "broker caught up: unfencing it");
                    let records = Planner { image: &image, broker: &controller.config }.plan_unfence(broker);
                    controller.commit_internal(records).await;
                }
            }
            Mutation::Bootstrap => {
                if controller.quorum.image().cluster_id.is_empty() {
                    let cluster_id = crate::model::new_cluster_id();
                    tracing::info!(cluster_id, "a new cluster: recording its id");
                    controller.commit_internal(vec![MetadataRecord::ClusterId { cluster_id }]).await;
                }
            }
            Mutation::Rebalance => {
                let image = controller.quorum.image();
                let (records, _) = Planner { image: &image, broker: &controller.config }.plan_elections(None, false);
                if !records.is_empty() {
                    tracing::info!(changes = records.len(), "moving leadership back to preferred replicas");
                }
                controller.commit_internal(records).await;
            }
        }
    }
}

/// On the active controller: fences brokers whose heartbeats stopped, and now and then moves
/// leaderships back to preferred replicas.
async fn watch_sessions(controller: Rc<Controller>) {
    let session_timeout = Duration::from_millis(controller.config.broker_session_timeout_ms);
    let rebalance_every = Duration::from_millis(controller.config.leader_imbalance_check_interval_ms);
    let mut last_rebalance = Instant::now();
    loop {
        io::sleep(CHECK_EVERY).await;
        let active = controller.is_active();
        if active && !controller.was_leader.get() {
            // A new active controller gives every broker a full session from now.
            let image = controller.quorum.image();
            let now = Instant::now();
            let mut sessions = controller.sessions.borrow_mut();
            sessions.clear();
            for b in image.brokers.values() {
                sessions.insert(b.id, Session { epoch: b.epoch, last_heartbeat: now, applied_index: 0 });
            }
            last_rebalance = now;
            if image.cluster_id.is_empty() {
                let _ = controller.mutations.try_send(Mutation::Bootstrap);
            }
        }
        controller.was_leader.set(active);
        if !active {
            continue;
        }
        let image = controller.quorum.image();
        let expired: Vec<(BrokerId, u64)> = controller
            .sessions
            .borrow()
            .iter()
            .filter(|(id, s)| {
                s.last_heartbeat.elapsed() > session_timeout && image.broker(**id).is_some_and(|b| !b.fenced)
            })
            .map(|(id, s)| (*id, s.epoch))
            .collect();
        for (broker, epoch) in expired {
            let _ = controller.mutations.try_send(Mutation::Fence(broker, epoch));
        }
        if controller.config.auto_leader_rebalance_enable && last_rebalance.elapsed() >= rebalance_every {
            last_rebalance = Instant::now();
            let _ = controller.mutations.try_send(Mutation::Rebalance);
        }
    }
}
