//! The metadata image: the cluster's replicated metadata at one point of its log, as an immutable
//! value built by applying records. Brokers, topics, and per partition its replicas, leader,
//! leader epoch, in-sync replicas and partition epoch, all keyed by broker ids.
//!
//! Ownership: immutable. Applying a record builds a new image that shares every unchanged topic
//! (`Arc`), and the new image travels to every shard as an `Arc`, read there without locks.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use uuid::Uuid;

use super::records::{AclBinding, Endpoint, MetadataRecord, QuotaEntity, ScramCredential};
use crate::model::{BrokerId, NO_BROKER};

/// The internal topic holding consumer group state and committed offsets.
pub const CONSUMER_OFFSETS_TOPIC: &str = "__consumer_offsets";

/// A registered broker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerRegistration {
    /// Node id.
    pub id: BrokerId,
    /// Changes on every start of the broker process.
    pub incarnation: Uuid,
    /// Where clients reach it.
    pub endpoints: Vec<Endpoint>,
    /// Rack, if configured.
    pub rack: Option<String>,
    /// The metadata log index of this registration: heartbeats carry it, so a broker that
    /// registered again (a restart) fences the stale process.
    pub epoch: u64,
    /// Fenced brokers lead nothing and are in no ISR.
    pub fenced: bool,
}

impl BrokerRegistration {
    /// The endpoint of listener `name` (clients are told the one of the listener they came
    /// in on; brokers talk over the PLAINTEXT one).
    pub fn endpoint(&self, name: &str) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| e.listener == name)
    }
}

/// One partition as the cluster knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionImage {
    /// Partition index.
    pub index: i32,
    /// Brokers holding replicas, the preferred leader first.
    pub replicas: Vec<BrokerId>,
    /// In-sync replicas.
    pub isr: Vec<BrokerId>,
    /// Leader, or -1 when there is none.
    pub leader: BrokerId,
    /// Leader epoch.
    pub leader_epoch: i32,
    /// Bumped by every change of the partition.
    pub partition_epoch: i32,
    /// A reassignment in progress: replicas being added (they catch up, then join the ISR)...
    pub adding: Vec<BrokerId>,
    /// ...and replicas to remove once every added one is in sync.
    pub removing: Vec<BrokerId>,
}

impl PartitionImage {
    /// Whether a reassignment is in progress.
    pub fn reassigning(&self) -> bool {
        !self.adding.is_empty() || !self.removing.is_empty()
    }

    /// The replicas a reassignment in progress ends with (all of them when none is).
    pub fn target_replicas(&self) -> Vec<BrokerId> {
        self.replicas.iter().copied().filter(|b| !self.removing.contains(b)).collect()
    }
}

/// One topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicImage {
    /// Name.
    pub name: String,
    /// Topic id.
    pub id: Uuid,
    /// Internal topic.
    pub internal: bool,
    /// Partitions by index.
    pub partitions: Vec<PartitionImage>,
    /// Config overrides set on the topic (the effective values also depend on each broker's
    /// defaults; see `TopicConfig::resolve`).
    pub configs: BTreeMap<String, String>,
}

impl TopicImage {
    /// Partition `index`, if the topic has it.
    pub fn partition(&self, index: i32) -> Option<&PartitionImage> {
        usize::try_from(index).ok().and_then(|i| self.partitions.get(i))
    }
}

/// The whole cluster's metadata.
#[derive(Clone, Debug, Default)]
pub struct MetadataImage {
    /// Cluster id.
    pub cluster_id: String,
    /// Registered brokers by id.
    pub brokers: BTreeMap<BrokerId, BrokerRegistration>,
    topics: BTreeMap<String, Arc<TopicImage>>,
    topic_names: HashMap<Uuid, String>,
    /// First producer id not yet handed out.
    pub next_producer_id: i64,
    /// ACLs by id.
    pub acls: BTreeMap<Uuid, Arc<AclBinding>>,
    /// SCRAM credentials by user name and mechanism.
    pub scram_credentials: BTreeMap<(String, String), Arc<ScramCredential>>,
    /// Client quotas: each entity's bounds by key.
    pub client_quotas: BTreeMap<QuotaEntity, BTreeMap<String, f64>>,
    /// Dynamic broker configs by resource (`""`: every broker's default; else a broker id).
    pub broker_configs: BTreeMap<String, BTreeMap<String, String>>,
    /// Records applied so far.
    pub records_applied: u64,
    /// The metadata log index of the last entry applied (0 before any).
    pub applied_index: u64,
}

