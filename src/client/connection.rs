//! One client connection to a Kafka-compatible broker: TLS and SASL when asked for (Kafka's
//! `security.protocol`), version negotiation with ApiVersions, pipelined requests matched to
//! responses by correlation id.
//!
//! Ownership: a `BrokerConnection` lives on the thread (executor) that opened it; it is cloned
//! freely there (`Rc`). Its reader and writer run as tasks on that executor.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_channel::oneshot;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, SaslAuthenticateRequest, SaslHandshakeRequest,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};

use crate::io::net::{FrameRules, FramedReader, Stream};

/// Client errors.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Socket failure.
    #[error("connection to {addr} failed: {source}")]
    Io {
        /// Broker address.
        addr: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The connection closed before the response arrived.
    #[error("connection to {0} closed")]
    Closed(String),
    /// The broker does not support a version of the API that this client can use.
    #[error("broker does not support {0:?} in a version this client speaks")]
    Unsupported(ApiKey),
    /// A response did not decode.
    #[error("bad response: {0}")]
    Protocol(String),
    /// A Kafka error code in a response.
    #[error("{context}: {error} (error code {code}){}", message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Kafka {
        /// What was being done.
        context: String,
        /// Error name.
        error: String,
        /// Error code.
        code: i16,
        /// Broker's message, if any.
        message: Option<String>,
    },
    /// Nothing answered (no broker, no leader, timeout).
    #[error("{0}")]
    Unavailable(String),
    /// The connection could not be secured: a TLS name that cannot be, or a server that did
    /// not prove it knows the SASL credential.
    #[error("cannot secure the connection to {addr}: {reason}")]
    Security {
        /// Broker address.
        addr: String,
        /// What went wrong.
        reason: String,
    },
}

// By hand: `std::io::Error` is not `Clone`; a copy keeps its kind and message.
impl Clone for ClientError {
    fn clone(&self) -> Self {
        match self {
            Self::Io { addr, source } => {
                Self::Io { addr: addr.clone(), source: std::io::Error::new(source.kind(), source.to_string()) }
            }
            Self::Closed(addr) => Self::Closed(addr.clone()),
            Self::Unsupported(key) => Self::Unsupported(*key),
            Self::Protocol(reason) => Self::Protocol(reason.clone()),
            Self::Kafka { context, error, code, message } => {
                Self::Kafka { context: context.clone(), error: error.clone(), code: *code, message: message.clone() }
            }
            Self::Unavailable(reason) => Self::Unavailable(reason.clone()),
            Self::Security { addr, reason } => Self::Security { addr: addr.clone(), reason: reason.clone() },
        }
    }
}

/// The client's side of one SASL exchange.
pub trait SaslClient {
    /// The mechanism's SASL name (`PLAIN`, `SCRAM-SHA-512`).
    fn mechanism(&self) -> &str;

    /// The next token to send: the first one when `challenge` is `None`, else the answer to the
    /// server's last message; `Ok(None)` once the exchange is over (the server's last message
    /// checked). Errors: the server's message is malformed or proves nothing.
    fn step(&mut self, challenge: Option<&[u8]>) -> Result<Option<Vec<u8>>, String>;
}

/// How connections secure themselves (Kafka's `security.protocol`): TLS, SASL, both or neither
/// (the default).
#[derive(Clone, Default)]
pub struct ClientSecurity {
    /// TLS with this configuration; the server's certificate is checked against the host the
    /// connection was asked for (when the configuration checks names at all).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// SASL: a new exchange for each connection.
    pub sasl: Option<Rc<dyn Fn() -> Box<dyn SaslClient>>>,
}

impl ClientError {
    /// Builds an error from a Kafka error code, or `None` for 0.
    pub fn from_code(context: impl Into<String>, code: i16, message: Option<String>) -> Option<Self> {
        let error = kafka_protocol::error::ResponseError::try_from_code(code)?;
        Some(Self::Kafka { context: context.into(), error: error.to_string(), code, message })
    }

