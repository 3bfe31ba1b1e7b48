//! Consumer groups (the classic protocol, and KIP-848's consumer protocol in `consumer.rs`): a coordinator per group, living on the shard that
//! owns partition `abs(javaHash(group)) % N` of `__consumer_offsets`, where group metadata and
//! committed offsets are stored as keyed records and replayed when the shard opens the partition.
//!
//! Ownership: a group's state belongs to its coordinator shard. Requests arrive as [`GroupCall`]
//! messages (sent by value, replies through oneshot channels).

pub mod consumer;
mod coordinator;
mod state;
pub mod store;

use bytes::Bytes;
use futures_channel::oneshot;

pub use coordinator::{
    GroupCoordinator, coordinator_shard, handle as handle_call, loaded_partitions, run_group_ticker,
};
pub use state::GroupState;

/// Why a group operation failed; mapped to a Kafka error code at the protocol edge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    /// The principal may not do this to the group (ACLs).
    #[error("group authorization failed")]
    NotAuthorized,
    /// The member id is not (or no longer) part of the group.
    #[error("unknown member id")]
    UnknownMemberId,
    /// The generation is not the group's current one.
    #[error("illegal generation")]
    IllegalGeneration,
    /// A rebalance is under way; rejoin.
    #[error("rebalance in progress")]
    RebalanceInProgress,
    /// Another member took over this static instance id.
    #[error("fenced instance id")]
    FencedInstanceId,
    /// The coordinator is not ready (offsets topic missing or being created).
    #[error("coordinator not available")]
    CoordinatorNotAvailable,
    /// The coordinator is still loading the group's offsets partition.
    #[error("coordinator load in progress")]
    CoordinatorLoadInProgress,
    /// This shard is not the group's coordinator (metadata changed under the request).
    #[error("not coordinator")]
    NotCoordinator,
    /// Session timeout outside the broker's bounds.
    #[error("invalid session timeout")]
    InvalidSessionTimeout,
    /// No protocol in common with the group, or protocol type mismatch.
    #[error("inconsistent group protocol")]
    InconsistentGroupProtocol,
    /// First join of a member: rejoin with the member id given (KIP-394).
    #[error("member id required")]
    MemberIdRequired,
    /// The group is full.
    #[error("group max size reached")]
    GroupMaxSizeReached,
    /// Commit for a topic or partition that does not exist.
    #[error("unknown topic or partition")]
    UnknownTopicOrPartition,
    /// Commit metadata longer than offset.metadata.max.bytes.
    #[error("offset metadata too large")]
    OffsetMetadataTooLarge,
    /// The group still has members.
    #[error("group is not empty")]
    NonEmptyGroup,
    /// No such group.
    #[error("group id not found")]
    GroupIdNotFound,
    /// The group is consuming the topic whose offsets were to be deleted.
    #[error("group is subscribed to the topic")]
    GroupSubscribedToTopic,
    /// Empty group id.
    #[error("invalid group id")]
    InvalidGroupId,
    /// Writing the group's records failed.
    #[error("storage error")]
    Storage,
    /// A consumer-protocol member's epoch is ahead of or unknown to the group: rejoin (KIP-848).
    #[error("fenced member epoch")]
    FencedMemberEpoch,
    /// A commit carries an older epoch than the member's.
    #[error("stale member epoch")]
    StaleMemberEpoch,
    /// The assignor asked for is not one the coordinator runs.
    #[error("unsupported assignor")]
    UnsupportedAssignor,
    /// The subscription regex is not accepted.
    #[error("invalid regular expression")]
    InvalidRegularExpression,
    /// The request is missing what its kind needs.
    #[error("invalid request")]
    InvalidRequest,
}

/// A member joining.
#[derive(Clone, Debug)]
pub struct JoinRequest {
    /// Group.
    pub group_id: String,
    /// Member id, empty on the first join.
    pub member_id: String,
    /// Static membership instance id (KIP-345).
    pub group_instance_id: Option<String>,
    /// Client id.
    pub client_id: String,
    /// Client address.
    pub client_host: String,
    /// Session timeout.
    pub session_timeout_ms: i32,
    /// Rebalance timeout.
    pub rebalance_timeout_ms: i32,
    /// Protocol type ("consumer").
    pub protocol_type: String,
    /// Supported protocols (assignors) and their metadata, in preference order.
    pub protocols: Vec<(String, Bytes)>,
    /// The client understands MEMBER_ID_REQUIRED (JoinGroup v4+).
    pub require_known_member_id: bool,
}

