//! Raw structs to [`Config`]: defaults for missing keys, range and
//! consistency checks, path resolution, the servers.csv import and the
//! listener checks that need every listener at once.
//!
//! A bad value is reported and replaced by its default so checking goes on:
//! the operator gets every error of a configuration in one run.

use std::collections::HashMap;
use std::fmt::Display;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use toml::Spanned;

use super::load::Sources;
use super::paths::{Bases, resolve};
use super::raw::{Opt, RawConfig, RawListener, RawOp};
use super::*;
use crate::ops::{self, OPS};

/// "No upper bound" for [`Checker::int`]: TOML integers stop at `i64::MAX`.
const UNBOUNDED: u64 = u64::MAX;

struct Checker<'a> {
    src: &'a Sources,
    errors: Vec<Located>,
}

impl Checker<'_> {
    fn err(&mut self, span: &Range<usize>, msg: impl Display) {
        self.errors
            .push((span.start, format!("{}: {msg}", self.src.at(span))));
    }

    /// An integer key in `[min, max]`, or its default.
    fn int(&mut self, v: &Opt<i64>, table: &str, key: &str, default: u64, min: u64, max: u64) -> u64 {
        let Some(v) = v else { return default };
        let n = *v.get_ref();
        match u64::try_from(n) {
            Ok(u) if (min..=max).contains(&u) => u,
            _ => {
                let range = if max >= i64::MAX as u64 {
                    format!("at least {min}")
                } else {
                    format!("between {min} and {max}")
                };
                self.err(
                    &v.span(),
                    format!("`{key}` in [{table}] must be {range}, found {n}"),
                );
                default
            }
        }
    }

    fn size(
        &mut self,
        v: &Opt<i64>,
        table: &str,
        key: &str,
        default: usize,
        min: usize,
        max: usize,
    ) -> usize {
        let max = if max == usize::MAX { UNBOUNDED } else { max as u64 };
        let n = self.int(v, table, key, default as u64, min as u64, max);
        // Cannot fail on the 64-bit targets taskd is built for; saturating
        // keeps a 32-bit build panic-free.
        usize::try_from(n).unwrap_or(usize::MAX)
    }

    fn secs(&mut self, v: &Opt<i64>, table: &str, key: &str, default: u64, max: u64) -> Duration {
        Duration::from_secs(self.int(v, table, key, default, 0, max))
    }

    /// A path key that must not be empty when given.
    fn path(&mut self, v: &Opt<String>, table: &str, key: &str, base: &std::path::Path) -> Option<PathBuf> {
        let v = v.as_ref()?;
        if v.get_ref().is_empty() {
            self.err(&v.span(), format!("`{key}` in [{table}] must not be empty"));
            return None;
        }
        Some(resolve(base, v.get_ref()))
    }
}

fn bool_or(v: &Opt<bool>, default: bool) -> bool {
    v.as_ref().map_or(default, |b| *b.get_ref())
}

