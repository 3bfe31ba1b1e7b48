//! A small HTTP/1.1 server for operator endpoints, on its own thread and runtime so that no
//! shard ever waits on it. hyper parses and writes HTTP (bounded request head, 431 for one
//! that is too large); this module carries its bytes over a runtime socket (in TLS when given a
//! configuration: HTTPS), serves connections concurrently up to a limit, and closes any
//! connection that outstays its time, handshake included (a client trickling bytes holds only
//! its own connection, and not for long).
//!
//! Ownership: the server thread owns the listener and every connection task.

use std::cell::Cell;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use compio::io::compat::AsyncStream;
use compio::net::{TcpListener, TcpStream};
use http_body_util::Full;

use super::Throttled;

/// What a handler answers: status code, content type, body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpAnswer {
    /// The status code.
    pub status: u16,
    /// The `Content-Type`.
    pub content_type: &'static str,
    /// The body.
    pub body: String,
}

/// Answers a GET of a path. Runs on a blocking-pool thread (it may wait on shards).
pub type HttpHandler = Arc<dyn Fn(&str) -> HttpAnswer + Send + Sync>;

/// The TLS configuration to serve each new connection with (asked per connection, so a
/// renewed certificate is used from the next one on); `Err` refuses the connection.
pub type TlsSource = Arc<
    dyn Fn() -> futures_util::future::LocalBoxFuture<'static, Result<Arc<rustls::ServerConfig>, String>> + Send + Sync,
>;

/// How much one server takes.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Connections served at once; more are closed as they come.
    pub max_connections: usize,
    /// The largest request head (request line and headers) read.
    pub max_head_bytes: usize,
    /// How long a connection may take, from accept to the answer written.
    pub connection_time: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self { max_connections: 64, max_head_bytes: 16 * 1024, connection_time: Duration::from_secs(10) }
    }
}

/// Serves `handler` on `listener` from a thread named `name`, until the process ends.
pub fn spawn_http_server(
    name: &str,
    listener: std::net::TcpListener,
    limits: HttpLimits,
    handler: HttpHandler,
    tls: Option<TlsSource>,
) -> io::Result<()> {
    std::thread::Builder::new().name(name.to_owned()).spawn(move || {
        let runtime = match super::new_runtime() {
            Ok(runtime) => runtime,
            Err(err) => {
                tracing::error!(error = %err, "HTTP endpoint: no runtime");
                return;
            }
        };
        runtime.block_on(serve(listener, limits, handler, tls));
    })?;
    Ok(())
}

