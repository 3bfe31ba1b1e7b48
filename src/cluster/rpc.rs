//! Node-to-node traffic of the control plane, on each node's controller listener: the metadata
//! quorum's Raft messages, and requests to the active controller (metadata changes forwarded from
//! any broker, broker registration and heartbeats, metadata fetches of brokers that are not
//! voters).
//!
//! Frame: `u32 length | u8 kind | body`. A connection opens with a [`Hello`] (who is calling, and
//! for which cluster); then Raft messages (protobuf, as the Raft library defines them) and
//! requests and responses (JSON, with an id to match them) in any order.
//!
//! Ownership: connections and the [`RpcClient`] live on shard 0 of a node; everything sent is
//! encoded into owned buffers.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_channel::oneshot;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::controller::{ConfigChange, ControllerError, NewTopic, TopicRef};
use super::records::{Endpoint, MetadataRecord};
use crate::io::{self, net::FrameRules, net::FramedReader, net::Stream};
use crate::model::BrokerId;

/// Largest control-plane frame (a metadata snapshot for a catching-up broker can be large).
pub const MAX_FRAME_BYTES: usize = 256 << 20;
/// Longest a request waits for its response.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Kinds of frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// The first frame of a connection.
    Hello = 1,
    /// A Raft message.
    Raft = 2,
    /// A request to the controller.
    Request = 3,
    /// Its response.
    Response = 4,
    /// The node refuses the caller (another quorum or cluster): why, as text. The connection
    /// closes after it.
    Refused = 5,
}

impl FrameKind {
    fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(Self::Hello),
            2 => Some(Self::Raft),
            3 => Some(Self::Request),
            4 => Some(Self::Response),
            5 => Some(Self::Refused),
            _ => None,
        }
    }
}

/// TLS on the controller listener (`CONTROLLER:SSL`): both ends present the broker's key
/// store certificate and check the other's against the trust store.
#[derive(Clone)]
pub struct ControllerTls {
    /// The listener's side (client certificates required).
    pub server: Arc<rustls::ServerConfig>,
    /// The calling side.
    pub client: Arc<rustls::ClientConfig>,
}

/// The controller listener's TLS as it is now, asked at each new connection (both ways), so
/// renewed certificates are used from the next connection on.
pub type ControllerTlsSource =
    Arc<dyn Fn() -> futures_util::future::LocalBoxFuture<'static, Result<ControllerTls, String>> + Send + Sync>;

/// Connects to the controller listener at `addr` from the local address `source`, in TLS when
/// `tls` is given (the server's certificate checked against its IP address, unless the
/// configuration checks no names).
pub async fn dial(
    addr: SocketAddr,
    source: Option<IpAddr>,
    tls: Option<&ControllerTlsSource>,
) -> std::io::Result<Stream> {
    let stream = io::net::connect_from(addr, source).await?;
    let Some(tls) = tls else { return Ok(stream) };
    let client = tls().await.map_err(std::io::Error::other)?.client;
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let session = rustls::ClientConnection::new(client, name).map_err(std::io::Error::other)?;
    // Boxed: the handshake's state is large, and this future sits deep in the callers' ones.
    Box::pin(stream.start_tls(session)).await
}

/// Who opens a connection.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Hello {
    /// The calling node.
    pub node_id: BrokerId,
    /// The voters the caller was started with (`id@host:port,...`), so a node of another
    /// quorum is refused.
    pub voters: String,
    /// The cluster id the caller holds, if it has one yet.
    pub cluster_id: Option<String>,
}

/// A topic the controller created, in the form a remote broker can answer with (it resolves the
/// configuration against its own defaults).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CreatedTopicInfo {
    /// Name.
    pub name: String,
    /// Topic id.
    pub id: Uuid,
    /// Partitions.
    pub partitions: i32,
    /// Replicas per partition.
    pub replication_factor: i16,
    /// Config overrides.
    pub configs: BTreeMap<String, String>,
}

/// One partition's ISR change in an AlterPartition request.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct IsrChange {
    /// Topic id.
    pub topic_id: Uuid,
    /// Partition index.
    pub partition: i32,
    /// The leader epoch the leader holds.
    pub leader_epoch: i32,
    /// The partition epoch the leader holds (a change made since refuses the request).
    pub partition_epoch: i32,
    /// The ISR it asks for.
    pub isr: Vec<BrokerId>,
}

