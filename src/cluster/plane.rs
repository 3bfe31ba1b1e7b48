//! A node's control plane, on its shard 0: the quorum member (voters), the controller, the
//! publisher that makes each committed image take effect on the node's shards, the controller
//! listener (Raft messages and controller requests from other nodes), the routing of this node's
//! controller calls to the active controller wherever it is, and the broker's own life: register,
//! heartbeat, and (for a broker that is not a voter) fetch the metadata log.
//!
//! Ownership: everything here lives on shard 0 (`Rc`); other shards reach it through the
//! `Send + Sync` [`super::ControllerHandle`].

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use protobuf::Message as _;

use super::controller::{Controller, ControllerCall, ControllerError};
use super::image::MetadataImage;
use super::publisher::Publisher;
use super::quorum::{Quorum, QuorumStart, QuorumStatus, Voter};
use super::records::Endpoint;
use super::rpc::{
    Answer, ControllerRequest, ControllerResponse, ControllerTlsSource, FrameKind, FrameStream, Hello, RpcClient,
    decode_request, response_frame, write_frames,
};
use crate::config::BrokerConfig;
use crate::io::{self, Faults, LocalSignal};
use crate::model::BrokerId;

/// Longest a call waits for an active controller before it gives up.
const ROUTE_DEADLINE: Duration = Duration::from_secs(20);
/// Pause between attempts to find the active controller.
const ROUTE_PAUSE: Duration = Duration::from_millis(100);
/// Long-poll time of a broker's metadata fetch.
const FETCH_WAIT_MS: u32 = 2_000;

/// What a node's control plane is made of.
pub struct ControlPlane {
    node_id: BrokerId,
    config: Arc<BrokerConfig>,
    voters: Vec<Voter>,
    hello: Hello,
    quorum: Option<Rc<Quorum>>,
    controller: Option<Rc<Controller>>,
    rpc: Rc<RpcClient>,
    /// TLS on the controller listener.
    tls: Option<ControllerTlsSource>,
    /// The active controller as last heard, for routing.
    leader_hint: Cell<Option<BrokerId>>,
    /// The last image published to every shard.
    published: RefCell<Arc<MetadataImage>>,
    /// Images fetched by a broker that is not a voter, waiting to be published.
    fetched: RefCell<Option<Arc<MetadataImage>>>,
    fetched_signal: LocalSignal,
    /// This broker's current registration (its broker epoch), once it has one.
    registration: Cell<Option<u64>>,
    /// Called once, when this broker is registered, unfenced and caught up: it may serve.
    on_ready: RefCell<Option<Box<dyn FnOnce()>>>,
    /// The last time the active controller answered a heartbeat.
    last_contact: Cell<Instant>,
    /// False while this broker fences itself: cut off from the active controller for longer
    /// than its session, it has been fenced there and its leaderships have moved, so it stops
    /// acting as leader before it hears so.
    leading: Cell<bool>,
    leading_changed: LocalSignal,
    faults: Faults,
    /// Whether the cluster id file was written by this process.
    cluster_id_saved: Cell<bool>,
}

/// Where a node records the id of the cluster its data belongs to, once it knows it.
fn cluster_id_path(data_dir: &Path) -> PathBuf {
    data_dir.join("__cluster").join("cluster.id")
}

/// The id of the cluster the data in `data_dir` belongs to, if recorded.
pub async fn read_cluster_id(data_dir: &Path, faults: &Faults) -> std::io::Result<Option<String>> {
    let bytes = io::fs::read(&cluster_id_path(data_dir), faults).await?;
    Ok(bytes.map(|b| String::from_utf8_lossy(&b).trim().to_owned()).filter(|id| !id.is_empty()))
}

async fn write_cluster_id(data_dir: &Path, cluster_id: &str, faults: &Faults) -> std::io::Result<()> {
    let path = cluster_id_path(data_dir);
    if let Some(parent) = path.parent() {
        io::fs::create_dir_all(parent, faults).await?;
    }
    io::fs::write_atomic(&path, format!("{cluster_id}\n").into_bytes(), faults).await
}

