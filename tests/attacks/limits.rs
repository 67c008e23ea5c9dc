//! Connections over the limit are refused at the door: one `ERR busy`
//! line (HTTP: a 429; TLS: a plain close, no session), then a lingering
//! close; at most a small reserve of descriptors goes to refusals in
//! progress, beyond it taskd stops accepting and the kernel's backlog
//! holds the rest, so a flood from one address never drives the daemon to
//! EMFILE nor delays clients of other addresses.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use rustls::ClientConnection;
use rustls::pki_types::ServerName;

use crate::common::http::{HttpConn, http_get};
use crate::common::tls::{Ca, client_config, launch_tls, line_tls};
use crate::common::{LOCALHOST_2, LOCALHOST_3, Launch, LineClient, connect_from, proc};
use crate::{PROBE_BOUND, clip, verdict};

/// The descriptors taskd may spend on refusals in progress ("say 64" in
/// the issue); beyond them it stops accepting.
const REFUSAL_RESERVE: usize = 64;

/// Everything `s` sends until EOF, a reset or `timeout`; whether it ended.
fn read_all(s: &mut TcpStream, timeout: Duration) -> (Vec<u8>, bool) {
    s.set_read_timeout(Some(timeout)).expect("read timeout");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (got, true),
            Err(_) => return (got, false),
        }
    }
}

/// 2,000 connections from 127.0.0.2 with `max_connections = 50`, under
/// RLIMIT_NOFILE 1024, while a client from 127.0.0.3 keeps connecting and
/// asking `ping`. `max_connections_per_ip = 25`: the flood's address holds
/// 25 served connections, and 25 places remain for the others (a refusal
/// in progress is no connection of the limit).
#[test]
fn two_thousand_connections_over_max_connections() {
    let _one_at_a_time = crate::exclusive();
    const FLOOD: usize = 2_000;
    const MAX_CONNECTIONS: usize = 50;
    const FLOOD_TIME: Duration = Duration::from_secs(5);
    // This process holds the flood: fewer connections if it may not.
    let flood_size = FLOOD.min((proc::raise_nofile() as usize).saturating_sub(100));
    assert!(
        flood_size > 1100,
        "RLIMIT_NOFILE too low for a flood past taskd's 1024"
    );
    let d = Launch::line(&format!(
        "[limits]\nmax_connections = {MAX_CONNECTIONS}\nmax_connections_per_ip = 25\n\n[results_log]\npath = \"\"\n"
    ))
    .nofile(1024)
    .start();
    let pid = d.pid();
    let fds_before = proc::fd_count(pid).expect("descriptors of taskd");
    let stop = Arc::new(AtomicBool::new(false));
    // The daemon's descriptors, sampled.
    let peak_fds = Arc::new(AtomicUsize::new(fds_before));
    let sampler = {
        let (stop, peak) = (Arc::clone(&stop), Arc::clone(&peak_fds));
        thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                if let Ok(n) = proc::fd_count(pid) {
                    peak.fetch_max(n, Ordering::SeqCst);
                }
                thread::sleep(Duration::from_millis(10));
            }
        })
    };
    // The other address: a new connection and a ping every 100 ms.
    let other = {
        let (stop, addr) = (Arc::clone(&stop), d.tcp);
        thread::spawn(move || {
            let (mut times, mut failures) = (Vec::new(), Vec::new());
            for _ in 0..600 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let t = Instant::now();
                let asked = connect_from(LOCALHOST_3, addr).and_then(|s| {
                    let mut c = LineClient::try_from_tcp(s, Duration::from_secs(10))?;
                    c.try_ask("ping")
                });
                match asked {
                    Ok(r) if r == "OK pong" => times.push(t.elapsed()),
                    Ok(r) => failures.push(format!("answered {r:?}")),
                    Err(e) => failures.push(format!("{e} after {:?}", t.elapsed())),
                }
                thread::sleep(Duration::from_millis(100));
            }
            (times, failures)
        })
    };
    thread::sleep(Duration::from_millis(300));
    // The flood: connections opened as fast as the kernel takes them,
    // never written to, for at most FLOOD_TIME (once taskd stops accepting
    // and its backlog is full, a connect waits for a SYN retry: given up).
    let t = Instant::now();
    let mut flood = Vec::with_capacity(flood_size);
    let mut refused_connects = 0;
    for _ in 0..flood_size {
        if t.elapsed() > FLOOD_TIME {
            break;
        }
        match testkit::connect_from_within(LOCALHOST_2, d.tcp, Duration::from_millis(100)) {
            Ok(s) => flood.push(s),
            Err(_) => refused_connects += 1,
        }
    }
    let opened_in = t.elapsed();
    let flood_len = flood.len();
    thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    let (times, failures) = other.join().expect("the other address");
    sampler.join().expect("the sampler");
    // What the flood got: nothing (served, or still in the backlog), or
    // exactly one ERR busy line then EOF.
    let (mut busy, mut nothing, mut wrong) = (0, 0, Vec::new());
    for s in flood.iter_mut() {
        s.set_nonblocking(true).expect("nonblocking");
        let mut buf = [0u8; 512];
        match s.read(&mut buf) {
            Ok(n) if n > 0 => {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                if text.starts_with("ERR busy ") && text.ends_with('\n') && text.lines().count() == 1 {
                    busy += 1;
                } else if wrong.len() < 3 {
                    wrong.push(text);
                }
            }
            _ => nothing += 1,
        }
    }
    drop(flood);
    let peak = peak_fds.load(Ordering::SeqCst);
    let limit = fds_before + MAX_CONNECTIONS + REFUSAL_RESERVE;
    let max = times.iter().copied().max().unwrap_or_default();
    let emfile = d.stderr().contains("Too many open files");
    verdict(
        "2,000 connections with max_connections = 50",
        vec![
            (peak > limit).then(|| {
                format!(
                    "promised at most max_connections + {REFUSAL_RESERVE} descriptors for clients ({limit} in \
                     all); seen {peak}{}",
                    if emfile { ", and EMFILE" } else { "" }
                )
            }),
            (max > PROBE_BOUND || !failures.is_empty() || times.is_empty()).then(|| {
                format!(
                    "promised clients of 127.0.0.3 served within {PROBE_BOUND:?}; seen max {max:?} over {} \
                     connections, {} failed{}",
                    times.len(),
                    failures.len(),
                    failures
                        .first()
                        .map(|f| format!(" (first: {f})"))
                        .unwrap_or_default()
                )
            }),
            (busy == 0 || !wrong.is_empty()).then(|| {
                format!("promised over-limit clients one `ERR busy` line; seen {busy} such, and {wrong:?}")
            }),
        ],
        &format!(
            "({} connections opened in {opened_in:?}, {refused_connects} connects timed out; {busy} got ERR \
             busy, {nothing} nothing yet)",
            flood_len
        ),
    );
}

