//! One stream connection's state: its socket, the bytes read but not yet
//! framed, the replies waiting for earlier ones (so replies leave in
//! request order whatever order the tasks finish in), and the output not
//! yet accepted by the kernel.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;

use super::listener::ListenerSettings;
use crate::protocol::frame::Framer;

/// Unsent output above which a connection is not read further.
pub const MAX_PENDING_OUTPUT: usize = 1 << 20;
/// How long a lingering close waits for the client's EOF.
pub const LINGER: Duration = Duration::from_secs(2);
/// Output buffers larger than this are released once empty, so one large
/// reply does not pin memory for the connection's lifetime.
const KEEP_CAPACITY: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Reading requests and writing replies.
    Open,
    /// No more requests will be read (EOF, `quit`, idle timeout, drain):
    /// finish the replies owed, then close.
    Finishing,
    /// Write side shut down; reading and discarding until the client's EOF
    /// or the deadline, so it gets the last replies rather than a reset.
    Lingering { until: Instant },
}

/// What the owner should do after an I/O step.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    Continue,
    Close,
}

pub struct Conn {
    /// Unique for the daemon's lifetime: a result for a connection that
    /// has gone never reaches a new one that reuses its slot.
    pub id: u64,
    pub stream: TcpStream,
    pub peer: SocketAddr,
    /// `peer` as text, for the results log: formatted once.
    pub peer_text: Rc<str>,
    /// The listener's settings when the connection was accepted.
    pub settings: Rc<ListenerSettings>,
    pub state: State,
    pub framer: Framer,
    /// Read but not yet framed (an incomplete line, or lines left while the
    /// connection was paused).
    pub rbuf: Vec<u8>,
    /// The client sent EOF.
    pub eof: bool,
    pub wbuf: Vec<u8>,
    wpos: usize,
    /// Replies of requests `next_out..`: None while the task runs.
    slots: VecDeque<Option<Vec<u8>>>,
    /// Bytes of the replies waiting in `slots`.
    slot_bytes: usize,
    /// What this connection currently adds to the loop's count of all
    /// buffered bytes (see `Server::sync_buffered`).
    pub counted: usize,
    next_out: u64,
    /// Tasks in the scheduler or on a worker.
    pub inflight: usize,
    /// HTTP: "100 Continue" already sent for the request being read.
    pub continue_sent: bool,
    /// `tls` and `https` listeners: the TLS session.
    pub tls: Option<Box<rustls::ServerConnection>>,
    /// Mutual TLS: the user the client certificate names, once the
    /// handshake is done.
    pub cert_user: Option<String>,
    cert_checked: bool,
    pub accepted: Instant,
    /// Last moment the connection made progress (a complete request read,
    /// or output written).
    pub last_active: Instant,
}

impl Conn {
    pub fn new(
        id: u64,
        stream: TcpStream,
        peer: SocketAddr,
        settings: Rc<ListenerSettings>,
        now: Instant,
    ) -> Conn {
        Conn {
            id,
            stream,
            peer,
            peer_text: peer.to_string().into(),
            settings,
            state: State::Open,
            framer: Framer::default(),
            rbuf: Vec::new(),
            eof: false,
            wbuf: Vec::new(),
            wpos: 0,
            slots: VecDeque::new(),
            slot_bytes: 0,
            counted: 0,
            next_out: 0,
            inflight: 0,
            continue_sent: false,
            tls: None,
            cert_user: None,
            cert_checked: false,
            accepted: now,
            last_active: now,
        }
    }

    /// Output not yet handed to the kernel (TLS records still held by
    /// rustls count as one byte: enough to say "not all sent").
    pub fn pending_output(&self) -> usize {
        let tls_pending = self.tls.as_ref().is_some_and(|t| t.wants_write());
        self.wbuf.len() - self.wpos + usize::from(tls_pending)
    }

