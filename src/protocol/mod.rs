//! The line protocol of taskd(8), "PROTOCOL": framing, request heads (text
//! and JSON), error codes and reply lines. Everything here is pure: the
//! event loop hands it bytes and gets requests, refusals or reply bytes back.
//!
//! The types here are the vocabulary of every transport: HTTP builds the
//! same [`Request`]s, and a reply is written in its request's [`Format`].

pub mod frame;
pub mod head;
pub mod json;
pub mod name;
pub mod reply;

use std::ops::Range;

use crate::ops::OpId;
pub use name::Name;

/// Error codes, in the precedence order of taskd(8) (the first that
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
    /// (taskd(8), "Users").
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

/// Why a request was not answered with a result: its code, and a message
/// saying exactly what was wrong and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub code: Code,
    pub message: String,
}

impl Failure {
    pub fn new(code: Code, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }

    /// A bug: the message the client sees; the details go to the log.
    pub fn internal() -> Failure {
        Failure::new(Code::Internal, "internal error, logged")
    }

    pub fn shutting_down() -> Failure {
        Failure::new(Code::ShuttingDown, "taskd is shutting down")
    }

    pub fn too_long(max: usize) -> Failure {
        Failure::new(Code::TooLong, format!("line longer than max_line_bytes ({max})"))
    }
}

/// A request id, echoed as it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Id {
    Text(Name),
    /// JSON requests may use an integer id; it is echoed as a number.
    Int(i64),
}

/// How a request's reply is written: the transport and syntax it came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `[#id ]OK result` / `[#id ]ERR code message`.
    Text,
    /// One JSON object per line.
    Json,
    /// An HTTP response with a JSON body of the given shape; `close`:
    /// `Connection: close` after it; `head`: a HEAD request's, without the
    /// body.
    Http { body: Body, close: bool, head: bool },
}

/// The body of a successful HTTP response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// The JSON reply of the line protocol (`/v1/{op}`).
    Reply,
    /// `/pi`: `{"pi","simulations","concurrency","elapsed_s"}`.
    SeedPi,
    /// `/statistics`: the users table itself.
    Table,
}

impl Format {
    pub fn is_json(self) -> bool {
        !matches!(self, Format::Text)
    }
}

/// A list request's values, not parsed yet (that happens on a worker):
/// the bytes of the line they came in, and where in it they are. A big
/// line is moved here from the connection's buffer, not copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    pub bytes: Vec<u8>,
    pub span: Range<usize>,
    pub syntax: Syntax,
}

/// The syntax of a [`Payload`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    /// The argument text of a text request.
    Text,
    /// The `values` array of a JSON request (validated for structure and
    /// depth by the loop, its elements by the worker).
    JsonArray,
}

impl Payload {
    pub fn text(bytes: Vec<u8>) -> Payload {
        let span = 0..bytes.len();
        Payload {
            bytes,
            span,
            syntax: Syntax::Text,
        }
    }

    pub fn values(&self) -> &[u8] {
        &self.bytes[self.span.clone()]
    }
}

/// A request's arguments. `Values` names where its values are in the line
/// the parser was given; the caller turns that into a [`Payload`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Args {
    None,
    Values {
        span: Range<usize>,
        syntax: Syntax,
        count: usize,
    },
    Pi {
        samples: u64,
        chunks: Option<u32>,
    },
}

/// A request whose head is valid and that the loop has accepted for its
/// listener and transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub id: Option<Id>,
    pub user: Option<Name>,
    pub op: OpId,
    pub args: Args,
    pub format: Format,
}

/// A request refused by the loop, with what its reply and its log line
/// need: the head as far as it could be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub id: Option<Id>,
    pub user: Option<Name>,
    pub op: Option<OpId>,
    pub format: Format,
    pub failure: Failure,
}

impl Rejection {
    /// A refusal that knows nothing of the request (a line too long, a
    /// datagram cut short): no id is echoed.
    pub fn bare(format: Format, failure: Failure) -> Rejection {
        Rejection {
            id: None,
            user: None,
            op: None,
            format,
            failure,
        }
    }

    /// The same request refused for another reason (draining, busy,
    /// denied by the certificate), keeping what was parsed of its head so
    /// the client can tell which request it was.
    pub fn of(parsed: &Result<Request, Rejection>, failure: Failure) -> Rejection {
        match parsed {
            Ok(r) => Rejection {
                id: r.id,
                user: r.user,
                op: Some(r.op),
                format: r.format,
                failure,
            },
            Err(r) => Rejection { failure, ..r.clone() },
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
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.push_str("\\x");
                out.push(HEX[usize::from(b >> 4)] as char);
                out.push(HEX[usize::from(b & 15)] as char);
            }
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
        assert_eq!(sanitize(b"\xff", 3), "\\xff");
    }

    #[test]
    fn codes_that_do_not_count() {
        assert!(Code::Range.counts_for_user());
        assert!(Code::Empty.counts_for_user());
        assert!(!Code::Busy.counts_for_user());
        assert!(!Code::Parse.counts_for_user());
    }
}