/// Validates `raw`. `had_errors`: earlier steps already reported errors, so
/// "no listener" may just be their consequence and is not added.
pub(super) fn validate(
    raw: RawConfig,
    src: &Sources,
    bases: &Bases,
    had_errors: bool,
) -> Result<Config, Vec<Located>> {
    let mut c = Checker {
        src,
        errors: Vec::new(),
    };

    let s = &raw.server;
    let workers = c.size(&s.workers, "server", "workers", DEFAULT_WORKERS, 0, MAX_WORKERS);
    let state_dir = resolve(
        &bases.state,
        s.state_dir
            .as_ref()
            .map_or(DEFAULT_STATE_DIR, |v| v.get_ref().as_str()),
    );
    let shutdown_timeout = c.secs(
        &s.shutdown_timeout_s,
        "server",
        "shutdown_timeout_s",
        DEFAULT_SHUTDOWN_TIMEOUT_S,
        MAX_SHUTDOWN_TIMEOUT_S,
    );
    let drain_delay = c.secs(
        &s.drain_delay_s,
        "server",
        "drain_delay_s",
        DEFAULT_DRAIN_DELAY_S,
        MAX_SHUTDOWN_TIMEOUT_S,
    );
    if drain_delay > shutdown_timeout {
        // The drain delay counts inside the shutdown timeout (taskd(8), SIGNALS):
        // a longer delay would answer every queued task `shutting-down`.
        if let Some(span) = s
            .drain_delay_s
            .as_ref()
            .or(s.shutdown_timeout_s.as_ref())
            .map(Spanned::span)
        {
            c.err(
                &span,
                format!(
                    "`drain_delay_s` ({}) in [server] must not exceed `shutdown_timeout_s` ({})",
                    drain_delay.as_secs(),
                    shutdown_timeout.as_secs()
                ),
            );
        }
    }
    // "" is allowed and means "no import", so a drop-in can switch off a
    // servers_csv the main file sets.
    let servers_csv = s
        .servers_csv
        .as_ref()
        .filter(|v| !v.get_ref().is_empty())
        .map(|v| resolve(&bases.main_dir, v.get_ref()));
    let mut self_ip = Vec::new();
    if let Some(list) = &s.self_ip {
        for (i, v) in list.get_ref().iter().enumerate() {
            match v.get_ref().parse::<IpAddr>() {
                Ok(ip) if !self_ip.contains(&ip) => self_ip.push(ip),
                Ok(_) => {}
                Err(_) => c.err(
                    &v.span(),
                    format!(
                        "element {} of `self_ip` in [server]: `{}` is not an IP address",
                        i + 1,
                        v.get_ref()
                    ),
                ),
            }
        }
        if !list.get_ref().is_empty() && servers_csv.is_none() {
            c.err(
                &list.span(),
                "`self_ip` in [server] has no effect without `servers_csv`",
            );
        }
    }

    let sc = &raw.scheduler;
    let policy = match &sc.policy {
        None => DEFAULT_POLICY,
        Some(v) => Policy::parse(v.get_ref()).unwrap_or_else(|| {
            c.err(
                &v.span(),
                format!(
                    "`policy` in [scheduler] must be hrrn, sjf or fifo, found \"{}\"",
                    v.get_ref()
                ),
            );
            DEFAULT_POLICY
        }),
    };
    let scheduler = SchedulerConfig {
        policy,
        incoming_capacity: c.size(
            &sc.incoming_capacity,
            "scheduler",
            "incoming_capacity",
            DEFAULT_INCOMING_CAPACITY,
            1,
            MAX_QUEUE_CAPACITY,
        ),
        ready_capacity: c.size(
            &sc.ready_capacity,
            "scheduler",
            "ready_capacity",
            DEFAULT_READY_CAPACITY,
            0,
            MAX_QUEUE_CAPACITY,
        ),
    };

    let l = &raw.limits;
    let t = "limits";
    let max_line_bytes = c.size(
        &l.max_line_bytes,
        t,
        "max_line_bytes",
        DEFAULT_MAX_LINE_BYTES,
        MIN_MAX_LINE_BYTES,
        MAX_MAX_LINE_BYTES,
    );
    let max_buffered_bytes = c.size(
        &l.max_buffered_bytes,
        t,
        "max_buffered_bytes",
        DEFAULT_MAX_BUFFERED_BYTES,
        1,
        usize::MAX,
    );
    if max_buffered_bytes < max_line_bytes {
        // Backpressure pauses the largest buffer holders past this total; a
        // single line that may not fit would stall its connection for good.
        if let Some(span) = l
            .max_buffered_bytes
            .as_ref()
            .or(l.max_line_bytes.as_ref())
            .map(Spanned::span)
        {
            c.err(
                &span,
                format!(
                    "`max_buffered_bytes` ({max_buffered_bytes}) in [limits] must be at least `max_line_bytes` ({max_line_bytes})"
                ),
            );
        }
    }
    let idle = c.int(
        &l.idle_timeout_s,
        t,
        "idle_timeout_s",
        DEFAULT_IDLE_TIMEOUT_S,
        0,
        MAX_IDLE_TIMEOUT_S,
    );
    let limits = Limits {
        max_line_bytes,
        max_values: c.size(&l.max_values, t, "max_values", DEFAULT_MAX_VALUES, 1, usize::MAX),
        max_connections: c.size(
            &l.max_connections,
            t,
            "max_connections",
            DEFAULT_MAX_CONNECTIONS,
            1,
            usize::MAX,
        ),
        max_connections_per_ip: c.size(
            &l.max_connections_per_ip,
            t,
            "max_connections_per_ip",
            DEFAULT_MAX_CONNECTIONS_PER_IP,
            1,
            usize::MAX,
        ),
        max_inflight_per_conn: c.size(
            &l.max_inflight_per_conn,
            t,
            "max_inflight_per_conn",
            DEFAULT_MAX_INFLIGHT_PER_CONN,
            1,
            usize::MAX,
        ),
        max_buffered_bytes,
        idle_timeout: (idle > 0).then(|| Duration::from_secs(idle)),
        max_users: c.size(&l.max_users, t, "max_users", DEFAULT_MAX_USERS, 0, usize::MAX),
    };

    let r = &raw.results_log;
    let t = "results_log";
    let path = r
        .path
        .as_ref()
        .map_or(DEFAULT_RESULTS_LOG_PATH, |v| v.get_ref().as_str());
    let results_log = ResultsLogConfig {
        path: (!path.is_empty()).then(|| resolve(&bases.logs, path)),
        max_bytes: c.int(
            &r.max_bytes,
            t,
            "max_bytes",
            DEFAULT_RESULTS_LOG_MAX_BYTES,
            0,
            UNBOUNDED,
        ),
        keep: u32::try_from(c.int(
            &r.keep,
            t,
            "keep",
            u64::from(DEFAULT_RESULTS_LOG_KEEP),
            0,
            u64::from(MAX_RESULTS_LOG_KEEP),
        ))
        .unwrap_or(DEFAULT_RESULTS_LOG_KEEP),
        values_logged: c.size(
            &r.values_logged,
            t,
            "values_logged",
            DEFAULT_VALUES_LOGGED,
            0,
            usize::MAX,
        ),
    };

    let metrics = MetricsConfig {
        per_user: bool_or(&raw.metrics.per_user, DEFAULT_METRICS_PER_USER),
    };

    let ops = op_tables(&mut c, &raw.ops);

    let mut listeners = Vec::new();
    for l in &raw.listener {
        if let Some(l) = listener(&mut c, l, bases) {
            listeners.push(l);
        }
    }
    if let Some(csv) = &servers_csv {
        let at = s
            .servers_csv
            .as_ref()
            .map_or_else(String::new, |v| src.at(&v.span()));
        match super::servers_csv::import(csv, &self_ip, &at) {
            Ok(ls) => listeners.extend(ls),
            Err(e) => c.errors.extend(e.into_iter().map(|m| (NOWHERE, m))),
        }
    }
    check_listener_set(&mut c, &listeners);
    if listeners.is_empty() && c.errors.is_empty() && !had_errors {
        c.errors.push((NOWHERE, no_listener(src)));
    }

    if !c.errors.is_empty() {
        return Err(c.errors);
    }
    Ok(Config {
        sources: src.loaded(),
        server: ServerConfig {
            workers,
            state_dir,
            shutdown_timeout,
            drain_delay,
            servers_csv,
            self_ip,
        },
        scheduler,
        limits,
        results_log,
        metrics,
        ops,
        listeners,
        resolved_against: bases.resolved_against(),
    })
}

