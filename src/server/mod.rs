//! The event loop: one mio `Poll` owns every listening socket and every
//! connection. It frames lines, parses request heads, answers what it can
//! by itself, queues the rest as tasks in the scheduler, hands ready tasks
//! to idle workers and sends the results back in request order.
//!
//! Architecture invariant: only this loop touches sockets, and it never
//! blocks: numbers are parsed and computed on workers.

pub mod conn;
pub mod listener;
mod task;
mod udp;

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use mio::event::Event;
use mio::net::{TcpListener, UdpSocket};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use crate::config::{Config, ListenerConfig, Proto};
use crate::ops::{self, Exec, InfoValue, LoopOp, OPS, Output};
use crate::pool::{Job, JobResult, Pool};
use crate::protocol::frame::Frame;
use crate::protocol::reply::{write_err, write_ok};
use crate::protocol::{self, Args, Code, ParseCtx, Rejection, Request};
use crate::sched::{Policy, Scheduler};
use crate::users::UserCounts;
use conn::{Conn, MAX_PENDING_OUTPUT, State};
use task::{Origin, PiWork, Task, Work};
use udp::{UdpBatch, UdpOut};

const WAKER: Token = Token(0);
const LISTENER_BASE: usize = 16;
const CONN_BASE: usize = 1 << 20;
/// The loop's own timer: idle timeouts, lingering deadlines, re-arming
/// accept after EMFILE.
const TICK: Duration = Duration::from_millis(250);
/// Reads per connection per readiness event, so one busy client cannot
/// starve the others; a connection cut short is read again next turn.
const READS_PER_EVENT: usize = 16;
const READ_CHUNK: usize = 64 * 1024;
/// Pause of accept after EMFILE/ENFILE, instead of spinning on it.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// A startup failure that is not the configuration's fault (exit 2).
#[derive(Debug)]
pub struct StartError(pub String);

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

enum Sock {
    Tcp(TcpListener),
    Udp(UdpSocket, UdpOut),
}

struct Listener {
    cfg: ListenerConfig,
    /// By OpId: enabled and in this listener's `ops`.
    allowed: Vec<bool>,
    max_samples: u64,
    sock: Sock,
}

impl Listener {
    fn admits(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match &self.cfg.allow {
            None => true,
            Some(nets) => nets.iter().any(|n| n.contains(&ip)),
        }
    }
}

/// IPv4 clients of a dual-stack socket appear as ::ffff:a.b.c.d; `allow`
/// lists and per-IP limits are written with the plain IPv4 form.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[derive(Debug, Default)]
struct Counters {
    done: u64,
    failed: u64,
    rejected: [u64; Code::ALL.len()],
    udp_lines_dropped: u64,
    udp_replies_dropped: u64,
}

pub struct Server {
    poll: Poll,
    waker: Arc<Waker>,
    cfg: Config,
    listeners: Vec<Listener>,
    conns: Slab<Conn>,
    next_conn_id: u64,
    per_ip: HashMap<IpAddr, usize>,
    tasks: Slab<Task>,
    next_serial: u64,
    sched: Scheduler<usize>,
    pool: Pool,
    workers: usize,
    /// Pi tasks with chunks not yet handed to a worker, oldest first.
    chunking: VecDeque<usize>,
    running: usize,
    users: UserCounts,
    counters: Counters,
    batches: Slab<UdpBatch>,
    next_batch_id: u64,
    scratch: Vec<u8>,
    /// Connections with new output to write.
    dirty: Vec<usize>,
    /// Connections not read further until they may take requests again.
    paused: Vec<usize>,
    /// Connections and UDP listeners cut short by a fairness cap.
    again: Vec<Token>,
    accept_paused_until: Option<Instant>,
    next_tick: Instant,
    started: Instant,
    config_loaded_at: SystemTime,
    process_seed: u64,
}

fn resolve_workers(configured: usize) -> usize {
    if configured == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        configured
    }
}

fn ready_capacity(configured: usize, workers: usize) -> usize {
    if configured == 0 { 2 * workers } else { configured }
}

fn policy_of(p: crate::config::Policy) -> Policy {
    match p {
        crate::config::Policy::Hrrn => Policy::Hrrn,
        crate::config::Policy::Sjf => Policy::Sjf,
        crate::config::Policy::Fifo => Policy::Fifo,
    }
}

