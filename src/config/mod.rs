//! taskd's configuration: which files are read, how they combine, and the
//! validated, typed [`Config`] the rest of the daemon runs on.
//!
//! It exists so that everything an operator can get wrong is caught in one
//! place, before a socket is bound: at start, on SIGHUP (a bad reload keeps the
//! old configuration) and by `taskd --check-config`, with every error naming
//! its file, line and key.
//!
//! # Precedence (lowest first)
//!
//! 1. The built-in defaults, the `DEFAULT_*` constants below: every key a file
//!    does not set.
//! 2. The main file: `--config PATH` (missing: error), else
//!    [`DEFAULT_CONFIG_PATH`] when it exists, else [`EMBEDDED_DEFAULT`] (which
//!    has no conf.d).
//! 3. Every `*.toml` in the `conf.d` folder beside the main file, in lexical
//!    order of the file names: tables merge key by key and the later file
//!    wins; `[[listener]]` arrays append; other arrays are replaced whole.
//! 4. `server.servers_csv`: its rows served by this host add listeners after
//!    the `[[listener]]` tables.
//!
//! # Steps
//!
//! `load.rs` reads the files, parses them into span-carrying TOML trees and
//! merges those; `raw.rs` holds the serde structs (`deny_unknown_fields`) the
//! merged tree is deserialized into; `validate.rs` turns them into [`Config`],
//! resolving paths (`paths.rs`) and importing servers.csv (`servers_csv.rs`);
//! `render.rs` writes a [`Config`] back as TOML for `--check-config`.

use std::ffi::OsString;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::ops::{OPS, OpId};

mod load;
mod paths;
mod raw;
mod render;
mod servers_csv;
mod validate;

#[cfg(test)]
mod tests;

pub use render::render;

/// The main configuration file read when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/taskd/taskd.toml";

/// `server.workers`: 0 starts one worker per CPU.
pub const DEFAULT_WORKERS: usize = 0;
/// Upper bound of `server.workers`: more threads than this only add contention.
pub const MAX_WORKERS: usize = 1024;
/// `server.state_dir`: empty means the base folder itself (`$STATE_DIRECTORY`,
/// else the main file's folder).
pub const DEFAULT_STATE_DIR: &str = "";
/// `server.shutdown_timeout_s`: how long a drain may take before queued tasks
/// are answered `shutting-down`.
pub const DEFAULT_SHUTDOWN_TIMEOUT_S: u64 = 30;
/// `server.drain_delay_s`: how long to keep serving after SIGTERM while
/// `/healthz` already says 503, so load balancers can notice.
pub const DEFAULT_DRAIN_DELAY_S: u64 = 0;
/// Upper bound of the two timeouts above: the systemd unit's `TimeoutStopSec=`
/// has to stay above them, so absurd values are refused rather than killed.
pub const MAX_SHUTDOWN_TIMEOUT_S: u64 = 86_400;

/// `scheduler.policy`.
pub const DEFAULT_POLICY: Policy = Policy::Hrrn;
/// `scheduler.incoming_capacity`: tasks waiting for the long-term scheduler.
pub const DEFAULT_INCOMING_CAPACITY: usize = 65_536;
/// `scheduler.ready_capacity`: 0 means twice the number of workers.
pub const DEFAULT_READY_CAPACITY: usize = 0;
/// Upper bound of both queue capacities: they bound memory, so a typo with
/// three extra zeros is refused instead of allowing an unbounded backlog.
pub const MAX_QUEUE_CAPACITY: usize = 1 << 24;

/// `limits.max_line_bytes` (8 MiB).
pub const DEFAULT_MAX_LINE_BYTES: usize = 8 * 1024 * 1024;
/// Lower bound of `limits.max_line_bytes`: a line must at least hold an id,
/// a user and an operation name.
pub const MIN_MAX_LINE_BYTES: usize = 64;
/// Upper bound of `limits.max_line_bytes` (1 GiB): one line is buffered whole.
pub const MAX_MAX_LINE_BYTES: usize = 1 << 30;
/// `limits.max_values`.
pub const DEFAULT_MAX_VALUES: usize = 1_000_000;
/// `limits.max_connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// `limits.max_connections_per_ip`.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 1_000;
/// `limits.max_inflight_per_conn`: tasks one connection may have outstanding
/// before it is no longer read.
pub const DEFAULT_MAX_INFLIGHT_PER_CONN: usize = 128;
/// `limits.max_buffered_bytes` (256 MiB): all connection buffers together.
/// It may not be below `max_line_bytes`, or one long line could stall
/// every connection.
pub const DEFAULT_MAX_BUFFERED_BYTES: usize = 256 * 1024 * 1024;
/// `limits.idle_timeout_s`: 0 means never.
pub const DEFAULT_IDLE_TIMEOUT_S: u64 = 300;
/// Upper bound of `limits.idle_timeout_s` (one year).
pub const MAX_IDLE_TIMEOUT_S: u64 = 365 * 86_400;
/// `limits.max_users`: user names counted individually.
pub const DEFAULT_MAX_USERS: usize = 100_000;