/// The `[ops.NAME]` tables, checked against the operation registry.
fn op_tables(
    c: &mut Checker<'_>,
    raw: &std::collections::BTreeMap<Spanned<String>, Spanned<RawOp>>,
) -> Vec<OpConfig> {
    let mut ops: Vec<OpConfig> = OPS
        .iter()
        .map(|spec| OpConfig {
            enabled: DEFAULT_OP_ENABLED,
            limits: spec.limits.iter().map(|l| l.default).collect(),
        })
        .collect();
    for (name, table) in raw {
        // Exact names: TOML keys are case-sensitive, and two spellings of one
        // table could not be merged key by key.
        let Some(id) = OPS.iter().position(|o| o.name == name.get_ref()) else {
            let known: Vec<&str> = OPS.iter().map(|o| o.name).collect();
            c.err(
                &name.span(),
                format!(
                    "unknown operation `{}` in [ops] (known: {})",
                    name.get_ref(),
                    known.join(", ")
                ),
            );
            continue;
        };
        let spec = &OPS[id];
        let label = format!("[ops.{}]", spec.name);
        for (key, value) in table.get_ref() {
            let k = key.get_ref().as_str();
            if k == "enabled" {
                match value.get_ref() {
                    toml::Value::Boolean(b) => ops[id].enabled = *b,
                    v => c.err(
                        &value.span(),
                        format!(
                            "`enabled` in {label} must be true or false, found {}",
                            v.type_str()
                        ),
                    ),
                }
                continue;
            }
            let Some(i) = spec.limits.iter().position(|l| l.key == k) else {
                let mut known = vec!["`enabled`".to_string()];
                known.extend(spec.limits.iter().map(|l| format!("`{}`", l.key)));
                c.err(
                    &key.span(),
                    format!(
                        "unknown key `{k}` in {label} (expected one of {})",
                        known.join(", ")
                    ),
                );
                continue;
            };
            let ls = &spec.limits[i];
            match value.get_ref() {
                toml::Value::Integer(n) => match u64::try_from(*n) {
                    Ok(u) if (ls.min..=ls.max).contains(&u) => ops[id].limits[i] = u,
                    _ => {
                        let range = if ls.max >= i64::MAX as u64 {
                            format!("at least {}", ls.min)
                        } else {
                            format!("between {} and {}", ls.min, ls.max)
                        };
                        c.err(
                            &value.span(),
                            format!("`{k}` in {label} must be {range}, found {n}"),
                        );
                    }
                },
                v => c.err(
                    &value.span(),
                    format!("`{k}` in {label} must be an integer, found {}", v.type_str()),
                ),
            }
        }
    }
    ops
}