/// A member as the leader sees it in the JoinGroup response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinedMember {
    /// Member id.
    pub member_id: String,
    /// Static instance id.
    pub group_instance_id: Option<String>,
    /// Its metadata for the chosen protocol.
    pub metadata: Bytes,
}

/// The JoinGroup answer.
#[derive(Clone, Debug, Default)]
pub struct JoinResponse {
    /// Error, if any.
    pub error: Option<GroupError>,
    /// Generation.
    pub generation_id: i32,
    /// Protocol type.
    pub protocol_type: Option<String>,
    /// Chosen protocol.
    pub protocol_name: Option<String>,
    /// Leader member id.
    pub leader: String,
    /// This member's id.
    pub member_id: String,
    /// All members (leader only).
    pub members: Vec<JoinedMember>,
}

/// A SyncGroup request.
#[derive(Clone, Debug)]
pub struct SyncRequest {
    /// Group.
    pub group_id: String,
    /// Generation.
    pub generation_id: i32,
    /// Member id.
    pub member_id: String,
    /// Static instance id.
    pub group_instance_id: Option<String>,
    /// Protocol type (v5+).
    pub protocol_type: Option<String>,
    /// Protocol name (v5+).
    pub protocol_name: Option<String>,
    /// Assignments (leader only).
    pub assignments: Vec<(String, Bytes)>,
}

/// The SyncGroup answer.
#[derive(Clone, Debug, Default)]
pub struct SyncResponse {
    /// Error, if any.
    pub error: Option<GroupError>,
    /// Protocol type.
    pub protocol_type: Option<String>,
    /// Protocol name.
    pub protocol_name: Option<String>,
    /// This member's assignment.
    pub assignment: Bytes,
}

/// One committed offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffsetCommitEntry {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Leader epoch (-1: unknown).
    pub leader_epoch: i32,
    /// Client metadata.
    pub metadata: Option<String>,
}

/// A group as described.
#[derive(Clone, Debug, Default)]
pub struct GroupDescription {
    /// Error, if any.
    pub error: Option<GroupError>,
    /// Group id.
    pub group_id: String,
    /// State name.
    pub state: String,
    /// Protocol type.
    pub protocol_type: String,
    /// Protocol name.
    pub protocol: String,
    /// Members: id, instance id, client id, host, metadata, assignment.
    pub members: Vec<MemberDescription>,
}

/// A member as described.
#[derive(Clone, Debug, Default)]
pub struct MemberDescription {
    /// Member id.
    pub member_id: String,
    /// Static instance id.
    pub group_instance_id: Option<String>,
    /// Client id.
    pub client_id: String,
    /// Client host.
    pub client_host: String,
    /// Metadata for the chosen protocol.
    pub metadata: Bytes,
    /// Assignment.
    pub assignment: Bytes,
}

/// A group in a listing.
#[derive(Clone, Debug)]
pub struct GroupListing {
    /// Group id.
    pub group_id: String,
    /// Protocol type.
    pub protocol_type: String,
    /// State.
    pub state: String,
    /// `classic` or `consumer` (KIP-848).
    pub group_type: &'static str,
}