/// What a node's control plane starts from.
pub struct PlaneStart {
    /// Broker settings.
    pub config: Arc<BrokerConfig>,
    /// The metadata quorum's voters.
    pub voters: Vec<Voter>,
    /// This node's quorum state, when it is a voter.
    pub quorum: Option<QuorumStart>,
    /// The image the shards hold now.
    pub image: Arc<MetadataImage>,
    /// The cluster this node's data belongs to, when it knows (see [`read_cluster_id`]).
    pub cluster_id: Option<String>,
    /// Fault injection for the node's files.
    pub faults: Faults,
    /// Publishes new images to the shards.
    pub publisher: Publisher,
    /// Controller calls from every shard.
    pub calls: flume::Receiver<ControllerCall>,
    /// The controller listener (voters of a cluster of several nodes).
    pub listener: Option<std::net::TcpListener>,
    /// TLS on the controller listener and on this node's calls to others' (`CONTROLLER:SSL`).
    pub tls: Option<ControllerTlsSource>,
    /// Where clients reach this broker.
    pub endpoints: Vec<Endpoint>,
    /// Called once this broker may serve clients.
    pub on_ready: Box<dyn FnOnce() + Send>,
}

/// Failed partition opens, and partitions whose logs went offline, are tried again this often.
const RETRY_FAILED_OPENS: Duration = Duration::from_secs(5);
/// Heartbeat interval of a broker that is not serving yet.
const CATCH_UP_HEARTBEAT: Duration = Duration::from_millis(50);
/// How long a node connecting to the controller listener may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a stopping broker waits for its leaderships to move.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// The voters list as the command line gives it (`id@host:port,...`), in a canonical form for the
/// handshake.
pub fn voters_string(voters: &[Voter]) -> String {
    let mut parts: Vec<String> = voters.iter().map(|v| format!("{}@{}", v.id, v.addr)).collect();
    parts.sort();
    parts.join(",")
}

impl ControlPlane {
    /// Starts node `config.broker_id`'s control plane on the calling shard (shard 0): its quorum
    /// member and controller when it is a voter, the listener, the publisher, and the broker's
    /// registration.
    pub fn start(start: PlaneStart) -> Result<Rc<Self>, String> {
        let PlaneStart {
            config,
            voters,
            quorum,
            image,
            cluster_id,
            faults,
            publisher,
            calls,
            listener,
            tls,
            endpoints,
            on_ready,
        } = start;
        let node_id = config.broker_id;
        let hello = Hello { node_id, voters: voters_string(&voters), cluster_id: cluster_id.clone() };
        let quorum = match quorum {
            Some(start) => Some(Quorum::start(node_id, voters.clone(), start, hello.clone(), tls.clone())?),
            None => None,
        };
        let listener = match listener {
            Some(listener) => {
                Some(io::net::Listener::from_std(listener).map_err(|e| format!("controller listener: {e}"))?)
            }
            None => None,
        };
        let controller = quorum.as_ref().map(|q| Controller::start(q.clone(), config.clone()));
        // Calls to other nodes leave from this node's own address (its controller listener's, or
        // its client listener's): on a host with several nodes, each is one address.
        let source = voters.iter().find(|v| v.id == node_id).map_or(config.listen.ip(), |v| v.addr.ip());
        let plane = Rc::new(Self {
            node_id,
            config,
            rpc: RpcClient::new(hello.clone(), Some(source), tls.clone()),
            tls,
            hello,
            voters,
            quorum,
            controller,
            leader_hint: Cell::new(None),
            published: RefCell::new(image.clone()),
            fetched: RefCell::new(None),
            fetched_signal: LocalSignal::new(),
            registration: Cell::new(None),
            on_ready: RefCell::new(Some(on_ready)),
            last_contact: Cell::new(Instant::now()),
            leading: Cell::new(true),
            leading_changed: LocalSignal::new(),
            faults,
            cluster_id_saved: Cell::new(false),
        });
        io::spawn_detached(plane.clone().serve_calls(calls));
        if let Some(listener) = listener {
            io::spawn_detached(plane.clone().serve_listener(listener));
        }
        if plane.quorum.is_none() {
            io::spawn_detached(plane.clone().run_fetcher(image));
        }
        io::spawn_detached(plane.clone().run_publisher(publisher));
        io::spawn_detached(plane.clone().run_broker(endpoints));
        Ok(plane)
    }

    /// This node's quorum state, when it is a voter.
    pub fn quorum_status(&self) -> Option<QuorumStatus> {
        self.quorum.as_ref().map(|q| q.status())
    }

