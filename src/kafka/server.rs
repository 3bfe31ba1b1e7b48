//! The Kafka service of one shard: its listener, its connections, and the handles its request
//! handlers use to reach the rest of the broker.
//!
//! Ownership: one [`KafkaContext`] per shard, shared by the shard's connections (`Rc`); it holds
//! `Send + Sync` handles to other shards' services (`Sharded`, the controller's queue) and this
//! shard's own view of the metadata.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_channel::oneshot;

use super::connection::ListenerInfo;

use crate::cluster::{
    Answer, ControllerError, ControllerHandle, ControllerRequest, ControllerResponse, LocalMetadata, MetadataView,
};
use crate::config::BrokerConfig;
use crate::config::SecurityProtocol;
use crate::group::GroupCoordinator;
use crate::io::budget::MemoryBudget;
use crate::io::net::{Listener, Stream};
use crate::io::{self, Throttled};
use crate::partition::PartitionManager;
use crate::security::ShardSecurity;
use crate::shard::{ShardId, ShardSet, Sharded};

/// Longest a handler waits for a change it made to reach its shard's view.
const CHANGE_VISIBLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Producer ids a shard takes from the controller at a time.
const PRODUCER_ID_BLOCK: i64 = 1000;

/// Counters of one shard's Kafka service (plain cells: only the shard's thread touches them).
#[derive(Default)]
pub struct KafkaMetrics {
    /// Requests read from connections.
    pub requests: Cell<u64>,
    /// Requests that closed their connection.
    pub request_errors: Cell<u64>,
    /// Partition-level errors returned.
    pub partition_errors: Cell<u64>,
    /// Open connections.
    pub connections: Cell<u64>,
    /// Connections closed for failing to authenticate (TLS handshakes, SASL, requests before
    /// authentication).
    pub authentication_failures: Cell<u64>,
    /// Responses that throttled their client for exceeding a quota.
    pub quota_throttles: Cell<u64>,
    /// Incremental fetch sessions opened (KIP-227).
    pub fetch_sessions_opened: Cell<u64>,
    /// Fetches answered in a session (incrementally).
    pub incremental_fetches: Cell<u64>,
    /// Partitions of incremental fetches answered without a read (unchanged since the last).
    pub session_partitions_unread: Cell<u64>,
}

impl KafkaMetrics {
    /// Adds `n` to a counter.
    pub fn add(cell: &Cell<u64>, n: u64) {
        cell.set(cell.get() + n);
    }
}

/// What a shard's request handlers reach the broker through.
pub struct KafkaContext {
    /// This shard.
    pub shard: ShardId,
    /// Every shard.
    pub shards: ShardSet,
    /// Every shard's partitions.
    pub partitions: Sharded<PartitionManager>,
    /// Every shard's group coordinator.
    pub groups: Sharded<GroupCoordinator>,
    /// This shard's view of the cluster.
    pub metadata: Rc<LocalMetadata>,
    /// The controller.
    pub controller: ControllerHandle,
    /// Broker settings.
    pub config: Arc<BrokerConfig>,
    /// Counters.
    pub metrics: KafkaMetrics,
    /// Error answers per API and code.
    pub error_stats: crate::kafka::error_stats::ErrorStats,
    /// This shard's share of `queued_max_request_bytes`, held by requests being read or served.
    pub request_memory: MemoryBudget,
    /// This shard's share of `fetch_read_budget_bytes`, held by fetched records until written.
    pub fetch_memory: MemoryBudget,
    /// Connections this shard serves at most: `max_connections_per_shard`, or fewer when the
    /// process may not open that many files (three quarters of the open-files limit go to
    /// connections, shared by the shards; the rest to partitions' files).
    max_connections: usize,
    /// TLS configuration and PLAIN users.
    pub security: Rc<ShardSecurity>,
    /// Authentication failures are logged at most once per interval, with a count of the rest.
    pub auth_log: RefCell<Throttled>,
    /// Open connections, each with the sender that asks it to finish (taken at shutdown).
    connections: RefCell<HashMap<u64, Option<oneshot::Sender<()>>>>,
    /// The listeners, bound but not served until the broker is ready.
    held: RefCell<Vec<(Listener, Rc<ListenerInfo>)>>,
    /// The accept loops; dropping them closes the listeners.
    acceptors: RefCell<Vec<io::Task<()>>>,
    next_connection_id: Cell<u64>,
    stopping: Cell<bool>,
    /// The next producer id to hand out, and the end of this shard's block.
    producer_ids: Cell<(i64, i64)>,
}

