//! Counters the event loop updates and their rendering in the Prometheus
//! text exposition format 0.0.4 (taskd(8), "METRICS").
//!
//! Everything is preallocated at start: `record` indexes flat arrays by
//! transport, op and code and allocates only the first time a user name is
//! seen (and only with `per_user`, for at most [`MAX_USER_SERIES`] names).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use crate::ops::{OPS, OpId};
use crate::protocol::Code;

/// The transports, as labelled; anything else is counted as `other`.
pub const PROTOS: [&str; 6] = ["tcp", "udp", "http", "tls", "https", "other"];
/// Upper bounds (seconds) of `taskd_task_duration_seconds`' buckets, then `+Inf`.
pub const DURATION_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Per-user series kept by name; later names count under [`OTHER_USER`].
pub const MAX_USER_SERIES: usize = 1000;
pub const OTHER_USER: &str = "~other";

/// Error codes of the HTTP layer that are not line-protocol codes
/// (`HttpError::code`), counted by [`Metrics::record_http_error`].
pub const HTTP_CODES: [&str; 4] = ["not-found", "method", "length-required", "headers-too-large"];

const CODES: usize = Code::ALL.len();

pub struct Metrics {
    per_user: bool,
    /// `OPS.len()` known ops and `unknown`.
    ops: usize,
    /// [proto][op]
    requests: Vec<u64>,
    /// [proto][op][code]
    errors: Vec<u64>,
    /// [proto][HTTP_CODES], op `unknown`.
    http_errors: [[u64; HTTP_CODES.len()]; PROTOS.len()],
    /// Per bucket (not cumulative); the last is over the largest bound.
    buckets: [u64; DURATION_BUCKETS.len() + 1],
    duration_sum: f64,
    duration_count: u64,
    users: BTreeMap<String, u64>,
    other_users: u64,
}

/// The figures the loop reads from its state at scrape time.
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    pub incoming: usize,
    pub ready: usize,
    pub running: usize,
    /// Open connections per transport (`tcp`, `http`, …).
    pub connections: Vec<(&'static str, usize)>,
    /// Names kept by the user counts (`users` op).
    pub users: usize,
    pub results_log_write_errors: u64,
    pub config_last_reload_successful: bool,
    pub version: &'static str,
}

fn proto_index(proto: &str) -> usize {
    PROTOS[..PROTOS.len() - 1]
        .iter()
        .position(|p| *p == proto)
        .unwrap_or(PROTOS.len() - 1)
}

fn op_name(op: usize) -> &'static str {
    OPS.get(op).map_or("unknown", |s| s.name)
}

