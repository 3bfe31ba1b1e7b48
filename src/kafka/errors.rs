//! The protocol edge: every error of the layers below is mapped to a Kafka error code here, and
//! only here.

use kafka_protocol::error::ResponseError;

use crate::cluster::ControllerError;
use crate::group::GroupError;
use crate::model::BatchError;
use crate::partition::PartitionError;

/// Kafka error code for a batch refused at produce time.
pub fn batch_error(err: &BatchError) -> ResponseError {
    match err {
        BatchError::TooLarge { .. } => ResponseError::MessageTooLarge,
        BatchError::InvalidTimestamp(_) => ResponseError::InvalidTimestamp,
        BatchError::UnsupportedMagic(_) => ResponseError::UnsupportedForMessageFormat,
        BatchError::CountMismatch { .. }
        | BatchError::Empty
        | BatchError::OffsetGap { .. }
        | BatchError::InvalidRecord(_) => ResponseError::InvalidRecord,
        BatchError::Truncated { .. }
        | BatchError::BadLength(_)
        | BatchError::CrcMismatch { .. }
        | BatchError::Corrupt(_) => ResponseError::CorruptMessage,
    }
}

/// Kafka error code for a partition-level failure.
pub fn partition_error(err: &PartitionError) -> ResponseError {
    match err {
        PartitionError::UnknownTopicOrPartition => ResponseError::UnknownTopicOrPartition,
        PartitionError::NotLeaderOrFollower => ResponseError::NotLeaderOrFollower,
        PartitionError::FencedLeaderEpoch { .. } => ResponseError::FencedLeaderEpoch,
        PartitionError::UnknownLeaderEpoch { .. } => ResponseError::UnknownLeaderEpoch,
        PartitionError::Timeout => ResponseError::RequestTimedOut,
        PartitionError::NotEnoughReplicas { .. } => ResponseError::NotEnoughReplicas,
        PartitionError::NotEnoughReplicasAfterAppend { .. } => ResponseError::NotEnoughReplicasAfterAppend,
        PartitionError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        PartitionError::InvalidProducerEpoch { .. } => ResponseError::InvalidProducerEpoch,
        PartitionError::OutOfOrderSequence { .. } => ResponseError::OutOfOrderSequenceNumber,
        PartitionError::InvalidBatch(batch) => batch_error(batch),
        PartitionError::Storage(_) => ResponseError::KafkaStorageError,
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
        ControllerError::NotController(_) => ResponseError::NotController,
        ControllerError::FencedLeaderEpoch(_) => ResponseError::FencedLeaderEpoch,
        ControllerError::InvalidUpdateVersion(_) => ResponseError::InvalidUpdateVersion,
        ControllerError::IneligibleReplica(_) => ResponseError::IneligibleReplica,
        ControllerError::NotLeader(_) => ResponseError::NotLeaderOrFollower,
        ControllerError::ElectionNotNeeded => ResponseError::ElectionNotNeeded,
        ControllerError::PreferredLeaderNotAvailable => ResponseError::PreferredLeaderNotAvailable,
        ControllerError::EligibleLeadersNotAvailable => ResponseError::EligibleLeadersNotAvailable,
        ControllerError::NoReassignmentInProgress => ResponseError::NoReassignmentInProgress,
        ControllerError::Timeout(_) => ResponseError::RequestTimedOut,
        ControllerError::StaleBrokerEpoch(_)
        | ControllerError::InconsistentClusterId(_)
        | ControllerError::Storage(_) => ResponseError::UnknownServerError,
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
        GroupError::NotAuthorized => ResponseError::GroupAuthorizationFailed,
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
        GroupError::FencedMemberEpoch => ResponseError::FencedMemberEpoch,
        GroupError::StaleMemberEpoch => ResponseError::StaleMemberEpoch,
        GroupError::UnsupportedAssignor => ResponseError::UnsupportedAssignor,
        GroupError::InvalidRegularExpression => ResponseError::InvalidRegularExpression,
        GroupError::InvalidRequest => ResponseError::InvalidRequest,
    }
}

/// Kafka error code (0 for none) for an optional group failure.
pub fn group_code(err: Option<GroupError>) -> i16 {
    err.map_or(0, |e| group_error(e).code())
}