/// The services a [`KafkaContext`] is built over.
pub struct KafkaServices {
    /// Every shard.
    pub shards: ShardSet,
    /// Every shard's partitions.
    pub partitions: Sharded<PartitionManager>,
    /// Every shard's group coordinator.
    pub groups: Sharded<GroupCoordinator>,
    /// The controller.
    pub controller: ControllerHandle,
    /// Broker settings.
    pub config: Arc<BrokerConfig>,
    /// This shard's TLS configuration and PLAIN users.
    pub security: Rc<ShardSecurity>,
}

impl KafkaContext {
    /// The calling shard's context.
    pub fn new(shard: ShardId, services: KafkaServices, metadata: Rc<LocalMetadata>) -> Rc<Self> {
        let KafkaServices { shards, partitions, groups, controller, config, security } = services;
        let request_memory = MemoryBudget::new(config.queued_max_request_bytes / shards.count().max(1));
        let fetch_memory = MemoryBudget::new(config.fetch_read_budget_bytes / shards.count().max(1));
        let by_files = (io::raise_open_files_limit() as usize).saturating_mul(3) / 4 / shards.count().max(1);
        let max_connections = config.max_connections_per_shard.min(by_files.max(1));
        if max_connections < config.max_connections_per_shard {
            tracing::info!(shard, max_connections, "connections limited by the open-files limit (RLIMIT_NOFILE)");
        }
        Rc::new(Self {
            shard,
            shards,
            partitions,
            groups,
            metadata,
            controller,
            config,
            metrics: KafkaMetrics::default(),
            request_memory,
            fetch_memory,
            max_connections,
            security,
            auth_log: RefCell::new(Throttled::default()),
            error_stats: Default::default(),
            connections: RefCell::new(HashMap::new()),
            held: RefCell::new(Vec::new()),
            acceptors: RefCell::new(Vec::new()),
            next_connection_id: Cell::new(0),
            stopping: Cell::new(false),
            producer_ids: Cell::new((0, 0)),
        })
    }

    /// The current view of the cluster.
    pub fn view(&self) -> Arc<MetadataView> {
        self.metadata.view()
    }

    /// Sends `request` to the active controller (wherever it is) and waits for its answer, then
    /// until this shard's view holds the change it made, so the client sees its own change here.
    pub async fn ask_controller(&self, request: ControllerRequest) -> Result<ControllerResponse, ControllerError> {
        let Answer { index, response } = self.controller.call(request).await;
        if response.is_ok() && !self.metadata.wait_for(index, CHANGE_VISIBLE_TIMEOUT).await {
            tracing::warn!(index, "a committed metadata change did not reach this shard in time");
        }
        response
    }

    /// Registers a connection; the receiver completes when the shard shuts down. `None` when the
    /// shard is stopping or at `max_connections_per_shard`.
    fn register_connection(&self) -> Option<(u64, oneshot::Receiver<()>)> {
        if self.stopping.get() || self.connections.borrow().len() >= self.max_connections {
            return None;
        }
        let id = self.next_connection_id.get();
        self.next_connection_id.set(id + 1);
        let (tx, rx) = oneshot::channel();
        self.connections.borrow_mut().insert(id, Some(tx));
        KafkaMetrics::add(&self.metrics.connections, 1);
        Some((id, rx))
    }

    fn unregister_connection(&self, id: u64) {
        if self.connections.borrow_mut().remove(&id).is_some() {
            self.metrics.connections.set(self.metrics.connections.get() - 1);
        }
    }

    /// A producer id never handed out before (blocks of ids come from the controller).
    pub async fn next_producer_id(&self) -> Result<i64, ControllerError> {
        let (next, end) = self.producer_ids.get();
        if next < end {
            self.producer_ids.set((next + 1, end));
            return Ok(next);
        }
        let broker_id = self.config.broker_id;
        let request = ControllerRequest::AllocateProducerIds { broker_id, count: PRODUCER_ID_BLOCK };
        let first = match self.ask_controller(request).await? {
            ControllerResponse::ProducerIds(first) => first,
            other => return Err(ControllerError::Storage(format!("unexpected controller answer {other:?}"))),
        };
        self.producer_ids.set((first + 1, first + PRODUCER_ID_BLOCK));
        Ok(first)
    }

