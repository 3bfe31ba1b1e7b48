//! One handler per Kafka API, and the dispatch that routes a request to it.

pub mod alter_client_quotas;
pub mod alter_configs;
pub mod alter_partition_reassignments;
pub mod alter_replica_log_dirs;
pub mod alter_user_scram_credentials;
pub mod api_versions;
pub mod consumer_group_describe;
pub mod consumer_group_heartbeat;
pub mod create_acls;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_acls;
pub mod delete_groups;
pub mod delete_records;
pub mod delete_topics;
pub mod describe_acls;
pub mod describe_client_quotas;
pub mod describe_cluster;
pub mod describe_configs;
pub mod describe_groups;
pub mod describe_log_dirs;
pub mod describe_producers;
pub mod describe_quorum;
pub mod describe_topic_partitions;
pub mod describe_user_scram_credentials;
pub mod elect_leaders;
pub mod fetch;
pub mod find_coordinator;
pub mod heartbeat;
pub mod incremental_alter_configs;
pub mod init_producer_id;
pub mod join_group;
pub mod leave_group;
pub mod list_config_resources;
pub mod list_groups;
pub mod list_offsets;
pub mod list_partition_reassignments;
pub mod metadata;
pub mod offset_commit;
pub mod offset_delete;
pub mod offset_fetch;
pub mod offset_for_leader_epoch;
pub mod produce;
pub mod sasl_authenticate;
pub mod sasl_handshake;
pub mod sync_group;

use std::collections::BTreeMap;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use futures_channel::oneshot;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::{Decodable, Encodable};

use kafka_protocol::error::ResponseError;

use super::connection::{Connection, PendingResponse, Response, ResponseBody};
use super::frame::RequestFrame;
use crate::cluster::{
    CONSUMER_OFFSETS_TOPIC, ControllerError, ControllerRequest, ControllerResponse, LocateError, MetadataView,
    TopicImage,
};
use crate::group::{GroupCall, GroupError};
use crate::model::TopicPartition;
use crate::partition::PartitionManager;
use crate::shard::{Pending, ShardId, Sharded};

/// Why a request closes its connection.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// API key this broker does not know.
    #[error("unknown API key {0}")]
    UnknownApi(i16),
    /// Known API, version outside the supported range.
    #[error("unsupported version {version} of API {key:?}")]
    UnsupportedVersion {
        /// API.
        key: ApiKey,
        /// Version sent.
        version: i16,
    },
    /// The body does not decode.
    #[error("malformed {key:?} v{version} request: {reason}")]
    Malformed {
        /// API.
        key: ApiKey,
        /// Version.
        version: i16,
        /// Why.
        reason: String,
    },
    /// The response could not be encoded (a bug, reported rather than crashing).
    #[error("cannot encode {key:?} v{version} response: {reason}")]
    Encode {
        /// API.
        key: ApiKey,
        /// Version.
        version: i16,
        /// Why.
        reason: String,
    },
}

