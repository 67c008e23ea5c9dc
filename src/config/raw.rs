//! The configuration exactly as written: serde structs that reject unknown
//! keys and wrong types, and nothing else.
//!
//! Every value is optional (a missing key takes its default later) and
//! spanned, so validation can name the file and line of a value that has the
//! right type but a wrong value. Integers are `i64` because that is what TOML
//! has: ranges are checked in validation, with messages that say the range
//! instead of serde's "expected u16".

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// An optional, located value.
pub(super) type Opt<T> = Option<Spanned<T>>;

/// One `[ops.NAME]` table. Its keys depend on the operation (`enabled` plus
/// the operation's limits), so it is checked against the registry in
/// validation rather than by a struct.
pub(super) type RawOp = BTreeMap<Spanned<String>, Spanned<toml::Value>>;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawConfig {
    pub server: RawServer,
    pub scheduler: RawScheduler,
    pub limits: RawLimits,
    pub results_log: RawResultsLog,
    pub metrics: RawMetrics,
    pub ops: BTreeMap<Spanned<String>, Spanned<RawOp>>,
    pub listener: Vec<Spanned<RawListener>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawServer {
    pub workers: Opt<i64>,
    pub servers_csv: Opt<String>,
    pub self_ip: Opt<Vec<Spanned<String>>>,
    pub state_dir: Opt<String>,
    pub shutdown_timeout_s: Opt<i64>,
    pub drain_delay_s: Opt<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawScheduler {
    pub policy: Opt<String>,
    pub incoming_capacity: Opt<i64>,
    pub ready_capacity: Opt<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawLimits {
    pub max_line_bytes: Opt<i64>,
    pub max_values: Opt<i64>,
    pub max_connections: Opt<i64>,
    pub max_connections_per_ip: Opt<i64>,
    pub max_inflight_per_conn: Opt<i64>,
    pub max_buffered_bytes: Opt<i64>,
    pub idle_timeout_s: Opt<i64>,
    pub max_users: Opt<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawResultsLog {
    pub path: Opt<String>,
    pub max_bytes: Opt<i64>,
    pub keep: Opt<i64>,
    pub values_logged: Opt<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawMetrics {
    pub per_user: Opt<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawListener {
    pub proto: Opt<String>,
    pub address: Opt<String>,
    pub allow: Opt<Vec<Spanned<String>>>,
    pub ops: Opt<Vec<Spanned<String>>>,
    pub recv_buffer: Opt<i64>,
    pub reuse_port: Opt<bool>,
    pub cert: Opt<String>,
    pub key: Opt<String>,
    pub client_ca: Opt<String>,
    pub allow_user_override: Opt<bool>,
}