    /// Whether asking again (after fresh metadata) may succeed: no leader yet, a leader that
    /// moved, metadata not yet everywhere, a timeout (what Kafka clients retry).
    pub fn is_retriable(&self) -> bool {
        match self {
            Self::Kafka { code, .. } => matches!(code, 3 | 5 | 6 | 7 | 13 | 74 | 75),
            Self::Unavailable(_) => true,
            _ => false,
        }
    }

    /// The Kafka error code, if this is one.
    pub fn code(&self) -> Option<i16> {
        match self {
            Self::Kafka { code, .. } => Some(*code),
            _ => None,
        }
    }
}

struct Pending {
    header_version: i16,
    reply: oneshot::Sender<Result<Bytes, ClientError>>,
}

struct Inner {
    addr: String,
    client_id: String,
    next_correlation: Cell<i32>,
    pending: RefCell<HashMap<i32, Pending>>,
    writes: flume::Sender<Bytes>,
    versions: RefCell<HashMap<i16, (i16, i16)>>,
    closed: Cell<bool>,
}

/// A connection to one broker.
#[derive(Clone)]
pub struct BrokerConnection {
    inner: Rc<Inner>,
}

/// Longest wait for any response (fetches wait at most 30 s on the broker).
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Requests in flight on one connection before `send` waits (bounded writer queue).
const MAX_QUEUED_WRITES: usize = 1024;

impl BrokerConnection {
    /// Connects and negotiates API versions.
    pub async fn connect(addr: &str, client_id: &str) -> Result<Self, ClientError> {
        Self::connect_from(addr, client_id, None, &ClientSecurity::default()).await
    }

