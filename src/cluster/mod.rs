//! Cluster metadata and the controller that changes it.

mod controller;
mod metadata;
mod metadata_log;
pub mod topic_config;

pub use controller::{AlterOp, ConfigChange, ControllerCall, ControllerError, NewTopic, TopicRef, run_controller};
pub use metadata::{
    BrokerInfo, CONSUMER_OFFSETS_TOPIC, ClusterMetadata, MetadataRecord, PartitionMetadata, TopicMetadata,
};
pub use metadata_log::MetadataLog;
pub use topic_config::TopicConfig;
