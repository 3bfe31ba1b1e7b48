//! One client connection: a reader task that parses and dispatches requests, and a writer task
//! that sends responses in request order with vectored writes.
//!
//! Requests are handled one at a time, as Kafka does, with one exception: consecutive Produce
//! requests pipeline. Their appends are issued in arrival order (so per-partition order holds)
//! and their acknowledgements are awaited concurrently, which lets one connection's produces
//! share a group commit. Any other request waits until earlier Produce requests have completed.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use futures_channel::oneshot;
use futures_util::FutureExt;
use kafka_protocol::messages::ApiKey;

use super::fetch_response::EncodedBody;
use super::frame::{FrameLimits, RequestFrameError, RequestReader};
use super::handlers;
use super::server::{KafkaContext, KafkaMetrics};
use crate::config::SecurityProtocol;
use crate::io::LocalSignal;
use crate::io::budget::Permit;
use crate::io::net::Stream;
use crate::security::acl;
use crate::security::quota::{self, QuotaKind, SensorId};
use crate::security::sasl::{Mechanism, SaslExchange};

/// Responses gathered into one write at most.
const MAX_BATCH_BYTES: usize = 4 << 20;

/// A response body, encoded.
pub enum ResponseBody {
    /// One buffer.
    Bytes(Bytes),
    /// Several buffers to write back to back (Fetch: record batches shared with the log).
    Parts(EncodedBody),
}

/// A response ready to be written.
pub struct Response {
    /// Correlation id of the request.
    pub correlation_id: i32,
    /// Response header version (0: correlation id only; 1: plus tagged fields).
    pub header_version: i16,
    /// Body.
    pub body: ResponseBody,
    /// Memory the body's bytes count against (a fetch's read budget), given back once written.
    pub held: Option<Permit>,
}

impl Response {
    fn body_len(&self) -> usize {
        match &self.body {
            ResponseBody::Bytes(b) => b.len(),
            ResponseBody::Parts(p) => p.len,
        }
    }

    /// Appends the framed response (size, header, body) to `out`, and what it holds to `held`;
    /// returns its length.
    fn append_to(mut self, out: &mut Vec<Bytes>, held: &mut Vec<Permit>) -> usize {
        held.extend(self.held.take());
        let header_len = if self.header_version >= 1 { 5 } else { 4 };
        let size = header_len + self.body_len();
        let mut head = BytesMut::with_capacity(4 + header_len);
        head.put_i32(size as i32);
        head.put_i32(self.correlation_id);
        if self.header_version >= 1 {
            head.put_u8(0); // no tagged fields
        }
        out.push(head.freeze());
        match self.body {
            ResponseBody::Bytes(b) => out.push(b),
            ResponseBody::Parts(parts) => out.extend(parts.parts),
        }
        4 + size
    }
}

/// A response that will be ready later (or `None`: no response, as for acks=0).
pub type PendingResponse = Pin<Box<dyn Future<Output = Option<Response>>>>;

/// Who is asking: what every handler knows of the connection a request came on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestContext {
    /// Name of the listener the connection came in on.
    pub listener: String,
    /// Peer address.
    pub peer: SocketAddr,
    /// Client id of the latest request.
    pub client_id: Option<String>,
    /// Authenticated principal (`User:ANONYMOUS` when the listener authenticates no one).
    pub principal: String,
}

/// The principal of an unauthenticated connection, as Kafka names it.
pub const ANONYMOUS: &str = "User:ANONYMOUS";

/// A listener a connection came in on.
#[derive(Debug)]
pub struct ListenerInfo {
    /// Its name (clients are told this listener's endpoints).
    pub name: String,
    /// How it secures connections.
    pub protocol: SecurityProtocol,
}

/// Where a connection stands with authentication.
pub enum Auth {
    /// Authenticated by the listener itself (plaintext or TLS): every request is served.
    Transport,
    /// A SASL listener waiting for SaslHandshake: only ApiVersions and SaslHandshake are served.
    Handshake,
    /// SaslHandshake chose a mechanism: SaslAuthenticate tokens follow.
    Exchanging(SaslExchange),
    /// Authenticated by SASL with `mechanism`, until `expires` (`connections.max.reauth.ms`),
    /// after which only a new SaslHandshake is served.
    Authenticated {
        /// The mechanism (re-authentication uses the same).
        mechanism: Mechanism,
        /// When the session ends.
        expires: Option<Instant>,
    },
    /// Refused: the connection closes once its answer is written.
    Failed,
}