    /// Keeps `listener` (named `name`, secured with `protocol`) bound (connections wait in its
    /// backlog) until [`KafkaContext::open_for_clients`].
    pub fn hold_listener(&self, listener: Listener, name: &str, protocol: SecurityProtocol) {
        let info = Rc::new(ListenerInfo { name: name.to_owned(), protocol });
        self.held.borrow_mut().push((listener, info));
    }

    /// Accepts connections on the held listeners (until [`KafkaContext::stop`]).
    pub fn open_for_clients(self: &Rc<Self>) {
        if self.stopping.get() {
            return;
        }
        for (listener, info) in self.held.borrow_mut().drain(..) {
            self.acceptors.borrow_mut().push(io::spawn(accept_loop(self.clone(), listener, info)));
        }
    }

    /// Stops accepting (the listener closes, so the kernel sends new connections to the other
    /// shards or refuses them), tells every connection to finish, and waits (up to the shutdown
    /// grace period) until they have.
    pub async fn stop(&self) {
        self.stopping.set(true);
        self.held.borrow_mut().clear();
        self.acceptors.borrow_mut().clear();
        let stops: Vec<oneshot::Sender<()>> =
            self.connections.borrow_mut().values_mut().filter_map(Option::take).collect();
        for stop in stops {
            let _ = stop.send(());
        }
        let deadline = Instant::now() + Duration::from_millis(self.config.shutdown_grace_ms);
        while self.metrics.connections.get() > 0 && Instant::now() < deadline {
            io::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Accepts connections on `listener` and serves each on this shard (after its TLS handshake on
/// a TLS listener).
async fn accept_loop(ctx: Rc<KafkaContext>, listener: Listener, info: Rc<ListenerInfo>) {
    // Refusals and failures repeat as fast as clients retry: said once per interval, with a
    // count of the rest.
    let mut refused = Throttled::default();
    let mut failed = Throttled::default();
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let Some((id, stop)) = ctx.register_connection() else {
                    if let Some(more) = refused.due() {
                        tracing::warn!(
                            shard = ctx.shard,
                            %peer,
                            limit = ctx.max_connections,
                            more,
                            "connection refused: shard at its connection limit"
                        );
                    }
                    continue;
                };
                let ctx = ctx.clone();
                let info = info.clone();
                io::spawn_detached(async move {
                    let stream =
                        if info.protocol.tls() { tls_handshake(&ctx, stream, peer, &info).await } else { Some(stream) };
                    if let Some(stream) = stream {
                        super::connection::serve(ctx.clone(), stream, peer, info, stop).await;
                    }
                    ctx.unregister_connection(id);
                });
            }
            Err(err) => {
                if let Some(more) = failed.due() {
                    tracing::warn!(shard = ctx.shard, error = %err, more, "accept failed");
                }
                io::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// The TLS handshake of a new connection, within the request read timeout; `None` (logged,
/// rate-limited) when it fails: a plaintext client on a TLS port, an untrusted certificate.
async fn tls_handshake(ctx: &KafkaContext, stream: Stream, peer: SocketAddr, info: &ListenerInfo) -> Option<Stream> {
    let timeout = Duration::from_millis(ctx.config.request_read_timeout_ms);
    let handshake = async {
        let session = ctx.security.tls_session().await.map_err(std::io::Error::other)?;
        stream.start_tls(session).await
    };
    let failure = match io::timeout(timeout, handshake).await {
        Some(Ok(stream)) => return Some(stream),
        Some(Err(err)) => err.to_string(),
        None => format!("no TLS handshake within {timeout:?}"),
    };
    KafkaMetrics::add(&ctx.metrics.authentication_failures, 1);
    if let Some(more) = ctx.auth_log.borrow_mut().due() {
        tracing::warn!(%peer, listener = %info.name, more, "TLS handshake failed: {failure}");
    }
    None
}
