//! Sockets over io_uring, behind a transport seam.
//!
//! [`Stream`] is what every connection reads and writes through: plain TCP, or TLS (a rustls
//! session over TCP, its records pumped here), behind the same methods, so nothing above this
//! module knows which one it has. [`FramedReader`] cuts a stream into Kafka's size-prefixed
//! frames.
//!
//! Ownership: a [`Stream`] lives on the shard that accepted (or opened) it; cloning it gives a
//! second handle to the same socket on the same shard, which is how a connection's reader and
//! writer halves run as separate tasks.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use compio::BufResult;
use compio::buf::{IntoInner, IoBufMut};
use compio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use compio::net::{TcpListener, TcpStream};

use super::budget::Permit;

/// Most buffers handed to one vectored write (IOV_MAX is 1024).
const MAX_IOVECS_PER_WRITE: usize = 512;
/// Bytes asked of the socket per read at least, so small frames arrive several per read.
const READ_CHUNK_BYTES: usize = 64 * 1024;

#[derive(Clone)]
enum Kind {
    Plain(TcpStream),
    Tls(Rc<TlsState>),
}

/// Ciphertext bytes read from the socket per read, at most.
const TLS_READ_BYTES: usize = 64 * 1024;
/// Plaintext bytes encrypted before their records are sent.
const TLS_WRITE_CHUNK: usize = 256 * 1024;

/// A TLS session over a socket, shared by a connection's reader and writer tasks (on one shard:
/// the session is borrowed only between awaits). Writes to the socket take `writing`, so the
/// reader's handshake or alert records never interleave with the writer's.
struct TlsState {
    tcp: TcpStream,
    session: RefCell<rustls::Connection>,
    /// Ciphertext read but not yet taken by the session.
    pending: RefCell<BytesMut>,
    writing: futures_util::lock::Mutex<()>,
}

impl TlsState {
    /// Sends every record the session has queued (handshake, data, alerts).
    async fn flush(&self) -> io::Result<()> {
        let _writing = self.writing.lock().await;
        self.flush_locked().await
    }

    async fn flush_locked(&self) -> io::Result<()> {
        loop {
            let mut out = Vec::new();
            {
                let mut session = self.session.borrow_mut();
                while session.wants_write() && out.len() < TLS_WRITE_CHUNK {
                    session.write_tls(&mut out)?;
                }
            }
            if out.is_empty() {
                return Ok(());
            }
            let mut tcp = self.tcp.clone();
            let BufResult(result, _) = tcp.write_all(out).await;
            result?;
        }
    }

    /// Feeds pending ciphertext to the session. An invalid record queues an alert, sent before
    /// the error is returned.
    async fn feed(&self) -> io::Result<()> {
        let failed = {
            let mut session = self.session.borrow_mut();
            let mut pending = self.pending.borrow_mut();
            let mut failed = None;
            loop {
                match session.process_new_packets() {
                    // Plaintext waiting is read first (the session holds little of it).
                    Ok(state) if state.plaintext_bytes_to_read() > 0 || state.peer_has_closed() => break,
                    Ok(_) => {}
                    Err(err) => {
                        failed = Some(io::Error::new(io::ErrorKind::InvalidData, err));
                        break;
                    }
                }
                if pending.is_empty() {
                    break;
                }
                let mut rest: &[u8] = &pending;
                match session.read_tls(&mut rest) {
                    Ok(0) => break,
                    Ok(taken) => drop(pending.split_to(taken)),
                    Err(err) => {
                        failed = Some(err);
                        break;
                    }
                }
            }
            failed
        };
        if let Some(err) = failed {
            let _ = self.flush().await;
            return Err(err);
        }
        if self.session.borrow().wants_write() {
            self.flush().await?;
        }
        Ok(())
    }

    /// Reads more ciphertext from the socket; false at end of stream.
    async fn read_more(&self) -> io::Result<bool> {
        let mut buf = std::mem::take(&mut *self.pending.borrow_mut());
        buf.reserve(TLS_READ_BYTES);
        let mut tcp = self.tcp.clone();
        let BufResult(result, buf) = tcp.read(buf.uninit()).await;
        let buf = buf.into_inner();
        let empty = buf.is_empty();
        *self.pending.borrow_mut() = buf;
        match result {
            Ok(0) if empty => Ok(false),
            Ok(_) => Ok(true),
            Err(err) => Err(err),
        }
    }

    /// Runs the handshake to its end.
    async fn handshake(&self) -> io::Result<()> {
        loop {
            self.feed().await?;
            self.flush().await?;
            if !self.session.borrow().is_handshaking() {
                return Ok(());
            }
            if !self.read_more().await? {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the peer closed during the TLS handshake"));
            }
        }
    }

