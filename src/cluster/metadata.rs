//! Cluster metadata: topics, their partitions and where each partition lives (which shard), as an
//! immutable snapshot built from a log of metadata records.
//!
//! Ownership: the controller (on shard 0) is the only writer. Each change produces a new
//! `Arc<ClusterMetadata>` which is sent by value to every shard; shards hold it read-only, so the
//! data path reads metadata without any lock.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::topic_config::TopicConfig;
use crate::config::BrokerConfig;

/// The internal topic holding consumer group state and committed offsets.
pub const CONSUMER_OFFSETS_TOPIC: &str = "__consumer_offsets";

/// One change to the cluster metadata, as stored in the metadata log.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum MetadataRecord {
    /// The cluster's identity, written once when the data directory is created.
    ClusterCreated {
        /// Kafka cluster id (22 characters of URL-safe base64 in Kafka; any string here).
        cluster_id: String,
    },
    /// A topic was created.
    TopicCreated {
        /// Name.
        name: String,
        /// Topic id.
        id: Uuid,
        /// Shard of each partition, by partition index.
        shards: Vec<u32>,
        /// Config overrides.
        configs: BTreeMap<String, String>,
        /// Internal topic (e.g. `__consumer_offsets`).
        internal: bool,
    },
    /// A topic was deleted.
    TopicDeleted {
        /// Topic id.
        id: Uuid,
    },
    /// Partitions were added to a topic.
    PartitionsAdded {
        /// Topic id.
        id: Uuid,
        /// Shards of the new partitions, in index order.
        shards: Vec<u32>,
    },
    /// Producer ids below `next` have been handed out (in blocks, to shards).
    ProducerIdsAllocated {
        /// First id not yet handed out.
        next: i64,
    },
    /// A topic's config overrides were replaced.
    TopicConfigsSet {
        /// Topic id.
        id: Uuid,
        /// The complete new set of overrides.
        configs: BTreeMap<String, String>,
    },
}

/// A partition's placement.
#[derive(Clone, Debug, PartialEq)]
pub struct PartitionMetadata {
    /// Partition index.
    pub index: i32,
    /// Shard that owns the partition.
    pub shard: usize,
    /// Current leader epoch.
    pub leader_epoch: i32,
}

/// A topic.
#[derive(Clone, Debug, PartialEq)]
pub struct TopicMetadata {
    /// Name.
    pub name: String,
    /// Topic id.
    pub id: Uuid,
    /// Internal topic.
    pub internal: bool,
    /// Partitions by index.
    pub partitions: Vec<PartitionMetadata>,
    /// Effective configuration.
    pub config: Arc<TopicConfig>,
}

/// The broker as clients see it.
#[derive(Clone, Debug, PartialEq)]
pub struct BrokerInfo {
    /// Node id.
    pub id: i32,
    /// Advertised host.
    pub host: String,
    /// Advertised port.
    pub port: u16,
    /// Rack, if configured.
    pub rack: Option<String>,
}

/// An immutable view of the whole cluster's metadata.
#[derive(Clone, Debug)]
pub struct ClusterMetadata {
    /// Cluster id.
    pub cluster_id: String,
    /// This broker (the only one until replication lands).
    pub broker: BrokerInfo,
    /// Number of shards partitions are spread over.
    pub shard_count: usize,
    /// Topics by name.
    pub topics: BTreeMap<String, Arc<TopicMetadata>>,
    /// Topic names by id.
    pub topic_names: HashMap<Uuid, String>,
    /// First producer id not yet handed out.
    pub next_producer_id: i64,
    /// Bumped by every change.
    pub version: u64,
}

impl ClusterMetadata {
    /// Empty metadata for a broker.
    pub fn empty(broker: &BrokerConfig, shard_count: usize) -> Self {
        let (host, port) = broker.advertised();
        Self {
            cluster_id: String::new(),
            broker: BrokerInfo { id: broker.broker_id, host, port, rack: broker.rack.clone() },
            shard_count,
            topics: BTreeMap::new(),
            topic_names: HashMap::new(),
            next_producer_id: 0,
            version: 0,
        }
    }

    /// A topic by name.
    pub fn topic(&self, name: &str) -> Option<&Arc<TopicMetadata>> {
        self.topics.get(name)
    }

    /// A topic by id.
    pub fn topic_by_id(&self, id: &Uuid) -> Option<&Arc<TopicMetadata>> {
        self.topic_names.get(id).and_then(|name| self.topics.get(name))
    }

    /// Partitions each shard owns.
    pub fn partitions_per_shard(&self) -> Vec<usize> {
        let mut counts = vec![0; self.shard_count];
        for topic in self.topics.values() {
            for partition in &topic.partitions {
                counts[partition.shard] += 1;
            }
        }
        counts
    }

