//! The per-shard group coordinator: the groups whose `__consumer_offsets` partition this shard
//! owns, loaded from that partition at start, changed by [`GroupCall`]s, and persisted back to
//! it (offset commits and group metadata as keyed records; a checkpoint now and then lets the
//! records before it be deleted, so the partition stays small without general compaction).

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use super::state::{Group, GroupLimits, GroupState};
use super::store::{GroupKey, StoredOffset};
use super::{
    GroupCall, GroupDescription, GroupError, GroupListing, MemberDescription, OffsetCommitEntry, offsets_partition_for,
};
use crate::cluster::CONSUMER_OFFSETS_TOPIC;
use crate::cluster::{LocalMetadata, MetadataView};
use crate::config::BrokerConfig;
use crate::io;
use crate::io::now_ms;
use crate::model::TopicPartition;
use crate::model::batch;
use crate::model::records::{EncodeOptions, KeyValue, decode_records, encode_batch};
use crate::partition::PartitionManager;
use crate::partition::{Acks, Isolation};
use crate::shard::ShardId;

/// How often sessions and rebalance deadlines are checked.
const TICK_MS: u64 = 100;
/// How often offsets retention is checked.
const RETENTION_CHECK_MS: i64 = 60_000;
/// Group records per batch the coordinator writes.
const RECORDS_PER_BATCH: usize = 1000;
/// Bytes of group records written to a partition before a checkpoint.
const CHECKPOINT_BYTES: u64 = 8 << 20;

/// Per-partition bookkeeping.
#[derive(Default)]
struct PartitionState {
    loaded: bool,
    writes_in_flight: usize,
    bytes_since_checkpoint: u64,
}

/// The groups coordinated by one shard, and its offsets partitions' bookkeeping.
#[derive(Default)]
struct Groups {
    groups: HashMap<String, Group>,
    partitions: HashMap<i32, PartitionState>,
    last_retention_check_ms: i64,
}

/// The group coordinator of one shard: the groups whose `__consumer_offsets` partition this shard
/// hosts.
///
/// Ownership: one per shard, installed in a `Sharded<GroupCoordinator>`; `!Send`. Calls from
/// other shards arrive as [`GroupCall`]s run on this shard.
pub struct GroupCoordinator {
    state: RefCell<Groups>,
    partitions: Rc<PartitionManager>,
    metadata: Rc<LocalMetadata>,
    config: Arc<BrokerConfig>,
    stopping: Cell<bool>,
}

/// The `__consumer_offsets` partition of a group and the shard hosting it here, if the topic
/// exists and this broker hosts that partition.
fn offsets_partition(view: &MetadataView, group_id: &str) -> Option<(TopicPartition, ShardId)> {
    let topic = view.topic(CONSUMER_OFFSETS_TOPIC)?;
    let index = offsets_partition_for(group_id, topic.partitions.len() as i32);
    let key = (topic.id, index);
    Some((key, view.placement.shard_of(&key)?))
}

/// The shard of this broker coordinating `group_id`, if the offsets topic exists and this broker
/// hosts the group's partition of it.
pub fn coordinator_shard(view: &MetadataView, group_id: &str) -> Option<ShardId> {
    offsets_partition(view, group_id).map(|(_, owner)| owner)
}

impl GroupCoordinator {
    /// The coordinator of the calling shard, over its partitions and view; it loads the groups
    /// of every offsets partition the shard leads (from the first view published on the shard).
    pub fn start(partitions: Rc<PartitionManager>, metadata: Rc<LocalMetadata>, config: Arc<BrokerConfig>) -> Rc<Self> {
        let coordinator = Rc::new(Self {
            state: RefCell::new(Groups::default()),
            partitions,
            metadata: metadata.clone(),
            config,
            stopping: Cell::new(false),
        });
        let weak = Rc::downgrade(&coordinator);
        metadata.subscribe(move |view, _change| {
            let Some(coordinator) = weak.upgrade() else { return };
            coordinator.follow_leadership(view);
        });
        coordinator
    }

