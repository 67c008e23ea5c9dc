//! The daemon's life around the requests: SIGHUP reloads, SIGUSR1 reopens
//! the results log, SIGTERM/SIGINT drain (taskd(8), SIGNALS); the loop's
//! timers and systemd's watchdog.
//!
//! A drain has three phases: until `drain_delay_s` the daemon serves as
//! usual (only `/healthz` says 503); then every new request is answered
//! `shutting-down` while the tasks accepted before run to their answer;
//! at `shutdown_timeout_s` whatever is still queued or running is answered
//! `shutting-down`, and the loop ends once the replies are written.
//!
//! Sockets passed by systemd are never closed, but from the second phase on
//! they are no longer accepted from or read: new connections and datagrams
//! wait in the kernel's queues for the next instance, so a restart under
//! socket activation refuses nothing. Once everything is answered, no
//! listener is read any more and every connection left gets a lingering
//! close; the loop ends when the clients have closed (or their 2 s are
//! over), so the exit resets none of them.

use std::collections::HashSet;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

use super::conn::Phase;
use super::listener::ListenerSettings;
use mio::{Interest, Token};

use super::{LISTENER_BASE, Server, Sock, TICK, log_settings, ready_capacity, resolve_workers};
use crate::config::{self, Config, listener_key};
use crate::protocol::Failure;
use crate::signals::Signals;
use crate::systemd;

/// How long, past the shutdown timeout, replies may take to be written
/// before the loop ends regardless.
const FINAL_FLUSH: Duration = Duration::from_secs(2);

struct Drain {
    /// New requests are refused from this moment.
    refuse_from: Instant,
    /// Tasks still unanswered at this moment are answered `shutting-down`.
    deadline: Instant,
    /// Set once the deadline passed and the leftovers were answered.
    expired: bool,
}

/// Signals, timers and the state the daemon reports about itself.
pub struct Life {
    signals: Signals,
    drain: Option<Drain>,
    next_tick: Instant,
    /// Half of WATCHDOG_USEC, and when WATCHDOG=1 is due next.
    watchdog: Option<(Duration, Instant)>,
    last_status: String,
    pub started: Instant,
    pub started_at: SystemTime,
    pub config_loaded_at: SystemTime,
    pub last_reload_ok: bool,
}

impl Life {
    pub fn new(signals: Signals, now: Instant) -> Life {
        Life {
            signals,
            drain: None,
            next_tick: now + TICK,
            watchdog: systemd::watchdog_interval().map(|d| (d, now + d)),
            last_status: String::new(),
            started: now,
            started_at: SystemTime::now(),
            config_loaded_at: SystemTime::now(),
            last_reload_ok: true,
        }
    }

    /// Whether a drain has started (`/healthz` says 503).
    pub fn draining(&self) -> bool {
        self.drain.is_some()
    }

    /// The next moment a timer is due: the tick, the watchdog, a door to
    /// open.
    pub fn next_timer(&self, door: Option<Instant>) -> Instant {
        let mut t = self.next_tick;
        if let Some((_, due)) = self.watchdog {
            t = t.min(due);
        }
        if let Some(d) = door {
            t = t.min(d);
        }
        t
    }

    pub fn tick_due(&mut self, now: Instant) -> bool {
        if now < self.next_tick {
            return false;
        }
        self.next_tick = now + TICK;
        true
    }

    /// WATCHDOG=1 at half of WATCHDOG_USEC, on its own timer: however the
    /// turns fall, the gap stays under the interval systemd allows.
    pub fn pet_watchdog(&mut self, now: Instant) {
        if let Some((interval, due)) = self.watchdog
            && now >= due
        {
            systemd::watchdog();
            self.watchdog = Some((interval, now + interval));
        }
    }

    /// STATUS=, when it changed.
    pub fn status(&mut self, status: String) {
        if status != self.last_status {
            systemd::status(&status);
            self.last_status = status;
        }
    }
}

