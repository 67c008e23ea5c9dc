//! Request parsing with httparse: head limits, `Content-Length` bodies only.

use std::borrow::Cow;

use super::{HttpError, HttpRequest, MAX_HEADER_BYTES, MAX_HEADERS, Parsed};

fn headers_too_large(message: String) -> Parsed<'static> {
    Parsed::Error(HttpError::new(431, "headers-too-large", message, true))
}

fn bad_request(message: String) -> Parsed<'static> {
    Parsed::Error(HttpError::new(400, "parse", message, true))
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &v[start..end]
}

/// The header fields parse_request acts on.
#[derive(Default)]
struct Fields {
    content_length: Option<u64>,
    transfer_encoding: bool,
    close: bool,
    keep_alive: bool,
    expect_continue: bool,
}

fn fields(headers: &[httparse::Header]) -> Result<Fields, String> {
    let mut f = Fields::default();
    for h in headers {
        let v = trim(h.value);
        if h.name.eq_ignore_ascii_case("content-length") {
            if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
                return Err(format!(
                    "invalid Content-Length \"{}\"",
                    crate::protocol::sanitize(v, 32)
                ));
            }
            // All digits: only overflow can fail, and that is too large.
            let n = std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(u64::MAX);
            if f.content_length.is_some_and(|m| m != n) {
                return Err("conflicting Content-Length fields".into());
            }
            f.content_length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            f.transfer_encoding = true;
        } else if h.name.eq_ignore_ascii_case("connection") {
            for tok in v.split(|&b| b == b',').map(trim) {
                f.close |= tok.eq_ignore_ascii_case(b"close");
                f.keep_alive |= tok.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if h.name.eq_ignore_ascii_case("expect") {
            f.expect_continue |= v.eq_ignore_ascii_case(b"100-continue");
        }
    }
    Ok(f)
}

/// Splits a request target into (path, query), reducing the absolute form
/// `http://host/path?q` to its path and dropping a fragment after the
/// path; one after the query is [`parse_query`]'s end.
fn split_target(target: &str) -> (&str, &str) {
    let mut t = target;
    for scheme in ["http://", "https://"] {
        if t.len() >= scheme.len() && t[..scheme.len()].eq_ignore_ascii_case(scheme) {
            let rest = &t[scheme.len()..];
            let at = rest.find(['/', '?']).unwrap_or(rest.len());
            t = &rest[at..];
            break;
        }
    }
    // A plain scan, as in parse_query: targets are a few dozen bytes,
    // where the searcher behind `split_once` costs more than the bytes.
    // '?' and '#' are ASCII, so the slices are whole characters.
    let (path, query) = match t.bytes().position(|b| b == b'?' || b == b'#') {
        Some(at) if t.as_bytes()[at] == b'?' => (&t[..at], &t[at + 1..]),
        Some(at) => (&t[..at], ""),
        None => (t, ""),
    };
    (if path.is_empty() { "/" } else { path }, query)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-decodes a query component, `+` as space. A `%` not followed by
/// two hex digits is kept as is; bytes that are not UTF-8 become U+FFFD.
pub(crate) fn decode_component(s: &str) -> Cow<'_, str> {
    // Most components (numbers, names) have nothing to decode.
    if !s.bytes().any(|b| b == b'%' || b == b'+') {
        return Cow::Borrowed(s);
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    Cow::Owned(match String::from_utf8(out) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    })
}

/// The pairs of a query string, up to a fragment (`#`), in one pass over
/// its bytes: the separators found and whether a pair needs decoding at
/// all. A pair without escapes is borrowed as it is.
pub(crate) fn parse_query(q: &str) -> Vec<(Cow<'_, str>, Cow<'_, str>)> {
    let mut pairs = Vec::new();
    let (mut start, mut eq, mut escaped) = (0, None, false);
    let b = q.as_bytes();
    for i in 0..=b.len() {
        // The end of the string reads as one more '&'.
        let c = b.get(i).copied().unwrap_or(b'&');
        match c {
            b'&' | b'#' => {
                // The separators are ASCII: the slices are whole characters.
                if i > start {
                    let (k, v) = match eq {
                        Some(e) => (&q[start..e], &q[e + 1..i]),
                        None => (&q[start..i], ""),
                    };
                    pairs.push(if escaped {
                        (decode_component(k), decode_component(v))
                    } else {
                        (Cow::Borrowed(k), Cow::Borrowed(v))
                    });
                }
                if c == b'#' || i == q.len() {
                    break;
                }
                (start, eq, escaped) = (i + 1, None, false);
            }
            b'=' if eq.is_none() => eq = Some(i),
            b'%' | b'+' => escaped = true,
            _ => {}
        }
    }
    pairs
}

/// Parses the first request in `buf`.
///
/// Limits: more than [`MAX_HEADERS`] header fields, or a head over
/// [`MAX_HEADER_BYTES`] (complete or not yet), is 431. Only
/// `Content-Length` bodies: any `Transfer-Encoding` is 411, together with
/// `Content-Length` 400. A body over `max_body` is 413 `too-long`, decided
/// from the header before the body arrives. A malformed request line or
/// header field, or an invalid `Content-Length`, is 400 `parse`. Every
/// error closes the connection.
pub fn parse_request(buf: &[u8], max_body: usize) -> Parsed<'_> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEADER_BYTES => {
            return headers_too_large(format!("request head over {MAX_HEADER_BYTES} bytes"));
        }
        Ok(httparse::Status::Partial) => return Parsed::Incomplete,
        Err(httparse::Error::TooManyHeaders) => {
            return headers_too_large(format!("more than {MAX_HEADERS} header fields"));
        }
        Err(e) => return bad_request(format!("malformed request: {e}")),
    };
    if head_len > MAX_HEADER_BYTES {
        return headers_too_large(format!("request head over {MAX_HEADER_BYTES} bytes"));
    }
    let f = match fields(req.headers) {
        Ok(f) => f,
        Err(m) => return bad_request(m),
    };
    if f.transfer_encoding {
        if f.content_length.is_some() {
            return bad_request("both Content-Length and Transfer-Encoding".into());
        }
        return Parsed::Error(HttpError::new(
            411,
            "length-required",
            "only Content-Length bodies are accepted, not Transfer-Encoding".into(),
            true,
        ));
    }
    let len = f.content_length.unwrap_or(0);
    if len > max_body as u64 {
        return Parsed::Error(HttpError::new(
            413,
            "too-long",
            format!("body of {len} bytes, at most {max_body} allowed"),
            true,
        ));
    }
    // len <= max_body, a usize.
    let consumed = head_len + len as usize;
    if buf.len() < consumed {
        return Parsed::Incomplete;
    }
    let http11 = req.version == Some(1);
    let keep_alive = !f.close && (http11 || f.keep_alive);
    let (path, query) = split_target(req.path.unwrap_or("/"));
    Parsed::Request {
        req: HttpRequest {
            method: req.method.unwrap_or(""),
            path,
            query: parse_query(query),
            body: Cow::Borrowed(&buf[head_len..consumed]),
            keep_alive,
        },
        consumed,
    }
}

