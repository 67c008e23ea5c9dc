//! UDP: each non-blank line of a datagram (at most 64) is a request,
//! answered by its own datagram, in line order, to the datagram's source.
//! A datagram whose lines need workers waits in a batch until its replies
//! can leave in order. What a batch holds (its tasks, its replies) counts
//! against `max_buffered_bytes`; a line that would need a task while the
//! count is over gets `ERR busy`, like one that finds the queue full.
//!
//! Datagrams come and go in batches (`udp_io.rs`): a readable listener is
//! read with `recvmmsg`, up to 32 datagrams per system call and 256 per
//! turn; the replies of a turn wait in the listener's [`UdpOut`] and leave
//! together with `sendmmsg` in the turn's write phase (a full batch of 64
//! leaves at once). While the socket's send buffer is full they stay
//! queued, up to [`MAX_QUEUED_REPLIES`], and the socket is watched for
//! writability until they are sent. Queued reply bytes count against
//! `max_buffered_bytes` too.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use mio::net::UdpSocket;
use mio::{Interest, Token};

use super::dispatch::{Origin, Place, ValuesArg};
use super::udp_io::{self, Dest, RecvBatch, SEND_BATCH, SendBatch};
use super::{LISTENER_BASE, Listener, Server, Sock, canonical};
use crate::config::Proto;
use crate::numbers::write_u64;
use crate::protocol::{self, Args, Failure, Format, Rejection};

/// Non-blank lines served per datagram; more are dropped and counted.
pub const MAX_LINES_PER_DATAGRAM: usize = 64;
/// Datagrams read per listener per turn before other sockets get a turn.
const DATAGRAMS_PER_TURN: usize = 256;
/// Replies kept while the socket's send buffer is full; beyond this they
/// are dropped (UDP promises no delivery) and counted.
const MAX_QUEUED_REPLIES: usize = 4096;
/// Entries of the cache of peer address texts.
const PEER_SLOTS: usize = 1024;
/// Sent bytes at the front of a queue's buffer worth moving the rest for.
const COMPACT_BYTES: usize = 64 * 1024;

/// What the loop keeps for reading datagrams: the buffers of one
/// `recvmmsg`, and the text of recent sources' addresses.
#[derive(Default)]
pub struct UdpRx {
    batch: RecvBatch,
    peers: PeerNames,
}

/// The replies of one datagram, sent in line order as they complete.
pub struct UdpBatch {
    id: u64,
    listener: usize,
    dest: Dest,
    /// Lines of the datagram: replies to send (`usize::MAX` until every
    /// line is dispatched).
    lines: usize,
    /// Replies before this line are sent.
    sent: usize,
    /// Replies that completed before an earlier line's, by line; empty
    /// (not allocated) until one does.
    early: Vec<Option<Vec<u8>>>,
    /// Bytes counted against the budget: its tasks and its early replies.
    held: usize,
}

/// A listener's replies not sent yet: those of the current turn, and those
/// waiting for the socket to become writable again.
#[derive(Default)]
pub struct UdpOut {
    /// Each reply's destination and length, in order.
    queue: VecDeque<(Dest, usize)>,
    /// The replies' bytes, back to back; those of `queue` start at `head`.
    bytes: Vec<u8>,
    head: usize,
    /// The send buffer was full: wait for a writable event.
    blocked: bool,
    /// In `ready.udp_write`, flushed in this turn's write phase.
    listed: bool,
    headers: SendBatch,
}

impl UdpOut {
    /// Bytes of the replies still queued (counted against the budget).
    pub fn queued(&self) -> usize {
        self.bytes.len() - self.head
    }

    /// Queues one reply: its length, or None (and nothing queued) when the
    /// queue is full.
    fn push(&mut self, dest: Dest, reply: impl UdpReply) -> Option<usize> {
        if self.queue.len() >= MAX_QUEUED_REPLIES {
            return None;
        }
        let start = self.bytes.len();
        reply.append_to(&mut self.bytes);
        let len = self.bytes.len() - start;
        self.queue.push_back((dest, len));
        Some(len)
    }

    /// Sends the queue, [`SEND_BATCH`] datagrams per system call, until it
    /// is empty or the socket's send buffer is full (`blocked`). A reply
    /// the kernel refuses is dropped, as `send_to` would have lost it.
    /// Returns the bytes no longer queued.
    fn flush(&mut self, sock: &UdpSocket) -> usize {
        let mut gone = 0;
        self.blocked = false;
        while let Some(&(first, _)) = self.queue.front() {
            let mut at = self.head;
            let bytes = &self.bytes;
            let msgs = self.queue.iter().map(|&(dest, len)| {
                let data = &bytes[at..at + len];
                at += len;
                (data, dest)
            });
            match self.headers.send(sock, msgs) {
                Ok(0) => break,
                Ok(n) => gone += self.pop(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.blocked = true;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::debug!("udp send to {}: {e}", first.peer);
                    gone += self.pop(1);
                }
            }
        }
        if self.queue.is_empty() {
            self.bytes.clear();
            self.head = 0;
        } else if self.head >= COMPACT_BYTES && 2 * self.head >= self.bytes.len() {
            self.bytes.drain(..self.head);
            self.head = 0;
        }
        gone
    }