/// A request to the active controller.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ControllerRequest {
    /// CreateTopics.
    CreateTopics {
        /// Topics.
        topics: Vec<NewTopic>,
        /// Only check.
        validate_only: bool,
        /// Internal topic names allowed (the group coordinator's offsets topic).
        internal: bool,
    },
    /// DeleteTopics.
    DeleteTopics {
        /// Topics.
        topics: Vec<TopicRef>,
    },
    /// CreatePartitions: topic, new count, and optionally the new partitions' replicas.
    CreatePartitions {
        /// Topics.
        topics: Vec<(String, i32, Vec<Vec<BrokerId>>)>,
        /// Only check.
        validate_only: bool,
    },
    /// AlterConfigs / IncrementalAlterConfigs on topics.
    AlterTopicConfigs {
        /// Topic and change.
        changes: Vec<(String, ConfigChange)>,
        /// Only check.
        validate_only: bool,
    },
    /// AlterConfigs / IncrementalAlterConfigs on BROKER resources.
    AlterBrokerConfigs {
        /// Resource (`""` or a broker id) and change.
        changes: Vec<(String, ConfigChange)>,
        /// Only check.
        validate_only: bool,
    },
    /// AlterUserScramCredentials: credentials to set (user name, credential) and to remove
    /// (user name, mechanism), checked by the asking broker.
    AlterScramCredentials {
        /// Set.
        upserts: Vec<(String, super::ScramCredential)>,
        /// Removed.
        deletions: Vec<(String, String)>,
    },
    /// CreateAcls: these bindings, each under a new id (checked by the asking broker).
    CreateAcls {
        /// The ACLs.
        bindings: Vec<super::AclBinding>,
    },
    /// AlterClientQuotas: bounds to set (`Some`) or remove (`None`), checked by the asking broker.
    AlterClientQuotas {
        /// Entity, key, bound.
        changes: Vec<(super::QuotaEntity, String, Option<f64>)>,
    },
    /// DeleteAcls: the ACLs with these ids.
    DeleteAcls {
        /// Their ids.
        ids: Vec<Uuid>,
    },
    /// A block of producer ids.
    AllocateProducerIds {
        /// The asking broker.
        broker_id: BrokerId,
        /// Ids wanted.
        count: i64,
    },
    /// A broker (re)starting announces itself.
    RegisterBroker {
        /// Node id.
        broker_id: BrokerId,
        /// New on every start of the process.
        incarnation: Uuid,
        /// Where clients reach it.
        endpoints: Vec<Endpoint>,
        /// Rack.
        rack: Option<String>,
        /// The cluster id the broker's data belongs to, if it has one.
        cluster_id: Option<String>,
    },
    /// A registered broker is alive and has applied the metadata up to `applied_index`.
    BrokerHeartbeat {
        /// Node id.
        broker_id: BrokerId,
        /// Its registration.
        broker_epoch: u64,
        /// Metadata applied so far.
        applied_index: u64,
    },
    /// AlterPartition: a leader asks for new ISRs.
    AlterPartition {
        /// The leader.
        broker_id: BrokerId,
        /// Its registration.
        broker_epoch: u64,
        /// The changes.
        changes: Vec<IsrChange>,
    },
    /// A broker's replicas whose logs went offline (a disk error): they leave their ISRs, and
    /// the ones it leads move to other in-sync replicas.
    OfflineReplicas {
        /// Node id.
        broker_id: BrokerId,
        /// Its registration.
        broker_epoch: u64,
        /// (topic id, partition).
        partitions: Vec<(Uuid, i32)>,
    },
    /// A broker stopping cleanly hands its leaderships to other in-sync replicas first.
    ControlledShutdown {
        /// Node id.
        broker_id: BrokerId,
        /// Its registration.
        broker_epoch: u64,
    },
    /// The metadata log after `after_index` (for a broker that is not a voter), waiting up to
    /// `wait_ms` for something new.
    FetchMetadata {
        /// Last index the broker applied.
        after_index: u64,
        /// Long-poll time.
        wait_ms: u32,
    },
    /// DescribeQuorum: the metadata quorum as its leader sees it.
    DescribeQuorum,
    /// AlterPartitionReassignments: (topic, partition, target replicas or `None` to cancel).
    AlterReassignments {
        /// The partitions to move.
        changes: Vec<(String, i32, Option<Vec<BrokerId>>)>,
    },
    /// ElectLeaders: the preferred replica (or, unclean, any live replica) becomes leader.
    ElectLeaders {
        /// Partitions, or `None` for all.
        partitions: Option<Vec<(String, i32)>>,
        /// Elect outside the ISR when no in-sync replica is live.
        unclean: bool,
    },
}