/// State shared by a connection's tasks.
pub struct Connection {
    /// The Kafka service of the shard the connection lives on.
    pub ctx: Rc<KafkaContext>,
    /// Peer address.
    pub peer: SocketAddr,
    /// The listener it came in on.
    pub listener: Rc<ListenerInfo>,
    /// Client id of the latest request.
    pub client_id: RefCell<Option<String>>,
    /// The authenticated principal (`User:NAME`).
    pub principal: RefCell<String>,
    /// Where it stands with authentication.
    pub auth: RefCell<Auth>,
    /// Nothing more is read from the connection before this (a client over its quota).
    muted_until: Cell<Option<Instant>>,
    /// A follower replicating (its fetches are not bound by client quotas).
    pub replica: Cell<bool>,
    /// How long the client's request quota says to back off, as of the request being handled:
    /// every response with a `throttle_time_ms` field tells it (the request's own time is
    /// counted once it is handled, so a client learns of it on its next request).
    pub request_throttle_ms: Cell<i32>,
    /// The connection's incremental fetch sessions.
    pub fetch_sessions: RefCell<crate::kafka::fetch_session::FetchSessions>,
    produces_in_flight: Cell<usize>,
    produces_done: LocalSignal,
}

impl Connection {
    /// The request context of this connection's latest request.
    pub fn request_context(&self) -> RequestContext {
        RequestContext {
            listener: self.listener.name.clone(),
            peer: self.peer,
            client_id: self.client_id.borrow().clone(),
            principal: self.principal.borrow().clone(),
        }
    }

    /// Why a request with `api_key` may not be served on this connection now, if it may not.
    fn refusal(&self, api_key: i16) -> Option<String> {
        let key = ApiKey::try_from(api_key).ok();
        let is = |k: ApiKey| key == Some(k);
        match &*self.auth.borrow() {
            Auth::Transport => None,
            Auth::Handshake if is(ApiKey::ApiVersions) || is(ApiKey::SaslHandshake) => None,
            Auth::Handshake => Some(format!("request {key:?} (API key {api_key}) before the SASL handshake")),
            Auth::Exchanging(_) if is(ApiKey::SaslAuthenticate) || is(ApiKey::ApiVersions) => None,
            Auth::Exchanging(_) => Some(format!("request {key:?} (API key {api_key}) during SASL authentication")),
            Auth::Authenticated { expires: Some(at), .. } if Instant::now() >= *at && !is(ApiKey::SaslHandshake) => {
                Some("the SASL session expired (connections.max.reauth.ms) without re-authentication".into())
            }
            Auth::Authenticated { .. } => None,
            Auth::Failed => Some("authentication failed".into()),
        }
    }

    /// Whether this connection's principal may do `operation` on the resource (`resource_type`
    /// and `name`, Kafka's codes: `security::acl`); always, without an authorizer.
    pub fn allowed(&self, operation: i8, resource_type: i8, name: &str) -> bool {
        let authorizer = &self.ctx.security.authorizer;
        if !authorizer.enabled() {
            return true;
        }
        let view = self.ctx.view();
        let principal = self.principal.borrow();
        authorizer.allows(&view.image.acls, &principal, self.peer.ip(), operation, resource_type, name)
    }

    /// Kafka's authorized-operations bit field for a resource (bit `op` set for each operation
    /// of its type this principal may do), as Metadata, DescribeCluster and DescribeGroups
    /// answer when asked.
    pub fn authorized_operations(&self, resource_type: i8, name: &str) -> i32 {
        acl::supported_operations(resource_type)
            .iter()
            .filter(|op| self.allowed(**op, resource_type, name))
            .fold(0, |bits, op| bits | (1 << op))
    }

    /// [`Connection::allowed`] on the cluster resource.
    pub fn cluster_allowed(&self, operation: i8) -> bool {
        self.allowed(operation, acl::resource::CLUSTER, acl::CLUSTER_NAME)
    }

    /// The quota of `kind` this connection's requests count against now, if one applies.
    pub fn quota(&self, kind: QuotaKind) -> Option<(SensorId, f64)> {
        let view = self.ctx.view();
        if view.image.client_quotas.is_empty() {
            return None;
        }
        let principal = self.principal.borrow();
        let user = principal.strip_prefix("User:").unwrap_or(&principal);
        let client_id = self.client_id.borrow();
        quota::resolve(&view.image.client_quotas, kind, user, client_id.as_deref().unwrap_or(""))
    }

    /// Counts `value` against the connection's quota of `kind`, if one applies; returns the
    /// throttle time its client has earned (0 within its quota), for which the connection is
    /// muted.
    pub fn charge(&self, kind: QuotaKind, value: f64) -> i32 {
        let Some((sensor, bound)) = self.quota(kind) else {
            return 0;
        };
        let wait = self.ctx.security.quotas.record(&sensor, bound, value);
        self.mute_for(wait)
    }