    /// A stopping broker hands what it leads to other in-sync replicas and leaves every ISR
    /// first (Kafka's controlled shutdown), waiting until its shards have seen that (bounded).
    pub async fn shutdown(&self) {
        let Some(broker_epoch) = self.registration.get() else { return };
        let alone = self.published.borrow().brokers.len() <= 1;
        if alone {
            return;
        }
        let request = ControllerRequest::ControlledShutdown { broker_id: self.node_id, broker_epoch };
        let deadline = Instant::now() + SHUTDOWN_WAIT;
        let answer = io::timeout(SHUTDOWN_WAIT, self.route(request)).await;
        let Some(Answer { index, response: Ok(_) }) = answer else {
            tracing::warn!("controlled shutdown got no answer; stopping anyway");
            return;
        };
        while self.published.borrow().applied_index < index && Instant::now() < deadline {
            io::sleep(Duration::from_millis(20)).await;
        }
        tracing::info!("controlled shutdown: leaderships handed over");
    }

    fn address_of(&self, node: BrokerId) -> Option<SocketAddr> {
        self.voters.iter().find(|v| v.id == node).map(|v| v.addr)
    }

    /// Runs the request on the active controller, wherever it is, retrying while none is known.
    pub async fn route(&self, request: ControllerRequest) -> Answer {
        self.route_within(request, ROUTE_DEADLINE).await
    }

    /// [`ControlPlane::route`], giving up after `limit`.
    async fn route_within(&self, request: ControllerRequest, limit: Duration) -> Answer {
        let deadline = Instant::now() + limit;
        let mut attempt = 0usize;
        loop {
            if let Some(controller) = self.controller.as_ref().filter(|c| c.is_active()) {
                let answer = controller.handle(request.clone()).await;
                if !matches!(answer.response, Err(ControllerError::NotController(_))) {
                    return answer;
                }
            }
            let known = self.quorum.as_ref().and_then(|q| q.status().leader).or(self.leader_hint.get());
            let target = match known {
                // This node leads the quorum but its controller is not active yet (catching up):
                // wait for it rather than asking nodes that know no better.
                Some(leader) if leader == self.node_id && self.quorum.is_some() => None,
                Some(leader) => self.address_of(leader),
                // No leader known: ask the voters in turn (one of them knows or is it).
                None => self
                    .voters
                    .iter()
                    .filter(|v| v.id != self.node_id)
                    .nth(attempt % self.voters.len().max(1))
                    .map(|v| v.addr),
            };
            attempt += 1;
            if let Some(addr) = target {
                // A call never outlives the caller's deadline: over a cut link an open connection
                // swallows requests silently, and a heartbeat stuck there would let this broker's
                // session expire while the new controller is reachable.
                let left = deadline.saturating_duration_since(Instant::now()).max(ROUTE_PAUSE);
                let answer = io::timeout(left, self.rpc.call(addr, &request))
                    .await
                    .unwrap_or(Err(super::rpc::RpcError::Timeout(addr)));
                if answer.is_err() {
                    self.rpc.forget(addr);
                }
                match answer {
                    Ok(Answer { response: Err(ControllerError::NotController(leader)), .. }) => {
                        self.leader_hint.set(leader);
                    }
                    Ok(answer) => return answer,
                    Err(err) => {
                        tracing::debug!(error = %err, "controller unreachable; trying again");
                        self.leader_hint.set(None);
                    }
                }
            }
            if Instant::now() >= deadline {
                return Answer {
                    index: 0,
                    response: Err(ControllerError::Timeout(
                        "no active controller could be reached (is a majority of the voters up?)".into(),
                    )),
                };
            }
            io::sleep(ROUTE_PAUSE).await;
        }
    }

    /// Answers this node's controller calls (from every shard), each in its own task.
    async fn serve_calls(self: Rc<Self>, calls: flume::Receiver<ControllerCall>) {
        while let Ok(ControllerCall { request, reply }) = calls.recv_async().await {
            let plane = self.clone();
            io::spawn_detached(async move {
                let _ = reply.send(plane.route(request).await);
            });
        }
    }