    /// Decrypted bytes into `buf`'s spare capacity; `Ok(0)` at the end of the stream.
    async fn read_into(&self, buf: &mut BytesMut) -> io::Result<usize> {
        loop {
            self.feed().await?;
            {
                let mut session = self.session.borrow_mut();
                let start = buf.len();
                let room = (buf.capacity() - start).clamp(1, TLS_READ_BYTES);
                buf.resize(start + room, 0);
                let read = std::io::Read::read(&mut session.reader(), &mut buf[start..]);
                buf.truncate(start + *read.as_ref().unwrap_or(&0));
                match read {
                    Ok(n) => return Ok(n),
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                    Err(err) => return Err(err),
                }
            }
            if !self.read_more().await? {
                return Ok(0);
            }
        }
    }

    /// Encrypts and sends `bufs`, in order.
    async fn write_all(&self, bufs: Vec<Bytes>) -> io::Result<()> {
        let _writing = self.writing.lock().await;
        let mut queued = 0usize;
        for buf in bufs {
            let mut rest: &[u8] = &buf;
            while !rest.is_empty() {
                let n = std::io::Write::write(&mut self.session.borrow_mut().writer(), rest)?;
                rest = &rest[n..];
                queued += n;
                if n == 0 || queued >= TLS_WRITE_CHUNK {
                    self.flush_locked().await?;
                    queued = 0;
                }
            }
        }
        self.flush_locked().await
    }
}

/// Frames a writer takes from its queue per vectored write, at most.
const FRAMES_PER_WRITE: usize = 256;

/// The next frames to write: waits for one, then takes whatever else is queued (up to
/// [`FRAMES_PER_WRITE`]). `None` once the queue is closed and empty.
pub async fn next_frames(queue: &flume::Receiver<Bytes>) -> Option<Vec<Bytes>> {
    let first = queue.recv_async().await.ok()?;
    let mut batch = vec![first];
    while batch.len() < FRAMES_PER_WRITE {
        match queue.try_recv() {
            Ok(frame) => batch.push(frame),
            Err(_) => break,
        }
    }
    Some(batch)
}

/// Writes queued frames to `stream`, as many per write as are waiting, until the queue closes
/// or a write fails.
pub async fn write_queued(stream: &mut Stream, queue: &flume::Receiver<Bytes>) {
    while let Some(batch) = next_frames(queue).await {
        if stream.write_all(batch).await.is_err() {
            break;
        }
    }
}

/// A connection's byte stream (the transport seam).
#[derive(Clone)]
pub struct Stream {
    kind: Kind,
}

impl Stream {
    fn plain(tcp: TcpStream) -> io::Result<Self> {
        tcp.set_nodelay(true)?;
        Ok(Self { kind: Kind::Plain(tcp) })
    }

    /// Starts a TLS session with `session` (a rustls server or client connection) over `tcp`,
    /// and returns once its handshake is done.
    async fn tls(tcp: TcpStream, session: rustls::Connection) -> io::Result<Self> {
        tcp.set_nodelay(true)?;
        let state = Rc::new(TlsState {
            tcp,
            session: RefCell::new(session),
            pending: RefCell::new(BytesMut::new()),
            writing: futures_util::lock::Mutex::new(()),
        });
        state.handshake().await?;
        Ok(Self { kind: Kind::Tls(state) })
    }

    /// Turns this plain stream into a TLS one, once the handshake is done: a server session
    /// answers the peer's handshake, a client session starts it and checks the server's
    /// certificate as it was configured to.
    pub async fn start_tls(self, session: impl Into<rustls::Connection>) -> io::Result<Self> {
        match self.kind {
            Kind::Plain(tcp) => Self::tls(tcp, session.into()).await,
            Kind::Tls(_) => Err(io::Error::other("the stream is TLS already")),
        }
    }

    /// The certificates the TLS peer presented, its own first (none on a plain stream).
    pub fn peer_certificates(&self) -> Vec<Vec<u8>> {
        match &self.kind {
            Kind::Plain(_) => Vec::new(),
            Kind::Tls(state) => state
                .session
                .borrow()
                .peer_certificates()
                .map(|certs| certs.iter().map(|c| c.as_ref().to_vec()).collect())
                .unwrap_or_default(),
        }
    }

    /// Reads what the peer has sent into the spare capacity of `buf` (after its current
    /// contents); `Ok(0)` means the peer closed.
    pub async fn read_into(&mut self, mut buf: BytesMut) -> (io::Result<usize>, BytesMut) {
        match &mut self.kind {
            Kind::Tls(state) => {
                let result = state.read_into(&mut buf).await;
                (result, buf)
            }
            Kind::Plain(tcp) => {
                // `read` fills a buffer from its start; `uninit()` aims it past what is there.
                let BufResult(result, buf) = tcp.read(buf.uninit()).await;
                (result, buf.into_inner())
            }
        }
    }