async fn serve(listener: std::net::TcpListener, limits: HttpLimits, handler: HttpHandler, tls: Option<TlsSource>) {
    let listener = match listener.set_nonblocking(true).and_then(|()| TcpListener::from_std(listener)) {
        Ok(listener) => listener,
        Err(err) => {
            tracing::error!(error = %err, "HTTP endpoint: cannot listen");
            return;
        }
    };
    let active = Rc::new(Cell::new(0usize));
    let (mut accept_errors, mut refusals) = (Throttled::default(), Throttled::default());
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                if let Some(suppressed) = accept_errors.due() {
                    tracing::warn!(error = %err, suppressed, "HTTP endpoint: accept failed");
                }
                // Out of descriptors, say: give the others a moment to close theirs.
                super::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if active.get() >= limits.max_connections {
            if let Some(suppressed) = refusals.due() {
                tracing::warn!(%peer, limit = limits.max_connections, suppressed, "HTTP endpoint: too many connections, closing");
            }
            continue;
        }
        active.set(active.get() + 1);
        let (active, handler, tls) = (active.clone(), handler.clone(), tls.clone());
        super::spawn_detached(async move {
            let served = serve_connection(stream, peer, limits, handler, tls);
            if super::timeout(limits.connection_time, served).await.is_none() {
                tracing::debug!(%peer, "HTTP endpoint: connection outstayed its time");
            }
            active.set(active.get() - 1);
        });
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    limits: HttpLimits,
    handler: HttpHandler,
    tls: Option<TlsSource>,
) {
    let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
        let handler = handler.clone();
        async move {
            let path = request.uri().path().to_owned();
            let answer = if request.method() == hyper::Method::GET {
                super::blocking(move || handler(&path)).await.unwrap_or_else(|err| HttpAnswer {
                    status: 500,
                    content_type: "text/plain",
                    body: format!("{err}\n"),
                })
            } else {
                HttpAnswer { status: 405, content_type: "text/plain", body: "GET only\n".to_owned() }
            };
            let response = hyper::Response::builder()
                .status(answer.status)
                .header(hyper::header::CONTENT_TYPE, answer.content_type)
                .body(Full::new(Bytes::from(answer.body)))
                .expect("a status code and a static header are valid");
            Ok::<_, Infallible>(response)
        }
    });
    let stream = Box::pin(AsyncStream::new(stream));
    let io = match tls {
        None => HyperStream::Plain(stream),
        Some(tls) => {
            let config = match tls().await {
                Ok(config) => config,
                Err(err) => {
                    tracing::warn!(%peer, error = %err, "HTTP endpoint: no TLS configuration, closing");
                    return;
                }
            };
            match futures_rustls::TlsAcceptor::from(config).accept(stream).await {
                Ok(tls) => HyperStream::Tls(Box::pin(tls)),
                Err(err) => {
                    tracing::debug!(%peer, error = %err, "HTTP endpoint: TLS handshake failed");
                    return;
                }
            }
        }
    };
    let connection = hyper::server::conn::http1::Builder::new()
        .max_buf_size(limits.max_head_bytes)
        .keep_alive(false)
        .serve_connection(io, service);
    if let Err(err) = connection.await {
        tracing::debug!(error = %err, "HTTP endpoint: connection ended with an error");
    }
}

/// A runtime socket through the futures I/O traits.
type Socket = Pin<Box<AsyncStream<TcpStream>>>;

/// A runtime socket, plain or in TLS, seen through hyper's I/O traits.
enum HyperStream {
    Plain(Socket),
    Tls(Pin<Box<futures_rustls::server::TlsStream<Socket>>>),
}

impl hyper::rt::Read for HyperStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let read = match self.get_mut() {
            // SAFETY: `poll_read_uninit` only writes into the slice, and says how many bytes it
            // initialized; nothing here reads the uninitialized rest.
            Self::Plain(stream) => ready!(stream.as_mut().poll_read_uninit(cx, unsafe { buf.as_mut() }))?,
            Self::Tls(stream) => {
                // SAFETY: every byte is initialized (zeroed) before the slice is read as bytes.
                let room = unsafe { buf.as_mut() };
                room.fill(std::mem::MaybeUninit::new(0));
                // SAFETY: `room` is initialized just above; `MaybeUninit<u8>` has `u8`'s layout.
                let bytes = unsafe { &mut *(std::ptr::from_mut(room) as *mut [u8]) };
                ready!(futures_util::AsyncRead::poll_read(stream.as_mut(), cx, bytes))?
            }
        };
        // SAFETY: the first `read` bytes of the cursor were just initialized.
        unsafe { buf.advance(read) };
        Poll::Ready(Ok(()))
    }
}

impl hyper::rt::Write for HyperStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(stream) => futures_util::AsyncWrite::poll_write(stream.as_mut(), cx, buf),
            Self::Tls(stream) => futures_util::AsyncWrite::poll_write(stream.as_mut(), cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => futures_util::AsyncWrite::poll_flush(stream.as_mut(), cx),
            Self::Tls(stream) => futures_util::AsyncWrite::poll_flush(stream.as_mut(), cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => futures_util::AsyncWrite::poll_close(stream.as_mut(), cx),
            Self::Tls(stream) => futures_util::AsyncWrite::poll_close(stream.as_mut(), cx),
        }
    }
}

/// Binds `addr` for an HTTP endpoint (exclusively: a second broker's endpoint fails to start).
pub fn http_listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    super::net::exclusive_std_listener(addr, 128)
}