/// What the controller answers.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ControllerResponse {
    /// CreateTopics, per topic.
    CreatedTopics(Vec<Result<CreatedTopicInfo, ControllerError>>),
    /// DeleteTopics, per topic: name and id.
    DeletedTopics(Vec<Result<(String, Uuid), ControllerError>>),
    /// Per item, for calls with nothing else to say.
    Done(Vec<Result<(), ControllerError>>),
    /// The first id of the allocated block.
    ProducerIds(i64),
    /// The broker's new registration.
    Registered {
        /// Its epoch, for heartbeats.
        broker_epoch: u64,
    },
    /// The heartbeat's answer.
    HeartbeatAck {
        /// Whether the broker is fenced (it is until it caught up after registering).
        fenced: bool,
    },
    /// DescribeQuorum.
    Quorum {
        /// The leader (this controller).
        leader: BrokerId,
        /// Its term (Kafka's leader epoch of the metadata partition).
        term: u64,
        /// The committed index (Kafka's high watermark).
        commit: u64,
        /// The voters.
        voters: Vec<super::quorum::VoterState>,
        /// Brokers that are not voters: id and the index they last reported applying.
        observers: Vec<(BrokerId, u64)>,
    },
    /// ElectLeaders, per partition.
    Elections(Vec<(String, i32, Result<(), ControllerError>)>),
    /// Metadata for a broker that is not a voter.
    Metadata {
        /// The whole image as records at an index, when the broker is too far behind for entries.
        snapshot: Option<(u64, Vec<MetadataRecord>)>,
        /// Committed entries after it: index and records.
        entries: Vec<(u64, Vec<MetadataRecord>)>,
    },
}

/// A controller answer: the response, and the metadata index at which the change it made (if any)
/// is committed, so the caller can wait until its own view has it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Answer {
    /// The metadata index the caller should wait for.
    pub index: u64,
    /// The response.
    pub response: Result<ControllerResponse, ControllerError>,
}

#[derive(Serialize, Deserialize)]
struct Envelope<T> {
    id: u64,
    body: T,
}

/// Encodes one frame.
pub fn frame(kind: FrameKind, body: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + body.len());
    out.extend_from_slice(&((body.len() + 1) as u32).to_be_bytes());
    out.extend_from_slice(&[kind as u8]);
    out.extend_from_slice(body);
    out.freeze()
}

/// Encodes a JSON body frame.
pub fn json_frame<T: Serialize>(kind: FrameKind, body: &T) -> Bytes {
    frame(kind, &serde_json::to_vec(body).expect("control-plane messages serialize"))
}

/// Reads frames from a control-plane connection.
pub struct FrameStream {
    frames: FramedReader,
}

impl FrameStream {
    /// Reads from `stream`.
    pub fn new(stream: Stream) -> Self {
        Self { frames: FramedReader::new(stream) }
    }

    /// The next frame, `None` at a clean end; an error for a malformed one.
    pub async fn next(&mut self) -> std::io::Result<Option<(FrameKind, BytesMut)>> {
        let rules = FrameRules { min_bytes: 1, peek_bytes: 0 };
        let Some(mut frame) = self.frames.next(rules, |_| MAX_FRAME_BYTES).await.map_err(std::io::Error::other)? else {
            return Ok(None);
        };
        let body = frame.split_off(1);
        let kind = FrameKind::from_byte(frame[0])
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "unknown control-plane frame"))?;
        Ok(Some((kind, body)))
    }
}

/// Decodes a request frame's body.
pub fn decode_request(body: &[u8]) -> std::io::Result<(u64, ControllerRequest)> {
    let envelope: Envelope<ControllerRequest> = serde_json::from_slice(body).map_err(invalid)?;
    Ok((envelope.id, envelope.body))
}

/// Encodes the response frame to request `id`.
pub fn response_frame(id: u64, answer: &Answer) -> Bytes {
    json_frame(FrameKind::Response, &Envelope { id, body: answer })
}

fn invalid(err: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, err.to_string())
}

struct RpcConn {
    writes: flume::Sender<Bytes>,
    pending: RefCell<HashMap<u64, oneshot::Sender<Answer>>>,
    next_id: Cell<u64>,
    closed: Cell<bool>,
}

/// Requests to other nodes' controllers, one connection per address, reused.
pub struct RpcClient {
    hello: Hello,
    source: Option<IpAddr>,
    tls: Option<ControllerTlsSource>,
    conns: RefCell<HashMap<SocketAddr, Rc<RpcConn>>>,
}

