//! The event loop: one mio `Poll` owns every listening socket and every
//! connection. It frames lines, parses request heads, answers what it can
//! by itself, queues the rest as tasks in the scheduler, hands ready tasks
//! to idle workers and sends the results back in request order.
//!
//! Architecture invariant: only this loop touches sockets, and it never
//! blocks: numbers are parsed and computed on workers, files are written by
//! the writer thread.
//!
//! The loop's work is split by subject: `stream.rs` (accepting, reading,
//! writing, closing stream connections), `udp.rs` (datagrams), `tasks.rs`
//! (scheduler and pool), `lifecycle.rs` (signals, reload, drain, systemd).

pub mod conn;
mod http_conn;
mod lifecycle;
pub mod listener;
mod record;
mod stream;
mod task;
mod tasks;
mod udp;
mod udp_io;

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use mio::net::{TcpListener, UdpSocket};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use crate::config::{Config, ListenerConfig, Proto};
use crate::files::{self, FileWriter, LogSettings};
use crate::metrics::Metrics;
use crate::ops::{InfoValue, LoopOp, OPS, Output};
use crate::pool::Pool;
use crate::protocol::{Code, ParseCtx};
use crate::ratelimit::RateLimited;
use crate::sched::Scheduler;
use crate::signals::Signals;
use crate::systemd::{self, Passed};
use crate::users::UserCounts;
use conn::Conn;
use lifecycle::Drain;
use listener::ListenerSettings;
use udp::{UdpBatch, UdpOut};

const WAKER: Token = Token(0);
const SIGNALS: Token = Token(1);
const LISTENER_BASE: usize = 16;
const CONN_BASE: usize = 1 << 20;
/// The loop's own timer: idle timeouts, lingering deadlines, re-arming
/// accept after EMFILE, the watchdog, STATUS=.
const TICK: Duration = Duration::from_millis(250);
const READ_CHUNK: usize = 64 * 1024;
/// Results log bytes collected before they go to the writer thread.
const LOG_BATCH: usize = 64 * 1024;
/// users.json is replaced at most this often (and at shutdown).
const USERS_SAVE_INTERVAL: Duration = Duration::from_secs(1);

/// A startup failure, with the exit status it calls for (SPEC section 7).
#[derive(Debug)]
pub struct StartError {
    pub message: String,
    /// 1: the configuration is at fault; 2: anything else.
    pub exit_code: u8,
}

