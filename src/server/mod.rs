//! The event loop: one mio `Poll` owns every listening socket and every
//! connection. Each turn runs its phases once, in this order:
//!
//! 1. signals: start a drain, reload, reopen the results log;
//! 2. results: finished jobs from the workers become replies in place;
//! 3. accept: new connections, a capped number per listener (`door.rs`);
//! 4. read: readable connections are read, framed and each request
//!    dispatched (`stream.rs`, `udp.rs`, `dispatch.rs`);
//! 5. pump: ready work to idle workers (`crate::tasks` decides what);
//! 6. write: connections with new output are written;
//! 7. timers: idle and lingering connections, the drain, users.json,
//!    STATUS= and the watchdog.
//!
//! Nothing is handled inside another phase, so no phase re-enters another;
//! whatever a phase leaves for later (a connection cut short by a fairness
//! cap, one that may read again) is picked up by the next turn, which then
//! polls without waiting.
//!
//! Architecture invariant: only this loop touches sockets, and it never
//! blocks: numbers are parsed and computed on workers, files are written by
//! the writer thread. The one exception is SIGHUP's reload, which reads and
//! checks the configuration and certificates on the loop (a few
//! milliseconds; taskd(8) says so).

mod budget;
mod conn;
mod dispatch;
mod door;
mod lifecycle;
mod listener;
mod record;
mod stream;
mod udp;
mod udp_io;

use std::collections::HashMap;
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
use crate::pool::Pool;
use crate::signals::Signals;
use crate::systemd::{self, Passed};
use crate::tasks::Tasks;
use budget::Budget;
use conn::Buffers;
use dispatch::Answer;
use door::Door;
use lifecycle::Life;
use listener::ListenerSettings;
use record::Books;
use stream::Conn;
use udp::{UdpBatch, UdpOut, UdpRx};

const WAKER: Token = Token(0);
const SIGNALS: Token = Token(1);
const LISTENER_BASE: usize = 16;
const CONN_BASE: usize = 1 << 20;
/// The loop's own timer: idle timeouts, lingering deadlines, the drain,
/// users.json, STATUS=.
const TICK: Duration = Duration::from_millis(250);
/// Results log bytes collected before they go to the writer thread (it is
/// also woken on every tick).
const LOG_BATCH: usize = 64 * 1024;