/// Over the limit on an HTTP listener: a `429` with `Retry-After: 1`,
/// then a close, never a bare line-protocol `ERR busy`.
#[test]
fn over_max_connections_http_clients_get_429() {
    let _one_at_a_time = crate::exclusive();
    let d = Launch::http("[limits]\nmax_connections = 5\n\n[results_log]\npath = \"\"\n").start();
    let mut held: Vec<HttpConn> = (0..5).map(|_| d.http()).collect();
    for c in &mut held {
        assert_eq!(c.ask(http_get("/healthz")).status, 200);
    }
    let mut wrong = Vec::new();
    for i in 0..20 {
        let mut s = TcpStream::connect(d.tcp).expect("connect");
        let _ = s.write_all(http_get("/healthz").as_bytes());
        let (got, ended) = read_all(&mut s, Duration::from_secs(5));
        let text = String::from_utf8_lossy(&got);
        let head = text
            .split("\r\n\r\n")
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        if !(ended && head.starts_with("http/1.1 429 ") && head.contains("\r\nretry-after: 1")) {
            wrong.push(format!("client {i}: {} (closed: {ended})", clip(&text, 120)));
        }
    }
    verdict(
        "over max_connections on HTTP",
        vec![(!wrong.is_empty()).then(|| {
            format!(
                "promised a 429 with Retry-After: 1, then a close; seen {} otherwise, first: {}",
                wrong.len(),
                wrong[0]
            )
        })],
        "",
    );
}

/// Over the limit on a TLS listener: a plain close, without a byte of
/// TLS (no session is set up for a refused client).
#[test]
fn over_max_connections_tls_clients_get_a_plain_close() {
    let _one_at_a_time = crate::exclusive();
    let ca = Ca::new("test CA");
    let d = launch_tls(
        "tls",
        &ca,
        None,
        "[limits]\nmax_connections = 5\n\n[results_log]\npath = \"\"\n",
    )
    .start();
    let config = client_config(&[ca.der()], None);
    let mut held: Vec<_> = (0..5).map(|_| line_tls(d.tcp, Arc::clone(&config))).collect();
    for c in &mut held {
        assert_eq!(c.ask("ping"), "OK pong");
    }
    let mut wrong = Vec::new();
    for i in 0..20 {
        let mut hello = Vec::new();
        let name = ServerName::try_from("localhost").expect("server name");
        let mut conn = ClientConnection::new(Arc::clone(&config), name).expect("a TLS client");
        conn.write_tls(&mut hello).expect("a ClientHello");
        let mut s = TcpStream::connect(d.tcp).expect("connect");
        let _ = s.write_all(&hello);
        let (got, ended) = read_all(&mut s, Duration::from_secs(5));
        if !got.is_empty() || !ended {
            wrong.push(format!(
                "client {i}: {} bytes{} (closed: {ended})",
                got.len(),
                match got.first() {
                    Some(0x16) => ", a TLS handshake record: a session was set up",
                    Some(0x15) => ", a TLS alert",
                    Some(_) => ", not TLS",
                    None => "",
                }
            ));
        }
    }
    let addr: SocketAddr = d.tcp;
    verdict(
        "over max_connections on TLS",
        vec![(!wrong.is_empty()).then(|| {
            format!(
                "promised a plain close without a byte; seen {} otherwise, first: {}",
                wrong.len(),
                wrong[0]
            )
        })],
        &format!("(listener {addr})"),
    );
}