/// The APIs this broker serves and their version ranges.
pub fn supported_apis() -> Vec<(ApiKey, i16, i16)> {
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::Message;
    fn range<M: Message>(key: ApiKey) -> (ApiKey, i16, i16) {
        (key, M::VERSIONS.min, M::VERSIONS.max)
    }
    vec![
        range::<ProduceRequest>(ApiKey::Produce),
        range::<FetchRequest>(ApiKey::Fetch),
        range::<ListOffsetsRequest>(ApiKey::ListOffsets),
        range::<MetadataRequest>(ApiKey::Metadata),
        range::<ApiVersionsRequest>(ApiKey::ApiVersions),
        range::<CreateTopicsRequest>(ApiKey::CreateTopics),
        range::<DeleteTopicsRequest>(ApiKey::DeleteTopics),
        range::<DeleteRecordsRequest>(ApiKey::DeleteRecords),
        range::<DescribeConfigsRequest>(ApiKey::DescribeConfigs),
        range::<AlterConfigsRequest>(ApiKey::AlterConfigs),
        range::<CreatePartitionsRequest>(ApiKey::CreatePartitions),
        range::<IncrementalAlterConfigsRequest>(ApiKey::IncrementalAlterConfigs),
        range::<DescribeClusterRequest>(ApiKey::DescribeCluster),
        range::<InitProducerIdRequest>(ApiKey::InitProducerId),
        range::<FindCoordinatorRequest>(ApiKey::FindCoordinator),
        range::<JoinGroupRequest>(ApiKey::JoinGroup),
        range::<SyncGroupRequest>(ApiKey::SyncGroup),
        range::<HeartbeatRequest>(ApiKey::Heartbeat),
        range::<LeaveGroupRequest>(ApiKey::LeaveGroup),
        range::<OffsetCommitRequest>(ApiKey::OffsetCommit),
        range::<OffsetFetchRequest>(ApiKey::OffsetFetch),
        range::<ListGroupsRequest>(ApiKey::ListGroups),
        range::<DescribeGroupsRequest>(ApiKey::DescribeGroups),
        range::<DeleteGroupsRequest>(ApiKey::DeleteGroups),
        range::<OffsetDeleteRequest>(ApiKey::OffsetDelete),
        range::<OffsetForLeaderEpochRequest>(ApiKey::OffsetForLeaderEpoch),
        range::<ElectLeadersRequest>(ApiKey::ElectLeaders),
        range::<DescribeQuorumRequest>(ApiKey::DescribeQuorum),
        range::<AlterPartitionReassignmentsRequest>(ApiKey::AlterPartitionReassignments),
        range::<ListPartitionReassignmentsRequest>(ApiKey::ListPartitionReassignments),
        range::<DescribeLogDirsRequest>(ApiKey::DescribeLogDirs),
        range::<AlterReplicaLogDirsRequest>(ApiKey::AlterReplicaLogDirs),
        range::<DescribeProducersRequest>(ApiKey::DescribeProducers),
        range::<DescribeTopicPartitionsRequest>(ApiKey::DescribeTopicPartitions),
        range::<ListConfigResourcesRequest>(ApiKey::ListConfigResources),
        range::<ConsumerGroupHeartbeatRequest>(ApiKey::ConsumerGroupHeartbeat),
        range::<ConsumerGroupDescribeRequest>(ApiKey::ConsumerGroupDescribe),
        // v0 sends the SASL tokens unframed after it; clients that know v1 use SaslAuthenticate.
        (ApiKey::SaslHandshake, 1, SaslHandshakeRequest::VERSIONS.max),
        range::<SaslAuthenticateRequest>(ApiKey::SaslAuthenticate),
        range::<AlterUserScramCredentialsRequest>(ApiKey::AlterUserScramCredentials),
        range::<CreateAclsRequest>(ApiKey::CreateAcls),
        range::<DescribeAclsRequest>(ApiKey::DescribeAcls),
        range::<DeleteAclsRequest>(ApiKey::DeleteAcls),
        range::<DescribeUserScramCredentialsRequest>(ApiKey::DescribeUserScramCredentials),
        range::<DescribeClientQuotasRequest>(ApiKey::DescribeClientQuotas),
        range::<AlterClientQuotasRequest>(ApiKey::AlterClientQuotas),
    ]
}

fn is_supported(key: ApiKey, version: i16) -> bool {
    supported_apis().iter().any(|(k, min, max)| *k == key && (*min..=*max).contains(&version))
}

/// Decodes a request body with the protocol crate, turning decoder errors (and, defensively,
/// decoder panics) into a connection-closing error.
pub fn decode<R: Decodable>(key: ApiKey, version: i16, body: Bytes) -> Result<R, RequestError> {
    let mut buf = body;
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| R::decode(&mut buf, version)));
    let malformed = |reason: String| RequestError::Malformed { key, version, reason };
    match outcome {
        Ok(Ok(request)) => Ok(request),
        Ok(Err(err)) => Err(malformed(err.to_string())),
        Err(_) => Err(malformed("the decoder panicked".into())),
    }
}

