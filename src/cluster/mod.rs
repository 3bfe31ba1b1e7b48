//! Cluster metadata and the control plane that changes it: records and the immutable image they
//! build (brokers, topics, partitions with replicas, leader, epochs and in-sync replicas), the
//! metadata quorum that replicates the log of records among the voters (Raft), the controller
//! active on its leader, the node-to-node RPC, and this broker's view of it all (which shard hosts
//! which of its replicas, topic configs resolved against its own defaults), published to every
//! shard.

mod controller;
mod image;
mod metadata_log;
mod plan;
mod plane;
mod publisher;
mod quorum;
mod records;
mod rpc;
pub mod topic_config;
mod view;

pub use controller::{AlterOp, ConfigChange, ControllerCall, ControllerError, ControllerHandle, NewTopic, TopicRef};
pub use image::{BrokerRegistration, CONSUMER_OFFSETS_TOPIC, MetadataImage, PartitionImage, TopicImage};
pub use plane::{ControlPlane, PlaneStart, read_cluster_id};
pub use publisher::{Publisher, apply_on_shard, opens_for_shard};
pub use quorum::{QuorumStart, QuorumStatus, Voter, VoterState};
pub use records::{AclBinding, Endpoint, MetadataRecord, QuotaEntity, QuotaName, ScramCredential};
pub use rpc::{
    Answer, ControllerRequest, ControllerResponse, ControllerTls, ControllerTlsSource, CreatedTopicInfo, IsrChange,
};
pub use topic_config::TopicConfig;
pub use view::{LocalChange, LocalMetadata, LocateError, MetadataView};