    /// Coordinates the groups of exactly the offsets partitions this shard leads: loads those it
    /// now leads, and lets go of those it no longer does (a follower, or fenced, answers
    /// NOT_COORDINATOR, and clients find the new leader).
    fn follow_leadership(self: &Rc<Self>, view: &MetadataView) {
        let Some(topic) = view.topic(CONSUMER_OFFSETS_TOPIC) else { return };
        let here = crate::shard::ShardSet::current();
        let led: Vec<i32> = topic
            .partitions
            .iter()
            .filter(|p| view.leader_shard(topic, p.index).is_ok_and(|(_, shard)| Some(shard) == here))
            .map(|p| p.index)
            .collect();
        let (gained, lost): (Vec<i32>, Vec<i32>) = {
            let state = self.state.borrow();
            let gained = led.iter().copied().filter(|p| !state.partitions.contains_key(p)).collect();
            let lost = state.partitions.keys().copied().filter(|p| !led.contains(p)).collect();
            (gained, lost)
        };
        for index in lost {
            tracing::info!(partition = index, "no longer leading this offsets partition: its groups move");
            self.state.borrow_mut().partitions.remove(&index);
        }
        for index in gained {
            self.begin_load((topic.id, index));
        }
    }

    /// Starts loading the groups of an offsets partition this shard now hosts; they answer
    /// COORDINATOR_LOAD_IN_PROGRESS until it is done.
    pub fn begin_load(self: &Rc<Self>, key: TopicPartition) {
        self.state.borrow_mut().partitions.entry(key.1).or_default().loaded = false;
        io::spawn_detached(load_partition(self.clone(), key));
    }

    /// Stops the session ticker (at shutdown).
    pub fn stop(&self) {
        self.stopping.set(true);
    }

    fn consumer_limits(&self) -> super::consumer::ConsumerLimits {
        super::consumer::ConsumerLimits {
            session_timeout_ms: self.config.group_consumer_session_timeout_ms,
            max_size: self.config.group_consumer_max_size,
        }
    }

    fn limits(&self) -> GroupLimits {
        GroupLimits {
            min_session_timeout_ms: self.config.group_min_session_timeout_ms,
            max_session_timeout_ms: self.config.group_max_session_timeout_ms,
            initial_rebalance_delay_ms: self.config.group_initial_rebalance_delay_ms as i64,
            max_size: self.config.group_max_size,
        }
    }
}

impl Groups {
    fn ready(&self, partition: i32) -> Result<(), GroupError> {
        match self.partitions.get(&partition) {
            Some(state) if state.loaded => Ok(()),
            Some(_) => Err(GroupError::CoordinatorLoadInProgress),
            None => Err(GroupError::NotCoordinator),
        }
    }
}

/// Checks that this shard coordinates `group_id` now; returns its offsets partition.
fn locate(gc: &GroupCoordinator, group_id: &str) -> Result<TopicPartition, GroupError> {
    if group_id.is_empty() {
        return Err(GroupError::InvalidGroupId);
    }
    let view = gc.metadata.view();
    if view.topic(CONSUMER_OFFSETS_TOPIC).is_none() {
        return Err(GroupError::CoordinatorNotAvailable);
    }
    let (key, _) = offsets_partition(&view, group_id).ok_or(GroupError::NotCoordinator)?;
    if gc.partitions.get(&key).is_none() {
        return Err(GroupError::NotCoordinator);
    }
    gc.state.borrow().ready(key.1)?;
    Ok(key)
}

/// Appends group records to an offsets partition and waits until they are committed.
async fn write_records(gc: &GroupCoordinator, key: TopicPartition, records: Vec<KeyValue>) -> Result<i64, GroupError> {
    write_batches(gc, key, records.chunks(RECORDS_PER_BATCH)).await
}

