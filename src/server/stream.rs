//! Stream connections: accepting (with `allow`, the connection limits and
//! the EMFILE back-off), reading and framing lines, handing each line to
//! the protocol, writing replies, and closing (lingering when a reply was
//! the last word).

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Interest, Token};

use super::conn::{self, Conn, MAX_PENDING_OUTPUT, State, TlsFailure};
use super::listener::ListenerSettings;
use super::record::Answered;
use super::task::Origin;
use super::{CONN_BASE, Server, Sock, canonical};
use crate::ops::{Exec, LoopOp, OPS};
use crate::pool::ListFn;
use crate::protocol::frame::Frame;
use crate::protocol::reply::{write_err, write_ok};
use crate::protocol::{self, Code, Rejection, Request};

/// Reads per connection per readiness event, so one busy client cannot
/// starve the others; a connection cut short is read again next turn.
const READS_PER_EVENT: usize = 16;
/// A TLS client that has not finished its handshake by then is closed.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Plaintext rustls may hold for one connection.
const TLS_BUFFER_LIMIT: usize = 1 << 20;
/// Pause of accept after EMFILE/ENFILE, instead of spinning on it.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

impl Server {
    pub(super) fn accept(&mut self, index: usize, now: Instant) {
        if self.accept_paused_until.is_some_and(|t| now < t) {
            return;
        }
        self.accept_paused_until = None;
        loop {
            let Some(Sock::Tcp(listener)) = self.listeners.get(index).map(|l| &l.sock) else {
                return;
            };
            let (stream, peer) = match listener.accept() {
                Ok(pair) => pair,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                    log::warn!("out of file descriptors; pausing accept for {ACCEPT_BACKOFF:?}");
                    self.accept_paused_until = Some(now + ACCEPT_BACKOFF);
                    return;
                }
                Err(e) => {
                    log::warn!("accept on {}: {e}", self.listeners[index].settings.cfg.address);
                    return;
                }
            };
            self.admit_conn(index, stream, peer, now);
        }
    }

    pub(super) fn admit_conn(
        &mut self,
        index: usize,
        mut stream: mio::net::TcpStream,
        peer: SocketAddr,
        now: Instant,
    ) {
        let ip = canonical(peer.ip());
        let settings = Rc::clone(&self.listeners[index].settings);
        if !settings.admits(ip) {
            // Refused by `allow`: closed without a word.
            return;
        }
        let _ = stream.set_nodelay(true);
        let limits = &self.cfg.limits;
        let per_ip = self.per_ip.get(&ip).copied().unwrap_or(0);
        let over = if self.conns.len() >= limits.max_connections {
            Some(format!(
                "too many connections (max_connections {})",
                limits.max_connections
            ))
        } else if per_ip >= limits.max_connections_per_ip {
            Some(format!(
                "too many connections from {ip} (max_connections_per_ip {})",
                limits.max_connections_per_ip
            ))
        } else {
            None
        };
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let id = self.next_conn_id;
        self.next_conn_id += 1;
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            Token(CONN_BASE + key),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            log::warn!("cannot register a connection from {peer}: {e}");
            return;
        }
        let tls = match settings
            .tls
            .as_ref()
            .map(|cfg| rustls::ServerConnection::new(Arc::clone(cfg)))
        {
            Some(Ok(mut session)) => {
                // Bounds the plaintext rustls holds for a slow reader, like
                // the 1 MiB output cap of a plain connection.
                session.set_buffer_limit(Some(TLS_BUFFER_LIMIT));
                Some(Box::new(session))
            }
            Some(Err(e)) => {
                log::warn!("cannot start a TLS session for {peer}: {e}");
                return;
            }
            None => None,
        };
        let mut conn = Conn::new(id, stream, peer, settings, now);
        conn.tls = tls;
        *self.per_ip.entry(ip).or_insert(0) += 1;
        if let Some(message) = over {
            self.counters.rejected[Code::Busy as usize] += 1;
            self.counters.failed += 1;
            conn.reply_now(|out| write_err(out, None, false, Code::Busy, &message));
            conn.state = State::Finishing;
            entry.insert(conn);
            self.dirty.push(key);
            return;
        }
        entry.insert(conn);
        // Data may have arrived with the connection; edge-triggered
        // readiness would not report it again.
        self.conn_readable(key, now);
    }

    /// Whether a connection must stop taking requests for now.
    pub(super) fn blocked(&self, c: &Conn) -> bool {
        c.inflight >= self.cfg.limits.max_inflight_per_conn
            || self.sched.incoming_is_full()
            || c.pending_output() > MAX_PENDING_OUTPUT
    }

    /// Whether a connection may not read more because all buffers together
    /// exceed `max_buffered_bytes`: every connection holding data waits
    /// (the largest holders longest); one holding nothing may still bring
    /// in a request, and requests already read are still served.
    fn over_memory(&self, c: &Conn) -> bool {
        self.total_buffered > self.cfg.limits.max_buffered_bytes && c.counted > 0
    }

    pub(super) fn conn_readable(&mut self, key: usize, now: Instant) {
        let mut scratch = std::mem::take(&mut self.scratch);
        self.read_conn(key, &mut scratch, now);
        self.scratch = scratch;
        self.sync_buffered(key);
        self.maybe_finish(key, now);
    }

    pub(super) fn read_conn(&mut self, key: usize, scratch: &mut [u8], now: Instant) {
        let Some(c) = self.conns.get_mut(key) else { return };
        if let State::Lingering { .. } = c.state {
            if c.drain_input(scratch) == conn::Step::Close {
                self.close(key);
            }
            return;
        }
        for _ in 0..READS_PER_EVENT {
            if !self.feed(key, now) {
                return;
            }
            self.sync_buffered(key);
            let Some(c) = self.conns.get(key) else { return };
            if c.state != State::Open || c.eof {
                return;
            }
            if self.over_memory(c) {
                self.paused.push(key);
                return;
            }
            let Some(c) = self.conns.get_mut(key) else { return };
            match c.read(scratch) {
                Ok(0) => {
                    c.eof = true;
                    self.feed(key, now);
                    if let Some(c) = self.conns.get_mut(key)
                        && c.state == State::Open
                        && c.rbuf.is_empty()
                    {
                        c.state = State::Finishing;
                    }
                    return;
                }
                Ok(n) => {
                    c.rbuf.extend_from_slice(&scratch[..n]);
                    self.sync_buffered(key);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.feed(key, now);
                    if let Some(c) = self.conns.get_mut(key) {
                        c.shrink();
                    }
                    return;
                }
                Err(e) => {
                    if let Some(failure) = e.get_ref().and_then(|r| r.downcast_ref::<TlsFailure>()) {
                        self.counters.tls_failures += 1;
                        let peer = c.peer;
                        let what = if c.handshaking() { "handshake" } else { "session" };
                        self.tls_log
                            .log(|| format!("TLS {what} with {peer} failed: {failure}"));
                    } else {
                        log::debug!("read from {}: {e}", c.peer);
                    }
                    // Whatever rustls queued (an alert) is its last word.
                    let _ = c.flush(now);
                    self.close(key);
                    return;
                }
            }
        }
        self.feed(key, now);
        self.again.push(Token(CONN_BASE + key));
    }

    /// Frames and handles the buffered lines of a connection while it may
    /// take requests. Returns false when it is paused or gone.
    pub(super) fn feed(&mut self, key: usize, now: Instant) -> bool {
        let Some(c) = self.conns.get_mut(key) else {
            return false;
        };
        let mut buf = std::mem::take(&mut c.rbuf);
        let eof = c.eof;
        let settings = Rc::clone(&c.settings);
        let mut pos = 0;
        let mut open = true;
        loop {
            let Some(c) = self.conns.get(key) else {
                open = false;
                break;
            };
            if c.state != State::Open {
                // After `quit`, the rest of the input is not read.
                buf.clear();
                pos = 0;
                open = false;
                break;
            }
            if self.blocked(c) {
                self.paused.push(key);
                open = false;
                break;
            }
            let more = if settings.is_http() {
                self.http_step(key, &settings, &buf, &mut pos, now)
            } else {
                self.line_step(key, &settings, &buf, &mut pos, eof, now)
            };
            if !more {
                break;
            }
        }
        buf.drain(..pos);
        if let Some(c) = self.conns.get_mut(key) {
            c.rbuf = buf;
            // At EOF, whatever is left unframed while the connection may
            // still read is an HTTP request cut short: it gets no answer.
            let cut_short = open && settings.is_http();
            if c.eof && c.state == State::Open && (c.rbuf.is_empty() || cut_short) {
                c.rbuf.clear();
                c.state = State::Finishing;
            }
        }
        self.dirty.push(key);
        open
    }
    /// Frames and handles one line of a line-protocol connection; false
    /// when no complete line is left.
    fn line_step(
        &mut self,
        key: usize,
        settings: &ListenerSettings,
        buf: &[u8],
        pos: &mut usize,
        eof: bool,
        now: Instant,
    ) -> bool {
        let max = self.cfg.limits.max_line_bytes;
        let Some(c) = self.conns.get_mut(key) else {
            return false;
        };
        match c.framer.next(buf, pos, max, eof) {
            None => return false,
            Some(Frame::TooLong { json }) => {
                c.last_active = now;
                self.answer_rejection(key, &Rejection::too_long(json, max));
            }
            Some(Frame::Line(line)) => {
                if !protocol::is_blank(line) {
                    c.last_active = now;
                    self.handle_line(key, settings, line, now);
                }
            }
        }
        true
    }

    pub(super) fn handle_line(&mut self, key: usize, settings: &ListenerSettings, line: &[u8], now: Instant) {
        let mut parsed = protocol::parse_line(line, &self.parse_ctx(settings));
        if let Some(user) = self.conns.get(key).and_then(|c| c.cert_user.as_ref()) {
            attribute_to(&mut parsed, user);
        }
        if self.refusing(now) {
            let rej = Rejection::shutting_down(&parsed);
            self.answer_rejection(key, &rej);
            return;
        }
        let req = match parsed {
            Ok(r) => r,
            Err(rej) => {
                self.answer_rejection(key, &rej);
                return;
            }
        };
        match OPS[req.op].exec {
            Exec::Loop(op) => {
                // Counted first, so that `users` sees its own request.
                self.account(req.user.as_deref(), None);
                let output = self.loop_op(op);
                let Some(c) = self.conns.get_mut(key) else { return };
                c.reply_now(|out| write_ok(out, req.id.as_ref(), req.json, &output));
                let peer = Rc::clone(&c.peer_text);
                if op == LoopOp::Quit {
                    c.state = State::Finishing;
                }
                self.log_answer(&Answered::immediate(settings.proto(), &peer, &req, Ok(&output)));
            }
            Exec::List(exec) if self.inline_list(key, settings, &req, exec) => {}
            Exec::List(_) | Exec::Pi => {
                let Some(c) = self.conns.get_mut(key) else { return };
                let seq = c.reserve();
                let origin = Origin::Conn { key, conn: c.id, seq };
                let (proto, peer) = (settings.proto(), Rc::clone(&c.peer_text));
                self.enqueue(req, origin, proto, peer, None, now);
            }
        }
    }

    /// A tiny list request computed on the loop (see `run_inline`), its
    /// reply written straight into the connection's output: no task, no
    /// reply slot, no copy. False when the request is not one for that.
    fn inline_list(&mut self, key: usize, settings: &ListenerSettings, req: &Request, exec: ListFn) -> bool {
        let Some(peer) = self.conns.get(key).map(|c| Rc::clone(&c.peer_text)) else {
            return false;
        };
        let Some(result) = self.run_inline(settings.proto(), &peer, req, exec) else {
            return false;
        };
        if let Some(c) = self.conns.get_mut(key) {
            match &result {
                Ok(out) => c.reply_now(|o| write_ok(o, req.id.as_ref(), req.json, out)),
                Err((code, msg)) => c.reply_now(|o| write_err(o, req.id.as_ref(), req.json, *code, msg)),
            }
        }
        true
    }

    pub(super) fn answer_rejection(&mut self, key: usize, rej: &Rejection) {
        let Some(c) = self.conns.get_mut(key) else { return };
        c.reply_now(|out| write_err(out, rej.id.as_ref(), rej.json, rej.code, &rej.message));
        let (proto, peer) = (c.settings.proto(), Rc::clone(&c.peer_text));
        self.record(Answered::rejected(proto, &peer, rej));
    }

    pub(super) fn resume_paused(&mut self, now: Instant) {
        if self.paused.is_empty() {
            return;
        }
        let mut paused = std::mem::take(&mut self.paused);
        paused.sort_unstable();
        paused.dedup();
        for key in paused {
            let blocked = match self.conns.get(key) {
                Some(c) => self.blocked(c) || self.over_memory(c),
                None => continue,
            };
            if blocked {
                self.paused.push(key);
            } else {
                self.conn_readable(key, now);
            }
        }
        // Resuming may have queued tasks that idle workers can take.
        self.pump(now);
    }

    pub(super) fn flush_dirty(&mut self, now: Instant) {
        while !self.dirty.is_empty() {
            let mut dirty = std::mem::take(&mut self.dirty);
            dirty.sort_unstable();
            dirty.dedup();
            for key in dirty {
                let Some(c) = self.conns.get_mut(key) else {
                    continue;
                };
                if let Err(e) = c.flush(now) {
                    log::debug!("write to {}: {e}", c.peer);
                    self.close(key);
                    continue;
                }
                let unblocked = c.pending_output() <= MAX_PENDING_OUTPUT;
                self.sync_buffered(key);
                self.maybe_finish(key, now);
                if unblocked && self.paused.contains(&key) {
                    self.resume_paused(now);
                }
            }
        }
    }

    /// Closes a finishing connection once every reply it owes is sent.
    pub(super) fn maybe_finish(&mut self, key: usize, now: Instant) {
        let Some(c) = self.conns.get_mut(key) else { return };
        if c.state != State::Finishing || !c.all_sent() {
            return;
        }
        if c.eof {
            // A TLS session ends with our close_notify too (best effort:
            // the client has stopped sending, it may still read).
            c.close_notify();
            self.close(key);
        } else {
            c.linger(now);
        }
    }

    pub(super) fn close(&mut self, key: usize) {
        if !self.conns.contains(key) {
            return;
        }
        let mut c = self.conns.remove(key);
        self.total_buffered -= c.counted;
        let _ = self.poll.registry().deregister(&mut c.stream);
        let ip = canonical(c.peer.ip());
        if let Some(n) = self.per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
        }
    }

    /// Keeps the count of all bytes held by connection buffers up to date
    /// after a change to connection `key`: `max_buffered_bytes` is checked
    /// against it before every read.
    pub(super) fn sync_buffered(&mut self, key: usize) {
        let Some(c) = self.conns.get_mut(key) else { return };
        let now_held = c.buffered();
        let before = self.total_buffered;
        self.total_buffered = self.total_buffered - c.counted + now_held;
        c.counted = now_held;
        let max = self.cfg.limits.max_buffered_bytes;
        if before <= max && self.total_buffered > max {
            let total = self.total_buffered;
            self.buffers_log.log(|| {
                format!("buffers hold {total} bytes, over max_buffered_bytes ({max}); connections holding data wait")
            });
        }
    }

    /// Idle timeouts and lingering deadlines.
    pub(super) fn expire_connections(&mut self, now: Instant) {
        let idle = self.cfg.limits.idle_timeout;
        let mut expired = Vec::new();
        for (key, c) in self.conns.iter() {
            match c.state {
                State::Lingering { until } if now >= until => expired.push((key, true)),
                State::Lingering { .. } => {}
                _ if c.handshaking() && now.duration_since(c.accepted) >= TLS_HANDSHAKE_TIMEOUT => {
                    let peer = c.peer;
                    self.counters.tls_failures += 1;
                    self.tls_log
                        .log(|| format!("TLS handshake with {peer} timed out"));
                    expired.push((key, true));
                }
                _ => {
                    let Some(idle) = idle else { continue };
                    if c.inflight == 0 && now.duration_since(c.last_active) >= idle {
                        // Output that made no progress for that long will
                        // not be read: close outright.
                        expired.push((key, c.pending_output() > 0));
                    }
                }
            }
        }
        for (key, hard) in expired {
            if hard {
                self.close(key);
            } else if let Some(c) = self.conns.get_mut(key) {
                log::debug!("closing idle connection from {}", c.peer);
                c.state = State::Finishing;
                self.maybe_finish(key, now);
            }
        }
    }
}

/// Mutual TLS: a request without `@user` counts for the user its client
/// certificate names.
pub(super) fn attribute_to(parsed: &mut Result<crate::protocol::Request, Rejection>, user: &str) {
    let slot = match parsed {
        Ok(r) => &mut r.user,
        Err(r) => &mut r.user,
    };
    if slot.is_none() {
        *slot = Some(user.to_string());
    }
}
