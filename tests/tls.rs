//! TLS and HTTPS listeners against the real binary (SPEC section 2a): the
//! line protocol and the HTTP API inside TLS, mutual TLS and the user a
//! client certificate stands for, failed handshakes (no certificate, a
//! foreign CA, plain text, a silent client), certificate errors at start,
//! and certificates reloaded on SIGHUP.
//!
//! The PKI is made on the fly with rcgen; the client is rustls over a std
//! TcpStream. Certificates are named by paths relative to the configuration
//! file, which does not sit in the daemon's working directory, so they are
//! resolved against the config file's folder as the spec says.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{
    BIN, Daemon, HttpResponse, Launch, free_port, http_get, http_post, read_http_response, svc_parse_info,
};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use serde_json::{Value, json};

/// Read and write timeout of every client socket: a missing reply fails
/// the test instead of hanging it.
const IO_TIMEOUT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------- PKI

/// A certificate authority made for one test.
struct Ca {
    cert: rcgen::Certificate,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate and its private key.
struct Leaf {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        let cert = p.self_signed(&key).expect("CA certificate");
        Ca {
            cert,
            issuer: Issuer::new(p, key),
        }
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }

    fn der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    fn sign(&self, p: &CertificateParams) -> Leaf {
        let key = KeyPair::generate().expect("leaf key");
        let cert = p.signed_by(&key, &self.issuer).expect("sign a certificate");
        Leaf { cert, key }
    }

    /// The daemon's certificate: `localhost` and 127.0.0.1, CN `cn`.
    fn server(&self, cn: &str) -> Leaf {
        let mut p =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).expect("params");
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(&p)
    }

    /// A client certificate with these DNS SANs and, if given, a CN.
    fn client(&self, dns: &[&str], cn: Option<&str>) -> Leaf {
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.subject_alt_names = dns
            .iter()
            .map(|d| SanType::DnsName((*d).try_into().expect("a DNS name")))
            .collect();
        if let Some(cn) = cn {
            p.distinguished_name.push(DnType::CommonName, cn);
        }
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(&p)
    }
}

impl Leaf {
    fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    fn der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.serialize_der()))
    }
}

// ---------------------------------------------------------------- daemon

/// Starts taskd with `files` (paths relative to the config file's folder,
/// `etc/` inside the daemon's folder) written before it starts, and the
/// configuration `make(port)` in `etc/taskd.toml`. The working directory is
/// the daemon's folder, not `etc/`: relative certificate paths must be
/// resolved against the config file's folder.
fn start_with_files(files: &[(&str, String)], make: impl Fn(u16) -> String) -> Daemon {
    Launch::new(make).config_in("etc").files(files).start()
}

/// One `tls`/`https` listener on `port` with `tls/server.pem` and
/// `tls/server.key`, and `tls/clients-ca.pem` when `mutual`.
fn tls_listener(proto: &str, port: u16, mutual: bool) -> String {
    let ca = if mutual {
        "client_ca = \"tls/clients-ca.pem\"\n"
    } else {
        ""
    };
    format!(
        "[[listener]]\nproto = \"{proto}\"\naddress = \"127.0.0.1:{port}\"\n\
         cert = \"tls/server.pem\"\nkey = \"./tls/server.key\"\n{ca}\n"
    )
}

/// The files of a listener made by `tls_listener`.
fn server_files(server: &Leaf, clients_ca: Option<&Ca>) -> Vec<(&'static str, String)> {
    let mut files = vec![
        ("tls/server.pem", server.cert_pem()),
        ("tls/server.key", server.key_pem()),
    ];
    if let Some(ca) = clients_ca {
        files.push(("tls/clients-ca.pem", ca.pem()));
    }
    files
}

/// A daemon with one `proto` listener (tls or https) on its port,
/// presenting a certificate of `ca`, and asking for client certificates of
/// `clients_ca` if given.
fn start_tls(proto: &str, ca: &Ca, clients_ca: Option<&Ca>) -> Daemon {
    let server = ca.server("taskd test server");
    let mutual = clients_ca.is_some();
    start_with_files(&server_files(&server, clients_ca), |port| {
        tls_listener(proto, port, mutual)
    })
}