/// Encodes a response body.
pub fn encode<M: Encodable>(key: ApiKey, version: i16, message: &M) -> Result<Bytes, RequestError> {
    let mut buf = BytesMut::new();
    message.encode(&mut buf, version).map_err(|e| RequestError::Encode { key, version, reason: e.to_string() })?;
    Ok(buf.freeze())
}

/// A response that is already complete.
pub fn ready(response: Option<Response>) -> PendingResponse {
    Box::pin(std::future::ready(response))
}

/// Builds the response frame for a request.
pub fn respond(frame_key: ApiKey, version: i16, correlation_id: i32, body: ResponseBody) -> Response {
    Response { correlation_id, header_version: frame_key.response_header_version(version), body, held: None }
}

/// Decodes, runs `handler`, encodes: the shape of every request except Produce and Fetch.
macro_rules! simple {
    ($conn:expr, $frame:expr, $key:expr, $request:ty, $module:ident) => {{
        let version = $frame.header.api_version;
        let request: $request = decode($key, version, $frame.body.freeze())?;
        let mut response = $module::handle($conn, request, version).await;
        Throttle::at_least(&mut response, $conn.request_throttle_ms.get());
        record_errors($conn, $key, &response);
        let body = encode($key, version, &response)?;
        Ok(ready(Some(respond($key, version, $frame.header.correlation_id, ResponseBody::Bytes(body)))))
    }};
}

/// Counts (and, when unusual, logs) the errors a response carries.
fn record_errors(conn: &Connection, key: ApiKey, response: &impl Errors) {
    let client = conn.client_id.borrow();
    let client = client.as_deref().unwrap_or("");
    response.each_error(&mut |code, message| conn.ctx.error_stats.record(key, code, message, client));
}

/// A response's error codes, each with its error message where the response has one: the
/// top-level code and those of every topic, partition or resource in it.
trait Errors {
    /// Calls `f` with each code (successes included, as 0).
    fn each_error(&self, f: &mut dyn FnMut(i16, Option<&str>));
}

/// Visits `error_code` fields along a path: `field[...]` goes into each element of a list.
macro_rules! visit_errors {
    ($f:ident, $v:expr, error_code / $message:ident) => {
        $f($v.error_code, $v.$message.as_deref())
    };
    ($f:ident, $v:expr, error_code) => {
        $f($v.error_code, None)
    };
    ($f:ident, $v:expr, $field:ident [ $($rest:tt)* ]) => {
        for item in &$v.$field {
            visit_errors!($f, item, $($rest)*);
        }
    };
}

macro_rules! errors {
    ($($response:ident: $({ $($path:tt)* })+;)*) => {
        $(impl Errors for kafka_protocol::messages::$response {
            fn each_error(&self, f: &mut dyn FnMut(i16, Option<&str>)) {
                $(visit_errors!(f, self, $($path)*);)+
            }
        })*
    };
}