impl MetadataImage {
    /// The dynamic broker configs that apply to broker `broker`: the cluster-wide defaults, then
    /// its own (which win), in the order to apply them.
    pub fn dynamic_broker_configs(&self, broker: BrokerId) -> Vec<(&str, &str)> {
        let own = broker.to_string();
        [String::new(), own]
            .iter()
            .filter_map(|resource| self.broker_configs.get(resource))
            .flat_map(|configs| configs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .collect()
    }

    /// The image of an empty log.
    pub fn empty() -> Self {
        Self::default()
    }

    /// A topic by name.
    pub fn topic(&self, name: &str) -> Option<&Arc<TopicImage>> {
        self.topics.get(name)
    }

    /// A topic by id.
    pub fn topic_by_id(&self, id: &Uuid) -> Option<&Arc<TopicImage>> {
        self.topic_names.get(id).and_then(|name| self.topics.get(name))
    }

    /// Every topic, by name.
    pub fn topics(&self) -> impl Iterator<Item = &Arc<TopicImage>> {
        self.topics.values()
    }

    /// Number of topics.
    pub fn topic_count(&self) -> usize {
        self.topics.len()
    }

    /// A broker by id.
    pub fn broker(&self, id: BrokerId) -> Option<&BrokerRegistration> {
        self.brokers.get(&id)
    }

    /// True when `id` is registered and not fenced.
    pub fn is_live(&self, id: BrokerId) -> bool {
        self.brokers.get(&id).is_some_and(|b| !b.fenced)
    }

    /// The ids of the registered brokers that are not fenced.
    pub fn live_brokers(&self) -> Vec<BrokerId> {
        self.brokers.values().filter(|b| !b.fenced).map(|b| b.id).collect()
    }

    /// This image with the records of metadata log entry `index` applied.
    pub fn apply_entry(&self, index: u64, records: &[MetadataRecord]) -> Self {
        let mut next = self.apply_all(records);
        next.applied_index = next.applied_index.max(index);
        next
    }

    /// This image with `record` applied (a copy: unchanged topics are shared).
    pub fn apply(&self, record: &MetadataRecord) -> Self {
        let mut next = self.clone();
        next.apply_mut(record);
        next
    }

    /// This image with every record of `records` applied, in order.
    pub fn apply_all<'a>(&self, records: impl IntoIterator<Item = &'a MetadataRecord>) -> Self {
        let mut next = self.clone();
        for record in records {
            next.apply_mut(record);
        }
        next
    }