/// A daemon that exits at once: its exit code and stderr.
fn run_to_exit(args: &[&str], config: &Path) -> (Option<i32>, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(config)
        .current_dir(config.parent().expect("config folder"))
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start taskd");
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "taskd {args:?} did not exit; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

// ---------------------------------------------------------------- clients

/// A rustls client configuration trusting `roots`, presenting `cert` if
/// given, with these ALPN protocols and TLS versions (all when empty).
fn client_config_with(
    roots: &[CertificateDer<'static>],
    cert: Option<&Leaf>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let mut store = RootCertStore::empty();
    for r in roots {
        store.add(r.clone()).expect("a root certificate");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider);
    let builder = if versions.is_empty() {
        builder.with_safe_default_protocol_versions()
    } else {
        builder.with_protocol_versions(versions)
    }
    .expect("protocol versions")
    .with_root_certificates(store);
    let config = match cert {
        Some(leaf) => builder
            .with_client_auth_cert(vec![leaf.der()], leaf.key_der())
            .expect("client certificate"),
        None => builder.with_no_client_auth(),
    };
    Arc::new(config)
}

fn client_config(roots: &[CertificateDer<'static>], cert: Option<&Leaf>) -> Arc<ClientConfig> {
    client_config_with(roots, cert, &[])
}

type TlsStream = StreamOwned<ClientConnection, TcpStream>;

/// A TLS connection to `addr` (handshake not yet done: rustls does it on
/// the first read or write).
fn tls_connect(addr: SocketAddr, config: Arc<ClientConfig>) -> TlsStream {
    let sock = TcpStream::connect(addr).expect("connect");
    sock.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    sock.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
    sock.set_nodelay(true).expect("nodelay");
    let name = ServerName::try_from("localhost").expect("server name");
    let conn = ClientConnection::new(config, name).expect("client connection");
    StreamOwned::new(conn, sock)
}

/// A line-protocol client over TLS.
struct LineTls {
    r: BufReader<TlsStream>,
}

impl LineTls {
    fn connect(addr: SocketAddr, config: Arc<ClientConfig>) -> LineTls {
        LineTls {
            r: BufReader::new(tls_connect(addr, config)),
        }
    }

    fn tls(&mut self) -> &mut TlsStream {
        self.r.get_mut()
    }

    /// Writes `text` as it is and flushes it to the socket.
    fn write(&mut self, text: &str) -> std::io::Result<()> {
        let s = self.tls();
        s.write_all(text.as_bytes())?;
        s.flush()
    }

    /// The next line without its newline; Ok(None) at a clean EOF.
    fn try_line(&mut self) -> std::io::Result<Option<String>> {
        let mut s = String::new();
        match self.r.read_line(&mut s)? {
            0 => Ok(None),
            _ => Ok(Some(s.trim_end_matches('\n').to_string())),
        }
    }

    fn line(&mut self) -> String {
        self.try_line()
            .expect("reading a reply")
            .expect("a reply, not EOF")
    }

    fn ask(&mut self, line: &str) -> String {
        self.write(&format!("{line}\n")).expect("write a request");
        self.line()
    }

    fn info(&mut self) -> std::collections::HashMap<String, String> {
        svc_parse_info(&self.ask("info"))
    }

    /// The server's certificate (after the handshake).
    fn server_cert(&mut self) -> CertificateDer<'static> {
        self.tls()
            .conn
            .peer_certificates()
            .and_then(|c| c.first())
            .expect("a server certificate")
            .clone()
            .into_owned()
    }
}

fn tls_failures(info: &std::collections::HashMap<String, String>) -> u64 {
    info.get("tls_failures")
        .unwrap_or_else(|| panic!("no tls_failures in info: {info:?}"))
        .parse()
        .expect("tls_failures is a number")
}

/// The request counts of a `users` reply, by name.
fn user_counts(reply: &str) -> std::collections::HashMap<String, u64> {
    let body = reply
        .strip_prefix("OK ")
        .unwrap_or_else(|| panic!("users failed: {reply:?}"));
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("users is not JSON ({e}): {body}"));
    v.as_array()
        .expect("an array")
        .iter()
        .map(|u| {
            (
                u["username"].as_str().expect("username").to_string(),
                u["request_count"].as_u64().expect("request_count"),
            )
        })
        .collect()
}

/// What a client whose handshake the daemon refuses sees: writes a request
/// and reads; Err with what happened, or Ok with what it was (wrongly) sent.
fn refused_exchange(addr: SocketAddr, config: Arc<ClientConfig>) -> Result<String, String> {
    let mut c = LineTls::connect(addr, config);
    if let Err(e) = c.write("ping\n") {
        return Err(format!("write: {e}"));
    }
    match c.try_line() {
        Ok(Some(line)) => Ok(line),
        Ok(None) => Ok("<clean EOF>".to_string()),
        Err(e) => Err(format!("read: {e}")),
    }
}

/// Reads a raw socket until EOF or a reset; everything read. Panics on a
/// timeout (the daemon did not close the connection).
fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return got,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("the daemon did not close the connection: {e} (read {got:?})"),
        }
    }
}