/// Why a request got no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RpcError {
    /// No connection could be made, or it broke.
    #[error("controller at {0} unreachable: {1}")]
    Unreachable(SocketAddr, String),
    /// No answer in time.
    #[error("controller at {0} did not answer in time")]
    Timeout(SocketAddr),
}

impl RpcClient {
    /// A client that connects from the local address `source` (in TLS when `tls`) and
    /// introduces itself with `hello`.
    pub fn new(hello: Hello, source: Option<IpAddr>, tls: Option<ControllerTlsSource>) -> Rc<Self> {
        Rc::new(Self { hello, source, tls, conns: RefCell::new(HashMap::new()) })
    }

    /// Sends `request` to the controller listening at `addr` and waits for its answer.
    pub async fn call(&self, addr: SocketAddr, request: &ControllerRequest) -> Result<Answer, RpcError> {
        let conn = self.connection(addr).await?;
        let id = conn.next_id.get();
        conn.next_id.set(id + 1);
        let (tx, rx) = oneshot::channel();
        conn.pending.borrow_mut().insert(id, tx);
        let sent = conn.writes.send_async(json_frame(FrameKind::Request, &Envelope { id, body: request })).await;
        if sent.is_err() {
            self.conns.borrow_mut().remove(&addr);
            return Err(RpcError::Unreachable(addr, "connection closed".into()));
        }
        match io::timeout(REQUEST_TIMEOUT, rx).await {
            Some(Ok(answer)) => Ok(answer),
            Some(Err(_)) => {
                self.conns.borrow_mut().remove(&addr);
                Err(RpcError::Unreachable(addr, "connection closed".into()))
            }
            None => {
                conn.pending.borrow_mut().remove(&id);
                self.forget(addr);
                Err(RpcError::Timeout(addr))
            }
        }
    }

    /// Drops the connection to `addr` (it stopped answering); the next call connects afresh.
    pub fn forget(&self, addr: SocketAddr) {
        if let Some(conn) = self.conns.borrow_mut().remove(&addr) {
            conn.closed.set(true);
            conn.pending.borrow_mut().clear();
        }
    }

    async fn connection(&self, addr: SocketAddr) -> Result<Rc<RpcConn>, RpcError> {
        let existing = self.conns.borrow().get(&addr).cloned();
        if let Some(conn) = existing.filter(|c| !c.closed.get()) {
            return Ok(conn);
        }
        let unreachable = |e: std::io::Error| RpcError::Unreachable(addr, e.to_string());
        let stream = io::timeout(Duration::from_secs(3), dial(addr, self.source, self.tls.as_ref()))
            .await
            .ok_or_else(|| RpcError::Unreachable(addr, "connect timed out".into()))?
            .map_err(unreachable)?;
        let (writes, queue) = flume::bounded::<Bytes>(1024);
        let conn = Rc::new(RpcConn {
            writes,
            pending: RefCell::new(HashMap::new()),
            next_id: Cell::new(1),
            closed: Cell::new(false),
        });
        let _ = conn.writes.try_send(json_frame(FrameKind::Hello, &self.hello));
        io::spawn_detached(write_frames(stream.clone(), queue));
        io::spawn_detached(read_answers(stream, Rc::downgrade(&conn)));
        self.conns.borrow_mut().insert(addr, conn.clone());
        Ok(conn)
    }
}

/// Writes queued frames to `stream` until the queue closes or a write fails.
pub async fn write_frames(mut stream: Stream, queue: flume::Receiver<Bytes>) {
    io::net::write_queued(&mut stream, &queue).await;
    stream.shutdown().await;
}

async fn read_answers(stream: Stream, conn: Weak<RpcConn>) {
    let mut frames = FrameStream::new(stream);
    while let Ok(Some((kind, body))) = frames.next().await {
        let Some(conn) = conn.upgrade() else { return };
        if kind == FrameKind::Refused {
            let reason = String::from_utf8_lossy(&body).into_owned();
            for (_, tx) in conn.pending.borrow_mut().drain() {
                let refused = ControllerError::InconsistentClusterId(reason.clone());
                let _ = tx.send(Answer { index: 0, response: Err(refused) });
            }
            break;
        }
        if kind != FrameKind::Response {
            continue;
        }
        let Ok(envelope) = serde_json::from_slice::<Envelope<Answer>>(&body) else { break };
        if let Some(tx) = conn.pending.borrow_mut().remove(&envelope.id) {
            let _ = tx.send(envelope.body);
        }
    }
    if let Some(conn) = conn.upgrade() {
        conn.closed.set(true);
        conn.pending.borrow_mut().clear();
    }
}