    /// Applies `record` in place. Records that do not apply (an unknown topic) are skipped with a
    /// warning: the log is replayed as written.
    pub fn apply_mut(&mut self, record: &MetadataRecord) {
        let next = self;
        next.records_applied += 1;
        match record {
            MetadataRecord::ClusterId { cluster_id } => {
                // The first one wins: a cluster's identity never changes.
                if next.cluster_id.is_empty() {
                    next.cluster_id = cluster_id.clone();
                }
            }
            MetadataRecord::RegisterBroker { broker_id, incarnation, endpoints, rack, broker_epoch, fenced } => {
                next.brokers.insert(
                    *broker_id,
                    BrokerRegistration {
                        id: *broker_id,
                        incarnation: *incarnation,
                        endpoints: endpoints.clone(),
                        rack: rack.clone(),
                        epoch: *broker_epoch,
                        fenced: *fenced,
                    },
                );
            }
            MetadataRecord::FenceBroker { broker_id, broker_epoch } => {
                if let Some(b) = next.brokers.get_mut(broker_id).filter(|b| b.epoch == *broker_epoch) {
                    b.fenced = true;
                }
            }
            MetadataRecord::UnfenceBroker { broker_id, broker_epoch } => {
                if let Some(b) = next.brokers.get_mut(broker_id).filter(|b| b.epoch == *broker_epoch) {
                    b.fenced = false;
                }
            }
            MetadataRecord::Topic { name, id, internal } => {
                let topic = TopicImage {
                    name: name.clone(),
                    id: *id,
                    internal: *internal,
                    partitions: Vec::new(),
                    configs: BTreeMap::new(),
                };
                next.topic_names.insert(*id, name.clone());
                next.topics.insert(name.clone(), Arc::new(topic));
            }
            MetadataRecord::Partition { topic_id, partition, replicas, isr, leader, leader_epoch, partition_epoch } => {
                next.change_topic(topic_id, |topic| {
                    let image = PartitionImage {
                        index: *partition,
                        replicas: replicas.clone(),
                        isr: isr.clone(),
                        leader: *leader,
                        leader_epoch: *leader_epoch,
                        partition_epoch: *partition_epoch,
                        adding: Vec::new(),
                        removing: Vec::new(),
                    };
                    match usize::try_from(*partition) {
                        Ok(i) if i < topic.partitions.len() => topic.partitions[i] = image,
                        Ok(i) if i == topic.partitions.len() => topic.partitions.push(image),
                        _ => tracing::warn!(topic = %topic.name, partition, "partition record out of order ignored"),
                    }
                });
            }
            MetadataRecord::PartitionChange {
                topic_id,
                partition,
                leader,
                isr,
                replicas,
                leader_epoch,
                partition_epoch,
                adding,
                removing,
            } => {
                next.change_topic(topic_id, |topic| {
                    let Some(p) = usize::try_from(*partition).ok().and_then(|i| topic.partitions.get_mut(i)) else {
                        tracing::warn!(topic = %topic.name, partition, "change of an unknown partition ignored");
                        return;
                    };
                    if let Some(leader) = leader {
                        p.leader = *leader;
                    }
                    if let Some(isr) = isr {
                        p.isr = isr.clone();
                    }
                    if let Some(replicas) = replicas {
                        p.replicas = replicas.clone();
                    }
                    if let Some(adding) = adding {
                        p.adding = adding.clone();
                    }
                    if let Some(removing) = removing {
                        p.removing = removing.clone();
                    }
                    p.leader_epoch = *leader_epoch;
                    p.partition_epoch = *partition_epoch;
                });
            }
            MetadataRecord::RemoveTopic { id } => {
                if let Some(name) = next.topic_names.remove(id) {
                    next.topics.remove(&name);
                }
            }
            MetadataRecord::TopicConfig { id, configs } => {
                next.change_topic(id, |topic| topic.configs = configs.clone());
            }
            MetadataRecord::ProducerIds { next: n, .. } => {
                next.next_producer_id = next.next_producer_id.max(*n);
            }
            MetadataRecord::UserScramCredential { name, credential } => {
                let key = (name.clone(), credential.mechanism.clone());
                next.scram_credentials.insert(key, Arc::new(credential.clone()));
            }
            MetadataRecord::Acl { id, binding } => {
                next.acls.insert(*id, Arc::new(binding.clone()));
            }
            MetadataRecord::RemoveAcl { id } => {
                next.acls.remove(id);
            }
            MetadataRecord::RemoveUserScramCredential { name, mechanism } => {
                next.scram_credentials.remove(&(name.clone(), mechanism.clone()));
            }
            MetadataRecord::ClientQuota { entity, key, value } => match value {
                Some(value) => {
                    next.client_quotas.entry(entity.clone()).or_default().insert(key.clone(), *value);
                }
                None => {
                    if let Some(bounds) = next.client_quotas.get_mut(entity) {
                        bounds.remove(key);
                        if bounds.is_empty() {
                            next.client_quotas.remove(entity);
                        }
                    }
                }
            },
            MetadataRecord::BrokerConfigs { resource, configs } => {
                if configs.is_empty() {
                    next.broker_configs.remove(resource);
                } else {
                    next.broker_configs.insert(resource.clone(), configs.clone());
                }
            }
        }
    }

    /// Changes a topic in place: copied only the first time an entry changes it (while the
    /// previous image still shares it), so the records of a topic with many partitions cost
    /// one copy, not one per record.
    fn change_topic(&mut self, id: &Uuid, change: impl FnOnce(&mut TopicImage)) {
        let topic = self.topic_names.get(id).and_then(|name| self.topics.get_mut(name));
        match topic {
            Some(topic) => change(Arc::make_mut(topic)),
            None => tracing::warn!(%id, "metadata record for an unknown topic ignored"),
        }
    }