// ---------------------------------------------------------------- line protocol

#[test]
fn pipelined_requests_over_tls_are_answered_in_order_then_eof_after_close_notify() {
    let ca = Ca::new("test CA");
    let d = start_tls("tls", &ca, None);
    let mut c = LineTls::connect(d.tcp, client_config(&[ca.der()], None));
    // Everything in one write: the replies must come back in request order.
    c.write(
        "max 1 5 3\n#7 stats 7 8 54 89\nping\n\
         {\"id\": 9, \"op\": \"sum\", \"values\": [1, 2, \"3\"]}\n\n#last mean 1 2\n",
    )
    .expect("write the requests");
    assert_eq!(c.line(), "OK 5");
    assert_eq!(c.line(), "#7 OK count=4 min=7 max=89 mean=39.5 median=31");
    assert_eq!(c.line(), "OK pong");
    let j: Value = serde_json::from_str(&c.line()).expect("a JSON reply");
    assert_eq!(j, json!({"id": 9, "ok": true, "result": 6}));
    assert_eq!(c.line(), "#last OK 1.5");

    // Half-close with close_notify; requests still pending (and an
    // unterminated last line) are answered, then the connection ends.
    c.write("#a max 4 2\n#b min 4 2\n#c sum 4 2").expect("write");
    c.tls().conn.send_close_notify();
    c.tls().flush().expect("send close_notify");
    assert_eq!(c.line(), "#a OK 4");
    assert_eq!(c.line(), "#b OK 2");
    assert_eq!(c.line(), "#c OK 6");
    // Then the connection ends (whether with the daemon's own close_notify
    // is the next test's matter).
    match c.try_line() {
        Ok(None) => {}
        Ok(Some(l)) => panic!("a line after the last reply: {l:?}"),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof, "not an EOF: {e}"),
    }
}

/// A client that half-closes the TCP connection without close_notify still
/// gets its replies: the daemon takes the bare FIN as the client's EOF.
#[test]
fn a_tcp_half_close_without_close_notify_still_gets_the_replies() {
    let ca = Ca::new("test CA");
    let d = start_tls("tls", &ca, None);
    let mut c = LineTls::connect(d.tcp, client_config(&[ca.der()], None));
    assert_eq!(c.ask("ping"), "OK pong");
    c.write("#1 max 1 2\n#2 pi 1000 2\n#3 min 1 2").expect("write");
    c.tls()
        .sock
        .shutdown(std::net::Shutdown::Write)
        .expect("shutdown");
    assert_eq!(c.line(), "#1 OK 2");
    let pi = c.line();
    assert!(
        pi.starts_with("#2 OK ") && pi.ends_with(" samples=1000 chunks=2"),
        "{pi}"
    );
    assert_eq!(c.line(), "#3 OK 1");
    match c.try_line() {
        Ok(None) => {}
        Ok(Some(l)) => panic!("a line after the last reply: {l:?}"),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof, "not an EOF: {e}"),
    }
}

/// RFC 8446 section 6.1: each party sends close_notify before closing its
/// write side. After the client's close_notify the daemon answers what it
/// owes and closes with its own, so the client sees a clean end, not a
/// possible truncation (`openssl s_client` and rustls report one).
#[test]
fn the_daemon_closes_with_close_notify_after_the_clients() {
    let ca = Ca::new("test CA");
    let d = start_tls("tls", &ca, None);
    let mut c = LineTls::connect(d.tcp, client_config(&[ca.der()], None));
    assert_eq!(c.ask("ping"), "OK pong");
    c.write("#x sum 1 2\n").expect("write");
    c.tls().conn.send_close_notify();
    c.tls().flush().expect("send close_notify");
    assert_eq!(c.line(), "#x OK 3");
    match c.try_line() {
        Ok(None) => {}
        Ok(Some(l)) => panic!("a line after the last reply: {l:?}"),
        Err(e) => panic!("the connection ended without the daemon's close_notify: {e}"),
    }
}

#[test]
fn quit_over_tls_replies_bye_then_closes() {
    let ca = Ca::new("test CA");
    let d = start_tls("tls", &ca, None);
    let mut c = LineTls::connect(d.tcp, client_config(&[ca.der()], None));
    c.write("help\n#1 max 2 9\nquit\nping\n").expect("write");
    let help = c.line();
    assert!(help.starts_with("OK ") && help.contains("max"), "{help}");
    assert_eq!(c.line(), "#1 OK 9");
    assert_eq!(c.line(), "OK bye");
    // The line after quit is not read; the connection ends (lingering
    // close: the daemon sends close_notify and shuts down its write side).
    match c.try_line() {
        Ok(None) => {}
        Ok(Some(l)) => panic!("a reply after bye: {l:?}"),
        Err(e) => panic!("after quit the connection ended without close_notify: {e}"),
    }
}

