//! Planning metadata changes: from the current image and a request, the records that make the
//! change, or why it is refused. Pure: nothing here writes or waits, so every plan can be tested
//! on an image alone. The controller proposes what is planned here to the metadata quorum.

use std::collections::BTreeMap;

use uuid::Uuid;

use super::controller::{AlterOp, ConfigChange, ControllerError, NewTopic, TopicRef};
use super::image::{CONSUMER_OFFSETS_TOPIC, MetadataImage, PartitionImage, TopicImage};
use super::records::MetadataRecord;
use super::rpc::IsrChange;
use super::topic_config::{self, TopicConfig, validate_topic_name};
use crate::config::BrokerConfig;
use crate::model::{BrokerId, NO_BROKER};

/// Per partition (topic, index): whether an election was made, or why not.
pub type Elections = Vec<(String, i32, Result<(), ControllerError>)>;

/// Plans changes against one image.
pub struct Planner<'a> {
    /// The image plans start from.
    pub image: &'a MetadataImage,
    /// The controller's settings (defaults for new topics).
    pub broker: &'a BrokerConfig,
}

impl Planner<'_> {
    /// Brokers that may hold new replicas: the live ones.
    fn brokers(&self) -> Vec<BrokerId> {
        let live = self.image.live_brokers();
        if live.is_empty() { self.image.brokers.keys().copied().collect() } else { rack_interleaved(self.image, live) }
    }

    pub fn plan_topic(&self, topic: &NewTopic, internal: bool) -> Result<Vec<MetadataRecord>, ControllerError> {
        validate_topic_name(&topic.name).map_err(ControllerError::InvalidTopic)?;
        if !internal && topic.name == CONSUMER_OFFSETS_TOPIC {
            return Err(ControllerError::InvalidTopic(format!("{} is reserved for internal use", topic.name)));
        }
        if self.image.topic(&topic.name).is_some() {
            return Err(ControllerError::TopicAlreadyExists(topic.name.clone()));
        }
        let assignments =
            if topic.assignments.is_empty() { self.default_assignment(topic)? } else { self.manual_assignment(topic)? };
        if assignments.len() > MAX_PARTITIONS_PER_TOPIC as usize {
            return Err(ControllerError::InvalidPartitions(format!(
                "{} partitions is more than the {MAX_PARTITIONS_PER_TOPIC} allowed per topic",
                assignments.len()
            )));
        }
        let mut configs = BTreeMap::new();
        for (key, value) in &topic.configs {
            let Some(value) = value else { continue };
            topic_config::validate_entry(key, value).map_err(ControllerError::InvalidConfig)?;
            configs.insert(key.clone(), value.clone());
        }
        let id = Uuid::new_v4();
        let mut records = vec![MetadataRecord::Topic { name: topic.name.clone(), id, internal }];
        records.extend(partition_records(id, 0, assignments));
        if !configs.is_empty() {
            records.push(MetadataRecord::TopicConfig { id, configs });
        }
        Ok(records)
    }

    /// Replicas for a topic created with a partition count and a replication factor (-1: the
    /// broker defaults).
    fn default_assignment(&self, topic: &NewTopic) -> Result<Vec<Vec<BrokerId>>, ControllerError> {
        let partitions = if topic.num_partitions == -1 { self.broker.num_partitions } else { topic.num_partitions };
        if partitions <= 0 {
            return Err(ControllerError::InvalidPartitions(format!(
                "number of partitions must be positive, got {partitions}"
            )));
        }
        if partitions > MAX_PARTITIONS_PER_TOPIC {
            return Err(ControllerError::InvalidPartitions(format!(
                "{partitions} partitions is more than the {MAX_PARTITIONS_PER_TOPIC} allowed per topic"
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
        assign_replicas(&self.brokers(), 0, partitions, replication)
    }

    /// Replicas given by the request: partition indexes 0..n, each list of distinct registered
    /// brokers, all of one length.
    fn manual_assignment(&self, topic: &NewTopic) -> Result<Vec<Vec<BrokerId>>, ControllerError> {
        if topic.num_partitions != -1 || topic.replication_factor != -1 {
            return Err(ControllerError::InvalidRequest(
                "both a replica assignment and a partition count or replication factor were given".into(),
            ));
        }
        let mut assignments = topic.assignments.clone();
        assignments.sort_unstable_by_key(|(i, _)| *i);
        if assignments.iter().enumerate().any(|(i, (p, _))| *p != i as i32) {
            return Err(ControllerError::InvalidReplicaAssignment(
                "partition indexes in the assignment must be 0..n without gaps".into(),
            ));
        }
        let width = assignments[0].1.len();
        for (index, replicas) in &assignments {
            self.check_replicas(*index, replicas, width)?;
        }
        Ok(assignments.into_iter().map(|(_, replicas)| replicas).collect())
    }

    /// A requested replica list: `width` distinct registered brokers.
    fn check_replicas(&self, index: i32, replicas: &[BrokerId], width: usize) -> Result<(), ControllerError> {
        let mut distinct = replicas.to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        if replicas.is_empty() || distinct.len() != replicas.len() || replicas.len() != width {
            return Err(ControllerError::InvalidReplicaAssignment(format!(
                "partition {index}: replicas {replicas:?} must be {width} distinct brokers"
            )));
        }
        if let Some(missing) = replicas.iter().find(|b| self.image.broker(**b).is_none()) {
            return Err(ControllerError::InvalidReplicaAssignment(format!(
                "partition {index}: broker {missing} is not registered"
            )));
        }
        Ok(())
    }

    pub fn plan_delete(&self, topic: &TopicRef) -> Result<(Vec<MetadataRecord>, (String, Uuid)), ControllerError> {
        let found = match topic {
            TopicRef::Name(name) => self.image.topic(name).ok_or_else(|| ControllerError::UnknownTopic(name.clone())),
            TopicRef::Id(id) => self.image.topic_by_id(id).ok_or(ControllerError::UnknownTopicId(*id)),
        }?;
        if found.internal {
            return Err(ControllerError::PolicyViolation(format!("internal topic {} cannot be deleted", found.name)));
        }
        Ok((vec![MetadataRecord::RemoveTopic { id: found.id }], (found.name.clone(), found.id)))
    }

    pub fn plan_partitions(
        &self,
        name: &str,
        count: i32,
        assignments: &[Vec<BrokerId>],
    ) -> Result<Vec<MetadataRecord>, ControllerError> {
        let topic = self.image.topic(name).ok_or_else(|| ControllerError::UnknownTopic(name.to_owned()))?;
        let existing = topic.partitions.len() as i32;
        if count <= existing {
            return Err(ControllerError::InvalidPartitions(format!(
                "topic {name} has {existing} partitions; the new count {count} must be larger"
            )));
        }
        if count > MAX_PARTITIONS_PER_TOPIC {
            return Err(ControllerError::InvalidPartitions(format!(
                "{count} partitions is more than the {MAX_PARTITIONS_PER_TOPIC} allowed per topic"
            )));
        }
        let replication = topic.partitions.first().map_or(1, |p| p.replicas.len());
        let assignments = if assignments.is_empty() {
            assign_replicas(&self.brokers(), existing, count - existing, replication as i16)?
        } else {
            if assignments.len() != (count - existing) as usize {
                return Err(ControllerError::InvalidReplicaAssignment(format!(
                    "{} assignments for {} new partitions",
                    assignments.len(),
                    count - existing
                )));
            }
            for (i, replicas) in assignments.iter().enumerate() {
                self.check_replicas(existing + i as i32, replicas, replication)?;
            }
            assignments.to_vec()
        };
        Ok(partition_records(topic.id, existing, assignments))
    }

    pub fn plan_configs(&self, name: &str, change: &ConfigChange) -> Result<Vec<MetadataRecord>, ControllerError> {
        let topic = self.image.topic(name).ok_or_else(|| ControllerError::UnknownTopic(name.to_owned()))?;
        let mut configs = topic.configs.clone();
        match change {
            ConfigChange::Replace(values) => configs = values.clone(),
            ConfigChange::Incremental(ops) => {
                for (key, op, value) in ops {
                    let known = topic_config::config_key(key)
                        .ok_or_else(|| ControllerError::InvalidConfig(format!("unknown topic config {key:?}")))?;
                    match op {
                        AlterOp::Set | AlterOp::Delete => set_or_delete(&mut configs, key, *op, value)?,
                        AlterOp::Append | AlterOp::Subtract => {
                            if known.kind != topic_config::ConfigType::List {
                                return Err(ControllerError::InvalidConfig(format!("{key} is not a list")));
                            }
                            let current = configs.get(key).cloned().unwrap_or_else(|| known.default_value(self.broker));
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
        Ok(vec![MetadataRecord::TopicConfig { id: topic.id, configs }])
    }

    /// A BROKER resource's dynamic configs changed (`resource`: `""` for every broker, or a
    /// broker id): the names must be ones Kafka changes at runtime that Moldau takes
    /// ([`crate::config::DYNAMIC_BROKER_CONFIGS`]) and the values ones the setting takes.
    pub fn plan_broker_configs(
        &self,
        resource: &str,
        change: &ConfigChange,
    ) -> Result<Vec<MetadataRecord>, ControllerError> {
        if !resource.is_empty() && resource.parse::<BrokerId>().is_err() {
            return Err(ControllerError::InvalidConfig(format!("{resource:?} is not a broker id")));
        }
        let current = self.image.broker_configs.get(resource).cloned().unwrap_or_default();
        let mut configs = current.clone();
        match change {
            ConfigChange::Replace(values) => configs = values.clone(),
            ConfigChange::Incremental(ops) => {
                for (key, op, value) in ops {
                    set_or_delete(&mut configs, key, *op, value)?;
                }
            }
        }
        let effective = self
            .broker
            .with_dynamic(configs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .map_err(|e| ControllerError::InvalidConfig(e.to_string().replace("invalid configuration: ", "")))?;
        topic_config::check_broker_defaults(&effective).map_err(ControllerError::InvalidConfig)?;
        if configs == current {
            return Ok(Vec::new());
        }
        Ok(vec![MetadataRecord::BrokerConfigs { resource: resource.to_owned(), configs }])
    }

    /// A broker stops leading and following (its session expired, or it registered again after
    /// a crash): leaderships move to another live in-sync replica (or none, leaving the partition
    /// offline unless unclean election is allowed), and it leaves every ISR that keeps a member.
    pub fn plan_fence(&self, broker: BrokerId) -> Vec<MetadataRecord> {
        let Some(registration) = self.image.broker(broker) else { return Vec::new() };
        let mut records = vec![MetadataRecord::FenceBroker { broker_id: broker, broker_epoch: registration.epoch }];
        let defaults = self.topic_defaults();
        for topic in self.image.topics() {
            if !topic.partitions.iter().any(|p| p.replicas.contains(&broker)) {
                continue;
            }
            let unclean = unclean_allowed(topic, &defaults);
            for p in &topic.partitions {
                records.extend(self.move_off(topic, p, broker, unclean));
            }
        }
        records
    }

    /// Replicas of `broker` whose logs went offline (`partitions`, by topic id): each leaves
    /// the ISR, and where it leads, another live in-sync replica takes over (clean elections
    /// only: with none, it keeps leading, as nothing better is there). A broker whose single
    /// log fails stays registered and keeps everything else it serves.
    pub fn plan_offline_replicas(&self, broker: BrokerId, partitions: &[(Uuid, i32)]) -> Vec<MetadataRecord> {
        let mut records = Vec::new();
        for (topic_id, index) in partitions {
            let Some(topic) = self.image.topic_by_id(topic_id) else { continue };
            let Some(p) = topic.partition(*index) else { continue };
            if p.leader == broker && !p.isr.iter().any(|b| *b != broker && self.image.is_live(*b)) {
                continue;
            }
            records.extend(self.move_off(topic, p, broker, false));
        }
        records
    }

    /// The change that takes `broker` out of partition `p`'s ISR and, where it leads, gives the
    /// lead to another live in-sync replica (or, `unclean`, any live replica; with neither the
    /// partition waits offline, its ISR kept, so the last in-sync replica can lead again when it
    /// returns).
    fn move_off(
        &self,
        topic: &TopicImage,
        p: &PartitionImage,
        broker: BrokerId,
        unclean: bool,
    ) -> Option<MetadataRecord> {
        if !p.replicas.contains(&broker) {
            return None;
        }
        let live = |b: BrokerId| b != broker && self.image.is_live(b);
        let isr: Vec<BrokerId> = p.isr.iter().copied().filter(|b| *b != broker).collect();
        if p.leader == broker {
            let candidate = p.replicas.iter().copied().find(|b| isr.contains(b) && live(*b));
            let unclean = candidate.is_none() && unclean;
            let candidate =
                candidate.or_else(|| unclean.then(|| p.replicas.iter().copied().find(|b| live(*b))).flatten());
            Some(match candidate {
                Some(leader) => change_of(topic, p, Some(leader), Some(if unclean { vec![leader] } else { isr })),
                None => change_of(topic, p, Some(NO_BROKER), None),
            })
        } else if p.isr.contains(&broker) && !isr.is_empty() {
            Some(change_of(topic, p, None, Some(isr)))
        } else {
            None
        }
    }

    /// A registered broker caught up: it may lead again, and leaderless partitions whose ISR
    /// holds it get it as leader.
    pub fn plan_unfence(&self, broker: BrokerId) -> Vec<MetadataRecord> {
        let Some(registration) = self.image.broker(broker) else { return Vec::new() };
        let mut records = vec![MetadataRecord::UnfenceBroker { broker_id: broker, broker_epoch: registration.epoch }];
        for topic in self.image.topics() {
            for p in &topic.partitions {
                if p.leader == NO_BROKER && p.isr.contains(&broker) {
                    records.push(change_of(topic, p, Some(broker), None));
                }
            }
        }
        records
    }

    /// Leader elections (ElectLeaders, and the controller's own rebalancing): preferred ones put
    /// the first replica back in the lead where it is live and in sync; unclean ones give a
    /// leaderless partition any live replica (it may lack what only the lost ISR had). For
    /// `partitions` (all when `None`; then only partitions that change are reported).
    pub fn plan_elections(
        &self,
        partitions: Option<&[(String, i32)]>,
        unclean: bool,
    ) -> (Vec<MetadataRecord>, Elections) {
        let mut records = Vec::new();
        let mut results = Vec::new();
        let mut elect = |topic: &TopicImage, p: &PartitionImage, results: &mut Elections, report: bool| {
            let outcome = if unclean {
                if p.leader != NO_BROKER && self.image.is_live(p.leader) {
                    Err(ControllerError::ElectionNotNeeded)
                } else if let Some(leader) = p.replicas.iter().copied().find(|b| self.image.is_live(*b)) {
                    let isr = if p.isr.contains(&leader) { None } else { Some(vec![leader]) };
                    records.push(change_of(topic, p, Some(leader), isr));
                    Ok(())
                } else {
                    Err(ControllerError::EligibleLeadersNotAvailable)
                }
            } else {
                match p.replicas.first().copied() {
                    Some(preferred) if preferred == p.leader => Err(ControllerError::ElectionNotNeeded),
                    Some(preferred) if p.isr.contains(&preferred) && self.image.is_live(preferred) => {
                        records.push(change_of(topic, p, Some(preferred), None));
                        Ok(())
                    }
                    _ => Err(ControllerError::PreferredLeaderNotAvailable),
                }
            };
            if report || outcome.is_ok() {
                results.push((topic.name.clone(), p.index, outcome));
            }
        };
        match partitions {
            None => {
                for topic in self.image.topics() {
                    for p in &topic.partitions {
                        elect(topic, p, &mut results, false);
                    }
                }
            }
            Some(list) => {
                for (name, index) in list {
                    let found = self.image.topic(name).and_then(|t| t.partition(*index).map(|p| (t, p)));
                    match found {
                        Some((topic, p)) => elect(topic, p, &mut results, true),
                        None => results.push((name.clone(), *index, Err(ControllerError::UnknownTopic(name.clone())))),
                    }
                }
            }
        }
        (records, results)
    }

    /// AlterPartition: the leader `leader` asks for the ISR of one partition to become
    /// `change.isr`. Refused when it is not the leader, holds an old leader or partition epoch
    /// (a change was made since), or names a member that is not a live replica (the leader itself
    /// always stays).
    pub fn plan_alter_partition(
        &self,
        leader: BrokerId,
        change: &IsrChange,
    ) -> Result<MetadataRecord, ControllerError> {
        let topic = self.image.topic_by_id(&change.topic_id).ok_or(ControllerError::UnknownTopicId(change.topic_id))?;
        let p = topic.partition(change.partition).ok_or_else(|| ControllerError::UnknownTopic(topic.name.clone()))?;
        if p.leader != leader {
            return Err(ControllerError::NotLeader(leader));
        }
        if p.leader_epoch != change.leader_epoch {
            return Err(ControllerError::FencedLeaderEpoch(change.leader_epoch));
        }
        if p.partition_epoch != change.partition_epoch {
            return Err(ControllerError::InvalidUpdateVersion(change.partition_epoch));
        }
        if !change.isr.contains(&leader) {
            return Err(ControllerError::IneligibleReplica("the leader must stay in the ISR".into()));
        }
        if let Some(bad) = change.isr.iter().find(|b| !p.replicas.contains(b) || !self.image.is_live(**b)) {
            return Err(ControllerError::IneligibleReplica(format!("broker {bad} is not a live replica")));
        }
        let mut isr: Vec<BrokerId> = p.replicas.iter().copied().filter(|b| change.isr.contains(b)).collect();
        isr.dedup();
        // Every replica a reassignment adds is in sync now: it completes.
        if !p.adding.is_empty() && p.adding.iter().all(|b| isr.contains(b)) {
            return Ok(finish_reassignment(topic, p, isr));
        }
        Ok(change_of(topic, p, None, Some(isr)))
    }

    /// AlterPartitionReassignments for one partition: move it to `target` replicas (the added
    /// ones catch up and join the ISR, then the removed ones leave), or, `None`, cancel the
    /// reassignment in progress. Returns no record when nothing changes.
    pub fn plan_reassignment(
        &self,
        name: &str,
        index: i32,
        target: Option<&[BrokerId]>,
    ) -> Result<Vec<MetadataRecord>, ControllerError> {
        let topic = self.image.topic(name).ok_or_else(|| ControllerError::UnknownTopic(name.to_owned()))?;
        let p = topic.partition(index).ok_or_else(|| ControllerError::UnknownTopic(format!("{name}-{index}")))?;
        let in_progress = p.reassigning();
        let Some(target) = target else {
            if !in_progress {
                return Err(ControllerError::NoReassignmentInProgress);
            }
            // Cancelled: back to the replicas before it (the added ones leave).
            let cancelled = PartitionImage { removing: p.adding.clone(), ..p.clone() };
            return Ok(vec![finish_reassignment(topic, &cancelled, p.isr.clone())]);
        };
        self.check_replicas(index, target, target.len())?;
        // Start from where a reassignment in progress would have ended.
        let current = p.target_replicas();
        if current == target && !in_progress {
            return Ok(Vec::new());
        }
        let adding: Vec<BrokerId> = target.iter().copied().filter(|b| !current.contains(b)).collect();
        let removing: Vec<BrokerId> = current.iter().copied().filter(|b| !target.contains(b)).collect();
        let mut replicas = target.to_vec();
        replicas.extend(removing.iter().copied());
        let isr: Vec<BrokerId> = replicas.iter().copied().filter(|b| p.isr.contains(b)).collect();
        let moving = PartitionImage {
            replicas: replicas.clone(),
            isr: isr.clone(),
            adding: adding.clone(),
            removing: removing.clone(),
            ..p.clone()
        };
        if adding.iter().all(|b| isr.contains(b)) {
            // Nothing to wait for (replicas only leave, or the order changes).
            return Ok(vec![finish_reassignment(topic, &moving, isr)]);
        }
        Ok(vec![MetadataRecord::PartitionChange {
            topic_id: topic.id,
            partition: p.index,
            leader: None,
            isr: (isr != p.isr).then_some(isr),
            replicas: Some(replicas),
            leader_epoch: p.leader_epoch,
            partition_epoch: p.partition_epoch + 1,
            adding: Some(adding),
            removing: Some(removing),
        }])
    }

    /// What topics without an override of their own resolve against here: the controller's
    /// config with the image's dynamic broker configs applied (as a broker's `MetadataView`
    /// does), worked out once per plan.
    fn topic_defaults(&self) -> BrokerConfig {
        self.broker
            .with_dynamic(self.image.dynamic_broker_configs(self.broker.broker_id))
            .unwrap_or_else(|_| self.broker.clone())
    }
}

/// Whether `topic` may elect a replica outside its ISR: its own config, else `defaults`
/// ([`Planner::topic_defaults`], where a dynamic `unclean.leader.election.enable` lands).
fn unclean_allowed(topic: &TopicImage, defaults: &BrokerConfig) -> bool {
    TopicConfig::resolve(topic.configs.clone(), defaults, topic.internal).unclean_leader_election
}

/// A change of partition `p`: a new leader (bumping the leader epoch) and/or a new ISR; the
/// partition epoch always moves.
fn change_of(
    topic: &TopicImage,
    p: &PartitionImage,
    leader: Option<BrokerId>,
    isr: Option<Vec<BrokerId>>,
) -> MetadataRecord {
    let leader = leader.filter(|l| *l != p.leader);
    MetadataRecord::PartitionChange {
        topic_id: topic.id,
        partition: p.index,
        leader_epoch: if leader.is_some() { p.leader_epoch + 1 } else { p.leader_epoch },
        leader,
        isr: isr.filter(|i| *i != p.isr),
        replicas: None,
        partition_epoch: p.partition_epoch + 1,
        adding: None,
        removing: None,
    }
}

/// The change that ends `p`'s reassignment with `isr` in sync: the target replicas stay, the
/// removed ones leave the ISR, and a removed leader hands over to the first in-sync target.
fn finish_reassignment(topic: &TopicImage, p: &PartitionImage, isr: Vec<BrokerId>) -> MetadataRecord {
    let target = p.target_replicas();
    let isr: Vec<BrokerId> = target.iter().copied().filter(|b| isr.contains(b)).collect();
    let leader = if target.contains(&p.leader) { p.leader } else { isr.first().copied().unwrap_or(NO_BROKER) };
    let moved = leader != p.leader;
    MetadataRecord::PartitionChange {
        topic_id: topic.id,
        partition: p.index,
        leader: moved.then_some(leader),
        leader_epoch: if moved { p.leader_epoch + 1 } else { p.leader_epoch },
        isr: Some(isr),
        replicas: Some(target),
        partition_epoch: p.partition_epoch + 1,
        adding: Some(Vec::new()),
        removing: Some(Vec::new()),
    }
}

/// `brokers` ordered so that consecutive ones are on different racks where racks are set (the
/// round-robin placement then spreads every partition's replicas over racks, as Kafka's
/// rack-aware assignment does).
fn rack_interleaved(image: &MetadataImage, brokers: Vec<BrokerId>) -> Vec<BrokerId> {
    let mut by_rack: BTreeMap<Option<String>, Vec<BrokerId>> = BTreeMap::new();
    for b in brokers {
        by_rack.entry(image.broker(b).and_then(|r| r.rack.clone())).or_default().push(b);
    }
    if by_rack.len() < 2 {
        return by_rack.into_values().flatten().collect();
    }
    let mut racks: Vec<std::collections::VecDeque<BrokerId>> = by_rack.into_values().map(Into::into).collect();
    let mut out = Vec::new();
    while racks.iter().any(|r| !r.is_empty()) {
        for rack in racks.iter_mut() {
            if let Some(b) = rack.pop_front() {
                out.push(b);
            }
        }
    }
    out
}

/// Most partitions one topic may have.
const MAX_PARTITIONS_PER_TOPIC: i32 = 100_000;

/// Replicas of `count` new partitions starting at index `first`, `replication` each, spread
/// round-robin over `brokers` (the preferred leader of partition `i` is broker `i` mod n, as
/// Kafka's default placement does without racks).
pub fn assign_replicas(
    brokers: &[BrokerId],
    first: i32,
    count: i32,
    replication: i16,
) -> Result<Vec<Vec<BrokerId>>, ControllerError> {
    let replication = usize::try_from(replication).unwrap_or(0);
    if replication == 0 || replication > brokers.len() {
        return Err(ControllerError::InvalidReplicationFactor(format!(
            "replication factor {replication} is larger than the {} available broker(s)",
            brokers.len()
        )));
    }
    Ok((first..first + count)
        .map(|i| (0..replication).map(|r| brokers[(i as usize + r) % brokers.len()]).collect())
        .collect())
}

/// One Partition record per assignment, numbered from `first`: the first replica leads, every
/// replica is in sync.
fn partition_records(topic_id: Uuid, first: i32, assignments: Vec<Vec<BrokerId>>) -> Vec<MetadataRecord> {
    assignments
        .into_iter()
        .enumerate()
        .map(|(i, replicas)| MetadataRecord::Partition {
            topic_id,
            partition: first + i as i32,
            leader: replicas[0],
            isr: replicas.clone(),
            replicas,
            leader_epoch: 0,
            partition_epoch: 0,
        })
        .collect()
}

/// An incremental SET (which needs a value) or DELETE of `key` in `configs`; APPEND and SUBTRACT
/// are refused (a list config's caller handles them itself).
fn set_or_delete(
    configs: &mut BTreeMap<String, String>,
    key: &str,
    op: AlterOp,
    value: &Option<String>,
) -> Result<(), ControllerError> {
    match (op, value) {
        (AlterOp::Set, Some(value)) => {
            configs.insert(key.to_owned(), value.clone());
        }
        (AlterOp::Set, None) => return Err(ControllerError::InvalidConfig(format!("no value to set for {key}"))),
        (AlterOp::Delete, _) => {
            configs.remove(key);
        }
        (AlterOp::Append | AlterOp::Subtract, _) => {
            return Err(ControllerError::InvalidConfig(format!("{key} is not a list")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::records::Endpoint;

    /// An image with `racks.len()` live brokers (ids 1..), broker i on rack `racks[i - 1]`.
    fn image_with(racks: &[Option<&str>]) -> MetadataImage {
        let mut image = MetadataImage::default();
        for (i, rack) in racks.iter().enumerate() {
            let broker_id = i as BrokerId + 1;
            let endpoint = Endpoint { listener: "PLAINTEXT".into(), host: "127.0.0.1".into(), port: 9000 + i as u16 };
            image.apply_mut(&MetadataRecord::RegisterBroker {
                broker_id,
                incarnation: Uuid::new_v4(),
                endpoints: vec![endpoint],
                rack: rack.map(str::to_owned),
                broker_epoch: 10 + i as u64,
                fenced: true,
            });
            image.apply_mut(&MetadataRecord::UnfenceBroker { broker_id, broker_epoch: 10 + i as u64 });
        }
        image
    }

    fn new_topic(name: &str, partitions: i32, replication_factor: i16) -> NewTopic {
        NewTopic {
            name: name.into(),
            num_partitions: partitions,
            replication_factor,
            assignments: Vec::new(),
            configs: BTreeMap::new(),
        }
    }

    #[test]
    fn dynamic_broker_configs_default_topics_cluster_wide_and_per_broker_and_replay_from_a_snapshot() {
        use std::sync::Arc;

        use crate::cluster::MetadataView;
        let image = image_with(&[None]);
        let config = BrokerConfig { broker_id: 1, ..BrokerConfig::default() };
        let records = Planner { image: &image, broker: &config }.plan_topic(&new_topic("t", 1, 1), false).unwrap();
        let image = image.apply_all(&records);
        let set = |pairs: &[(&str, &str)]| {
            ConfigChange::Incremental(
                pairs.iter().map(|(k, v)| (k.to_string(), AlterOp::Set, Some(v.to_string()))).collect(),
            )
        };
        let plan = |image: &MetadataImage, resource: &str, change: &ConfigChange| {
            Planner { image, broker: &config }.plan_broker_configs(resource, change)
        };
        // Cluster-wide: retention in hours; this broker's own retention in ms wins over it.
        let image = image.apply_all(
            &plan(&image, "", &set(&[("log.retention.hours", "2"), ("log.segment.bytes", "8192")])).unwrap(),
        );
        let image = image.apply_all(&plan(&image, "1", &set(&[("log.retention.ms", "5000")])).unwrap());
        let image = Arc::new(image);
        let view = MetadataView::build(image.clone(), None, &config);
        let topic = image.topic("t").unwrap();
        let log = view.config_of(&topic.id).unwrap().log().clone();
        assert_eq!((log.retention_ms, log.segment_bytes), (5000, 8192));
        assert_eq!(view.broker_config().log_retention_ms, 5000);
        assert_eq!(
            (view.dynamic_source("log.retention.ms"), view.dynamic_source("log.segment.bytes")),
            (Some(true), Some(false))
        );
        // Another broker takes only the cluster-wide ones.
        let other = MetadataView::build(image.clone(), None, &BrokerConfig { broker_id: 2, ..config.clone() });
        assert_eq!(other.config_of(&topic.id).unwrap().log().retention_ms, 2 * 3600 * 1000);
        // A snapshot keeps them.
        let replayed = MetadataImage::empty().apply_all(&image.to_records());
        assert_eq!(replayed.broker_configs, image.broker_configs);
        // Refused: a read-only name, a bad value, a list operation, a resource that is no broker.
        for (resource, change) in [
            ("", set(&[("num.partitions", "3")])),
            ("1", set(&[("log.segment.bytes", "10")])),
            ("", ConfigChange::Incremental(vec![("log.retention.ms".into(), AlterOp::Append, Some("1".into()))])),
            ("x", set(&[("log.retention.ms", "1")])),
        ] {
            assert!(
                matches!(plan(&image, resource, &change), Err(ControllerError::InvalidConfig(_))),
                "{resource} {change:?}"
            );
        }
        // Setting what is already set writes nothing; deleting every one removes the resource.
        assert!(plan(&image, "1", &set(&[("log.retention.ms", "5000")])).unwrap().is_empty());
        let delete = ConfigChange::Incremental(vec![("log.retention.ms".into(), AlterOp::Delete, None)]);
        let image = image.apply_all(&plan(&image, "1", &delete).unwrap());
        assert!(!image.broker_configs.contains_key("1"));
        let view = MetadataView::build(Arc::new(image), Some(&view), &config);
        assert_eq!(view.config_of(&topic.id).unwrap().log().retention_ms, 2 * 3600 * 1000);
    }

    #[test]
    fn dynamic_topic_defaults_reach_topics_and_unclean_election_and_bad_values_are_refused() {
        use std::sync::Arc;

        use crate::cluster::MetadataView;
        let image = image_with(&[None]);
        let config = BrokerConfig { broker_id: 1, ..BrokerConfig::default() };
        let image = image
            .apply_all(&Planner { image: &image, broker: &config }.plan_topic(&new_topic("t", 1, 1), false).unwrap());
        let set = |pairs: &[(&str, &str)]| {
            ConfigChange::Incremental(
                pairs.iter().map(|(k, v)| (k.to_string(), AlterOp::Set, Some(v.to_string()))).collect(),
            )
        };
        let planner = Planner { image: &image, broker: &config };
        assert!(!unclean_allowed(image.topic("t").unwrap(), &planner.topic_defaults()));
        for bad in [("min.insync.replicas", "0"), ("log.cleanup.policy", "sometimes"), ("compression.type", "lzma")] {
            assert!(
                matches!(planner.plan_broker_configs("", &set(&[bad])), Err(ControllerError::InvalidConfig(_))),
                "{bad:?}"
            );
        }
        let records = planner
            .plan_broker_configs("", &set(&[("min.insync.replicas", "2"), ("unclean.leader.election.enable", "true")]))
            .unwrap();
        let image = Arc::new(image.apply_all(&records));
        let topic = image.topic("t").unwrap();
        assert!(unclean_allowed(topic, &Planner { image: &image, broker: &config }.topic_defaults()));
        let view = MetadataView::build(image.clone(), None, &config);
        assert_eq!(view.config_of(&topic.id).unwrap().partition.min_insync_replicas, 2);
    }

    #[test]
    fn replicas_spread_over_racks_when_racks_are_set() {
        let image = image_with(&[Some("a"), Some("a"), Some("b"), Some("b")]);
        let config = BrokerConfig::default();
        let planner = Planner { image: &image, broker: &config };
        let records = planner.plan_topic(&new_topic("racked", 8, 2), false).unwrap();
        let image = image.apply_all(&records);
        let rack = |b: BrokerId| image.broker(b).unwrap().rack.clone().unwrap();
        let topic = image.topic("racked").unwrap();
        for p in &topic.partitions {
            assert_eq!(p.replicas.len(), 2);
            assert_ne!(rack(p.replicas[0]), rack(p.replicas[1]), "both racks hold a replica: {:?}", p.replicas);
        }
        let leaders: std::collections::BTreeSet<BrokerId> = topic.partitions.iter().map(|p| p.leader).collect();
        assert_eq!(leaders.len(), 4, "leaders on every broker");
    }

    #[test]
    fn alter_partition_refuses_stale_epochs_and_ineligible_replicas() {
        let image = image_with(&[None, None, None]);
        let config = BrokerConfig::default();
        let records = Planner { image: &image, broker: &config }.plan_topic(&new_topic("t", 1, 3), false).unwrap();
        let image = image.apply_all(&records);
        let planner = Planner { image: &image, broker: &config };
        let topic = image.topic("t").unwrap();
        let p = &topic.partitions[0];
        let change = |isr: Vec<BrokerId>, leader_epoch: i32, partition_epoch: i32| IsrChange {
            topic_id: topic.id,
            partition: 0,
            leader_epoch,
            partition_epoch,
            isr,
        };
        let shrink: Vec<BrokerId> = vec![p.leader];
        assert!(matches!(
            planner.plan_alter_partition(p.leader, &change(shrink.clone(), p.leader_epoch, p.partition_epoch + 1)),
            Err(ControllerError::InvalidUpdateVersion(_))
        ));
        assert!(matches!(
            planner.plan_alter_partition(p.leader, &change(shrink.clone(), p.leader_epoch - 1, p.partition_epoch)),
            Err(ControllerError::FencedLeaderEpoch(_))
        ));
        let other = *p.replicas.iter().find(|b| **b != p.leader).unwrap();
        assert!(matches!(
            planner.plan_alter_partition(other, &change(shrink.clone(), p.leader_epoch, p.partition_epoch)),
            Err(ControllerError::NotLeader(_))
        ));
        assert!(matches!(
            planner.plan_alter_partition(p.leader, &change(vec![other], p.leader_epoch, p.partition_epoch)),
            Err(ControllerError::IneligibleReplica(_))
        ));
        assert!(matches!(
            planner.plan_alter_partition(p.leader, &change(vec![p.leader, 9], p.leader_epoch, p.partition_epoch)),
            Err(ControllerError::IneligibleReplica(_))
        ));
        let record =
            planner.plan_alter_partition(p.leader, &change(shrink, p.leader_epoch, p.partition_epoch)).unwrap();
        let after = image.apply(&record);
        let q = &after.topic("t").unwrap().partitions[0];
        assert_eq!((q.isr.clone(), q.leader, q.leader_epoch), (vec![p.leader], p.leader, p.leader_epoch));
        assert!(q.partition_epoch > p.partition_epoch);
    }
}
