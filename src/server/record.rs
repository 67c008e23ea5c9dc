//! What happens to every answered request besides its reply: the per-user
//! count, the done/failed/rejected counters, the metrics, and one JSON line
//! in the results log (taskd(8), FILES), written into the writer's buffer
//! and handed to the writer thread in batches.

use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::{Config, Proto};
use crate::files::FileWriter;
use crate::metrics::Metrics;
use crate::ops::{OPS, OpId, Output};
use crate::protocol::reply::{json_str, push_int, write_id, write_json_result};
use crate::protocol::{Code, Failure, Id, Name, Payload, Syntax};
use crate::ratelimit::RateLimited;
use crate::users::UserCounts;

/// users.json is replaced at most this often (and at shutdown).
const USERS_SAVE_INTERVAL: Duration = Duration::from_secs(1);

/// Who asked what: everything the books keep of a request.
#[derive(Debug, Clone)]
pub struct Asked {
    pub proto: Proto,
    /// The client's address, as text (formatted once per connection).
    pub peer: Rc<str>,
    pub user: Option<Name>,
    pub id: Option<Id>,
    pub op: Option<OpId>,
    pub count: usize,
    /// The first `values_logged` values, as the client wrote them, already
    /// written as the JSON strings of the log line's `values` array.
    pub values: Vec<u8>,
    /// Neither counted nor logged (`/statistics`).
    pub quiet: bool,
    /// Already counted as answered (`users`, which sees its own request).
    pub counted: bool,
}

#[derive(Debug, Default)]
pub struct Counters {
    pub done: u64,
    pub failed: u64,
    pub rejected: [u64; Code::ALL.len()],
    pub udp_lines_dropped: u64,
    pub udp_replies_dropped: u64,
    pub tls_failures: u64,
}

/// The daemon's books: counts, metrics, the results log.
pub struct Books {
    pub users: UserCounts,
    pub counters: Counters,
    pub metrics: Metrics,
    pub files: FileWriter,
    /// Refused requests, logged at most once a second.
    pub reject_log: RateLimited,
    /// Failed TLS handshakes, logged at most once a second.
    pub tls_log: RateLimited,
    clock: LogClock,
    log_on: bool,
    values_logged: usize,
    next_users_save: Instant,
}

impl Books {
    pub fn new(cfg: &Config, files: FileWriter, saved: Vec<(String, u64)>) -> Books {
        let mut users = UserCounts::new(cfg.limits.max_users);
        users.restore(saved);
        Books {
            users,
            counters: Counters::default(),
            metrics: Metrics::new(cfg.metrics.per_user),
            files,
            reject_log: RateLimited::new("refused requests", log::Level::Info, Duration::from_secs(1)),
            tls_log: RateLimited::new("failed TLS handshakes", log::Level::Info, Duration::from_secs(1)),
            clock: LogClock::default(),
            log_on: cfg.results_log.path.is_some(),
            values_logged: cfg.results_log.values_logged,
            next_users_save: Instant::now() + USERS_SAVE_INTERVAL,
        }
    }

    /// A reload's new settings.
    pub fn configure(&mut self, cfg: &Config) {
        self.users.set_max_users(cfg.limits.max_users);
        self.log_on = cfg.results_log.path.is_some();
        self.values_logged = cfg.results_log.values_logged;
    }

    /// The values to keep for the results log, when it is on.
    pub fn values_to_log(&self, payload: &Payload) -> Vec<u8> {
        if self.log_on {
            first_values(payload, self.values_logged)
        } else {
            Vec::new()
        }
    }