#[test]
fn tls12_and_tls13_clients_are_both_served() {
    let ca = Ca::new("test CA");
    let d = start_tls("tls", &ca, None);
    for (version, want) in [
        (&rustls::version::TLS12, rustls::ProtocolVersion::TLSv1_2),
        (&rustls::version::TLS13, rustls::ProtocolVersion::TLSv1_3),
    ] {
        let mut c = LineTls::connect(d.tcp, client_config_with(&[ca.der()], None, &[version]));
        assert_eq!(c.ask("max 3 4"), "OK 4");
        assert_eq!(c.tls().conn.protocol_version(), Some(want));
    }
}

/// A slow reader of a long pipelined session: more than 1 MiB of replies
/// (past rustls' own buffer limit in the daemon) come back complete and in
/// order while the client keeps writing.
#[test]
fn a_long_pipelined_session_over_tls_keeps_order_through_backpressure() {
    const N: usize = 30_000;
    let ca = Ca::new("test CA");
    let d = start_tls("tls", &ca, None);
    let mut sock = TcpStream::connect(d.tcp).expect("connect");
    sock.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    sock.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
    let name = ServerName::try_from("localhost").expect("server name");
    let mut conn = ClientConnection::new(client_config(&[ca.der()], None), name).expect("client");
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).expect("handshake");
    }
    // rustls does no I/O itself: one thread writes the requests' records,
    // this one reads the replies', sharing the session under a lock that is
    // never held across a socket call.
    let conn = Arc::new(Mutex::new(conn));
    let writer = {
        let conn = Arc::clone(&conn);
        let mut sock = sock.try_clone().expect("clone");
        std::thread::spawn(move || {
            let mut text = String::new();
            for i in 0..N {
                text.push_str(&format!("#{i} stats {i} 1\n"));
            }
            for chunk in text.as_bytes().chunks(8 * 1024) {
                let mut rest = chunk;
                while !rest.is_empty() {
                    let mut records = Vec::new();
                    {
                        let mut c = conn.lock().expect("lock");
                        let n = c.writer().write(rest).expect("plaintext in");
                        rest = &rest[n..];
                        while c.wants_write() {
                            c.write_tls(&mut records).expect("records out");
                        }
                    }
                    sock.write_all(&records).expect("write records");
                }
            }
            let mut records = Vec::new();
            {
                let mut c = conn.lock().expect("lock");
                c.send_close_notify();
                while c.wants_write() {
                    c.write_tls(&mut records).expect("records out");
                }
            }
            sock.write_all(&records).expect("write close_notify");
        })
    };
    // Let replies pile up in the daemon before reading them.
    std::thread::sleep(Duration::from_millis(300));
    let mut plain = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    'read: loop {
        let n = match sock.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("reading replies ({} bytes so far): {e}", plain.len()),
        };
        let mut c = conn.lock().expect("lock");
        let mut input = &buf[..n];
        while !input.is_empty() {
            c.read_tls(&mut input).expect("records in");
            c.process_new_packets().expect("valid records from the daemon");
            loop {
                let mut chunk = [0u8; 16 * 1024];
                match c.reader().read(&mut chunk) {
                    Ok(0) => break 'read,
                    Ok(k) => plain.extend_from_slice(&chunk[..k]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("plaintext out: {e}"),
                }
            }
        }
    }
    writer.join().expect("writer thread");
    let text = String::from_utf8(plain).expect("UTF-8 replies");
    let lines: Vec<&str> = text.lines().collect();
    assert!(text.len() > 1 << 20, "only {} bytes of replies", text.len());
    assert_eq!(lines.len(), N, "replies: {} of {N}", lines.len());
    for (i, l) in lines.iter().enumerate() {
        let (lo, hi) = if i == 0 { (0, 1) } else { (1, i) };
        let mean = (i as f64 + 1.0) / 2.0;
        let want = format!("#{i} OK count=2 min={lo} max={hi} mean={mean} median={mean}");
        assert_eq!(*l, want, "reply {i}");
    }
}

// ---------------------------------------------------------------- https

/// Reads one HTTP response from a TLS stream.
fn https_response(r: &mut BufReader<TlsStream>) -> HttpResponse {
    read_http_response(r).expect("a response, not EOF")
}

