//! Stream connections (TCP, TLS, HTTP, HTTPS): the socket side of a
//! [`Session`]. Reading (plain or through rustls) into the session, taking
//! its requests while the connection may (backpressure, the memory
//! budget), writing its output, and closing (lingering when a reply was the
//! last word).
//!
//! Each request taken goes to the one dispatch (`dispatch.rs`): a line
//! framed and parsed by `crate::protocol`, or an HTTP request routed by
//! `crate::http`.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Token};

use super::budget::{Holder, SMALL};
use super::conn::{Ending, Framed, Hold, Phase, READ_CHUNK, Session, Tick};
use super::dispatch::{Origin, Place, TASK_BYTES, ValuesArg};
use super::listener::ListenerSettings;
use super::record::Asked;
use super::{CONN_BASE, Server, canonical};
use crate::http::{self, Action, Parsed};
use crate::metrics::Gauges;
use crate::ops::lookup;
use crate::protocol::{self, Args, Body, Failure, Format, Name, ParseCtx, Payload, Rejection, Request};
use crate::tasks::TaskWork;

/// Reads per connection per turn, so one busy client cannot starve the
/// others; a connection cut short is read again next turn.
const READS_PER_TURN: usize = 16;
/// A TLS client that has not finished its handshake by then is closed.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Plaintext and records rustls may hold for one connection's output.
const TLS_BUFFER_LIMIT: usize = 64 * 1024;
/// Lines at least this long move to their task with the buffer they were
/// read into, instead of being copied.
const MOVE_LINE: usize = 64 * 1024;
/// While draining, a connection quiet for this long is closed; a client
/// that just connected still gets its `shutting-down` answer first.
const DRAIN_IDLE: Duration = Duration::from_secs(1);

/// The rarely used parts of a connection, boxed so an idle plain
/// connection stays small.
struct Extra {
    /// `tls` and `https` listeners: the TLS session, boxed so that a plain
    /// connection's `Extra` (its peer text, once it has sent a request)
    /// does not carry the session's room.
    tls: Option<Box<rustls::ServerConnection>>,
    /// Mutual TLS: the user the client certificate names, once the
    /// handshake is done.
    cert_user: Option<Name>,
    cert_checked: bool,
    /// The peer's address as the results log writes it.
    peer_text: Option<Rc<str>>,
    /// HTTP: "100 Continue" already sent for the request being read.
    continue_sent: bool,
}

pub struct Conn {
    sock: TcpStream,
    pub session: Session,
    settings: Rc<ListenerSettings>,
    /// The client's address, in two parts: a `SocketAddr` would take 32
    /// bytes, and every connection has one.
    ip: IpAddr,
    port: u16,
    accepted: Tick,
    /// The client has shut its side down (EPOLLRDHUP): read to the EOF.
    peer_shut: bool,
    extra: Option<Box<Extra>>,
    /// What this connection adds to the budget's count.
    counted: usize,
}

/// A TLS failure (handshake or record), told apart from socket errors so
/// it can be counted and logged as such.
#[derive(Debug)]
struct TlsFailure(String);

impl std::fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsFailure {}

impl Conn {
    pub fn id(&self) -> u64 {
        self.session.id()
    }

    fn peer(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }

    fn extra(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(|| {
            Box::new(Extra {
                tls: None,
                cert_user: None,
                cert_checked: false,
                peer_text: None,
                continue_sent: false,
            })
        })
    }

    fn tls(&self) -> Option<&rustls::ServerConnection> {
        self.extra.as_ref().and_then(|e| e.tls.as_deref())
    }

    fn handshaking(&self) -> bool {
        self.tls().is_some_and(|t| t.is_handshaking())
    }

    fn peer_text(&mut self) -> Rc<str> {
        let peer = self.peer();
        Rc::clone(
            self.extra()
                .peer_text
                .get_or_insert_with(|| peer.to_string().into()),
        )
    }

