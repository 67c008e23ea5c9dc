//! The HTTP API of taskd(8), without I/O: the event loop hands
//! [`parse_request`] the bytes a connection has received, [`route`]s each
//! request to an [`Action`], and writes the answer with [`write_response`]
//! (or the helpers built on it).
//!
//! Requests become the line protocol's own `Request`s, checked by its
//! shared checks (`protocol::head`, `protocol::json` for POST bodies), so
//! HTTP clients get the same precedence, codes and messages as everyone
//! else.

use std::borrow::Cow;

mod parse;
mod response;
mod route;

pub use parse::{expect_continue, parse_request};
pub use response::{
    CONTINUE, JSON_CONTENT_TYPE, METRICS_CONTENT_TYPE, error_body, healthz_body, reason_phrase, seed_pi_body,
    status_for, strip_body, write_error, write_failure, write_response,
};
pub use route::{SEED_PI_DEFAULT_CONCURRENCY, SEED_PI_DEFAULT_SIMULATIONS, route};

/// More header fields than this: 431.
pub const MAX_HEADERS: usize = 64;
/// A request head (request line and header fields) larger than this: 431.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// One parsed request, borrowed from the connection's input: the loop
/// routes it before reading anything else, and a request costs no copies
/// of its parts (only a query component with escapes is decoded into a
/// string of its own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest<'a> {
    pub method: &'a str,
    /// The path of the request target, as sent (not percent-decoded); an
    /// absolute-form target (`http://host/path`) is reduced to its path.
    pub path: &'a str,
    /// The query string's pairs in order, percent-decoded, `+` as space; a
    /// key without `=` has an empty value.
    pub query: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    pub body: Cow<'a, [u8]>,
    /// HTTP/1.1: true unless `Connection: close`; HTTP/1.0: only with
    /// `Connection: keep-alive`.
    pub keep_alive: bool,
}

/// A request answered with an HTTP-level error (not one of the line
/// protocol's codes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    pub status: u16,
    /// `parse`, `length-required`, `too-long`, `headers-too-large`,
    /// `not-found`, `method`.
    pub code: &'static str,
    pub message: String,
    /// Close the connection after the response.
    pub close: bool,
    /// The `Allow` header of a 405.
    pub allow: Option<&'static str>,
}

impl HttpError {
    pub fn new(status: u16, code: &'static str, message: String, close: bool) -> HttpError {
        HttpError {
            status,
            code,
            message,
            close,
            allow: None,
        }
    }
}

/// What [`parse_request`] found at the start of the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// Read more.
    Incomplete,
    /// A whole request; drop `consumed` bytes from the buffer.
    Request { req: HttpRequest<'a>, consumed: usize },
    /// Answer it and close the connection (every parse error has `close`):
    /// the rest of the buffer cannot be trusted.
    Error(HttpError),
}

/// What the loop must do with a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// An op request (its format is `Format::Http`): answered with the
    /// line protocol's JSON reply as the body, or `/pi`'s own. Its values'
    /// span refers to `bytes`.
    Request {
        req: crate::protocol::Request,
        bytes: Vec<u8>,
    },
    /// Refused by the line protocol's rules: status from [`status_for`],
    /// body from [`error_body`]; see [`write_failure`].
    Reject(crate::protocol::Rejection),
    Statistics,
    Healthz,
    Metrics,
    /// 404 `not-found`, 405 `method` (with `allow`); see [`write_error`].
    Error(HttpError),
}