fn https_ask(r: &mut BufReader<TlsStream>, request: &str) -> HttpResponse {
    let s = r.get_mut();
    s.write_all(request.as_bytes()).expect("write a request");
    s.flush().expect("flush");
    https_response(r)
}

#[test]
fn https_serves_the_api_over_one_keep_alive_connection() {
    let ca = Ca::new("test CA");
    let d = start_tls("https", &ca, None);
    let mut config = (*client_config(&[ca.der()], None)).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let mut r = BufReader::new(tls_connect(d.tcp, Arc::new(config)));

    let resp = https_ask(&mut r, &http_get("/v1/max?values=1,2,3"));
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.header("content-type"), Some("application/json"));
    assert_eq!(resp.json(), json!({"ok": true, "result": 3}));
    assert_eq!(r.get_ref().conn.alpn_protocol(), Some(&b"http/1.1"[..]));

    let resp = https_ask(
        &mut r,
        &http_post("/v1/sum", r#"{"id": "s1", "values": [1, 2, 3.5]}"#),
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json(), json!({"id": "s1", "ok": true, "result": 6.5}));

    let resp = https_ask(&mut r, &http_get("/healthz"));
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json(), json!({"status": "ok"}));

    // Pipelined: both requests in one write, answered in order.
    let two = format!("{}{}", http_get("/v1/min?values=4,-2"), http_get("/nowhere"));
    let s = r.get_mut();
    s.write_all(two.as_bytes()).expect("write");
    s.flush().expect("flush");
    let a = https_response(&mut r);
    assert_eq!((a.status, a.json()), (200, json!({"ok": true, "result": -2})));
    let b = https_response(&mut r);
    assert_eq!(b.status, 404, "{}", b.text());
    assert_eq!(b.json()["error"], "not-found");

    // Still the same connection, still usable.
    let resp = https_ask(&mut r, &http_get("/v1/ping"));
    assert_eq!(
        (resp.status, resp.json()),
        (200, json!({"ok": true, "result": "pong"}))
    );

    // `Connection: close`: the response, then a clean TLS end.
    let resp = https_ask(
        &mut r,
        "GET /v1/max?values=7 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(
        (resp.status, resp.json()),
        (200, json!({"ok": true, "result": 7}))
    );
    let mut rest = Vec::new();
    match r.read_to_end(&mut rest) {
        Ok(_) => assert!(rest.is_empty(), "bytes after the last response: {rest:?}"),
        Err(e) => panic!("the connection ended without the daemon's close_notify: {e}"),
    }
}

#[test]
fn https_with_mutual_tls_counts_requests_for_the_certificate_user() {
    let ca = Ca::new("server CA");
    let clients = Ca::new("clients CA");
    let d = start_tls("https", &ca, Some(&clients));
    let client = clients.client(&["client-7"], Some("ignored-cn"));
    let mut r = BufReader::new(tls_connect(d.tcp, client_config(&[ca.der()], Some(&client))));
    let resp = https_ask(&mut r, &http_get("/v1/sum?values=1,2"));
    assert_eq!(
        (resp.status, resp.json()),
        (200, json!({"ok": true, "result": 3}))
    );
    // The certificate is the identity: naming someone else is denied.
    let resp = https_ask(&mut r, &http_get("/v1/sum?values=1,2&username=bob"));
    assert_eq!(resp.status, 403, "{}", resp.text());
    assert_eq!(resp.json()["error"], "denied");
    let resp = https_ask(&mut r, &http_get("/v1/sum?values=1,2&username=client-7"));
    assert_eq!(resp.status, 200, "{}", resp.text());
    let resp = https_ask(&mut r, &http_get("/statistics"));
    assert_eq!(resp.status, 200, "{}", resp.text());
    let mut stats: Vec<(String, u64)> = resp
        .json()
        .as_array()
        .expect("an array")
        .iter()
        .map(|u| {
            (
                u["username"].as_str().expect("username").to_string(),
                u["request_count"].as_u64().expect("request_count"),
            )
        })
        .collect();
    stats.sort();
    assert_eq!(stats, vec![("client-7".to_string(), 2)]);

    // Without a client certificate there is no HTTP at all.
    let mut config = (*client_config(&[ca.der()], None)).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let mut bare = BufReader::new(tls_connect(d.tcp, Arc::new(config)));
    let sent = bare
        .get_mut()
        .write_all(http_get("/healthz").as_bytes())
        .and_then(|_| bare.get_mut().flush());
    if sent.is_ok() {
        let mut line = String::new();
        let got = bare.read_line(&mut line);
        assert!(
            got.is_err(),
            "a client without a certificate read {got:?}: {line:?}"
        );
    }
}