/// Whether the loop should send [`super::CONTINUE`] now: the head of the
/// first request in `buf` is complete, it is HTTP/1.1 with
/// `Expect: 100-continue`, and its body (within `max_body`) has not all
/// arrived. Call it when [`parse_request`] says `Incomplete`, at most once
/// per request (curl waits a second for this before sending a body over
/// 1 KiB).
pub fn expect_continue(buf: &[u8], max_body: usize) -> bool {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let Ok(httparse::Status::Complete(head_len)) = req.parse(buf) else {
        return false;
    };
    let Ok(f) = fields(req.headers) else {
        return false;
    };
    let len = f.content_length.unwrap_or(0);
    req.version == Some(1)
        && f.expect_continue
        && !f.transfer_encoding
        && len > 0
        && len <= max_body as u64
        && ((buf.len() - head_len) as u64) < len
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1024;

    fn request(buf: &[u8]) -> (HttpRequest<'_>, usize) {
        match parse_request(buf, MAX) {
            Parsed::Request { req, consumed } => (req, consumed),
            other => panic!("{other:?}"),
        }
    }

    /// The query's pairs the obvious way, as the one-pass scan must give them.
    fn reference_query(q: &str) -> Vec<(String, String)> {
        let q = q.split_once('#').map_or(q, |(a, _)| a);
        q.split('&')
            .filter(|kv| !kv.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (decode_component(k).into_owned(), decode_component(v).into_owned())
            })
            .collect()
    }

    proptest::proptest! {
        #[test]
        fn query_pairs_match_the_reference(q in "[a-c=&%+#0-9A-F\u{e9}]{0,40}") {
            let got: Vec<(String, String)> =
                parse_query(&q).into_iter().map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
            proptest::prop_assert_eq!(got, reference_query(&q));
        }
    }

    fn pairs(req: &HttpRequest) -> Vec<(String, String)> {
        req.query
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn error(buf: &[u8]) -> HttpError {
        match parse_request(buf, MAX) {
            Parsed::Error(e) => e,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_simple_get() {
        let buf = b"GET /v1/max?values=1,2%2C3&username=a+b&flag HTTP/1.1\r\nHost: x\r\n\r\n";
        let (req, consumed) = request(buf);
        assert_eq!(consumed, buf.len());
        assert_eq!(req.method, "GET");
        assert_eq!(req.path, "/v1/max");
        assert_eq!(
            pairs(&req),
            [
                ("values".to_string(), "1,2,3".to_string()),
                ("username".into(), "a b".into()),
                ("flag".into(), String::new())
            ]
        );
        assert!(req.body.is_empty());
        assert!(req.keep_alive);
    }

    #[test]
    fn pipelined_requests_are_taken_one_at_a_time() {
        let one = b"POST /v1/sum HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello".as_slice();
        let two = b"GET /healthz HTTP/1.1\r\n\r\n".as_slice();
        let buf = [one, two].concat();
        let (req, consumed) = request(&buf);
        assert_eq!((req.path, req.body.as_ref()), ("/v1/sum", b"hello".as_slice()));
        assert_eq!(consumed, one.len());
        let (req, consumed) = request(&buf[consumed..]);
        assert_eq!(req.path, "/healthz");
        assert_eq!(consumed, two.len());
    }

    #[test]
    fn incomplete_until_the_last_byte() {
        let buf = b"POST /v1/sum?x=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\n{\"values\":1}";
        let buf = &buf[..buf.len() - 1];
        for i in 0..buf.len() {
            assert_eq!(parse_request(&buf[..i], MAX), Parsed::Incomplete, "at {i}");
        }
        let (req, consumed) = request(buf);
        assert_eq!(consumed, buf.len());
        assert_eq!(req.body.as_ref(), b"{\"values\":1");
    }

    #[test]
    fn a_body_arriving_in_parts() {
        let head = b"POST /v1/sum HTTP/1.1\r\nContent-Length: 20\r\n\r\n".as_slice();
        let body = br#"{"values": [1,2,3]} "#.as_slice();
        let mut buf = head.to_vec();
        assert_eq!(parse_request(&buf, MAX), Parsed::Incomplete);
        for part in body.chunks(6) {
            buf.extend_from_slice(part);
            if buf.len() < head.len() + body.len() {
                assert_eq!(parse_request(&buf, MAX), Parsed::Incomplete);
            }
        }
        buf.extend_from_slice(b"GET");
        let (req, consumed) = request(&buf);
        assert_eq!(req.body.as_ref(), body);
        assert_eq!(consumed, head.len() + body.len());
    }

    #[test]
    fn chunked_bodies_are_refused() {
        let e = error(b"POST /v1/sum HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!((e.status, e.code, e.close), (411, "length-required", true));
        let e = error(b"POST /v1/sum HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n");
        assert_eq!((e.status, e.code, e.close), (400, "parse", true));
    }

    #[test]
    fn head_limits() {
        let mut buf = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..64 {
            buf.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
        }
        let ok = [buf.as_slice(), b"\r\n"].concat();
        assert!(matches!(parse_request(&ok, MAX), Parsed::Request { .. }));
        buf.extend_from_slice(b"X-H64: v\r\n\r\n");
        let e = error(&buf);
        assert_eq!((e.status, e.code, e.close), (431, "headers-too-large", true));

        let big = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(17 * 1024));
        assert_eq!(error(big.as_bytes()).status, 431);
        // Still incomplete, but already too large.
        assert_eq!(error(&big.as_bytes()[..MAX_HEADER_BYTES + 1]).status, 431);
        assert_eq!(
            parse_request(&big.as_bytes()[..MAX_HEADER_BYTES], MAX),
            Parsed::Incomplete
        );
    }

    #[test]
    fn body_over_the_limit_is_refused_from_the_header() {
        let e = error(b"POST /v1/sum HTTP/1.1\r\nContent-Length: 1025\r\n\r\n");
        assert_eq!((e.status, e.code, e.close), (413, "too-long", true));
        let e = error(b"POST /v1/sum HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n");
        assert_eq!(e.status, 413);
        let exact = format!(
            "POST / HTTP/1.1\r\nContent-Length: 1024\r\n\r\n{}",
            "x".repeat(1024)
        );
        assert!(matches!(
            parse_request(exact.as_bytes(), MAX),
            Parsed::Request { .. }
        ));
    }

    #[test]
    fn malformed_requests() {
        for buf in [
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".as_slice(),
            b"GET /\x01 HTTP/1.1\r\n\r\n",
            b"GET / HTTP/2.0\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
            b"hello world\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: 1, 1\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        ] {
            let e = error(buf);
            assert_eq!((e.status, e.code, e.close), (400, "parse", true), "{buf:?}");
        }
        // The same length twice is allowed (RFC 9110 8.6).
        let (req, _) = request(b"POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab");
        assert_eq!(req.body.as_ref(), b"ab");
    }

    #[test]
    fn keep_alive_rules() {
        let ka = |buf: &[u8]| request(buf).0.keep_alive;
        assert!(ka(b"GET / HTTP/1.1\r\n\r\n"));
        assert!(!ka(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n"));
        assert!(!ka(b"GET / HTTP/1.1\r\nConnection: Upgrade, CLOSE\r\n\r\n"));
        assert!(!ka(b"GET / HTTP/1.0\r\n\r\n"));
        assert!(ka(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
        assert!(!ka(b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n"));
    }

    #[test]
    fn targets_and_queries() {
        let (req, _) = request(b"GET http://example.com:80/pi?simulations=5#frag HTTP/1.1\r\n\r\n");
        assert_eq!(req.path, "/pi");
        assert_eq!(pairs(&req), [("simulations".to_string(), "5".to_string())]);
        let (req, _) = request(b"GET http://example.com?a=1 HTTP/1.1\r\n\r\n");
        assert_eq!(req.path, "/");
        assert_eq!(
            parse_query("a=%zz&&b=%4&c=%41%42&%3d=%e2%82%ac&d=%ff"),
            [
                (Cow::from("a"), Cow::from("%zz")),
                ("b".into(), "%4".into()),
                ("c".into(), "AB".into()),
                ("=".into(), "€".into()),
                ("d".into(), "\u{fffd}".into()),
            ]
        );
        let (req, _) = request(b"GET /v1/max?values=1,2&id=a#frag&x=1 HTTP/1.1\r\n\r\n");
        assert_eq!(
            pairs(&req),
            [("values".into(), "1,2".into()), ("id".into(), "a".into())]
        );
        let (req, _) = request(b"GET /v1/max#x?values=1 HTTP/1.1\r\n\r\n");
        assert_eq!((req.path, req.query.len()), ("/v1/max", 0));
        assert_eq!(decode_component("%"), "%");
        assert_eq!(decode_component("a%2"), "a%2");
        assert_eq!(decode_component("%20"), " ");
    }

    #[test]
    fn expect_continue_only_while_the_body_is_missing() {
        let head = b"POST /v1/sum HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n".as_slice();
        assert!(expect_continue(head, MAX));
        assert!(expect_continue(&[head, b"ab"].concat(), MAX));
        assert!(!expect_continue(&[head, b"abcd"].concat(), MAX));
        assert!(!expect_continue(&head[..head.len() - 2], MAX));
        assert!(!expect_continue(head, 3));
        assert!(!expect_continue(
            b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\n",
            MAX
        ));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(buf in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = parse_request(&buf, 64);
            let _ = expect_continue(&buf, 64);
        }

        #[test]
        fn arbitrary_heads_never_panic(
            method in "[A-Z]{1,7}",
            target in "[ -~]{0,40}",
            headers in proptest::collection::vec(("[A-Za-z-]{1,20}", "[ -~]{0,20}"), 0..8),
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
        ) {
            let mut buf = format!("{method} {target} HTTP/1.1\r\n").into_bytes();
            for (k, v) in headers {
                buf.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
            }
            buf.extend_from_slice(b"\r\n");
            buf.extend_from_slice(&body);
            if let Parsed::Request { consumed, .. } = parse_request(&buf, 64) {
                proptest::prop_assert!(consumed <= buf.len());
            }
        }
    }
}