/// One `[[listener]]` table; `None` (with errors reported) when it is unusable.
fn listener(c: &mut Checker<'_>, raw: &Spanned<RawListener>, bases: &Bases) -> Option<ListenerConfig> {
    let at = raw.span();
    let l = raw.get_ref();
    let before = c.errors.len();
    let t = "[[listener]]";

    let proto = match &l.proto {
        None => {
            c.err(&at, format!("{t} has no `proto` (tcp, udp, http, tls or https)"));
            None
        }
        Some(v) => {
            let p = Proto::parse(v.get_ref());
            if p.is_none() {
                c.err(
                    &v.span(),
                    format!(
                        "`proto` in {t} must be tcp, udp, http, tls or https, found \"{}\"",
                        v.get_ref()
                    ),
                );
            }
            p
        }
    };
    let address = match &l.address {
        None => {
            c.err(&at, format!("{t} has no `address`"));
            None
        }
        Some(v) => {
            let a = v.get_ref().parse::<SocketAddr>().ok();
            if a.is_none() {
                c.err(
                    &v.span(),
                    format!(
                        "`address` in {t} must be an IP address and port like 127.0.0.1:7700 or [::1]:7700, found \"{}\"",
                        v.get_ref()
                    ),
                );
            }
            a
        }
    };
    let allow = l.allow.as_ref().map(|list| {
        let mut nets = Vec::new();
        for (i, v) in list.get_ref().iter().enumerate() {
            match parse_net(v.get_ref()) {
                Some(n) if !nets.contains(&n) => nets.push(n),
                Some(_) => {}
                None => c.err(
                    &v.span(),
                    format!(
                        "element {} of `allow` in {t}: `{}` is not an address or CIDR network like 10.0.0.0/8",
                        i + 1,
                        v.get_ref()
                    ),
                ),
            }
        }
        nets
    });
    let op_list = l.ops.as_ref().map(|list| {
        let mut ids = Vec::new();
        for (i, v) in list.get_ref().iter().enumerate() {
            match ops::lookup(v.get_ref()) {
                Some(id) if !ids.contains(&id) => ids.push(id),
                Some(_) => {}
                None => c.err(
                    &v.span(),
                    format!(
                        "element {} of `ops` in {t}: unknown operation `{}`",
                        i + 1,
                        v.get_ref()
                    ),
                ),
            }
        }
        ids
    });
    let recv_buffer = l.recv_buffer.as_ref().and_then(|v| {
        if proto.is_some_and(|p| p != Proto::Udp) {
            c.err(
                &v.span(),
                format!("`recv_buffer` in {t} is for udp listeners only"),
            );
            return None;
        }
        let n = c.size(&l.recv_buffer, "[listener]", "recv_buffer", 0, 1, MAX_RECV_BUFFER);
        (n > 0).then_some(n)
    });
    let cert = c.path(&l.cert, "[listener]", "cert", &bases.main_dir);
    let key = c.path(&l.key, "[listener]", "key", &bases.main_dir);
    let client_ca = c.path(&l.client_ca, "[listener]", "client_ca", &bases.main_dir);
    if let Some(p) = proto {
        if p.is_tls() {
            for (name, v) in [("cert", &l.cert), ("key", &l.key)] {
                if v.is_none() {
                    c.err(&at, format!("{t} with proto = \"{p}\" needs `{name}`"));
                }
            }
        } else {
            for (name, v) in [("cert", &l.cert), ("key", &l.key), ("client_ca", &l.client_ca)] {
                if let Some(v) = v {
                    c.err(
                        &v.span(),
                        format!("`{name}` in {t} is for tls and https listeners only, not {p}"),
                    );
                }
            }
            if let Some(v) = &l.allow_user_override {
                c.err(
                    &v.span(),
                    format!("`allow_user_override` in {t} is for tls and https listeners only, not {p}"),
                );
            }
        }
    }
    if c.errors.len() > before {
        return None;
    }
    Some(ListenerConfig {
        proto: proto?,
        address: address?,
        allow,
        ops: op_list,
        recv_buffer,
        reuse_port: bool_or(&l.reuse_port, DEFAULT_REUSE_PORT),
        cert,
        key,
        client_ca,
        allow_user_override: bool_or(&l.allow_user_override, false),
        origin: c.src.origin(&at),
    })
}

