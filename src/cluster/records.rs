//! Metadata records: every change to the cluster's replicated metadata, as it is stored in the
//! metadata log (KRaft's record kinds, by the same names without the `Record` suffix). Only
//! facts every broker shares are here; which shard of a broker owns a replica, and settings of
//! one broker such as its flush policy, are that broker's own business.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::model::BrokerId;

/// Where a broker listens, as clients are told.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Endpoint {
    /// Listener name (`PLAINTEXT` until named listeners exist).
    pub listener: String,
    /// Host clients connect to.
    pub host: String,
    /// Port clients connect to.
    pub port: u16,
}

/// One change to the cluster metadata.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum MetadataRecord {
    /// The cluster's identity, written once.
    ClusterId {
        /// Kafka cluster id (22 characters of URL-safe base64).
        cluster_id: String,
    },
    /// A broker (re)registered: a new incarnation, its endpoints and rack.
    RegisterBroker {
        /// Node id.
        broker_id: BrokerId,
        /// Changes on every start of the broker process.
        incarnation: Uuid,
        /// Where clients reach it.
        endpoints: Vec<Endpoint>,
        /// Rack, if configured.
        rack: Option<String>,
        /// Identifies this registration: heartbeats carry it, so a broker that registered again
        /// (a restart) fences the stale process. Increases with every registration.
        #[serde(default)]
        broker_epoch: u64,
        /// Whether it starts fenced (a new registration does, until the broker caught up).
        #[serde(default)]
        fenced: bool,
    },
    /// A broker missed its heartbeats (or shut down): it leads nothing and is in no ISR.
    FenceBroker {
        /// Node id.
        broker_id: BrokerId,
        /// The registration (broker epoch) fenced.
        broker_epoch: u64,
    },
    /// A registered broker caught up with the metadata and may lead and follow again.
    UnfenceBroker {
        /// Node id.
        broker_id: BrokerId,
        /// The registration (broker epoch) unfenced.
        broker_epoch: u64,
    },
    /// A topic was created (its partitions follow as [`MetadataRecord::Partition`]).
    Topic {
        /// Name.
        name: String,
        /// Topic id.
        id: Uuid,
        /// Internal topic (e.g. `__consumer_offsets`).
        internal: bool,
    },
    /// A partition was created.
    Partition {
        /// Topic id.
        topic_id: Uuid,
        /// Partition index.
        partition: i32,
        /// Brokers holding replicas, the preferred leader first.
        replicas: Vec<BrokerId>,
        /// In-sync replicas.
        isr: Vec<BrokerId>,
        /// Leader, or -1 when there is none.
        leader: BrokerId,
        /// Leader epoch.
        leader_epoch: i32,
        /// Bumped by every change of the partition.
        partition_epoch: i32,
    },
    /// A partition's leadership, in-sync set or replicas changed.
    PartitionChange {
        /// Topic id.
        topic_id: Uuid,
        /// Partition index.
        partition: i32,
        /// New leader, when it changed.
        leader: Option<BrokerId>,
        /// New in-sync replicas, when they changed.
        isr: Option<Vec<BrokerId>>,
        /// New replicas, when they changed.
        replicas: Option<Vec<BrokerId>>,
        /// The leader epoch after the change.
        leader_epoch: i32,
        /// The partition epoch after the change.
        partition_epoch: i32,
        /// A reassignment's replicas being added, when that changed (empty: none in progress).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        adding: Option<Vec<BrokerId>>,
        /// A reassignment's replicas being removed, when that changed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        removing: Option<Vec<BrokerId>>,
    },
    /// A topic was deleted.
    RemoveTopic {
        /// Topic id.
        id: Uuid,
    },
    /// A topic's config overrides were replaced by these.
    TopicConfig {
        /// Topic id.
        id: Uuid,
        /// The complete set of overrides.
        configs: BTreeMap<String, String>,
    },
    /// Producer ids below `next` have been handed out (blocks go to brokers).
    ProducerIds {
        /// The broker that got the last block.
        broker_id: BrokerId,
        /// First id not yet handed out.
        next: i64,
    },
    /// A user's SCRAM credential for one mechanism was set (Kafka's UserScramCredentialRecord).
    UserScramCredential {
        /// User name.
        name: String,
        /// The credential.
        credential: ScramCredential,
    },
    /// An ACL was created (Kafka's AccessControlEntryRecord).
    Acl {
        /// Its id.
        id: Uuid,
        /// What it allows or denies.
        binding: AclBinding,
    },
    /// An ACL was deleted.
    RemoveAcl {
        /// Its id.
        id: Uuid,
    },
    /// A user's SCRAM credential for one mechanism was removed.
    RemoveUserScramCredential {
        /// User name.
        name: String,
        /// `SCRAM-SHA-256` or `SCRAM-SHA-512`.
        mechanism: String,
    },
    /// A client quota was set, or removed when `value` is `None` (Kafka's ClientQuotaRecord).
    ClientQuota {
        /// Who it applies to.
        entity: QuotaEntity,
        /// `producer_byte_rate`, `consumer_byte_rate`, `request_percentage`, ...
        key: String,
        /// The bound.
        value: Option<f64>,
    },
    /// A broker resource's dynamic configs, all of them (Kafka's ConfigRecord for resource type
    /// BROKER): `resource` is `""` for the cluster-wide default or a broker id; an empty map
    /// removes them. Kafka's property names and values, checked by the controller.
    BrokerConfigs {
        /// `""` (every broker) or a broker id.
        resource: String,
        /// Name to value.
        configs: BTreeMap<String, String>,
    },
}

