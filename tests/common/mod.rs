//! Test harness: starts the real taskd binary on free loopback ports with a
//! temporary configuration, and stops it when the handle is dropped, also
//! when the test fails.

#![allow(dead_code)]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_taskd");

pub struct Daemon {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub tcp: SocketAddr,
    pub udp: SocketAddr,
    pub config: PathBuf,
}

/// A port free for both TCP and UDP on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    for _ in 0..100 {
        let t = TcpListener::bind("127.0.0.1:0").expect("bind a probe port");
        let port = t.local_addr().expect("probe address").port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port found");
}

/// How to start taskd: the configuration `make(port)` for a free port, and
/// what else a test needs around the daemon. `Launch::start` is the one
/// place that spawns it and waits for its port; every `Daemon::start*` is a
/// thin wrapper of it.
pub struct Launch<'a> {
    make: Box<dyn Fn(u16) -> String + 'a>,
    env: Vec<(String, String)>,
    files: Vec<(String, String)>,
    config_dir: Option<String>,
    pre_exec: Option<Arc<dyn Fn() -> io::Result<()> + Send + Sync>>,
    note: String,
}

impl<'a> Launch<'a> {
    /// taskd with the configuration `make(port)` in `taskd.toml` of a fresh
    /// temporary folder, which is also its working directory; `RUST_LOG=info`
    /// and stderr to `stderr.log` there.
    pub fn new(make: impl Fn(u16) -> String + 'a) -> Launch<'a> {
        Launch {
            make: Box::new(make),
            env: Vec::new(),
            files: Vec::new(),
            config_dir: None,
            pre_exec: None,
            note: String::new(),
        }
    }

    /// Extra environment variables for the daemon (set after `RUST_LOG`,
    /// so they may override it).
    pub fn env(mut self, vars: &[(&str, &str)]) -> Self {
        self.env
            .extend(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self
    }

    /// Files (paths relative to the config file's folder) written before
    /// the daemon starts.
    pub fn files(mut self, files: &[(&str, String)]) -> Self {
        self.files
            .extend(files.iter().map(|(name, text)| (name.to_string(), text.clone())));
        self
    }

    /// Puts the config file and the `files` in the subfolder `sub` of the
    /// daemon's folder; the working directory stays the daemon's folder.
    pub fn config_in(mut self, sub: &str) -> Self {
        self.config_dir = Some(sub.to_string());
        self
    }

    /// Runs `hook` in the forked child before it execs taskd.
    ///
    /// # Safety
    ///
    /// As for `std::os::unix::process::CommandExt::pre_exec`: `hook` runs
    /// between fork and exec and must do only what is sound there (in
    /// general, async-signal-safe calls, no allocation, no lock).
    pub unsafe fn pre_exec(mut self, hook: impl Fn() -> io::Result<()> + Send + Sync + 'static) -> Self {
        self.pre_exec = Some(Arc::new(hook));
        self
    }

    /// Words added to the panic message when the daemon does not start.
    pub fn note(mut self, what: &str) -> Self {
        self.note = format!(" {what}");
        self
    }

    /// Starts taskd and waits until its port takes connections, retrying
    /// on another port if the chosen one was taken meanwhile.
    pub fn start(self) -> Daemon {
        let mut last = String::new();
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("temporary folder");
            let config_dir = match &self.config_dir {
                Some(sub) => dir.path().join(sub),
                None => dir.path().to_path_buf(),
            };
            for (name, text) in &self.files {
                let path = config_dir.join(name);
                std::fs::create_dir_all(path.parent().expect("a parent")).expect("create folders");
                std::fs::write(&path, text).expect("write a file");
            }
            std::fs::create_dir_all(&config_dir).expect("create the config folder");
            let port = free_port();
            let config = config_dir.join("taskd.toml");
            std::fs::write(&config, (self.make)(port)).expect("write config");
            let mut cmd = Command::new(BIN);
            cmd.arg("--config")
                .arg(&config)
                .current_dir(dir.path())
                .env("RUST_LOG", "info")
                .envs(self.env.iter().map(|(k, v)| (k, v)))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::from(
                    std::fs::File::create(dir.path().join("stderr.log")).expect("stderr log"),
                ));
            if let Some(hook) = &self.pre_exec {
                let hook = Arc::clone(hook);
                // SAFETY: the caller of `Launch::pre_exec` vouched that the
                // hook is sound between fork and exec; calling it through
                // the Arc neither allocates nor locks.
                unsafe {
                    cmd.pre_exec(move || hook());
                }
            }
            let mut child = cmd.spawn().expect("start taskd");
            let tcp: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(status)) = child.try_wait() {
                    last = format!(
                        "taskd exited with {status}: {}",
                        std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default()
                    );
                    break;
                }
                if TcpStream::connect_timeout(&tcp, Duration::from_millis(200)).is_ok() {
                    return Daemon {
                        child,
                        dir,
                        port,
                        tcp,
                        udp: tcp,
                        config,
                    };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("taskd did not start{}: {last}", self.note);
    }
}

impl Daemon {
    /// Starts taskd with TCP and UDP listeners on one free port and `extra`
    /// appended to the configuration.
    pub fn start(extra: &str) -> Daemon {
        Launch::new(|port| svc_config(port, extra)).start()
    }