/// A CIDR network, or a bare address as a one-address network. Host bits
/// are cleared (`10.1.2.3/8` is `10.0.0.0/8`): that is what matching does.
fn parse_net(s: &str) -> Option<ipnet::IpNet> {
    if let Ok(n) = s.parse::<ipnet::IpNet>() {
        return Some(n.trunc());
    }
    s.parse::<IpAddr>().ok().map(ipnet::IpNet::from)
}

/// Checks that need all listeners: the same proto and address twice, and
/// two stream protocols on one TCP address (they could never both bind, or
/// with reuse_port would split one port's clients between two protocols).
fn check_listener_set(c: &mut Checker<'_>, listeners: &[ListenerConfig]) {
    let mut seen: HashMap<(Proto, SocketAddr), &str> = HashMap::new();
    let mut tcp: HashMap<SocketAddr, (Proto, &str)> = HashMap::new();
    for l in listeners {
        if let Some(first) = seen.get(&listener_key(l)) {
            c.errors.push((
                NOWHERE,
                format!(
                    "{}: duplicate listener {} {}: already defined at {first}",
                    l.origin, l.proto, l.address
                ),
            ));
            continue;
        }
        seen.insert(listener_key(l), &l.origin);
        if l.proto.is_stream() {
            if let Some((p, first)) = tcp.get(&l.address) {
                c.errors.push((
                    NOWHERE,
                    format!(
                        "{}: {} listener on {} conflicts with the {p} listener at {first}: both need TCP port {}",
                        l.origin,
                        l.proto,
                        l.address,
                        l.address.port()
                    ),
                ));
            } else {
                tcp.insert(l.address, (l.proto, &l.origin));
            }
        }
    }
}

/// The error for a configuration without listeners. Every other key has a
/// default, listeners have none (taskd.toml(5)): a configuration must say
/// where to serve. An empty main file gets its own words, since "keys left
/// out take their defaults" would suggest it means the embedded default.
fn no_listener(src: &Sources) -> String {
    let Some(main) = src.loaded().into_iter().next() else {
        return "embedded default: no listener configured".to_string();
    };
    let empty = src.files.iter().all(|f| {
        f.text
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
    });
    let what = if empty {
        "the configuration is empty (no key set, in it or in conf.d)"
    } else {
        "no listener configured"
    };
    format!(
        "{}: {what}: every key has a default except the listeners; add a [[listener]] table \
         (the embedded default's are in the packaged /etc/taskd/taskd.toml and conf/taskd.toml) \
         or set `servers_csv` in [server]",
        main.display()
    )
}
