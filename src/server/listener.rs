//! Binding listening sockets with the options a daemon wants: SO_REUSEADDR
//! (restart without waiting out TIME_WAIT), IPV6_V6ONLY (an IPv6 listener
//! never steals IPv4 traffic from an IPv4 one), a deep backlog, and
//! SO_REUSEPORT or a bigger SO_RCVBUF only when asked for.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

use crate::config::ListenerConfig;

const BACKLOG: i32 = 1024;

fn socket_for(addr: &SocketAddr, ty: Type, proto: Protocol, l: &ListenerConfig) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(*addr), ty, Some(proto))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    if l.reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.set_cloexec(true)?;
    Ok(socket)
}

pub fn bind_tcp(l: &ListenerConfig) -> io::Result<mio::net::TcpListener> {
    let socket = socket_for(&l.address, Type::STREAM, Protocol::TCP, l)?;
    socket.bind(&l.address.into())?;
    socket.listen(BACKLOG)?;
    Ok(mio::net::TcpListener::from_std(socket.into()))
}

pub fn bind_udp(l: &ListenerConfig) -> io::Result<mio::net::UdpSocket> {
    let socket = socket_for(&l.address, Type::DGRAM, Protocol::UDP, l)?;
    if let Some(size) = l.recv_buffer {
        socket.set_recv_buffer_size(size)?;
        // Linux clamps the request to net.core.rmem_max (and reports
        // double the usable size): say what was really granted.
        let granted = socket.recv_buffer_size()?;
        log::info!(
            "udp {}: receive buffer {} bytes asked, {} granted",
            l.address,
            size,
            granted
        );
    }
    socket.bind(&l.address.into())?;
    Ok(mio::net::UdpSocket::from_std(socket.into()))
}