    /// Accepts other nodes' connections on the controller listener.
    async fn serve_listener(self: Rc<Self>, listener: io::net::Listener) {
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => io::spawn_detached(self.clone().serve_connection(stream, peer)),
                Err(err) => {
                    tracing::warn!(error = %err, "controller listener accept failed");
                    io::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    async fn serve_connection(self: Rc<Self>, stream: io::net::Stream, peer: SocketAddr) {
        let stream = match &self.tls {
            None => stream,
            Some(tls) => {
                let handshake = async {
                    let server = tls().await.map_err(std::io::Error::other)?.server;
                    let session = rustls::ServerConnection::new(server).map_err(std::io::Error::other)?;
                    stream.start_tls(session).await
                };
                match io::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                    Some(Ok(stream)) => stream,
                    Some(Err(err)) => {
                        tracing::warn!(%peer, error = %err, "controller listener: TLS handshake refused; closing");
                        return;
                    }
                    None => {
                        tracing::warn!(%peer, "controller listener: no TLS handshake in time; closing");
                        return;
                    }
                }
            }
        };
        let (writes, queue) = flume::bounded::<Bytes>(1024);
        io::spawn_detached(write_frames(stream.clone(), queue));
        let mut frames = FrameStream::new(stream);
        let hello = match frames.next().await {
            Ok(Some((FrameKind::Hello, body))) => serde_json::from_slice::<Hello>(&body).ok(),
            _ => None,
        };
        let Some(hello) = hello else {
            tracing::warn!(%peer, "control-plane connection without a hello; closing it");
            return;
        };
        if let Err(reason) = self.accepts(&hello) {
            tracing::error!(%peer, node = hello.node_id, reason, "refusing a node of another quorum or cluster");
            let told = format!("node {} refuses node {}: {reason}", self.node_id, hello.node_id);
            let _ = writes.send_async(super::rpc::frame(FrameKind::Refused, told.as_bytes())).await;
            return;
        }
        loop {
            match frames.next().await {
                Ok(Some((FrameKind::Raft, body))) => {
                    if let (Some(quorum), Ok(message)) = (&self.quorum, raft::eraftpb::Message::parse_from_bytes(&body))
                    {
                        quorum.receive(message);
                    }
                }
                Ok(Some((FrameKind::Request, body))) => {
                    let Ok((id, request)) = decode_request(&body) else {
                        tracing::warn!(%peer, "malformed controller request; closing the connection");
                        return;
                    };
                    let (plane, writes) = (self.clone(), writes.clone());
                    io::spawn_detached(async move {
                        let answer = match &plane.controller {
                            Some(controller) => controller.handle(request).await,
                            None => Answer { index: 0, response: Err(ControllerError::NotController(None)) },
                        };
                        let _ = writes.send_async(response_frame(id, &answer)).await;
                    });
                }
                Ok(Some(_)) => {}
                Ok(None) => return,
                Err(err) => {
                    tracing::debug!(%peer, error = %err, "control-plane connection closed");
                    return;
                }
            }
        }
    }

    /// Whether a node introducing itself with `hello` belongs to this quorum and cluster.
    fn accepts(&self, hello: &Hello) -> Result<(), String> {
        if hello.voters != self.hello.voters {
            return Err(format!(
                "it was started with voters {} but this node with {}",
                hello.voters, self.hello.voters
            ));
        }
        let ours = self
            .hello
            .cluster_id
            .clone()
            .or_else(|| self.quorum.as_ref().map(|q| q.image().cluster_id.clone()).filter(|c| !c.is_empty()));
        if let (Some(ours), Some(theirs)) = (ours, hello.cluster_id.as_ref())
            && *theirs != ours
        {
            return Err(format!("it belongs to cluster {theirs}, this node to {ours}"));
        }
        Ok(())
    }

    fn set_leading(&self, leading: bool) {
        if self.leading.replace(leading) != leading {
            if leading {
                tracing::info!(broker = self.node_id, "in touch with the active controller again");
            } else {
                tracing::warn!(
                    broker = self.node_id,
                    "no heartbeat answered for longer than the session timeout: this broker stops leading"
                );
            }
            self.leading_changed.notify();
        }
    }

    /// The newest image this node knows of.
    fn latest(&self) -> Option<Arc<MetadataImage>> {
        match &self.quorum {
            Some(quorum) => Some(quorum.image()),
            None => self.fetched.borrow_mut().take(),
        }
    }

    /// Publishes every new image to the node's shards, one after another (the latest wins when
    /// several arrived meanwhile); partitions that failed to open are tried again now and then.
    async fn run_publisher(self: Rc<Self>, mut publisher: Publisher) {
        loop {
            let image_signal = match &self.quorum {
                Some(quorum) => quorum.image_changed(),
                None => &self.fetched_signal,
            };
            let woken = futures_util::future::select(image_signal.notified(), self.leading_changed.notified());
            if io::timeout(RETRY_FAILED_OPENS, woken).await.is_none() {
                if publisher.has_failures() || publisher.any_offline().await {
                    publisher.retry().await;
                }
                continue;
            }
            if publisher.leading() != self.leading.get() {
                publisher.set_leading(self.leading.get()).await;
            }
            let Some(image) = self.latest() else { continue };
            if image.applied_index <= self.published.borrow().applied_index {
                continue;
            }
            publisher.publish(image.clone()).await;
            if self.hello.cluster_id.is_none() && !image.cluster_id.is_empty() && !self.cluster_id_saved.get() {
                match write_cluster_id(&self.config.data_dir, &image.cluster_id, &self.faults).await {
                    Ok(()) => self.cluster_id_saved.set(true),
                    Err(err) => tracing::warn!(error = %err, "could not record the cluster id; trying again later"),
                }
            }
            *self.published.borrow_mut() = image;
        }
    }

    /// Keeps the image of a broker that is not a voter up to date by fetching the committed log
    /// from the voters.
    async fn run_fetcher(self: Rc<Self>, start: Arc<MetadataImage>) {
        let mut image = start;
        loop {
            let request = ControllerRequest::FetchMetadata { after_index: image.applied_index, wait_ms: FETCH_WAIT_MS };
            let mut answered = false;
            for voter in self.voters.clone() {
                match self.rpc.call(voter.addr, &request).await {
                    Ok(Answer { response: Ok(ControllerResponse::Metadata { snapshot, entries }), .. }) => {
                        if let Some((index, records)) = snapshot {
                            image = Arc::new(MetadataImage::empty().apply_entry(index, &records));
                        }
                        for (index, records) in entries {
                            if index > image.applied_index {
                                image = Arc::new(image.apply_entry(index, &records));
                            }
                        }
                        *self.fetched.borrow_mut() = Some(image.clone());
                        self.fetched_signal.notify();
                        answered = true;
                        break;
                    }
                    Ok(_) | Err(_) => continue,
                }
            }
            if !answered {
                io::sleep(Duration::from_millis(500)).await;
            }
        }
    }

    /// The broker's life: register with the active controller (again after every start), wait
    /// until this node's shards hold its registration unfenced (then it may serve), and heartbeat;
    /// register again when the controller no longer knows this registration. Exits the process
    /// when the cluster says this node's data belongs to another cluster.
    async fn run_broker(self: Rc<Self>, endpoints: Vec<Endpoint>) {
        let interval = Duration::from_millis(self.config.broker_heartbeat_interval_ms);
        let session_timeout = Duration::from_millis(self.config.broker_session_timeout_ms);
        let incarnation = uuid::Uuid::new_v4();
        loop {
            let register = ControllerRequest::RegisterBroker {
                broker_id: self.node_id,
                incarnation,
                endpoints: endpoints.clone(),
                rack: self.config.rack.clone(),
                cluster_id: self.hello.cluster_id.clone(),
            };
            let broker_epoch = match self.route(register).await.response {
                Ok(ControllerResponse::Registered { broker_epoch }) => broker_epoch,
                Err(ControllerError::InconsistentClusterId(message)) => {
                    eprintln!("moldau: refusing to run: {message}");
                    tracing::error!(message, "refusing to run in another cluster");
                    std::process::exit(2);
                }
                other => {
                    tracing::warn!(answer = ?other, "broker registration failed; trying again");
                    io::sleep(interval.min(Duration::from_millis(500))).await;
                    continue;
                }
            };
            self.registration.set(Some(broker_epoch));
            tracing::info!(broker = self.node_id, broker_epoch, "broker registered");
            loop {
                let ready =
                    self.published.borrow().broker(self.node_id).is_some_and(|b| b.epoch == broker_epoch && !b.fenced);
                if ready && let Some(on_ready) = self.on_ready.borrow_mut().take() {
                    tracing::info!(broker = self.node_id, "broker caught up and unfenced: serving clients");
                    on_ready();
                }
                // Until it may serve, it heartbeats often: the first heartbeat after catching up
                // unfences it.
                let pause = if self.on_ready.borrow().is_some() { CATCH_UP_HEARTBEAT.min(interval) } else { interval };
                io::sleep(pause).await;
                let heartbeat = ControllerRequest::BrokerHeartbeat {
                    broker_id: self.node_id,
                    broker_epoch,
                    applied_index: self.published.borrow().applied_index,
                };
                match self.route_within(heartbeat, interval.max(Duration::from_secs(1))).await.response {
                    Ok(_) => {
                        self.last_contact.set(Instant::now());
                        self.set_leading(true);
                    }
                    Err(ControllerError::StaleBrokerEpoch(_)) => break,
                    Err(err) => {
                        tracing::debug!(error = %err, "heartbeat failed");
                        if self.last_contact.get().elapsed() > session_timeout {
                            self.set_leading(false);
                        }
                    }
                }
            }
            self.registration.set(None);
        }
    }
}
