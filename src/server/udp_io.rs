//! Datagram I/O in batches: `recvmmsg` reads up to [`RECV_BATCH`]
//! datagrams with one system call and `sendmmsg` sends up to
//! [`SEND_BATCH`] replies with one. Per datagram they keep the two things
//! `recv_from`/`send_to` cannot do: see whether it was truncated
//! (MSG_TRUNC), and, on a wildcard listener, learn which local address it
//! was sent to and send the reply from that same address (IP_PKTINFO /
//! IPV6_RECVPKTINFO, IPV6_PKTINFO), so a client on a multi-homed host gets
//! its answer from where it asked.
//!
//! The `unsafe` code is the two system calls and reading what the kernel
//! wrote back (addresses, control messages). The message headers are
//! rebuilt before each call from buffers the batch owns, so no pointer
//! outlives the call it was made for.

use std::io;
use std::mem::{self, size_of};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::ptr;

use libc::{c_int, c_uint, c_void, socklen_t};
use mio::net::UdpSocket;
use nix::sys::socket::{setsockopt, sockopt};

/// Datagrams read per `recvmmsg`.
pub const RECV_BATCH: usize = 32;
/// Replies sent per `sendmmsg`.
pub const SEND_BATCH: usize = 64;
/// The receive buffer of one datagram: larger than any UDP payload (65,507
/// bytes over IPv4, 65,527 over IPv6), so a datagram is truncated only by
/// a smaller buffer (tests) or an IPv6 jumbogram.
const SLOT: usize = 64 * 1024;

/// Where a reply datagram goes, and from which local address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dest {
    pub peer: SocketAddr,
    /// The address the request was sent to, on a wildcard listener.
    pub local: Option<IpAddr>,
}

/// One datagram of a received batch.
#[derive(Debug, Clone, Copy)]
pub struct Datagram {
    /// Its place in the batch's buffer.
    slot: usize,
    /// Bytes received (at most the slot's size).
    pub len: usize,
    pub dest: Dest,
    /// Longer than the receive buffer: only its start was read.
    pub truncated: bool,
}

/// A socket address as the kernel reads and writes it: IPv4 or IPv6
/// (every UDP listener is one or the other).
#[repr(C)]
#[derive(Clone, Copy)]
union SockAddr {
    v4: libc::sockaddr_in,
    v6: libc::sockaddr_in6,
}

// SAFETY (of every `mem::zeroed` below): these are C structs and unions of
// integers, arrays of integers and raw pointers, for which all-zero bytes
// are a valid value (null pointers, zero lengths).
const NO_ADDR: SockAddr = unsafe { mem::zeroed() };
const NO_HDR: libc::mmsghdr = unsafe { mem::zeroed() };
const NO_IOV: libc::iovec = libc::iovec {
    iov_base: ptr::null_mut(),
    iov_len: 0,
};

/// Room for the control messages of one received datagram: its
/// destination address (IP_PKTINFO or IPV6_PKTINFO, at most 40 bytes), with
/// room to spare for one the kernel might add.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct CmsgSpace([u8; 128]);