    /// Counts an answered request and logs it. `queue` and `run`: its
    /// task's times (zero for what the loop answered at once).
    pub fn record(&mut self, a: &Asked, outcome: Result<&Output, &Failure>, queue: Duration, run: Duration) {
        if a.quiet {
            return;
        }
        let code = outcome.err().map(|f| f.code);
        let user = a.user.as_ref().map(Name::as_str);
        match code {
            _ if a.counted => {}
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
        if let Err(f) = outcome
            && f.code != Code::ShuttingDown
        {
            // The message names what was wrong, sanitized and truncated.
            let peer = &a.peer;
            self.reject_log
                .log(|| format!("{} from {peer}: {}", f.code.as_str(), f.message));
        }
        let task = a.op.is_some() && !(queue + run).is_zero();
        self.metrics.record(
            a.proto.as_str(),
            a.op,
            code,
            task.then_some(queue + run),
            Some(user.unwrap_or(crate::users::ANONYMOUS)),
        );
        if self.log_on {
            write_log_line(self.files.buffer(), &mut self.clock, a, outcome, queue, run);
        }
    }

    /// Counts a request as answered before it is (`users` counts itself).
    pub fn count_now(&mut self, a: &mut Asked) {
        if !a.quiet && !a.counted {
            self.counters.done += 1;
            self.users.count(a.user.as_ref().map(Name::as_str));
            a.counted = true;
        }
    }

    /// Hands the current user counts to the writer thread, at most once a
    /// second when they changed.
    pub fn save_users_if_due(&mut self, now: Instant) {
        if now >= self.next_users_save {
            if self.users.dirty {
                self.save_users();
            }
            self.next_users_save = now + USERS_SAVE_INTERVAL;
        }
    }

    fn save_users(&mut self) {
        self.users.dirty = false;
        self.files.save_users(self.users.snapshot());
    }

    /// The end: the last counts and log lines to the writer.
    pub fn finish(&mut self) {
        self.reject_log.finish();
        self.save_users();
        self.files.send();
        log::info!(
            "stopped: {} requests answered, {} of them with an error; {} users",
            self.counters.done + self.counters.failed,
            self.counters.failed,
            self.users.len()
        );
    }
}

/// The first `n` values of a request, kept for the results log before the
/// values go to a worker: written once as the JSON strings of the log
/// line's `values` array (`"1","2"`), copied from the request's own text.
pub fn first_values(payload: &Payload, n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    if n == 0 {
        return out;
    }
    let text = payload.values();
    let (inner, strip_quotes) = match payload.syntax {
        // The array's own brackets and the quotes of string elements go.
        Syntax::JsonArray => (text.get(1..text.len().saturating_sub(1)).unwrap_or(b""), true),
        Syntax::Text => (text, false),
    };
    let tokens = inner.split(|&b| matches!(b, b' ' | b'\t' | b',' | b'[' | b']' | b'\n' | b'\r'));
    for t in tokens.filter(|t| !t.is_empty()).take(n) {
        let t = if strip_quotes && t.len() >= 2 && t[0] == b'"' && t[t.len() - 1] == b'"' {
            &t[1..t.len() - 1]
        } else {
            t
        };
        if !out.is_empty() {
            out.push(b',');
        }
        json_str(&mut out, &String::from_utf8_lossy(t));
    }
    out
}

/// A duration in milliseconds with three decimals, from integer
/// microseconds (no float formatting).
fn write_millis(out: &mut Vec<u8>, d: Duration) {
    let us = d.as_micros() as u64;
    push_int(out, us / 1000);
    out.push(b'.');
    let frac = us % 1000;
    out.push(b'0' + (frac / 100) as u8);
    out.push(b'0' + (frac / 10 % 10) as u8);
    out.push(b'0' + (frac % 10) as u8);
}

/// RFC 3339 timestamps with microseconds; the date and time up to the
/// second are formatted once per second.
#[derive(Default)]
pub struct LogClock {
    secs: u64,
    prefix: String,
}

impl LogClock {
    fn write(&mut self, out: &mut Vec<u8>) {
        let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        if since.as_secs() != self.secs || self.prefix.is_empty() {
            self.secs = since.as_secs();
            let whole = UNIX_EPOCH + Duration::from_secs(self.secs);
            // "2026-11-30T00:34:16Z" without its "Z".
            let mut text = humantime::format_rfc3339_seconds(whole).to_string();
            text.pop();
            self.prefix = text;
        }
        out.extend_from_slice(self.prefix.as_bytes());
        out.push(b'.');
        let us = since.subsec_micros();
        let mut digits = [b'0'; 6];
        let mut v = us;
        for d in digits.iter_mut().rev() {
            *d = b'0' + (v % 10) as u8;
            v /= 10;
        }
        out.extend_from_slice(&digits);
        out.push(b'Z');
    }
}

fn write_log_line(
    out: &mut Vec<u8>,
    clock: &mut LogClock,
    a: &Asked,
    outcome: Result<&Output, &Failure>,
    queue: Duration,
    run: Duration,
) {
    out.extend_from_slice(b"{\"time\":\"");
    clock.write(out);
    // Socket addresses and proto names need no JSON escaping.
    out.extend_from_slice(b"\",\"peer\":\"");
    out.extend_from_slice(a.peer.as_bytes());
    out.extend_from_slice(b"\",\"proto\":\"");
    out.extend_from_slice(a.proto.as_str().as_bytes());
    out.extend_from_slice(b"\",\"user\":");
    json_str(out, a.user.as_ref().map_or(crate::users::ANONYMOUS, Name::as_str));
    out.extend_from_slice(b",\"id\":");
    match &a.id {
        Some(id) => write_id(out, id),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"op\":");
    match a.op {
        Some(op) => json_str(out, OPS[op].name),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"count\":");
    push_int(out, a.count as u64);
    out.extend_from_slice(b",\"values\":[");
    out.extend_from_slice(&a.values);
    out.extend_from_slice(b"],");
    match outcome {
        // The users table is logged as its number of names, not in full.
        Ok(Output::Users(table)) => {
            out.extend_from_slice(b"\"ok\":true,\"result\":");
            push_int(out, table.names as u64);
        }
        Ok(result) => {
            out.extend_from_slice(b"\"ok\":true,\"result\":");
            write_json_result(out, result);
        }
        Err(f) => {
            out.extend_from_slice(b"\"ok\":false,\"error\":\"");
            out.extend_from_slice(f.code.as_str().as_bytes());
            out.extend_from_slice(b"\",\"message\":");
            json_str(out, &f.message);
        }
    }
    out.extend_from_slice(b",\"queue_ms\":");
    write_millis(out, queue);
    out.extend_from_slice(b",\"run_ms\":");
    write_millis(out, run);
    out.extend_from_slice(b"}\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::numbers::Num;
    use crate::ops::UsersTable;

    fn asked(values: Vec<u8>) -> Asked {
        Asked {
            proto: Proto::Tcp,
            peer: "127.0.0.1:5000".into(),
            user: Name::user(b"alice"),
            id: Name::id(b"7").map(Id::Text),
            op: crate::ops::lookup("max"),
            count: 2,
            values,
            quiet: false,
            counted: false,
        }
    }

    #[test]
    fn log_lines_are_json_with_every_field() {
        let mut out = Vec::new();
        let values = first_values(&Payload::text(b"1 2".to_vec()), 16);
        let a = asked(values);
        let two = Output::Num(Num::Int(2));
        let (queue, run) = (Duration::from_micros(1500), Duration::from_micros(20));
        write_log_line(&mut out, &mut LogClock::default(), &a, Ok(&two), queue, run);
        assert_eq!(out.last(), Some(&b'\n'));
        let j: serde_json::Value = serde_json::from_slice(&out).unwrap();
        for key in [
            "time", "peer", "proto", "user", "id", "op", "count", "values", "ok", "result", "queue_ms",
            "run_ms",
        ] {
            assert!(j.get(key).is_some(), "{key} missing in {j}");
        }
        assert_eq!(j["result"], 2);
        assert_eq!(j["queue_ms"], 1.5);
        assert_eq!(j["run_ms"], 0.02);
        assert_eq!(j["values"], serde_json::json!(["1", "2"]));
    }

    #[test]
    fn users_tables_are_logged_as_a_count() {
        let mut out = Vec::new();
        let table = UsersTable::render(vec![("a", 1), ("b", 2)]);
        let a = asked(Vec::new());
        write_log_line(
            &mut out,
            &mut LogClock::default(),
            &a,
            Ok(&Output::Users(table)),
            Duration::ZERO,
            Duration::ZERO,
        );
        let j: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(j["result"], 2);
    }

    #[test]
    fn first_values_takes_tokens_of_text_and_json() {
        assert_eq!(
            first_values(&Payload::text(b"[1, 2,3]".to_vec()), 2),
            br#""1","2""#
        );
        let json = Payload {
            bytes: br#"{"values":[1, "9223372036854775807", 3]}"#.to_vec(),
            span: 10..39,
            syntax: Syntax::JsonArray,
        };
        assert_eq!(first_values(&json, 2), br#""1","9223372036854775807""#);
        assert_eq!(first_values(&Payload::text(b"a\"b".to_vec()), 1), br#""a\"b""#);
        assert_eq!(first_values(&Payload::text(b"1 2".to_vec()), 0), b"");
    }

    #[test]
    fn the_clock_writes_rfc3339_with_microseconds() {
        let mut out = Vec::new();
        let mut clock = LogClock::default();
        clock.write(&mut out);
        out.push(b' ');
        clock.write(&mut out);
        let text = String::from_utf8(out).unwrap();
        for t in text.split(' ') {
            assert_eq!(t.len(), "2026-11-30T00:34:16.123456Z".len(), "{t}");
            assert!(humantime::parse_rfc3339(t).is_ok(), "{t}");
        }
    }

    #[test]
    fn millis_have_three_decimals() {
        let mut v = Vec::new();
        write_millis(&mut v, Duration::from_micros(12_034));
        assert_eq!(v, b"12.034");
    }
}