/// `results_log.path`: relative to `$LOGS_DIRECTORY`, else the main file's
/// folder; `""` turns the log off.
pub const DEFAULT_RESULTS_LOG_PATH: &str = "results.log";
/// `results_log.max_bytes` (10 MiB): rotate past this size; 0 never rotates.
pub const DEFAULT_RESULTS_LOG_MAX_BYTES: u64 = 10 * 1024 * 1024;
/// `results_log.keep`: rotated files kept (`results.log.1` … `.5`).
pub const DEFAULT_RESULTS_LOG_KEEP: u32 = 5;
/// Upper bound of `results_log.keep`: each kept file is a rename at rotation.
pub const MAX_RESULTS_LOG_KEEP: u32 = 1000;
/// `results_log.values_logged`: input values written per line, at most.
pub const DEFAULT_VALUES_LOGGED: usize = 16;

/// `metrics.per_user`: per-user series are off by default because their
/// cardinality is the clients' choice.
pub const DEFAULT_METRICS_PER_USER: bool = false;

/// `ops.NAME.enabled`.
pub const DEFAULT_OP_ENABLED: bool = true;

/// `listener.reuse_port`: SO_REUSEPORT only when asked for, so a second
/// taskd cannot silently share a port with the first.
pub const DEFAULT_REUSE_PORT: bool = false;
/// Upper bound of `listener.recv_buffer`: SO_RCVBUF takes a C `int`.
pub const MAX_RECV_BUFFER: usize = i32::MAX as usize;

/// The embedded default: used when no `--config` is given and
/// [`DEFAULT_CONFIG_PATH`] does not exist, and shipped as the packaged
/// `/etc/taskd/taskd.toml`, so a fresh install serves on the same addresses.
/// Every other key is shown commented out with its default value (a unit
/// test checks that uncommenting them changes nothing).
pub const EMBEDDED_DEFAULT: &str = r#"# taskd configuration; see taskd.toml(5).
#
# Every *.toml file in conf.d/ beside this file is merged in, in lexical
# order: tables merge key by key (the later file wins), [[listener]] tables
# append. Keys left out take the defaults shown commented out below, except
# the listeners at the end, which have none: a configuration without a
# [[listener]] table (or servers_csv) is refused, so an empty file is an
# error, not the embedded default. `taskd --check-config` prints the
# effective configuration.

[server]
#workers = 0                  # 0 = one per CPU; at most 1024
#state_dir = ""               # relative: to $STATE_DIRECTORY, else this folder
#shutdown_timeout_s = 30
#drain_delay_s = 0            # keep serving this long after SIGTERM while /healthz says 503
# Example: import listeners from the seed's server list (relative to this
# folder), serving only this host's rows, or only those of self_ip:
# servers_csv = "servers.csv"
# self_ip = ["10.0.0.5"]

[scheduler]
#policy = "hrrn"              # hrrn | sjf | fifo
#incoming_capacity = 65536
#ready_capacity = 0           # 0 = 2 x workers

[limits]
#max_line_bytes = 8388608
#max_values = 1000000
#max_connections = 10000
#max_connections_per_ip = 1000
#max_inflight_per_conn = 128
#max_buffered_bytes = 268435456
#idle_timeout_s = 300         # 0 = never
#max_users = 100000

[results_log]
#path = "results.log"         # relative: to $LOGS_DIRECTORY, else this folder; "" = off
#max_bytes = 10485760         # rotate past this size; 0 = never rotate
#keep = 5                     # results.log.1 ... results.log.5
#values_logged = 16           # at most this many input values per line

[metrics]
#per_user = false

# Every operation has an [ops.NAME] table with `enabled` and its own limits;
# `taskd --check-config` lists them all. Turn one off with enabled = false.
[ops.pi]
#enabled = true
#max_samples = 10000000000
#udp_max_samples = 10000000

# Listeners: proto = tcp | udp | http | tls | https. Optional keys:
# allow = ["127.0.0.0/8", "::1"]  (default: everyone), ops = ["max", "mean"]
# (default: all enabled ops), recv_buffer = 4194304 (udp), reuse_port = true,
# cert = "...", key = "..." (tls, https), client_ca = "..." (mutual TLS).