// ---------------------------------------------------------------- mutual TLS

#[test]
fn mutual_tls_attributes_requests_to_the_certificate_and_refuses_others() {
    let ca = Ca::new("server CA");
    let clients = Ca::new("clients CA");
    let d = start_tls("tls", &ca, Some(&clients));
    let roots = [ca.der()];

    // The first DNS SAN names the user, and is the identity: another
    // @user is denied (allow_user_override is off by default).
    let seven = clients.client(&["client-7", "second-name"], Some("cn-ignored"));
    let mut c7 = LineTls::connect(d.tcp, client_config(&roots, Some(&seven)));
    assert_eq!(c7.ask("sum 1 2"), "OK 3");
    let denied = c7.ask("#b @bob sum 1 2");
    assert!(denied.starts_with("#b ERR denied "), "{denied}");
    assert_eq!(c7.ask("@client-7 sum 1 2"), "OK 3");
    let users = user_counts(&c7.ask("users"));
    assert_eq!(
        users.get("client-7"),
        Some(&3),
        "two sums and users itself: {users:?}"
    );
    assert_eq!(users.get("bob"), None, "{users:?}");
    assert!(!users.contains_key("anonymous"), "{users:?}");
    let failures_before = tls_failures(&c7.info());

    // No client certificate: the handshake fails.
    let got = refused_exchange(d.tcp, client_config(&roots, None));
    assert!(got.is_err(), "a client without a certificate was served: {got:?}");
    // A certificate of another CA: refused too.
    let stranger = Ca::new("someone else").client(&["client-7"], None);
    let got = refused_exchange(d.tcp, client_config(&roots, Some(&stranger)));
    assert!(
        got.is_err(),
        "a certificate of a foreign CA was accepted: {got:?}"
    );
    // A self-signed client certificate with the right name: refused.
    let mut p = CertificateParams::new(vec!["client-7".to_string()]).expect("params");
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate().expect("key");
    let selfsigned = Leaf {
        cert: p.self_signed(&key).expect("self-signed"),
        key,
    };
    let got = refused_exchange(d.tcp, client_config(&roots, Some(&selfsigned)));
    assert!(got.is_err(), "a self-signed certificate was accepted: {got:?}");

    // The daemon keeps serving: the old connection and new ones.
    assert_eq!(c7.ask("ping"), "OK pong");
    let info = c7.info();
    assert!(
        tls_failures(&info) >= failures_before + 3,
        "three refused handshakes, tls_failures {} -> {}",
        failures_before,
        tls_failures(&info)
    );
    assert!(tls_failures(&info) >= 1);

    // A certificate with only a CN counts for its CN.
    let alice = clients.client(&[], Some("alice"));
    let mut ca_client = LineTls::connect(d.tcp, client_config(&roots, Some(&alice)));
    assert_eq!(ca_client.ask("max 1 2"), "OK 2");
    // A CN that is not a valid user name counts as anonymous.
    let odd = clients.client(&[], Some("not a user"));
    let mut odd_client = LineTls::connect(d.tcp, client_config(&roots, Some(&odd)));
    assert_eq!(odd_client.ask("min 1 2"), "OK 1");
    // An IP address SAN is skipped for the first DNS name after it.
    let mut p = CertificateParams::new(vec!["10.0.0.9".to_string(), "client-9".to_string()]).expect("params");
    p.distinguished_name.push(DnType::CommonName, "cn-nine");
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let nine = clients.sign(&p);
    let mut nine_client = LineTls::connect(d.tcp, client_config(&roots, Some(&nine)));
    assert_eq!(nine_client.ask("sum 9"), "OK 9");
    let users = user_counts(&ca_client.ask("users"));
    assert_eq!(users.get("client-9"), Some(&1), "{users:?}");
    assert!(!users.contains_key("cn-nine"), "{users:?}");
    assert_eq!(users.get("alice"), Some(&2), "max and users: {users:?}");
    assert_eq!(users.get("anonymous"), Some(&1), "{users:?}");
    assert_eq!(
        users.get("client-7"),
        Some(&6),
        "two sums, users, info, ping, info: {users:?}"
    );
    assert!(!users.contains_key("not a user"), "{users:?}");
}

// ---------------------------------------------------------------- failed handshakes

