//! The door: accepting connections, a capped number per listener and turn,
//! and refusing those over the limits at once.
//!
//! A client refused by `allow` is closed without a word. One over
//! `max_connections` or `max_connections_per_ip` still learns why: one
//! `ERR busy` line (HTTP: a 429 response; TLS: a plain close, no session),
//! then a lingering close, without ever becoming a connection of the loop.
//! At most [`RESERVE`] descriptors are spent on refusals in progress: when
//! they are all in use, the oldest is cut short (closed at once), so a
//! flood of refused clients never slows the door down for the others queued
//! behind them in the kernel's backlog. The door closes (the listeners are
//! not polled, the backlog holds whoever comes) only when the process is
//! out of descriptors, for at most [`EMFILE_PAUSE`], and opens again as
//! soon as one is freed.

use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Poll, Token};
use slab::Slab;

use super::stream::{Discarded, discard_input};
use super::{LISTENER_BASE, Server, Sock, canonical};
use crate::config::Proto;
use crate::http;
use crate::protocol::{Code, Failure};

/// Tokens of refusals in progress.
pub const REFUSAL_BASE: usize = 1024;
/// Descriptors at most spent on refusals in progress.
pub const RESERVE: usize = 64;
/// Connections accepted per listener per turn.
const ACCEPTS_PER_TURN: usize = 64;
/// How long accepting pauses when the process is out of descriptors (or
/// until one is freed).
const EMFILE_PAUSE: Duration = Duration::from_millis(100);
/// How long a refused client has to read its `busy` line at most.
const REFUSAL_LINGER: Duration = Duration::from_secs(2);

struct Refusal {
    sock: TcpStream,
    since: Instant,
}

#[derive(Default)]
pub struct Door {
    refusals: Slab<Refusal>,
    /// Refusals whose socket became readable.
    readable: Vec<usize>,
    /// Closed (listeners not polled) until then.
    closed_until: Option<Instant>,
}

impl Door {
    pub fn is_open(&self) -> bool {
        self.closed_until.is_none()
    }

    /// When a closed door should open again.
    pub fn reopen_at(&self) -> Option<Instant> {
        self.closed_until
    }

    pub fn due(&self, now: Instant) -> bool {
        self.closed_until.is_some_and(|t| now >= t)
    }

    /// A descriptor was freed: a door closed for want of descriptors may
    /// open at once.
    pub fn freed(&mut self) {
        if let Some(t) = self.closed_until.as_mut() {
            *t = (*t).min(Instant::now());
        }
    }

    /// Refusals with input left to read: the next turn must not wait.
    pub fn has_readable(&self) -> bool {
        !self.readable.is_empty()
    }

    pub fn readable(&mut self, index: usize) {
        self.readable.push(index);
    }

    fn close_refusal(&mut self, index: usize, poll: &Poll) {
        if self.refusals.contains(index) {
            let mut r = self.refusals.remove(index);
            let _ = poll.registry().deregister(&mut r.sock);
            self.freed();
        }
    }

    /// Refusals past their lingering time.
    pub fn expire(&mut self, now: Instant, poll: &Poll) {
        let old: Vec<usize> = self
            .refusals
            .iter()
            .filter(|(_, r)| now.duration_since(r.since) >= REFUSAL_LINGER)
            .map(|(k, _)| k)
            .collect();
        for k in old {
            self.close_refusal(k, poll);
        }
    }

    /// Reads what refused clients still send; closes those at EOF.
    fn drain_readable(&mut self, poll: &Poll, scratch: &mut [u8]) {
        for index in std::mem::take(&mut self.readable) {
            let Some(r) = self.refusals.get_mut(index) else {
                continue;
            };
            match discard_input(&mut r.sock, scratch) {
                Discarded::Closed => self.close_refusal(index, poll),
                Discarded::Empty => {}
                // Edge-triggered: no new event comes for what is left.
                Discarded::More => self.readable.push(index),
            }
        }
    }

    /// Makes room for one more refusal: the oldest is cut short when all
    /// of the reserve is in use.
    fn make_room(&mut self, poll: &Poll) {
        if self.refusals.len() < RESERVE {
            return;
        }
        if let Some(k) = self.refusals.iter().min_by_key(|(_, r)| r.since).map(|(k, _)| k) {
            self.close_refusal(k, poll);
        }
    }
}

