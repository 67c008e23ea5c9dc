//! `--profile`: user-space instructions per request, counted by callgrind
//! (valgrind) rather than timed, so the figure does not depend on the
//! machine's noise.
//!
//! For each profile (TCP pipelined, UDP, HTTP) and each server (taskd and
//! its comparison: the bare mio loop, or nginx over HTTP), two runs under
//! `valgrind --tool=callgrind`, the server pinned to one CPU (so taskd
//! resolves `workers = 0` to one worker on any machine):
//!
//! 1. start/stop: the server starts, is seen listening (one TCP connect),
//!    and gets SIGTERM; callgrind writes its file when it exits;
//! 2. loaded: the same with a fixed load of `REQUESTS` requests in between,
//!    sent in lock-step rounds (every connection gets its window of
//!    requests, then every reply is read and checked) so that each run
//!    sees the same sequence of requests.
//!
//! Instructions per request = (Ir of the loaded run - Ir of the start/stop
//! run) / `REQUESTS`, all threads together (workers and the results-log
//! writer included). callgrind counts instructions, not time: the figure
//! repeats to within a fraction of a percent for the same binaries (what
//! still varies is how the requests fall into event-loop turns). The top
//! functions by self and inclusive Ir of the loaded run (callgrind_annotate,
//! 25 of each) go to a file per server, whose path is printed.

use std::fmt::Write as _;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::cases::{Case, SMALL_REPLY, SMALL_REQUEST};
use crate::http::{Cut, HTTP_BODY, HTTP_PATH, cut_response};
use crate::report::grouped;
use crate::server::{ServerProc, Subject};

/// Requests of a loaded run.
pub const REQUESTS: usize = 20_000;
/// TCP and HTTP: connections, and requests written on each per round.
const STREAM_CONNS: usize = 5;
const STREAM_WINDOW: usize = 16;
/// UDP: sockets, one datagram in flight on each per round.
const UDP_SOCKETS: usize = 20;
/// How long one reply may take under valgrind, and a whole loaded run.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
const LOAD_TIMEOUT: Duration = Duration::from_secs(600);
/// How long a server under callgrind may take to exit after SIGTERM
/// (callgrind writes its file then).
const EXIT_TIMEOUT: Duration = Duration::from_secs(120);
/// Functions listed per ordering.
const TOP: usize = 25;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// TCP line protocol, pipelined: taskd against the bare loop.
    Tcp,
    /// UDP, one datagram in flight per socket: taskd against the bare loop.
    Udp,
    /// HTTP/1.1 keep-alive, pipelined: taskd against nginx's fixed body.
    Http,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Tcp, Kind::Udp, Kind::Http];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Tcp => "tcp",
            Kind::Udp => "udp",
            Kind::Http => "http",
        }
    }

    /// The profiles of the named cases (`small` and `pipelined` are both
    /// the TCP one); all of them when no case was named.
    pub fn for_cases(cases: &[Case], named: bool) -> Vec<Kind> {
        if !named {
            return Kind::ALL.to_vec();
        }
        Kind::ALL
            .into_iter()
            .filter(|k| {
                cases.iter().any(|c| match k {
                    Kind::Tcp => matches!(c, Case::Small | Case::Pipelined),
                    Kind::Udp => *c == Case::Udp,
                    Kind::Http => *c == Case::Http,
                })
            })
            .collect()
    }

    fn load(self) -> String {
        match self {
            Kind::Tcp => format!(
                "{REQUESTS} x `{SMALL_REQUEST}`, {STREAM_CONNS} TCP connections, {STREAM_WINDOW} pipelined per round"
            ),
            Kind::Udp => format!(
                "{REQUESTS} x `{SMALL_REQUEST}`, {UDP_SOCKETS} UDP sockets, 1 datagram in flight each"
            ),
            Kind::Http => format!(
                "{REQUESTS} x `GET {HTTP_PATH}`, {STREAM_CONNS} keep-alive connections, {STREAM_WINDOW} pipelined per round"
            ),
        }
    }
}

pub struct Settings {
    pub taskd_bin: PathBuf,
    pub out_dir: PathBuf,
    pub kinds: Vec<Kind>,
}