errors!(
    ApiVersionsResponse: {error_code};
    MetadataResponse: {error_code} {topics[error_code]} {topics[partitions[error_code]]};
    CreateAclsResponse: {results[error_code / error_message]};
    DescribeAclsResponse: {error_code / error_message};
    DeleteAclsResponse: {filter_results[error_code / error_message]} {filter_results[matching_acls[error_code / error_message]]};
    DescribeClientQuotasResponse: {error_code / error_message};
    AlterClientQuotasResponse: {entries[error_code / error_message]};
    SaslHandshakeResponse: {error_code};
    SaslAuthenticateResponse: {error_code / error_message};
    AlterUserScramCredentialsResponse: {results[error_code / error_message]};
    DescribeUserScramCredentialsResponse: {error_code / error_message} {results[error_code / error_message]};
    ListOffsetsResponse: {topics[partitions[error_code]]};
    CreateTopicsResponse: {topics[error_code / error_message]};
    DeleteTopicsResponse: {responses[error_code / error_message]};
    CreatePartitionsResponse: {results[error_code / error_message]};
    DeleteRecordsResponse: {topics[partitions[error_code]]};
    DescribeConfigsResponse: {results[error_code / error_message]};
    AlterConfigsResponse: {responses[error_code / error_message]};
    IncrementalAlterConfigsResponse: {responses[error_code / error_message]};
    DescribeClusterResponse: {error_code / error_message};
    InitProducerIdResponse: {error_code};
    FindCoordinatorResponse: {error_code / error_message} {coordinators[error_code / error_message]};
    JoinGroupResponse: {error_code};
    SyncGroupResponse: {error_code};
    HeartbeatResponse: {error_code};
    LeaveGroupResponse: {error_code} {members[error_code]};
    OffsetCommitResponse: {topics[partitions[error_code]]};
    OffsetFetchResponse: {error_code} {topics[partitions[error_code]]} {groups[error_code]} {groups[topics[partitions[error_code]]]};
    ListGroupsResponse: {error_code};
    DescribeGroupsResponse: {groups[error_code / error_message]};
    DeleteGroupsResponse: {results[error_code]};
    OffsetDeleteResponse: {error_code} {topics[partitions[error_code]]};
    OffsetForLeaderEpochResponse: {topics[partitions[error_code]]};
    ElectLeadersResponse: {error_code} {replica_election_results[partition_result[error_code / error_message]]};
    DescribeQuorumResponse: {error_code / error_message} {topics[partitions[error_code / error_message]]};
    AlterPartitionReassignmentsResponse: {error_code / error_message} {responses[partitions[error_code / error_message]]};
    ListPartitionReassignmentsResponse: {error_code / error_message};
    DescribeLogDirsResponse: {error_code} {results[error_code]};
    AlterReplicaLogDirsResponse: {results[partitions[error_code]]};
    DescribeProducersResponse: {topics[partitions[error_code / error_message]]};
    DescribeTopicPartitionsResponse: {topics[error_code]} {topics[partitions[error_code]]};
    ListConfigResourcesResponse: {error_code};
    ConsumerGroupHeartbeatResponse: {error_code / error_message};
    ConsumerGroupDescribeResponse: {groups[error_code / error_message]};
);

/// A response that tells its client how long to back off for a quota (`throttle_time_ms`, in
/// the versions that have it: older ones leave it out when encoding).
trait Throttle {
    /// Raises the throttle time to `ms` at least.
    fn at_least(&mut self, ms: i32);
}

macro_rules! throttled {
    ($($response:ident),* $(,)?) => {
        $(impl Throttle for kafka_protocol::messages::$response {
            fn at_least(&mut self, ms: i32) {
                self.throttle_time_ms = self.throttle_time_ms.max(ms);
            }
        })*
    };
}

throttled!(
    ApiVersionsResponse,
    MetadataResponse,
    CreateAclsResponse,
    DescribeAclsResponse,
    DeleteAclsResponse,
    DescribeClientQuotasResponse,
    AlterClientQuotasResponse,
    AlterUserScramCredentialsResponse,
    DescribeUserScramCredentialsResponse,
    ListOffsetsResponse,
    CreateTopicsResponse,
    DeleteTopicsResponse,
    CreatePartitionsResponse,
    DeleteRecordsResponse,
    DescribeConfigsResponse,
    AlterConfigsResponse,
    IncrementalAlterConfigsResponse,
    DescribeClusterResponse,
    InitProducerIdResponse,
    FindCoordinatorResponse,
    JoinGroupResponse,
    SyncGroupResponse,
    HeartbeatResponse,
    LeaveGroupResponse,
    OffsetCommitResponse,
    OffsetFetchResponse,
    ListGroupsResponse,
    DescribeGroupsResponse,
    DeleteGroupsResponse,
    OffsetDeleteResponse,
    OffsetForLeaderEpochResponse,
    ElectLeadersResponse,
    AlterPartitionReassignmentsResponse,
    ListPartitionReassignmentsResponse,
    DescribeLogDirsResponse,
    AlterReplicaLogDirsResponse,
    DescribeProducersResponse,
    DescribeTopicPartitionsResponse,
    ListConfigResourcesResponse,
    ConsumerGroupHeartbeatResponse,
    ConsumerGroupDescribeResponse,
);