impl Server {
    /// Phase 3: accepts on every listener that has connections waiting.
    pub(super) fn accept_all(&mut self, now: Instant) {
        let mut scratch = std::mem::take(&mut self.scratch);
        self.door.drain_readable(&self.poll, &mut scratch);
        self.scratch = scratch;
        if !self.door.is_open() {
            return;
        }
        let mut keys = std::mem::take(&mut self.ready.accept);
        keys.sort_unstable();
        keys.dedup();
        for key in keys {
            for i in 0.. {
                if !self.door.is_open() {
                    break;
                }
                if i == ACCEPTS_PER_TURN {
                    self.ready.accept.push(key);
                    break;
                }
                let Some(Sock::Tcp(listener)) =
                    self.listeners.get(key).filter(|l| !l.stopped).map(|l| &l.sock)
                else {
                    break;
                };
                match listener.accept() {
                    Ok((sock, peer)) => self.at_door(key, sock, peer, now),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                        log::warn!("out of file descriptors; not accepting for up to {EMFILE_PAUSE:?}");
                        self.close_door(now + EMFILE_PAUSE);
                        break;
                    }
                    Err(e) => {
                        log::warn!("accept on {}: {e}", self.listeners[key].settings.cfg.address);
                        break;
                    }
                }
            }
        }
    }

    /// A new client: served, refused at once, or closed without a word.
    fn at_door(&mut self, listener: usize, sock: TcpStream, peer: SocketAddr, now: Instant) {
        let ip = canonical(peer.ip());
        if !self.listeners[listener].settings.admits(ip) {
            return;
        }
        if self.conns.len() >= self.cfg.limits.max_connections {
            self.reap_gone();
        }
        let limits = &self.cfg.limits;
        let per_ip = self.per_ip.get(&ip).copied().unwrap_or(0);
        let why = if self.conns.len() >= limits.max_connections {
            format!(
                "too many connections (max_connections {})",
                limits.max_connections
            )
        } else if per_ip >= limits.max_connections_per_ip {
            format!(
                "too many connections from {ip} (max_connections_per_ip {})",
                limits.max_connections_per_ip
            )
        } else {
            return self.admit(listener, sock, peer, now);
        };
        let proto = self.listeners[listener].settings.proto();
        self.refuse_at_door(sock, proto, peer, Failure::new(Code::Busy, why), now);
    }

    fn refuse_at_door(
        &mut self,
        mut sock: TcpStream,
        proto: Proto,
        peer: SocketAddr,
        f: Failure,
        now: Instant,
    ) {
        let c = &mut self.books.counters;
        c.failed += 1;
        c.rejected[Code::Busy as usize] += 1;
        self.books
            .metrics
            .record(proto, None, Some(Code::Busy), None, None);
        self.books
            .reject_log
            .log(|| format!("busy from {peer}: {}", f.message));
        self.door.make_room(&self.poll);
        let mut reply = Vec::new();
        match proto {
            Proto::Tcp => crate::protocol::reply::write_err(&mut reply, None, false, f.code, &f.message),
            Proto::Http => http::write_failure(&mut reply, &f, None, true),
            // Nothing is said outside a TLS session, and no session is
            // spent on a refusal.
            Proto::Tls | Proto::Https | Proto::Udp => return,
        }
        // A fresh socket's send buffer takes one line; if it does not, the
        // client gets the close alone.
        let _ = sock.write(&reply);
        let _ = sock.shutdown(Shutdown::Write);
        let entry = self.door.refusals.vacant_entry();
        let token = Token(REFUSAL_BASE + entry.key());
        if self
            .poll
            .registry()
            .register(&mut sock, token, Interest::READABLE)
            .is_ok()
        {
            entry.insert(Refusal { sock, since: now });
        }
    }

    /// At the connection limit: closes the connections accepted this turn
    /// whose clients have already gone without a word (not read yet, they
    /// would otherwise count against the limit until the next phase).
    fn reap_gone(&mut self) {
        let fresh: Vec<usize> = self.ready.read.clone();
        for key in fresh {
            if self.conns.get(key).is_some_and(|c| c.sent_nothing_and_left()) {
                self.close(key);
            }
        }
    }

    /// Stops polling the listeners until `until` (or a descriptor is
    /// freed); the kernel's backlog holds new clients meanwhile.
    fn close_door(&mut self, until: Instant) {
        if self.door.is_open() {
            for (_, l) in self.listeners.iter_mut().filter(|(_, l)| !l.stopped) {
                if let Sock::Tcp(s) = &mut l.sock {
                    let _ = self.poll.registry().deregister(s);
                }
            }
        }
        let until = self.door.closed_until.map_or(until, |t| t.max(until));
        self.door.closed_until = Some(until);
    }

    /// Polls the listeners again; registering them reports the clients
    /// already waiting.
    pub(super) fn reopen_door(&mut self) {
        if self.door.is_open() {
            return;
        }
        self.door.closed_until = None;
        for (key, l) in self.listeners.iter_mut().filter(|(_, l)| !l.stopped) {
            if let Sock::Tcp(s) = &mut l.sock {
                let token = Token(LISTENER_BASE + key);
                if let Err(e) = self.poll.registry().register(s, token, Interest::READABLE) {
                    log::warn!("cannot poll the listener on {}: {e}", l.settings.cfg.address);
                }
                self.ready.accept.push(key);
            }
        }
    }
}
