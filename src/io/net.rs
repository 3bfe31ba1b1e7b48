//! Sockets over io_uring.
//!
//! Ownership: a [`TcpStream`] lives on the shard that accepted (or opened) it; cloning it gives a
//! second handle to the same socket on the same shard, which is how a connection's reader and
//! writer halves run as separate tasks.

use std::io;
use std::net::SocketAddr;

pub use compio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
pub use compio::net::{TcpListener, TcpStream};

/// Opens a listening socket with `SO_REUSEPORT`, so every shard can bind the same address and the
/// kernel spreads incoming connections over them.
pub fn reuseport_listener(addr: SocketAddr, backlog: i32) -> io::Result<TcpListener> {
    TcpListener::from_std(reuseport_socket(addr, backlog)?)
}

/// A plain (blocking) listener in the same SO_REUSEPORT group, for reserving a port.
pub fn reuseport_std_listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    reuseport_socket(addr, 1)
}

fn reuseport_socket(addr: SocketAddr, backlog: i32) -> io::Result<std::net::TcpListener> {
    let domain = if addr.is_ipv4() { socket2::Domain::IPV4 } else { socket2::Domain::IPV6 };
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_cloexec(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(socket.into())
}

/// Connects to `addr` from the current shard.
pub async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}
