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

use bytes::{BufMut, Bytes, BytesMut};
use compio::BufResult;
use futures_channel::oneshot;
use futures_util::FutureExt;
use kafka_protocol::messages::ApiKey;

use super::fetch_response::EncodedBody;
use super::frame::{FrameError, FrameLimits, FrameReader};
use super::handlers;
use crate::io::net::{AsyncWrite, AsyncWriteExt, TcpStream};
use crate::shard::{Shard, ShardMetrics};
use crate::util::LocalSignal;

/// Most buffers handed to one vectored write (IOV_MAX is 1024).
const MAX_IOVECS_PER_WRITE: usize = 512;
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
}

impl Response {
    fn body_len(&self) -> usize {
        match &self.body {
            ResponseBody::Bytes(b) => b.len(),
            ResponseBody::Parts(p) => p.len,
        }
    }

    /// Appends the framed response (size, header, body) to `out`; returns its length.
    fn append_to(self, out: &mut Vec<Bytes>) -> usize {
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

/// State shared by a connection's tasks.
pub struct Connection {
    /// The shard the connection lives on.
    pub shard: Rc<Shard>,
    /// Peer address.
    pub peer: SocketAddr,
    /// Client id of the latest request.
    pub client_id: RefCell<Option<String>>,
    produces_in_flight: Cell<usize>,
    produces_done: LocalSignal,
}

impl Connection {
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

/// Serves one connection until the peer closes, a request is malformed, or the shard stops.
pub async fn serve(shard: Rc<Shard>, stream: TcpStream, peer: SocketAddr, stop: oneshot::Receiver<()>) {
    let limits = FrameLimits {
        produce_max_bytes: shard.config.socket_request_max_bytes,
        control_max_bytes: shard.config.control_request_max_bytes,
    };
    let (queue, responses) = flume::bounded::<PendingResponse>(shard.config.max_in_flight_requests_per_connection);
    let writer = crate::io::spawn(write_loop(stream.clone(), responses));
    let conn = Rc::new(Connection {
        shard,
        peer,
        client_id: RefCell::new(None),
        produces_in_flight: Cell::new(0),
        produces_done: LocalSignal::new(),
    });
    read_loop(&conn, FrameReader::new(stream, limits), queue, stop).await;
    let _ = writer.await;
}

async fn read_loop(
    conn: &Rc<Connection>,
    mut reader: FrameReader,
    queue: flume::Sender<PendingResponse>,
    stop: oneshot::Receiver<()>,
) {
    let mut stop = stop.fuse();
    loop {
        let next = futures_util::select_biased! {
            _ = stop => return,
            frame = reader.next().fuse() => frame,
        };
        let frame = match next {
            Ok(Some(frame)) => frame,
            Ok(None) => return,
            Err(err) => {
                let quiet = matches!(&err, FrameError::Io(e) if e.kind() == std::io::ErrorKind::ConnectionReset);
                if !quiet {
                    tracing::warn!(peer = %conn.peer, error = %err, "closing connection");
                    ShardMetrics::add(&conn.shard.metrics.request_errors, 1);
                }
                return;
            }
        };
        ShardMetrics::add(&conn.shard.metrics.requests, 1);
        if frame.header.api_key != ApiKey::Produce as i16 {
            conn.wait_for_produces().await;
        }
        let header = frame.header.clone();
        if header.client_id.is_some() && *conn.client_id.borrow() != header.client_id {
            *conn.client_id.borrow_mut() = header.client_id.clone();
        }
        let pending = match handlers::dispatch(conn, frame).await {
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
                ShardMetrics::add(&conn.shard.metrics.request_errors, 1);
                return;
            }
        };
        if queue.send_async(pending).await.is_err() {
            return; // the writer is gone (socket error)
        }
    }
}

async fn write_loop(mut stream: TcpStream, responses: flume::Receiver<PendingResponse>) {
    let mut next: Option<PendingResponse> = None;
    loop {
        let first = match next.take() {
            Some(pending) => pending,
            None => match responses.recv_async().await {
                Ok(pending) => pending,
                Err(_) => break,
            },
        };
        let mut out = Vec::new();
        let mut bytes = 0usize;
        if let Some(response) = first.await {
            bytes += response.append_to(&mut out);
        }
        // Gather whatever else is already complete into the same write.
        while bytes < MAX_BATCH_BYTES {
            let Ok(mut pending) = responses.try_recv() else {
                break;
            };
            match (&mut pending).now_or_never() {
                Some(Some(response)) => bytes += response.append_to(&mut out),
                Some(None) => {}
                None => {
                    next = Some(pending);
                    break;
                }
            }
        }
        if out.is_empty() {
            continue;
        }
        if write_all(&mut stream, out).await.is_err() {
            break;
        }
    }
    let _ = stream.shutdown().await;
}

async fn write_all(stream: &mut TcpStream, mut out: Vec<Bytes>) -> std::io::Result<()> {
    while !out.is_empty() {
        let rest = if out.len() > MAX_IOVECS_PER_WRITE { out.split_off(MAX_IOVECS_PER_WRITE) } else { Vec::new() };
        let BufResult(result, _) = stream.write_vectored_all(out).await;
        result?;
        out = rest;
    }
    Ok(())
}