/// Appends `chunks` (one batch each) as one append, so no other write lands between them, and
/// waits until they are committed. Returns the offset of the first.
async fn write_batches<'a>(
    gc: &GroupCoordinator,
    key: TopicPartition,
    chunks: impl Iterator<Item = &'a [KeyValue]>,
) -> Result<i64, GroupError> {
    let partition = gc.partitions.get(&key).ok_or(GroupError::NotCoordinator)?;
    let mut batch = bytes::BytesMut::new();
    for chunk in chunks {
        batch.extend_from_slice(&encode_batch(chunk, &EncodeOptions::default()));
    }
    let bytes = batch.len() as u64;
    let spans = batch::validate_all(&batch, usize::MAX).map_err(|_| GroupError::Storage)?;
    {
        // A partition this shard let go of meanwhile is not brought back to life by a write
        // (its state would then claim to be loading for ever when leadership returns).
        let mut coordinator = gc.state.borrow_mut();
        let state = coordinator.partitions.get_mut(&key.1).ok_or(GroupError::NotCoordinator)?;
        state.writes_in_flight += 1;
        state.bytes_since_checkpoint += bytes;
    }
    // The coordinator's own records are committed as an acks=all produce would be.
    let result = match partition.replicate(batch, &spans, Acks::All, now_ms()) {
        Ok(replicated) => replicated.committed.wait().await.map(|()| replicated.appended.base_offset).map_err(|err| {
            tracing::error!(error = %err, "group records were not committed");
            GroupError::Storage
        }),
        Err(err) => {
            tracing::error!(error = %err, "writing group records failed");
            Err(GroupError::Storage)
        }
    };
    if let Some(state) = gc.state.borrow_mut().partitions.get_mut(&key.1) {
        state.writes_in_flight -= 1;
    }
    result
}

fn group_record(group: &Group) -> KeyValue {
    (Some(GroupKey::Group { group: group.id.clone() }.encode()), Some(group.to_stored().encode()))
}

/// Loads an offsets partition this shard just opened: every group and committed offset in it.
async fn load_partition(gc: Rc<GroupCoordinator>, key: TopicPartition) {
    let started = std::time::Instant::now();
    // The metadata change that makes this shard the leader reaches the coordinator and the
    // opening of the partition in either order (a node restarted before its session expired
    // leads at once, while its logs are still being recovered): wait for the partition as long
    // as it is still ours to load. Returning early would leave its groups loading for ever.
    let partition = loop {
        if let Some(partition) = gc.partitions.get(&key) {
            break partition;
        }
        let wanted = gc.state.borrow().partitions.get(&key.1).is_some_and(|s| !s.loaded);
        if !wanted || gc.stopping.get() {
            return;
        }
        io::sleep(std::time::Duration::from_millis(20)).await;
    };
    let mut groups: HashMap<String, Group> = HashMap::new();
    let mut offset = partition.status().log_start_offset;
    let now = now_ms();
    let mut records = 0usize;
    loop {
        let read = match partition.read(offset, 1 << 20, Isolation::LogEnd, -1).await {
            Ok(read) => read,
            Err(err) => {
                tracing::error!(partition = key.1, error = %err, "loading group records failed");
                break;
            }
        };
        if read.records.is_empty() {
            break;
        }
        for batch in read.records {
            if let Ok(header) = crate::model::batch::BatchHeader::parse(&batch) {
                offset = header.last_offset() + 1;
            }
            let Ok(decoded) = decode_records(batch) else { continue };
            for record in decoded {
                records += 1;
                let Some(group_key) = record.key.as_deref().and_then(GroupKey::decode) else {
                    continue;
                };
                let group =
                    groups.entry(group_key.group().to_owned()).or_insert_with(|| Group::new(group_key.group(), now));
                match (group_key, record.value) {
                    (GroupKey::Offset { topic, partition, .. }, Some(value)) => {
                        if let Some(stored) = StoredOffset::decode(&value) {
                            group.offsets.insert((topic, partition), stored);
                        }
                    }
                    (GroupKey::Offset { topic, partition, .. }, None) => {
                        group.offsets.remove(&(topic, partition));
                    }
                    (GroupKey::Group { .. }, Some(value)) => {
                        if let Some(stored) = super::store::StoredGroup::decode(&value) {
                            group.restore(stored, now);
                        }
                    }
                    (GroupKey::Group { group: id }, None) => {
                        groups.remove(&id);
                    }
                }
            }
        }
    }
    let count = groups.len();
    let view = gc.metadata.view();
    let mut coordinator = gc.state.borrow_mut();
    // Lost while loading: forget what was read (a later gain loads again).
    let Some(state) = coordinator.partitions.get_mut(&key.1) else { return };
    state.loaded = true;
    coordinator.groups.retain(|id, _| offsets_partition(&view, id).map(|(k, _)| k) != Some(key));
    coordinator.groups.extend(groups);
    tracing::debug!(
        partition = key.1,
        groups = count,
        records,
        ms = started.elapsed().as_millis() as u64,
        "loaded consumer group partition"
    );
}