/// One server's two runs.
struct Measured {
    server: String,
    loaded: u64,
    idle: u64,
    top_file: PathBuf,
}

impl Measured {
    fn per_request(&self) -> f64 {
        (self.loaded as f64 - self.idle as f64) / REQUESTS as f64
    }
}

fn have(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs the profiles; a wrong reply is an error.
pub fn run(s: &Settings) -> Result<(), String> {
    if !have("valgrind") {
        println!("--profile: valgrind not found (apt-get install valgrind); nothing measured");
        return Ok(());
    }
    if s.kinds.is_empty() {
        return Err("--profile measures the cases pipelined (or small), udp and http; none was named".into());
    }
    fs::create_dir_all(&s.out_dir).map_err(|e| format!("{}: {e}", s.out_dir.display()))?;
    let out_dir = fs::canonicalize(&s.out_dir).map_err(|e| format!("{}: {e}", s.out_dir.display()))?;
    let cpu = crate::affinity::allowed_cpus()
        .first()
        .copied()
        .unwrap_or(0)
        .to_string();
    let nginx_bin = crate::nginx::find();
    eprintln!(
        "profile: callgrind, servers on CPU {cpu} (taskset), {REQUESTS} requests per loaded run; files in {}",
        out_dir.display()
    );
    let mut table = String::new();
    let _ = writeln!(
        table,
        "\n| profile | server | Ir, loaded run | Ir, start/stop | instructions per request | taskd / other |"
    );
    let _ = writeln!(table, "|---|---|---:|---:|---:|---:|");
    let mut loads = String::new();
    for &kind in &s.kinds {
        let taskd = match kind {
            Kind::Http => Subject::TaskdHttp { bin: &s.taskd_bin },
            _ => Subject::Taskd { bin: &s.taskd_bin },
        };
        let other = match (kind, nginx_bin.as_deref()) {
            (Kind::Http, Some(bin)) => Some(Subject::Nginx { bin }),
            (Kind::Http, None) => {
                println!("profile http: nginx not found (apt-get install nginx-light); taskd alone");
                None
            }
            _ => Some(Subject::Baseline { reply: SMALL_REPLY }),
        };
        let t = measure(kind, &taskd, &cpu, &out_dir)?;
        let o = other.map(|o| measure(kind, &o, &cpu, &out_dir)).transpose()?;
        let _ = writeln!(loads, "- {}: {}", kind.name(), kind.load());
        let ratio = o.as_ref().map_or(String::new(), |o| {
            format!("{:.1}x", t.per_request() / o.per_request())
        });
        for (m, r) in std::iter::once((&t, ratio.as_str())).chain(o.iter().map(|o| (o, ""))) {
            let _ = writeln!(
                table,
                "| {} | {} | {} | {} | {} | {r} |",
                kind.name(),
                m.server,
                grouped(m.loaded as f64),
                grouped(m.idle as f64),
                grouped(m.per_request())
            );
        }
        for m in std::iter::once(&t).chain(o.iter()) {
            eprintln!(
                "profile {} {}: {:.0} instructions per request; top functions in {}",
                kind.name(),
                m.server,
                m.per_request(),
                m.top_file.display()
            );
        }
    }
    print!("{table}");
    println!("\nloads (the same for both servers; Ir = user-space instructions, all threads):\n{loads}");
    println!(
        "top functions (self and inclusive Ir of the loaded runs): {}/*-top.txt",
        out_dir.display()
    );
    Ok(())
}

/// The valgrind command line that writes callgrind's file to `out`.
fn valgrind(out: &Path) -> Vec<String> {
    vec![
        "valgrind".into(),
        "--tool=callgrind".into(),
        format!("--callgrind-out-file={}", out.display()),
    ]
}

/// The start/stop run and the loaded run of one server.
fn measure(kind: Kind, subject: &Subject, cpu: &str, out_dir: &Path) -> Result<Measured, String> {
    let name = match subject {
        Subject::Taskd { .. } | Subject::TaskdHttp { .. } => "taskd",
        Subject::Baseline { .. } => "baseline",
        Subject::Nginx { .. } => "nginx",
    };
    let tag = format!("{}-{name}", kind.name());
    let idle_file = out_dir.join(format!("{tag}-startstop.callgrind"));
    let load_file = out_dir.join(format!("{tag}-loaded.callgrind"));
    for f in [&idle_file, &load_file] {
        let _ = fs::remove_file(f);
    }
    eprintln!("profile {tag}: start/stop run");
    one_run(subject, cpu, &idle_file, |_| Ok(()))?;
    eprintln!("profile {tag}: loaded run");
    one_run(subject, cpu, &load_file, |addr| drive(kind, addr))?;
    let idle = total_ir(&idle_file)?;
    let loaded = total_ir(&load_file)?;
    let top_file = out_dir.join(format!("{tag}-top.txt"));
    let mut text = format!(
        "taskd-bench --profile: {} against {name}\nload: {}\n\
         Ir of the loaded run: {loaded}\nIr of the start/stop run: {idle}\n\
         instructions per request: ({loaded} - {idle}) / {REQUESTS} = {:.1}\n\
         callgrind files: {} and {}\n",
        kind.name(),
        kind.load(),
        (loaded as f64 - idle as f64) / REQUESTS as f64,
        load_file.display(),
        idle_file.display()
    );
    for (inclusive, what) in [(false, "self"), (true, "inclusive")] {
        let _ = write!(
            text,
            "\nTop {TOP} functions of the loaded run by {what} Ir (start-up included); \
             first column: Ir / {REQUESTS}\n\n"
        );
        text.push_str(&top_functions(&load_file, inclusive)?);
    }
    fs::write(&top_file, text).map_err(|e| format!("{}: {e}", top_file.display()))?;
    Ok(Measured {
        server: match subject {
            Subject::Nginx { bin } => crate::nginx::version(bin),
            _ => name.to_string(),
        },
        loaded,
        idle,
        top_file,
    })
}

/// Starts `subject` under callgrind, runs `load` against it, stops it
/// with SIGTERM and waits for callgrind's file.
fn one_run(
    subject: &Subject,
    cpu: &str,
    out: &Path,
    load: impl FnOnce(SocketAddr) -> Result<(), String>,
) -> Result<(), String> {
    let mut server =
        ServerProc::start_wrapped(subject, Some(cpu), &valgrind(out)).map_err(|e| e.to_string())?;
    let loaded = load(server.addr);
    let stopped = server.terminate(EXIT_TIMEOUT);
    loaded?;
    stopped.map_err(|e| e.to_string())?;
    if !out.is_file() {
        return Err(format!(
            "{}: callgrind wrote no {}: {}",
            server.name,
            out.display(),
            server.stderr_tail()
        ));
    }
    Ok(())
}

/// The `totals:` (or `summary:`) line of a callgrind file: Ir of the run.
fn total_ir(file: &Path) -> Result<u64, String> {
    let text = fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    parse_total(&text).ok_or_else(|| format!("{}: no totals line", file.display()))
}

fn parse_total(text: &str) -> Option<u64> {
    let find = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    find("totals:").or_else(|| find("summary:"))
}

/// The first `TOP` function lines of callgrind_annotate's report, each
/// preceded by its Ir per request.
fn top_functions(file: &Path, inclusive: bool) -> Result<String, String> {
    let out = Command::new("callgrind_annotate")
        .arg(format!("--inclusive={}", if inclusive { "yes" } else { "no" }))
        .arg(file)
        .output()
        .map_err(|e| format!("callgrind_annotate: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "callgrind_annotate {}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(function_lines(&String::from_utf8_lossy(&out.stdout), TOP))
}

/// The function lines after callgrind_annotate's `file:function` header,
/// at most `n`, with Ir / REQUESTS in front.
fn function_lines(report: &str, n: usize) -> String {
    let mut out = String::new();
    let mut lines = report
        .lines()
        .skip_while(|l| !l.trim_end().ends_with("file:function"));
    lines.next();
    let mut taken = 0;
    for l in lines {
        let t = l.trim();
        if t.starts_with("---") {
            continue;
        }
        let Some(ir) = t
            .split_whitespace()
            .next()
            .and_then(|v| v.replace(',', "").parse::<u64>().ok())
        else {
            if taken > 0 {
                break;
            }
            continue;
        };
        let _ = writeln!(out, "{:>10.1}  {t}", ir as f64 / REQUESTS as f64);
        taken += 1;
        if taken == n {
            break;
        }
    }
    out
}

/// The fixed load of a loaded run; every reply is checked.
fn drive(kind: Kind, addr: SocketAddr) -> Result<(), String> {
    let deadline = Instant::now() + LOAD_TIMEOUT;
    let r = match kind {
        Kind::Tcp => drive_stream(
            addr,
            format!("{SMALL_REQUEST}\n").as_bytes(),
            deadline,
            line_reply,
        ),
        Kind::Http => drive_stream(addr, &crate::http::get(HTTP_PATH, addr), deadline, http_reply),
        Kind::Udp => drive_udp(addr, deadline),
    };
    r.map_err(|e| format!("{} load on {addr}: {e}", kind.name()))
}

/// A reply is a complete `OK 10` line at the front of `buf`: its length;
/// None while incomplete.
fn line_reply(buf: &[u8]) -> Result<Option<usize>, String> {
    let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
        return Ok(None);
    };
    let line = &buf[..nl];
    if line != SMALL_REPLY.as_bytes() {
        return Err(format!(
            "expected {SMALL_REPLY:?}, got {:?}",
            String::from_utf8_lossy(line)
        ));
    }
    Ok(Some(nl + 1))
}

/// A reply is a complete 200 response with the case's body, kept alive.
fn http_reply(buf: &[u8]) -> Result<Option<usize>, String> {
    match cut_response(buf) {
        Cut::Incomplete => Ok(None),
        Cut::Broken(e) => Err(e),
        Cut::Response {
            len,
            status,
            body,
            close,
        } => {
            if status == 200 && !close && &buf[body.clone()] == HTTP_BODY.as_bytes() {
                Ok(Some(len))
            } else {
                Err(format!(
                    "expected a 200 with {HTTP_BODY:?}, got {:?}",
                    String::from_utf8_lossy(&crate::http::describe(&buf[..len], &buf[body], close))
                ))
            }
        }
    }
}

/// TCP or HTTP: `STREAM_CONNS` connections; per round, `STREAM_WINDOW`
/// requests written on each, then all their replies read.
fn drive_stream(
    addr: SocketAddr,
    request: &[u8],
    deadline: Instant,
    reply: fn(&[u8]) -> Result<Option<usize>, String>,
) -> io::Result<()> {
    let mut conns = Vec::with_capacity(STREAM_CONNS);
    for _ in 0..STREAM_CONNS {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(REPLY_TIMEOUT))?;
        conns.push((s, Vec::<u8>::new()));
    }
    let batch = request.repeat(STREAM_WINDOW);
    let mut scratch = vec![0u8; 64 * 1024];
    let mut done = 0;
    while done < REQUESTS {
        if Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{done} replies in {LOAD_TIMEOUT:?}"),
            ));
        }
        for (s, _) in &mut conns {
            s.write_all(&batch)?;
        }
        for (s, buf) in &mut conns {
            let mut got = 0;
            while got < STREAM_WINDOW {
                match reply(buf).map_err(io::Error::other)? {
                    Some(len) => {
                        buf.drain(..len);
                        got += 1;
                    }
                    None => {
                        let n = s.read(&mut scratch)?;
                        if n == 0 {
                            return Err(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "the server closed a connection",
                            ));
                        }
                        buf.extend_from_slice(&scratch[..n]);
                    }
                }
            }
            if !buf.is_empty() {
                return Err(io::Error::other("more replies than requests"));
            }
        }
        done += STREAM_CONNS * STREAM_WINDOW;
    }
    Ok(())
}