    /// Takes `n` replies off the front: their bytes.
    fn pop(&mut self, n: usize) -> usize {
        let mut bytes = 0;
        for _ in 0..n {
            if let Some((_, len)) = self.queue.pop_front() {
                bytes += len;
            }
        }
        self.head += bytes;
        bytes
    }
}

impl Server {
    pub(super) fn udp_read(&mut self, index: usize, now: Instant) {
        let mut rx = std::mem::take(&mut self.udp_rx);
        let mut left = DATAGRAMS_PER_TURN;
        while left > 0 {
            let Some(Sock::Udp(sock, _)) = self.listeners.get(index).filter(|l| !l.stopped).map(|l| &l.sock)
            else {
                break;
            };
            let want = left.min(udp_io::RECV_BATCH);
            let n = match rx.batch.recv(sock, want) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::debug!("udp recv on {}: {e}", self.listeners[index].settings.cfg.address);
                    left -= 1;
                    continue;
                }
            };
            left -= n;
            for d in rx.batch.datagrams() {
                if !self.listeners[index].settings.admits(canonical(d.dest.peer.ip())) {
                    continue;
                }
                let peer = rx.peers.text(d.dest.peer);
                self.datagram(index, d.dest, peer, rx.batch.data(d), d.truncated, now);
            }
            if n < want {
                // The queue is empty: the next datagram is a new event.
                break;
            }
        }
        self.udp_rx = rx;
        if left == 0 {
            // Cut short by the cap: the next turn reads on.
            self.ready.udp.push(index);
        }
    }

    fn datagram(
        &mut self,
        index: usize,
        dest: Dest,
        peer: Rc<str>,
        data: &[u8],
        truncated: bool,
        now: Instant,
    ) {
        let origin = |batch, id, line| Origin {
            place: Place::Udp { batch, id, line },
            proto: Proto::Udp,
            peer: Rc::clone(&peer),
            cert_user: None,
        };
        if truncated {
            // One `too-long` for a datagram cut short by the buffer.
            let (batch, id) = self.udp_batch(index, dest);
            let f = Failure::new(
                crate::protocol::Code::TooLong,
                "datagram longer than the receive buffer",
            );
            self.refuse(&origin(batch, id, 0), &Rejection::bare(Format::Text, f));
            self.udp_batch_read(batch, id, 1);
            return;
        }
        let max = self.cfg.limits.max_line_bytes;
        let settings = Rc::clone(&self.listeners[index].settings);
        // The batch is made for the first non-blank line, and told how many
        // there are once they are all dispatched.
        let mut batch = None;
        let (mut served, mut dropped) = (0, 0);
        for line in lines(data) {
            if served == MAX_LINES_PER_DATAGRAM {
                dropped += 1;
                continue;
            }
            let (key, id) = *batch.get_or_insert_with(|| self.udp_batch(index, dest));
            let origin = origin(key, id, served);
            served += 1;
            if line.len() > max {
                let format = if protocol::first_non_blank(line) == Some(b'{') {
                    Format::Json
                } else {
                    Format::Text
                };
                self.refuse(&origin, &Rejection::bare(format, Failure::too_long(max)));
                continue;
            }
            let parsed = protocol::parse_line(line, &self.parse_ctx(&settings));
            let payload = match &parsed {
                Ok(req) => match &req.args {
                    Args::Values { span, syntax, .. } => {
                        Some(ValuesArg::Borrowed(&line[span.clone()], *syntax))
                    }
                    _ => None,
                },
                Err(_) => None,
            };
            self.dispatch(&origin, parsed, payload, now);
        }
        self.books.counters.udp_lines_dropped += dropped;
        if let Some((key, id)) = batch {
            self.udp_batch_read(key, id, served);
        }
    }

    /// A new batch for the replies of a datagram, its number of lines not
    /// known yet: its slab key and id.
    fn udp_batch(&mut self, listener: usize, dest: Dest) -> (usize, u64) {
        let id = self.next_batch_id;
        self.next_batch_id += 1;
        let key = self.batches.insert(UdpBatch {
            id,
            listener,
            dest,
            lines: usize::MAX,
            sent: 0,
            early: Vec::new(),
            held: 0,
        });
        (key, id)
    }

    /// Every line of a batch's datagram is dispatched: `lines` replies are
    /// due, and those already sent may be all of them.
    fn udp_batch_read(&mut self, batch: usize, id: u64, lines: usize) {
        if let Some(b) = self.batches.get_mut(batch).filter(|b| b.id == id) {
            b.lines = lines;
            if b.sent >= lines {
                self.batches.remove(batch);
            }
        }
    }

    /// A batch takes on a task of `held` bytes.
    pub(super) fn udp_hold(&mut self, batch: usize, id: u64, held: usize) {
        if let Some(b) = self.batches.get_mut(batch).filter(|b| b.id == id) {
            b.held += held;
            self.budget.update(0, held);
        }
    }

    /// Delivers reply `line` of a batch (its task held `task_held` bytes):
    /// it and the replies after it that were waiting for it join the
    /// listener's queue, or it waits for the replies before it.
    pub(super) fn udp_fill(
        &mut self,
        batch: usize,
        id: u64,
        line: usize,
        reply: impl UdpReply,
        task_held: usize,
    ) {
        let Some(b) = self.batches.get_mut(batch).filter(|b| b.id == id) else {
            return;
        };
        let before = b.held;
        b.held -= task_held.min(b.held);
        let index = b.listener;
        // Replies to a listener a reload removed are lost with it.
        let mut out = match self.listeners.get_mut(index) {
            Some(Listener {
                sock: Sock::Udp(_, out),
                ..
            }) => Some(out),
            _ => None,
        };
        let (mut queued, mut dropped) = (0, 0);
        if line == b.sent {
            if let Some(o) = out.as_deref_mut() {
                tally(o.push(b.dest, reply), &mut queued, &mut dropped);
            }
            b.sent += 1;
            while let Some(r) = b.early.get_mut(b.sent).and_then(Option::take) {
                b.held -= r.len();
                if let Some(o) = out.as_deref_mut() {
                    tally(o.push(b.dest, r), &mut queued, &mut dropped);
                }
                b.sent += 1;
            }
        } else if line > b.sent && line < b.lines {
            if b.early.len() <= line {
                b.early.resize(line + 1, None);
            }
            let reply = reply.into_vec();
            b.held += reply.len();
            b.early[line] = Some(reply);
        }
        let after = b.held;
        if b.sent >= b.lines {
            self.batches.remove(batch);
        }
        self.budget.update(before, after);
        self.books.counters.udp_replies_dropped += dropped;
        if queued > 0 {
            self.budget.update(0, queued);
            self.udp_queued(index);
        }
    }

    /// Replies joined listener `index`'s queue: a full batch leaves now,
    /// the rest in the write phase (or once the socket is writable again).
    fn udp_queued(&mut self, index: usize) {
        let Some(Listener {
            sock: Sock::Udp(_, out),
            ..
        }) = self.listeners.get_mut(index)
        else {
            return;
        };
        if out.blocked {
            return;
        }
        if out.queue.len() >= SEND_BATCH {
            self.udp_flush_out(index);
        } else if !out.listed {
            out.listed = true;
            self.ready.udp_write.push(index);
        }
    }

    /// Whether a UDP line may become a task now.
    pub(super) fn udp_may_queue(&self) -> bool {
        !self.budget.over() && !self.tasks.is_full()
    }

    /// Sends listener `index`'s queued replies: in the write phase, when
    /// its socket is writable again, or for a full batch. The socket is
    /// watched for writability only while replies wait for room.
    pub(super) fn udp_flush_out(&mut self, index: usize) {
        let Some(l) = self.listeners.get_mut(index) else {
            return;
        };
        let stopped = l.stopped;
        let Sock::Udp(sock, out) = &mut l.sock else {
            return;
        };
        out.listed = false;
        let was_blocked = out.blocked;
        let gone = out.flush(sock);
        self.budget.update(gone, 0);
        // A stopped listener is left as the drain registered it.
        if out.blocked != was_blocked && !stopped {
            let interest = if out.blocked {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            let token = Token(LISTENER_BASE + index);
            if let Err(e) = self.poll.registry().reregister(sock, token, interest) {
                log::warn!("udp {}: cannot watch the socket: {e}", l.settings.cfg.address);
            }
        }
    }
}