/// A control message that sets the source address of one sent datagram.
#[repr(C)]
#[derive(Clone, Copy)]
struct Pktinfo4 {
    hdr: libc::cmsghdr,
    info: libc::in_pktinfo,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Pktinfo6 {
    hdr: libc::cmsghdr,
    info: libc::in6_pktinfo,
}

#[repr(C)]
#[derive(Clone, Copy)]
union Pktinfo {
    v4: Pktinfo4,
    v6: Pktinfo6,
}

const NO_PKTINFO: Pktinfo = unsafe { mem::zeroed() };
const NO_PKTINFO4: Pktinfo4 = unsafe { mem::zeroed() };
const NO_PKTINFO6: Pktinfo6 = unsafe { mem::zeroed() };

// The layouts above are the ones CMSG_DATA and CMSG_SPACE describe: the
// payload right after the aligned header, the whole within the space the
// kernel expects (checked at compile time).
// SAFETY: CMSG_LEN and CMSG_SPACE are arithmetic on their argument.
const PKTINFO4_LEN: usize = unsafe { libc::CMSG_LEN(size_of::<libc::in_pktinfo>() as c_uint) } as usize;
const PKTINFO4_SPACE: usize = unsafe { libc::CMSG_SPACE(size_of::<libc::in_pktinfo>() as c_uint) } as usize;
const PKTINFO6_LEN: usize = unsafe { libc::CMSG_LEN(size_of::<libc::in6_pktinfo>() as c_uint) } as usize;
const PKTINFO6_SPACE: usize = unsafe { libc::CMSG_SPACE(size_of::<libc::in6_pktinfo>() as c_uint) } as usize;
const _: () = {
    assert!(mem::offset_of!(Pktinfo4, info) + size_of::<libc::in_pktinfo>() == PKTINFO4_LEN);
    assert!(mem::offset_of!(Pktinfo6, info) + size_of::<libc::in6_pktinfo>() == PKTINFO6_LEN);
    assert!(size_of::<Pktinfo>() >= PKTINFO6_SPACE && PKTINFO6_SPACE >= PKTINFO4_SPACE);
};

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

/// The buffers of one `recvmmsg`: [`RECV_BATCH`] slots of 64 KiB (2 MiB,
/// allocated on the first read and then reused; only the pages datagrams
/// were written to become resident), their addresses and control messages,
/// and what the last call received.
pub struct RecvBatch {
    slot: usize,
    bufs: Vec<u8>,
    hdrs: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
    names: Vec<SockAddr>,
    cmsgs: Vec<CmsgSpace>,
    got: Vec<Datagram>,
}

/// Allocates nothing: the loop takes the batch out of the server (leaving
/// a default one in its place) for each read.
impl Default for RecvBatch {
    fn default() -> Self {
        RecvBatch::with_slot(SLOT)
    }
}

impl RecvBatch {
    fn with_slot(slot: usize) -> Self {
        RecvBatch {
            slot,
            bufs: Vec::new(),
            hdrs: Vec::new(),
            iovs: Vec::new(),
            names: Vec::new(),
            cmsgs: Vec::new(),
            got: Vec::new(),
        }
    }

