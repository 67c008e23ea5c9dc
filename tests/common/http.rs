//! Raw HTTP/1.1 for the tests of the HTTP API: requests written as bytes,
//! responses read back framed by their Content-Length, over TCP or TLS.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// The configuration of one HTTP listener on `port`, then `extra`.
pub fn http_config(port: u16, extra: &str) -> String {
    format!("[[listener]]\nproto = \"http\"\naddress = \"127.0.0.1:{port}\"\n\n{extra}\n")
}

/// `GET {target} HTTP/1.1` with a Host header and nothing else.
pub fn http_get(target: &str) -> String {
    format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
}

/// `POST {target} HTTP/1.1` with a JSON body.
pub fn http_post(target: &str, body: &str) -> String {
    format!(
        "POST {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// One response as read from the wire.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// `HTTP/1.1`.
    pub version: String,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header field of that name (case-insensitive), trimmed.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics with the body when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text()))
    }
}

/// Reads one final response (interim 1xx responses are skipped); None at
/// EOF before its first byte. Panics on a malformed response or a timeout.
pub fn read_http_response(r: &mut impl BufRead) -> Option<HttpResponse> {
    loop {
        let mut line = String::new();
        match r.read_line(&mut line) {
            Ok(0) => return None,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
            Err(e) => panic!("reading a status line: {e}"),
        }
        let status_line = line.trim_end_matches(['\r', '\n']);
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default().to_string();
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("malformed status line {status_line:?}"));
        assert!(version.starts_with("HTTP/1."), "status line {status_line:?}");
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            let n = r.read_line(&mut h).expect("reading a header line");
            assert!(n > 0, "EOF inside the response head");
            let h = h.trim_end_matches(['\r', '\n']);
            if h.is_empty() {
                break;
            }
            let (k, v) = h
                .split_once(':')
                .unwrap_or_else(|| panic!("malformed header line {h:?}"));
            headers.push((k.to_string(), v.trim().to_string()));
        }
        let mut resp = HttpResponse {
            version,
            status,
            headers,
            body: Vec::new(),
        };
        if (100..200).contains(&status) {
            continue;
        }
        let len: usize = resp
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no Content-Length in {resp:?}"));
        resp.body = vec![0; len];
        r.read_exact(&mut resp.body).expect("reading a response body");
        return Some(resp);
    }
}

/// A raw HTTP connection over `S` (TCP unless said otherwise).
pub struct HttpConn<S: Read + Write = TcpStream> {
    reader: BufReader<S>,
}

impl HttpConn<TcpStream> {
    /// A connection with a 20 s read timeout and no Nagle delay.
    pub fn connect(addr: SocketAddr) -> HttpConn {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        HttpConn::over(stream)
    }

    /// The socket.
    pub fn stream(&self) -> &TcpStream {
        self.reader.get_ref()
    }

    pub fn set_read_timeout(&self, t: Duration) {
        self.stream().set_read_timeout(Some(t)).expect("timeout");
    }
}

impl<S: Read + Write> HttpConn<S> {
    /// A connection over an established stream (a TLS stream for HTTPS).
    pub fn over(stream: S) -> HttpConn<S> {
        HttpConn {
            reader: BufReader::new(stream),
        }
    }

    /// The stream.
    pub fn get_ref(&self) -> &S {
        self.reader.get_ref()
    }

    pub fn get_mut(&mut self) -> &mut S {
        self.reader.get_mut()
    }

    /// Writes `bytes` in one write and flushes them.
    pub fn send(&mut self, bytes: impl AsRef<[u8]>) {
        let s = self.reader.get_mut();
        s.write_all(bytes.as_ref()).expect("write");
        s.flush().expect("flush");
    }

    /// The next response; None at EOF.
    pub fn next(&mut self) -> Option<HttpResponse> {
        read_http_response(&mut self.reader)
    }

    /// The next response, which must come.
    pub fn response(&mut self) -> HttpResponse {
        self.next().expect("a response, not EOF")
    }

    /// Sends one request and reads its response.
    pub fn ask(&mut self, request: impl AsRef<[u8]>) -> HttpResponse {
        self.send(request);
        self.response()
    }

    /// Reads until the end of the stream; everything after the last
    /// response.
    pub fn read_rest(&mut self) -> std::io::Result<Vec<u8>> {
        let mut rest = Vec::new();
        self.reader.read_to_end(&mut rest)?;
        Ok(rest)
    }

    /// Whether the daemon closed the connection: EOF (or a reset) with no
    /// further byte, within the read timeout. Panics on extra bytes.
    pub fn closed(&mut self) -> bool {
        use std::io::ErrorKind::{ConnectionReset, TimedOut, WouldBlock};
        match self.read_rest() {
            Ok(rest) => {
                let rest = String::from_utf8_lossy(&rest);
                assert!(rest.is_empty(), "bytes after the last response: {rest:?}");
                true
            }
            Err(e) if e.kind() == ConnectionReset => true,
            Err(e) if matches!(e.kind(), WouldBlock | TimedOut) => false,
            Err(e) => panic!("reading after the last response: {e}"),
        }
    }
}