impl Server {
    pub(super) fn on_signals(&mut self, now: Instant) {
        let pending = self.life.signals.take();
        if pending.terminate {
            self.start_drain(now);
        }
        if pending.reload {
            self.reload();
        }
        if pending.reopen {
            log::info!("SIGUSR1: reopening the results log");
            self.books.files.reopen(log_settings(&self.cfg));
        }
    }

    fn start_drain(&mut self, now: Instant) {
        if self.life.drain.is_some() {
            return;
        }
        let delay = self.cfg.server.drain_delay;
        let timeout = self.cfg.server.shutdown_timeout;
        log::info!(
            "draining: serving {}s more, then refusing new requests; answering what is left after {}s",
            delay.as_secs(),
            timeout.as_secs()
        );
        systemd::stopping();
        self.life.drain = Some(Drain {
            refuse_from: now + delay,
            deadline: now + timeout,
            expired: false,
        });
        // Without a delay, the passed sockets are left alone right away.
        self.drain_tick(now);
    }

    /// Whether new requests are answered `shutting-down`.
    pub(super) fn refusing(&self, now: Instant) -> bool {
        self.life.drain.as_ref().is_some_and(|d| now >= d.refuse_from)
    }

    /// The drain's deadline: every task left is answered `shutting-down`.
    pub(super) fn drain_tick(&mut self, now: Instant) {
        if self.refusing(now) {
            self.stop_listening(true);
        }
        let Some(d) = self.life.drain.as_mut() else { return };
        if now < d.deadline || d.expired {
            return;
        }
        d.expired = true;
        let left = self.tasks.len();
        if left > 0 {
            log::warn!("shutdown timeout: answering {left} unfinished tasks with shutting-down");
        }
        for f in self.tasks.abandon_all(&Failure::shutting_down(), now) {
            self.finish(f, now);
        }
        self.write_all(now);
    }

    /// Whether the loop may end: every task answered, every reply written
    /// and every connection closed (or the final grace period after the
    /// deadline is over). Once all is answered, nothing more is accepted,
    /// and the connections left get a lingering close as they go quiet: a
    /// client sees the end of its connection, not a reset by the exit.
    pub(super) fn drain_complete(&mut self, now: Instant) -> bool {
        let Some(d) = &self.life.drain else { return false };
        if now < d.refuse_from {
            return false;
        }
        if now >= d.deadline + FINAL_FLUSH {
            return true;
        }
        let written = self
            .conns
            .iter()
            .all(|(_, c)| c.session.all_sent() || matches!(c.session.phase(), Phase::Lingering { .. }));
        if !(self.tasks.is_empty() && self.batches.is_empty() && written) {
            return false;
        }
        // Connections are closed as they go quiet (a second without a
        // request: the drain's idle rule), not at once: a client may still
        // be sending requests it expects answered, if only with
        // `shutting-down`.
        self.stop_listening(false);
        self.conns.is_empty()
    }

    /// Stops accepting and reading on the sockets systemd passed
    /// (`passed_only`), or on every listener. The sockets stay open: new
    /// connections and datagrams wait in the kernel's queues, for the next
    /// instance when systemd holds the sockets. A UDP socket stays
    /// registered for writing, for the replies still queued.
    fn stop_listening(&mut self, passed_only: bool) {
        let door_open = self.door.is_open();
        for (key, l) in self.listeners.iter_mut() {
            if l.stopped || (passed_only && !l.passed) {
                continue;
            }
            l.stopped = true;
            let registry = self.poll.registry();
            let result = match &mut l.sock {
                // A closed door has taken it out of the loop already.
                Sock::Tcp(_) if !door_open => Ok(()),
                Sock::Tcp(t) => registry.deregister(t),
                Sock::Udp(u, _) => registry.reregister(u, Token(LISTENER_BASE + key), Interest::WRITABLE),
            };
            let s = &l.settings.cfg;
            match result {
                Ok(()) if l.passed => log::info!(
                    "draining: {} {} (socket from systemd) left to the next start",
                    s.proto.as_str(),
                    s.address
                ),
                Ok(()) => {}
                Err(e) => log::warn!("cannot stop listening on {} {}: {e}", s.proto.as_str(), s.address),
            }
        }
    }