    /// Reads nothing more from the connection for `wait`; returns it in milliseconds.
    pub fn mute_for(&self, wait: Duration) -> i32 {
        if wait.is_zero() {
            return 0;
        }
        let until = Instant::now() + wait;
        if self.muted_until.get().is_none_or(|at| at < until) {
            self.muted_until.set(Some(until));
        }
        KafkaMetrics::add(&self.ctx.metrics.quota_throttles, 1);
        wait.as_millis().min(i32::MAX as u128) as i32
    }

    /// Whether the connection closes after the answer being prepared.
    pub fn failed(&self) -> bool {
        matches!(&*self.auth.borrow(), Auth::Failed)
    }

    /// Marks a pipelined Produce as started; returns a guard to drop when it completes.
    pub fn produce_started(self: &Rc<Self>) -> ProduceGuard {
        self.produces_in_flight.set(self.produces_in_flight.get() + 1);
        ProduceGuard { conn: self.clone() }
    }

    async fn wait_for_produces(&self) {
        while self.produces_in_flight.get() > 0 {
            self.produces_done.notified().await;
        }
    }
}

/// Held by a pipelined Produce until it has its response.
pub struct ProduceGuard {
    conn: Rc<Connection>,
}

impl Drop for ProduceGuard {
    fn drop(&mut self) {
        let n = self.conn.produces_in_flight.get() - 1;
        self.conn.produces_in_flight.set(n);
        if n == 0 {
            self.conn.produces_done.notify();
        }
    }
}

/// Serves one connection until the peer closes, a request is malformed, authentication fails,
/// or the shard stops.
pub async fn serve(
    ctx: Rc<KafkaContext>,
    stream: Stream,
    peer: SocketAddr,
    listener: Rc<ListenerInfo>,
    stop: oneshot::Receiver<()>,
) {
    let limits = FrameLimits {
        produce_max_bytes: ctx.config.socket_request_max_bytes,
        control_max_bytes: ctx.config.control_request_max_bytes,
        read_timeout: Duration::from_millis(ctx.config.request_read_timeout_ms),
        idle_timeout: Duration::from_millis(ctx.config.connections_max_idle_ms),
    };
    let budget = ctx.request_memory.clone();
    let (queue, responses) = flume::bounded::<Queued>(ctx.config.max_in_flight_requests_per_connection);
    let writer = crate::io::spawn(write_loop(stream.clone(), responses, limits.read_timeout));
    // A TLS client's certificate names it (Kafka's default mapping: the subject), unless SASL
    // authenticates it later.
    let principal = stream
        .peer_certificates()
        .first()
        .and_then(|cert| crate::security::tls::subject_name(cert))
        .map_or_else(|| ANONYMOUS.to_owned(), |subject| format!("User:{subject}"));
    let auth = if listener.protocol.sasl() { Auth::Handshake } else { Auth::Transport };
    let conn = Rc::new(Connection {
        ctx,
        peer,
        listener,
        client_id: RefCell::new(None),
        principal: RefCell::new(principal),
        auth: RefCell::new(auth),
        muted_until: Cell::new(None),
        replica: Cell::new(false),
        request_throttle_ms: Cell::new(0),
        fetch_sessions: RefCell::default(),
        produces_in_flight: Cell::new(0),
        produces_done: LocalSignal::new(),
    });
    read_loop(&conn, RequestReader::new(stream, limits, budget), queue, stop).await;
    let _ = writer.await;
}

/// A response on its way, and the request memory its request holds until it is done.
type Queued = (PendingResponse, Permit);