/// Responses without the field (the SASL exchange, which no quota applies to yet, and the
/// quorum description).
macro_rules! unthrottled {
    ($($response:ident),* $(,)?) => {
        $(impl Throttle for kafka_protocol::messages::$response {
            fn at_least(&mut self, _: i32) {}
        })*
    };
}

unthrottled!(SaslHandshakeResponse, SaslAuthenticateResponse, DescribeQuorumResponse);

/// Routes a request to its handler.
pub async fn dispatch(conn: &Rc<Connection>, frame: RequestFrame) -> Result<PendingResponse, RequestError> {
    use kafka_protocol::messages::*;
    let header = &frame.header;
    let key = ApiKey::try_from(header.api_key).map_err(|_| RequestError::UnknownApi(header.api_key))?;
    let version = header.api_version;
    if key == ApiKey::ApiVersions && !is_supported(key, version) {
        // Clients that speak a newer version than we do learn our range from a v0 answer.
        return Ok(ready(Some(api_versions::unsupported_version_response(header.correlation_id))));
    }
    if !is_supported(key, version) || !frame.header_complete {
        return Err(RequestError::UnsupportedVersion { key, version });
    }
    match key {
        ApiKey::Produce => produce::handle(conn, frame).await,
        ApiKey::Fetch => fetch::handle(conn, frame).await,
        ApiKey::ApiVersions => simple!(conn, frame, key, ApiVersionsRequest, api_versions),
        ApiKey::Metadata => simple!(conn, frame, key, MetadataRequest, metadata),
        ApiKey::CreateAcls => simple!(conn, frame, key, CreateAclsRequest, create_acls),
        ApiKey::DescribeAcls => simple!(conn, frame, key, DescribeAclsRequest, describe_acls),
        ApiKey::DeleteAcls => simple!(conn, frame, key, DeleteAclsRequest, delete_acls),
        ApiKey::DescribeClientQuotas => {
            simple!(conn, frame, key, DescribeClientQuotasRequest, describe_client_quotas)
        }
        ApiKey::AlterClientQuotas => simple!(conn, frame, key, AlterClientQuotasRequest, alter_client_quotas),
        ApiKey::SaslHandshake => simple!(conn, frame, key, SaslHandshakeRequest, sasl_handshake),
        ApiKey::SaslAuthenticate => simple!(conn, frame, key, SaslAuthenticateRequest, sasl_authenticate),
        ApiKey::AlterUserScramCredentials => {
            simple!(conn, frame, key, AlterUserScramCredentialsRequest, alter_user_scram_credentials)
        }
        ApiKey::DescribeUserScramCredentials => {
            simple!(conn, frame, key, DescribeUserScramCredentialsRequest, describe_user_scram_credentials)
        }
        ApiKey::ListOffsets => simple!(conn, frame, key, ListOffsetsRequest, list_offsets),
        ApiKey::CreateTopics => simple!(conn, frame, key, CreateTopicsRequest, create_topics),
        ApiKey::DeleteTopics => simple!(conn, frame, key, DeleteTopicsRequest, delete_topics),
        ApiKey::CreatePartitions => {
            simple!(conn, frame, key, CreatePartitionsRequest, create_partitions)
        }
        ApiKey::DeleteRecords => simple!(conn, frame, key, DeleteRecordsRequest, delete_records),
        ApiKey::DescribeConfigs => {
            simple!(conn, frame, key, DescribeConfigsRequest, describe_configs)
        }
        ApiKey::AlterConfigs => simple!(conn, frame, key, AlterConfigsRequest, alter_configs),
        ApiKey::IncrementalAlterConfigs => {
            simple!(conn, frame, key, IncrementalAlterConfigsRequest, incremental_alter_configs)
        }
        ApiKey::DescribeCluster => {
            simple!(conn, frame, key, DescribeClusterRequest, describe_cluster)
        }
        ApiKey::InitProducerId => {
            simple!(conn, frame, key, InitProducerIdRequest, init_producer_id)
        }
        ApiKey::FindCoordinator => simple!(conn, frame, key, FindCoordinatorRequest, find_coordinator),
        ApiKey::JoinGroup => simple!(conn, frame, key, JoinGroupRequest, join_group),
        ApiKey::SyncGroup => simple!(conn, frame, key, SyncGroupRequest, sync_group),
        ApiKey::Heartbeat => simple!(conn, frame, key, HeartbeatRequest, heartbeat),
        ApiKey::LeaveGroup => simple!(conn, frame, key, LeaveGroupRequest, leave_group),
        ApiKey::OffsetCommit => simple!(conn, frame, key, OffsetCommitRequest, offset_commit),
        ApiKey::OffsetFetch => simple!(conn, frame, key, OffsetFetchRequest, offset_fetch),
        ApiKey::ListGroups => simple!(conn, frame, key, ListGroupsRequest, list_groups),
        ApiKey::DescribeGroups => simple!(conn, frame, key, DescribeGroupsRequest, describe_groups),
        ApiKey::DeleteGroups => simple!(conn, frame, key, DeleteGroupsRequest, delete_groups),
        ApiKey::OffsetDelete => simple!(conn, frame, key, OffsetDeleteRequest, offset_delete),
        ApiKey::OffsetForLeaderEpoch => {
            simple!(conn, frame, key, OffsetForLeaderEpochRequest, offset_for_leader_epoch)
        }
        ApiKey::ElectLeaders => simple!(conn, frame, key, ElectLeadersRequest, elect_leaders),
        ApiKey::DescribeQuorum => simple!(conn, frame, key, DescribeQuorumRequest, describe_quorum),
        ApiKey::AlterPartitionReassignments => {
            simple!(conn, frame, key, AlterPartitionReassignmentsRequest, alter_partition_reassignments)
        }
        ApiKey::ListPartitionReassignments => {
            simple!(conn, frame, key, ListPartitionReassignmentsRequest, list_partition_reassignments)
        }
        ApiKey::DescribeLogDirs => simple!(conn, frame, key, DescribeLogDirsRequest, describe_log_dirs),
        ApiKey::AlterReplicaLogDirs => simple!(conn, frame, key, AlterReplicaLogDirsRequest, alter_replica_log_dirs),
        ApiKey::DescribeProducers => simple!(conn, frame, key, DescribeProducersRequest, describe_producers),
        ApiKey::DescribeTopicPartitions => {
            simple!(conn, frame, key, DescribeTopicPartitionsRequest, describe_topic_partitions)
        }
        ApiKey::ListConfigResources => simple!(conn, frame, key, ListConfigResourcesRequest, list_config_resources),
        ApiKey::ConsumerGroupHeartbeat => {
            simple!(conn, frame, key, ConsumerGroupHeartbeatRequest, consumer_group_heartbeat)
        }
        ApiKey::ConsumerGroupDescribe => {
            simple!(conn, frame, key, ConsumerGroupDescribeRequest, consumer_group_describe)
        }
        _ => Err(RequestError::UnsupportedVersion { key, version }),
    }
}