    /// SIGHUP: read and validate the whole configuration again; apply it
    /// only if all of it is valid and every new listener could be bound.
    /// This is the loop's one blocking step: reading the files and the
    /// certificates (milliseconds; taskd(8) says so).
    pub(super) fn reload(&mut self) {
        systemd::reloading();
        log::info!("SIGHUP: reloading the configuration");
        let started = Instant::now();
        let result = config::load(self.config_path.as_deref(), &|k| std::env::var_os(k))
            .map_err(|e| e.to_string())
            .and_then(|new| self.apply(new));
        match result {
            Ok(()) => {
                self.life.last_reload_ok = true;
                self.life.config_loaded_at = SystemTime::now();
                log::info!("reload done in {:.1} ms", started.elapsed().as_secs_f64() * 1e3);
            }
            Err(e) => {
                self.life.last_reload_ok = false;
                log::error!("reload failed; still running on the previous configuration:\n{e}");
            }
        }
        let status = self.status_line();
        systemd::ready(&status);
        self.life.status(status);
    }

    fn apply(&mut self, mut new: Config) -> Result<(), String> {
        let old: HashSet<_> = self
            .listeners
            .iter()
            .map(|(_, l)| listener_key(&l.settings.cfg))
            .collect();
        let wanted: HashSet<_> = new.listeners.iter().map(listener_key).collect();

        // Every listener's settings (certificates included) first, then the
        // new listeners: if anything fails, nothing changes.
        let mut settings = Vec::new();
        for l in &new.listeners {
            settings.push((listener_key(l), Rc::new(ListenerSettings::new(&new, l.clone())?)));
        }
        let mut added = Vec::new();
        for (_, s) in settings.iter().filter(|(k, _)| !old.contains(k)) {
            match self.add_listener(Rc::clone(s), None) {
                Ok(key) => added.push(key),
                Err(e) => {
                    for key in added {
                        self.remove_listener(key);
                    }
                    return Err(e);
                }
            }
        }
        let workers = resolve_workers(new.server.workers);
        self.pool
            .resize(workers)
            .map_err(|e| format!("cannot start {workers} workers: {e}"))?;

        if new.server.state_dir != self.cfg.server.state_dir {
            log::warn!(
                "state_dir changes only at restart; still using {}",
                self.cfg.server.state_dir.display()
            );
            new.server.state_dir = self.cfg.server.state_dir.clone();
        }
        self.cfg = new;

        let removed: Vec<usize> = self
            .listeners
            .iter()
            .filter(|(_, l)| !wanted.contains(&listener_key(&l.settings.cfg)) && !l.passed)
            .map(|(k, _)| k)
            .collect();
        for key in removed {
            self.remove_listener(key);
        }
        // New clients of the kept listeners get the new allow/ops/limits
        // and certificates.
        for (_, listener) in self.listeners.iter_mut() {
            let key_of = listener_key(&listener.settings.cfg);
            if let Some((_, s)) = settings.iter().find(|(k, _)| *k == key_of) {
                listener.settings = Rc::clone(s);
            }
        }
        if workers != self.workers {
            log::info!("workers: {} -> {workers}", self.workers);
            self.workers = workers;
        }
        self.tasks.reconfigure(
            self.cfg.scheduler.policy,
            self.cfg.scheduler.incoming_capacity,
            ready_capacity(self.cfg.scheduler.ready_capacity, workers),
        );
        self.budget.set_max(self.cfg.limits.max_buffered_bytes);
        self.books.configure(&self.cfg);
        self.books.files.reopen(log_settings(&self.cfg));
        Ok(())
    }

    fn remove_listener(&mut self, key: usize) {
        if !self.listeners.contains(key) {
            return;
        }
        let mut l = self.listeners.remove(key);
        let s = &l.settings.cfg;
        log::info!("no longer listening on {} {}", s.proto.as_str(), s.address);
        let _ = match &mut l.sock {
            Sock::Tcp(t) => self.poll.registry().deregister(t),
            Sock::Udp(u, out) => {
                // Replies it could not send go with it.
                self.budget.update(out.queued(), 0);
                self.poll.registry().deregister(u)
            }
        };
    }
}