/// A startup failure, with the exit status it calls for (taskd(8), EXIT
/// STATUS).
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

    fn config(message: String) -> StartError {
        StartError {
            message,
            exit_code: 1,
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
    /// Taken out of the loop by a drain: never accepted from or read again.
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

/// What the events of one poll asked for, handled by the turn's phases.
#[derive(Default)]
struct Ready {
    /// Stream listeners with connections to accept.
    accept: Vec<usize>,
    /// Connections to read (readable, cut short by a cap, or resumed).
    read: Vec<usize>,
    /// Connections with output to write.
    write: Vec<usize>,
    /// UDP listeners to read.
    udp: Vec<usize>,
    /// UDP listeners whose socket may take queued replies again.
    udp_write: Vec<usize>,
    /// Connections that stopped reading until inflight tasks or unsent
    /// output go down.
    held: Vec<usize>,
    signals: bool,
}

impl Ready {
    fn is_urgent(&self) -> bool {
        !(self.accept.is_empty()
            && self.read.is_empty()
            && self.udp.is_empty()
            && self.write.is_empty()
            && self.udp_write.is_empty())
    }
}

pub struct Server {
    poll: Poll,
    cfg: Config,
    /// `--config`, read again on SIGHUP.
    config_path: Option<PathBuf>,
    listeners: Slab<Listener>,
    conns: Slab<Conn>,
    next_conn_id: u64,
    per_ip: HashMap<IpAddr, usize>,
    door: Door,
    buffers: Buffers,
    batches: Slab<UdpBatch>,
    next_batch_id: u64,
    tasks: Tasks<Answer>,
    pool: Pool,
    workers: usize,
    budget: Budget,
    books: Books,
    life: Life,
    ready: Ready,
    /// Read buffer of input that is thrown away (lingering connections,
    /// refusals at the door).
    scratch: Vec<u8>,
    /// A small request's values, copied out of its connection's buffer for
    /// the time of its dispatch.
    line: Vec<u8>,
    /// The buffers of one `recvmmsg` batch (`udp.rs`).
    udp_rx: UdpRx,
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
        let users_path = cfg.server.state_dir.join("users.json");
        // The error names the file already.
        let saved = files::load_users(&users_path).map_err(|e| StartError::other(e.to_string()))?;
        let files = FileWriter::start(log_settings(&cfg), users_path)
            .map_err(|e| StartError::other(format!("cannot open the results log: {e}")))?;
        let books = Books::new(&cfg, files, saved);
        let now = Instant::now();
        let seed = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id()).rotate_left(32);
        let tasks = Tasks::new(
            cfg.scheduler.policy,
            cfg.scheduler.incoming_capacity,
            ready_capacity(cfg.scheduler.ready_capacity, workers),
            seed,
        );
        let mut server = Server {
            poll,
            config_path,
            listeners: Slab::new(),
            // Room for every connection allowed, reserved once as nginx does
            // its connection array: pages are only touched as slots are used,
            // and growing by doubling would copy the table and leave the old
            // copy resident.
            conns: Slab::with_capacity(cfg.limits.max_connections.min(1 << 16)),
            next_conn_id: 1,
            per_ip: HashMap::new(),
            door: Door::default(),
            buffers: Buffers::default(),
            batches: Slab::new(),
            next_batch_id: 1,
            tasks,
            pool,
            workers,
            budget: Budget::new(cfg.limits.max_buffered_bytes),
            books,
            life: Life::new(signals, now),
            ready: Ready::default(),
            scratch: vec![0; 65536],
            line: Vec::new(),
            udp_rx: UdpRx::default(),
            cfg,
        };
        let mut passed = systemd::passed_sockets().map_err(StartError::config)?;
        for l in server.cfg.listeners.clone() {
            let fd = take_passed(&mut passed, &l);
            // Certificates that do not load are the configuration's fault.
            let settings = ListenerSettings::new(&server.cfg, l).map_err(StartError::config)?;
            server
                .add_listener(Rc::new(settings), fd)
                .map_err(StartError::other)?;
        }
        if let Some(p) = passed.first() {
            return Err(StartError::config(format!(
                "systemd passed a {} socket on {} that no listener of the configuration has",
                if p.stream { "stream" } else { "datagram" },
                p.addr
            )));
        }
        Ok(server)
    }

    /// Binds (or adopts) one listener and registers it with the loop.
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
                    .register(&mut s, token, Interest::READABLE)
                    .map_err(fail)?;
                Sock::Udp(s, UdpOut::default())
            }
            Proto::Tcp | Proto::Http | Proto::Tls | Proto::Https => {
                let mut s = match passed {
                    Some(p) => listener::adopt_tcp(p.fd),
                    None => listener::bind_tcp(l),
                }
                .map_err(fail)?;
                if self.door.is_open() {
                    self.poll
                        .registry()
                        .register(&mut s, token, Interest::READABLE)
                        .map_err(fail)?;
                }
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
        if matches!(self.listeners[key].sock, Sock::Tcp(_)) {
            self.ready.accept.push(key);
        }
        Ok(key)
    }

    /// Runs until the drain after SIGTERM/SIGINT is complete.
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        systemd::ready(&self.status_line());
        loop {
            let timeout = if self.ready.is_urgent() || self.door.has_readable() {
                Duration::ZERO
            } else {
                self.life
                    .next_timer(self.door.reopen_at())
                    .saturating_duration_since(Instant::now())
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout))
                && e.kind() != io::ErrorKind::Interrupted
            {
                return Err(e);
            }
            for ev in events.iter() {
                self.note(ev);
            }
            let now = Instant::now();
            self.turn(now);
            if self.drain_complete(now) {
                self.books.finish();
                return Ok(());
            }
        }
    }

    /// Sorts one readiness event into the turn's work lists.
    fn note(&mut self, ev: &mio::event::Event) {
        match ev.token() {
            WAKER => {}
            SIGNALS => self.ready.signals = true,
            Token(t) if (door::REFUSAL_BASE..CONN_BASE).contains(&t) => {
                self.door.readable(t - door::REFUSAL_BASE)
            }
            Token(t) if (LISTENER_BASE..door::REFUSAL_BASE).contains(&t) => {
                let key = t - LISTENER_BASE;
                let Some(l) = self.listeners.get(key) else { return };
                match &l.sock {
                    Sock::Tcp(_) if !l.stopped => self.ready.accept.push(key),
                    Sock::Tcp(_) => {}
                    Sock::Udp(..) => {
                        // A stopped listener still sends the replies it owes.
                        if ev.is_writable() {
                            self.ready.udp_write.push(key);
                        }
                        if ev.is_readable() && !l.stopped {
                            self.ready.udp.push(key);
                        }
                    }
                }
            }
            Token(t) if t >= CONN_BASE => {
                let key = t - CONN_BASE;
                if ev.is_writable() {
                    self.ready.write.push(key);
                }
                if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                    self.ready.read.push(key);
                    if ev.is_read_closed() {
                        self.peer_closed(key);
                    }
                }
            }
            _ => {}
        }
    }

    /// One turn of the loop: every phase once, in order (see the module's
    /// documentation).
    fn turn(&mut self, now: Instant) {
        self.books.set_clock(SystemTime::now());
        if std::mem::take(&mut self.ready.signals) {
            self.on_signals(now);
        }
        self.collect_results(now);
        self.accept_all(now);
        self.read_all(now);
        self.pump(now);
        self.write_all(now);
        self.timers(now);
    }

    /// Phase 2: finished jobs.
    fn collect_results(&mut self, now: Instant) {
        self.pool.arm_wake();
        while let Some(done) = self.pool.try_recv() {
            if let Some(finished) = self.tasks.complete(done, now) {
                self.finish(finished, now);
            }
        }
    }

    /// Phase 5: the short-term scheduler hands ready work to idle workers.
    fn pump(&mut self, now: Instant) {
        while self.pool.has_idle() {
            let users = &self.books.users;
            let Some(job) = self.tasks.next_job(now, &mut || users.snapshot()) else {
                break;
            };
            if let Err(job) = self.pool.submit(job)
                && let Some(finished) = self.tasks.refused(job, now)
            {
                self.finish(finished, now);
            }
        }
    }

    /// Phase 7: timers, the results log batch, the watchdog.
    fn timers(&mut self, now: Instant) {
        if self.books.files.buffer().len() >= LOG_BATCH {
            self.books.files.send();
        }
        if self.door.due(now) {
            self.reopen_door();
        }
        if self.life.tick_due(now) {
            self.tick(now);
        }
        self.life.pet_watchdog(now);
    }

    /// The periodic work of [`TICK`].
    fn tick(&mut self, now: Instant) {
        self.books.files.send();
        self.expire_connections(now);
        self.door.expire(now, &self.poll);
        self.drain_tick(now);
        self.books.save_users_if_due(now);
        let status = self.status_line();
        self.life.status(status);
    }

    /// One line of live figures for systemd's STATUS=.
    fn status_line(&self) -> String {
        format!(
            "{}connections={} incoming={} ready={} running={} done={} last_reload={}",
            if self.life.draining() { "draining; " } else { "" },
            self.conns.len(),
            self.tasks.incoming_len(),
            self.tasks.ready_len(),
            self.tasks.running(),
            self.books.counters.done,
            if self.life.last_reload_ok { "ok" } else { "failed" }
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