impl StartError {
    fn other(message: String) -> StartError {
        StartError {
            message,
            exit_code: 2,
        }
    }
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

enum Sock {
    Tcp(TcpListener),
    Udp(UdpSocket, UdpOut),
}

struct Listener {
    settings: Rc<ListenerSettings>,
    sock: Sock,
    /// Passed by systemd: never closed by taskd, not even on reload.
    passed: bool,
    /// No longer accepting or reading (late in a drain); the socket stays
    /// open.
    stopped: bool,
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
    tls_failures: u64,
}

pub struct Server {
    poll: Poll,
    signals: Option<Signals>,
    cfg: Config,
    /// `--config`, read again on SIGHUP.
    config_path: Option<PathBuf>,
    listeners: Slab<Listener>,
    conns: Slab<Conn>,
    next_conn_id: u64,
    per_ip: HashMap<IpAddr, usize>,
    tasks: Slab<task::Task>,
    next_serial: u64,
    sched: Scheduler<usize>,
    pool: Pool,
    workers: usize,
    /// Pi tasks with chunks not yet handed to a worker, oldest first.
    chunking: VecDeque<usize>,
    running: usize,
    users: UserCounts,
    /// The results log and users.json, written by the writer thread.
    files: FileWriter,
    next_users_save: Instant,
    counters: Counters,
    metrics: Metrics,
    /// Refused requests, logged at most once a second.
    reject_log: RateLimited,
    /// Failed TLS handshakes, logged at most once a second.
    tls_log: RateLimited,
    /// Crossings of max_buffered_bytes, logged at most once a second.
    buffers_log: RateLimited,
    log_clock: record::LogClock,
    /// Bytes held by all connections' buffers (kept by `sync_buffered`).
    total_buffered: usize,
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
    last_reload_ok: bool,
    drain: Option<Drain>,
    watchdog: Option<(Duration, Instant)>,
    last_status: String,
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

impl Server {
    /// Binds every listener (or adopts the sockets systemd passed) and
    /// starts the workers.
    pub fn new(cfg: Config, config_path: Option<PathBuf>) -> Result<Server, StartError> {
        let poll =
            Poll::new().map_err(|e| StartError::other(format!("cannot create the event loop: {e}")))?;
        let waker = Arc::new(
            Waker::new(poll.registry(), WAKER)
                .map_err(|e| StartError::other(format!("cannot create the waker: {e}")))?,
        );
        let mut signals = Signals::install()
            .map_err(|e| StartError::other(format!("cannot install signal handlers: {e}")))?;
        poll.registry()
            .register(&mut signals.receiver, SIGNALS, Interest::READABLE)
            .map_err(|e| StartError::other(format!("cannot watch signals: {e}")))?;
        let workers = resolve_workers(cfg.server.workers);
        let pool = Pool::new(workers, Arc::clone(&waker))
            .map_err(|e| StartError::other(format!("cannot start {workers} workers: {e}")))?;
        let sched = Scheduler::new(
            cfg.scheduler.policy,
            cfg.scheduler.incoming_capacity,
            ready_capacity(cfg.scheduler.ready_capacity, workers),
        );
        let users_path = cfg.server.state_dir.join("users.json");
        let mut users = UserCounts::new(cfg.limits.max_users);
        match files::load_users(&users_path) {
            Ok(saved) => users.restore(saved),
            Err(e) => {
                return Err(StartError::other(format!(
                    "cannot read {}: {e}",
                    users_path.display()
                )));
            }
        }
        let files = FileWriter::start(log_settings(&cfg), users_path)
            .map_err(|e| StartError::other(format!("cannot open the results log: {e}")))?;
        let now = Instant::now();
        let seed = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id()).rotate_left(32);
        let mut server = Server {
            poll,
            signals: Some(signals),
            users,
            files,
            next_users_save: now + USERS_SAVE_INTERVAL,
            config_path,
            listeners: Slab::new(),
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
            metrics: Metrics::new(cfg.metrics.per_user),
            reject_log: RateLimited::new("refused requests", log::Level::Info, Duration::from_secs(1)),
            tls_log: RateLimited::new("failed TLS handshakes", log::Level::Info, Duration::from_secs(1)),
            buffers_log: RateLimited::new("buffer pauses", log::Level::Info, Duration::from_secs(1)),
            total_buffered: 0,
            log_clock: record::LogClock::default(),
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
            last_reload_ok: true,
            drain: None,
            watchdog: systemd::watchdog_interval().map(|d| (d, now)),
            last_status: String::new(),
            process_seed: seed,
            cfg,
        };
        let mut passed = systemd::passed_sockets().map_err(|message| StartError {
            message,
            exit_code: 1,
        })?;
        for l in server.cfg.listeners.clone() {
            let fd = take_passed(&mut passed, &l);
            // Certificates that do not load are the configuration's fault.
            let settings = ListenerSettings::new(&server.cfg, l).map_err(|message| StartError {
                message,
                exit_code: 1,
            })?;
            server
                .add_listener(Rc::new(settings), fd)
                .map_err(StartError::other)?;
        }
        if let Some(p) = passed.first() {
            return Err(StartError {
                message: format!(
                    "systemd passed a {} socket on {} that no listener of the configuration has",
                    if p.stream { "stream" } else { "datagram" },
                    p.addr
                ),
                exit_code: 1,
            });
        }
        Ok(server)
    }

    /// Binds (or adopts) one listener and registers it with the loop.
    /// Returns its key, or None for a kind this build does not serve.
    fn add_listener(
        &mut self,
        settings: Rc<ListenerSettings>,
        passed: Option<Passed>,
    ) -> Result<usize, String> {
        let l = &settings.cfg;
        let entry = self.listeners.vacant_entry();
        let token = Token(LISTENER_BASE + entry.key());
        let fail = |e: io::Error| format!("cannot listen on {} {}: {e}", l.proto.as_str(), l.address);
        let is_passed = passed.is_some();
        let sock = match l.proto {
            Proto::Udp => {
                let mut s = match passed {
                    Some(p) => listener::adopt_udp(p.fd),
                    None => listener::bind_udp(l),
                }
                .map_err(fail)?;
                udp_io::enable_pktinfo(&s, l.address).map_err(fail)?;
                self.poll
                    .registry()
                    .register(&mut s, token, Interest::READABLE | Interest::WRITABLE)
                    .map_err(fail)?;
                Sock::Udp(s, UdpOut::default())
            }
            Proto::Tcp | Proto::Http | Proto::Tls | Proto::Https => {
                let mut s = match passed {
                    Some(p) => listener::adopt_tcp(p.fd),
                    None => listener::bind_tcp(l),
                }
                .map_err(fail)?;
                self.poll
                    .registry()
                    .register(&mut s, token, Interest::READABLE)
                    .map_err(fail)?;
                Sock::Tcp(s)
            }
        };
        log::info!(
            "listening on {} {}{}",
            l.proto.as_str(),
            l.address,
            if is_passed { " (socket from systemd)" } else { "" }
        );
        let key = entry.key();
        entry.insert(Listener {
            settings,
            sock,
            passed: is_passed,
            stopped: false,
        });
        Ok(key)
    }

