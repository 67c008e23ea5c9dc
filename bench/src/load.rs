//! The load generator for the line protocol: a single-threaded mio client
//! that keeps `pipeline` requests in flight on each of `connections` TCP
//! connections (or UDP sockets), for a warm-up and then a measured window,
//! validates every reply and records each request's latency in an HDR
//! histogram. `Transport::Http` is the same TCP client with HTTP/1.1
//! keep-alive requests, each response framed and checked by `http.rs`.
//!
//! Bounds: sending stops at the end of the window; outstanding replies are
//! then awaited for at most `DRAIN_TIMEOUT`, and whatever has not come is
//! reported as missing.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::net::{TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Token};

/// How long outstanding replies are awaited after the window closes.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// Poll timeout: how often time limits and UDP timeouts are looked at.
const TICK: Duration = Duration::from_millis(5);

/// One kind of request of the mix, and what its reply must look like.
#[derive(Debug, Clone)]
pub struct Req {
    /// The request line, ending in `\n`.
    pub line: Vec<u8>,
    /// The reply must be this, or start with this followed by a space.
    pub expect: Vec<u8>,
}

impl Req {
    pub fn new(line: &str, expect: &str) -> Req {
        let mut l = line.trim_end_matches('\n').as_bytes().to_vec();
        l.push(b'\n');
        Req {
            line: l,
            expect: expect.as_bytes().to_vec(),
        }
    }

    pub fn accepts(&self, reply: &[u8]) -> bool {
        reply_matches(reply, &self.expect)
    }
}

/// `reply` (without its newline) is `expect`, or starts with `expect` and a
/// space: `OK 10` accepts `OK 10` but not `OK 100`.
pub fn reply_matches(reply: &[u8], expect: &[u8]) -> bool {
    reply.starts_with(expect) && (reply.len() == expect.len() || reply[expect.len()] == b' ')
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Udp,
    /// TCP connections carrying HTTP/1.1 keep-alive requests: a `Req`'s
    /// `line` is the whole request, its `expect` the exact body of a 200.
    Http,
}

#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub addr: SocketAddr,
    pub transport: Transport,
    pub connections: usize,
    pub pipeline: usize,
    pub warmup: Duration,
    pub duration: Duration,
    /// Used round-robin on each connection; connection i starts at i.
    pub mix: Vec<Req>,
    /// A UDP request unanswered this long is counted lost and replaced.
    pub udp_timeout: Duration,
}

#[derive(Debug)]
pub struct LoadResult {
    /// Valid replies received inside the measured window.
    pub replies: u64,
    pub window: Duration,
    /// Latency of those replies, in nanoseconds.
    pub hist: Histogram<u64>,
    /// Replies that did not match their request's expectation (or came
    /// when none was expected).
    pub invalid: u64,
    /// Replies never received: outstanding at the end (TCP), timed out
    /// (UDP), or lost with a connection the server closed.
    pub missing: u64,
    pub first_error: Option<String>,
}

impl LoadResult {
    pub fn rate(&self) -> f64 {
        self.replies as f64 / self.window.as_secs_f64()
    }

    /// Latency quantile in microseconds.
    pub fn quantile_us(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64 / 1000.0
    }

    /// Adds another measurement of the same server (one slice of a longer
    /// measurement): counts, windows and latencies add up.
    pub fn merge(&mut self, other: LoadResult) {
        self.replies += other.replies;
        self.window += other.window;
        self.hist
            .add(&other.hist)
            .expect("histograms with the same bounds merge");
        self.invalid += other.invalid;
        self.missing += other.missing;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    pub fn errors(&self) -> u64 {
        self.invalid + self.missing
    }

    pub fn summary(&self) -> String {
        let mut s = format!(
            "{:.0} req/s, p50 {:.1} us, p99 {:.1} us, p99.9 {:.1} us, max {:.1} us ({} replies in {:.2} s)",
            self.rate(),
            self.quantile_us(0.5),
            self.quantile_us(0.99),
            self.quantile_us(0.999),
            self.hist.max() as f64 / 1000.0,
            self.replies,
            self.window.as_secs_f64()
        );
        if self.errors() > 0 {
            s.push_str(&format!(
                "; {} invalid, {} missing{}",
                self.invalid,
                self.missing,
                self.first_error
                    .as_ref()
                    .map(|e| format!(" (first: {e})"))
                    .unwrap_or_default()
            ));
        }
        s
    }
}

/// The bookkeeping shared by both transports.
struct Tally {
    measure_from: Instant,
    stop_sending: Instant,
    replies: u64,
    hist: Histogram<u64>,
    invalid: u64,
    missing: u64,
    first_error: Option<String>,
}

impl Tally {
    fn new(spec: &LoadSpec, start: Instant) -> Tally {
        let measure_from = start + spec.warmup;
        Tally {
            measure_from,
            stop_sending: measure_from + spec.duration,
            replies: 0,
            hist: Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds"),
            invalid: 0,
            missing: 0,
            first_error: None,
        }
    }

