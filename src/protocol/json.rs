//! JSON requests: a line starting with `{` (or an HTTP POST body),
//! answered by one JSON line.
//!
//! The event loop reads only the head here. One pass over the object
//! checks its structure and depth and finds where each member's value is;
//! `id`, `user`, `op`, `samples` and `chunks` are then decoded, while the
//! `values` array is only counted (for `too-many`, `empty` and the cost):
//! its elements are parsed on a worker, like a text line's values. So a
//! request of 8 MB of JSON costs the loop one quick scan, never a tree of
//! values.

use std::borrow::Cow;
use std::ops::Range;

use super::head::{
    PiArg, check_access, check_count, check_pi_range, malformed_id, malformed_user, valid_op_name,
};
use super::{Args, Code, Failure, Format, Id, Name, ParseCtx, Rejection, Request, Syntax, sanitize};
use crate::ops::{ArgKind, OPS, OpId, lookup};

/// Deepest nesting of arrays and objects accepted, the request object
/// included; deeper input is `parse`.
pub const MAX_DEPTH: usize = 32;

/// Where the operation of a request comes from.
#[derive(Debug, Clone, Copy)]
pub enum OpFrom<'a> {
    /// The request's own `op` member (the line protocol).
    Body,
    /// `POST /v1/{op}`: the path's segment; an `op` in the body must be
    /// the same.
    Path(&'a str),
}

fn syntax(what: &str, at: usize) -> Failure {
    Failure::new(
        Code::Parse,
        format!("malformed JSON: {what} at column {}", at + 1),
    )
}

/// One pass over JSON text that checks structure and depth and finds
/// where values are, without decoding them.
struct Scan<'a> {
    b: &'a [u8],
    i: usize,
}

/// What a value is, from its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    String,
    Number,
    Array,
    Object,
    Bool,
    Null,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::String => "a string",
            Kind::Number => "a number",
            Kind::Array => "an array",
            Kind::Object => "an object",
            Kind::Bool => "a boolean",
            Kind::Null => "null",
        }
    }
}

/// A member's value: its kind, its text, and for arrays the number of
/// elements.
#[derive(Debug, Clone)]
struct Span {
    kind: Kind,
    range: Range<usize>,
    count: usize,
}

fn scalar_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')
}

impl<'a> Scan<'a> {
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn eof(&self, what: &str) -> Failure {
        syntax(&format!("EOF while parsing {what}"), self.i)
    }

    /// A string starting at the current `"`; returns its span, quotes
    /// included.
    fn string(&mut self) -> Result<Range<usize>, Failure> {
        let start = self.i;
        let mut i = self.i + 1;
        loop {
            let Some(k) = memchr::memchr2(b'"', b'\\', &self.b[i..]) else {
                self.i = self.b.len();
                return Err(self.eof("a string"));
            };
            i += k;
            if self.b[i] == b'\\' {
                i += 2;
                if i > self.b.len() {
                    self.i = self.b.len();
                    return Err(self.eof("a string"));
                }
            } else {
                self.i = i + 1;
                return Ok(start..self.i);
            }
        }
    }

    /// The value at the current position, `depth` levels deep once it is
    /// entered.
    fn value(&mut self, depth: usize) -> Result<Span, Failure> {
        let start = self.i;
        let Some(c) = self.peek() else {
            return Err(self.eof("a value"));
        };
        let (kind, count) = match c {
            b'"' => {
                self.string()?;
                (Kind::String, 0)
            }
            b'[' | b'{' => {
                if depth > MAX_DEPTH {
                    let m = format!("JSON nested deeper than {MAX_DEPTH} levels");
                    return Err(Failure::new(Code::Parse, m));
                }
                let count = if c == b'[' {
                    self.array(depth)?
                } else {
                    self.object(depth)?
                };
                (if c == b'[' { Kind::Array } else { Kind::Object }, count)
            }
            c if scalar_byte(c) => {
                while self.peek().is_some_and(scalar_byte) {
                    self.i += 1;
                }
                let text = &self.b[start..self.i];
                let kind = match text {
                    b"true" | b"false" => Kind::Bool,
                    b"null" => Kind::Null,
                    // Numbers are checked when they are decoded (head
                    // members here, values on the worker).
                    _ if matches!(text[0], b'-' | b'0'..=b'9') => Kind::Number,
                    _ => return Err(syntax("expected value", start)),
                };
                (kind, 0)
            }
            _ => return Err(syntax("expected value", start)),
        };
        Ok(Span {
            kind,
            range: start..self.i,
            count,
        })
    }