    fn origin(&mut self, key: usize) -> Origin {
        let cert_user = self
            .extra
            .as_ref()
            .and_then(|e| e.cert_user)
            .map(|u| (u, self.settings.cfg.allow_user_override));
        Origin {
            place: Place::Conn { key, id: self.id() },
            proto: self.settings.proto(),
            peer: self.peer_text(),
            cert_user,
        }
    }

    /// Reads plaintext into the session (at most `max` bytes), through TLS
    /// when the connection has it.
    fn read(&mut self, buffers: &mut super::conn::Buffers, max: usize, limit: usize) -> io::Result<usize> {
        let Conn {
            sock, session, extra, ..
        } = self;
        session.read_with(buffers, max, limit, |buf, want| read_from(sock, extra, buf, want))
    }

    /// Writes pending output until done or the socket is full.
    fn flush(&mut self, now: Instant) -> io::Result<()> {
        let Some(tls) = self.extra.as_mut().and_then(|e| e.tls.as_mut()) else {
            while !self.session.output().is_empty() {
                match self.sock.write(self.session.output()) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => self.session.wrote(n, now),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            return Ok(());
        };
        loop {
            // Plaintext into rustls, as much as its buffer limit takes.
            while !self.session.output().is_empty() {
                match tls.writer().write(self.session.output())? {
                    0 => break,
                    n => self.session.wrote(n, now),
                }
            }
            if !tls.wants_write() {
                return Ok(());
            }
            match tls.write_tls(&mut self.sock) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => self.session.touch(now),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Whether the client closed without sending a byte, and nothing was
    /// read from it yet: a peek at its socket finds only the EOF.
    pub fn sent_nothing_and_left(&self) -> bool {
        use std::os::fd::AsRawFd;
        if self.session.unframed() > 0 || self.session.inflight() > 0 {
            return false;
        }
        let mut byte = 0u8;
        // SAFETY: a one-byte peek into a local; recv(2) writes at most that.
        let n = unsafe {
            libc::recv(
                self.sock.as_raw_fd(),
                (&raw mut byte).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        n == 0
    }

    /// Whether every byte owed has left for the kernel (TLS records too).
    fn all_written(&self) -> bool {
        self.session.all_sent() && !self.tls().is_some_and(|t| t.wants_write())
    }

    /// TLS: sends close_notify, so the client sees a clean end of the
    /// session rather than a truncation.
    fn close_notify(&mut self) {
        if let Some(tls) = self.extra.as_mut().and_then(|e| e.tls.as_mut()) {
            tls.send_close_notify();
            let _ = tls.write_tls(&mut self.sock);
        }
    }

    /// Discards input of a lingering connection; true at EOF or error.
    fn drain_input(&mut self, scratch: &mut [u8]) -> bool {
        // Raw bytes: whatever a lingering client still sends is dropped
        // unread, TLS or not.
        discard_input(&mut self.sock, scratch) == Discarded::Closed
    }
}

/// What [`discard_input`] found.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Discarded {
    /// EOF or an error: the socket can be closed.
    Closed,
    /// Nothing more to read for now.
    Empty,
    /// The reads of one turn were spent: more may be waiting.
    More,
}

/// Reads and drops what a client still sends (a lingering connection, a
/// refusal), at most 64 reads a turn, so a client that keeps sending
/// cannot hold the loop.
pub(super) fn discard_input(sock: &mut TcpStream, scratch: &mut [u8]) -> Discarded {
    for _ in 0..64 {
        match sock.read(scratch) {
            Ok(0) => return Discarded::Closed,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Discarded::Empty,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Discarded::Closed,
        }
    }
    Discarded::More
}

/// Appends at most `want` bytes of plaintext to `buf` (whose spare
/// capacity is at least that), through TLS when the connection has it,
/// retrying on EINTR. Ok(0) is the peer's EOF.
fn read_from(
    sock: &mut TcpStream,
    extra: &mut Option<Box<Extra>>,
    buf: &mut Vec<u8>,
    want: usize,
) -> io::Result<usize> {
    let Some(extra) = extra.as_mut().filter(|e| e.tls.is_some()) else {
        return read_plain(sock, buf, want);
    };
    // rustls wants initialized room: zero just this read's.
    let len = buf.len();
    buf.resize(len + want, 0);
    let n = read_tls(sock, extra, &mut buf[len..]);
    buf.truncate(len + *n.as_ref().unwrap_or(&0));
    n
}

/// A plain read into `buf`'s spare capacity, which is never zeroed first:
/// a buffer reserved for a large line takes memory only as it fills.
fn read_plain(sock: &mut TcpStream, buf: &mut Vec<u8>, want: usize) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    let want = want.min(buf.capacity() - buf.len());
    loop {
        let spare = buf.spare_capacity_mut();
        // SAFETY: `spare` is valid for writes of `want` bytes (want is at
        // most its length), and read(2) writes at most that many.
        let n = unsafe { libc::read(sock.as_raw_fd(), spare.as_mut_ptr().cast(), want) };
        if n >= 0 {
            let n = n as usize;
            // SAFETY: the first `n` spare bytes were just written by read(2).
            unsafe { buf.set_len(buf.len() + n) };
            return Ok(n);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Reads plaintext through a TLS session into `buf`.
fn read_tls(sock: &mut TcpStream, extra: &mut Extra, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        let Some(tls) = extra.tls.as_mut() else {
            return Ok(0);
        };
        match tls.reader().read(buf) {
            Ok(n) => return Ok(n),
            // The peer closed without close_notify: still its EOF.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        match tls.read_tls(sock) {
            Ok(0) => return Ok(0),
            Ok(_) => {
                if let Err(e) = tls.process_new_packets() {
                    // Let the peer see the alert saying why.
                    let _ = tls.write_tls(sock);
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        TlsFailure(e.to_string()),
                    ));
                }
                if !extra.cert_checked && !tls.is_handshaking() {
                    extra.cert_checked = true;
                    extra.cert_user = tls
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .and_then(crate::tls::certificate_user)
                        .and_then(|u| Name::user(u.as_bytes()));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

fn unix_seconds(t: std::time::SystemTime) -> f64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// What taking one request did.
enum Take {
    Took,
    /// No complete request is left.
    Empty,
    /// The request must wait for memory (it is left where it was).
    Wait,
}

/// What made a connection stop taking requests this turn.
enum Stop {
    /// Nothing to do until the socket is readable again.
    Idle,
    /// Held by inflight tasks or unsent output.
    Held,
    /// Waiting for memory (the budget queued it for a turn).
    Memory,
    /// Cut short by the fairness cap: read again next turn.
    Cap,
    /// Closed or ending.
    Done,
}

impl Server {
    /// A connection accepted by the door: registers it and reads what may
    /// have arrived with it (edge-triggered readiness would not report it
    /// again).
    pub(super) fn admit(&mut self, listener: usize, mut sock: TcpStream, peer: SocketAddr, now: Instant) {
        let settings = Rc::clone(&self.listeners[listener].settings);
        let _ = sock.set_nodelay(true);
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        if let Err(e) = self.poll.registry().register(
            &mut sock,
            Token(CONN_BASE + key),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            log::warn!("cannot register a connection from {peer}: {e}");
            return;
        }
        let id = self.next_conn_id;
        self.next_conn_id += 1;
        let mut conn = Conn {
            sock,
            session: Session::new(id, now),
            settings: Rc::clone(&settings),
            ip: peer.ip(),
            port: peer.port(),
            accepted: Tick::of(now),
            peer_shut: false,
            extra: None,
            counted: 0,
        };
        if let Some(cfg) = &settings.tls {
            match rustls::ServerConnection::new(Arc::clone(cfg)) {
                Ok(mut tls) => {
                    // Bounds what rustls holds for a slow reader, like the
                    // 1 MiB output cap of a plain connection.
                    tls.set_buffer_limit(Some(TLS_BUFFER_LIMIT));
                    conn.extra().tls = Some(Box::new(tls));
                }
                Err(e) => {
                    log::warn!("cannot start a TLS session for {peer}: {e}");
                    let _ = self.poll.registry().deregister(&mut conn.sock);
                    return;
                }
            }
        }
        *self.per_ip.entry(canonical(peer.ip())).or_insert(0) += 1;
        entry.insert(conn);
        self.ready.read.push(key);
    }

    /// Phase 4: reads every connection and UDP socket that has something.
    pub(super) fn read_all(&mut self, now: Instant) {
        let mut keys = std::mem::take(&mut self.ready.read);
        // Connections held by tasks or output that may go on now.
        let max_inflight = self.cfg.limits.max_inflight_per_conn;
        let held = std::mem::take(&mut self.ready.held);
        for key in held {
            match self.conns.get(key) {
                Some(c) if c.session.hold(max_inflight) == Hold::None => keys.push(key),
                Some(_) => self.ready.held.push(key),
                None => {}
            }
        }
        // Connections the memory budget lets read again.
        let conns = &self.conns;
        let alive = |h: Holder| conns.get(h.key).is_some_and(|c| c.id() == h.id);
        // A turn lasts until what the holder brought in is served: until it
        // holds little again (its request answered and its reply read).
        let busy = |h: Holder| {
            conns
                .get(h.key)
                .is_some_and(|c| c.id() == h.id && c.session.held() >= SMALL)
        };
        keys.extend(self.budget.resume(alive, busy).into_iter().map(|h| h.key));
        keys.sort_unstable();
        keys.dedup();
        for key in keys {
            self.serve(key, now);
        }
        for key in std::mem::take(&mut self.ready.udp) {
            self.udp_read(key, now);
        }
    }

    /// Reads one connection and takes its requests, within the caps.
    fn serve(&mut self, key: usize, now: Instant) {
        let Some(c) = self.conns.get_mut(key) else { return };
        if let Phase::Lingering { .. } = c.session.phase() {
            if c.drain_input(&mut self.scratch) {
                self.close(key);
            }
            return;
        }
        let stop = self.serve_reads(key, now);
        match stop {
            Stop::Held => self.ready.held.push(key),
            Stop::Cap => self.ready.read.push(key),
            Stop::Idle | Stop::Memory | Stop::Done => {}
        }
        if let Some(c) = self.conns.get_mut(key) {
            c.session.release_idle(&mut self.buffers);
        }
        self.sync_conn(key);
        self.ready.write.push(key);
    }

    fn serve_reads(&mut self, key: usize, now: Instant) -> Stop {
        for _ in 0..READS_PER_TURN {
            let stop = self.take_requests(key, now);
            let Some(c) = self.conns.get_mut(key) else {
                return Stop::Done;
            };
            if let Some(stop) = stop {
                return stop;
            }
            if !c.session.reading() {
                return Stop::Done;
            }
            let who = Holder { key, id: c.id() };
            let room = self.budget.may_read(who, c.session.held());
            if room == 0 {
                return Stop::Memory;
            }
            let limit = self.cfg.limits.max_line_bytes + 2 * READ_CHUNK;
            match c.read(&mut self.buffers, room, limit) {
                Ok(0) => {
                    c.session.saw_eof();
                    self.take_requests(key, now);
                    return Stop::Done;
                }
                // A plain socket that gave less than asked is empty: a
                // request and its answer take one read, not a second one
                // that would only say WouldBlock. (New data, or the
                // client's EOF, raises a new event; an EOF that came with
                // this data was reported with it, and is read.)
                Ok(n) if n < room.min(READ_CHUNK) && c.tls().is_none() && !c.peer_shut => {
                    self.sync_conn(key);
                    return self.take_requests(key, now).unwrap_or(Stop::Idle);
                }
                Ok(_) => self.sync_conn(key),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return self.take_requests(key, now).unwrap_or(Stop::Idle);
                }
                Err(e) => {
                    self.read_failed(key, &e, now);
                    return Stop::Done;
                }
            }
        }
        self.take_requests(key, now).unwrap_or(Stop::Cap)
    }

    fn read_failed(&mut self, key: usize, e: &io::Error, now: Instant) {
        let Some(c) = self.conns.get_mut(key) else { return };
        if let Some(failure) = e.get_ref().and_then(|r| r.downcast_ref::<TlsFailure>()) {
            self.books.counters.tls_failures += 1;
            let peer = c.peer();
            let what = if c.handshaking() { "handshake" } else { "session" };
            self.books
                .tls_log
                .log(|| format!("TLS {what} with {peer} failed: {failure}"));
        } else {
            log::debug!("read from {}: {e}", c.peer());
        }
        // Whatever rustls queued (an alert) is its last word.
        let _ = c.flush(now);
        self.close(key);
    }

    /// Takes the complete requests a connection holds, while it may.
    /// Returns why it stopped, or None when it wants more input.
    fn take_requests(&mut self, key: usize, now: Instant) -> Option<Stop> {
        let max_inflight = self.cfg.limits.max_inflight_per_conn;
        loop {
            let c = self.conns.get_mut(key)?;
            if c.session.phase() != Phase::Open {
                c.session.discard_input();
                return Some(Stop::Done);
            }
            if c.session.unframed() == 0 && !c.session.eof() {
                return None;
            }
            if c.session.hold(max_inflight) != Hold::None || self.tasks.is_full() {
                return Some(Stop::Held);
            }
            let took = if c.settings.is_http() {
                self.take_http(key, now)
            } else {
                self.take_line(key, now)
            };
            match took {
                Take::Took => {}
                Take::Empty => return None,
                Take::Wait => return Some(Stop::Memory),
            }
        }
    }

    /// Whether a connection may take a request that makes it hold `need`
    /// more bytes (the budget's rule); if not, it waits for its turn.
    fn may_take(&mut self, key: usize, need: usize) -> bool {
        let Some(c) = self.conns.get(key) else {
            return false;
        };
        let who = Holder { key, id: c.id() };
        self.budget
            .may_take(who, c.session.held(), need, c.session.inflight())
    }

    /// Frames and dispatches one line.
    fn take_line(&mut self, key: usize, now: Instant) -> Take {
        let max = self.cfg.limits.max_line_bytes;
        let Some(c) = self.conns.get_mut(key) else {
            return Take::Empty;
        };
        let Some(frame) = c.session.next_frame(max) else {
            return Take::Empty;
        };
        let origin = c.origin(key);
        let range = match frame {
            Framed::TooLong { json } => {
                c.session.touch(now);
                let format = if json { Format::Json } else { Format::Text };
                // `too-long` comes first: even a draining daemon says it.
                self.refuse(&origin, &Rejection::bare(format, Failure::too_long(max)));
                return Take::Took;
            }
            Framed::Line(range) => range,
        };
        if protocol::is_blank(c.session.line(range.clone())) {
            return Take::Took;
        }
        let settings = Rc::clone(&c.settings);
        let ctx = self.parse_ctx(&settings);
        let parsed = protocol::parse_line(self.conns[key].session.line(range.clone()), &ctx);
        if let Ok(req) = &parsed
            && !self.may_take(key, self.task_bytes(req, range.len()))
        {
            // Framed again when its turn comes.
            self.conns[key].session.unframe(range.start);
            return Take::Wait;
        }
        let c = &mut self.conns[key];
        c.session.touch(now);
        let values = match &parsed {
            Ok(Request {
                args: Args::Values { span, syntax, .. },
                ..
            }) => Some((range.start + span.start..range.start + span.end, *syntax)),
            _ => None,
        };
        match values {
            // A big line moves to its task with the buffer it was read into.
            Some((at, syntax)) if range.len() >= MOVE_LINE => {
                let bytes = c.session.take_line_buffer(&range).unwrap_or_default();
                let payload = Payload {
                    bytes,
                    span: at,
                    syntax,
                };
                self.dispatch(&origin, parsed, Some(ValuesArg::Owned(payload)), now);
            }
            // A small one is copied into the loop's own buffer for the time
            // of the dispatch: computed at once, it costs no allocation.
            Some((at, syntax)) => {
                let mut text = std::mem::take(&mut self.line);
                text.clear();
                text.extend_from_slice(c.session.line(at));
                self.dispatch(&origin, parsed, Some(ValuesArg::Borrowed(&text, syntax)), now);
                self.line = text;
            }
            None => self.dispatch(&origin, parsed, None, now),
        }
        Take::Took
    }

    /// Parses and handles one HTTP request.
    fn take_http(&mut self, key: usize, now: Instant) -> Take {
        let max = self.cfg.limits.max_line_bytes;
        let Some(c) = self.conns.get(key) else {
            return Take::Empty;
        };
        // The request borrows the input: it is routed to an owned Action
        // before the connection is touched again.
        let routed = match http::parse_request(c.session.unframed_input(), max) {
            Parsed::Request { mut req, consumed } => {
                let settings = Rc::clone(&c.settings);
                let close = !req.keep_alive || self.refusing(now);
                let head = req.method == "HEAD";
                let action = http::route(&mut req, &self.parse_ctx(&settings), close);
                Ok((action, consumed, close, head))
            }
            Parsed::Incomplete => Err(None),
            Parsed::Error(e) => Err(Some(e)),
        };
        let Some(c) = self.conns.get_mut(key) else {
            return Take::Empty;
        };
        match routed {
            Err(None) => {
                if c.session.eof() {
                    // A request cut short by EOF gets no answer.
                    c.session.discard_input();
                    c.session.finish();
                    return Take::Empty;
                }
                // curl waits for "100 Continue" before a larger body.
                if !c.extra.as_ref().is_some_and(|e| e.continue_sent)
                    && http::expect_continue(c.session.unframed_input(), max)
                {
                    c.extra().continue_sent = true;
                    c.session
                        .reply_now(&mut self.buffers, |out| out.extend_from_slice(http::CONTINUE));
                }
                Take::Empty
            }
            Err(Some(e)) => {
                // Every parse error closes the connection (`e.close`).
                self.handle_http(key, Action::Error(e), true, false, now);
                Take::Empty
            }
            Ok((action, consumed, close, head)) => {
                let need = match &action {
                    Action::Request { req, bytes } => self.task_bytes(req, bytes.len()),
                    Action::Statistics => self.books.users.rendered_size(),
                    _ => 0,
                };
                if !self.may_take(key, need) {
                    // Parsed again from the buffer when its turn comes.
                    return Take::Wait;
                }
                let Some(c) = self.conns.get_mut(key) else {
                    return Take::Empty;
                };
                c.session.consume(consumed);
                c.session.touch(now);
                if let Some(e) = c.extra.as_mut() {
                    e.continue_sent = false;
                }
                self.handle_http(key, action, close, head, now);
                if close {
                    self.end_requests(key);
                }
                Take::Took
            }
        }
    }

    fn handle_http(&mut self, key: usize, action: Action, close: bool, head: bool, now: Instant) {
        let Some(c) = self.conns.get_mut(key) else { return };
        let origin = c.origin(key);
        let reply = |server: &mut Server, write: &dyn Fn(&mut Vec<u8>)| {
            if let Some(c) = server.conns.get_mut(key) {
                c.session.reply_now(&mut server.buffers, |out| {
                    let start = out.len();
                    write(out);
                    if head {
                        http::strip_body(out, start);
                    }
                });
                server.ready.write.push(key);
            }
        };
        match action {
            Action::Request { req, bytes } => {
                let payload = match &req.args {
                    Args::Values { span, syntax, .. } => Some(ValuesArg::Owned(Payload {
                        bytes,
                        span: span.clone(),
                        syntax: *syntax,
                    })),
                    _ => None,
                };
                self.dispatch(&origin, Ok(req), payload, now);
            }
            Action::Reject(rej) => self.dispatch(&origin, Err(rej), None, now),
            Action::Statistics => {
                let enabled = lookup("users").is_some_and(|op| self.cfg.op_enabled(op));
                if !enabled {
                    let e = http::HttpError::new(
                        404,
                        "not-found",
                        "the users operation is disabled".into(),
                        close,
                    );
                    reply(self, &|out| http::write_error(out, &e, &[]));
                    return;
                }
                let asked = Asked {
                    proto: origin.proto,
                    peer: origin.peer,
                    user: None,
                    id: None,
                    op: lookup("users"),
                    count: 0,
                    values: Vec::new(),
                    quiet: true,
                    counted: true,
                };
                let held = self.books.users.rendered_size() + TASK_BYTES;
                let format = Format::Http {
                    body: Body::Table,
                    close,
                    head,
                };
                self.enqueue(origin.place, format, asked, TaskWork::Users, 1, held, now);
            }
            Action::Healthz => {
                let (status, body) = http::healthz_body(self.life.draining());
                reply(self, &|out| {
                    http::write_response(out, status, http::JSON_CONTENT_TYPE, &[], body, close)
                });
            }
            Action::Metrics => {
                let body = self.books.metrics.render(&self.gauges());
                reply(self, &|out| {
                    http::write_response(out, 200, http::METRICS_CONTENT_TYPE, &[], body.as_bytes(), close)
                });
            }
            Action::Error(mut e) => {
                e.close |= close;
                self.books.metrics.record_http_error(origin.proto, e.code);
                reply(self, &|out| http::write_error(out, &e, &[]));
                if e.close {
                    self.end_requests(key);
                }
            }
        }
    }

    fn gauges(&self) -> Gauges {
        let mut connections: Vec<(&'static str, usize)> = Vec::new();
        for (_, c) in self.conns.iter() {
            let p = c.settings.proto().as_str();
            match connections.iter_mut().find(|(q, _)| *q == p) {
                Some((_, n)) => *n += 1,
                None => connections.push((p, 1)),
            }
        }
        Gauges {
            incoming: self.tasks.incoming_len(),
            ready: self.tasks.ready_len(),
            running: self.tasks.running(),
            connections,
            users: self.books.users.len(),
            results_log_write_errors: self.books.files.write_errors(),
            config_last_reload_successful: self.life.last_reload_ok,
            config_last_reload_seconds: unix_seconds(self.life.config_loaded_at),
            udp_lines_dropped: self.books.counters.udp_lines_dropped,
            udp_replies_dropped: self.books.counters.udp_replies_dropped,
            tls_failures: self.books.counters.tls_failures,
            version: env!("CARGO_PKG_VERSION"),
            process: crate::metrics::Process::read(unix_seconds(self.life.started_at)),
        }
    }

    pub(super) fn parse_ctx<'a>(&self, l: &'a ListenerSettings) -> ParseCtx<'a> {
        ParseCtx {
            max_values: self.cfg.limits.max_values,
            max_samples: l.max_samples,
            allowed: &l.allowed,
            udp: l.proto() == crate::config::Proto::Udp,
        }
    }

    /// No more requests are taken from this connection (`quit`, an HTTP
    /// `Connection: close`): the replies owed are written, then it closes.
    pub(super) fn end_requests(&mut self, key: usize) {
        if let Some(c) = self.conns.get_mut(key) {
            c.session.discard_input();
            c.session.finish();
            self.ready.write.push(key);
        }
    }

    /// The peer shut its side down (EPOLLRDHUP). A connection waiting for
    /// memory goes first in line, so its end is noticed and what it holds
    /// is freed soon.
    pub(super) fn peer_closed(&mut self, key: usize) {
        if let Some(c) = self.conns.get_mut(key) {
            c.peer_shut = true;
            self.budget.prefer(Holder { key, id: c.id() });
        }
    }

    /// Phase 6: writes every connection with new output, then ends those
    /// that are done.
    pub(super) fn write_all(&mut self, now: Instant) {
        let mut keys = std::mem::take(&mut self.ready.write);
        keys.sort_unstable();
        keys.dedup();
        let max_inflight = self.cfg.limits.max_inflight_per_conn;
        for key in keys {
            let Some(c) = self.conns.get_mut(key) else {
                continue;
            };
            if let Phase::Lingering { .. } = c.session.phase() {
                continue;
            }
            let was_held = c.session.hold(max_inflight) == Hold::Output;
            if let Err(e) = c.flush(now) {
                log::debug!("write to {}: {e}", c.peer());
                self.close(key);
                continue;
            }
            if was_held && c.session.hold(max_inflight) != Hold::Output {
                self.ready.held.push(key);
            }
            self.end_if_done(key, now);
            if let Some(c) = self.conns.get_mut(key) {
                c.session.release_idle(&mut self.buffers);
            }
            self.sync_conn(key);
        }
        for key in std::mem::take(&mut self.ready.udp_write) {
            self.udp_flush_out(key);
        }
    }

    /// Closes or lingers a connection whose replies are all written and
    /// that takes no more requests.
    fn end_if_done(&mut self, key: usize, now: Instant) {
        let Some(c) = self.conns.get_mut(key) else { return };
        if !c.all_written() {
            return;
        }
        match c.session.ending() {
            Ending::No => {}
            Ending::Close => {
                // A TLS session ends with our close_notify too (best
                // effort: the client has stopped sending, it may read).
                c.close_notify();
                self.close(key);
            }
            Ending::Linger => {
                c.close_notify();
                let _ = c.sock.shutdown(Shutdown::Write);
                c.session.linger(now, &mut self.buffers);
                self.sync_conn(key);
                // What the client sent meanwhile must be read to see EOF.
                self.ready.read.push(key);
            }
        }
    }

    pub(super) fn close(&mut self, key: usize) {
        if !self.conns.contains(key) {
            return;
        }
        let mut c = self.conns.remove(key);
        self.budget.update(c.counted, 0);
        self.budget.forget(Holder { key, id: c.id() });
        let _ = self.poll.registry().deregister(&mut c.sock);
        let ip = canonical(c.ip);
        if let Some(n) = self.per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
        }
        // A descriptor is free again.
        self.door.freed();
    }

    /// Brings the budget's count of a connection up to date.
    pub(super) fn sync_conn(&mut self, key: usize) {
        let Some(c) = self.conns.get_mut(key) else { return };
        let now_held = c.session.held();
        self.budget.update(c.counted, now_held);
        c.counted = now_held;
    }

    /// Idle timeouts, lingering deadlines, TLS handshake timeouts, and the
    /// drain's closing of quiet connections.
    pub(super) fn expire_connections(&mut self, now: Instant) {
        let idle = self.cfg.limits.idle_timeout;
        let draining = self.refusing(now);
        let mut hard = Vec::new();
        let mut soft = Vec::new();
        for (key, c) in self.conns.iter() {
            let s = &c.session;
            match s.phase() {
                Phase::Lingering { until } if until.reached(now) => hard.push(key),
                Phase::Lingering { .. } => {}
                _ if c.handshaking() && c.accepted.until(now) >= TLS_HANDSHAKE_TIMEOUT => {
                    let peer = c.peer();
                    self.books.counters.tls_failures += 1;
                    self.books
                        .tls_log
                        .log(|| format!("TLS handshake with {peer} timed out"));
                    hard.push(key);
                }
                _ if draining
                    && s.phase() == Phase::Open
                    && s.inflight() == 0
                    && s.all_sent()
                    && s.idle_for(now) >= DRAIN_IDLE =>
                {
                    soft.push(key);
                }
                _ => {
                    let Some(idle) = idle else { continue };
                    if s.inflight() == 0 && s.idle_for(now) >= idle {
                        // Output that made no progress for that long will
                        // not be read: close outright.
                        if s.pending_output() > 0 {
                            hard.push(key);
                        } else {
                            soft.push(key);
                        }
                    }
                }
            }
        }
        for key in hard {
            // Whatever the client sent meanwhile is read first: closing a
            // socket with unread input would reset the connection, and the
            // client might lose the replies it has not read yet.
            if let Some(c) = self.conns.get_mut(key) {
                c.drain_input(&mut self.scratch);
            }
            self.close(key);
        }
        for key in soft {
            if let Some(c) = self.conns.get(key) {
                log::debug!("closing idle connection from {}", c.peer());
            }
            self.end_requests(key);
            self.end_if_done(key, now);
        }
    }
}
