//! What happens to every answered request besides its reply: the per-user
//! count, the done/failed/rejected counters, and one JSON line in the
//! results log (SPEC section 6), written into the writer's buffer and
//! handed to the writer thread once per turn.

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::Server;
use crate::config::Proto;
use crate::ops::{OPS, OpId, Output};
use crate::protocol::reply::write_json_result;
use crate::protocol::{Code, Id, RawValues, Rejection, Request};

/// One answered request, as the results log and the counters see it.
pub struct Answered<'a> {
    pub proto: Proto,
    /// The client's address, as text (formatted once per connection).
    pub peer: &'a str,
    pub user: Option<&'a str>,
    pub id: Option<&'a Id>,
    pub op: Option<OpId>,
    pub count: usize,
    /// The first `values_logged` values, as the client wrote them, already
    /// written as the JSON strings of the log's `values` array.
    pub values: &'a [u8],
    pub outcome: Result<&'a Output, (Code, &'a str)>,
    pub queue: Duration,
    pub run: Duration,
}

impl<'a> Answered<'a> {
    /// A request the loop answered at once, without a task.
    pub fn immediate(
        proto: Proto,
        peer: &'a str,
        req: &'a Request,
        outcome: Result<&'a Output, (Code, &'a str)>,
    ) -> Answered<'a> {
        Answered {
            proto,
            peer,
            user: req.user.as_deref(),
            id: req.id.as_ref(),
            op: Some(req.op),
            count: 0,
            values: b"",
            outcome,
            queue: Duration::ZERO,
            run: Duration::ZERO,
        }
    }

    /// A request the loop refused.
    pub fn rejected(proto: Proto, peer: &'a str, rej: &'a Rejection) -> Answered<'a> {
        Answered {
            proto,
            peer,
            user: rej.user.as_deref(),
            id: rej.id.as_ref(),
            op: rej.op,
            count: 0,
            values: b"",
            outcome: Err((rej.code, &rej.message)),
            queue: Duration::ZERO,
            run: Duration::ZERO,
        }
    }
}

/// The first `n` values of a request, kept for the results log before the
/// values go to a worker: written once as the JSON strings of the log
/// line's `values` array (`"1","2"`), one allocation per request.
pub fn first_values(raw: &RawValues, n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let push = |out: &mut Vec<u8>, v: &str| {
        if !out.is_empty() {
            out.push(b',');
        }
        json_str(out, v);
    };
    match raw {
        RawValues::Text(bytes) => {
            let tokens = bytes.split(|&b| matches!(b, b' ' | b'\t' | b',' | b'[' | b']'));
            for t in tokens.filter(|t| !t.is_empty()).take(n) {
                push(&mut out, &String::from_utf8_lossy(t));
            }
        }
        RawValues::Json(vals) => {
            for v in vals.iter().take(n) {
                match v {
                    serde_json::Value::String(s) => push(&mut out, s),
                    other => push(&mut out, &other.to_string()),
                }
            }
        }
    }
    out
}

/// A JSON string. Most strings here (names, ids, numbers) need no escape,
/// and copying those directly is several times cheaper than the general
/// escaper on the loop's hot path.
fn json_str(out: &mut Vec<u8>, s: &str) {
    if s.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        // Writing to a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

/// A duration in milliseconds with three decimals, from integer
/// microseconds (no float formatting).
fn write_millis(out: &mut Vec<u8>, d: Duration) {
    let us = d.as_micros();
    let _ = write!(out, "{}.{:03}", us / 1000, us % 1000);
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
        let now = SystemTime::now();
        let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        if since.as_secs() != self.secs || self.prefix.is_empty() {
            self.secs = since.as_secs();
            let whole = UNIX_EPOCH + Duration::from_secs(self.secs);
            // "2026-11-30T00:34:16Z" without its "Z".
            let mut text = humantime::format_rfc3339_seconds(whole).to_string();
            text.pop();
            self.prefix = text;
        }
        out.extend_from_slice(self.prefix.as_bytes());
        let _ = write!(out, ".{:06}Z", since.subsec_micros());
    }
}

impl Server {
    /// Counts an answered request and logs it.
    pub(super) fn record(&mut self, a: Answered) {
        self.account(a.user, a.outcome.as_ref().err().map(|e| e.0));
        if let Err((code, message)) = a.outcome
            && code != Code::ShuttingDown
        {
            // The message names what was wrong, sanitized and truncated.
            self.reject_log
                .log(|| format!("{} from {}: {message}", code.as_str(), a.peer));
        }
        self.log_answer(&a);
    }