[[listener]]
proto = "tcp"
address = "127.0.0.1:7700"

[[listener]]
proto = "udp"
address = "127.0.0.1:7700"

[[listener]]
proto = "http"
address = "127.0.0.1:7780"
"#;

/// A listener's protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    /// The line protocol over TCP.
    Tcp,
    /// The line protocol, one datagram in, one datagram per line out.
    Udp,
    /// The HTTP/JSON API.
    Http,
    /// The line protocol inside TLS.
    Tls,
    /// The HTTP/JSON API inside TLS.
    Https,
}

impl Proto {
    /// Every protocol, in the order the documentation lists them.
    pub const ALL: [Proto; 5] = [Proto::Tcp, Proto::Udp, Proto::Http, Proto::Tls, Proto::Https];

    /// The name used in the configuration and in metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Http => "http",
            Proto::Tls => "tls",
            Proto::Https => "https",
        }
    }

    /// The protocol named `s` (ASCII case-insensitive).
    pub fn parse(s: &str) -> Option<Proto> {
        Proto::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s))
    }

    /// True for the protocols served on a TCP socket (all but UDP).
    pub fn is_stream(self) -> bool {
        self != Proto::Udp
    }

    /// True for the protocols that need `cert` and `key`.
    pub fn is_tls(self) -> bool {
        matches!(self, Proto::Tls | Proto::Https)
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The long-term scheduler's policy (taskd.toml(5), `[scheduler]`), defined with the
/// scheduler itself.
pub use crate::sched::Policy;

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Files actually loaded, in order (empty for the embedded default).
    pub sources: Vec<PathBuf>,
    pub server: ServerConfig,
    pub scheduler: SchedulerConfig,
    pub limits: Limits,
    pub results_log: ResultsLogConfig,
    pub metrics: MetricsConfig,
    /// Indexed by [`OpId`], one per [`OPS`] entry.
    pub ops: Vec<OpConfig>,
    /// `[[listener]]` tables in file order, then servers.csv rows.
    pub listeners: Vec<ListenerConfig>,
    /// The folders relative paths were resolved against.
    pub resolved_against: ResolvedAgainst,
}

/// The folders relative paths were resolved against, so that
/// `--check-config` can say whether it saw the service's environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedAgainst {
    /// The main file's folder (the current directory for the embedded
    /// default): the base of `servers_csv`, `cert`, `key`, `client_ca`, and
    /// of the two below when their variable is not set.
    pub main_dir: PathBuf,
    /// `$STATE_DIRECTORY` when it was set: the base of `state_dir`.
    pub state_directory: Option<PathBuf>,
    /// `$LOGS_DIRECTORY` when it was set: the base of `results_log.path`.
    pub logs_directory: Option<PathBuf>,
}

/// `[server]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// As configured: 0 means one per CPU.
    pub workers: usize,
    /// Resolved (see the Paths rules).
    pub state_dir: PathBuf,
    pub shutdown_timeout: Duration,
    pub drain_delay: Duration,
    /// Resolved against the main file's folder.
    pub servers_csv: Option<PathBuf>,
    /// Empty: serve the csv rows whose address binds on this host.
    pub self_ip: Vec<IpAddr>,
}

/// `[scheduler]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerConfig {
    pub policy: Policy,
    pub incoming_capacity: usize,
    /// As configured: 0 means twice the number of workers.
    pub ready_capacity: usize,
}

/// `[limits]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_line_bytes: usize,
    pub max_values: usize,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub max_inflight_per_conn: usize,
    pub max_buffered_bytes: usize,
    /// `None`: connections are never closed for being idle.
    pub idle_timeout: Option<Duration>,
    pub max_users: usize,
}

/// `[results_log]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultsLogConfig {
    /// `None`: no results log. Resolved.
    pub path: Option<PathBuf>,
    /// 0: never rotate.
    pub max_bytes: u64,
    pub keep: u32,
    pub values_logged: usize,
}

/// `[metrics]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    pub per_user: bool,
}

/// `[ops.NAME]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpConfig {
    pub enabled: bool,
    /// In the order of `OPS[id].limits`.
    pub limits: Vec<u64>,
}

impl OpConfig {
    /// The value of limit `key` of operation `op`, this table being `op`'s.
    /// Never panics in release builds: a key the operation does not declare
    /// is a programming error, answered with 0 (and a debug assertion).
    pub fn limit(&self, op: OpId, key: &str) -> u64 {
        let Some(spec) = OPS.get(op) else {
            debug_assert!(false, "no operation {op}");
            return 0;
        };
        match spec.limits.iter().position(|l| l.key == key) {
            Some(i) => self.limits.get(i).copied().unwrap_or(spec.limits[i].default),
            None => {
                debug_assert!(false, "operation {} has no limit {key}", spec.name);
                0
            }
        }
    }
}

