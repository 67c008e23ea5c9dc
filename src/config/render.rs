//! The effective configuration as TOML, for `taskd --check-config`.
//!
//! Every key is written with its effective value and every path resolved,
//! so the output answers "what is taskd really running with" and loads back
//! (from any folder) to the same configuration. Listeners imported from
//! servers.csv are written as comments: `servers_csv` stays set and would
//! import them again, and a second copy would be a duplicate.

use std::fmt::Write as _;
use std::path::Path;

use super::servers_csv::ORIGIN_SUFFIX;
use super::{Config, ListenerConfig, Proto};
use crate::ops::OPS;

/// The effective configuration as TOML text.
pub fn render(cfg: &Config) -> String {
    let mut o = String::new();
    // Writing to a String cannot fail; the fmt::Result is discarded.
    let _ = write_config(&mut o, cfg);
    o
}

fn write_config(o: &mut String, cfg: &Config) -> std::fmt::Result {
    writeln!(o, "# Effective taskd configuration.")?;
    if cfg.sources.is_empty() {
        writeln!(o, "# Loaded from: the embedded default.")?;
    } else {
        writeln!(o, "# Loaded from:")?;
        for s in &cfg.sources {
            writeln!(o, "#   {}", s.display())?;
        }
    }
    write_bases(o, cfg)?;

    let s = &cfg.server;
    writeln!(o, "\n[server]")?;
    writeln!(
        o,
        "workers = {}{}",
        s.workers,
        if s.workers == 0 { "  # one per CPU" } else { "" }
    )?;
    writeln!(o, "state_dir = {}", path(&s.state_dir))?;
    writeln!(o, "shutdown_timeout_s = {}", s.shutdown_timeout.as_secs())?;
    writeln!(o, "drain_delay_s = {}", s.drain_delay.as_secs())?;
    match &s.servers_csv {
        Some(p) => writeln!(o, "servers_csv = {}", path(p))?,
        None => writeln!(o, "servers_csv = \"\"  # none")?,
    }
    let ips: Vec<String> = s.self_ip.iter().map(|ip| quote(&ip.to_string())).collect();
    writeln!(o, "self_ip = [{}]", ips.join(", "))?;

    let sc = &cfg.scheduler;
    writeln!(o, "\n[scheduler]")?;
    writeln!(o, "policy = {}", quote(sc.policy.as_str()))?;
    writeln!(o, "incoming_capacity = {}", sc.incoming_capacity)?;
    writeln!(
        o,
        "ready_capacity = {}{}",
        sc.ready_capacity,
        if sc.ready_capacity == 0 {
            "  # 2 x workers"
        } else {
            ""
        }
    )?;

    let l = &cfg.limits;
    writeln!(o, "\n[limits]")?;
    writeln!(o, "max_line_bytes = {}", l.max_line_bytes)?;
    writeln!(o, "max_values = {}", l.max_values)?;
    writeln!(o, "max_connections = {}", l.max_connections)?;
    writeln!(o, "max_connections_per_ip = {}", l.max_connections_per_ip)?;
    writeln!(o, "max_inflight_per_conn = {}", l.max_inflight_per_conn)?;
    writeln!(o, "max_buffered_bytes = {}", l.max_buffered_bytes)?;
    match l.idle_timeout {
        Some(d) => writeln!(o, "idle_timeout_s = {}", d.as_secs())?,
        None => writeln!(o, "idle_timeout_s = 0  # never")?,
    }
    writeln!(o, "max_users = {}", l.max_users)?;

    let r = &cfg.results_log;
    writeln!(o, "\n[results_log]")?;
    match &r.path {
        Some(p) => writeln!(o, "path = {}", path(p))?,
        None => writeln!(o, "path = \"\"  # off")?,
    }
    writeln!(o, "max_bytes = {}", r.max_bytes)?;
    writeln!(o, "keep = {}", r.keep)?;
    writeln!(o, "values_logged = {}", r.values_logged)?;

    writeln!(o, "\n[metrics]")?;
    writeln!(o, "per_user = {}", cfg.metrics.per_user)?;

    for (id, spec) in OPS.iter().enumerate() {
        writeln!(o, "\n[ops.{}]", spec.name)?;
        writeln!(o, "enabled = {}", cfg.op_enabled(id))?;
        for ls in spec.limits {
            writeln!(o, "{} = {}  # {}", ls.key, cfg.op_limit(id, ls.key), ls.doc)?;
        }
    }

    for l in &cfg.listeners {
        if l.origin.ends_with(ORIGIN_SUFFIX) {
            writeln!(o, "\n# From {}, imported through servers_csv:", l.origin)?;
            let mut t = String::new();
            write_listener(&mut t, cfg, l)?;
            for line in t.lines() {
                writeln!(o, "# {line}")?;
            }
        } else {
            writeln!(o, "\n# From {}", l.origin)?;
            write_listener(o, cfg, l)?;
        }
    }
    Ok(())
}