    fn error(&mut self, what: String) {
        if self.first_error.is_none() {
            self.first_error = Some(what);
        }
    }

    /// A reply to a request sent at `sent`, received at `now`.
    fn reply(&mut self, req: Option<&Req>, reply: &[u8], sent: Instant, now: Instant) {
        let ok = req.is_some_and(|r| r.accepts(reply));
        self.judged(ok, req, reply, sent, now);
    }

    /// A reply already found valid or not (`reply` is shown if not).
    fn judged(&mut self, ok: bool, req: Option<&Req>, reply: &[u8], sent: Instant, now: Instant) {
        if !ok {
            self.invalid += 1;
            let expected = req.map_or("no reply".to_string(), |r| {
                String::from_utf8_lossy(&r.expect).into_owned()
            });
            let got = String::from_utf8_lossy(&reply[..reply.len().min(120)]).into_owned();
            self.error(format!("expected {expected:?}, got {got:?}"));
            return;
        }
        if now >= self.measure_from && now < self.stop_sending {
            self.replies += 1;
            let ns = now.saturating_duration_since(sent).as_nanos();
            self.hist
                .saturating_record(u64::try_from(ns).unwrap_or(u64::MAX).max(1));
        }
    }

    fn finish(self, spec: &LoadSpec) -> LoadResult {
        LoadResult {
            replies: self.replies,
            window: spec.duration,
            hist: self.hist,
            invalid: self.invalid,
            missing: self.missing,
            first_error: self.first_error,
        }
    }
}

/// Runs one load test against a server that is already listening.
pub fn run(spec: &LoadSpec) -> io::Result<LoadResult> {
    if spec.mix.is_empty() || spec.connections == 0 || spec.pipeline == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the load needs a request, a connection and a pipeline depth of at least 1",
        ));
    }
    match spec.transport {
        Transport::Tcp | Transport::Http => run_tcp(spec),
        Transport::Udp => run_udp(spec),
    }
}

struct TcpClient {
    stream: TcpStream,
    /// Send time and mix index of each request in flight, oldest first.
    inflight: VecDeque<(Instant, usize)>,
    wbuf: Vec<u8>,
    wpos: usize,
    rbuf: Vec<u8>,
    next: usize,
    closed: bool,
}

impl TcpClient {
    fn queue(&mut self, mix: &[Req], now: Instant) {
        let i = self.next;
        self.next = (self.next + 1) % mix.len();
        self.wbuf.extend_from_slice(&mix[i].line);
        self.inflight.push_back((now, i));
    }

