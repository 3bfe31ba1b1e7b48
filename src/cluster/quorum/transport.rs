//! Raft messages to the other voters: one outgoing connection per peer, opened on demand and
//! again after it breaks, with a bounded queue in front of it. A message that finds the queue
//! full, or that a broken connection loses, is dropped: Raft resends what matters.
//!
//! Ownership: on shard 0 with the quorum's driver; each peer's writer is a task of that shard.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use protobuf::Message as _;
use raft::eraftpb::Message;

use crate::cluster::rpc::{ControllerTlsSource, FrameKind, Hello, dial, frame, json_frame};
use crate::io;

/// Messages queued for one peer at most.
const PEER_QUEUE: usize = 1024;
/// Longest a connection attempt to a peer may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause after a failed connection attempt.
const RECONNECT_PAUSE: Duration = Duration::from_millis(200);

/// Senders to every peer.
pub struct Transport {
    peers: HashMap<u64, flume::Sender<Bytes>>,
}

impl Transport {
    /// Connections (made lazily) to `peers` from the local address `source` (in TLS when `tls`),
    /// each opened with `hello`.
    pub fn new(
        peers: HashMap<u64, SocketAddr>,
        hello: Hello,
        source: Option<IpAddr>,
        tls: Option<ControllerTlsSource>,
    ) -> Self {
        let hello = json_frame(FrameKind::Hello, &hello);
        let peers = peers
            .into_iter()
            .map(|(id, addr)| {
                let (tx, rx) = flume::bounded(PEER_QUEUE);
                io::spawn_detached(peer_writer(addr, source, tls.clone(), hello.clone(), rx));
                (id, tx)
            })
            .collect();
        Self { peers }
    }

    /// Sends each message to its peer (dropping those that cannot be queued).
    pub fn send(&self, messages: Vec<Message>) {
        for message in messages {
            let Some(peer) = self.peers.get(&message.to) else { continue };
            match message.write_to_bytes() {
                Ok(bytes) => {
                    let _ = peer.try_send(frame(FrameKind::Raft, &bytes));
                }
                Err(err) => tracing::error!(error = %err, "raft message does not encode"),
            }
        }
    }
}

/// Keeps a connection to `addr` open while there is something to send, writing queued frames.
async fn peer_writer(
    addr: SocketAddr,
    source: Option<IpAddr>,
    tls: Option<ControllerTlsSource>,
    hello: Bytes,
    queue: flume::Receiver<Bytes>,
) {
    let mut connected: Option<io::net::Stream> = None;
    while let Some(batch) = io::net::next_frames(&queue).await {
        if connected.is_none() {
            match io::timeout(CONNECT_TIMEOUT, dial(addr, source, tls.as_ref())).await {
                Some(Ok(stream)) => {
                    let mut stream = stream;
                    if stream.write_all(vec![hello.clone()]).await.is_ok() {
                        connected = Some(stream);
                    }
                }
                _ => {
                    io::sleep(RECONNECT_PAUSE).await;
                    continue; // the batch is dropped; Raft will resend
                }
            }
        }
        if let Some(stream) = connected.as_mut()
            && stream.write_all(batch).await.is_err()
        {
            connected = None;
        }
    }
}
