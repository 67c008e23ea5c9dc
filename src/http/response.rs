//! Responses: status lines, headers and the JSON bodies of taskd(8), "HTTP API".

use std::io::Write;
use std::time::Duration;

use super::HttpError;
use crate::numbers::Num;
use crate::protocol::reply::write_json_err;
use crate::protocol::{Code, Failure, Id};

pub const JSON_CONTENT_TYPE: &str = "application/json";
/// The Prometheus text exposition format 0.0.4.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The interim response to `Expect: 100-continue` (see
/// [`super::expect_continue`]).
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// The HTTP statuses of the line protocol's codes.
pub fn status_for(code: Code) -> u16 {
    match code {
        Code::Parse | Code::Empty | Code::Range => 400,
        Code::TooLong | Code::TooMany => 413,
        Code::UnknownOp => 404,
        Code::Denied => 403,
        Code::Busy => 429,
        Code::ShuttingDown => 503,
        Code::Internal => 500,
        // Never over HTTP (no op is refused for being stream-only there);
        // if it ever happened it would be the request's fault.
        Code::TcpOnly => 400,
    }
}

pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// Removes the body of the response written at `out[start..]`: the answer
/// to a HEAD request has the headers of a GET's, Content-Length included,
/// and nothing after them.
pub fn strip_body(out: &mut Vec<u8>, start: usize) {
    if let Some(i) = memchr::memmem::find(&out[start..], b"\r\n\r\n") {
        out.truncate(start + i + 4);
    }
}

