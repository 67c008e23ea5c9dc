//! UDP: each non-blank line of a datagram (at most 64) is a request,
//! answered by its own datagram, in line order, to the datagram's source.
//! A datagram whose lines all need workers waits in a batch until its
//! replies can leave in order.

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::Instant;

use super::record::Answered;
use super::task::Origin;
use super::udp_io;
use super::{Server, Sock, canonical};
use crate::config::Proto;
use crate::ops::{Exec, OPS};
use crate::protocol::reply::{write_err, write_ok};
use crate::protocol::{self, Code, Rejection};

/// Non-blank lines served per datagram; more are dropped and counted.
pub const MAX_LINES_PER_DATAGRAM: usize = 64;
/// Datagrams read per readiness event before other sockets get a turn.
const DATAGRAMS_PER_EVENT: usize = 256;
/// Replies kept while the socket's send buffer is full; beyond this they
/// are dropped (UDP promises no delivery) and counted.
const MAX_QUEUED_REPLIES: usize = 4096;

/// The replies of one datagram, sent in line order as they complete.
pub struct UdpBatch {
    pub id: u64,
    listener: usize,
    dest: Dest,
    replies: Vec<Option<Vec<u8>>>,
    /// Replies before this index are sent.
    sent: usize,
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
        for _ in 0..DATAGRAMS_PER_EVENT {
            let Some(Sock::Udp(sock, _)) = self.listeners.get(index).map(|l| &l.sock) else {
                break;
            };
            let d = match udp_io::recv(sock, &mut scratch) {
                Ok(d) => d,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.scratch = scratch;
                    return;
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
            if d.truncated {
                self.truncated_datagram(index, dest);
                continue;
            }
            self.datagram(index, dest, &scratch[..d.len], now);
        }
        self.scratch = scratch;
        self.again.push(mio::Token(super::LISTENER_BASE + index));
    }

    /// A datagram longer than the receive buffer: one `too-long`.
    fn truncated_datagram(&mut self, index: usize, dest: Dest) {
        let rej = Rejection {
            id: None,
            user: None,
            op: None,
            json: false,
            code: Code::TooLong,
            message: "datagram longer than the receive buffer".into(),
        };
        self.record(Answered::rejected(Proto::Udp, &dest.peer.to_string(), &rej));
        let mut reply = Vec::new();
        write_err(&mut reply, None, false, Code::TooLong, &rej.message);
        self.udp_send(index, dest, reply);
    }

    fn datagram(&mut self, index: usize, dest: Dest, data: &[u8], now: Instant) {
        let peer: Rc<str> = dest.peer.to_string().into();
        let max = self.cfg.limits.max_line_bytes;
        let mut lines: Vec<&[u8]> = data
            .split(|&b| b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .filter(|l| !protocol::is_blank(l))
            .collect();
        if lines.len() > MAX_LINES_PER_DATAGRAM {
            self.counters.udp_lines_dropped += (lines.len() - MAX_LINES_PER_DATAGRAM) as u64;
            lines.truncate(MAX_LINES_PER_DATAGRAM);
        }
        if lines.is_empty() {
            return;
        }
        let batch_entry = self.batches.vacant_entry();
        let key = batch_entry.key();
        let batch_id = self.next_batch_id;
        self.next_batch_id += 1;
        batch_entry.insert(UdpBatch {
            id: batch_id,
            listener: index,
            dest,
            replies: vec![None; lines.len()],
            sent: 0,
        });
        for (i, line) in lines.iter().enumerate() {
            let mut reply = Vec::new();
            if line.len() > max {
                let json = protocol::first_non_blank(line) == Some(b'{');
                let rej = Rejection::too_long(json, max);
                self.record(Answered::rejected(Proto::Udp, &peer, &rej));
                write_err(&mut reply, None, json, Code::TooLong, &rej.message);
                self.udp_fill(key, batch_id, i, reply);
                continue;
            }
            let parsed = {
                let settings = &self.listeners[index].settings;
                protocol::parse_line(line, &self.parse_ctx(settings))
            };
            let parsed = if self.refusing(now) {
                Err(Rejection::shutting_down(&parsed))
            } else {
                parsed
            };
            match parsed {
                Err(rej) => {
                    self.record(Answered::rejected(Proto::Udp, &peer, &rej));
                    write_err(&mut reply, rej.id.as_ref(), rej.json, rej.code, &rej.message);
                    self.udp_fill(key, batch_id, i, reply);
                }
                Ok(req) => match OPS[req.op].exec {
                    Exec::Loop(op) => {
                        self.account(req.user.as_deref(), None);
                        let out = self.loop_op(op);
                        write_ok(&mut reply, req.id.as_ref(), req.json, &out);
                        self.log_answer(&Answered::immediate(Proto::Udp, &peer, &req, Ok(&out)));
                        self.udp_fill(key, batch_id, i, reply);
                    }
                    Exec::List(exec) if let Some(result) = self.run_inline(Proto::Udp, &peer, &req, exec) => {
                        match &result {
                            Ok(out) => write_ok(&mut reply, req.id.as_ref(), req.json, out),
                            Err((code, msg)) => write_err(&mut reply, req.id.as_ref(), req.json, *code, msg),
                        }
                        self.udp_fill(key, batch_id, i, reply);
                    }
                    Exec::List(_) | Exec::Pi => {
                        let origin = Origin::Udp {
                            key,
                            batch: batch_id,
                            line: i,
                        };
                        self.enqueue(req, origin, Proto::Udp, Rc::clone(&peer), None, now);
                    }
                },
            }
        }
    }

    /// Delivers reply `line` of a batch and sends what is now in order.
    pub(super) fn udp_fill(&mut self, key: usize, batch: u64, line: usize, reply: Vec<u8>) {
        let Some(b) = self.batches.get_mut(key).filter(|b| b.id == batch) else {
            return;
        };
        if let Some(slot) = b.replies.get_mut(line) {
            *slot = Some(reply);
        }
        let (index, dest) = (b.listener, b.dest);
        let mut ready = Vec::new();
        while let Some(Some(_)) = b.replies.get(b.sent) {
            if let Some(r) = b.replies[b.sent].take() {
                ready.push(r);
            }
            b.sent += 1;
        }
        if b.sent == b.replies.len() {
            self.batches.remove(key);
        }
        for r in ready {
            self.udp_send(index, dest, r);
        }
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
            self.counters.udp_replies_dropped += 1;
            return;
        }
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
                    out.queue.pop_front();
                }
            }
        }
    }
}