    /// Runs until the drain after SIGTERM/SIGINT is complete.
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        systemd::ready(&self.status_line());
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
                self.ready(ev.token(), ev.is_writable(), now);
            }
            self.turn(now);
            if self.drain_complete(now) {
                self.reject_log.finish();
                self.save_users();
                self.files.send();
                return Ok(());
            }
        }
    }

    /// The work after each batch of events: results in, tasks out, replies
    /// written, paused connections resumed, timers.
    fn turn(&mut self, now: Instant) {
        self.collect_results(now);
        self.pump(now);
        self.resume_paused(now);
        self.flush_dirty(now);
        // Results log lines go to the writer thread in batches: at 64 KiB,
        // and on every tick (so within a second, as SPEC section 6 asks);
        // waking it every turn would cost a context switch per request.
        if self.files.buffer().len() >= LOG_BATCH {
            self.files.send();
        }
        if now >= self.next_tick {
            self.tick(now);
            self.next_tick = now + TICK;
        }
    }

    fn ready(&mut self, token: Token, writable: bool, now: Instant) {
        match token.0 {
            t if t == WAKER.0 => {}
            t if t == SIGNALS.0 => self.on_signals(now),
            t if (LISTENER_BASE..CONN_BASE).contains(&t) => {
                let key = t - LISTENER_BASE;
                let Some(l) = self.listeners.get(key) else { return };
                let stopped = l.stopped;
                match l.sock {
                    Sock::Tcp(_) if !stopped => self.accept(key, now),
                    Sock::Tcp(_) => {}
                    Sock::Udp(..) => {
                        if writable {
                            self.udp_flush_out(key);
                        }
                        if !stopped {
                            self.udp_read(key, now);
                        }
                    }
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

    /// Timers: idle connections, lingering closes, accept after EMFILE,
    /// the drain's phases, the watchdog and STATUS=.
    fn tick(&mut self, now: Instant) {
        if self.accept_paused_until.is_some_and(|t| now >= t) {
            let keys: Vec<usize> = self
                .listeners
                .iter()
                .filter(|(_, l)| matches!(l.sock, Sock::Tcp(_)) && !l.stopped)
                .map(|(k, _)| k)
                .collect();
            for key in keys {
                self.accept(key, now);
            }
        }
        self.files.send();
        self.expire_connections(now);
        self.drain_tick(now);
        if now >= self.next_users_save {
            if self.users.dirty {
                self.save_users();
            }
            self.next_users_save = now + USERS_SAVE_INTERVAL;
        }
        if let Some((interval, last)) = self.watchdog
            && now.duration_since(last) >= interval
        {
            systemd::watchdog();
            self.watchdog = Some((interval, now));
        }
        let status = self.status_line();
        if status != self.last_status {
            systemd::status(&status);
            self.last_status = status;
        }
    }

    fn parse_ctx<'a>(&self, l: &'a ListenerSettings) -> ParseCtx<'a> {
        ParseCtx {
            max_values: self.cfg.limits.max_values,
            max_samples: l.max_samples,
            allowed: &l.allowed,
            udp: l.proto() == Proto::Udp,
            workers: self.workers,
        }
    }

    fn loop_op(&self, op: LoopOp) -> Output {
        match op {
            LoopOp::Ping => Output::Word("pong"),
            LoopOp::Quit => Output::Word("bye"),
            LoopOp::Help => Output::Help(
                OPS.iter()
                    .enumerate()
                    .filter(|(id, _)| self.cfg.op_enabled(*id))
                    .map(|(_, op)| op.name)
                    .collect(),
            ),
            LoopOp::Users => Output::Users(self.users.snapshot()),
            LoopOp::Info => Output::Info(self.info()),
        }
    }

    fn info(&self) -> Vec<(String, InfoValue)> {
        let loaded = humantime::format_rfc3339_seconds(self.config_loaded_at).to_string();
        let int = |n: usize| InfoValue::Int(n as u64);
        let mut v = vec![
            (
                "version".to_string(),
                InfoValue::Text(env!("CARGO_PKG_VERSION").to_string()),
            ),
            (
                "uptime_s".to_string(),
                InfoValue::Int(self.started.elapsed().as_secs()),
            ),
            ("workers".to_string(), int(self.workers)),
            ("connections".to_string(), int(self.conns.len())),
            ("incoming".to_string(), int(self.sched.incoming_len())),
            ("ready".to_string(), int(self.sched.ready_len())),
            ("running".to_string(), int(self.running)),
            ("done".to_string(), InfoValue::Int(self.counters.done)),
            ("failed".to_string(), InfoValue::Int(self.counters.failed)),
            ("config_loaded_at".to_string(), InfoValue::Text(loaded)),
            ("last_reload_ok".to_string(), InfoValue::Bool(self.last_reload_ok)),
            (
                "results_log_write_errors".to_string(),
                InfoValue::Int(self.files.write_errors()),
            ),
            (
                "udp_lines_dropped".to_string(),
                InfoValue::Int(self.counters.udp_lines_dropped),
            ),
            (
                "udp_replies_dropped".to_string(),
                InfoValue::Int(self.counters.udp_replies_dropped),
            ),
            (
                "tls_failures".to_string(),
                InfoValue::Int(self.counters.tls_failures),
            ),
        ];
        for code in Code::ALL {
            v.push((
                format!("rejected_{}", code.as_str().replace('-', "_")),
                InfoValue::Int(self.counters.rejected[code as usize]),
            ));
        }
        v
    }

    /// Hands the current user counts to the writer thread.
    fn save_users(&mut self) {
        self.users.dirty = false;
        self.files.save_users(self.users.snapshot());
    }

    /// One line of live figures for systemd's STATUS=.
    fn status_line(&self) -> String {
        format!(
            "{}connections={} incoming={} ready={} running={} done={} last_reload={}",
            if self.drain.is_some() { "draining; " } else { "" },
            self.conns.len(),
            self.sched.incoming_len(),
            self.sched.ready_len(),
            self.running,
            self.counters.done,
            if self.last_reload_ok { "ok" } else { "failed" }
        )
    }

    /// The local addresses actually bound.
    pub fn local_addrs(&self) -> Vec<(Proto, SocketAddr)> {
        self.listeners
            .iter()
            .filter_map(|(_, l)| {
                let addr = match &l.sock {
                    Sock::Tcp(s) => s.local_addr().ok()?,
                    Sock::Udp(s, _) => s.local_addr().ok()?,
                };
                Some((l.settings.proto(), addr))
            })
            .collect()
    }
}

fn log_settings(cfg: &Config) -> LogSettings {
    LogSettings {
        path: cfg.results_log.path.clone(),
        max_bytes: cfg.results_log.max_bytes,
        keep: cfg.results_log.keep,
    }
}

/// Open connections per transport, for /metrics.
fn conns_by_proto(conns: &Slab<Conn>) -> Vec<(&'static str, usize)> {
    let mut counts: Vec<(&'static str, usize)> = Vec::new();
    for (_, c) in conns.iter() {
        let p = c.settings.proto().as_str();
        match counts.iter_mut().find(|(q, _)| *q == p) {
            Some((_, n)) => *n += 1,
            None => counts.push((p, 1)),
        }
    }
    counts
}

/// Takes the passed socket that serves listener `l`: same kind (stream or
/// datagram) and the same local address.
fn take_passed(passed: &mut Vec<Passed>, l: &ListenerConfig) -> Option<Passed> {
    let stream = l.proto.is_stream();
    let i = passed
        .iter()
        .position(|p| p.stream == stream && p.addr == l.address)?;
    Some(passed.remove(i))
}

impl Drop for Server {
    fn drop(&mut self) {
        // Sockets systemd passed are never closed by taskd: leak them, so
        // that only the process's exit closes them.
        for (_, l) in std::mem::take(&mut self.listeners) {
            if l.passed {
                std::mem::forget(l.sock);
            }
        }
        self.pool.shutdown();
    }
}