    /// Counts an answered request: per user, and done/failed by code.
    pub(super) fn account(&mut self, user: Option<&str>, error: Option<Code>) {
        match error {
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
    }

    /// The metrics and the results log line of an answered request (its
    /// counting is `account`'s, done before the loop answers its own ops).
    pub(super) fn log_answer(&mut self, a: &Answered) {
        let code = a.outcome.as_ref().err().map(|e| e.0);
        let duration = (a.op.is_some() && !(a.queue + a.run).is_zero()).then_some(a.queue + a.run);
        let user = a.user.unwrap_or(crate::users::ANONYMOUS);
        self.metrics
            .record(a.proto.as_str(), a.op, code, duration, Some(user));
        if self.cfg.results_log.path.is_some() {
            write_log_line(self.files.buffer(), &mut self.log_clock, a);
        }
    }

    /// The values to keep for the results log, when it is on.
    pub(super) fn values_to_log(&self, raw: &RawValues) -> Vec<u8> {
        if self.cfg.results_log.path.is_some() {
            first_values(raw, self.cfg.results_log.values_logged)
        } else {
            Vec::new()
        }
    }
}

fn write_log_line(out: &mut Vec<u8>, clock: &mut LogClock, a: &Answered) {
    out.extend_from_slice(b"{\"time\":\"");
    clock.write(out);
    // Socket addresses and proto names need no JSON escaping.
    out.extend_from_slice(b"\",\"peer\":\"");
    out.extend_from_slice(a.peer.as_bytes());
    out.extend_from_slice(b"\",\"proto\":\"");
    out.extend_from_slice(a.proto.as_str().as_bytes());
    out.extend_from_slice(b"\",\"user\":");
    json_str(out, a.user.unwrap_or(crate::users::ANONYMOUS));
    out.extend_from_slice(b",\"id\":");
    match a.id {
        Some(Id::Text(s)) => json_str(out, s),
        Some(Id::Int(n)) => {
            let _ = write!(out, "{n}");
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"op\":");
    match a.op {
        Some(op) => json_str(out, OPS[op].name),
        None => out.extend_from_slice(b"null"),
    }
    let _ = write!(out, ",\"count\":{},\"values\":[", a.count);
    out.extend_from_slice(a.values);
    out.extend_from_slice(b"],");
    match &a.outcome {
        Ok(result) => {
            out.extend_from_slice(b"\"ok\":true,\"result\":");
            write_json_result(out, result);
        }
        Err((code, message)) => {
            let _ = write!(out, "\"ok\":false,\"error\":\"{}\",\"message\":", code.as_str());
            json_str(out, message);
        }
    }
    out.extend_from_slice(b",\"queue_ms\":");
    write_millis(out, a.queue);
    out.extend_from_slice(b",\"run_ms\":");
    write_millis(out, a.run);
    out.extend_from_slice(b"}\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::numbers::Num;

    #[test]
    fn log_lines_are_json_with_every_field() {
        let mut out = Vec::new();
        let values = first_values(&RawValues::Text(b"1 2".to_vec()), 16);
        write_log_line(
            &mut out,
            &mut LogClock::default(),
            &Answered {
                proto: Proto::Tcp,
                peer: "127.0.0.1:5000",
                user: Some("alice"),
                id: Some(&Id::Text("7".into())),
                op: crate::ops::lookup("max"),
                count: 2,
                values: &values,
                outcome: Ok(&Output::Num(Num::Int(2))),
                queue: Duration::from_micros(1500),
                run: Duration::from_micros(20),
            },
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
    }

    #[test]
    fn first_values_takes_tokens_of_text_and_json() {
        assert_eq!(
            first_values(&RawValues::Text(b"[1, 2,3]".to_vec()), 2),
            br#""1","2""#
        );
        let json = RawValues::Json(vec![
            serde_json::json!(1),
            serde_json::json!("9223372036854775807"),
        ]);
        assert_eq!(first_values(&json, 5), br#""1","9223372036854775807""#);
        assert_eq!(first_values(&RawValues::Text(b"a\"b".to_vec()), 1), br#""a\"b""#);
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
}