/// A reply for [`Server::udp_fill`]: bytes already written, or a writer
/// that appends them where they go: straight into the listener's queue
/// when the reply is in order, into a buffer of its own when it must wait.
pub(super) trait UdpReply {
    fn append_to(self, out: &mut Vec<u8>);
    fn into_vec(self) -> Vec<u8>;
}

impl UdpReply for Vec<u8> {
    fn append_to(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self);
    }

    fn into_vec(self) -> Vec<u8> {
        self
    }
}

impl<F: FnOnce(&mut Vec<u8>)> UdpReply for F {
    fn append_to(self, out: &mut Vec<u8>) {
        self(out);
    }

    fn into_vec(self) -> Vec<u8> {
        let mut v = Vec::new();
        self(&mut v);
        v
    }
}

/// Counts a reply queued (its bytes) or dropped for a full queue.
fn tally(pushed: Option<usize>, queued: &mut usize, dropped: &mut u64) {
    match pushed {
        Some(len) => *queued += len,
        None => *dropped += 1,
    }
}

/// The non-blank lines of a datagram, without their `\n` or `\r\n`.
fn lines(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(data);
    std::iter::from_fn(move || {
        let d = rest?;
        let (line, next) = match memchr::memchr(b'\n', d) {
            Some(i) => (&d[..i], Some(&d[i + 1..])),
            None => (d, None),
        };
        rest = next;
        Some(line)
    })
    .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
    .filter(|l| !protocol::is_blank(l))
}