    /// The records that rebuild this image (what a snapshot of the log holds).
    pub fn to_records(&self) -> Vec<MetadataRecord> {
        let mut records = vec![MetadataRecord::ClusterId { cluster_id: self.cluster_id.clone() }];
        for broker in self.brokers.values() {
            records.push(MetadataRecord::RegisterBroker {
                broker_id: broker.id,
                incarnation: broker.incarnation,
                endpoints: broker.endpoints.clone(),
                rack: broker.rack.clone(),
                broker_epoch: broker.epoch,
                fenced: broker.fenced,
            });
        }
        records.push(MetadataRecord::ProducerIds { broker_id: NO_BROKER, next: self.next_producer_id });
        for (id, binding) in &self.acls {
            records.push(MetadataRecord::Acl { id: *id, binding: (**binding).clone() });
        }
        for (entity, bounds) in &self.client_quotas {
            for (key, value) in bounds {
                records.push(MetadataRecord::ClientQuota {
                    entity: entity.clone(),
                    key: key.clone(),
                    value: Some(*value),
                });
            }
        }
        for (resource, configs) in &self.broker_configs {
            records.push(MetadataRecord::BrokerConfigs { resource: resource.clone(), configs: configs.clone() });
        }
        for ((name, _), credential) in &self.scram_credentials {
            records
                .push(MetadataRecord::UserScramCredential { name: name.clone(), credential: (**credential).clone() });
        }
        for topic in self.topics.values() {
            records.push(MetadataRecord::Topic { name: topic.name.clone(), id: topic.id, internal: topic.internal });
            for p in &topic.partitions {
                records.push(MetadataRecord::Partition {
                    topic_id: topic.id,
                    partition: p.index,
                    replicas: p.replicas.clone(),
                    isr: p.isr.clone(),
                    leader: p.leader,
                    leader_epoch: p.leader_epoch,
                    partition_epoch: p.partition_epoch,
                });
                if p.reassigning() {
                    records.push(MetadataRecord::PartitionChange {
                        topic_id: topic.id,
                        partition: p.index,
                        leader: None,
                        isr: None,
                        replicas: None,
                        leader_epoch: p.leader_epoch,
                        partition_epoch: p.partition_epoch,
                        adding: Some(p.adding.clone()),
                        removing: Some(p.removing.clone()),
                    });
                }
            }
            if !topic.configs.is_empty() {
                records.push(MetadataRecord::TopicConfig { id: topic.id, configs: topic.configs.clone() });
            }
        }
        records
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(topic_id: Uuid, index: i32, replicas: &[BrokerId]) -> MetadataRecord {
        MetadataRecord::Partition {
            topic_id,
            partition: index,
            replicas: replicas.to_vec(),
            isr: replicas.to_vec(),
            leader: replicas[0],
            leader_epoch: 0,
            partition_epoch: 0,
        }
    }

    #[test]
    fn records_build_topics_partitions_and_leadership_and_replay_from_a_snapshot() {
        let id = Uuid::new_v4();
        let records = [
            MetadataRecord::ClusterId { cluster_id: "c".into() },
            MetadataRecord::Topic { name: "t".into(), id, internal: false },
            partition(id, 0, &[1, 2]),
            partition(id, 1, &[2, 1]),
            MetadataRecord::PartitionChange {
                topic_id: id,
                partition: 0,
                leader: Some(2),
                isr: Some(vec![2]),
                replicas: None,
                leader_epoch: 1,
                partition_epoch: 1,
                adding: None,
                removing: None,
            },
            MetadataRecord::TopicConfig { id, configs: BTreeMap::from([("retention.ms".into(), "5".into())]) },
        ];
        let image = MetadataImage::empty().apply_all(&records);
        let topic = image.topic("t").unwrap();
        assert_eq!(topic.partitions.len(), 2);
        assert_eq!((topic.partitions[0].leader, topic.partitions[0].leader_epoch), (2, 1));
        assert_eq!(topic.partitions[0].isr, vec![2]);
        assert_eq!(topic.partitions[0].replicas, vec![1, 2]);
        assert_eq!(topic.configs["retention.ms"], "5");
        let rebuilt = MetadataImage::empty().apply_all(&image.to_records());
        assert_eq!(rebuilt.topic("t"), image.topic("t"));
        let removed = image.apply(&MetadataRecord::RemoveTopic { id });
        assert!(removed.topic("t").is_none() && removed.topic_by_id(&id).is_none());
    }
}