    /// An array at the current `[`; returns its element count.
    fn array(&mut self, depth: usize) -> Result<usize, Failure> {
        self.i += 1;
        self.ws();
        if self.peek() == Some(b']') {
            self.i += 1;
            return Ok(0);
        }
        let mut count = 0;
        loop {
            self.ws();
            self.value(depth + 1)?;
            count += 1;
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b']') => {
                    self.i += 1;
                    return Ok(count);
                }
                Some(_) => return Err(syntax("expected ',' or ']'", self.i)),
                None => return Err(self.eof("a list")),
            }
        }
    }

    /// An object at the current `{`, its members handed to `member`
    /// (key span with quotes, value); returns its member count.
    fn members(
        &mut self,
        depth: usize,
        mut member: impl FnMut(Range<usize>, Span),
    ) -> Result<usize, Failure> {
        self.i += 1;
        self.ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(0);
        }
        let mut count = 0;
        loop {
            self.ws();
            match self.peek() {
                Some(b'"') => {}
                Some(_) => return Err(syntax("key must be a string", self.i)),
                None => return Err(self.eof("an object")),
            }
            let key = self.string()?;
            self.ws();
            match self.peek() {
                Some(b':') => self.i += 1,
                Some(_) => return Err(syntax("expected ':'", self.i)),
                None => return Err(self.eof("an object")),
            }
            self.ws();
            let value = self.value(depth + 1)?;
            member(key, value);
            count += 1;
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    return Ok(count);
                }
                Some(_) => return Err(syntax("expected ',' or '}'", self.i)),
                None => return Err(self.eof("an object")),
            }
        }
    }

    fn object(&mut self, depth: usize) -> Result<usize, Failure> {
        self.members(depth, |_, _| {})
    }
}

/// The text of a JSON string (its span includes the quotes): borrowed from
/// the line unless it has escapes.
fn decode_string<'a>(b: &'a [u8], span: &Range<usize>) -> Result<Cow<'a, str>, Failure> {
    let inner = &b[span.start + 1..span.end - 1];
    if !inner.contains(&b'\\')
        && inner.iter().all(|&c| c >= 0x20)
        && let Ok(s) = std::str::from_utf8(inner)
    {
        return Ok(Cow::Borrowed(s));
    }
    serde_json::from_slice::<String>(&b[span.clone()])
        .map(Cow::Owned)
        .map_err(|_| syntax("invalid string", span.start))
}

fn decode_number(b: &[u8], span: &Range<usize>) -> Result<serde_json::Number, Failure> {
    serde_json::from_slice(&b[span.clone()]).map_err(|_| syntax("invalid number", span.start))
}

/// The members the head needs, as found by the scan.
#[derive(Default)]
struct Members {
    id: Option<Span>,
    user: Option<Span>,
    op: Option<Span>,
    values: Option<Span>,
    samples: Option<Span>,
    chunks: Option<Span>,
    /// The first key that is not one of [`KEYS`].
    unknown: Option<Range<usize>>,
}

/// Scans a whole request object. Errors are syntax and depth faults,
/// which come before anything else.
fn scan(b: &[u8]) -> Result<Members, Failure> {
    let mut s = Scan { b, i: 0 };
    s.ws();
    match s.peek() {
        Some(b'{') => {}
        Some(_) => {
            // Not an object: a syntax error if it is not JSON at all.
            s.value(1)?;
            s.ws();
            if s.i < b.len() {
                return Err(syntax("trailing characters", s.i));
            }
            return Err(Failure::new(Code::Parse, "a JSON request must be an object"));
        }
        None => return Err(s.eof("a value")),
    }
    let mut m = Members::default();
    s.members(1, |key, value| {
        // A repeated key keeps its last value, as a JSON object does.
        let slot = match &b[key.start + 1..key.end - 1] {
            b"id" => &mut m.id,
            b"user" => &mut m.user,
            b"op" => &mut m.op,
            b"values" => &mut m.values,
            b"samples" => &mut m.samples,
            b"chunks" => &mut m.chunks,
            _ => {
                m.unknown.get_or_insert(key);
                return;
            }
        };
        *slot = Some(value);
    })?;
    s.ws();
    if s.i < b.len() {
        return Err(syntax("trailing characters", s.i));
    }
    Ok(m)
}