impl Config {
    /// The value of limit `key` of operation `op`; the spec default when the
    /// configuration has no entry for it (it always has, once validated).
    pub fn op_limit(&self, op: OpId, key: &str) -> u64 {
        match self.ops.get(op) {
            Some(o) => o.limit(op, key),
            None => OpConfig {
                enabled: DEFAULT_OP_ENABLED,
                limits: Vec::new(),
            }
            .limit(op, key),
        }
    }

    /// Whether operation `op` is enabled.
    pub fn op_enabled(&self, op: OpId) -> bool {
        self.ops.get(op).is_some_and(|o| o.enabled)
    }
}

/// One `[[listener]]` table or one servers.csv row and protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    pub proto: Proto,
    pub address: SocketAddr,
    /// `None`: every client. Bare addresses are stored as /32 or /128.
    pub allow: Option<Vec<ipnet::IpNet>>,
    /// `None`: every enabled operation.
    pub ops: Option<Vec<OpId>>,
    /// UDP only: the SO_RCVBUF size to ask for.
    pub recv_buffer: Option<usize>,
    pub reuse_port: bool,
    /// TLS and HTTPS only; resolved against the main file's folder.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub client_ca: Option<PathBuf>,
    /// Mutual TLS: whether `@user` may name someone other than the client
    /// certificate.
    pub allow_user_override: bool,
    /// Where it was defined: `"path:line"`, `"path:line (servers.csv)"` or
    /// `"embedded default"`.
    pub origin: String,
}

/// What identifies a listener across reloads (taskd(8), SIGNALS).
pub fn listener_key(l: &ListenerConfig) -> (Proto, SocketAddr) {
    (l.proto, l.address)
}

/// Everything wrong with a configuration, one message per problem, each
/// naming file, line and key where there is one:
/// `/etc/taskd/conf.d/10-x.toml:7: unknown key `wrokers` in [server]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub messages: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, m) in self.messages.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            f.write_str(m)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    fn one(message: String) -> ConfigError {
        ConfigError {
            messages: vec![message],
        }
    }
}

/// Loads and validates the whole configuration.
///
/// `path`: `Some(p)` reads `p` (missing: error); `None` reads
/// [`DEFAULT_CONFIG_PATH`] if it exists, else uses [`EMBEDDED_DEFAULT`].
/// `env` looks up `STATE_DIRECTORY` and `LOGS_DIRECTORY`; the daemon passes
/// `&|k| std::env::var_os(k)`, tests pass their own.
pub fn load(path: Option<&Path>, env: &dyn Fn(&str) -> Option<OsString>) -> Result<Config, ConfigError> {
    let main = match path {
        Some(p) => load::Main::File(p.to_path_buf()),
        None => match std::fs::metadata(DEFAULT_CONFIG_PATH) {
            Ok(_) => load::Main::File(PathBuf::from(DEFAULT_CONFIG_PATH)),
            // Only absence selects the embedded default: an unreadable
            // /etc/taskd must not silently turn into a different setup.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => load::Main::Embedded,
            Err(e) => {
                return Err(ConfigError::one(format!("{DEFAULT_CONFIG_PATH}: {e}")));
            }
        },
    };
    load_main(main, env)
}

fn load_main(main: load::Main, env: &dyn Fn(&str) -> Option<OsString>) -> Result<Config, ConfigError> {
    let sources = load::read_sources(&main).map_err(|messages| ConfigError { messages })?;
    let tree = load::parse_and_merge(&sources).map_err(|messages| ConfigError { messages })?;
    let (raw, mut errors) = load::deserialize(tree, &sources);
    if let Some(raw) = raw {
        let bases = paths::Bases::new(&sources, env);
        match validate::validate(raw, &sources, &bases, !errors.is_empty()) {
            Ok(cfg) if errors.is_empty() => return Ok(cfg),
            Ok(_) => {}
            Err(more) => errors.extend(more),
        }
    }
    // In file order: the offsets are global, so this sorts by file, then line.
    errors.sort_by_key(|(at, _)| *at);
    Err(ConfigError {
        messages: errors.into_iter().map(|(_, m)| m).collect(),
    })
}

/// An error message and the global offset it points at, for sorting.
type Located = (usize, String);

/// The offset of a message that points at no particular place: after all
/// that do.
const NOWHERE: usize = usize::MAX;