    /// Places `count` new partitions on the least-loaded shards.
    pub fn place_partitions(&self, count: usize) -> Vec<u32> {
        let mut load = self.partitions_per_shard();
        (0..count)
            .map(|_| {
                let (shard, _) = load.iter().enumerate().min_by_key(|(i, n)| (**n, *i)).expect("at least one shard");
                load[shard] += 1;
                shard as u32
            })
            .collect()
    }

    /// Applies one record, returning the new snapshot. Records that do not apply (unknown topic)
    /// are ignored with a warning: the log is replayed as written.
    pub fn apply(&self, record: &MetadataRecord, broker: &BrokerConfig) -> Self {
        let mut next = self.clone();
        next.version += 1;
        let shard_of = |s: u32| (s as usize) % self.shard_count.max(1);
        match record {
            MetadataRecord::ClusterCreated { cluster_id } => next.cluster_id = cluster_id.clone(),
            MetadataRecord::TopicCreated { name, id, shards, configs, internal } => {
                let topic = TopicMetadata {
                    name: name.clone(),
                    id: *id,
                    internal: *internal,
                    partitions: shards
                        .iter()
                        .enumerate()
                        .map(|(i, s)| PartitionMetadata { index: i as i32, shard: shard_of(*s), leader_epoch: 0 })
                        .collect(),
                    config: Arc::new(TopicConfig::resolve(configs.clone(), broker)),
                };
                next.topic_names.insert(*id, name.clone());
                next.topics.insert(name.clone(), Arc::new(topic));
            }
            MetadataRecord::TopicDeleted { id } => {
                if let Some(name) = next.topic_names.remove(id) {
                    next.topics.remove(&name);
                }
            }
            MetadataRecord::PartitionsAdded { id, shards } => match next.topic_by_id(id).cloned() {
                Some(topic) => {
                    let mut topic = (*topic).clone();
                    for s in shards {
                        let index = topic.partitions.len() as i32;
                        topic.partitions.push(PartitionMetadata { index, shard: shard_of(*s), leader_epoch: 0 });
                    }
                    next.topics.insert(topic.name.clone(), Arc::new(topic));
                }
                None => tracing::warn!(%id, "metadata record for unknown topic ignored"),
            },
            MetadataRecord::ProducerIdsAllocated { next: n } => {
                next.next_producer_id = next.next_producer_id.max(*n);
            }
            MetadataRecord::TopicConfigsSet { id, configs } => match next.topic_by_id(id).cloned() {
                Some(topic) => {
                    let mut topic = (*topic).clone();
                    topic.config = Arc::new(TopicConfig::resolve(configs.clone(), broker));
                    next.topics.insert(topic.name.clone(), Arc::new(topic));
                }
                None => tracing::warn!(%id, "metadata record for unknown topic ignored"),
            },
        }
        next
    }

    /// The records that rebuild this snapshot (used to compact the metadata log).
    pub fn to_records(&self) -> Vec<MetadataRecord> {
        let mut records = vec![
            MetadataRecord::ClusterCreated { cluster_id: self.cluster_id.clone() },
            MetadataRecord::ProducerIdsAllocated { next: self.next_producer_id },
        ];
        for topic in self.topics.values() {
            records.push(MetadataRecord::TopicCreated {
                name: topic.name.clone(),
                id: topic.id,
                shards: topic.partitions.iter().map(|p| p.shard as u32).collect(),
                configs: topic.config.overrides.clone(),
                internal: topic.internal,
            });
        }
        records
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_balances_and_records_replay() {
        let broker = BrokerConfig::default();
        let meta = ClusterMetadata::empty(&broker, 3);
        let shards = meta.place_partitions(7);
        assert_eq!(shards, vec![0, 1, 2, 0, 1, 2, 0]);
        let id = Uuid::new_v4();
        let created = meta.apply(
            &MetadataRecord::TopicCreated { name: "t".into(), id, shards, configs: BTreeMap::new(), internal: false },
            &broker,
        );
        assert_eq!(created.partitions_per_shard(), vec![3, 2, 2]);
        assert_eq!(created.place_partitions(2), vec![1, 2]);
        let grown = created.apply(&MetadataRecord::PartitionsAdded { id, shards: vec![1] }, &broker);
        assert_eq!(grown.topic("t").unwrap().partitions.len(), 8);
        let rebuilt = grown.to_records().iter().fold(ClusterMetadata::empty(&broker, 3), |m, r| m.apply(r, &broker));
        assert_eq!(rebuilt.topics, grown.topics);
        let deleted = grown.apply(&MetadataRecord::TopicDeleted { id }, &broker);
        assert!(deleted.topic("t").is_none() && deleted.topic_by_id(&id).is_none());
    }
}
