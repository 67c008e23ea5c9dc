//! The line protocol of SPEC section 1: framing, request heads (text and
//! JSON), error codes and reply formatting. Everything here is pure: the
//! event loop hands it bytes and gets requests or replies back.

pub mod frame;
pub mod head;
pub mod json;
pub mod reply;

use crate::ops::OpId;

/// Error codes, in the precedence order of SPEC section 1 (the first that
/// applies wins; `parse` appears twice there, which the callers honour by
/// checking head faults in the loop and value faults on the worker).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Code {
    TooLong,
    ShuttingDown,
    Parse,
    UnknownOp,
    Denied,
    TcpOnly,
    TooMany,
    Empty,
    Range,
    Busy,
    Internal,
}

impl Code {
    pub const ALL: [Code; 11] = [
        Code::TooLong,
        Code::ShuttingDown,
        Code::Parse,
        Code::UnknownOp,
        Code::Denied,
        Code::TcpOnly,
        Code::TooMany,
        Code::Empty,
        Code::Range,
        Code::Busy,
        Code::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Code::TooLong => "too-long",
            Code::ShuttingDown => "shutting-down",
            Code::Parse => "parse",
            Code::UnknownOp => "unknown-op",
            Code::Denied => "denied",
            Code::TcpOnly => "tcp-only",
            Code::TooMany => "too-many",
            Code::Empty => "empty",
            Code::Range => "range",
            Code::Busy => "busy",
            Code::Internal => "internal",
        }
    }

    /// Whether a request answered with this code still counts for its user
    /// (SPEC section 1, "Users").
    pub fn counts_for_user(self) -> bool {
        !matches!(
            self,
            Code::Parse
                | Code::UnknownOp
                | Code::TooLong
                | Code::Denied
                | Code::TcpOnly
                | Code::Busy
                | Code::ShuttingDown
        )
    }
}

/// A request id, echoed as it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Id {
    Text(String),
    /// JSON requests may use an integer id; it is echoed as a number.
    Int(i64),
}

/// The values of a list request, not parsed yet: that happens on a worker.
#[derive(Debug, Clone, PartialEq)]
pub enum RawValues {
    /// The argument bytes of a text request.
    Text(Vec<u8>),
    /// The elements of a JSON request's `values` array.
    Json(Vec<serde_json::Value>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Args {
    None,
    Values { raw: RawValues, count: usize },
    Pi { samples: u64, chunks: Option<u32> },
}

/// A request whose head is valid and that the loop has accepted for its
/// listener and transport.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub id: Option<Id>,
    pub user: Option<String>,
    pub op: OpId,
    pub args: Args,
    /// Answer as a JSON line.
    pub json: bool,
}

/// A request refused by the loop, with what its reply needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub id: Option<Id>,
    pub user: Option<String>,
    pub op: Option<OpId>,
    pub json: bool,
    pub code: Code,
    pub message: String,
}

impl Rejection {
    /// A line over `max_line_bytes`: no id is echoed (SPEC section 1), and
    /// the answer is JSON when the line started with `{`.
    pub fn too_long(json: bool, max: usize) -> Rejection {
        Rejection {
            id: None,
            user: None,
            op: None,
            json,
            code: Code::TooLong,
            message: format!("line longer than max_line_bytes ({max})"),
        }
    }

    /// The answer to any request while the daemon drains: the request's id
    /// and user as far as they could be parsed, so the client can tell which
    /// request was refused.
    pub fn shutting_down(parsed: &Result<Request, Rejection>) -> Rejection {
        let (id, user, op, json) = match parsed {
            Ok(r) => (r.id.clone(), r.user.clone(), Some(r.op), r.json),
            Err(r) => (r.id.clone(), r.user.clone(), r.op, r.json),
        };
        Rejection {
            id,
            user,
            op,
            json,
            code: Code::ShuttingDown,
            message: "taskd is shutting down".into(),
        }
    }
}

/// What the parser needs to know about where a line arrived.
pub struct ParseCtx<'a> {
    pub max_values: usize,
    /// `ops.pi.max_samples`, or `udp_max_samples` over UDP.
    pub max_samples: u64,
    /// Whether each op (by `OpId`) may be used on this listener: enabled
    /// and in the listener's `ops`.
    pub allowed: &'a [bool],
    pub udp: bool,
    /// The default CHUNKS of pi: the number of workers.
    pub workers: usize,
}

/// Shows at most `max` bytes of client input in a message, printable ASCII
/// as is and everything else escaped, so logs and replies stay one line.
pub fn sanitize(bytes: &[u8], max: usize) -> String {
    let mut out = String::new();
    for &b in bytes.iter().take(max) {
        match b {
            b'"' | b'\\' => {
                out.push('\\');
                out.push(b as char);
            }
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    if bytes.len() > max {
        out.push_str("...");
    }
    out
}

/// Parses one line (without its newline) into a request or a rejection.
pub fn parse_line(line: &[u8], ctx: &ParseCtx) -> Result<Request, Rejection> {
    if first_non_blank(line) == Some(b'{') {
        json::parse(line, ctx)
    } else {
        head::parse(line, ctx)
    }
}

pub fn first_non_blank(line: &[u8]) -> Option<u8> {
    line.iter().copied().find(|b| *b != b' ' && *b != b'\t')
}

pub fn is_blank(line: &[u8]) -> bool {
    first_non_blank(line).is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_escapes_and_truncates() {
        assert_eq!(sanitize(b"ab\x00\"", 10), "ab\\x00\\\"");
        assert_eq!(sanitize(b"abcdef", 3), "abc...");
    }

    #[test]
    fn codes_that_do_not_count() {
        assert!(Code::Range.counts_for_user());
        assert!(Code::Empty.counts_for_user());
        assert!(!Code::Busy.counts_for_user());
        assert!(!Code::Parse.counts_for_user());
    }
}
