//! Binding listening sockets with the options a daemon wants: SO_REUSEADDR
//! (restart without waiting out TIME_WAIT), IPV6_V6ONLY (an IPv6 listener
//! never steals IPv4 traffic from an IPv4 one), a deep backlog, and
//! SO_REUSEPORT or a bigger SO_RCVBUF only when asked for.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::OwnedFd;
use std::sync::Arc;

use socket2::{Domain, Protocol, Socket, Type};

use crate::config::{Config, ListenerConfig, Proto};
use crate::ops::{OPS, lookup};

/// The kernel caps it at net.core.somaxconn (4096 by default).
const BACKLOG: i32 = 4096;

fn socket_for(addr: &SocketAddr, ty: Type, proto: Protocol, l: &ListenerConfig) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(*addr), ty, Some(proto))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    // For TCP, SO_REUSEADDR only lets a restart bind past TIME_WAIT. For
    // UDP it would let a second daemon share the port and steal its
    // datagrams, so a busy UDP port must fail instead.
    if ty == Type::STREAM {
        socket.set_reuse_address(true)?;
    }
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

/// What a listener's clients are served under. Connections keep the
/// settings they were accepted with: a reload applies new `allow` and
/// `ops` to new clients only.
pub struct ListenerSettings {
    pub cfg: ListenerConfig,
    /// By OpId: enabled and in this listener's `ops`.
    pub allowed: Vec<bool>,
    /// `ops.pi.max_samples`, or `udp_max_samples` for UDP.
    pub max_samples: u64,
    /// `tls` and `https`: the certificates, read when the settings were made.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl ListenerSettings {
    /// Fails when a TLS listener's certificates cannot be loaded.
    pub fn new(cfg: &Config, l: ListenerConfig) -> Result<ListenerSettings, String> {
        let allowed = (0..OPS.len())
            .map(|id| cfg.op_enabled(id) && l.ops.as_ref().is_none_or(|list| list.contains(&id)))
            .collect();
        let pi = lookup("pi").unwrap_or(0);
        let key = if l.proto == Proto::Udp {
            "udp_max_samples"
        } else {
            "max_samples"
        };
        let tls = if l.proto.is_tls() {
            Some(crate::tls::server_config(&l)?)
        } else {
            None
        };
        Ok(ListenerSettings {
            allowed,
            max_samples: cfg.op_limit(pi, key),
            tls,
            cfg: l,
        })
    }

    /// Whether the listener speaks HTTP (plain or inside TLS) rather than
    /// the line protocol.
    pub fn is_http(&self) -> bool {
        matches!(self.cfg.proto, Proto::Http | Proto::Https)
    }

    /// Whether `allow` admits a client.
    pub fn admits(&self, ip: IpAddr) -> bool {
        self.cfg
            .allow
            .as_ref()
            .is_none_or(|nets| nets.iter().any(|n| n.contains(&ip)))
    }

    pub fn proto(&self) -> Proto {
        self.cfg.proto
    }
}

/// A TCP listener from a descriptor systemd passed.
pub fn adopt_tcp(fd: OwnedFd) -> io::Result<mio::net::TcpListener> {
    let l = std::net::TcpListener::from(fd);
    l.set_nonblocking(true)?;
    Ok(mio::net::TcpListener::from_std(l))
}

/// A UDP socket from a descriptor systemd passed.
pub fn adopt_udp(fd: OwnedFd) -> io::Result<mio::net::UdpSocket> {
    let s = std::net::UdpSocket::from(fd);
    s.set_nonblocking(true)?;
    Ok(mio::net::UdpSocket::from_std(s))
}