/// Handles one group call on the coordinator shard.
pub async fn handle(gc: Rc<GroupCoordinator>, call: GroupCall) {
    let now = now_ms();
    match call {
        GroupCall::Join(request, reply) => {
            let error = match locate(&gc, &request.group_id) {
                Err(error) => Some(error),
                Ok(_) => {
                    let mut coordinator = gc.state.borrow_mut();
                    if !request.member_id.is_empty() && !coordinator.groups.contains_key(&request.group_id) {
                        Some(GroupError::UnknownMemberId)
                    } else {
                        let group = coordinator
                            .groups
                            .entry(request.group_id.clone())
                            .or_insert_with(|| Group::new(&request.group_id, now));
                        if !group.has_consumer_members() {
                            group.join(request.clone(), reply, &gc.limits(), now);
                            return;
                        }
                        // Its members speak the consumer protocol (KIP-848).
                        Some(GroupError::InconsistentGroupProtocol)
                    }
                }
            };
            let _ = reply.send(super::JoinResponse {
                error,
                generation_id: -1,
                member_id: request.member_id,
                ..Default::default()
            });
        }
        GroupCall::Sync(request, reply) => {
            let key = match locate(&gc, &request.group_id) {
                Ok(key) => key,
                Err(error) => {
                    let _ = reply.send(super::SyncResponse { error: Some(error), ..Default::default() });
                    return;
                }
            };
            let (store, generation) = {
                let mut coordinator = gc.state.borrow_mut();
                let Some(group) = coordinator.groups.get_mut(&request.group_id) else {
                    let _ = reply
                        .send(super::SyncResponse { error: Some(GroupError::UnknownMemberId), ..Default::default() });
                    return;
                };
                let leader = group.sync(request.clone(), reply, now);
                (leader.then(|| group_record(group)), group.generation)
            };
            if let Some(record) = store {
                let stored = write_records(&gc, key, vec![record]).await.is_ok();
                if let Some(group) = gc.state.borrow_mut().groups.get_mut(&request.group_id) {
                    group.complete_sync(generation, stored, now_ms());
                }
            }
        }
        GroupCall::ConsumerHeartbeat(request, reply) => {
            let refused = |error: GroupError, message: Option<&str>| super::consumer::ConsumerHeartbeatAnswer {
                error: Some(error),
                message: message.map(str::to_owned),
                member_id: request.member_id.clone(),
                member_epoch: request.member_epoch,
                assignment: None,
            };
            let answer = match locate(&gc, &request.group_id) {
                Err(error) => refused(error, None),
                Ok(_) => {
                    let view = gc.metadata.view();
                    let partitions =
                        |topic: &str| view.topic(topic).filter(|t| !t.internal).map(|t| t.partitions.len() as i32);
                    let mut coordinator = gc.state.borrow_mut();
                    let known = coordinator.groups.contains_key(&request.group_id);
                    if !known && request.member_epoch > 0 {
                        refused(GroupError::UnknownMemberId, Some("not a member of the group"))
                    } else {
                        let group = coordinator
                            .groups
                            .entry(request.group_id.clone())
                            .or_insert_with(|| Group::new(&request.group_id, now));
                        if !group.members.is_empty() {
                            refused(GroupError::GroupIdNotFound, Some("the group is a classic group with members"))
                        } else {
                            group.consumer.heartbeat(request.clone(), &gc.consumer_limits(), now, &partitions)
                        }
                    }
                }
            };
            let _ = reply.send(answer);
        }
        GroupCall::ConsumerDescribe { group_id, reply } => {
            let result = locate(&gc, &group_id).and_then(|_| {
                let coordinator = gc.state.borrow();
                match coordinator.groups.get(&group_id) {
                    Some(group) if group.members.is_empty() && group.state != GroupState::Dead => {
                        Ok(group.consumer.clone())
                    }
                    _ => Err(GroupError::GroupIdNotFound),
                }
            });
            let _ = reply.send(result);
        }
        GroupCall::Heartbeat { group_id, generation_id, member_id, group_instance_id, reply } => {
            let result = locate(&gc, &group_id).err().or_else(|| {
                let mut coordinator = gc.state.borrow_mut();
                match coordinator.groups.get_mut(&group_id) {
                    Some(group) => group.heartbeat(&member_id, group_instance_id.as_deref(), generation_id, now),
                    None => Some(GroupError::UnknownMemberId),
                }
            });
            let _ = reply.send(result);
        }
        GroupCall::Leave { group_id, members, reply } => {
            let key = match locate(&gc, &group_id) {
                Ok(key) => key,
                Err(error) => {
                    let _ = reply.send((Some(error), Vec::new()));
                    return;
                }
            };
            let (results, store) = {
                let mut coordinator = gc.state.borrow_mut();
                match coordinator.groups.get_mut(&group_id) {
                    None => (vec![Some(GroupError::UnknownMemberId); members.len()], None),
                    Some(group) => {
                        let mut persist = false;
                        let results = members
                            .iter()
                            .map(|(member, instance)| {
                                let (error, p) = group.leave(member, instance.as_deref(), now);
                                persist |= p.is_some();
                                error
                            })
                            .collect();
                        (results, persist.then(|| group_record(group)))
                    }
                }
            };
            let _ = reply.send((None, results));
            if let Some(record) = store {
                let _ = write_records(&gc, key, vec![record]).await;
            }
        }
        GroupCall::Commit { group_id, generation_id, member_id, group_instance_id, offsets, reply } => {
            let key = match locate(&gc, &group_id) {
                Ok(key) => key,
                Err(error) => {
                    let _ = reply.send(vec![Some(error); offsets.len()]);
                    return;
                }
            };
            let check = {
                let mut coordinator = gc.state.borrow_mut();
                let group = coordinator.groups.entry(group_id.clone()).or_insert_with(|| Group::new(&group_id, now));
                if !group.has_consumer_members() {
                    group.check_commit(&member_id, group_instance_id.as_deref(), generation_id, now)
                } else {
                    group.consumer.check_commit(&member_id, generation_id)
                }
            };
            if let Some(error) = check {
                let _ = reply.send(vec![Some(error); offsets.len()]);
                return;
            }
            let max_metadata = gc.config.offset_metadata_max_bytes;
            let mut results: Vec<Option<GroupError>> = Vec::with_capacity(offsets.len());
            let mut records = Vec::new();
            let mut accepted = Vec::new();
            for entry in &offsets {
                if entry.metadata.as_ref().is_some_and(|m| m.len() > max_metadata) {
                    results.push(Some(GroupError::OffsetMetadataTooLarge));
                    continue;
                }
                results.push(None);
                let stored = StoredOffset {
                    offset: entry.offset,
                    leader_epoch: entry.leader_epoch,
                    metadata: entry.metadata.clone().unwrap_or_default(),
                    commit_timestamp: now,
                };
                records.push((
                    Some(
                        GroupKey::Offset {
                            group: group_id.clone(),
                            topic: entry.topic.clone(),
                            partition: entry.partition,
                        }
                        .encode(),
                    ),
                    Some(stored.encode()),
                ));
                accepted.push(((entry.topic.clone(), entry.partition), stored));
            }
            if !records.is_empty() {
                match write_records(&gc, key, records).await {
                    Ok(_) => {
                        if let Some(group) = gc.state.borrow_mut().groups.get_mut(&group_id) {
                            group.offsets.extend(accepted);
                        }
                    }
                    Err(error) => {
                        for r in results.iter_mut().filter(|r| r.is_none()) {
                            *r = Some(error);
                        }
                    }
                }
            }
            let _ = reply.send(results);
            maybe_checkpoint(&gc, key).await;
        }
        GroupCall::FetchOffsets { group_id, topics, reply } => {
            if let Err(error) = locate(&gc, &group_id) {
                let _ = reply.send((Some(error), Vec::new()));
                return;
            }
            let coordinator = gc.state.borrow();
            let offsets = coordinator.groups.get(&group_id).map(|g| &g.offsets);
            let entry = |topic: &str, partition: i32| {
                let stored = offsets.and_then(|o| o.get(&(topic.to_owned(), partition)));
                OffsetCommitEntry {
                    topic: topic.to_owned(),
                    partition,
                    offset: stored.map_or(-1, |s| s.offset),
                    leader_epoch: stored.map_or(-1, |s| s.leader_epoch),
                    metadata: stored.map(|s| s.metadata.clone()),
                }
            };
            let result = match topics {
                Some(topics) => topics
                    .iter()
                    .flat_map(|(topic, partitions)| partitions.iter().map(move |p| (topic, *p)))
                    .map(|(topic, p)| entry(topic, p))
                    .collect(),
                None => {
                    let mut all: Vec<OffsetCommitEntry> =
                        offsets.map(|o| o.keys().map(|(t, p)| entry(t, *p)).collect()).unwrap_or_default();
                    all.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
                    all
                }
            };
            let _ = reply.send((None, result));
        }
        GroupCall::Describe { group_id, reply } => {
            let description = match locate(&gc, &group_id) {
                Err(error) => GroupDescription { error: Some(error), group_id, ..Default::default() },
                Ok(_) => {
                    let coordinator = gc.state.borrow();
                    match coordinator.groups.get(&group_id) {
                        Some(group) if group.has_consumer_members() => {
                            // Kafka describes consumer-protocol groups with ConsumerGroupDescribe.
                            GroupDescription {
                                error: Some(GroupError::GroupIdNotFound),
                                group_id,
                                ..Default::default()
                            }
                        }
                        group => describe(group, &group_id),
                    }
                }
            };
            let _ = reply.send(description);
        }
        GroupCall::List { states, reply } => {
            let coordinator = gc.state.borrow();
            let listing = coordinator
                .groups
                .values()
                .filter(|g| g.state != GroupState::Dead)
                .map(|g| {
                    // A group whose only members ever were consumer-protocol ones is listed as such.
                    let (protocol_type, state, group_type) = match g.members.is_empty() && g.consumer.group_epoch > 0 {
                        true => ("consumer".to_owned(), g.consumer.state_name(), "consumer"),
                        false => (g.protocol_type.clone().unwrap_or_default(), g.state.name(), "classic"),
                    };
                    GroupListing { group_id: g.id.clone(), protocol_type, state: state.to_owned(), group_type }
                })
                .filter(|g| states.is_empty() || states.iter().any(|s| s.eq_ignore_ascii_case(&g.state)))
                .collect();
            let _ = reply.send(listing);
        }
        GroupCall::Delete { group_id, reply } => {
            let key = match locate(&gc, &group_id) {
                Ok(key) => key,
                Err(error) => {
                    let _ = reply.send(Some(error));
                    return;
                }
            };
            let tombstones = {
                let coordinator = gc.state.borrow();
                match coordinator.groups.get(&group_id) {
                    None => Err(GroupError::GroupIdNotFound),
                    Some(group) if group.state == GroupState::Dead => Err(GroupError::GroupIdNotFound),
                    Some(group) if !group.members.is_empty() || group.has_consumer_members() => {
                        Err(GroupError::NonEmptyGroup)
                    }
                    Some(group) => {
                        let mut records: Vec<KeyValue> = group
                            .offsets
                            .keys()
                            .map(|(topic, partition)| offset_tombstone(&group_id, topic, *partition))
                            .collect();
                        records.push((Some(GroupKey::Group { group: group_id.clone() }.encode()), None));
                        Ok(records)
                    }
                }
            };
            match tombstones {
                Err(error) => {
                    let _ = reply.send(Some(error));
                }
                Ok(records) => {
                    let result = write_records(&gc, key, records).await;
                    if result.is_ok() {
                        gc.state.borrow_mut().groups.remove(&group_id);
                    }
                    let _ = reply.send(result.err());
                }
            }
        }
        GroupCall::DeleteOffsets { group_id, partitions, reply } => {
            let key = match locate(&gc, &group_id) {
                Ok(key) => key,
                Err(error) => {
                    let _ = reply.send((Some(error), Vec::new()));
                    return;
                }
            };
            let plan = {
                let coordinator = gc.state.borrow();
                match coordinator.groups.get(&group_id) {
                    None => Err(GroupError::GroupIdNotFound),
                    Some(group) => {
                        let subscribed = group.subscribed_topics().unwrap_or_default();
                        Ok(partitions
                            .iter()
                            .map(|(topic, _)| subscribed.contains(topic).then_some(GroupError::GroupSubscribedToTopic))
                            .collect::<Vec<_>>())
                    }
                }
            };
            match plan {
                Err(error) => {
                    let _ = reply.send((Some(error), Vec::new()));
                }
                Ok(results) => {
                    let doomed: Vec<(String, i32)> =
                        partitions.iter().zip(&results).filter(|(_, r)| r.is_none()).map(|(p, _)| p.clone()).collect();
                    let records = doomed
                        .iter()
                        .map(|(topic, partition)| offset_tombstone(&group_id, topic, *partition))
                        .collect::<Vec<_>>();
                    if !records.is_empty() && write_records(&gc, key, records).await.is_err() {
                        let _ = reply.send((Some(GroupError::Storage), Vec::new()));
                        return;
                    }
                    if let Some(group) = gc.state.borrow_mut().groups.get_mut(&group_id) {
                        for p in &doomed {
                            group.offsets.remove(p);
                        }
                    }
                    let _ = reply.send((None, results));
                }
            }
        }
    }
}