async fn read_loop(
    conn: &Rc<Connection>,
    mut reader: RequestReader,
    queue: flume::Sender<Queued>,
    stop: oneshot::Receiver<()>,
) {
    let mut stop = stop.fuse();
    loop {
        // A client over its quota: nothing is read from it until its throttle time is over.
        if let Some(until) = conn.muted_until.take() {
            let now = Instant::now();
            if until > now {
                let pause = crate::io::sleep(until - now).fuse();
                futures_util::pin_mut!(pause);
                futures_util::select_biased! {
                    _ = stop => return,
                    _ = pause => {},
                }
            }
        }
        let next = futures_util::select_biased! {
            _ = stop => return,
            frame = reader.next().fuse() => frame,
        };
        let (frame, permit) = match next {
            Ok(Some(read)) => read,
            Ok(None) => return,
            Err(err) => {
                // A reset or an idle connection is a client's way of leaving, not a fault.
                let quiet = matches!(&err, RequestFrameError::Frame(e) if e.is_reset())
                    || matches!(err, RequestFrameError::Idle(_));
                if !quiet {
                    tracing::warn!(peer = %conn.peer, error = %err, "closing connection");
                    KafkaMetrics::add(&conn.ctx.metrics.request_errors, 1);
                }
                return;
            }
        };
        KafkaMetrics::add(&conn.ctx.metrics.requests, 1);
        if let Some(reason) = conn.refusal(frame.header.api_key) {
            KafkaMetrics::add(&conn.ctx.metrics.authentication_failures, 1);
            if let Some(more) = conn.ctx.auth_log.borrow_mut().due() {
                tracing::warn!(peer = %conn.peer, listener = %conn.listener.name, more, "closing connection: {reason}");
            }
            return;
        }
        if frame.header.api_key != ApiKey::Produce as i16 {
            conn.wait_for_produces().await;
        }
        let header = frame.header.clone();
        if header.client_id.is_some() && *conn.client_id.borrow() != header.client_id {
            *conn.client_id.borrow_mut() = header.client_id.clone();
        }
        // Under a request quota, the time this shard spends handling the request counts against it.
        let request_quota = if conn.replica.get() { None } else { conn.quota(QuotaKind::Request) };
        let earned = request_quota.as_ref().map(|(sensor, bound)| conn.ctx.security.quotas.record(sensor, *bound, 0.0));
        conn.request_throttle_ms.set(earned.map_or(0, |wait| wait.as_millis().min(i32::MAX as u128) as i32));
        let dispatched = handlers::dispatch(conn, frame);
        let dispatched = match &request_quota {
            None => dispatched.await,
            Some((sensor, bound)) => {
                let (outcome, spent) = timed(dispatched).await;
                // In percent of one shard's time: 1 s of work per second is 100.
                let wait = conn.ctx.security.quotas.record(sensor, *bound, spent.as_secs_f64() * 100.0);
                conn.mute_for(wait);
                outcome
            }
        };
        let pending = match dispatched {
            Ok(pending) => pending,
            Err(err) => {
                tracing::warn!(
                    peer = %conn.peer,
                    api_key = header.api_key,
                    api_version = header.api_version,
                    client_id = ?header.client_id,
                    error = %err,
                    "closing connection"
                );
                KafkaMetrics::add(&conn.ctx.metrics.request_errors, 1);
                return;
            }
        };
        if queue.send_async((pending, permit)).await.is_err() {
            return; // the writer is gone (socket error)
        }
        if conn.failed() {
            return; // authentication failed: closed once its answer is written
        }
    }
}

/// Runs `work` and measures the time spent polling it (the shard's time it took, not the time
/// it waited).
async fn timed<T>(work: impl Future<Output = T>) -> (T, Duration) {
    let mut spent = Duration::ZERO;
    futures_util::pin_mut!(work);
    let outcome = std::future::poll_fn(|cx| {
        let started = Instant::now();
        let poll = work.as_mut().poll(cx);
        spent += started.elapsed();
        poll
    })
    .await;
    (outcome, spent)
}

/// Writes the responses in order. A write that cannot finish within `stall` (the client does
/// not read what it asked for) closes the connection, so no client pins the memory its
/// responses hold.
async fn write_loop(mut stream: Stream, responses: flume::Receiver<Queued>, stall: Duration) {
    let mut next: Option<Queued> = None;
    loop {
        let (first, permit) = match next.take() {
            Some(queued) => queued,
            None => match responses.recv_async().await {
                Ok(queued) => queued,
                Err(_) => break,
            },
        };
        let mut out = Vec::new();
        // The memory of the requests and responses in this write, given back once written.
        let mut held = vec![permit];
        let mut bytes = 0usize;
        if let Some(response) = first.await {
            bytes += response.append_to(&mut out, &mut held);
        }
        // Gather whatever else is already complete into the same write.
        while bytes < MAX_BATCH_BYTES {
            let Ok((mut pending, permit)) = responses.try_recv() else {
                break;
            };
            match (&mut pending).now_or_never() {
                Some(Some(response)) => {
                    held.push(permit);
                    bytes += response.append_to(&mut out, &mut held);
                }
                Some(None) => {}
                None => {
                    next = Some((pending, permit));
                    break;
                }
            }
        }
        if out.is_empty() {
            continue;
        }
        match crate::io::timeout(stall, stream.write_all(out)).await {
            Some(Ok(())) => drop(held),
            Some(Err(_)) => break,
            None => {
                tracing::warn!(?stall, "closing a connection whose client does not read its responses");
                break;
            }
        }
    }
    stream.shutdown().await;
}