    /// [`BrokerConnection::connect`] from the local address `source` (a broker's own address,
    /// when several share a host), secured by `security` (TLS first, then SASL after the
    /// version negotiation).
    pub async fn connect_from(
        addr: &str,
        client_id: &str,
        source: Option<std::net::IpAddr>,
        security: &ClientSecurity,
    ) -> Result<Self, ClientError> {
        let io_err = |source| ClientError::Io { addr: addr.to_owned(), source };
        let resolved: SocketAddr = std::net::ToSocketAddrs::to_socket_addrs(addr)
            .map_err(io_err)?
            .next()
            .ok_or_else(|| ClientError::Unavailable(format!("cannot resolve {addr}")))?;
        let mut stream = crate::io::net::connect_from(resolved, source)
            .await
            .map_err(|source| ClientError::Io { addr: addr.to_owned(), source })?;
        if let Some(tls) = &security.tls {
            let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host).trim_matches(['[', ']']);
            let insecure = |reason: String| ClientError::Security { addr: addr.to_owned(), reason };
            let name = rustls::pki_types::ServerName::try_from(host.to_owned())
                .map_err(|_| insecure(format!("{host:?} is not a host name or IP address")))?;
            let session = rustls::ClientConnection::new(tls.clone(), name).map_err(|e| insecure(e.to_string()))?;
            stream =
                stream.start_tls(session).await.map_err(|source| ClientError::Io { addr: addr.to_owned(), source })?;
        }
        let (writes, queue) = flume::bounded::<Bytes>(MAX_QUEUED_WRITES);
        let inner = Rc::new(Inner {
            addr: addr.to_owned(),
            client_id: client_id.to_owned(),
            next_correlation: Cell::new(1),
            pending: RefCell::new(HashMap::new()),
            writes,
            versions: RefCell::new(HashMap::new()),
            closed: Cell::new(false),
        });
        crate::io::spawn_detached(write_loop(stream.clone(), queue));
        crate::io::spawn_detached(read_loop(stream, Rc::downgrade(&inner)));
        let conn = Self { inner };
        conn.negotiate().await?;
        if let Some(login) = &security.sasl {
            conn.authenticate(login()).await?;
        }
        Ok(conn)
    }

    /// Runs a SASL exchange: SaslHandshake v1 names the mechanism, then SaslAuthenticate carries
    /// the tokens until `login` is done.
    async fn authenticate(&self, mut login: Box<dyn SaslClient>) -> Result<(), ClientError> {
        let insecure = |reason: String| ClientError::Security { addr: self.inner.addr.clone(), reason };
        let mechanism = login.mechanism().to_owned();
        let request = SaslHandshakeRequest::default().with_mechanism(StrBytes::from_string(mechanism.clone()));
        let handshake = self.send_version(request, 1).await?;
        let enabled: Vec<&str> = handshake.mechanisms.iter().map(|m| m.as_str()).collect();
        let message = format!("{mechanism} asked, the broker enables {}", enabled.join(", "));
        if let Some(err) = ClientError::from_code("SaslHandshake", handshake.error_code, Some(message)) {
            return Err(err);
        }
        let mut token = login.step(None).map_err(insecure)?.unwrap_or_default();
        loop {
            let request = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(token));
            let (response, _) = self.send_capped(request, 2).await?;
            let message = response.error_message.map(|m| m.to_string());
            if let Some(err) = ClientError::from_code("SaslAuthenticate", response.error_code, message) {
                return Err(err);
            }
            match login.step(Some(&response.auth_bytes)).map_err(insecure)? {
                Some(next) => token = next,
                None => return Ok(()),
            }
        }
    }

    /// The broker address.
    pub fn addr(&self) -> &str {
        &self.inner.addr
    }

    async fn negotiate(&self) -> Result<(), ClientError> {
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("moldau"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        // A broker that does not speak v3 answers in v0 form (error code first in both).
        let response: ApiVersionsResponse = match self.send_version(request.clone(), 3).await {
            Ok(r) if r.error_code != kafka_protocol::error::ResponseError::UnsupportedVersion.code() => r,
            Ok(_) | Err(ClientError::Protocol(_)) => self.send_version(request, 0).await?,
            Err(e) => return Err(e),
        };
        if let Some(err) = ClientError::from_code("ApiVersions", response.error_code, None) {
            return Err(err);
        }
        let mut versions = self.inner.versions.borrow_mut();
        for api in response.api_keys {
            versions.insert(api.api_key, (api.min_version, api.max_version));
        }
        Ok(())
    }

    /// The version to use for `R`: the highest both sides speak, capped at `cap`.
    pub fn version_for<R: Request>(&self, cap: i16) -> Result<i16, ClientError> {
        let key = ApiKey::try_from(R::KEY).map_err(|_| ClientError::Protocol("unknown key".into()))?;
        let (broker_min, broker_max) =
            *self.inner.versions.borrow().get(&R::KEY).ok_or(ClientError::Unsupported(key))?;
        let version = broker_max.min(R::VERSIONS.max).min(cap);
        if version < broker_min.max(R::VERSIONS.min) {
            return Err(ClientError::Unsupported(key));
        }
        Ok(version)
    }

    /// Sends `request` at the best common version (at most `cap`) and returns that version too.
    pub async fn send_capped<R: Request>(&self, request: R, cap: i16) -> Result<(R::Response, i16), ClientError> {
        let version = self.version_for::<R>(cap)?;
        Ok((self.send_version(request, version).await?, version))
    }

    /// Sends `request` at the best common version.
    pub async fn send<R: Request>(&self, request: R) -> Result<R::Response, ClientError> {
        Ok(self.send_capped(request, i16::MAX).await?.0)
    }

    /// Sends `request` at `version` and waits for its response.
    pub async fn send_version<R: Request>(&self, request: R, version: i16) -> Result<R::Response, ClientError> {
        let (correlation_id, frame) = self.frame(&request, version)?;
        let (reply, rx) = oneshot::channel();
        self.inner
            .pending
            .borrow_mut()
            .insert(correlation_id, Pending { header_version: R::Response::header_version(version), reply });
        self.write(frame).await?;
        let reply = crate::io::timeout(REQUEST_TIMEOUT, rx).await.ok_or_else(|| {
            self.inner.pending.borrow_mut().remove(&correlation_id);
            ClientError::Unavailable(format!("no response from {} within {REQUEST_TIMEOUT:?}", self.inner.addr))
        })?;
        let mut body = reply.map_err(|_| ClientError::Closed(self.inner.addr.clone()))??;
        R::Response::decode(&mut body, version).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// Sends a request that gets no response (Produce with acks=0).
    pub async fn send_without_response<R: Request>(&self, request: R, version: i16) -> Result<(), ClientError> {
        let (_, frame) = self.frame(&request, version)?;
        self.write(frame).await
    }

    fn frame<R: Request>(&self, request: &R, version: i16) -> Result<(i32, Bytes), ClientError> {
        let correlation_id = self.inner.next_correlation.get();
        self.inner.next_correlation.set(correlation_id.wrapping_add(1).max(1));
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_string(self.inner.client_id.clone())));
        let mut buf = BytesMut::with_capacity(64);
        buf.put_i32(0);
        header.encode(&mut buf, R::header_version(version)).map_err(|e| ClientError::Protocol(e.to_string()))?;
        request.encode(&mut buf, version).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let size = (buf.len() - 4) as i32;
        buf[..4].copy_from_slice(&size.to_be_bytes());
        Ok((correlation_id, buf.freeze()))
    }

    async fn write(&self, frame: Bytes) -> Result<(), ClientError> {
        if self.inner.closed.get() {
            return Err(ClientError::Closed(self.inner.addr.clone()));
        }
        self.inner.writes.send_async(frame).await.map_err(|_| ClientError::Closed(self.inner.addr.clone()))
    }

    /// True once the connection has failed or closed.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.get()
    }
}

