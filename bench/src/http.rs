//! The HTTP case: HTTP/1.1 keep-alive GETs of `/v1/max?values=1,...,10`
//! on 50 connections against taskd's HTTP listener, and the same load
//! against nginx answering the same body from its configuration (a fixed
//! `return 200`, see `nginx.rs`). Also the HTTP side of the load generator
//! (`load.rs`, `Transport::Http`): the request bytes and the framing and
//! checking of each response (status line, headers, Content-Length, body).

use std::net::SocketAddr;
use std::ops::Range;
use std::time::Duration;

use crate::cases::{self, CaseOut, CaseResult, Ctx, Row};
use crate::load::{LoadResult, LoadSpec, Req, Transport};
use crate::nginx;
use crate::server::{ServerProc, Subject};

/// The request of the case, and the body both servers answer it with
/// (taskd's JSON reply ends in a newline; nginx is given the same bytes).
pub const HTTP_PATH: &str = "/v1/max?values=1,2,3,4,5,6,7,8,9,10";
pub const HTTP_BODY: &str = "{\"ok\":true,\"result\":10}\n";
/// Requests in flight per connection in the timed case (as wrk does).
const PIPELINE: usize = 1;
/// A response head longer than this is taken for garbage.
const MAX_HEAD: usize = 16 * 1024;
/// A body longer than this too.
const MAX_BODY: usize = 1 << 20;

/// `GET path HTTP/1.1` with a `Host` header: keep-alive is HTTP/1.1's
/// default, so nothing else is needed.
pub fn get(path: &str, host: SocketAddr) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes()
}

/// A request of the load's mix: the whole GET, and the body its 200
/// response must have, byte for byte.
pub fn request(path: &str, host: SocketAddr, body: &str) -> Req {
    Req {
        line: get(path, host),
        expect: body.as_bytes().to_vec(),
    }
}

/// One response cut from the front of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Cut {
    /// Not all of it has arrived yet.
    Incomplete,
    /// `len` bytes in all; the body at `body`; `close` when the server
    /// said `Connection: close`.
    Response {
        len: usize,
        status: u16,
        body: Range<usize>,
        close: bool,
    },
    /// Not a response the benchmark can frame; the connection is given up.
    Broken(String),
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(&b[..b.len().min(80)]).into_owned()
}

/// Frames the response at the front of `buf`: a status line
/// `HTTP/1.x NNN reason`, headers, exactly one `Content-Length` (no
/// `Transfer-Encoding`: neither server chunks a fixed body), the body.
pub fn cut_response(buf: &[u8]) -> Cut {
    let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() > MAX_HEAD {
            Cut::Broken(format!("no end of the response head in {MAX_HEAD} bytes"))
        } else {
            Cut::Incomplete
        };
    };
    let head = &buf[..head_end];
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let status_line = lines.next().unwrap_or_default();
    let status = match status_line {
        [
            b'H',
            b'T',
            b'T',
            b'P',
            b'/',
            b'1',
            b'.',
            b'0' | b'1',
            b' ',
            d @ ..,
        ] if d.len() >= 3 => {
            let code = &d[..3];
            if !code.iter().all(u8::is_ascii_digit) || d.get(3).is_some_and(|&b| b != b' ') {
                return Cut::Broken(format!("bad status line {:?}", lossy(status_line)));
            }
            code.iter().fold(0u16, |n, &b| n * 10 + u16::from(b - b'0'))
        }
        _ => return Cut::Broken(format!("bad status line {:?}", lossy(status_line))),
    };
    let mut length: Option<usize> = None;
    let mut close = false;
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Cut::Broken(format!("bad header line {:?}", lossy(line)));
        };
        let name = &line[..colon];
        let value = line[colon + 1..].trim_ascii();
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = std::str::from_utf8(value)
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<usize>().ok());
            match (n, length) {
                (Some(n), None) if n <= MAX_BODY => length = Some(n),
                (Some(_), Some(_)) => return Cut::Broken("two Content-Length headers".into()),
                _ => return Cut::Broken(format!("bad Content-Length {:?}", lossy(value))),
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            return Cut::Broken(format!(
                "Transfer-Encoding {:?} instead of a length",
                lossy(value)
            ));
        } else if name.eq_ignore_ascii_case(b"connection") {
            close |= value
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
        }
    }
    let Some(length) = length else {
        return Cut::Broken(format!("no Content-Length in the {status} response"));
    };
    let start = head_end + 4;
    if buf.len() < start + length {
        return Cut::Incomplete;
    }
    Cut::Response {
        len: start + length,
        status,
        body: start..start + length,
        close,
    }
}