/// Who a client quota applies to (Kafka's entity types `user` and `client-id`): a user, a client
/// id, or both; each a name or the default for names without a quota of their own.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QuotaEntity {
    /// The user part (the principal's name without `User:`).
    pub user: Option<QuotaName>,
    /// The client id part.
    pub client_id: Option<QuotaName>,
}

/// One part of a [`QuotaEntity`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum QuotaName {
    /// Every name that has no entity of its own (Kafka's `<default>`).
    Default,
    /// This name.
    Named(String),
}

/// One ACL: which principal from which host may (or may not) do an operation on resources, with
/// Kafka's codes for resource type, pattern type, operation and permission.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct AclBinding {
    /// Resource type (2 topic, 3 group, 4 cluster, 5 transactional id).
    pub resource_type: i8,
    /// Resource name, `*` for all, or a prefix.
    pub resource_name: String,
    /// Pattern type (3 literal, 4 prefixed).
    pub pattern_type: i8,
    /// `User:NAME` or `User:*`.
    pub principal: String,
    /// Client host (IP address) or `*`.
    pub host: String,
    /// Operation (2 all, 3 read, 4 write, ...).
    pub operation: i8,
    /// Permission (2 deny, 3 allow).
    pub permission: i8,
}

/// What a broker keeps of a SCRAM password (RFC 5802): enough to check a client's proof and to
/// prove itself, not enough to log in as the user.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ScramCredential {
    /// `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub mechanism: String,
    /// Salt the password was hashed with.
    pub salt: Vec<u8>,
    /// H(HMAC(SaltedPassword, "Client Key")).
    pub stored_key: Vec<u8>,
    /// HMAC(SaltedPassword, "Server Key").
    pub server_key: Vec<u8>,
    /// PBKDF2 iterations.
    pub iterations: u32,
}

/// Records of the first metadata log format (one broker, partitions placed on shards), read
/// once to upgrade a data directory.
#[derive(Clone, Debug, Deserialize)]
pub(super) enum LegacyRecord {
    ClusterCreated { cluster_id: String },
    TopicCreated { name: String, id: Uuid, shards: Vec<u32>, configs: BTreeMap<String, String>, internal: bool },
    TopicDeleted { id: Uuid },
    PartitionsAdded { id: Uuid, shards: Vec<u32> },
    ProducerIdsAllocated { next: i64 },
    TopicConfigsSet { id: Uuid, configs: BTreeMap<String, String> },
}

impl LegacyRecord {
    /// The records that say the same on a cluster of `broker` alone. `partitions` counts the
    /// partitions of each topic so far (legacy records add partitions by count).
    pub(super) fn upgrade(self, broker: BrokerId, partitions: &mut BTreeMap<Uuid, i32>) -> Vec<MetadataRecord> {
        let partition = |topic_id: Uuid, index: i32| MetadataRecord::Partition {
            topic_id,
            partition: index,
            replicas: vec![broker],
            isr: vec![broker],
            leader: broker,
            leader_epoch: 0,
            partition_epoch: 0,
        };
        match self {
            Self::ClusterCreated { cluster_id } => vec![MetadataRecord::ClusterId { cluster_id }],
            Self::TopicCreated { name, id, shards, configs, internal } => {
                let mut out = vec![MetadataRecord::Topic { name, id, internal }];
                out.extend((0..shards.len() as i32).map(|i| partition(id, i)));
                if !configs.is_empty() {
                    out.push(MetadataRecord::TopicConfig { id, configs });
                }
                partitions.insert(id, shards.len() as i32);
                out
            }
            Self::TopicDeleted { id } => {
                partitions.remove(&id);
                vec![MetadataRecord::RemoveTopic { id }]
            }
            Self::PartitionsAdded { id, shards } => {
                let count = partitions.entry(id).or_insert(0);
                let first = *count;
                *count += shards.len() as i32;
                (first..*count).map(|i| partition(id, i)).collect()
            }
            Self::ProducerIdsAllocated { next } => vec![MetadataRecord::ProducerIds { broker_id: broker, next }],
            Self::TopicConfigsSet { id, configs } => vec![MetadataRecord::TopicConfig { id, configs }],
        }
    }
}