#[test]
fn plain_text_on_a_tls_port_is_closed_and_counted() {
    let ca = Ca::new("test CA");
    let d = start_tls("tls", &ca, None);
    let config = client_config(&[ca.der()], None);
    let mut good = LineTls::connect(d.tcp, Arc::clone(&config));
    let before = tls_failures(&good.info());

    for _ in 0..3 {
        let mut s = TcpStream::connect(d.tcp).expect("connect");
        s.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        s.write_all(b"ping\n").expect("write");
        let got = read_until_closed(&mut s);
        assert!(
            !String::from_utf8_lossy(&got).contains("pong"),
            "plain text was answered: {got:?}"
        );
    }

    let after = tls_failures(&good.info());
    assert!(after >= before + 3, "tls_failures {before} -> {after}");
    assert_eq!(good.ask("ping"), "OK pong");
    let mut fresh = LineTls::connect(d.tcp, config);
    assert_eq!(fresh.ask("median 1 2 3 4"), "OK 2.5");
    assert!(
        d.stderr().contains("TLS"),
        "the failure is logged: {}",
        d.stderr()
    );
}

/// The spec'd handshake timeout is 10 s: this test waits that long.
#[test]
fn a_silent_client_is_closed_after_the_handshake_timeout() {
    let ca = Ca::new("test CA");
    let d = start_tls("tls", &ca, None);
    let config = client_config(&[ca.der()], None);
    let mut good = LineTls::connect(d.tcp, Arc::clone(&config));
    let before = tls_failures(&good.info());

    let mut silent = TcpStream::connect(d.tcp).expect("connect");
    silent.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    // A client stuck in the middle of its handshake: a ClientHello cut short.
    let mut half = TcpStream::connect(d.tcp).expect("connect");
    half.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    half.write_all(&[0x16, 0x03, 0x01, 0x01, 0x00, 0x01])
        .expect("write");

    // Meanwhile others are served.
    let mut other = LineTls::connect(d.tcp, Arc::clone(&config));
    assert_eq!(other.ask("ping"), "OK pong");

    let got = read_until_closed(&mut silent);
    assert!(got.is_empty() || got[0] == 0x15, "not an alert: {got:?}");
    let got = read_until_closed(&mut half);
    assert!(got.is_empty() || got[0] == 0x15, "not an alert: {got:?}");

    let after = tls_failures(&good.info());
    assert!(
        after >= before + 2,
        "two timed-out handshakes: tls_failures {before} -> {after}"
    );
    assert_eq!(good.ask("ping"), "OK pong");
}

// ---------------------------------------------------------------- bad certificates at start

/// A directory with a TLS listener configuration whose files are `files`
/// (relative to it); the config file's path.
fn config_with(dir: &Path, files: &[(&str, String)], listener: &str) -> PathBuf {
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("create folders");
        std::fs::write(&path, text).expect("write a file");
    }
    let config = dir.join("taskd.toml");
    std::fs::write(&config, listener).expect("write config");
    config
}

#[test]
fn a_missing_certificate_file_is_a_configuration_error() {
    let ca = Ca::new("test CA");
    let server = ca.server("s");
    let dir = tempfile::tempdir().expect("temporary folder");
    let port = free_port();
    let listener = format!(
        "[[listener]]\nproto = \"tls\"\naddress = \"127.0.0.1:{port}\"\n\
         cert = \"tls/missing-cert.pem\"\nkey = \"tls/server.key\"\n"
    );
    let config = config_with(dir.path(), &[("tls/server.key", server.key_pem())], &listener);

    let (code, out) = run_to_exit(&[], &config);
    assert_eq!(code, Some(1), "start: {out}");
    assert!(out.contains("missing-cert.pem"), "the file is named: {out}");

    let (code, out) = run_to_exit(&["--check-config"], &config);
    assert_eq!(code, Some(1), "--check-config: {out}");
    assert!(out.contains("missing-cert.pem"), "the file is named: {out}");
    let (code, out) = run_to_exit(&["--check-config", "--quiet"], &config);
    assert_eq!(code, Some(1), "--check-config --quiet: {out}");

    // The same for a missing client_ca.
    let listener = format!(
        "[[listener]]\nproto = \"https\"\naddress = \"127.0.0.1:{port}\"\n\
         cert = \"tls/server.pem\"\nkey = \"tls/server.key\"\nclient_ca = \"nope-ca.pem\"\n"
    );
    let config = config_with(
        dir.path(),
        &[
            ("tls/server.pem", server.cert_pem()),
            ("tls/server.key", server.key_pem()),
        ],
        &listener,
    );
    let (code, out) = run_to_exit(&["--check-config"], &config);
    assert_eq!(code, Some(1), "--check-config: {out}");
    assert!(out.contains("nope-ca.pem"), "the file is named: {out}");
}

