//! What happens to every answered request besides its reply: the per-user
//! count, the done/failed/rejected counters, the metrics, and one JSON line
//! in the results log (taskd(8), FILES), written into the writer's buffer
//! and handed to the writer thread in batches.

use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::{Config, Proto};
use crate::files::FileWriter;
use crate::metrics::Metrics;
use crate::numbers::write_u64;
use crate::ops::{OPS, OpId, Output};
#[cfg(test)]
use crate::protocol::Payload;
use crate::protocol::reply::{json_str, write_id, write_json_err_fields, write_json_ok_fields};
use crate::protocol::{Code, Failure, Id, Name, Syntax};
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
    pub fn values_to_log(&self, text: &[u8], syntax: Syntax) -> Vec<u8> {
        let mut out = Vec::new();
        if self.log_on {
            write_values(&mut out, text, syntax, self.values_logged);
        }
        out
    }

    /// Counts an answered request and logs it. `queue` and `run`: its
    /// task's times (zero for what the loop answered at once).
    pub fn record(&mut self, a: &Asked, outcome: Result<&Output, &Failure>, queue: Duration, run: Duration) {
        self.record_with(a, None, outcome, queue, run);
    }

    /// [`Books::record`], with the request's values (for the results log)
    /// taken from its text now rather than kept in `a`.
    pub fn record_with(
        &mut self,
        a: &Asked,
        raw: Option<(&[u8], Syntax)>,
        outcome: Result<&Output, &Failure>,
        queue: Duration,
        run: Duration,
    ) {
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
            a.proto,
            a.op,
            code,
            task.then_some(queue + run),
            Some(user.unwrap_or(crate::users::ANONYMOUS)),
        );
        if self.log_on {
            let values = match raw {
                Some((text, syntax)) => Values::Raw(text, syntax, self.values_logged),
                None => Values::Rendered(&a.values),
            };
            write_log_line(
                self.files.buffer(),
                &mut self.clock,
                a,
                values,
                outcome,
                queue,
                run,
            );
        }
    }

    /// The time of the lines of this turn.
    pub fn set_clock(&mut self, now: SystemTime) {
        if self.log_on {
            self.clock.set(now);
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

/// The first `n` values of a request as the log writes them.
#[cfg(test)]
fn first_values(payload: &Payload, n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    write_values(&mut out, payload.values(), payload.syntax, n);
    out
}

/// Bytes that separate values (the array's brackets of a JSON request
/// included), as a table: the log writer looks at every byte.
const SEPARATOR: [bool; 256] = {
    let mut t = [false; 256];
    let mut k = 0;
    let seps = *b" \t,[]\n\r";
    while k < seps.len() {
        t[seps[k] as usize] = true;
        k += 1;
    }
    t
};

/// Bytes that a value's JSON string must escape (for a text request the
/// quote too; a JSON request's string elements keep theirs, stripped below).
const NOT_PLAIN: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = b < 0x20 || b >= 0x7f || b == b'\\' as usize || b == b'"' as usize;
        b += 1;
    }
    t
};

/// Writes the first `n` values of a request's text as the JSON strings of
/// the log line's `values` array, copied from the text as they are: one
/// pass over the bytes into the buffer's spare room, a value escaped only
/// when it is not plain printable ASCII (never a valid number).
pub fn write_values(out: &mut Vec<u8>, text: &[u8], syntax: Syntax, n: usize) {
    const FAST: usize = 256;
    if n == 0 {
        return;
    }
    if text.len() <= FAST && syntax == Syntax::Text {
        // Every byte becomes at most two (a one-byte value: quote, byte,
        // quote and a comma, for a value and its separator). Written in
        // place, neither zeroed first nor copied after: this runs for
        // every request and the line is a few dozen bytes.
        let most = 2 * text.len() + 2;
        out.reserve(most);
        let room = &mut out.spare_capacity_mut()[..most];
        let mut w = 0;
        let mut put = |b: u8| {
            room[w].write(b);
            w += 1;
        };
        let mut written = 0;
        let mut in_value = false;
        for &b in text {
            if SEPARATOR[usize::from(b)] {
                if in_value {
                    put(b'"');
                    in_value = false;
                    if written == n {
                        break;
                    }
                }
                continue;
            }
            if NOT_PLAIN[usize::from(b)] {
                return write_values_slowly(out, text, syntax, n);
            }
            if !in_value {
                if written == n {
                    break;
                }
                if written > 0 {
                    put(b',');
                }
                put(b'"');
                written += 1;
                in_value = true;
            }
            put(b);
        }
        if in_value {
            put(b'"');
        }
        let len = out.len() + w;
        // SAFETY: the first `w` slots of the spare capacity were written
        // above (`put` writes each slot it counts), and `w <= most`, which
        // `reserve` made room for.
        unsafe { out.set_len(len) };
        return;
    }
    write_values_slowly(out, text, syntax, n);
}

/// [`write_values`] for long or odd text: value by value.
fn write_values_slowly(out: &mut Vec<u8>, text: &[u8], syntax: Syntax, n: usize) {
    let json = syntax == Syntax::JsonArray;
    let mut written = 0;
    let mut i = 0;
    while i < text.len() && written < n {
        if SEPARATOR[usize::from(text[i])] {
            i += 1;
            continue;
        }
        let start = i;
        while i < text.len() && !SEPARATOR[usize::from(text[i])] {
            i += 1;
        }
        let mut token = &text[start..i];
        if json && token.len() >= 2 && token[0] == b'"' && token[token.len() - 1] == b'"' {
            token = &token[1..token.len() - 1];
        }
        if written > 0 {
            out.push(b',');
        }
        written += 1;
        if token.iter().all(|&b| !NOT_PLAIN[usize::from(b)]) {
            out.push(b'"');
            out.extend_from_slice(token);
            out.push(b'"');
        } else {
            json_str(out, &String::from_utf8_lossy(token));
        }
    }
}