    /// Reads up to `max` datagrams (at most [`RECV_BATCH`]) with one
    /// `recvmmsg`: how many were read (at least one), then found with
    /// [`RecvBatch::datagrams`]; `WouldBlock` when there was none. Fewer
    /// than `max` means the socket's queue was empty at the time: the
    /// kernel reports the next arrival as a new readiness edge.
    pub fn recv(&mut self, sock: &UdpSocket, max: usize) -> io::Result<usize> {
        let n = max.clamp(1, RECV_BATCH);
        if self.bufs.is_empty() {
            // Zeroed memory straight from the system: no page is touched
            // until a datagram is written to it.
            self.bufs = vec![0; RECV_BATCH * self.slot];
            self.hdrs = vec![NO_HDR; RECV_BATCH];
            self.iovs = vec![NO_IOV; RECV_BATCH];
            self.names = vec![NO_ADDR; RECV_BATCH];
            self.cmsgs = vec![CmsgSpace([0; 128]); RECV_BATCH];
            self.got = Vec::with_capacity(RECV_BATCH);
        }
        self.got.clear();
        // Raw pointers are taken once the arrays are written: nothing but
        // the kernel touches them until the call returns.
        let bufs = self.bufs.as_mut_ptr();
        for (i, iov) in self.iovs[..n].iter_mut().enumerate() {
            *iov = libc::iovec {
                iov_base: bufs.wrapping_add(i * self.slot).cast(),
                iov_len: self.slot,
            };
        }
        let iovs = self.iovs.as_mut_ptr();
        let names = self.names.as_mut_ptr();
        let cmsgs = self.cmsgs.as_mut_ptr();
        for (i, h) in self.hdrs[..n].iter_mut().enumerate() {
            let m = &mut h.msg_hdr;
            m.msg_name = names.wrapping_add(i).cast();
            m.msg_namelen = size_of::<SockAddr>() as socklen_t;
            m.msg_iov = iovs.wrapping_add(i);
            m.msg_iovlen = 1;
            m.msg_control = cmsgs.wrapping_add(i).cast();
            m.msg_controllen = size_of::<CmsgSpace>() as _;
            m.msg_flags = 0;
            h.msg_len = 0;
        }
        // SAFETY: the first `n` headers (n ≤ RECV_BATCH, the length of
        // every array) point to one slot of `self.slot` bytes, one address
        // and one control buffer each, all owned by `self` and not touched
        // otherwise until the call returns. MSG_TRUNC makes `msg_len` the
        // datagram's real length.
        let r = unsafe {
            libc::recvmmsg(
                sock.as_raw_fd(),
                self.hdrs.as_mut_ptr(),
                n as c_uint,
                libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                ptr::null_mut(),
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        let r = (r as usize).min(n);
        for (i, h) in self.hdrs[..r].iter().enumerate() {
            // A datagram without an IP source cannot be answered.
            let Some(peer) = peer_of(&self.names[i], h.msg_hdr.msg_namelen) else {
                continue;
            };
            let real = h.msg_len as usize;
            self.got.push(Datagram {
                slot: i,
                len: real.min(self.slot),
                dest: Dest {
                    peer,
                    local: local_of(&h.msg_hdr),
                },
                truncated: real > self.slot || h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
            });
        }
        Ok(r)
    }

    /// The datagrams the last [`RecvBatch::recv`] read, in arrival order.
    pub fn datagrams(&self) -> &[Datagram] {
        &self.got
    }

    /// The bytes of a datagram of the last batch.
    pub fn data(&self, d: &Datagram) -> &[u8] {
        let start = d.slot * self.slot;
        &self.bufs[start..start + d.len]
    }
}

/// The source address the kernel wrote, if it is an IP one.
fn peer_of(addr: &SockAddr, len: socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    // SAFETY: both variants are plain integers, so any bytes are a valid
    // value of either; the family field (at the same offset in both) says
    // which one the kernel wrote, and `len` that it wrote all of it.
    let family = c_int::from(unsafe { addr.v4.sin_family });
    match family {
        libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
            let a = unsafe { addr.v4 };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
            let a = unsafe { addr.v6 };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                0,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// The destination address of a received datagram, from its IP_PKTINFO or
/// IPV6_PKTINFO control message (only present on a wildcard listener).
fn local_of(hdr: &libc::msghdr) -> Option<IpAddr> {
    let mut local = None;
    // SAFETY: `msg_control` and `msg_controllen` describe our control
    // buffer as the kernel filled it; CMSG_FIRSTHDR and CMSG_NXTHDR never
    // leave it, and a payload is read (unaligned) only when the message's
    // length covers the type read.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(hdr);
        while !c.is_null() {
            let (level, kind, len) = ((*c).cmsg_level, (*c).cmsg_type, (*c).cmsg_len as usize);
            if level == libc::IPPROTO_IP && kind == libc::IP_PKTINFO && len >= PKTINFO4_LEN {
                let info = ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::in_pktinfo>());
                local = Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr))));
            } else if level == libc::IPPROTO_IPV6 && kind == libc::IPV6_PKTINFO && len >= PKTINFO6_LEN {
                let info = ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::in6_pktinfo>());
                local = Some(IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)));
            }
            c = libc::CMSG_NXTHDR(hdr, c);
        }
    }
    local
}

/// The headers of one `sendmmsg`, kept from one call to the next.
#[derive(Default)]
pub struct SendBatch {
    hdrs: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
    names: Vec<SockAddr>,
    cmsgs: Vec<Pktinfo>,
}