fn parse_id(b: &[u8], v: &Span) -> Result<Id, Failure> {
    match v.kind {
        Kind::String => {
            let s = decode_string(b, &v.range)?;
            Name::id(s.as_bytes())
                .map(Id::Text)
                .ok_or_else(|| malformed_id(s.as_bytes()))
        }
        Kind::Number => {
            let n = decode_number(b, &v.range)?;
            n.as_i64()
                .map(Id::Int)
                .ok_or_else(|| Failure::new(Code::Parse, format!("id {n} is not a 64-bit integer")))
        }
        other => Err(Failure::new(
            Code::Parse,
            format!("id must be a string or an integer, not {}", other.name()),
        )),
    }
}

fn parse_unsigned<'b>(b: &'b [u8], key: &str, v: &Span) -> Result<PiArg<'b>, Failure> {
    if v.kind != Kind::Number {
        let m = format!("{key} must be an unsigned integer, not {}", v.kind.name());
        return Err(Failure::new(Code::Parse, m));
    }
    let n = decode_number(b, &v.range)?;
    match n.as_u64() {
        Some(value) => Ok(PiArg {
            value: Some(value),
            digits: &b[v.range.clone()],
        }),
        None => Err(Failure::new(
            Code::Parse,
            format!("{key} must be an unsigned integer, not {n}"),
        )),
    }
}

/// Parses a JSON request line; see the module's documentation.
pub fn parse(line: &[u8], ctx: &ParseCtx) -> Result<Request, Rejection> {
    parse_with(line, ctx, OpFrom::Body, Format::Json)
}