    /// Writes every buffer, in order, with as few vectored writes as the kernel allows.
    pub async fn write_all(&mut self, mut bufs: Vec<Bytes>) -> io::Result<()> {
        while !bufs.is_empty() {
            let rest =
                if bufs.len() > MAX_IOVECS_PER_WRITE { bufs.split_off(MAX_IOVECS_PER_WRITE) } else { Vec::new() };
            match &mut self.kind {
                Kind::Plain(tcp) => {
                    let BufResult(result, _) = tcp.write_vectored_all(bufs).await;
                    result?;
                }
                Kind::Tls(state) => state.write_all(bufs).await?,
            }
            bufs = rest;
        }
        Ok(())
    }

    /// Closes the sending side (the peer reads end of stream).
    pub async fn shutdown(&mut self) {
        match &mut self.kind {
            Kind::Plain(tcp) => {
                let _ = tcp.shutdown().await;
            }
            Kind::Tls(state) => {
                state.session.borrow_mut().send_close_notify();
                let _ = state.flush().await;
                let _ = state.tcp.clone().shutdown().await;
            }
        }
    }
}

/// A listening socket that hands out [`Stream`]s.
pub struct Listener {
    tcp: TcpListener,
}

impl Listener {
    /// Serves connections of a listening socket opened elsewhere (on the calling shard).
    pub fn from_std(listener: std::net::TcpListener) -> io::Result<Self> {
        Ok(Self { tcp: TcpListener::from_std(listener)? })
    }

    /// The next connection and its peer address.
    pub async fn accept(&self) -> io::Result<(Stream, SocketAddr)> {
        let (tcp, peer) = self.tcp.accept().await?;
        Ok((Stream::plain(tcp)?, peer))
    }
}

/// Opens a listening socket with `SO_REUSEPORT`, so every shard can bind the same address and the
/// kernel spreads incoming connections over them.
pub fn reuseport_listener(addr: SocketAddr, backlog: i32) -> io::Result<Listener> {
    Ok(Listener { tcp: TcpListener::from_std(reuseport_socket(addr, backlog)?)? })
}

/// A plain (blocking) listener in the same SO_REUSEPORT group, for reserving a port.
pub fn reuseport_std_listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    reuseport_socket(addr, 1)
}

/// A plain listening socket of this process alone (no `SO_REUSEPORT`: a second process binding
/// the same address fails instead of sharing it).
pub fn exclusive_std_listener(addr: SocketAddr, backlog: i32) -> io::Result<std::net::TcpListener> {
    listening_socket(addr, backlog, false)
}

