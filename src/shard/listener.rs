//! The listening sockets: one per shard, all bound to the same address with SO_REUSEPORT so the kernel
//! spreads incoming connections over the shards and each shard accepts on its own.

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

/// Pending connections the kernel keeps per listening socket.
pub const LISTEN_BACKLOG: i32 = 4096;

/// Caps on the kernel buffers of every accepted socket (`None`: the kernel's default). Set on the listening
/// sockets, which accepted sockets inherit them from, so they apply from the handshake on.
#[derive(Clone, Copy, Debug, Default)]
pub struct SocketBufferCaps {
    pub send_bytes: Option<u32>,
    pub recv_bytes: Option<u32>,
}

/// Binds `shards` listening sockets on `addr`. With port 0 the first socket picks the port and the others
/// bind that same port. Returns the sockets (element `i` for shard `i`) and the address actually bound.
pub fn bind_reuseport(
    addr: SocketAddr,
    shards: usize,
    caps: SocketBufferCaps,
) -> io::Result<(Vec<TcpListener>, SocketAddr)> {
    let first = bind_one(addr, caps)?;
    let bound = first.local_addr()?;
    let mut listeners = vec![first];
    for _ in 1..shards {
        listeners.push(bind_one(bound, caps)?);
    }
    Ok((listeners, bound))
}

fn bind_one(addr: SocketAddr, caps: SocketBufferCaps) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if let Some(bytes) = caps.send_bytes {
        socket.set_send_buffer_size(bytes as usize)?;
    }
    if let Some(bytes) = caps.recv_bytes {
        socket.set_recv_buffer_size(bytes as usize)?;
    }
    socket.bind(&addr.into()).map_err(|err| io::Error::new(err.kind(), format!("cannot bind {addr}: {err}")))?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_zero_gives_every_shard_the_same_real_port() {
        let (listeners, bound) =
            bind_reuseport("127.0.0.1:0".parse().unwrap(), 3, SocketBufferCaps::default()).unwrap();
        assert_ne!(bound.port(), 0);
        assert_eq!(listeners.len(), 3);
        for listener in &listeners {
            assert_eq!(listener.local_addr().unwrap(), bound);
        }
        // The kernel hands a connection to one of the sockets of the group.
        let _client = std::net::TcpStream::connect(bound).unwrap();
        for listener in &listeners {
            listener.set_nonblocking(true).unwrap();
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !listeners.iter().any(|listener| listener.accept().is_ok()) {
            assert!(std::time::Instant::now() < deadline, "no listener got the connection");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    #[test]
    fn accepted_sockets_inherit_the_buffer_caps() {
        let caps = SocketBufferCaps { send_bytes: Some(8192), recv_bytes: Some(4096) };
        let (listeners, bound) = bind_reuseport("127.0.0.1:0".parse().unwrap(), 1, caps).unwrap();
        let _client = std::net::TcpStream::connect(bound).unwrap();
        let (accepted, _) = listeners[0].accept().unwrap();
        let accepted = socket2::SockRef::from(&accepted);
        // Linux doubles the value asked for (bookkeeping overhead) and reports the doubled size.
        assert_eq!(accepted.send_buffer_size().unwrap(), 2 * 8192);
        assert_eq!(accepted.recv_buffer_size().unwrap(), 2 * 4096);
    }

    #[test]
    fn a_port_in_use_without_reuseport_is_an_error_naming_the_address() {
        let plain = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = plain.local_addr().unwrap();
        let err = bind_reuseport(addr, 1, SocketBufferCaps::default()).unwrap_err();
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
    }
}