/// The per-item results of a controller request about `count` items (`pick` takes them from the
/// response); a failure of the whole call (no active controller) is every item's.
pub async fn controller_items<T>(
    conn: &Connection,
    request: ControllerRequest,
    count: usize,
    pick: impl FnOnce(ControllerResponse) -> Option<Vec<Result<T, ControllerError>>>,
) -> Vec<Result<T, ControllerError>> {
    let failed = |err: ControllerError| (0..count).map(|_| Err(err.clone())).collect();
    match conn.ctx.ask_controller(request).await {
        Ok(response) => match pick(response) {
            Some(items) if items.len() == count => items,
            _ => failed(ControllerError::Storage("the controller answered something else".into())),
        },
        Err(err) => failed(err),
    }
}

/// Answers still to come from the owning shards of a [`scatter`].
pub struct Gather<R> {
    pending: Vec<(Vec<usize>, Pending<Vec<R>>)>,
}

impl<R> Gather<R> {
    /// Every slot with its owner's answer, `None` when the owner did not answer (it is shutting
    /// down).
    pub async fn answers(self) -> Vec<(usize, Option<R>)> {
        let mut out = Vec::new();
        for (positions, pending) in self.pending {
            let mut results = pending.wait().await.unwrap_or_default().into_iter();
            out.extend(positions.into_iter().map(|slot| (slot, results.next())));
        }
        out
    }
}