/// Parses a JSON request whose op may come from elsewhere (an HTTP path),
/// answered in `format`.
pub fn parse_with(b: &[u8], ctx: &ParseCtx, from: OpFrom, format: Format) -> Result<Request, Rejection> {
    let mut p = super::head::Partial::default();
    let fail = |p: &super::head::Partial, f: Failure| p.reject(format, f);
    let m = scan(b).map_err(|f| fail(&p, f))?;
    if let Some(v) = &m.id {
        p.id = Some(parse_id(b, v).map_err(|f| fail(&p, f))?);
    }
    if let Some(k) = &m.unknown {
        let key = &b[k.start + 1..k.end - 1];
        let msg = format!("unknown key \"{}\"", sanitize(key, 32));
        return Err(fail(&p, Failure::new(Code::Parse, msg)));
    }
    if let Some(v) = &m.user {
        if v.kind != Kind::String {
            let msg = format!("user must be a string, not {}", v.kind.name());
            return Err(fail(&p, Failure::new(Code::Parse, msg)));
        }
        let s = decode_string(b, &v.range).map_err(|f| fail(&p, f))?;
        let user = Name::user(s.as_bytes()).ok_or_else(|| fail(&p, malformed_user("user", s.as_bytes())))?;
        p.user = Some(user);
    }
    let body_op = match &m.op {
        None => None,
        Some(v) if v.kind == Kind::String => Some(decode_string(b, &v.range).map_err(|f| fail(&p, f))?),
        Some(v) => {
            let msg = format!("op must be a string, not {}", v.kind.name());
            return Err(fail(&p, Failure::new(Code::Parse, msg)));
        }
    };
    let op = resolve_op(body_op.as_deref(), from).map_err(|f| fail(&p, f))?;
    p.op = Some(op);
    let spec = &OPS[op];
    let misplaced = match spec.args {
        ArgKind::None => [
            ("values", &m.values),
            ("samples", &m.samples),
            ("chunks", &m.chunks),
        ]
        .into_iter()
        .find(|(_, v)| v.is_some()),
        ArgKind::Values => [("samples", &m.samples), ("chunks", &m.chunks)]
            .into_iter()
            .find(|(_, v)| v.is_some()),
        ArgKind::Pi => [("values", &m.values)].into_iter().find(|(_, v)| v.is_some()),
    };
    if let Some((k, _)) = misplaced {
        let msg = format!("{} takes no \"{k}\"", spec.name);
        return Err(fail(&p, Failure::new(Code::Parse, msg)));
    }
    let pi = if spec.args == ArgKind::Pi {
        let samples = m
            .samples
            .as_ref()
            .map(|v| parse_unsigned(b, "samples", v))
            .transpose();
        let chunks = m
            .chunks
            .as_ref()
            .map(|v| parse_unsigned(b, "chunks", v))
            .transpose();
        let (samples, chunks) = (
            samples.map_err(|f| fail(&p, f))?,
            chunks.map_err(|f| fail(&p, f))?,
        );
        let Some(samples) = samples else {
            return Err(fail(&p, Failure::new(Code::Parse, "pi needs \"samples\"")));
        };
        Some((samples, chunks))
    } else {
        None
    };
    if let Some(v) = &m.values
        && v.kind != Kind::Array
    {
        let msg = format!("values must be an array, not {}", v.kind.name());
        return Err(fail(&p, Failure::new(Code::Parse, msg)));
    }
    check_access(op, ctx).map_err(|f| fail(&p, f))?;
    let args = match (spec.args, pi) {
        (ArgKind::Values, _) => {
            let (span, count) = match &m.values {
                Some(v) => (v.range.clone(), v.count),
                None => (0..0, 0),
            };
            check_count(count, ctx).map_err(|f| fail(&p, f))?;
            Args::Values {
                span,
                syntax: Syntax::JsonArray,
                count,
            }
        }
        (ArgKind::Pi, Some((samples, chunks))) => {
            let (samples, chunks) = check_pi_range(samples, chunks, ctx).map_err(|f| fail(&p, f))?;
            Args::Pi { samples, chunks }
        }
        _ => Args::None,
    };
    Ok(Request {
        id: p.id,
        user: p.user,
        op,
        args,
        format,
    })
}