/// Appends a whole response: status line, `Content-Type`,
/// `Content-Length`, `Connection: close` when `close` and otherwise
/// `Connection: keep-alive` (implicit for HTTP/1.1, needed by HTTP/1.0
/// clients that asked for it), `extra_headers` (e.g. `("Allow", "GET")`,
/// `("Retry-After", "1")`), then the body. Pieces are appended as they
/// are, nothing goes through `core::fmt`: the common response is a dozen
/// copies.
pub fn write_response(
    out: &mut Vec<u8>,
    status: u16,
    content_type: &str,
    extra_headers: &[(&str, &str)],
    body: &[u8],
    close: bool,
) {
    let head: &[u8] = match status {
        200 => b"HTTP/1.1 200 OK\r\nContent-Type: ",
        _ => b"",
    };
    if head.is_empty() {
        out.extend_from_slice(b"HTTP/1.1 ");
        crate::numbers::write_u64(out, u64::from(status));
        out.push(b' ');
        out.extend_from_slice(reason_phrase(status).as_bytes());
        out.extend_from_slice(b"\r\nContent-Type: ");
    } else {
        out.extend_from_slice(head);
    }
    out.extend_from_slice(content_type.as_bytes());
    out.extend_from_slice(b"\r\nContent-Length: ");
    crate::numbers::write_u64(out, body.len() as u64);
    out.extend_from_slice(if close {
        b"\r\nConnection: close\r\n"
    } else {
        b"\r\nConnection: keep-alive\r\n"
    });
    for (name, value) in extra_headers {
        debug_assert!(!name.contains(['\r', '\n']) && !value.contains(['\r', '\n']));
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

/// An [`HttpError`] as a response: its status, JSON error body, `Allow`
/// on a 405, `Connection: close` when it closes.
pub fn write_error(out: &mut Vec<u8>, e: &HttpError, extra_headers: &[(&str, &str)]) {
    let body = error_body(e.code, &e.message, None);
    match e.allow {
        Some(allow) => {
            let mut headers = vec![("Allow", allow)];
            headers.extend_from_slice(extra_headers);
            write_response(out, e.status, JSON_CONTENT_TYPE, &headers, &body, e.close);
        }
        None => write_response(out, e.status, JSON_CONTENT_TYPE, extra_headers, &body, e.close),
    }
}

/// A line-protocol error as a response: [`status_for`] its code, the JSON
/// error body (with the id when known), `Retry-After: 1` on `busy`.
/// The response of a request refused or failed with a line-protocol code:
/// its status, and `Retry-After` with `busy`.
pub fn write_failure(out: &mut Vec<u8>, f: &Failure, id: Option<&Id>, close: bool) {
    let body = error_body(f.code.as_str(), &f.message, id);
    let headers: &[(&str, &str)] = if f.code == Code::Busy {
        &[("Retry-After", "1")]
    } else {
        &[]
    };
    write_response(out, status_for(f.code), JSON_CONTENT_TYPE, headers, &body, close);
}

/// `{"id"?, "ok": false, "error": code, "message": ...}` and a newline,
/// the same bytes as the line protocol's JSON error reply.
pub fn error_body(code: &str, message: &str, id: Option<&Id>) -> Vec<u8> {
    let mut out = Vec::with_capacity(48 + message.len());
    write_json_err(&mut out, id, code, message);
    out
}

/// The seed's `/pi` body: `{"pi","simulations","concurrency","elapsed_s"}`,
/// numbers in ECMAScript form, and a newline.
pub fn seed_pi_body(pi: f64, simulations: u64, concurrency: u32, elapsed: Duration) -> Vec<u8> {
    let mut out = Vec::with_capacity(96);
    out.extend_from_slice(b"{\"pi\":");
    Num::Float(pi).write_to(&mut out);
    let _ = write!(
        out,
        ",\"simulations\":{simulations},\"concurrency\":{concurrency},\"elapsed_s\":"
    );
    Num::Float(elapsed.as_secs_f64()).write_to(&mut out);
    out.extend_from_slice(b"}\n");
    out
}

/// `/healthz`: (status, body): 200 `{"status":"ok"}`, or 503
/// `{"status":"draining"}` while draining.
pub fn healthz_body(draining: bool) -> (u16, &'static [u8]) {
    if draining {
        (503, b"{\"status\":\"draining\"}\n")
    } else {
        (200, b"{\"status\":\"ok\"}\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(v: &[u8]) -> &str {
        std::str::from_utf8(v).unwrap()
    }

    #[test]
    fn responses_have_length_and_connection() {
        let mut out = Vec::new();
        write_response(&mut out, 200, JSON_CONTENT_TYPE, &[], b"{}\n", false);
        assert_eq!(
            text(&out),
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 3\r\n\
             Connection: keep-alive\r\n\r\n{}\n"
        );
        out.clear();
        write_response(
            &mut out,
            429,
            JSON_CONTENT_TYPE,
            &[("Retry-After", "1")],
            b"",
            true,
        );
        assert_eq!(
            text(&out),
            "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nContent-Length: 0\r\n\
             Connection: close\r\nRetry-After: 1\r\n\r\n"
        );
    }

    #[test]
    fn errors_and_rejections() {
        let mut out = Vec::new();
        let e = HttpError {
            allow: Some("GET"),
            ..HttpError::new(405, "method", "GET only".into(), false)
        };
        write_error(&mut out, &e, &[]);
        let s = text(&out);
        assert!(s.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"), "{s}");
        assert!(s.contains("\r\nAllow: GET\r\n"));
        assert!(s.ends_with("\r\n\r\n{\"ok\":false,\"error\":\"method\",\"message\":\"GET only\"}\n"));

        out.clear();
        write_failure(
            &mut out,
            &Failure::new(Code::Busy, "queue full"),
            Some(&Id::Int(7)),
            false,
        );
        let s = text(&out);
        assert!(s.starts_with("HTTP/1.1 429 "));
        assert!(s.contains("\r\nRetry-After: 1\r\n"));
        assert!(s.ends_with("{\"id\":7,\"ok\":false,\"error\":\"busy\",\"message\":\"queue full\"}\n"));
    }

    #[test]
    fn error_bodies_match_the_line_protocol() {
        let text_id = crate::protocol::Name::id(b"a:b").map(Id::Text);
        for id in [None, Some(Id::Int(-3)), text_id] {
            let mut line = Vec::new();
            crate::protocol::reply::write_err(&mut line, id.as_ref(), true, Code::Range, "x \"y\"");
            assert_eq!(error_body("range", "x \"y\"", id.as_ref()), line);
        }
        let v: serde_json::Value =
            serde_json::from_slice(&error_body("not-found", "no \u{1}", None)).unwrap();
        assert_eq!(v["ok"], false);
        assert_eq!(v["error"], "not-found");
    }

    #[test]
    fn statuses_follow_the_spec() {
        let s = |c| status_for(c);
        assert_eq!([Code::Parse, Code::Empty, Code::Range].map(s), [400, 400, 400]);
        assert_eq!([Code::TooLong, Code::TooMany].map(s), [413, 413]);
        assert_eq!(s(Code::UnknownOp), 404);
        assert_eq!(s(Code::Denied), 403);
        assert_eq!(s(Code::Busy), 429);
        assert_eq!(s(Code::ShuttingDown), 503);
        assert_eq!(s(Code::Internal), 500);
        for c in Code::ALL {
            assert_ne!(reason_phrase(s(c)), "Unknown");
        }
    }

    #[test]
    fn bodies() {
        let b = seed_pi_body(3.25, 1_000_000, 4, Duration::from_millis(1250));
        assert_eq!(
            text(&b),
            "{\"pi\":3.25,\"simulations\":1000000,\"concurrency\":4,\"elapsed_s\":1.25}\n"
        );
        assert_eq!(healthz_body(false).0, 200);
        assert_eq!(
            healthz_body(true),
            (503, b"{\"status\":\"draining\"}\n".as_slice())
        );
    }
}