/// UDP: `UDP_SOCKETS` connected sockets; per round one datagram sent on
/// each, then each one's reply read (loopback does not drop them at this
/// rate; a lost one fails the run after `REPLY_TIMEOUT`).
fn drive_udp(addr: SocketAddr, deadline: Instant) -> io::Result<()> {
    // The server was seen listening on TCP; its UDP socket may come a
    // moment later. Waited for without a datagram, which would count.
    let bound_by = Instant::now() + Duration::from_secs(60);
    while !udp_bound(addr.port()) {
        if Instant::now() >= bound_by.min(deadline) {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the UDP port was never bound",
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let local: SocketAddr = match addr {
        SocketAddr::V4(_) => "127.0.0.1:0".parse().expect("valid address"),
        SocketAddr::V6(_) => "[::1]:0".parse().expect("valid address"),
    };
    let mut socks = Vec::with_capacity(UDP_SOCKETS);
    for _ in 0..UDP_SOCKETS {
        let s = UdpSocket::bind(local)?;
        s.connect(addr)?;
        s.set_read_timeout(Some(REPLY_TIMEOUT))?;
        socks.push(s);
    }
    let request = format!("{SMALL_REQUEST}\n");
    let expect = format!("{SMALL_REPLY}\n");
    let mut buf = [0u8; 2048];
    let mut done = 0;
    while done < REQUESTS {
        if Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{done} replies in {LOAD_TIMEOUT:?}"),
            ));
        }
        for s in &socks {
            s.send(request.as_bytes())?;
        }
        for s in &socks {
            let n = s.recv(&mut buf)?;
            if &buf[..n] != expect.as_bytes() {
                return Err(io::Error::other(format!(
                    "expected {expect:?}, got {:?}",
                    String::from_utf8_lossy(&buf[..n])
                )));
            }
        }
        done += UDP_SOCKETS;
    }
    Ok(())
}