/// A response that failed the check, for the error message: its status
/// line, `Connection: close` if it had one, and its body.
pub fn describe(resp: &[u8], body: &[u8], close: bool) -> Vec<u8> {
    let status_line = resp.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut out = status_line.to_vec();
    if close {
        out.extend_from_slice(b" (Connection: close)");
    }
    out.extend_from_slice(b" body ");
    out.extend_from_slice(body);
    out
}

/// One round: taskd's HTTP listener and nginx side by side, loaded in
/// turn slice by slice like the other network cases.
pub fn case(ctx: &Ctx, round: usize) -> CaseResult {
    let Some(nginx_bin) = nginx::find() else {
        return Ok(CaseOut::skipped(
            "nginx not found (apt-get install nginx-light, or nginx)",
        ));
    };
    let cpus = ctx.server_cpus();
    let e = |e: std::io::Error| e.to_string();
    let mut taskd =
        ServerProc::start(&Subject::TaskdHttp { bin: &ctx.taskd_bin }, cpus.as_deref()).map_err(e)?;
    let mut ng = ServerProc::start(&Subject::Nginx { bin: &nginx_bin }, cpus.as_deref()).map_err(e)?;
    let [t, b]: [LoadResult; 2] =
        cases::alternate(ctx, round, [&taskd, &ng], |addr, warmup, slice| LoadSpec {
            addr,
            transport: Transport::Http,
            connections: cases::CONNECTIONS,
            pipeline: PIPELINE,
            warmup,
            duration: slice,
            mix: vec![request(HTTP_PATH, addr, HTTP_BODY)],
            udp_timeout: Duration::from_millis(250),
        })?;
    taskd.check_alive().map_err(e)?;
    ng.check_alive().map_err(e)?;
    let mut out = CaseOut::default();
    out.absorb("taskd", &t);
    out.absorb("nginx", &b);
    out.note = format!(
        "taskd {} | {} {}",
        t.summary(),
        nginx::version(&nginx_bin),
        b.summary()
    );
    out.rows.push((Row::HttpRate, t.rate(), b.rate()));
    out.rows
        .push((Row::HttpP50, t.quantile_us(0.5), b.quantile_us(0.5)));
    out.rows
        .push((Row::HttpP99, t.quantile_us(0.99), b.quantile_us(0.99)));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 24\r\n\
                        Connection: keep-alive\r\n\r\n{\"ok\":true,\"result\":10}\n";

    #[test]
    fn requests_are_keep_alive_gets() {
        let r = request(HTTP_PATH, "127.0.0.1:80".parse().unwrap(), HTTP_BODY);
        assert_eq!(
            r.line,
            b"GET /v1/max?values=1,2,3,4,5,6,7,8,9,10 HTTP/1.1\r\nHost: 127.0.0.1:80\r\n\r\n"
        );
        assert_eq!(r.expect, HTTP_BODY.as_bytes());
    }

    #[test]
    fn whole_and_pipelined_responses_are_cut() {
        let Cut::Response {
            len,
            status,
            body,
            close,
        } = cut_response(OK)
        else {
            panic!("not cut");
        };
        assert_eq!((len, status, close), (OK.len(), 200, false));
        assert_eq!(&OK[body], HTTP_BODY.as_bytes());
        let two = [OK, OK].concat();
        assert!(matches!(cut_response(&two), Cut::Response { len, .. } if len == OK.len()));
        for n in [0, 10, 40, OK.len() - 1] {
            assert_eq!(cut_response(&OK[..n]), Cut::Incomplete, "{n} bytes");
        }
    }

    #[test]
    fn statuses_and_connection_close_are_read() {
        let r = b"HTTP/1.1 404 Not Found\r\nconnection: Keep-Alive, Close\r\ncontent-length: 2\r\n\r\n{}";
        assert!(matches!(
            cut_response(r),
            Cut::Response {
                status: 404,
                close: true,
                ..
            }
        ));
        let r = b"HTTP/1.0 200 OK\r\nContent-Length:0\r\n\r\n";
        assert!(matches!(
            cut_response(r),
            Cut::Response {
                status: 200,
                len: 37,
                ..
            }
        ));
    }

    #[test]
    fn unframeable_responses_are_broken() {
        for r in [
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Type: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}",
            b"HTTP/1.1 200 OK\r\nContent-Length: -2\r\n\r\n{}",
            b"HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\n{}",
            b"HTTP/2 200 OK\r\nContent-Length: 2\r\n\r\n{}",
            b"OK 10\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
        ] {
            assert!(
                matches!(cut_response(r), Cut::Broken(_)),
                "{:?}",
                String::from_utf8_lossy(r)
            );
        }
        assert!(matches!(cut_response(&vec![b'x'; MAX_HEAD + 1]), Cut::Broken(_)));
    }

    /// A server on a thread answering every request on every connection
    /// with `response`, until `until`.
    fn fixed_server(response: &'static [u8], until: std::time::Instant) -> SocketAddr {
        use std::io::{Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        l.set_nonblocking(true).unwrap();
        std::thread::spawn(move || {
            while std::time::Instant::now() < until {
                let Ok((mut s, _)) = l.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                s.set_nonblocking(false).unwrap();
                s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
                std::thread::spawn(move || {
                    let mut pending = Vec::new();
                    let mut buf = [0u8; 4096];
                    while std::time::Instant::now() < until {
                        match s.read(&mut buf) {
                            Ok(0) => return,
                            Ok(n) => pending.extend_from_slice(&buf[..n]),
                            Err(_) => continue,
                        }
                        while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                            pending.drain(..end + 4);
                            if s.write_all(response).is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        addr
    }

    fn load_against(response: &'static [u8]) -> LoadResult {
        let addr = fixed_server(response, std::time::Instant::now() + Duration::from_secs(5));
        crate::load::run(&LoadSpec {
            addr,
            transport: Transport::Http,
            connections: 3,
            pipeline: 4,
            warmup: Duration::from_millis(20),
            duration: Duration::from_millis(200),
            mix: vec![request(HTTP_PATH, addr, HTTP_BODY)],
            udp_timeout: Duration::from_millis(250),
        })
        .unwrap()
    }

    #[test]
    fn the_load_generator_checks_every_response() {
        let good = load_against(OK);
        assert!(good.replies > 0);
        assert_eq!((good.invalid, good.missing), (0, 0), "{:?}", good.first_error);
        let wrong =
            load_against(b"HTTP/1.1 200 OK\r\nContent-Length: 24\r\n\r\n{\"ok\":true,\"result\":11}\n");
        assert_eq!(wrong.replies, 0);
        assert!(wrong.invalid > 0);
        let e = wrong.first_error.unwrap();
        assert!(e.contains("HTTP/1.1 200 OK body") && e.contains(":11}"), "{e}");
        let broken = load_against(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
        assert_eq!(broken.replies, 0);
        assert!(broken.first_error.unwrap().contains("Transfer-Encoding"));
    }

    #[test]
    fn failures_are_described_by_status_and_body() {
        let r = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(
            describe(r, b"{}", true),
            b"HTTP/1.1 503 Service Unavailable (Connection: close) body {}"
        );
    }
}