#[test]
fn unusable_certificates_and_keys_are_configuration_errors() {
    let ca = Ca::new("test CA");
    let server = ca.server("s");
    let other = ca.server("other");
    let dir = tempfile::tempdir().expect("temporary folder");
    let port = free_port();
    let listener = format!(
        "[[listener]]\nproto = \"tls\"\naddress = \"127.0.0.1:{port}\"\n\
         cert = \"cert.pem\"\nkey = \"key.pem\"\n"
    );
    let cases: [(&str, String, String, &str); 4] = [
        // A key that is not the certificate's.
        ("mismatched key", server.cert_pem(), other.key_pem(), "cert.pem"),
        // Not PEM at all.
        (
            "garbage cert",
            "not a certificate\n".to_string(),
            server.key_pem(),
            "cert.pem",
        ),
        // A key file holding a certificate.
        ("no key", server.cert_pem(), server.cert_pem(), "key.pem"),
        // Both swapped.
        ("swapped", server.key_pem(), server.cert_pem(), "cert.pem"),
    ];
    for (what, cert, key, named) in cases {
        let config = config_with(dir.path(), &[("cert.pem", cert), ("key.pem", key)], &listener);
        let (code, out) = run_to_exit(&["--check-config", "--quiet"], &config);
        assert_eq!(code, Some(1), "{what}: --check-config: {out}");
        assert!(out.contains(named), "{what}: {named} is named: {out}");
        let (code, out) = run_to_exit(&[], &config);
        assert_eq!(code, Some(1), "{what}: start: {out}");
    }
    // And the good pair passes.
    let config = config_with(
        dir.path(),
        &[("cert.pem", server.cert_pem()), ("key.pem", server.key_pem())],
        &listener,
    );
    let (code, out) = run_to_exit(&["--check-config", "--quiet"], &config);
    assert_eq!(code, Some(0), "good certificate: {out}");
}

// ---------------------------------------------------------------- reload

#[test]
fn sighup_reloads_certificates_and_a_broken_one_keeps_the_old() {
    let ca1 = Ca::new("first CA");
    let ca2 = Ca::new("second CA");
    let first = ca1.server("first");
    let d = start_with_files(&server_files(&first, None), |port| {
        tls_listener("tls", port, false)
    });
    let cert_path = d.dir.path().join("etc/tls/server.pem");
    let key_path = d.dir.path().join("etc/tls/server.key");
    let both = client_config(&[ca1.der(), ca2.der()], None);
    let only1 = client_config(&[ca1.der()], None);
    let only2 = client_config(&[ca2.der()], None);

    let mut kept = LineTls::connect(d.tcp, Arc::clone(&only1));
    assert_eq!(kept.ask("ping"), "OK pong");
    assert_eq!(kept.server_cert(), first.der());

    // A broken certificate: the reload fails, the old one stays.
    std::fs::write(
        &cert_path,
        "-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n",
    )
    .expect("overwrite the certificate");
    d.send_signal(libc::SIGHUP);
    let ok = common::svc_wait_until(Duration::from_secs(10), || {
        LineTls::connect(d.tcp, Arc::clone(&both)).info()["last_reload_ok"] == "false"
    });
    assert!(
        ok,
        "the reload with a broken certificate did not fail: {}",
        d.stderr()
    );
    let mut c = LineTls::connect(d.tcp, Arc::clone(&only1));
    assert_eq!(c.ask("max 1 2"), "OK 2");
    assert_eq!(c.server_cert(), first.der(), "still the old certificate");
    assert_eq!(kept.ask("ping"), "OK pong", "an open connection is untouched");
    assert!(
        d.stderr().contains("server.pem"),
        "the log names the file: {}",
        d.stderr()
    );

    // A valid certificate of another CA: the reload succeeds and new
    // connections get it.
    let second = ca2.server("second");
    std::fs::write(&key_path, second.key_pem()).expect("write the key");
    std::fs::write(&cert_path, second.cert_pem()).expect("write the certificate");
    d.send_signal(libc::SIGHUP);
    let ok = common::svc_wait_until(Duration::from_secs(10), || {
        LineTls::connect(d.tcp, Arc::clone(&both)).info()["last_reload_ok"] == "true"
    });
    assert!(ok, "the reload with a valid certificate failed: {}", d.stderr());
    let mut c = LineTls::connect(d.tcp, Arc::clone(&only2));
    assert_eq!(c.ask("max 1 2"), "OK 2");
    assert_eq!(c.server_cert(), second.der(), "the new certificate");
    let got = refused_exchange(d.tcp, only1);
    assert!(
        got.is_err(),
        "a client trusting only the old CA was served: {got:?}"
    );
    // The connection opened before the reload keeps its session.
    assert_eq!(kept.ask("ping"), "OK pong");
}
