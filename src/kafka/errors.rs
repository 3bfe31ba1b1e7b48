//! The protocol edge: every error of the layers below is mapped to a Kafka error code here, and
//! only here.

use kafka_protocol::error::ResponseError;

use crate::cluster::ControllerError;
use crate::group::GroupError;
use crate::shard::PartitionError;
use crate::storage::{BatchError, StorageError};

/// Kafka error code for a batch refused at produce time.
pub fn batch_error(err: &BatchError) -> ResponseError {
    match err {
        BatchError::TooLarge { .. } => ResponseError::MessageTooLarge,
        BatchError::UnsupportedMagic(_) => ResponseError::UnsupportedForMessageFormat,
        BatchError::CountMismatch { .. } | BatchError::Empty | BatchError::OffsetGap { .. } => {
            ResponseError::InvalidRecord
        }
        BatchError::Truncated { .. } | BatchError::BadLength(_) | BatchError::CrcMismatch { .. } => {
            ResponseError::CorruptMessage
        }
    }
}

/// Kafka error code for a storage failure.
pub fn storage_error(err: &StorageError) -> ResponseError {
    match err {
        StorageError::Batch(batch) => batch_error(batch),
        StorageError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        StorageError::Io { .. } | StorageError::Offline(_) | StorageError::Corrupt { .. } => {
            ResponseError::KafkaStorageError
        }
        StorageError::Closed => ResponseError::NotLeaderOrFollower,
    }
}

/// Kafka error code for a partition-level failure.
pub fn partition_error(err: &PartitionError) -> ResponseError {
    match err {
        PartitionError::UnknownTopicOrPartition => ResponseError::UnknownTopicOrPartition,
        PartitionError::FencedLeaderEpoch { .. } => ResponseError::FencedLeaderEpoch,
        PartitionError::UnknownLeaderEpoch { .. } => ResponseError::UnknownLeaderEpoch,
        PartitionError::Timeout => ResponseError::RequestTimedOut,
        PartitionError::OffsetBeyondHighWatermark(_) => ResponseError::OffsetOutOfRange,
        PartitionError::InvalidProducerEpoch { .. } => ResponseError::InvalidProducerEpoch,
        PartitionError::OutOfOrderSequence { .. } => ResponseError::OutOfOrderSequenceNumber,
        PartitionError::Storage(storage) => storage_error(storage),
    }
}

/// Kafka error code for a refused metadata change.
pub fn controller_error(err: &ControllerError) -> ResponseError {
    match err {
        ControllerError::TopicAlreadyExists(_) => ResponseError::TopicAlreadyExists,
        ControllerError::InvalidTopic(_) => ResponseError::InvalidTopicException,
        ControllerError::InvalidPartitions(_) => ResponseError::InvalidPartitions,
        ControllerError::InvalidReplicationFactor(_) => ResponseError::InvalidReplicationFactor,
        ControllerError::InvalidReplicaAssignment(_) => ResponseError::InvalidReplicaAssignment,
        ControllerError::InvalidConfig(_) => ResponseError::InvalidConfig,
        ControllerError::UnknownTopic(_) => ResponseError::UnknownTopicOrPartition,
        ControllerError::UnknownTopicId(_) => ResponseError::UnknownTopicId,
        ControllerError::PolicyViolation(_) => ResponseError::PolicyViolation,
        ControllerError::InvalidRequest(_) => ResponseError::InvalidRequest,
        ControllerError::Storage(_) => ResponseError::UnknownServerError,
    }
}

/// Code and message for a controller result.
pub fn controller_result<T>(result: &Result<T, ControllerError>) -> (i16, Option<String>) {
    match result {
        Ok(_) => (0, None),
        Err(err) => (controller_error(err).code(), Some(err.to_string())),
    }
}

/// Kafka error code for a group failure.
pub fn group_error(err: GroupError) -> ResponseError {
    match err {
        GroupError::UnknownMemberId => ResponseError::UnknownMemberId,
        GroupError::IllegalGeneration => ResponseError::IllegalGeneration,
        GroupError::RebalanceInProgress => ResponseError::RebalanceInProgress,
        GroupError::FencedInstanceId => ResponseError::FencedInstanceId,
        GroupError::CoordinatorNotAvailable | GroupError::Storage => ResponseError::CoordinatorNotAvailable,
        GroupError::CoordinatorLoadInProgress => ResponseError::CoordinatorLoadInProgress,
        GroupError::NotCoordinator => ResponseError::NotCoordinator,
        GroupError::InvalidSessionTimeout => ResponseError::InvalidSessionTimeout,
        GroupError::InconsistentGroupProtocol => ResponseError::InconsistentGroupProtocol,
        GroupError::MemberIdRequired => ResponseError::MemberIdRequired,
        GroupError::GroupMaxSizeReached => ResponseError::GroupMaxSizeReached,
        GroupError::UnknownTopicOrPartition => ResponseError::UnknownTopicOrPartition,
        GroupError::OffsetMetadataTooLarge => ResponseError::OffsetMetadataTooLarge,
        GroupError::NonEmptyGroup => ResponseError::NonEmptyGroup,
        GroupError::GroupIdNotFound => ResponseError::GroupIdNotFound,
        GroupError::GroupSubscribedToTopic => ResponseError::GroupSubscribedToTopic,
        GroupError::InvalidGroupId => ResponseError::InvalidGroupId,
    }
}

/// Kafka error code (0 for none) for an optional group failure.
pub fn group_code(err: Option<GroupError>) -> i16 {
    err.map_or(0, |e| group_error(e).code())
}