fn allowed_ops(cfg: &Config, l: &ListenerConfig) -> Vec<bool> {
    (0..OPS.len())
        .map(|id| {
            let enabled = cfg.ops.get(id).is_none_or(|o| o.enabled);
            enabled && l.ops.as_ref().is_none_or(|list| list.contains(&id))
        })
        .collect()
}

fn op_limit(cfg: &Config, op: &str, key: &str) -> u64 {
    let Some(id) = ops::lookup(op) else { return 0 };
    let spec = &OPS[id];
    let pos = spec.limits.iter().position(|l| l.key == key);
    match (pos, cfg.ops.get(id)) {
        (Some(i), Some(o)) => o.limits.get(i).copied().unwrap_or(spec.limits[i].default),
        (Some(i), None) => spec.limits[i].default,
        (None, _) => 0,
    }
}

impl Server {
    /// Binds every listener and starts the workers.
    pub fn new(cfg: Config) -> Result<Server, StartError> {
        let poll = Poll::new().map_err(|e| StartError(format!("cannot create the event loop: {e}")))?;
        let waker = Arc::new(
            Waker::new(poll.registry(), WAKER)
                .map_err(|e| StartError(format!("cannot create the waker: {e}")))?,
        );
        let workers = resolve_workers(cfg.server.workers);
        let pool = Pool::new(workers, Arc::clone(&waker))
            .map_err(|e| StartError(format!("cannot start {workers} workers: {e}")))?;
        let sched = Scheduler::new(
            policy_of(cfg.scheduler.policy),
            cfg.scheduler.incoming_capacity,
            ready_capacity(cfg.scheduler.ready_capacity, workers),
        );
        let now = Instant::now();
        let seed = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id()).rotate_left(32);
        let mut server = Server {
            poll,
            waker,
            users: UserCounts::new(cfg.limits.max_users),
            listeners: Vec::new(),
            conns: Slab::new(),
            next_conn_id: 1,
            per_ip: HashMap::new(),
            tasks: Slab::new(),
            next_serial: 1,
            sched,
            pool,
            workers,
            chunking: VecDeque::new(),
            running: 0,
            counters: Counters::default(),
            batches: Slab::new(),
            next_batch_id: 1,
            scratch: vec![0; READ_CHUNK],
            dirty: Vec::new(),
            paused: Vec::new(),
            again: Vec::new(),
            accept_paused_until: None,
            next_tick: now + TICK,
            started: now,
            config_loaded_at: SystemTime::now(),
            process_seed: seed,
            cfg,
        };
        for l in server.cfg.listeners.clone() {
            server.add_listener(l)?;
        }
        Ok(server)
    }

    fn add_listener(&mut self, l: ListenerConfig) -> Result<(), StartError> {
        let index = self.listeners.len();
        let token = Token(LISTENER_BASE + index);
        let fail = |e: io::Error| {
            StartError(format!(
                "cannot listen on {} {}: {e}",
                l.proto.as_str(),
                l.address
            ))
        };
        let sock = match l.proto {
            Proto::Udp => {
                let mut s = listener::bind_udp(&l).map_err(fail)?;
                self.poll
                    .registry()
                    .register(&mut s, token, Interest::READABLE | Interest::WRITABLE)
                    .map_err(fail)?;
                Sock::Udp(s, UdpOut::default())
            }
            Proto::Tcp => {
                let mut s = listener::bind_tcp(&l).map_err(fail)?;
                self.poll
                    .registry()
                    .register(&mut s, token, Interest::READABLE)
                    .map_err(fail)?;
                Sock::Tcp(s)
            }
            other => {
                log::warn!(
                    "{} listener {} ({}): this build does not serve {} yet; skipped",
                    other.as_str(),
                    l.address,
                    l.origin,
                    other.as_str()
                );
                return Ok(());
            }
        };
        log::info!("listening on {} {}", l.proto.as_str(), l.address);
        let max_samples = if l.proto == Proto::Udp {
            op_limit(&self.cfg, "pi", "udp_max_samples")
        } else {
            op_limit(&self.cfg, "pi", "max_samples")
        };
        let allowed = allowed_ops(&self.cfg, &l);
        self.listeners.push(Listener {
            cfg: l,
            allowed,
            max_samples,
            sock,
        });
        Ok(())
    }

    /// The local addresses actually bound, in listener order.
    pub fn local_addrs(&self) -> Vec<(Proto, SocketAddr)> {
        self.listeners
            .iter()
            .filter_map(|l| {
                let addr = match &l.sock {
                    Sock::Tcp(s) => s.local_addr().ok()?,
                    Sock::Udp(s, _) => s.local_addr().ok()?,
                };
                Some((l.cfg.proto, addr))
            })
            .collect()
    }

    /// Runs until a fatal error of the loop itself.
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = if self.again.is_empty() {
                TICK
            } else {
                Duration::ZERO
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let now = Instant::now();
            for token in std::mem::take(&mut self.again) {
                self.ready(token, false, now);
            }
            for ev in events.iter() {
                self.event(ev, now);
            }
            self.turn(now);
        }
    }

    /// The work after each batch of events: results in, tasks out, replies
    /// written, paused connections resumed, timers.
    fn turn(&mut self, now: Instant) {
        self.collect_results(now);
        self.pump(now);
        self.resume_paused(now);
        self.flush_dirty(now);
        if now >= self.next_tick {
            self.tick(now);
            self.next_tick = now + TICK;
        }
    }

    fn event(&mut self, ev: &Event, now: Instant) {
        self.ready(ev.token(), ev.is_writable(), now);
    }

    fn ready(&mut self, token: Token, writable: bool, now: Instant) {
        match token.0 {
            t if t == WAKER.0 => {}
            t if (LISTENER_BASE..CONN_BASE).contains(&t) => {
                let index = t - LISTENER_BASE;
                match self.listeners.get(index).map(|l| &l.sock) {
                    Some(Sock::Tcp(_)) => self.accept(index, now),
                    Some(Sock::Udp(..)) => {
                        if writable {
                            self.udp_flush_out(index);
                        }
                        self.udp_read(index, now);
                    }
                    None => {}
                }
            }
            t if t >= CONN_BASE => {
                let key = t - CONN_BASE;
                if writable && self.conns.contains(key) {
                    self.dirty.push(key);
                }
                self.conn_readable(key, now);
            }
            _ => {}
        }
    }

    // ---- accepting ------------------------------------------------------

    fn accept(&mut self, index: usize, now: Instant) {
        if self.accept_paused_until.is_some_and(|t| now < t) {
            return;
        }
        self.accept_paused_until = None;
        loop {
            let Sock::Tcp(listener) = &self.listeners[index].sock else {
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
                    log::warn!("accept on {}: {e}", self.listeners[index].cfg.address);
                    return;
                }
            };
            self.admit_conn(index, stream, peer, now);
        }
    }

    fn admit_conn(&mut self, index: usize, mut stream: mio::net::TcpStream, peer: SocketAddr, now: Instant) {
        let ip = canonical(peer.ip());
        if !self.listeners[index].admits(ip) {
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
        let mut conn = Conn::new(id, stream, peer, index, now);
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

    // ---- reading stream connections -------------------------------------

    /// Whether a connection must stop taking requests for now.
    fn blocked(&self, c: &Conn) -> bool {
        c.inflight >= self.cfg.limits.max_inflight_per_conn
            || self.sched.incoming_is_full()
            || c.pending_output() > MAX_PENDING_OUTPUT
    }

    fn conn_readable(&mut self, key: usize, now: Instant) {
        let mut scratch = std::mem::take(&mut self.scratch);
        self.read_conn(key, &mut scratch, now);
        self.scratch = scratch;
        self.maybe_finish(key, now);
    }

    fn read_conn(&mut self, key: usize, scratch: &mut [u8], now: Instant) {
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
            let Some(c) = self.conns.get_mut(key) else { return };
            if c.state != State::Open || c.eof {
                return;
            }
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
                Ok(n) => c.rbuf.extend_from_slice(&scratch[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.feed(key, now);
                    if let Some(c) = self.conns.get_mut(key) {
                        c.shrink();
                    }
                    return;
                }
                Err(e) => {
                    log::debug!("read from {}: {e}", c.peer);
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
    fn feed(&mut self, key: usize, now: Instant) -> bool {
        let Some(c) = self.conns.get_mut(key) else {
            return false;
        };
        let mut buf = std::mem::take(&mut c.rbuf);
        let eof = c.eof;
        let index = c.listener;
        let max = self.cfg.limits.max_line_bytes;
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
            let Some(c) = self.conns.get_mut(key) else { break };
            match c.framer.next(&buf, &mut pos, max, eof) {
                None => break,
                Some(Frame::TooLong { json }) => {
                    c.last_active = now;
                    self.answer_rejection(
                        key,
                        &Rejection {
                            id: None,
                            user: None,
                            op: None,
                            json,
                            code: Code::TooLong,
                            message: format!("line longer than max_line_bytes ({max})"),
                        },
                    );
                }
                Some(Frame::Line(line)) => {
                    if !protocol::is_blank(line) {
                        c.last_active = now;
                        self.handle_line(key, index, line, now);
                    }
                }
            }
        }
        buf.drain(..pos);
        if let Some(c) = self.conns.get_mut(key) {
            c.rbuf = buf;
            if c.eof && c.state == State::Open && c.rbuf.is_empty() {
                c.state = State::Finishing;
            }
        }
        self.dirty.push(key);
        open
    }

    fn parse_ctx<'a>(&self, l: &'a Listener) -> ParseCtx<'a> {
        ParseCtx {
            max_values: self.cfg.limits.max_values,
            max_samples: l.max_samples,
            allowed: &l.allowed,
            udp: l.cfg.proto == Proto::Udp,
            workers: self.workers,
        }
    }

    fn handle_line(&mut self, key: usize, index: usize, line: &[u8], now: Instant) {
        let parsed = {
            let l = &self.listeners[index];
            protocol::parse_line(line, &self.parse_ctx(l))
        };
        let req = match parsed {
            Ok(r) => r,
            Err(rej) => {
                self.log_rejection(&rej, line);
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
                if op == LoopOp::Quit {
                    c.state = State::Finishing;
                }
            }
            Exec::List(_) | Exec::Pi => {
                let Some(c) = self.conns.get_mut(key) else { return };
                let seq = c.reserve();
                let origin = Origin::Conn { key, conn: c.id, seq };
                let (proto, peer) = (self.listeners[index].cfg.proto, c.peer);
                self.enqueue(req, origin, proto, peer, now);
            }
        }
    }

    fn answer_rejection(&mut self, key: usize, rej: &Rejection) {
        self.account(rej.user.as_deref(), Some(rej.code));
        if let Some(c) = self.conns.get_mut(key) {
            c.reply_now(|out| write_err(out, rej.id.as_ref(), rej.json, rej.code, &rej.message));
        }
    }

    fn log_rejection(&self, rej: &Rejection, line: &[u8]) {
        log::debug!(
            "{} {}: {}",
            rej.code.as_str(),
            protocol::sanitize(line, 80),
            rej.message
        );
    }

    // ---- tasks ----------------------------------------------------------

    fn enqueue(&mut self, req: Request, origin: Origin, proto: Proto, peer: SocketAddr, now: Instant) {
        let spec = &OPS[req.op];
        let (work, count, samples) = match req.args {
            Args::Values { raw, count } => (Work::List { raw: Some(raw) }, count, 0),
            Args::Pi { samples, chunks } => {
                let chunks = chunks.unwrap_or_else(|| {
                    u32::try_from((self.workers as u64).min(samples).min(ops::PI_MAX_CHUNKS)).unwrap_or(1)
                });
                let pi = PiWork {
                    samples,
                    chunks,
                    issued: 0,
                    finished: 0,
                    hits: 0,
                    error: None,
                };
                (Work::Pi(pi), 0, samples)
            }
            Args::None => (Work::List { raw: None }, 0, 0),
        };
        let cost = ops::cost(spec.args, count, samples);
        let serial = self.next_serial;
        self.next_serial += 1;
        let task = Task {
            serial,
            origin,
            proto,
            peer,
            id: req.id,
            user: req.user,
            op: req.op,
            json: req.json,
            count,
            work,
            arrived: now,
            started: None,
        };
        let tk = self.tasks.insert(task);
        if let Err(tk) = self.sched.push(tk, cost, now) {
            let task = self.tasks.remove(tk);
            self.finish(
                task,
                Err((Code::Busy, "the incoming queue is full; retry later".into())),
                now,
            );
        }
    }

    /// The short-term scheduler: ready tasks (and the chunks of pi tasks)
    /// to idle workers, admitting from the incoming queue as room frees.
    fn pump(&mut self, now: Instant) {
        self.sched.admit(now);
        while self.pool.has_idle() {
            if let Some(&tk) = self.chunking.front() {
                self.issue_chunk(tk);
                continue;
            }
            let Some(tk) = self.sched.pop_ready() else { break };
            self.sched.admit(now);
            self.start(tk, now);
        }
    }

    fn start(&mut self, tk: usize, now: Instant) {
        let Some(task) = self.tasks.get_mut(tk) else {
            return;
        };
        task.started = Some(now);
        self.running += 1;
        match &mut task.work {
            Work::Pi(_) => {
                self.chunking.push_back(tk);
                self.issue_chunk(tk);
            }
            Work::List { raw } => {
                let Exec::List(exec) = OPS[task.op].exec else {
                    return self.fail_task(tk, now);
                };
                let Some(raw) = raw.take() else {
                    return self.fail_task(tk, now);
                };
                if self.pool.submit(Job::List { task: tk, exec, raw }).is_err() {
                    self.fail_task(tk, now);
                }
            }
        }
    }

    fn fail_task(&mut self, tk: usize, now: Instant) {
        log::error!("task {tk} could not be handed to a worker");
        self.running = self.running.saturating_sub(1);
        let task = self.tasks.remove(tk);
        self.finish(task, Err((Code::Internal, "internal error, logged".into())), now);
    }

    fn issue_chunk(&mut self, tk: usize) {
        let Some(task) = self.tasks.get_mut(tk) else {
            self.chunking.pop_front();
            return;
        };
        let Work::Pi(pi) = &mut task.work else {
            self.chunking.pop_front();
            return;
        };
        let index = pi.issued;
        let samples = ops::pi::chunk_samples(pi.samples, pi.chunks, index);
        let seed = ops::pi::chunk_seed(self.process_seed, task.serial, index);
        if self
            .pool
            .submit(Job::PiChunk {
                task: tk,
                samples,
                seed,
            })
            .is_ok()
        {
            pi.issued += 1;
            if pi.issued >= pi.chunks {
                self.chunking.pop_front();
            }
        }
    }

    fn collect_results(&mut self, now: Instant) {
        self.pool.arm_wake();
        while let Some(done) = self.pool.try_recv() {
            let tk = done.task;
            let Some(task) = self.tasks.get_mut(tk) else {
                continue;
            };
            let result = match (done.result, &mut task.work) {
                (JobResult::List(r), _) => r,
                (JobResult::PiChunk(r), Work::Pi(pi)) => {
                    pi.finished += 1;
                    match r {
                        Ok(h) => pi.hits += h,
                        Err(e) => {
                            pi.error.get_or_insert(e);
                        }
                    }
                    if pi.finished < pi.chunks {
                        continue;
                    }
                    match pi.error.take() {
                        Some(e) => Err(e),
                        None => Ok(Output::Pi {
                            pi: ops::pi::estimate(pi.hits, pi.samples),
                            samples: pi.samples,
                            chunks: pi.chunks,
                        }),
                    }
                }
                (JobResult::PiChunk(_), Work::List { .. }) => {
                    Err((Code::Internal, "internal error, logged".into()))
                }
            };
            self.running = self.running.saturating_sub(1);
            let task = self.tasks.remove(tk);
            self.finish(task, result, now);
        }
    }

    /// Answers a task: counts it, writes its reply into its place.
    fn finish(&mut self, task: Task, result: Result<Output, (Code, String)>, _now: Instant) {
        let mut reply = Vec::new();
        match &result {
            Ok(out) => write_ok(&mut reply, task.id.as_ref(), task.json, out),
            Err((code, msg)) => write_err(&mut reply, task.id.as_ref(), task.json, *code, msg),
        }
        self.account(task.user.as_deref(), result.as_ref().err().map(|e| e.0));
        match task.origin {
            Origin::Conn { key, conn, seq } => {
                if let Some(c) = self.conns.get_mut(key).filter(|c| c.id == conn) {
                    c.fill(seq, reply);
                    self.dirty.push(key);
                }
            }
            Origin::Udp { key, batch, line } => self.udp_fill(key, batch, line, reply),
        }
    }

    /// Counts an answered request: per user, and done/failed by code.
    fn account(&mut self, user: Option<&str>, error: Option<Code>) {
        match error {
            None => {
                self.counters.done += 1;
                self.users.count(user);
            }
            Some(code) => {
                self.counters.failed += 1;
                self.counters.rejected[code as usize] += 1;
                if code.counts_for_user() {
                    self.users.count(user);
                }
            }
        }
    }

    fn loop_op(&self, op: LoopOp) -> Output {
        match op {
            LoopOp::Ping => Output::Word("pong"),
            LoopOp::Quit => Output::Word("bye"),
            LoopOp::Help => Output::Help(
                OPS.iter()
                    .enumerate()
                    .filter(|(id, _)| self.cfg.ops.get(*id).is_none_or(|o| o.enabled))
                    .map(|(_, op)| op.name)
                    .collect(),
            ),
            LoopOp::Users => Output::Users(self.users.snapshot()),
            LoopOp::Info => Output::Info(self.info()),
        }
    }

    fn info(&self) -> Vec<(String, InfoValue)> {
        let loaded = humantime::format_rfc3339_seconds(self.config_loaded_at).to_string();
        let mut v = vec![
            (
                "version".to_string(),
                InfoValue::Text(env!("CARGO_PKG_VERSION").to_string()),
            ),
            (
                "uptime_s".to_string(),
                InfoValue::Int(self.started.elapsed().as_secs()),
            ),
            ("workers".to_string(), InfoValue::Int(self.workers as u64)),
            ("connections".to_string(), InfoValue::Int(self.conns.len() as u64)),
            (
                "incoming".to_string(),
                InfoValue::Int(self.sched.incoming_len() as u64),
            ),
            ("ready".to_string(), InfoValue::Int(self.sched.ready_len() as u64)),
            ("running".to_string(), InfoValue::Int(self.running as u64)),
            ("done".to_string(), InfoValue::Int(self.counters.done)),
            ("failed".to_string(), InfoValue::Int(self.counters.failed)),
            ("config_loaded_at".to_string(), InfoValue::Text(loaded)),
            ("last_reload_ok".to_string(), InfoValue::Bool(true)),
        ];
        for code in Code::ALL {
            v.push((
                format!("rejected_{}", code.as_str().replace('-', "_")),
                InfoValue::Int(self.counters.rejected[code as usize]),
            ));
        }
        v
    }

    // ---- writing and closing ---------------------------------------------

    fn resume_paused(&mut self, now: Instant) {
        if self.paused.is_empty() {
            return;
        }
        let mut paused = std::mem::take(&mut self.paused);
        paused.sort_unstable();
        paused.dedup();
        for key in paused {
            let blocked = match self.conns.get(key) {
                Some(c) => self.blocked(c),
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

    fn flush_dirty(&mut self, now: Instant) {
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
                self.maybe_finish(key, now);
                if unblocked && self.paused.contains(&key) {
                    self.resume_paused(now);
                }
            }
        }
    }

    /// Closes a finishing connection once every reply it owes is sent.
    fn maybe_finish(&mut self, key: usize, now: Instant) {
        let Some(c) = self.conns.get_mut(key) else { return };
        if c.state != State::Finishing || !c.all_sent() {
            return;
        }
        if c.eof {
            self.close(key);
        } else {
            c.linger(now);
        }
    }

    fn close(&mut self, key: usize) {
        if !self.conns.contains(key) {
            return;
        }
        let mut c = self.conns.remove(key);
        let _ = self.poll.registry().deregister(&mut c.stream);
        let ip = canonical(c.peer.ip());
        if let Some(n) = self.per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
        }
    }

    fn tick(&mut self, now: Instant) {
        if self.accept_paused_until.is_some_and(|t| now >= t) {
            for i in 0..self.listeners.len() {
                if matches!(self.listeners[i].sock, Sock::Tcp(_)) {
                    self.accept(i, now);
                }
            }
        }
        let idle = self.cfg.limits.idle_timeout;
        let mut expired = Vec::new();
        for (key, c) in self.conns.iter() {
            match c.state {
                State::Lingering { until } if now >= until => expired.push((key, true)),
                State::Lingering { .. } => {}
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

    // ---- the user's view ---------------------------------------------------

    pub fn waker(&self) -> Arc<Waker> {
        Arc::clone(&self.waker)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.pool.shutdown();
    }
}
