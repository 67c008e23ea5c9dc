//! Loopback ports and addresses: a port free for both TCP and UDP, and TCP
//! connections from a chosen local address, which is how one machine plays
//! several clients (Linux answers for all of 127.0.0.0/8).

use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

/// How long a connection attempt may take: on loopback a connect either
/// completes at once or the listener's backlog is full, and then it is
/// better to fail than to wait out the kernel's SYN retries.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A port of 127.0.0.1 free for both TCP and UDP right now.
pub fn free_port() -> io::Result<u16> {
    for _ in 0..100 {
        let tcp = TcpListener::bind("127.0.0.1:0")?;
        let port = tcp.local_addr()?.port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err(io::Error::other("no loopback port free for both TCP and UDP"))
}

/// A port of ::1 free for both TCP and UDP, or None when ::1 cannot be
/// bound on this machine (IPv6 disabled).
pub fn free_port_v6() -> Option<u16> {
    for _ in 0..100 {
        let tcp = TcpListener::bind((Ipv6Addr::LOCALHOST, 0)).ok()?;
        let port = tcp.local_addr().ok()?.port();
        if UdpSocket::bind((Ipv6Addr::LOCALHOST, port)).is_ok() {
            return Some(port);
        }
    }
    None
}

/// A blocking TCP connection to `to` from the local address `from` (a port
/// the kernel picks), given up after [`CONNECT_TIMEOUT`].
pub fn connect_from(from: IpAddr, to: SocketAddr) -> io::Result<TcpStream> {
    connect_from_within(from, to, CONNECT_TIMEOUT)
}

/// [`connect_from`], given up after `timeout` (a full listen backlog drops
/// the SYN: the kernel would retry it for seconds).
pub fn connect_from_within(from: IpAddr, to: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(to), Type::STREAM, Some(Protocol::TCP))?;
    s.bind(&SocketAddr::new(from, 0).into())?;
    s.connect_timeout(&to.into(), timeout)?;
    Ok(s.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn a_free_port_can_be_bound_for_tcp_and_udp() {
        let port = free_port().unwrap();
        let _tcp = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let _udp = UdpSocket::bind(("127.0.0.1", port)).unwrap();
    }

    #[test]
    fn connections_come_from_the_address_asked_for() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let from = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
        let c = connect_from(from, l.local_addr().unwrap()).unwrap();
        assert_eq!(c.local_addr().unwrap().ip(), from);
        let (_, peer) = l.accept().unwrap();
        assert_eq!(peer.ip(), from);
    }
}