/// The text of recent sources' addresses (a request's `peer`), so that a
/// client sending many datagrams has its address written once: a
/// direct-mapped cache of [`PEER_SLOTS`] entries, allocated on first use.
#[derive(Default)]
struct PeerNames {
    slots: Vec<Option<(SocketAddr, Rc<str>)>>,
}

impl PeerNames {
    fn text(&mut self, addr: SocketAddr) -> Rc<str> {
        if self.slots.is_empty() {
            self.slots = vec![None; PEER_SLOTS];
        }
        let slot = &mut self.slots[peer_slot(&addr)];
        match slot {
            Some((a, text)) if *a == addr => Rc::clone(text),
            _ => {
                let text = peer_text(addr);
                *slot = Some((addr, Rc::clone(&text)));
                text
            }
        }
    }
}

fn peer_slot(addr: &SocketAddr) -> usize {
    let ip = match addr {
        SocketAddr::V4(a) => u64::from(a.ip().to_bits()),
        SocketAddr::V6(a) => {
            let b = a.ip().to_bits();
            (b as u64) ^ ((b >> 64) as u64)
        }
    };
    let h = (ip ^ (u64::from(addr.port()) << 32)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (h >> 32) as usize % PEER_SLOTS
}

/// `a.b.c.d:port` without `core::fmt` for IPv4; IPv6 the usual way.
fn peer_text(addr: SocketAddr) -> Rc<str> {
    let SocketAddr::V4(a) = addr else {
        return addr.to_string().into();
    };
    let mut buf = Vec::with_capacity(21);
    for (i, octet) in a.ip().octets().into_iter().enumerate() {
        if i > 0 {
            buf.push(b'.');
        }
        write_u64(&mut buf, octet.into());
    }
    buf.push(b':');
    write_u64(&mut buf, a.port().into());
    // Digits, dots and a colon.
    std::str::from_utf8(&buf).map_or_else(|_| addr.to_string().into(), Rc::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_is_its_bytes_or_what_its_writer_appends() {
        let mut out = b"a\n".to_vec();
        b"b\n".to_vec().append_to(&mut out);
        (|o: &mut Vec<u8>| o.extend_from_slice(b"c\n")).append_to(&mut out);
        assert_eq!(out, b"a\nb\nc\n");
        assert_eq!((|o: &mut Vec<u8>| o.push(b'd')).into_vec(), b"d");
        assert_eq!(b"e".to_vec().into_vec(), b"e");
    }

    #[test]
    fn a_datagrams_lines_are_its_non_blank_ones() {
        let got: Vec<&[u8]> = lines(b"a\n\n  \r\nb c\r\n\td\n\n").collect();
        assert_eq!(got, [&b"a"[..], b"b c", b"\td"]);
        assert_eq!(lines(b"").count(), 0);
        assert_eq!(lines(b"\n\r\n \t").count(), 0);
        assert_eq!(lines(b"one").collect::<Vec<_>>(), [b"one"]);
    }

    #[test]
    fn peer_texts_are_the_addresses_display() {
        let mut names = PeerNames::default();
        for a in [
            "0.0.0.0:0",
            "127.0.0.1:7700",
            "255.255.255.255:65535",
            "10.20.3.4:9",
            "[::1]:7700",
            "[::ffff:127.0.0.2]:53",
            "[fe80::1%2]:1",
        ] {
            let addr: SocketAddr = a.parse().expect("address");
            assert_eq!(&*names.text(addr), addr.to_string());
            // Cached: the same text again.
            let again = names.text(addr);
            assert_eq!(&*again, addr.to_string());
        }
    }
}
