//! UDP: each non-blank line of a datagram (at most 64) is a request,
//! answered by its own datagram, in line order, to the datagram's source.
//! A datagram whose lines need workers waits in a batch until its replies
//! can leave in order. What a batch holds (its tasks, its replies) counts
//! against `max_buffered_bytes`; a line that would need a task while the
//! count is over gets `ERR busy`, like one that finds the queue full.

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::Instant;

use super::dispatch::{Origin, Place};
use super::{Server, Sock, canonical, udp_io};
use crate::config::Proto;
use crate::protocol::{self, Args, Failure, Format, Payload, Rejection};

/// Non-blank lines served per datagram; more are dropped and counted.
pub const MAX_LINES_PER_DATAGRAM: usize = 64;
/// Datagrams read per listener per turn before other sockets get a turn.
const DATAGRAMS_PER_TURN: usize = 256;
/// Replies kept while the socket's send buffer is full; beyond this they
/// are dropped (UDP promises no delivery) and counted.
const MAX_QUEUED_REPLIES: usize = 4096;

/// The replies of one datagram, sent in line order as they complete.
pub struct UdpBatch {
    id: u64,
    listener: usize,
    dest: Dest,
    replies: Vec<Option<Vec<u8>>>,
    /// Replies before this index are sent.
    sent: usize,
    /// Bytes counted against the budget: its tasks and its replies.
    held: usize,
}

/// Replies waiting for the socket to become writable again.
#[derive(Default)]
pub struct UdpOut {
    queue: VecDeque<(Dest, Vec<u8>)>,
}

/// Where a reply datagram goes, and from which local address.
#[derive(Debug, Clone, Copy)]
pub struct Dest {
    peer: SocketAddr,
    /// The address the request was sent to, on a wildcard listener.
    local: Option<IpAddr>,
}

impl Server {
    pub(super) fn udp_read(&mut self, index: usize, now: Instant) {
        let mut scratch = std::mem::take(&mut self.scratch);
        let mut cut_short = true;
        for _ in 0..DATAGRAMS_PER_TURN {
            let Some(Sock::Udp(sock, _)) = self.listeners.get(index).filter(|l| !l.stopped).map(|l| &l.sock)
            else {
                cut_short = false;
                break;
            };
            let d = match udp_io::recv(sock, &mut scratch) {
                Ok(d) => d,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    cut_short = false;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::debug!("udp recv on {}: {e}", self.listeners[index].settings.cfg.address);
                    continue;
                }
            };
            if !self.listeners[index].settings.admits(canonical(d.peer.ip())) {
                continue;
            }
            let dest = Dest {
                peer: d.peer,
                local: d.local,
            };
            self.datagram(index, dest, &scratch[..d.len], d.truncated, now);
        }
        self.scratch = scratch;
        if cut_short {
            self.ready.udp.push(index);
        }
    }

    fn datagram(&mut self, index: usize, dest: Dest, data: &[u8], truncated: bool, now: Instant) {
        let peer: Rc<str> = dest.peer.to_string().into();
        let max = self.cfg.limits.max_line_bytes;
        let mut lines: Vec<&[u8]> = if truncated {
            // One `too-long` for a datagram cut short by the buffer.
            vec![&[]]
        } else {
            data.split(|&b| b == b'\n')
                .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
                .filter(|l| !protocol::is_blank(l))
                .collect()
        };
        if lines.len() > MAX_LINES_PER_DATAGRAM {
            self.books.counters.udp_lines_dropped += (lines.len() - MAX_LINES_PER_DATAGRAM) as u64;
            lines.truncate(MAX_LINES_PER_DATAGRAM);
        }
        if lines.is_empty() {
            return;
        }
        let entry = self.batches.vacant_entry();
        let batch = entry.key();
        let id = self.next_batch_id;
        self.next_batch_id += 1;
        entry.insert(UdpBatch {
            id,
            listener: index,
            dest,
            replies: vec![None; lines.len()],
            sent: 0,
            held: 0,
        });
        let settings = Rc::clone(&self.listeners[index].settings);
        for (line_no, line) in lines.iter().enumerate() {
            let origin = Origin {
                place: Place::Udp {
                    batch,
                    id,
                    line: line_no,
                },
                proto: Proto::Udp,
                peer: Rc::clone(&peer),
                cert_user: None,
            };
            if truncated {
                let f = Failure::new(
                    crate::protocol::Code::TooLong,
                    "datagram longer than the receive buffer",
                );
                self.refuse(&origin, &Rejection::bare(Format::Text, f));
                continue;
            }
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
                    Args::Values { span, syntax, .. } => Some(Payload {
                        bytes: line[span.clone()].to_vec(),
                        span: 0..span.len(),
                        syntax: *syntax,
                    }),
                    _ => None,
                },
                Err(_) => None,
            };
            self.dispatch(&origin, parsed, payload, now);
        }
    }

    /// A batch takes on a task of `held` bytes.
    pub(super) fn udp_hold(&mut self, batch: usize, id: u64, held: usize) {
        if let Some(b) = self.batches.get_mut(batch).filter(|b| b.id == id) {
            b.held += held;
            self.budget.update(0, held);
        }
    }

    /// Delivers reply `line` of a batch (its task held `task_held` bytes)
    /// and sends what is now in order.
    pub(super) fn udp_fill(&mut self, batch: usize, id: u64, line: usize, reply: Vec<u8>, task_held: usize) {
        let Some(b) = self.batches.get_mut(batch).filter(|b| b.id == id) else {
            return;
        };
        let before = b.held;
        b.held = b.held - task_held.min(b.held) + reply.len();
        if let Some(slot) = b.replies.get_mut(line) {
            *slot = Some(reply);
        }
        let (index, dest) = (b.listener, b.dest);
        let mut ready = Vec::new();
        while let Some(Some(_)) = b.replies.get(b.sent) {
            if let Some(r) = b.replies[b.sent].take() {
                b.held -= r.len();
                ready.push(r);
            }
            b.sent += 1;
        }
        let after = b.held;
        if b.sent == b.replies.len() {
            self.batches.remove(batch);
        }
        self.budget.update(before, after);
        for r in ready {
            self.udp_send(index, dest, r);
        }
    }

    /// Whether a UDP line may become a task now.
    pub(super) fn udp_may_queue(&self) -> bool {
        !self.budget.over() && !self.tasks.is_full()
    }

    fn udp_send(&mut self, index: usize, dest: Dest, reply: Vec<u8>) {
        let Some(Sock::Udp(sock, out)) = self.listeners.get_mut(index).map(|l| &mut l.sock) else {
            return;
        };
        if out.queue.is_empty() {
            match udp_io::send(sock, &reply, dest.peer, dest.local) {
                Ok(_) => return,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    log::debug!("udp send to {}: {e}", dest.peer);
                    return;
                }
            }
        }
        if out.queue.len() >= MAX_QUEUED_REPLIES {
            self.books.counters.udp_replies_dropped += 1;
            return;
        }
        self.budget.update(0, reply.len());
        out.queue.push_back((dest, reply));
    }

    pub(super) fn udp_flush_out(&mut self, index: usize) {
        let Some(Sock::Udp(sock, out)) = self.listeners.get_mut(index).map(|l| &mut l.sock) else {
            return;
        };
        while let Some((dest, reply)) = out.queue.front() {
            match udp_io::send(sock, reply, dest.peer, dest.local) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Ok(_) | Err(_) => {
                    let len = reply.len();
                    out.queue.pop_front();
                    self.budget.update(len, 0);
                }
            }
        }
    }
}