fn describe(group: Option<&Group>, group_id: &str) -> GroupDescription {
    let Some(group) = group else {
        return GroupDescription {
            error: None,
            group_id: group_id.to_owned(),
            state: GroupState::Dead.name().to_owned(),
            ..Default::default()
        };
    };
    let protocol = group.protocol.clone().unwrap_or_default();
    GroupDescription {
        error: None,
        group_id: group.id.clone(),
        state: group.state.name().to_owned(),
        protocol_type: group.protocol_type.clone().unwrap_or_default(),
        protocol: protocol.clone(),
        members: group
            .members
            .values()
            .map(|m| MemberDescription {
                member_id: m.member_id.clone(),
                group_instance_id: m.group_instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                metadata: m.protocols.iter().find(|(n, _)| *n == protocol).map(|(_, b)| b.clone()).unwrap_or_default(),
                assignment: m.assignment.clone(),
            })
            .collect(),
    }
}

/// Writes a checkpoint of every group of the partition once enough has been written since the
/// last one, then deletes the records before it.
async fn maybe_checkpoint(gc: &GroupCoordinator, key: TopicPartition) {
    let view = gc.metadata.view();
    let records = {
        let mut coordinator = gc.state.borrow_mut();
        let Some(state) = coordinator.partitions.get_mut(&key.1) else { return };
        // Only when nothing else is being written: the checkpoint must hold every record
        // before it, including ones whose write has not completed yet.
        if state.bytes_since_checkpoint < CHECKPOINT_BYTES || state.writes_in_flight > 0 {
            return;
        }
        state.bytes_since_checkpoint = 0;
        let mut records = Vec::new();
        for group in coordinator.groups.values() {
            if offsets_partition(&view, &group.id).map(|(k, _)| k) != Some(key) {
                continue;
            }
            for ((topic, partition), stored) in &group.offsets {
                let k = GroupKey::Offset { group: group.id.clone(), topic: topic.clone(), partition: *partition };
                records.push((Some(k.encode()), Some(stored.encode())));
            }
            if group.generation > 0 || !group.members.is_empty() {
                records.push(group_record(group));
            }
        }
        records
    };
    if records.is_empty() {
        return;
    }
    // One append: a commit made while the checkpoint is written lands after all of it, so the
    // checkpoint can never bring an older offset back on the next load.
    let Ok(start) = write_batches(gc, key, records.chunks(RECORDS_PER_BATCH)).await else { return };
    let Some(partition) = gc.partitions.get(&key) else { return };
    partition.flush().await.ok();
    match partition.delete_records(start).await {
        Ok(low) => tracing::debug!(partition = key.1, low, "checkpointed consumer group partition"),
        Err(err) => tracing::warn!(partition = key.1, error = %err, "checkpoint cleanup failed"),
    }
}