impl SendBatch {
    /// Sends the first datagrams of `msgs` (at most [`SEND_BATCH`]) with
    /// one `sendmmsg`, each to its peer and, when it has one, from its
    /// local address: how many were sent, in order (at least one when
    /// `msgs` is not empty), or the error of the first. A datagram after
    /// the ones sent was not: its own error comes back when it is first in
    /// the next call.
    pub fn send<'a>(
        &mut self,
        sock: &UdpSocket,
        msgs: impl Iterator<Item = (&'a [u8], Dest)>,
    ) -> io::Result<usize> {
        if self.hdrs.is_empty() {
            self.hdrs = vec![NO_HDR; SEND_BATCH];
            self.iovs = vec![NO_IOV; SEND_BATCH];
            self.names = vec![NO_ADDR; SEND_BATCH];
            self.cmsgs = vec![NO_PKTINFO; SEND_BATCH];
        }
        let mut n = 0;
        for (data, dest) in msgs.take(SEND_BATCH) {
            let i = n;
            n += 1;
            // The kernel only reads through `iov_base` on a send.
            self.iovs[i] = libc::iovec {
                iov_base: data.as_ptr().cast_mut().cast::<c_void>(),
                iov_len: data.len(),
            };
            let namelen = match dest.peer {
                SocketAddr::V4(a) => {
                    self.names[i].v4 = sockaddr_v4(a);
                    size_of::<libc::sockaddr_in>()
                }
                SocketAddr::V6(a) => {
                    self.names[i].v6 = sockaddr_v6(a);
                    size_of::<libc::sockaddr_in6>()
                }
            };
            let controllen = match dest.local {
                None => 0,
                Some(IpAddr::V4(ip)) => {
                    let mut c = NO_PKTINFO4;
                    c.hdr.cmsg_len = PKTINFO4_LEN as _;
                    c.hdr.cmsg_level = libc::IPPROTO_IP;
                    c.hdr.cmsg_type = libc::IP_PKTINFO;
                    c.info.ipi_spec_dst = libc::in_addr {
                        s_addr: u32::from(ip).to_be(),
                    };
                    self.cmsgs[i] = Pktinfo { v4: c };
                    PKTINFO4_SPACE
                }
                Some(IpAddr::V6(ip)) => {
                    let mut c = NO_PKTINFO6;
                    c.hdr.cmsg_len = PKTINFO6_LEN as _;
                    c.hdr.cmsg_level = libc::IPPROTO_IPV6;
                    c.hdr.cmsg_type = libc::IPV6_PKTINFO;
                    c.info.ipi6_addr = libc::in6_addr { s6_addr: ip.octets() };
                    self.cmsgs[i] = Pktinfo { v6: c };
                    PKTINFO6_SPACE
                }
            };
            let h = &mut self.hdrs[i];
            h.msg_hdr.msg_namelen = namelen as socklen_t;
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_controllen = controllen as _;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        // Raw pointers are taken once the arrays are written: nothing but
        // the kernel touches them until the call returns.
        let iovs = self.iovs.as_mut_ptr();
        let names = self.names.as_mut_ptr();
        let cmsgs = self.cmsgs.as_mut_ptr();
        for (i, h) in self.hdrs[..n].iter_mut().enumerate() {
            let m = &mut h.msg_hdr;
            m.msg_name = names.wrapping_add(i).cast();
            m.msg_iov = iovs.wrapping_add(i);
            m.msg_control = if m.msg_controllen == 0 {
                ptr::null_mut()
            } else {
                cmsgs.wrapping_add(i).cast()
            };
        }
        if n == 0 {
            return Ok(0);
        }
        // SAFETY: the first `n` headers (n ≤ SEND_BATCH, the length of
        // every array) point to one address and one control message owned
        // by `self` and to one data slice borrowed for this call; the
        // kernel only reads them.
        let r = unsafe {
            libc::sendmmsg(
                sock.as_raw_fd(),
                self.hdrs.as_mut_ptr(),
                n as c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((r as usize).min(n))
    }
}

fn sockaddr_v4(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

fn sockaddr_v6(a: SocketAddrV6) -> libc::sockaddr_in6 {
    libc::sockaddr_in6 {
        sin6_family: libc::AF_INET6 as libc::sa_family_t,
        sin6_port: a.port().to_be(),
        sin6_flowinfo: a.flowinfo(),
        sin6_addr: libc::in6_addr {
            s6_addr: a.ip().octets(),
        },
        sin6_scope_id: a.scope_id(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn server(addr: &str) -> UdpSocket {
        let s = std::net::UdpSocket::bind(addr).expect("bind");
        s.set_nonblocking(true).expect("nonblocking");
        let s = UdpSocket::from_std(s);
        let local = s.local_addr().expect("address");
        enable_pktinfo(&s, local).expect("pktinfo");
        s
    }

    fn client(addr: &str) -> std::net::UdpSocket {
        let c = std::net::UdpSocket::bind(addr).expect("client");
        c.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        c
    }

    /// Receives until `want` datagrams came (or 5 s passed).
    fn recv_all(rx: &mut RecvBatch, s: &UdpSocket, want: usize) -> Vec<(Vec<u8>, Datagram)> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut got = Vec::new();
        while got.len() < want && Instant::now() < deadline {
            match rx.recv(s, RECV_BATCH) {
                Ok(_) => got.extend(rx.datagrams().iter().map(|d| (rx.data(d).to_vec(), *d))),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(e) => panic!("recvmmsg: {e}"),
            }
        }
        got
    }

    #[test]
    fn a_batch_keeps_each_datagrams_source_length_and_truncation() {
        let s = server("127.0.0.1:0");
        let to = s.local_addr().expect("address");
        let clients: Vec<_> = (0..3).map(|_| client("127.0.0.1:0")).collect();
        for (i, c) in clients.iter().enumerate() {
            c.send_to(&vec![b'a' + i as u8; 10 * (i + 1)], to).expect("send");
        }
        let mut rx = RecvBatch::with_slot(25);
        let got = recv_all(&mut rx, &s, 3);
        assert_eq!(got.len(), 3);
        for (i, (data, d)) in got.iter().enumerate() {
            assert_eq!(d.dest.peer, clients[i].local_addr().expect("address"));
            assert_eq!(d.dest.local, None, "not a wildcard listener");
            assert_eq!(d.truncated, i == 2, "datagram {i}");
            assert_eq!(data, &vec![b'a' + i as u8; (10 * (i + 1)).min(25)]);
        }
        assert_eq!(
            rx.recv(&s, RECV_BATCH).map_err(|e| e.kind()),
            Err(io::ErrorKind::WouldBlock)
        );
    }

    /// Requests to each of `dsts` on a wildcard socket: each reply comes
    /// back from the address its request was sent to.
    fn replies_from_the_address_asked(wildcard: &str, from: &str, dsts: &[&str]) {
        let s = server(wildcard);
        let port = s.local_addr().expect("address").port();
        let c = client(from);
        let to: Vec<SocketAddr> = dsts
            .iter()
            .map(|d| SocketAddr::new(d.parse().expect("ip"), port))
            .collect();
        for (i, t) in to.iter().enumerate() {
            c.send_to(format!("#{i}").as_bytes(), t).expect("send");
        }
        let mut rx = RecvBatch::default();
        let got = recv_all(&mut rx, &s, to.len());
        assert_eq!(got.len(), to.len());
        let mut tx = SendBatch::default();
        let sent = tx
            .send(&s, got.iter().map(|(data, d)| (&data[..], d.dest)))
            .expect("sendmmsg");
        assert_eq!(sent, to.len());
        let mut buf = [0u8; 64];
        for _ in 0..to.len() {
            let (n, reply_from) = c.recv_from(&mut buf).expect("a reply");
            let i: usize = std::str::from_utf8(&buf[1..n])
                .expect("text")
                .parse()
                .expect("index");
            assert_eq!(reply_from, to[i], "reply {i}");
        }
    }

    #[test]
    fn a_wildcard_ipv4_socket_replies_from_the_address_asked() {
        replies_from_the_address_asked(
            "0.0.0.0:0",
            "127.0.0.1:0",
            &["127.0.0.1", "127.0.0.2", "127.0.0.3"],
        );
    }

    #[test]
    fn a_wildcard_ipv6_socket_replies_from_the_address_asked() {
        if std::net::UdpSocket::bind("[::1]:0").is_err() {
            eprintln!("no IPv6 loopback: skipped");
            return;
        }
        replies_from_the_address_asked("[::]:0", "[::1]:0", &["::1"]);
        // A dual-stack socket (as systemd may pass one): IPv4 clients
        // arrive as ::ffff:a.b.c.d and are answered from that address.
        if std::fs::read_to_string("/proc/sys/net/ipv6/bindv6only").is_ok_and(|v| v.trim() == "0") {
            replies_from_the_address_asked("[::]:0", "127.0.0.1:0", &["127.0.0.1", "127.0.0.2"]);
        }
    }
}