/// Which folders relative paths were resolved against: run by hand, the
/// paths differ from the service's, whose unit sets `$STATE_DIRECTORY` and
/// `$LOGS_DIRECTORY`.
fn write_bases(o: &mut String, cfg: &Config) -> std::fmt::Result {
    let r = &cfg.resolved_against;
    let main = r.main_dir.display();
    writeln!(o, "# Relative paths resolved against:")?;
    for (key, var, value) in [
        ("state_dir", "STATE_DIRECTORY", &r.state_directory),
        ("results_log.path", "LOGS_DIRECTORY", &r.logs_directory),
    ] {
        match value {
            Some(d) => writeln!(o, "#   {key}: ${var} = {}", d.display())?,
            None => writeln!(
                o,
                "#   {key}: ${var} not set, so the configuration's folder {main}"
            )?,
        }
    }
    writeln!(
        o,
        "#   servers_csv, cert, key, client_ca: the configuration's folder {main}"
    )?;
    if r.state_directory.is_none() || r.logs_directory.is_none() {
        writeln!(
            o,
            "# (taskd.service sets $STATE_DIRECTORY=/var/lib/taskd and $LOGS_DIRECTORY=/var/log/taskd.)"
        )?;
    }
    Ok(())
}

fn write_listener(o: &mut String, cfg: &Config, l: &ListenerConfig) -> std::fmt::Result {
    writeln!(o, "[[listener]]")?;
    writeln!(o, "proto = {}", quote(l.proto.as_str()))?;
    writeln!(o, "address = {}", quote(&l.address.to_string()))?;
    match &l.allow {
        Some(nets) => {
            let nets: Vec<String> = nets.iter().map(|n| quote(&n.to_string())).collect();
            writeln!(o, "allow = [{}]", nets.join(", "))?;
        }
        None => writeln!(o, "# allow: not set, every client")?,
    }
    match &l.ops {
        Some(ids) => {
            let names: Vec<String> = ids
                .iter()
                .filter_map(|&id| OPS.get(id))
                .map(|spec| quote(spec.name))
                .collect();
            writeln!(o, "ops = [{}]", names.join(", "))?;
        }
        None => {
            let enabled: Vec<&str> = OPS
                .iter()
                .enumerate()
                .filter(|&(id, _)| cfg.op_enabled(id))
                .map(|(_, s)| s.name)
                .collect();
            writeln!(
                o,
                "# ops: not set, every enabled operation ({})",
                enabled.join(", ")
            )?;
        }
    }
    match l.recv_buffer {
        Some(n) => writeln!(o, "recv_buffer = {n}")?,
        None if l.proto == Proto::Udp => writeln!(o, "# recv_buffer: not set, the kernel's default")?,
        None => {}
    }
    writeln!(o, "reuse_port = {}", l.reuse_port)?;
    for (key, p) in [("cert", &l.cert), ("key", &l.key), ("client_ca", &l.client_ca)] {
        if let Some(p) = p {
            writeln!(o, "{key} = {}", path(p))?;
        }
    }
    if l.proto.is_tls() && l.client_ca.is_none() {
        writeln!(o, "# client_ca: not set, no client certificates asked for")?;
    }
    if l.proto.is_tls() {
        writeln!(o, "allow_user_override = {}", l.allow_user_override)?;
    }
    Ok(())
}

/// A path as a TOML string. Paths that are not UTF-8 cannot be written in
/// TOML at all; they are written lossily (and could not have come from a
/// TOML file in the first place).
fn path(p: &Path) -> String {
    quote(&p.to_string_lossy())
}

/// A TOML basic string.
fn quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            '\n' => q.push_str("\\n"),
            '\t' => q.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(q, "\\u{:04X}", u32::from(c));
            }
            c => q.push(c),
        }
    }
    q.push('"');
    q
}