/// Whether a UDP socket of this machine is bound to `port` (from
/// /proc/net/udp and udp6, whose local address column ends in `:PORT`
/// in hex).
fn udp_bound(port: u16) -> bool {
    let suffix = format!(":{port:04X}");
    ["/proc/net/udp", "/proc/net/udp6"].iter().any(|f| {
        fs::read_to_string(f).is_ok_and(|t| {
            t.lines()
                .skip(1)
                .filter_map(|l| l.split_whitespace().nth(1))
                .any(|local| local.ends_with(&suffix))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_are_read_from_callgrind_files() {
        assert_eq!(
            parse_total("events: Ir\nsummary: 300195\ntotals: 300196\n"),
            Some(300196)
        );
        assert_eq!(parse_total("events: Ir\nsummary: 42\n"), Some(42));
        assert_eq!(parse_total("events: Ir\n"), None);
    }

    #[test]
    fn function_lines_are_taken_after_the_header() {
        let report = "\
--------------------------------------------------------------------------------
Ir                   
--------------------------------------------------------------------------------
400,000 (100.0%)  PROGRAM TOTALS

--------------------------------------------------------------------------------
Ir                    file:function
--------------------------------------------------------------------------------
200,000 (50.00%)  ???:taskd::a [/t]
100,000 (25.00%)  ???:taskd::b [/t]
 60,000 (15.00%)  ???:memcpy [/lib]

--------------------------------------------------------------------------------
-- Auto-annotated source: x
";
        let got = function_lines(report, 2);
        assert_eq!(got.lines().count(), 2);
        assert!(
            got.lines()
                .next()
                .unwrap()
                .ends_with("200,000 (50.00%)  ???:taskd::a [/t]")
        );
        assert!(got.starts_with("      10.0  "));
        assert_eq!(function_lines(report, 25).lines().count(), 3);
    }

    #[test]
    fn bound_udp_ports_are_seen() {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = s.local_addr().unwrap().port();
        assert!(udp_bound(port));
        drop(s);
        assert!(!udp_bound(port));
    }

    #[test]
    fn profiles_follow_the_cases() {
        assert_eq!(Kind::for_cases(&[], false), Kind::ALL.to_vec());
        assert_eq!(
            Kind::for_cases(&[Case::Small, Case::Http], true),
            vec![Kind::Tcp, Kind::Http]
        );
        assert!(Kind::for_cases(&[Case::Sum], true).is_empty());
    }

    #[test]
    fn replies_are_checked() {
        assert_eq!(line_reply(b"OK 10\nOK"), Ok(Some(6)));
        assert_eq!(line_reply(b"OK 1"), Ok(None));
        assert!(line_reply(b"OK 100\n").is_err());
        let ok = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{HTTP_BODY}",
            HTTP_BODY.len()
        );
        assert_eq!(http_reply(ok.as_bytes()), Ok(Some(ok.len())));
        assert_eq!(http_reply(&ok.as_bytes()[..ok.len() - 1]), Ok(None));
        assert!(http_reply(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n").is_err());
    }
}