/// A duration in milliseconds with three decimals, from integer
/// microseconds (no float formatting).
fn write_millis(out: &mut Vec<u8>, d: Duration) {
    let us = d.as_micros() as u64;
    write_u64(out, us / 1000);
    out.push(b'.');
    let frac = us % 1000;
    out.push(b'0' + (frac / 100) as u8);
    out.push(b'0' + (frac / 10 % 10) as u8);
    out.push(b'0' + (frac % 10) as u8);
}

/// RFC 3339 timestamps with microseconds, read once per turn of the loop
/// (the lines of one turn share it) and formatted once per microsecond
/// that is logged; the date and time up to the second once per second.
#[derive(Default)]
pub struct LogClock {
    secs: u64,
    micros: u32,
    /// "2026-11-30T00:34:16.123456Z".
    text: Vec<u8>,
}

impl LogClock {
    /// The time of this turn's lines.
    pub fn set(&mut self, now: SystemTime) {
        let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        if since.as_secs() == self.secs && since.subsec_micros() == self.micros && !self.text.is_empty() {
            return;
        }
        if since.as_secs() != self.secs || self.text.is_empty() {
            self.secs = since.as_secs();
            let whole = UNIX_EPOCH + Duration::from_secs(self.secs);
            // "2026-11-30T00:34:16Z" without its "Z".
            let text = humantime::format_rfc3339_seconds(whole).to_string();
            self.text.clear();
            self.text.extend_from_slice(&text.as_bytes()[..text.len() - 1]);
            self.text.extend_from_slice(b".000000Z");
        }
        self.micros = since.subsec_micros();
        let mut v = self.micros;
        let end = self.text.len() - 1;
        for d in self.text[end - 6..end].iter_mut().rev() {
            *d = b'0' + (v % 10) as u8;
            v /= 10;
        }
    }

    fn write(&mut self, out: &mut Vec<u8>) {
        if self.text.is_empty() {
            self.set(SystemTime::now());
        }
        out.extend_from_slice(&self.text);
    }
}

/// The values of a log line: rendered when the request was read, or from
/// its text (the first `n`).
enum Values<'a> {
    Rendered(&'a [u8]),
    Raw(&'a [u8], Syntax, usize),
}

fn write_log_line(
    out: &mut Vec<u8>,
    clock: &mut LogClock,
    a: &Asked,
    values: Values,
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
    // Names, ids, op names and codes are plain ASCII by their grammars:
    // copied between quotes, no escaping to look for.
    out.extend_from_slice(b"\",\"user\":\"");
    out.extend_from_slice(
        a.user
            .as_ref()
            .map_or(crate::users::ANONYMOUS.as_bytes(), Name::as_bytes),
    );
    out.push(b'"');
    out.extend_from_slice(b",\"id\":");
    match &a.id {
        Some(id) => write_id(out, id),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"op\":");
    match a.op {
        Some(op) => {
            out.push(b'"');
            out.extend_from_slice(OPS[op].name.as_bytes());
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"count\":");
    write_u64(out, a.count as u64);
    out.extend_from_slice(b",\"values\":[");
    match values {
        Values::Rendered(v) => out.extend_from_slice(v),
        Values::Raw(text, syntax, n) => write_values(out, text, syntax, n),
    }
    out.extend_from_slice(b"],");
    match outcome {
        // The users table is logged as its number of names, not in full.
        Ok(Output::Users(table)) => {
            out.extend_from_slice(b"\"ok\":true,\"result\":");
            write_u64(out, table.names as u64);
        }
        Ok(result) => write_json_ok_fields(out, result),
        Err(f) => write_json_err_fields(out, f.code.as_str(), &f.message),
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
        write_log_line(
            &mut out,
            &mut LogClock::default(),
            &a,
            Values::Rendered(&a.values),
            Ok(&two),
            queue,
            run,
        );
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
            Values::Rendered(b""),
            Ok(&Output::Users(table)),
            Duration::ZERO,
            Duration::ZERO,
        );
        let j: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(j["result"], 2);
    }

    #[test]
    fn odd_values_are_escaped_in_the_log() {
        let mut out = Vec::new();
        write_values(&mut out, b"1 a\"b \xff\\ 2", Syntax::Text, 16);
        let text = format!("[{}]", String::from_utf8(out).unwrap());
        let v: Vec<String> = serde_json::from_str(&text).unwrap();
        assert_eq!(v, ["1", "a\"b", "\u{fffd}\\", "2"]);
        let mut out = Vec::new();
        write_values(&mut out, br#"[1, "2", "a\"b", 3]"#, Syntax::JsonArray, 3);
        let v: Vec<String> = serde_json::from_str(&format!("[{}]", String::from_utf8(out).unwrap())).unwrap();
        assert_eq!(v, ["1", "2", "a\\\"b"]);
    }

    proptest::proptest! {
        #[test]
        fn the_fast_values_writer_agrees_with_the_slow_one(
            text in proptest::collection::vec(proptest::sample::select(b" ,\t[]12-.e\"\\x\x01\xc3".to_vec()), 0..80),
            n in 0usize..20,
        ) {
            let (mut fast, mut slow) = (Vec::new(), Vec::new());
            write_values(&mut fast, &text, Syntax::Text, n);
            write_values_slowly(&mut slow, &text, Syntax::Text, n);
            proptest::prop_assert_eq!(&fast, &slow);
            let v: Vec<String> = serde_json::from_slice(&[b"[".as_slice(), &fast, b"]"].concat()).unwrap();
            proptest::prop_assert!(v.len() <= n);
        }
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