/// A label value with `\`, `"` and newline escaped.
fn escape_label(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn write_float(out: &mut String, x: f64) {
    if x.is_nan() {
        out.push_str("NaN");
    } else if x.is_infinite() {
        out.push_str(if x > 0.0 { "+Inf" } else { "-Inf" });
    } else if x == 0.0 {
        out.push('0');
    } else {
        out.push_str(ryu_js::Buffer::new().format(x));
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// One sample: `name{k="v",…} value`.
fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(k);
            out.push_str("=\"");
            escape_label(out, v);
            out.push('"');
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

impl Metrics {
    pub fn new(per_user: bool) -> Metrics {
        let ops = OPS.len() + 1;
        Metrics {
            per_user,
            ops,
            requests: vec![0; PROTOS.len() * ops],
            errors: vec![0; PROTOS.len() * ops * CODES],
            http_errors: [[0; HTTP_CODES.len()]; PROTOS.len()],
            buckets: [0; DURATION_BUCKETS.len() + 1],
            duration_sum: 0.0,
            duration_count: 0,
            users: BTreeMap::new(),
            other_users: 0,
        }
    }

    /// One answered request. `proto`: `tcp`, `udp`, `http`, `tls` or
    /// `https`; `op` None is labelled `unknown`; `code` None means ok;
    /// `duration`: the task's queue and run time, when it was a task;
    /// `user`: the name the request is attributed to (`anonymous` included),
    /// counted in the per-user series unless its code does not count for
    /// users (taskd(8), "Users").
    pub fn record(
        &mut self,
        proto: &'static str,
        op: Option<OpId>,
        code: Option<Code>,
        duration: Option<Duration>,
        user: Option<&str>,
    ) {
        let p = proto_index(proto);
        let o = op.filter(|&o| o < OPS.len()).unwrap_or(OPS.len());
        self.requests[p * self.ops + o] += 1;
        if let Some(c) = code {
            self.errors[(p * self.ops + o) * CODES + c as usize] += 1;
        }
        if let Some(d) = duration {
            let s = d.as_secs_f64();
            let b = DURATION_BUCKETS
                .iter()
                .position(|&le| s <= le)
                .unwrap_or(DURATION_BUCKETS.len());
            self.buckets[b] += 1;
            self.duration_sum += s;
            self.duration_count += 1;
        }
        if let Some(u) = user
            && self.per_user
            && code.is_none_or(Code::counts_for_user)
        {
            if let Some(n) = self.users.get_mut(u) {
                *n += 1;
            } else if u == OTHER_USER || self.users.len() >= MAX_USER_SERIES {
                self.other_users += 1;
            } else {
                self.users.insert(u.to_owned(), 1);
            }
        }
    }

    /// A request refused by the HTTP layer before it had an op
    /// (`HttpError`: 400 `parse`, 404 `not-found`, 405 `method`, 411, 413
    /// `too-long`, 431): counted with op `unknown`, under its code.
    pub fn record_http_error(&mut self, proto: &'static str, code: &str) {
        if let Some(c) = Code::ALL.iter().find(|c| c.as_str() == code) {
            self.record(proto, None, Some(*c), None, None);
            return;
        }
        let p = proto_index(proto);
        self.requests[p * self.ops + OPS.len()] += 1;
        if let Some(i) = HTTP_CODES.iter().position(|c| *c == code) {
            self.http_errors[p][i] += 1;
        }
    }

    /// The exposition text; series that are still zero are left out of
    /// the request, error and per-user counters.
    pub fn render(&self, g: &Gauges) -> String {
        let mut out = String::with_capacity(4096);

        family(
            &mut out,
            "taskd_requests_total",
            "counter",
            "Requests answered, by transport and operation.",
        );
        for (p, proto) in PROTOS.iter().enumerate() {
            for o in 0..self.ops {
                let n = self.requests[p * self.ops + o];
                if n > 0 {
                    sample(
                        &mut out,
                        "taskd_requests_total",
                        &[("proto", proto), ("op", op_name(o))],
                        n,
                    );
                }
            }
        }

        family(
            &mut out,
            "taskd_errors_total",
            "counter",
            "Requests answered with an error, by transport, operation and error code.",
        );
        for (p, proto) in PROTOS.iter().enumerate() {
            for o in 0..self.ops {
                for (c, code) in Code::ALL.iter().enumerate() {
                    let n = self.errors[(p * self.ops + o) * CODES + c];
                    if n > 0 {
                        sample(
                            &mut out,
                            "taskd_errors_total",
                            &[("proto", proto), ("op", op_name(o)), ("code", code.as_str())],
                            n,
                        );
                    }
                }
            }
            for (i, code) in HTTP_CODES.iter().enumerate() {
                let n = self.http_errors[p][i];
                if n > 0 {
                    sample(
                        &mut out,
                        "taskd_errors_total",
                        &[("proto", proto), ("op", "unknown"), ("code", code)],
                        n,
                    );
                }
            }
        }

        family(
            &mut out,
            "taskd_queue_tasks",
            "gauge",
            "Tasks in the scheduler's incoming and ready queues and running on workers.",
        );
        for (queue, n) in [
            ("incoming", g.incoming),
            ("ready", g.ready),
            ("running", g.running),
        ] {
            sample(&mut out, "taskd_queue_tasks", &[("queue", queue)], n);
        }

        family(
            &mut out,
            "taskd_task_duration_seconds",
            "histogram",
            "Time from a task's arrival to its result, queueing included.",
        );
        let mut cumulative = 0;
        let mut le = String::new();
        for (i, bound) in DURATION_BUCKETS.iter().enumerate() {
            cumulative += self.buckets[i];
            le.clear();
            write_float(&mut le, *bound);
            sample(
                &mut out,
                "taskd_task_duration_seconds_bucket",
                &[("le", &le)],
                cumulative,
            );
        }
        cumulative += self.buckets[DURATION_BUCKETS.len()];
        sample(
            &mut out,
            "taskd_task_duration_seconds_bucket",
            &[("le", "+Inf")],
            cumulative,
        );
        let mut sum = String::new();
        write_float(&mut sum, self.duration_sum);
        sample(&mut out, "taskd_task_duration_seconds_sum", &[], sum);
        sample(
            &mut out,
            "taskd_task_duration_seconds_count",
            &[],
            self.duration_count,
        );

        family(
            &mut out,
            "taskd_connections",
            "gauge",
            "Open client connections, by transport.",
        );
        for (proto, n) in &g.connections {
            sample(&mut out, "taskd_connections", &[("proto", proto)], n);
        }

        family(
            &mut out,
            "taskd_users",
            "gauge",
            "User names with request counts (the users operation).",
        );
        sample(&mut out, "taskd_users", &[], g.users);

        family(
            &mut out,
            "taskd_results_log_write_errors_total",
            "counter",
            "Failed writes to the results log.",
        );
        sample(
            &mut out,
            "taskd_results_log_write_errors_total",
            &[],
            g.results_log_write_errors,
        );

        family(
            &mut out,
            "taskd_config_last_reload_successful",
            "gauge",
            "1 if the last configuration reload succeeded, else 0.",
        );
        sample(
            &mut out,
            "taskd_config_last_reload_successful",
            &[],
            u8::from(g.config_last_reload_successful),
        );

        family(
            &mut out,
            "taskd_build_info",
            "gauge",
            "Always 1; the version is a label.",
        );
        sample(&mut out, "taskd_build_info", &[("version", g.version)], 1);

        if self.per_user {
            family(
                &mut out,
                "taskd_user_requests_total",
                "counter",
                "Requests counted for each user; names past the first 1000 as ~other.",
            );
            for (user, n) in &self.users {
                sample(&mut out, "taskd_user_requests_total", &[("user", user)], n);
            }
            if self.other_users > 0 {
                sample(
                    &mut out,
                    "taskd_user_requests_total",
                    &[("user", OTHER_USER)],
                    self.other_users,
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::lookup;

    fn gauges() -> Gauges {
        Gauges {
            incoming: 3,
            ready: 2,
            running: 1,
            connections: vec![("tcp", 4), ("http", 0)],
            users: 7,
            results_log_write_errors: 0,
            config_last_reload_successful: true,
            version: "0.1.0 \"x\"\\",
        }
    }

    fn is_name(s: &str) -> bool {
        let mut chars = s.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }

    /// Checks one sample line: `name{k="v",…} value` or `name value`;
    /// returns the name.
    fn check_sample(line: &str) -> &str {
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line:?}"));
        assert!(
            value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value),
            "{line:?}"
        );
        let Some((name, labels)) = series.split_once('{') else {
            assert!(is_name(series), "{line:?}");
            return series;
        };
        assert!(is_name(name), "{line:?}");
        let mut rest = labels.strip_suffix('}').unwrap_or_else(|| panic!("{line:?}"));
        loop {
            let (k, v) = rest.split_once("=\"").unwrap_or_else(|| panic!("{line:?}"));
            assert!(is_name(k) && !k.contains(':'), "{line:?}");
            // The value runs to the first unescaped quote.
            let mut end = None;
            let mut escaped = false;
            for (i, c) in v.char_indices() {
                match c {
                    _ if escaped => {
                        assert!(matches!(c, '\\' | '"' | 'n'), "{line:?}");
                        escaped = false;
                    }
                    '\\' => escaped = true,
                    '"' => {
                        end = Some(i);
                        break;
                    }
                    '\n' => panic!("{line:?}"),
                    _ => {}
                }
            }
            let end = end.unwrap_or_else(|| panic!("{line:?}"));
            rest = &v[end + 1..];
            if rest.is_empty() {
                return name;
            }
            rest = rest.strip_prefix(',').unwrap_or_else(|| panic!("{line:?}"));
        }
    }

    /// Every sample belongs to a family declared with HELP and TYPE before it.
    fn check_exposition(text: &str) {
        assert!(text.ends_with('\n'));
        let mut declared: Vec<(String, String)> = Vec::new();
        let mut helped: Vec<String> = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').unwrap();
                assert!(is_name(name) && !help.is_empty(), "{line:?}");
                helped.push(name.into());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(["counter", "gauge", "histogram"].contains(&kind), "{line:?}");
                assert!(helped.contains(&name.to_string()), "{line:?}");
                assert!(!declared.iter().any(|(n, _)| n == name), "{line:?}");
                if kind == "counter" {
                    assert!(name.ends_with("_total"), "{line:?}");
                }
                declared.push((name.into(), kind.into()));
            } else {
                assert!(!line.starts_with('#'), "{line:?}");
                let name = check_sample(line);
                let (family, kind) = declared.last().unwrap_or_else(|| panic!("{line:?}"));
                if kind == "histogram" {
                    let suffix = name.strip_prefix(family.as_str()).unwrap_or("?");
                    assert!(["_bucket", "_sum", "_count"].contains(&suffix), "{line:?}");
                } else {
                    assert_eq!(name, family, "{line:?}");
                }
            }
        }
    }

    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn renders_valid_exposition() {
        let mut m = Metrics::new(true);
        check_exposition(&m.render(&gauges()));
        let max = lookup("max");
        m.record("tcp", max, None, Some(Duration::from_micros(50)), Some("alice"));
        m.record(
            "http",
            max,
            Some(Code::Range),
            Some(Duration::from_millis(3)),
            Some("a\"b"),
        );
        m.record("udp", None, Some(Code::UnknownOp), None, Some("bob"));
        m.record("tls", lookup("pi"), None, Some(Duration::from_secs(60)), None);
        m.record("weird", None, Some(Code::Parse), None, None);
        let text = m.render(&gauges());
        check_exposition(&text);
        for family in [
            "taskd_requests_total",
            "taskd_errors_total",
            "taskd_queue_tasks",
            "taskd_task_duration_seconds",
            "taskd_connections",
            "taskd_users",
            "taskd_results_log_write_errors_total",
            "taskd_config_last_reload_successful",
            "taskd_build_info",
            "taskd_user_requests_total",
        ] {
            assert!(text.contains(&format!("# TYPE {family} ")), "{family}");
        }
        assert_eq!(
            value(&text, "taskd_requests_total{proto=\"tcp\",op=\"max\"}"),
            Some(1.0)
        );
        assert_eq!(
            value(&text, "taskd_requests_total{proto=\"udp\",op=\"unknown\"}"),
            Some(1.0)
        );
        assert_eq!(
            value(&text, "taskd_requests_total{proto=\"other\",op=\"unknown\"}"),
            Some(1.0)
        );
        assert_eq!(
            value(
                &text,
                "taskd_errors_total{proto=\"http\",op=\"max\",code=\"range\"}"
            ),
            Some(1.0)
        );
        assert_eq!(value(&text, "taskd_queue_tasks{queue=\"incoming\"}"), Some(3.0));
        assert_eq!(value(&text, "taskd_queue_tasks{queue=\"running\"}"), Some(1.0));
        assert_eq!(
            value(&text, "taskd_task_duration_seconds_bucket{le=\"0.0001\"}"),
            Some(1.0)
        );
        assert_eq!(
            value(&text, "taskd_task_duration_seconds_bucket{le=\"0.0025\"}"),
            Some(1.0)
        );
        assert_eq!(
            value(&text, "taskd_task_duration_seconds_bucket{le=\"0.005\"}"),
            Some(2.0)
        );
        assert_eq!(
            value(&text, "taskd_task_duration_seconds_bucket{le=\"10\"}"),
            Some(2.0)
        );
        assert_eq!(
            value(&text, "taskd_task_duration_seconds_bucket{le=\"+Inf\"}"),
            Some(3.0)
        );
        assert_eq!(value(&text, "taskd_task_duration_seconds_count"), Some(3.0));
        let sum = value(&text, "taskd_task_duration_seconds_sum").unwrap();
        assert!((sum - 60.00305).abs() < 1e-9, "{sum}");
        assert_eq!(value(&text, "taskd_connections{proto=\"tcp\"}"), Some(4.0));
        assert_eq!(value(&text, "taskd_users"), Some(7.0));
        assert_eq!(value(&text, "taskd_config_last_reload_successful"), Some(1.0));
        assert_eq!(
            value(&text, "taskd_build_info{version=\"0.1.0 \\\"x\\\"\\\\\"}"),
            Some(1.0)
        );
        assert_eq!(
            value(&text, "taskd_user_requests_total{user=\"alice\"}"),
            Some(1.0)
        );
        assert_eq!(
            value(&text, "taskd_user_requests_total{user=\"a\\\"b\"}"),
            Some(1.0)
        );
        // unknown-op does not count for its user.
        assert_eq!(value(&text, "taskd_user_requests_total{user=\"bob\"}"), None);
    }

    #[test]
    fn counters_move() {
        let mut m = Metrics::new(false);
        let sum = lookup("sum");
        let series = "taskd_requests_total{proto=\"http\",op=\"sum\"}";
        assert_eq!(value(&m.render(&gauges()), series), None);
        for i in 1..=3 {
            m.record("http", sum, None, None, Some("alice"));
            assert_eq!(value(&m.render(&gauges()), series), Some(f64::from(i)));
        }
        m.record("http", sum, Some(Code::Busy), None, None);
        let text = m.render(&gauges());
        assert_eq!(value(&text, series), Some(4.0));
        assert_eq!(
            value(
                &text,
                "taskd_errors_total{proto=\"http\",op=\"sum\",code=\"busy\"}"
            ),
            Some(1.0)
        );
        m.record_http_error("https", "not-found");
        m.record_http_error("https", "too-long");
        m.record_http_error("https", "no-such-code");
        let text = m.render(&gauges());
        assert_eq!(
            value(&text, "taskd_requests_total{proto=\"https\",op=\"unknown\"}"),
            Some(3.0)
        );
        for code in ["not-found", "too-long"] {
            let series = format!("taskd_errors_total{{proto=\"https\",op=\"unknown\",code=\"{code}\"}}");
            assert_eq!(value(&text, &series), Some(1.0), "{code}");
        }
        // No per-user series without per_user.
        assert!(!text.contains("taskd_user_requests_total"));
        check_exposition(&text);
    }

    #[test]
    fn per_user_series_are_capped() {
        let mut m = Metrics::new(true);
        let ping = lookup("ping");
        for i in 0..1200 {
            m.record("tcp", ping, None, None, Some(&format!("u{i:04}")));
        }
        m.record("tcp", ping, None, None, Some("u0001"));
        m.record("tcp", ping, None, None, Some("u1100"));
        m.record("tcp", ping, None, None, Some(OTHER_USER));
        let text = m.render(&gauges());
        check_exposition(&text);
        let series = text
            .lines()
            .filter(|l| l.starts_with("taskd_user_requests_total{"))
            .count();
        assert_eq!(series, MAX_USER_SERIES + 1);
        assert_eq!(
            value(&text, "taskd_user_requests_total{user=\"u0001\"}"),
            Some(2.0)
        );
        assert_eq!(
            value(&text, "taskd_user_requests_total{user=\"u0999\"}"),
            Some(1.0)
        );
        assert_eq!(value(&text, "taskd_user_requests_total{user=\"u1000\"}"), None);
        assert_eq!(
            value(&text, "taskd_user_requests_total{user=\"~other\"}"),
            Some(202.0)
        );
    }

    #[test]
    fn code_indices_match_all() {
        for (i, c) in Code::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
        }
    }
}