    /// A TLS connection still in its handshake.
    pub fn handshaking(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.is_handshaking())
    }

    /// Bytes this connection holds in buffers.
    pub fn buffered(&self) -> usize {
        self.rbuf.len() + self.wbuf.len() - self.wpos + self.slot_bytes
    }

    /// Appends a reply that is ready now, behind any still owed.
    pub fn reply_now(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        if self.slots.is_empty() {
            write(&mut self.wbuf);
        } else {
            let mut v = Vec::new();
            write(&mut v);
            self.slot_bytes += v.len();
            self.slots.push_back(Some(v));
        }
    }

    /// Reserves the place of a reply that a task will produce.
    pub fn reserve(&mut self) -> u64 {
        let seq = self.next_out + self.slots.len() as u64;
        self.slots.push_back(None);
        self.inflight += 1;
        seq
    }

    /// Fills a reserved place; moves every reply now in order to output.
    pub fn fill(&mut self, seq: u64, reply: Vec<u8>) {
        let Some(i) = seq.checked_sub(self.next_out) else {
            return;
        };
        if let Some(slot) = self.slots.get_mut(i as usize) {
            self.slot_bytes += reply.len();
            *slot = Some(reply);
            self.inflight = self.inflight.saturating_sub(1);
        }
        while let Some(Some(_)) = self.slots.front() {
            if let Some(Some(r)) = self.slots.pop_front() {
                self.slot_bytes -= r.len();
                self.wbuf.extend_from_slice(&r);
            }
            self.next_out += 1;
        }
    }

    /// Whether every reply owed has been handed to the kernel.
    pub fn all_sent(&self) -> bool {
        self.slots.is_empty() && self.pending_output() == 0
    }

    /// Writes pending output until done or the socket is full.
    pub fn flush(&mut self, now: Instant) -> io::Result<()> {
        if self.tls.is_some() {
            return self.flush_tls(now);
        }
        while self.wpos < self.wbuf.len() {
            match self.stream.write(&self.wbuf[self.wpos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.wpos += n;
                    self.last_active = now;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.output_sent();
        Ok(())
    }

    fn output_sent(&mut self) {
        self.wbuf.clear();
        self.wpos = 0;
        if self.wbuf.capacity() > KEEP_CAPACITY {
            self.wbuf = Vec::new();
        }
    }

    /// TLS: plaintext into rustls (bounded by its buffer limit), records
    /// out to the socket, until both are done or the socket is full.
    fn flush_tls(&mut self, now: Instant) -> io::Result<()> {
        let Some(tls) = self.tls.as_mut() else {
            return Ok(());
        };
        loop {
            while self.wpos < self.wbuf.len() {
                match tls.writer().write(&self.wbuf[self.wpos..])? {
                    0 => break,
                    n => self.wpos += n,
                }
            }
            if !tls.wants_write() {
                break;
            }
            match tls.write_tls(&mut self.stream) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => self.last_active = now,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.wpos == self.wbuf.len() {
            self.output_sent();
        }
        Ok(())
    }

    /// Reads plaintext into `buf` (through TLS when the connection has
    /// it), retrying on EINTR. Ok(0) is the peer's EOF.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.tls.is_some() {
            return self.read_tls(buf);
        }
        loop {
            match self.stream.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                r => return r,
            }
        }
    }

    fn read_tls(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(tls) = self.tls.as_mut() else {
            return Ok(0);
        };
        loop {
            match tls.reader().read(buf) {
                Ok(n) => return Ok(n),
                // The peer closed without close_notify: still its EOF.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            match tls.read_tls(&mut self.stream) {
                Ok(0) => return Ok(0),
                Ok(_) => {
                    if let Err(e) = tls.process_new_packets() {
                        // Let the peer see the alert saying why.
                        let _ = tls.write_tls(&mut self.stream);
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            TlsFailure(e.to_string()),
                        ));
                    }
                    if !self.cert_checked && !tls.is_handshaking() {
                        self.cert_checked = true;
                        self.cert_user = tls
                            .peer_certificates()
                            .and_then(|c| c.first())
                            .and_then(crate::tls::certificate_user);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// TLS: sends close_notify, so the client sees a clean end of the
    /// session rather than a truncation.
    pub fn close_notify(&mut self) {
        if let Some(tls) = self.tls.as_mut() {
            tls.send_close_notify();
            let _ = tls.write_tls(&mut self.stream);
        }
    }

    /// Starts the lingering close: the write side is shut down, the read
    /// side drained until EOF or the deadline.
    pub fn linger(&mut self, now: Instant) {
        self.close_notify();
        let _ = self.stream.shutdown(Shutdown::Write);
        self.rbuf = Vec::new();
        self.state = State::Lingering { until: now + LINGER };
    }

    /// Discards input of a lingering connection; Close at EOF or error.
    pub fn drain_input(&mut self, scratch: &mut [u8]) -> Step {
        loop {
            // Raw bytes: whatever a lingering client still sends is dropped
            // unread, TLS or not.
            match self.stream.read(scratch) {
                Ok(0) => return Step::Close,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Continue,
                Err(_) => return Step::Close,
            }
        }
    }

    /// Releases the read buffer when it holds nothing, so an idle
    /// connection keeps no heap memory.
    pub fn shrink(&mut self) {
        if self.rbuf.is_empty() && self.rbuf.capacity() > 0 {
            self.rbuf = Vec::new();
        }
    }
}

/// A TLS failure (handshake or record), told apart from socket errors so it
/// can be counted and logged as such.
#[derive(Debug)]
pub struct TlsFailure(pub String);

impl std::fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsFailure {}