    /// Starts taskd with the configuration `make(port)`, retrying on
    /// another port if the chosen one was taken meanwhile.
    pub fn start_with(make: impl Fn(u16) -> String) -> Daemon {
        Launch::new(make).start()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// A connected client with read timeouts, so a missing reply fails
    /// the test instead of hanging it.
    pub fn connect(&self) -> Client {
        Client::connect(self.tcp)
    }

    /// Sends `lines` on one connection, half-closes, and returns every
    /// reply line until the daemon closes.
    pub fn session(&self, lines: &[&str]) -> Vec<String> {
        let mut c = self.connect();
        for l in lines {
            c.send(l);
        }
        c.finish()
    }

    /// One UDP request, one reply.
    pub fn udp(&self, line: &str) -> String {
        let s = UdpSocket::bind("127.0.0.1:0").expect("udp client");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        s.send_to(format!("{line}\n").as_bytes(), self.udp).expect("send");
        let mut buf = vec![0; 65536];
        let n = s.recv(&mut buf).expect("udp reply");
        String::from_utf8_lossy(&buf[..n])
            .trim_end_matches('\n')
            .to_string()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Client {
    pub stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let reader = BufReader::new(stream.try_clone().expect("clone"));
        Client { stream, reader }
    }

    pub fn send(&mut self, line: &str) {
        // One write per line: two small writes would wait on Nagle and the
        // peer's delayed ACK.
        self.stream
            .write_all(format!("{line}\n").as_bytes())
            .expect("write");
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// The next reply line, without its newline; None at EOF.
    pub fn line(&mut self) -> Option<String> {
        let mut s = String::new();
        match self.reader.read_line(&mut s) {
            Ok(0) => None,
            Ok(_) => Some(s.trim_end_matches('\n').to_string()),
            Err(e) => panic!("reading a reply: {e}"),
        }
    }

    pub fn ask(&mut self, line: &str) -> String {
        self.send(line);
        self.line().expect("a reply")
    }

    /// Half-closes and reads every remaining reply.
    pub fn finish(mut self) -> Vec<String> {
        self.stream.shutdown(std::net::Shutdown::Write).expect("shutdown");
        let mut rest = String::new();
        self.reader.read_to_string(&mut rest).expect("read replies");
        rest.lines().map(str::to_string).collect()
    }
}

// ---- service helpers
// Signals, exit, `info`, files and extra environment for the service tests
// (tests/signals.rs, tests/notify.rs, tests/files.rs).

/// The configuration `Daemon::start` writes: TCP and UDP on `port`, then `extra`.
pub fn svc_config(port: u16, extra: &str) -> String {
    format!(
        "[[listener]]\nproto = \"tcp\"\naddress = \"127.0.0.1:{port}\"\n\n\
         [[listener]]\nproto = \"udp\"\naddress = \"127.0.0.1:{port}\"\n\n{extra}\n"
    )
}

/// Polls `f` every 20 ms until it is true or `timeout` has passed.
pub fn svc_wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Parses an `info` reply (`OK key=value ...`) into its figures.
pub fn svc_parse_info(reply: &str) -> std::collections::HashMap<String, String> {
    let body = reply
        .strip_prefix("OK ")
        .unwrap_or_else(|| panic!("info failed: {reply:?}"));
    body.split(' ')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl Daemon {
    /// Like `start`, with extra environment variables for the daemon.
    pub fn start_env(extra: &str, env: &[(&str, &str)]) -> Daemon {
        Launch::new(|port| svc_config(port, extra)).env(env).start()
    }

    /// Like `start_with`, with extra environment variables for the daemon;
    /// retries on another port if the chosen one was taken meanwhile.
    pub fn start_with_env(make: impl Fn(u16) -> String, env: &[(&str, &str)]) -> Daemon {
        Launch::new(make).env(env).start()
    }

    /// Sends `sig` (libc::SIGTERM, SIGHUP, ...) to the daemon.
    pub fn send_signal(&self, sig: i32) {
        // SAFETY: kill(2) only sends a signal to the pid of our own child,
        // which is not reaped yet (a reaped pid is waited for only in
        // `wait_exit` and on drop), so it cannot name another process.
        let rc = unsafe { libc::kill(self.child.id() as i32, sig) };
        assert_eq!(rc, 0, "kill({}, {sig}) failed", self.child.id());
    }

    /// Waits at most `timeout` for the daemon to exit; None if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The figures of `info`, asked on a new connection.
    pub fn info_map(&self) -> std::collections::HashMap<String, String> {
        let mut c = self.connect();
        svc_parse_info(&c.ask("info"))
    }

    /// A file in the daemon's folder (its cwd and config folder).
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Rewrites the configuration file (for SIGHUP tests).
    pub fn rewrite_config(&self, text: &str) {
        std::fs::write(&self.config, text).expect("rewrite config");
    }
}

// ---- http helpers
// HTTP listeners and raw HTTP/1.1 over a TcpStream for tests/http.rs:
// requests are written as bytes, responses read back framed by their
// Content-Length.

/// The configuration of one HTTP listener on `port`, then `extra`.
pub fn http_config(port: u16, extra: &str) -> String {
    format!("[[listener]]\nproto = \"http\"\naddress = \"127.0.0.1:{port}\"\n\n{extra}\n")
}

impl Daemon {
    /// Starts taskd with one HTTP listener on a free port and `extra`
    /// appended to the configuration.
    pub fn start_http(extra: &str) -> Daemon {
        Daemon::start_with(|port| http_config(port, extra))
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// A raw HTTP connection to the daemon's port.
    pub fn http(&self) -> HttpConn {
        HttpConn::connect(self.tcp)
    }
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

/// A raw HTTP connection with read timeouts.
pub struct HttpConn {
    pub stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl HttpConn {
    pub fn connect(addr: SocketAddr) -> HttpConn {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        let reader = BufReader::new(stream.try_clone().expect("clone"));
        HttpConn { stream, reader }
    }

    /// Writes `bytes` in one write.
    pub fn send(&mut self, bytes: impl AsRef<[u8]>) {
        self.stream.write_all(bytes.as_ref()).expect("write");
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

    /// Whether the daemon closed the connection: EOF (or a reset) with no
    /// further byte, within the read timeout. Panics on extra bytes.
    pub fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        use std::io::ErrorKind::{ConnectionReset, TimedOut, WouldBlock};
        match self.reader.read_to_end(&mut rest) {
            Ok(_) => {
                let rest = String::from_utf8_lossy(&rest);
                assert!(rest.is_empty(), "bytes after the last response: {rest:?}");
                true
            }
            Err(e) if e.kind() == ConnectionReset => true,
            Err(e) if matches!(e.kind(), WouldBlock | TimedOut) => false,
            Err(e) => panic!("reading after the last response: {e}"),
        }
    }

    pub fn set_read_timeout(&self, t: Duration) {
        self.stream.set_read_timeout(Some(t)).expect("timeout");
    }
}

// ---- abuse helpers
// Figures of the running daemon read from /proc, for the hostile-client and
// soak tests (tests/abuse.rs, tests/soak.rs).

/// Resident memory of process `pid` in KiB (VmRSS of /proc/<pid>/status).
pub fn abuse_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/<pid>/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

/// CPU time process `pid` has used so far, user plus system, in seconds
/// (utime and stime, fields 14 and 15 of /proc/<pid>/stat).
pub fn abuse_cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/<pid>/stat");
    // The command name, in parentheses, may hold spaces: count the fields
    // after its closing parenthesis, which start at field 3.
    let rest = &stat[stat.rfind(')').expect("comm in /proc/<pid>/stat") + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> u64 { fields[i - 3].parse().expect("a tick count") };
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (ticks(14) + ticks(15)) as f64 / hz.max(1) as f64
}

/// xorshift64*: reproducible pseudo-random numbers without a dependency
/// (random garbage in tests/abuse.rs, the request mix in tests/soak.rs).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

// ---- case files
// The `REQUEST <tab> => <tab> REPLY` files of tests/cases (line-protocol.txt,
// the product contract's examples, for tests/cases.rs; bad-inputs.txt, the
// hostile-input corpus, for tests/abuse.rs) and how a reply is compared with
// what they expect.

/// One case of a case file.
pub struct Case {
    /// The case file's name, for messages.
    pub file: String,
    /// Line number in the case file, for messages.
    pub line: usize,
    /// The request as sent, its escapes decoded.
    pub request: Vec<u8>,
    pub expected: String,
}

impl Case {
    /// `file:line "request"`, for messages.
    pub fn shown(&self) -> String {
        format!(
            "{}:{} {:?}",
            self.file,
            self.line,
            String::from_utf8_lossy(&self.request)
        )
    }
}

/// Decodes the escapes of a case file's requests: `\t`, `\r`, `\\` and
/// `\xHH`; any other backslash stands for itself.
fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() {
            let simple = match b[i + 1] {
                b't' => Some(b'\t'),
                b'r' => Some(b'\r'),
                b'\\' => Some(b'\\'),
                _ => None,
            };
            if let Some(c) = simple {
                out.push(c);
                i += 2;
                continue;
            }
            if b[i + 1] == b'x'
                && let Some(hex) = s.get(i + 2..i + 4)
                && let Ok(v) = u8::from_str_radix(hex, 16)
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// The cases of the case file at `path`.
pub fn read_cases(path: &str) -> Vec<Case> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let name = std::path::Path::new(path)
        .file_name()
        .map_or(path.into(), |n| n.to_string_lossy());
    parse_cases(&name, &text)
}

/// The cases of `text`, the case file `file`. A case is any line with a
/// tab-separated `=>`, also one whose request starts with `#id`; other lines
/// are comments (`#`) or blank.
pub fn parse_cases(file: &str, text: &str) -> Vec<Case> {
    text.lines()
        .enumerate()
        .filter_map(|(i, l)| match l.split_once("\t=>\t") {
            Some(pair) => Some((i, pair)),
            None => {
                assert!(
                    l.starts_with('#') || l.trim().is_empty(),
                    "{file}:{}: neither a case nor a comment: {l:?}",
                    i + 1
                );
                None
            }
        })
        .map(|(i, (req, exp))| {
            let request = unescape(req);
            assert!(
                !request.contains(&b'\n'),
                "{file}:{}: a request is one line",
                i + 1
            );
            Case {
                file: file.to_string(),
                line: i + 1,
                request,
                expected: exp.to_string(),
            }
        })
        .collect()
}

/// Compares JSON values, where the expected string "*" matches any string
/// and numbers match by value and by spelling.
fn json_matches(expected: &serde_json::Value, got: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (expected, got) {
        (Value::String(e), Value::String(_)) if e == "*" => true,
        (Value::Object(e), Value::Object(g)) => {
            e.len() == g.len()
                && e.iter()
                    .all(|(k, v)| g.get(k).is_some_and(|gv| json_matches(v, gv)))
        }
        (Value::Number(e), Value::Number(g)) => e.as_f64() == g.as_f64() && e.to_string() == g.to_string(),
        _ => expected == got,
    }
}

/// Whether a reply line matches a case's expectation: JSON as JSON, text
/// exactly, or up to a free-text message written `*`.
pub fn reply_matches(expected: &str, got: &str) -> bool {
    if expected.starts_with('{') {
        let e: serde_json::Value = serde_json::from_str(expected).expect("expected JSON");
        return serde_json::from_str(got).is_ok_and(|g| json_matches(&e, &g));
    }
    match expected.strip_suffix(" *") {
        // Only the code is fixed; the message is free text.
        Some(prefix) => got.starts_with(&format!("{prefix} ")) && got.len() > prefix.len() + 1,
        None => got == expected,
    }
}