/// Session and rebalance timers, and offsets retention, for one shard's groups.
pub async fn run_group_ticker(gc: Rc<GroupCoordinator>) {
    loop {
        io::sleep(Duration::from_millis(TICK_MS)).await;
        if gc.stopping.get() {
            return;
        }
        let now = now_ms();
        let view = gc.metadata.view();
        let mut writes: Vec<(TopicPartition, Vec<KeyValue>)> = Vec::new();
        {
            let mut coordinator = gc.state.borrow_mut();
            for group in coordinator.groups.values_mut() {
                group.consumer.tick(&group.id, now);
                if group.tick(now).is_some()
                    && let Some((key, _)) = offsets_partition(&view, &group.id)
                {
                    writes.push((key, vec![group_record(group)]));
                }
            }
            if now - coordinator.last_retention_check_ms >= RETENTION_CHECK_MS {
                coordinator.last_retention_check_ms = now;
                let retention_ms = gc.config.offsets_retention_minutes * 60_000;
                let mut emptied = Vec::new();
                for group in coordinator.groups.values_mut() {
                    if group.state != GroupState::Empty || group.has_consumer_members() || group.offsets.is_empty() {
                        continue;
                    }
                    let expired: Vec<(String, i32)> = group
                        .offsets
                        .iter()
                        .filter(|(_, o)| now - o.commit_timestamp.max(group.state_since_ms) > retention_ms)
                        .map(|(k, _)| k.clone())
                        .collect();
                    if expired.is_empty() {
                        continue;
                    }
                    let Some((key, _)) = offsets_partition(&view, &group.id) else { continue };
                    let mut records = Vec::new();
                    for (topic, partition) in expired {
                        group.offsets.remove(&(topic.clone(), partition));
                        records.push(offset_tombstone(&group.id, &topic, partition));
                    }
                    tracing::info!(group = %group.id, offsets = records.len(), "offsets expired (offsets.retention.minutes)");
                    if group.offsets.is_empty() {
                        records.push((Some(GroupKey::Group { group: group.id.clone() }.encode()), None));
                        emptied.push(group.id.clone());
                    }
                    writes.push((key, records));
                }
                for id in emptied {
                    coordinator.groups.remove(&id);
                }
            }
        }
        for (key, records) in writes {
            if let Err(error) = write_records(&gc, key, records).await {
                tracing::warn!(partition = key.1, %error, "storing group state failed");
            }
        }
    }
}

/// Offsets partitions this shard has loaded (for tests and diagnostics).
pub fn loaded_partitions(gc: &GroupCoordinator) -> HashSet<i32> {
    gc.state.borrow().partitions.iter().filter(|(_, s)| s.loaded).map(|(p, _)| *p).collect()
}

/// The record that deletes a committed offset (a tombstone under its key).
fn offset_tombstone(group: &str, topic: &str, partition: i32) -> KeyValue {
    let key = GroupKey::Offset { group: group.to_owned(), topic: topic.to_owned(), partition };
    (Some(key.encode()), None)
}