/// The operation, from the body's `op` and, for HTTP, the path's.
fn resolve_op(body: Option<&str>, from: OpFrom) -> Result<OpId, Failure> {
    let unknown = |name: &str| {
        let m = format!("no operation \"{}\"; try help", sanitize(name.as_bytes(), 32));
        Failure::new(Code::UnknownOp, m)
    };
    match (from, body) {
        (OpFrom::Body, None) => Err(Failure::new(Code::Parse, "missing \"op\"")),
        (OpFrom::Body, Some(name)) => lookup(name).ok_or_else(|| unknown(name)),
        (OpFrom::Path(seg), body) => {
            if !valid_op_name(seg.as_bytes()) {
                let m = format!("malformed operation \"{}\"", sanitize(seg.as_bytes(), 32));
                return Err(Failure::new(Code::Parse, m));
            }
            let path_op = lookup(seg);
            match (path_op, body) {
                (None, None) => Err(unknown(seg)),
                (Some(op), None) => Ok(op),
                (path_op, Some(name)) => match (path_op, lookup(name)) {
                    (Some(p), Some(b)) if p == b => Ok(p),
                    (Some(_), Some(b)) => Err(Failure::new(
                        Code::Parse,
                        format!(
                            "the body's op \"{}\" is not the path's \"{}\"",
                            OPS[b].name,
                            sanitize(seg.as_bytes(), 32)
                        ),
                    )),
                    (Some(p), None) => Err(Failure::new(
                        Code::Parse,
                        format!("the body's op is not the path's \"{}\"", OPS[p].name),
                    )),
                    (None, _) => Err(unknown(seg)),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(line: &str) -> Result<Request, Rejection> {
        let all = vec![true; OPS.len()];
        let ctx = ParseCtx {
            max_values: 4,
            max_samples: 1_000_000,
            allowed: &all,
            udp: false,
        };
        parse(line.as_bytes(), &ctx)
    }

    fn code(l: &str) -> Code {
        run(l).unwrap_err().failure.code
    }

    #[test]
    fn accepts_the_spec_examples() {
        let line = r#"{"id": 7, "user": "alice", "op": "max", "values": [1, 2, 3]}"#;
        let r = run(line).unwrap();
        assert_eq!(r.id, Some(Id::Int(7)));
        assert_eq!(r.user, Name::user(b"alice"));
        let Args::Values { span, count, syntax } = r.args else {
            panic!("{:?}", r.args)
        };
        assert_eq!((&line[span], count, syntax), ("[1, 2, 3]", 3, Syntax::JsonArray));
        let r = run(r#"{"op": "pi", "samples": 1000000, "chunks": 4}"#).unwrap();
        assert_eq!(
            r.args,
            Args::Pi {
                samples: 1_000_000,
                chunks: Some(4)
            }
        );
    }

    #[test]
    fn rejects_with_the_right_code() {
        assert_eq!(code(r#"{"op": "max", "extra": 1, "values": [1]}"#), Code::Parse);
        assert_eq!(code(r#"{"op": "max", "values": [1, 2]"#), Code::Parse);
        assert_eq!(code(r#"{"op": "max", "values": []}"#), Code::Empty);
        assert_eq!(code(r#"{"op": "max", "values": [1,2,3,4,5]}"#), Code::TooMany);
        assert_eq!(code(r#"{"op": "max", "values": [1,2,3,4,"x"]}"#), Code::TooMany);
        assert_eq!(code(r#"{"id": "x", "op": "nosuchop"}"#), Code::UnknownOp);
        assert_eq!(code(r#"{"op": "ping", "values": [1]}"#), Code::Parse);
        assert_eq!(code(r#"{"op": "pi", "samples": "1"}"#), Code::Parse);
        assert_eq!(code(r#"{"op": "pi", "samples": 0}"#), Code::Range);
        assert_eq!(code(r#"{"op": 1}"#), Code::Parse);
        assert_eq!(code(r#"[1]"#), Code::Parse);
        assert_eq!(code(r#"{"op": "max", "values": [1 2]}"#), Code::Parse);
        assert_eq!(code(r#"{"op": "max", "values": [1]} x"#), Code::Parse);
        assert_eq!(code(r#"{"op": tru, "values": [1]}"#), Code::Parse);
        let deep = format!(
            "{{\"op\":\"max\",\"values\":{}1{}}}",
            "[".repeat(40),
            "]".repeat(40)
        );
        assert_eq!(code(&deep), Code::Parse);
        let ok_deep = format!(
            "{{\"op\":\"max\",\"values\":{}1{}}}",
            "[".repeat(31),
            "]".repeat(31)
        );
        assert!(run(&ok_deep).is_ok());
    }

    #[test]
    fn syntax_errors_name_their_column() {
        let r = run("{\"values\": [1,]}").unwrap_err();
        assert!(r.failure.message.contains("column 15"), "{}", r.failure.message);
    }

    #[test]
    fn strings_with_escapes_and_brackets_are_skipped_whole() {
        let line = r#"{"op": "sum", "values": ["1", "[\"]", 2], "id": "a\u0062"}"#;
        let r = run(line).unwrap();
        assert_eq!(r.id, Name::id(b"ab").map(Id::Text));
        assert!(matches!(r.args, Args::Values { count: 3, .. }));
    }

    #[test]
    fn echoes_the_id_on_errors() {
        let r = run(r#"{"id": "x", "op": "nosuchop"}"#).unwrap_err();
        assert_eq!(r.id, Name::id(b"x").map(Id::Text));
        assert_eq!(r.format, Format::Json);
    }

    #[test]
    fn big_values_are_counted_not_decoded() {
        let values: Vec<String> = (0..3).map(|k| format!("\"{k}\"")).collect();
        let line = format!("{{\"op\":\"max\",\"values\":[{}]}}", values.join(","));
        assert!(matches!(run(&line).unwrap().args, Args::Values { count: 3, .. }));
    }
}
