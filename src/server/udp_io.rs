//! Datagram I/O with the two things `recv_from`/`send_to` cannot do: see
//! whether a datagram was truncated (MSG_TRUNC), and, on a wildcard
//! listener, learn which local address a datagram was sent to and send the
//! reply from that same address (IP_PKTINFO / IPV6_RECVPKTINFO), so a
//! client on a multi-homed host gets its answer from where it asked.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;

use mio::net::UdpSocket;
use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, sendmsg, setsockopt, sockopt,
};

pub struct Datagram {
    pub len: usize,
    pub peer: SocketAddr,
    /// The address the datagram was sent to, when the socket reports it.
    pub local: Option<IpAddr>,
    /// Longer than the receive buffer: only its start was read.
    pub truncated: bool,
}

/// Asks the kernel to report each datagram's destination address; only
/// useful (and only done) on a wildcard listener.
pub fn enable_pktinfo(sock: &UdpSocket, addr: SocketAddr) -> io::Result<()> {
    if !addr.ip().is_unspecified() {
        return Ok(());
    }
    let fd = sock.as_raw_fd();
    // SAFETY: the descriptor is owned by `sock`, which outlives this call.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    match addr {
        SocketAddr::V4(_) => setsockopt(&borrowed, sockopt::Ipv4PacketInfo, &true),
        SocketAddr::V6(_) => setsockopt(&borrowed, sockopt::Ipv6RecvPacketInfo, &true),
    }
    .map_err(io::Error::from)
}

fn to_socket_addr(s: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = s.as_sockaddr_in() {
        return Some(SocketAddr::from((v4.ip(), v4.port())));
    }
    s.as_sockaddr_in6()
        .map(|v6| SocketAddr::from((v6.ip(), v6.port())))
}

pub fn recv(sock: &UdpSocket, buf: &mut [u8]) -> io::Result<Datagram> {
    let capacity = buf.len();
    let mut cmsg = nix::cmsg_space!(libc::in6_pktinfo);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<SockaddrStorage>(sock.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::MSG_TRUNC)
        .map_err(io::Error::from)?;
    let peer = msg
        .address
        .as_ref()
        .and_then(to_socket_addr)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "datagram without an IP source"))?;
    let mut local = None;
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            match c {
                ControlMessageOwned::Ipv4PacketInfo(info) => {
                    local = Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr))));
                }
                ControlMessageOwned::Ipv6PacketInfo(info) => {
                    local = Some(IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)));
                }
                _ => {}
            }
        }
    }
    // With MSG_TRUNC, recvmsg returns the datagram's real length.
    let truncated = msg.bytes > capacity || msg.flags.contains(MsgFlags::MSG_TRUNC);
    Ok(Datagram {
        len: msg.bytes.min(capacity),
        peer,
        local,
        truncated,
    })
}

/// Sends `data` to `peer`, from `local` when given.
pub fn send(sock: &UdpSocket, data: &[u8], peer: SocketAddr, local: Option<IpAddr>) -> io::Result<usize> {
    let Some(local) = local else {
        return sock.send_to(data, peer);
    };
    let iov = [IoSlice::new(data)];
    let dest = SockaddrStorage::from(peer);
    let fd = sock.as_raw_fd();
    let sent = match local {
        IpAddr::V4(ip) => {
            let info = libc::in_pktinfo {
                ipi_ifindex: 0,
                ipi_spec_dst: libc::in_addr {
                    s_addr: u32::from(ip).to_be(),
                },
                ipi_addr: libc::in_addr { s_addr: 0 },
            };
            sendmsg(
                fd,
                &iov,
                &[ControlMessage::Ipv4PacketInfo(&info)],
                MsgFlags::empty(),
                Some(&dest),
            )
        }
        IpAddr::V6(ip) => {
            let info = libc::in6_pktinfo {
                ipi6_addr: libc::in6_addr { s6_addr: ip.octets() },
                ipi6_ifindex: 0,
            };
            sendmsg(
                fd,
                &iov,
                &[ControlMessage::Ipv6PacketInfo(&info)],
                MsgFlags::empty(),
                Some(&dest),
            )
        }
    };
    sent.map_err(io::Error::from)
}