/// A call to a group coordinator.
pub enum GroupCall {
    /// JoinGroup.
    Join(JoinRequest, oneshot::Sender<JoinResponse>),
    /// SyncGroup.
    Sync(SyncRequest, oneshot::Sender<SyncResponse>),
    /// Heartbeat.
    Heartbeat {
        /// Group.
        group_id: String,
        /// Generation.
        generation_id: i32,
        /// Member.
        member_id: String,
        /// Static instance id.
        group_instance_id: Option<String>,
        /// Result.
        reply: oneshot::Sender<Option<GroupError>>,
    },
    /// LeaveGroup (batched: member id and instance id of each leaver).
    Leave {
        /// Group.
        group_id: String,
        /// Leaving members.
        members: Vec<(String, Option<String>)>,
        /// Group-level error and one result per member.
        reply: oneshot::Sender<(Option<GroupError>, Vec<Option<GroupError>>)>,
    },
    /// OffsetCommit.
    Commit {
        /// Group.
        group_id: String,
        /// Generation (-1 for a commit outside group membership).
        generation_id: i32,
        /// Member ("" outside membership).
        member_id: String,
        /// Static instance id.
        group_instance_id: Option<String>,
        /// Offsets, already checked against the topics (unknown ones never get here).
        offsets: Vec<OffsetCommitEntry>,
        /// One result per offset.
        reply: oneshot::Sender<Vec<Option<GroupError>>>,
    },
    /// OffsetFetch for one group: `None` topics means all committed offsets.
    FetchOffsets {
        /// Group.
        group_id: String,
        /// Topics and partitions.
        topics: Option<Vec<(String, Vec<i32>)>>,
        /// Group-level error, and (topic, partition, offset, leader epoch, metadata).
        reply: oneshot::Sender<(Option<GroupError>, Vec<OffsetCommitEntry>)>,
    },
    /// DescribeGroups for one group.
    Describe {
        /// Group.
        group_id: String,
        /// Result.
        reply: oneshot::Sender<GroupDescription>,
    },
    /// ListGroups on one shard.
    List {
        /// States to keep (empty: all).
        states: Vec<String>,
        /// Groups.
        reply: oneshot::Sender<Vec<GroupListing>>,
    },
    /// DeleteGroups for one group.
    Delete {
        /// Group.
        group_id: String,
        /// Result.
        reply: oneshot::Sender<Option<GroupError>>,
    },
    /// ConsumerGroupHeartbeat (KIP-848).
    ConsumerHeartbeat(consumer::ConsumerHeartbeat, oneshot::Sender<consumer::ConsumerHeartbeatAnswer>),
    /// ConsumerGroupDescribe for one group: its consumer-protocol side.
    ConsumerDescribe {
        /// Group.
        group_id: String,
        /// The group, or why not.
        reply: oneshot::Sender<Result<consumer::ConsumerGroup, GroupError>>,
    },
    /// OffsetDelete.
    DeleteOffsets {
        /// Group.
        group_id: String,
        /// Partitions.
        partitions: Vec<(String, i32)>,
        /// Group-level error and one result per partition.
        reply: oneshot::Sender<(Option<GroupError>, Vec<Option<GroupError>>)>,
    },
}

impl GroupCall {
    /// The group the call is about (`None` for ListGroups, which goes to every shard).
    pub fn group_id(&self) -> Option<&str> {
        match self {
            GroupCall::Join(r, _) => Some(&r.group_id),
            GroupCall::Sync(r, _) => Some(&r.group_id),
            GroupCall::ConsumerHeartbeat(r, _) => Some(&r.group_id),
            GroupCall::Heartbeat { group_id, .. }
            | GroupCall::Leave { group_id, .. }
            | GroupCall::Commit { group_id, .. }
            | GroupCall::FetchOffsets { group_id, .. }
            | GroupCall::Describe { group_id, .. }
            | GroupCall::Delete { group_id, .. }
            | GroupCall::ConsumerDescribe { group_id, .. }
            | GroupCall::DeleteOffsets { group_id, .. } => Some(group_id),
            GroupCall::List { .. } => None,
        }
    }

    /// True for administration (listing, describing, deleting groups or their offsets), which is
    /// control-plane work; members' calls and offset commits and fetches are data-plane work.
    pub fn is_admin(&self) -> bool {
        matches!(
            self,
            GroupCall::Describe { .. }
                | GroupCall::ConsumerDescribe { .. }
                | GroupCall::List { .. }
                | GroupCall::Delete { .. }
                | GroupCall::DeleteOffsets { .. }
        )
    }
}

/// Java's `String.hashCode`, over UTF-16 code units (Kafka places groups with it).
pub fn java_string_hash(text: &str) -> i32 {
    text.encode_utf16().fold(0i32, |h, unit| h.wrapping_mul(31).wrapping_add(i32::from(unit)))
}

/// The `__consumer_offsets` partition that holds `group_id` (Kafka's placement).
pub fn offsets_partition_for(group_id: &str, partitions: i32) -> i32 {
    let hash = java_string_hash(group_id);
    let abs = if hash == i32::MIN { 0 } else { hash.abs() };
    abs % partitions
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_placement_matches_java() {
        assert_eq!(java_string_hash(""), 0);
        assert_eq!(java_string_hash("a"), 97);
        assert_eq!(java_string_hash("hello"), 99162322);
        assert_eq!(java_string_hash("polygenelubricants"), i32::MIN);
        assert_eq!(offsets_partition_for("polygenelubricants", 50), 0);
        assert_eq!(offsets_partition_for("hello", 50), 99162322 % 50);
        assert!((0..50).contains(&offsets_partition_for("my-group", 50)));
    }
}