    fn flush(&mut self) -> io::Result<()> {
        while self.wpos < self.wbuf.len() {
            match self.stream.write(&self.wbuf[self.wpos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.wpos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.wbuf.clear();
        self.wpos = 0;
        Ok(())
    }
}

fn run_tcp(spec: &LoadSpec) -> io::Result<LoadResult> {
    let mut poll = Poll::new()?;
    let mut clients = Vec::with_capacity(spec.connections);
    for i in 0..spec.connections {
        let s = std::net::TcpStream::connect_timeout(&spec.addr, Duration::from_secs(5))?;
        s.set_nodelay(true)?;
        s.set_nonblocking(true)?;
        let mut stream = TcpStream::from_std(s);
        poll.registry()
            .register(&mut stream, Token(i), Interest::READABLE | Interest::WRITABLE)?;
        clients.push(TcpClient {
            stream,
            inflight: VecDeque::with_capacity(spec.pipeline),
            wbuf: Vec::new(),
            wpos: 0,
            rbuf: Vec::new(),
            next: i % spec.mix.len(),
            closed: false,
        });
    }
    let start = Instant::now();
    let mut tally = Tally::new(spec, start);
    let hard_end = tally.stop_sending + DRAIN_TIMEOUT;
    for c in &mut clients {
        for _ in 0..spec.pipeline {
            c.queue(&spec.mix, start);
        }
        c.flush()?;
    }
    let mut scratch = vec![0u8; 64 * 1024];
    let mut events = Events::with_capacity(1024);
    loop {
        let now = Instant::now();
        if now >= hard_end {
            break;
        }
        if now >= tally.stop_sending && clients.iter().all(|c| c.inflight.is_empty() || c.closed) {
            break;
        }
        poll.poll(&mut events, Some(TICK))?;
        for ev in events.iter() {
            let Some(c) = clients.get_mut(ev.token().0) else {
                continue;
            };
            if c.closed {
                continue;
            }
            if ev.is_readable() || ev.is_read_closed() {
                loop {
                    match c.stream.read(&mut scratch) {
                        Ok(0) => {
                            c.closed = true;
                            tally.error("the server closed a connection".into());
                            break;
                        }
                        Ok(n) => c.rbuf.extend_from_slice(&scratch[..n]),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            c.closed = true;
                            tally.error(format!("read: {e}"));
                            break;
                        }
                    }
                }
                let now = Instant::now();
                let pos = match spec.transport {
                    Transport::Http => http_responses(c, &spec.mix, &mut tally, now),
                    _ => line_replies(c, &spec.mix, &mut tally, now),
                };
                c.rbuf.drain(..pos);
                if now < tally.stop_sending && !c.closed {
                    while c.inflight.len() < spec.pipeline {
                        c.queue(&spec.mix, now);
                    }
                }
            }
            if !c.closed
                && let Err(e) = c.flush()
            {
                c.closed = true;
                tally.error(format!("write: {e}"));
            }
        }
    }
    tally.missing = clients.iter().map(|c| c.inflight.len() as u64).sum();
    Ok(tally.finish(spec))
}

/// Takes the complete reply lines at the front of `c.rbuf`, checks each
/// against the oldest request in flight; returns the bytes taken.
fn line_replies(c: &mut TcpClient, mix: &[Req], tally: &mut Tally, now: Instant) -> usize {
    let mut pos = 0;
    while let Some(nl) = c.rbuf[pos..].iter().position(|&b| b == b'\n') {
        let mut line = &c.rbuf[pos..pos + nl];
        if let Some(l) = line.strip_suffix(b"\r") {
            line = l;
        }
        match c.inflight.pop_front() {
            Some((sent, i)) => tally.reply(Some(&mix[i]), line, sent, now),
            None => tally.reply(None, line, now, now),
        }
        pos += nl + 1;
    }
    pos
}

/// Takes the complete HTTP responses at the front of `c.rbuf`, checks
/// each against the oldest request in flight; returns the bytes taken.
/// A response that cannot be framed ends the connection.
fn http_responses(c: &mut TcpClient, mix: &[Req], tally: &mut Tally, now: Instant) -> usize {
    use crate::http::{Cut, cut_response, describe};
    let mut pos = 0;
    loop {
        match cut_response(&c.rbuf[pos..]) {
            Cut::Incomplete => return pos,
            Cut::Broken(e) => {
                c.closed = true;
                tally.invalid += 1;
                tally.error(format!("HTTP: {e}"));
                return pos;
            }
            Cut::Response {
                len,
                status,
                body,
                close,
            } => {
                let resp = &c.rbuf[pos..pos + len];
                let body = &resp[body];
                let front = c.inflight.pop_front();
                let req = front.map(|(_, i)| &mix[i]);
                let sent = front.map_or(now, |(t, _)| t);
                if status == 200 && !close && req.is_some_and(|r| r.expect == body) {
                    tally.judged(true, req, body, sent, now);
                } else {
                    tally.judged(false, req, &describe(resp, body, close), sent, now);
                }
                pos += len;
            }
        }
    }
}

struct UdpClient {
    sock: UdpSocket,
    inflight: VecDeque<(Instant, usize)>,
    /// Requests to send once the socket takes them.
    unsent: VecDeque<usize>,
    next: usize,
}

impl UdpClient {
    fn queue(&mut self, n: usize) {
        self.unsent.push_back(self.next);
        self.next = (self.next + 1) % n;
    }

    fn flush(&mut self, mix: &[Req], now: Instant) -> io::Result<()> {
        while let Some(&i) = self.unsent.front() {
            match self.sock.send(&mix[i].line) {
                Ok(_) => {
                    self.unsent.pop_front();
                    self.inflight.push_back((now, i));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

fn run_udp(spec: &LoadSpec) -> io::Result<LoadResult> {
    let mut poll = Poll::new()?;
    let mut clients = Vec::with_capacity(spec.connections);
    let local: SocketAddr = match spec.addr {
        SocketAddr::V4(_) => "127.0.0.1:0".parse().expect("valid address"),
        SocketAddr::V6(_) => "[::1]:0".parse().expect("valid address"),
    };
    for i in 0..spec.connections {
        let mut sock = UdpSocket::bind(local)?;
        sock.connect(spec.addr)?;
        poll.registry()
            .register(&mut sock, Token(i), Interest::READABLE | Interest::WRITABLE)?;
        clients.push(UdpClient {
            sock,
            inflight: VecDeque::with_capacity(spec.pipeline),
            unsent: VecDeque::new(),
            next: i % spec.mix.len(),
        });
    }
    let start = Instant::now();
    let mut tally = Tally::new(spec, start);
    let hard_end = tally.stop_sending + DRAIN_TIMEOUT;
    for c in &mut clients {
        for _ in 0..spec.pipeline {
            c.queue(spec.mix.len());
        }
        c.flush(&spec.mix, start)?;
    }
    let mut scratch = vec![0u8; 64 * 1024];
    let mut events = Events::with_capacity(1024);
    let mut next_timeout_check = start + TICK;
    loop {
        let now = Instant::now();
        if now >= hard_end {
            break;
        }
        let sending = now < tally.stop_sending;
        if !sending && clients.iter().all(|c| c.inflight.is_empty()) {
            break;
        }
        if now >= next_timeout_check {
            next_timeout_check = now + TICK;
            for c in &mut clients {
                while c
                    .inflight
                    .front()
                    .is_some_and(|(sent, _)| now.duration_since(*sent) >= spec.udp_timeout)
                {
                    c.inflight.pop_front();
                    tally.missing += 1;
                    if sending {
                        c.queue(spec.mix.len());
                    }
                }
                c.flush(&spec.mix, now)?;
            }
        }
        poll.poll(&mut events, Some(TICK))?;
        for ev in events.iter() {
            let Some(c) = clients.get_mut(ev.token().0) else {
                continue;
            };
            if ev.is_readable() {
                loop {
                    let n = match c.sock.recv(&mut scratch) {
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        // ECONNREFUSED from an earlier send: the server is gone.
                        Err(e) => {
                            tally.error(format!("recv: {e}"));
                            break;
                        }
                    };
                    let now = Instant::now();
                    let mut reply = &scratch[..n];
                    if let Some(r) = reply.strip_suffix(b"\n") {
                        reply = r;
                    }
                    // Datagrams may be answered out of order: the reply is
                    // matched with the oldest request in flight it fits.
                    match c.inflight.iter().position(|(_, i)| spec.mix[*i].accepts(reply)) {
                        Some(k) => {
                            let (sent, i) = c.inflight.remove(k).expect("position is in range");
                            tally.reply(Some(&spec.mix[i]), reply, sent, now);
                        }
                        None => {
                            let front = c.inflight.pop_front();
                            tally.reply(front.map(|(_, i)| &spec.mix[i]), reply, now, now);
                        }
                    }
                    if now < tally.stop_sending {
                        c.queue(spec.mix.len());
                    }
                }
            }
            c.flush(&spec.mix, Instant::now())?;
        }
    }
    tally.missing += clients.iter().map(|c| c.inflight.len() as u64).sum::<u64>();
    Ok(tally.finish(spec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_match_whole_words_only() {
        assert!(reply_matches(b"OK 10", b"OK 10"));
        assert!(reply_matches(b"OK 3.14 samples=5 chunks=1", b"OK"));
        assert!(!reply_matches(b"OK 100", b"OK 10"));
        assert!(!reply_matches(b"ERR parse x", b"OK"));
    }

    #[test]
    fn request_lines_end_in_one_newline() {
        assert_eq!(Req::new("max 1 2", "OK 2").line, b"max 1 2\n");
        assert_eq!(Req::new("max 1 2\n", "OK 2").line, b"max 1 2\n");
    }
}