/// [`exclusive_std_listener`], waiting up to `patience` while the address is in use: a node
/// restarted at once after a crash can find its fixed port still held for a moment by the dead
/// process's sockets (an io_uring instance is torn down after its process has exited).
pub fn exclusive_std_listener_patient(
    addr: SocketAddr,
    backlog: i32,
    patience: std::time::Duration,
) -> io::Result<std::net::TcpListener> {
    let deadline = std::time::Instant::now() + patience;
    let mut warned = false;
    loop {
        match exclusive_std_listener(addr, backlog) {
            Err(err) if err.kind() == io::ErrorKind::AddrInUse && std::time::Instant::now() < deadline => {
                if !std::mem::replace(&mut warned, true) {
                    tracing::warn!(%addr, "address in use; waiting for it to be released");
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            other => return other,
        }
    }
}

fn reuseport_socket(addr: SocketAddr, backlog: i32) -> io::Result<std::net::TcpListener> {
    listening_socket(addr, backlog, true)
}

fn listening_socket(addr: SocketAddr, backlog: i32, reuse_port: bool) -> io::Result<std::net::TcpListener> {
    let domain = if addr.is_ipv4() { socket2::Domain::IPV4 } else { socket2::Domain::IPV6 };
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(reuse_port)?;
    socket.set_cloexec(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(socket.into())
}

/// Connects to `addr` from the current shard.
pub async fn connect(addr: SocketAddr) -> io::Result<Stream> {
    Stream::plain(TcpStream::connect(addr).await?)
}

/// Connects to `addr` from the local address `source` (the node's own address on a host with
/// several), or from whatever address the kernel picks when `None`.
pub async fn connect_from(addr: SocketAddr, source: Option<std::net::IpAddr>) -> io::Result<Stream> {
    let Some(source) = source.filter(|ip| !ip.is_unspecified()) else { return connect(addr).await };
    let socket = if source.is_ipv4() {
        compio::net::TcpSocket::new_v4().await?
    } else {
        compio::net::TcpSocket::new_v6().await?
    };
    socket.bind(SocketAddr::new(source, 0)).await?;
    Stream::plain(socket.connect(addr).await?)
}

/// Why a stream of frames cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// Socket error.
    #[error("socket error: {0}")]
    Io(#[from] io::Error),
    /// The peer closed in the middle of a frame.
    #[error("connection closed in the middle of a frame")]
    Truncated,
    /// Size field above the limit.
    #[error("frame of {size} bytes exceeds the {limit}-byte limit")]
    TooLarge {
        /// Claimed size.
        size: i64,
        /// Limit that applied.
        limit: usize,
    },
    /// Size field too small for what must follow it.
    #[error("frame size {0} is too small")]
    TooSmall(i64),
}

impl FrameError {
    /// True when the peer simply went away (reset), which is not worth a warning.
    pub fn is_reset(&self) -> bool {
        matches!(self, Self::Io(e) if e.kind() == io::ErrorKind::ConnectionReset)
    }
}

/// How a [`FramedReader`] bounds frames.
#[derive(Clone, Copy, Debug)]
pub struct FrameRules {
    /// Smallest valid size.
    pub min_bytes: usize,
    /// Bytes after the size field to look at before choosing the limit (e.g. a request's API key).
    pub peek_bytes: usize,
}

/// Reads 4-byte size-prefixed frames from a stream into one buffer, splitting each frame off it
/// without a copy. A frame's size is checked against its limit before any of it is buffered.
pub struct FramedReader {
    stream: Stream,
    buf: BytesMut,
}

impl FramedReader {
    /// Reads from `stream`.
    pub fn new(stream: Stream) -> Self {
        Self { stream, buf: BytesMut::with_capacity(READ_CHUNK_BYTES) }
    }

    /// Reads until the buffer holds at least `want` bytes; false on a clean EOF before any byte
    /// of a new frame. The buffer grows as bytes arrive (doubling from one read chunk), never to
    /// a size a peer merely claims; `permit`, when given, first holds what each growth adds.
    async fn fill(&mut self, want: usize, mut permit: Option<&mut Permit>) -> Result<bool, FrameError> {
        while self.buf.len() < want {
            if self.buf.capacity() == self.buf.len() {
                let step = (want - self.buf.len()).min(self.buf.len().max(READ_CHUNK_BYTES));
                if let Some(permit) = permit.as_deref_mut() {
                    let needed = (self.buf.len() + step).min(want);
                    if needed > permit.bytes() {
                        permit.grow(needed - permit.bytes()).await;
                    }
                }
                self.buf.reserve(step);
            }
            let (result, buf) = self.stream.read_into(std::mem::take(&mut self.buf)).await;
            self.buf = buf;
            match result {
                Ok(0) if self.buf.is_empty() => return Ok(false),
                Ok(0) => return Err(FrameError::Truncated),
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err.into()),
            }
        }
        Ok(true)
    }

    /// The next frame without its size field, or `None` when the peer closed between frames.
    /// `limit` sees the first `rules.peek_bytes` bytes after the size and returns the largest
    /// size allowed for this frame.
    pub async fn next(
        &mut self,
        rules: FrameRules,
        limit: impl Fn(&[u8]) -> usize,
    ) -> Result<Option<BytesMut>, FrameError> {
        let Some(size) = self.next_size(rules, limit).await? else { return Ok(None) };
        self.read_frame(size, None).await.map(Some)
    }

    /// The size of the next frame, once its size field and the bytes `limit` looks at have
    /// arrived and passed; `None` when the peer closed between frames. [`FramedReader::read_frame`]
    /// reads the rest.
    pub async fn next_size(
        &mut self,
        rules: FrameRules,
        limit: impl Fn(&[u8]) -> usize,
    ) -> Result<Option<usize>, FrameError> {
        if !self.fill(4, None).await? {
            return Ok(None);
        }
        let size = i64::from(i32::from_be_bytes(self.buf[..4].try_into().expect("4 bytes")));
        if size < rules.min_bytes.max(rules.peek_bytes) as i64 {
            return Err(FrameError::TooSmall(size));
        }
        if !self.fill(4 + rules.peek_bytes, None).await? {
            return Err(FrameError::Truncated);
        }
        let limit = limit(&self.buf[4..4 + rules.peek_bytes]);
        if size > limit as i64 {
            return Err(FrameError::TooLarge { size, limit });
        }
        Ok(Some(size as usize))
    }

    /// The frame of `size` bytes announced by [`FramedReader::next_size`], without its size
    /// field; its bytes are held in `permit` (when given) as they arrive.
    pub async fn read_frame(&mut self, size: usize, permit: Option<&mut Permit>) -> Result<BytesMut, FrameError> {
        let total = 4 + size;
        if !self.fill(total, permit).await? {
            return Err(FrameError::Truncated);
        }
        let mut frame = self.buf.split_to(total);
        let _ = frame.split_to(4);
        Ok(frame)
    }
}