async fn write_loop(mut stream: Stream, queue: flume::Receiver<Bytes>) {
    crate::io::net::write_queued(&mut stream, &queue).await;
}

/// Largest response accepted from a broker (a fetch answers at most its `max_bytes`, which the
/// tools keep far below this).
const MAX_RESPONSE_BYTES: usize = 1 << 30;

async fn read_loop(stream: Stream, inner: std::rc::Weak<Inner>) {
    let mut frames = FramedReader::new(stream);
    let rules = FrameRules { min_bytes: 4, peek_bytes: 0 };
    let outcome: Result<(), ClientError> = async {
        loop {
            let mut frame = match frames.next(rules, |_| MAX_RESPONSE_BYTES).await {
                Ok(Some(frame)) => frame.freeze(),
                Ok(None) => return Err(ClientError::Unavailable("closed".into())),
                Err(e) => return Err(ClientError::Unavailable(e.to_string())),
            };
            let correlation_id = frame.get_i32();
            let Some(inner) = inner.upgrade() else {
                return Ok(());
            };
            let pending = inner.pending.borrow_mut().remove(&correlation_id);
            if let Some(pending) = pending {
                if pending.header_version >= 1 {
                    // Skip the response header's tagged fields.
                    let mut reader = crate::model::wire::Reader::new(&frame);
                    reader.skip_tagged_fields().map_err(|e| ClientError::Protocol(e.to_string()))?;
                    let skip = reader.position();
                    frame.advance(skip);
                }
                let _ = pending.reply.send(Ok(frame));
            }
        }
    }
    .await;
    if let Some(inner) = inner.upgrade() {
        inner.closed.set(true);
        let reason = match outcome {
            Ok(()) => "closed".to_owned(),
            Err(e) => e.to_string(),
        };
        for (_, pending) in inner.pending.borrow_mut().drain() {
            let _ = pending
                .reply
                .send(Err(ClientError::Unavailable(format!("connection to {} lost: {reason}", inner.addr))));
        }
    }
}