/// Runs per-partition work on the shards that own it: `routed` holds (shard, slot, part); each
/// shard gets one job, `work` over its partitions and its parts, answering one result per part in
/// order. `work` runs synchronously on arrival (so appends keep the order of the requests) and
/// returns the future of the answers. The jobs are sent (in shard order) before this returns,
/// so a caller can await the answers later without losing the order of its requests.
pub async fn scatter<P, R, F, Fut>(
    partitions: &Sharded<PartitionManager>,
    routed: impl IntoIterator<Item = (ShardId, usize, P)>,
    work: F,
) -> Gather<R>
where
    P: Send + 'static,
    R: Send + 'static,
    F: Fn(Rc<PartitionManager>, Vec<P>) -> Fut + Send + Clone + 'static,
    Fut: std::future::Future<Output = Vec<R>> + 'static,
{
    let mut pending = Vec::new();
    for (shard, items) in by_shard(routed) {
        let (positions, parts): (Vec<usize>, Vec<P>) = items.into_iter().unzip();
        let work = work.clone();
        pending.push((positions, partitions.submit_on(shard, move |manager| work(manager, parts)).await));
    }
    Gather { pending }
}

/// Groups items by the shard that owns them, keeping their original positions.
pub fn by_shard<T>(items: impl IntoIterator<Item = (ShardId, usize, T)>) -> BTreeMap<ShardId, Vec<(usize, T)>> {
    let mut groups: BTreeMap<ShardId, Vec<(usize, T)>> = BTreeMap::new();
    for (shard, position, item) in items {
        groups.entry(shard).or_default().push((position, item));
    }
    groups
}

/// The Kafka error for a partition that could not be located on this broker.
pub fn locate_error(err: LocateError) -> ResponseError {
    match err {
        LocateError::Unknown => ResponseError::UnknownTopicOrPartition,
        LocateError::NotHere => ResponseError::NotLeaderOrFollower,
    }
}

/// Finds partition `index` of topic `name` led by this broker: its key and owning shard.
pub fn locate(view: &MetadataView, name: &str, index: i32) -> Result<(TopicPartition, ShardId), ResponseError> {
    view.locate(name, index).map_err(locate_error)
}

/// Finds partition `index` of `topic` led by this broker.
pub fn locate_in(
    view: &MetadataView,
    topic: &TopicImage,
    index: i32,
) -> Result<(TopicPartition, ShardId), ResponseError> {
    view.leader_shard(topic, index).map_err(locate_error)
}

/// Sends a call to the coordinator of `group_id` and waits for its answer.
pub async fn call_group<T: Send + 'static>(
    conn: &Connection,
    group_id: &str,
    build: impl FnOnce(oneshot::Sender<T>) -> GroupCall,
) -> Result<T, GroupError> {
    let view = conn.ctx.view();
    if view.topic(CONSUMER_OFFSETS_TOPIC).is_none() {
        return Err(GroupError::CoordinatorNotAvailable);
    }
    let target = crate::group::coordinator_shard(&view, group_id).ok_or(GroupError::NotCoordinator)?;
    let (tx, rx) = oneshot::channel();
    let call = build(tx);
    let call_is_admin = call.is_admin();
    let groups = &conn.ctx.groups;
    // Administration (describe, delete) waits its turn on the coordinator shard's control lane;
    // members' calls are data-path work.
    let run = move |coordinator| crate::group::handle_call(coordinator, call);
    let handled =
        if call_is_admin { groups.control_on(target, run).await } else { groups.invoke_on(target, run).await };
    handled.map_err(|_| GroupError::CoordinatorNotAvailable)?;
    rx.await.map_err(|_| GroupError::CoordinatorNotAvailable)
}

/// The client host as Kafka reports it ("/ip").
pub fn client_host(conn: &Connection) -> String {
    format!("/{}", conn.peer.ip())
}
