//! Memory: everything held on behalf of clients counts against
//! `max_buffered_bytes` — the payloads of queued tasks at their in-memory
//! size, replies a client does not read, TLS buffers, UDP datagrams — so
//! the daemon's peak stays under [`MemoryBound`] whatever they send.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use rustls::ClientConnection;
use rustls::pki_types::ServerName;

use crate::common::tls::{Ca, client_config, launch_tls};
use crate::common::{Launch, LineClient, proc, udp_socket};
use crate::{
    MIB, MemoryBound, PER_CONNECTION, PER_TLS_CONNECTION, RssWatch, default_workers, mib, settle, verdict,
};

/// The budget of every memory attack: small, so the bound is tight.
const BUDGET: u64 = 4 * MIB;

/// The limits of every memory attack: lines of at most 1 MiB, a 4 MiB
/// budget; no results log (what it costs is not the matter here).
fn limits() -> String {
    // max_samples: the busy worker's pi of 10^12 samples lasts the whole test even with the
    // vectorized kernel (10^10 takes seconds).
    format!(
        "[limits]\nmax_line_bytes = {MIB}\nmax_buffered_bytes = {BUDGET}\n\n[results_log]\npath = \"\"\n\n\
         [ops.pi]\nmax_samples = 1000000000000\n"
    )
}

/// `(what was done[; stopped early: …])`, for notes.
fn stopped_early(watch: &RssWatch, what: &str) -> String {
    if watch.over() {
        format!("({what}; stopped early: memory over twice the bound)")
    } else {
        format!("({what})")
    }
}

/// A 1 MiB text `sum` line (just under `max_line_bytes`), with its newline.
fn megabyte_text_line(i: usize) -> Vec<u8> {
    let mut l = format!("#t{i} sum").into_bytes();
    while l.len() < (MIB as usize) - 8 {
        l.extend_from_slice(b" 1");
    }
    l.push(b'\n');
    l
}

/// A 1 MiB JSON `sum` line (just under `max_line_bytes`), with its newline.
fn megabyte_json_line(i: usize) -> Vec<u8> {
    let mut l = format!("{{\"id\": \"j{i}\", \"op\": \"sum\", \"values\": [1").into_bytes();
    while l.len() < (MIB as usize) - 8 {
        l.extend_from_slice(b",1");
    }
    l.extend_from_slice(b"]}\n");
    l
}

/// With the only worker busy, 4 connections pipeline 32 lines of 1 MiB
/// each, never reading: the tasks queue up, and their payloads must count.
fn queued_payloads(what: &str, line: fn(usize) -> Vec<u8>) {
    const CONNECTIONS: usize = 4;
    const LINES: usize = 32;
    let d = Launch::line(&format!("[server]\nworkers = 1\n\n{}", limits())).start();
    let bound = MemoryBound::measure(&d, BUDGET, CONNECTIONS as u64 + 1, PER_CONNECTION).with_line(MIB, 1);
    // The worker, busy for seconds (or, time-sliced, busy most of the time).
    let mut busy = d.connect();
    busy.send("#busy pi 1000000000000 1");
    thread::sleep(Duration::from_millis(200));
    let watch = RssWatch::start(d.pid(), 2 * bound.kib(), Duration::from_secs(60));
    let deadline = Instant::now() + Duration::from_secs(20);
    let writers: Vec<_> = (0..CONNECTIONS)
        .map(|k| {
            let (addr, over) = (d.tcp, watch.flag());
            thread::spawn(move || {
                let s = TcpStream::connect(addr).expect("connect");
                s.set_write_timeout(Some(Duration::from_millis(100)))
                    .expect("write timeout");
                let mut w = &s;
                let mut written = 0usize;
                'lines: for i in 0..LINES {
                    let l = line(k * LINES + i);
                    let mut at = 0;
                    while at < l.len() {
                        if over.load(Ordering::SeqCst) || Instant::now() > deadline {
                            break 'lines;
                        }
                        match w.write(&l[at..]) {
                            Ok(n) => at += n,
                            Err(e)
                                if matches!(
                                    e.kind(),
                                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                                ) => {}
                            Err(e) => panic!("write: {e}"),
                        }
                    }
                    written += 1;
                }
                (s, written)
            })
        })
        .collect();
    let mut held = Vec::new();
    let mut lines = 0;
    for w in writers {
        let (s, n) = w.join().expect("a writer");
        held.push(s);
        lines += n;
    }
    // What the daemon does with what it read (the busy worker keeps its
    // CPU busy: no settling by CPU time here).
    thread::sleep(Duration::from_secs(1));
    let peak = proc::peak_rss(d.pid());
    verdict(
        what,
        vec![bound.broken_by(peak, "memory")],
        &stopped_early(
            &watch,
            &format!("{lines} of {} lines of 1 MiB written", CONNECTIONS * LINES),
        ),
    );
    drop(held);
}

#[test]
fn pipelined_megabyte_text_lines_behind_a_busy_worker() {
    let _one_at_a_time = crate::exclusive();
    queued_payloads(
        "128 x 1 MiB text lines on 4 connections behind a busy worker",
        megabyte_text_line,
    );
}

#[test]
fn pipelined_megabyte_json_lines_behind_a_busy_worker() {
    let _one_at_a_time = crate::exclusive();
    queued_payloads(
        "128 x 1 MiB JSON lines on 4 connections behind a busy worker",
        megabyte_json_line,
    );
}

/// Each greedy client: 20,000 `info` requests (100 KB; 9 MB of replies),
/// written at once, replies never read.
const GREEDY_REQUESTS: usize = 20_000;
const GREEDY_CLIENTS: usize = 200;

/// A TCP connection to `addr` with a 4 KiB receive buffer (a small window:
/// the replies pile up at the daemon), set before connecting.
fn small_window(addr: SocketAddr) -> TcpStream {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("socket");
    s.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    s.connect_timeout(&addr.into(), Duration::from_secs(5))
        .expect("connect");
    let s = TcpStream::from(s);
    s.set_write_timeout(Some(Duration::from_secs(2)))
        .expect("write timeout");
    s
}

#[test]
fn two_hundred_tcp_clients_that_never_read() {
    let _one_at_a_time = crate::exclusive();
    let d = Launch::line(&limits()).start();
    let bound = MemoryBound::measure(&d, BUDGET, GREEDY_CLIENTS as u64 + 1, PER_CONNECTION)
        .with_line(MIB, default_workers());
    let watch = RssWatch::start(d.pid(), 2 * bound.kib(), Duration::from_secs(60));
    let requests = "info\n".repeat(GREEDY_REQUESTS);
    let mut held = Vec::new();
    for _ in 0..GREEDY_CLIENTS {
        if watch.over() {
            break;
        }
        let mut s = small_window(d.tcp);
        // The daemon may stop reading: a write timeout is the point.
        let _ = s.write_all(requests.as_bytes());
        held.push(s);
    }
    settle(d.pid(), &watch, Duration::from_secs(30));
    let peak = proc::peak_rss(d.pid());
    let served = LineClient::try_connect(d.tcp, Duration::from_secs(5)).and_then(|mut c| c.try_ask("ping"));
    verdict(
        "200 TCP clients that never read their replies",
        vec![
            bound.broken_by(peak, "memory"),
            (served.as_deref().ok() != Some("OK pong"))
                .then(|| format!("promised another client served; seen {served:?}")),
        ],
        &stopped_early(&watch, &format!("{} clients", held.len())),
    );
    drop(held);
}

#[test]
fn two_hundred_tls_clients_that_never_read() {
    let _one_at_a_time = crate::exclusive();
    let ca = Ca::new("test CA");
    let d = launch_tls("tls", &ca, None, &limits()).start();
    let bound = MemoryBound::measure(&d, BUDGET, GREEDY_CLIENTS as u64 + 1, PER_TLS_CONNECTION)
        .with_line(MIB, default_workers());
    let watch = RssWatch::start(d.pid(), 2 * bound.kib(), Duration::from_secs(90));
    let config = client_config(&[ca.der()], None);
    let requests = "info\n".repeat(GREEDY_REQUESTS);
    let mut held = Vec::new();
    for _ in 0..GREEDY_CLIENTS {
        if watch.over() {
            break;
        }
        let mut sock = small_window(d.tcp);
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("read timeout");
        let name = ServerName::try_from("localhost").expect("server name");
        let mut conn = ClientConnection::new(Arc::clone(&config), name).expect("a TLS client");
        while conn.is_handshaking() {
            conn.complete_io(&mut sock).expect("TLS handshake");
        }
        // Plaintext in, records out, until all is sent or the daemon
        // stops taking them (a write timeout); never a read.
        let mut at = 0;
        'send: while at < requests.len() {
            match conn.writer().write(&requests.as_bytes()[at..]) {
                Ok(n) => at += n,
                Err(e) => panic!("plaintext in: {e}"),
            }
            while conn.wants_write() {
                if conn.write_tls(&mut sock).is_err() {
                    break 'send;
                }
            }
        }
        held.push((conn, sock));
    }
    settle(d.pid(), &watch, Duration::from_secs(30));
    let peak = proc::peak_rss(d.pid());
    verdict(
        "200 TLS clients that never read their replies",
        vec![bound.broken_by(peak, "memory")],
        &stopped_early(&watch, &format!("{} clients", held.len())),
    );
    drop(held);
}

/// 2,000 datagrams of 60 KB, each one JSON `sum` of 30,000 values, sent
/// as fast as the daemon takes them while its only worker is busy.
#[test]
fn two_thousand_64_kb_json_datagrams() {
    let _one_at_a_time = crate::exclusive();
    const DATAGRAMS: usize = 2_000;
    let d = Launch::config(|port| {
        format!(
            "[[listener]]\nproto = \"tcp\"\naddress = \"127.0.0.1:{port}\"\n\n\
             [[listener]]\nproto = \"udp\"\naddress = \"127.0.0.1:{port}\"\nrecv_buffer = 4194304\n\n\
             [server]\nworkers = 1\n\n{}",
            limits()
        )
    })
    .start();
    let bound = MemoryBound::measure(&d, BUDGET, 2, PER_CONNECTION).with_line(MIB, 1);
    let mut busy = d.connect();
    busy.send("#busy pi 1000000000000 1");
    thread::sleep(Duration::from_millis(200));
    let datagram = format!("{{\"op\": \"sum\", \"values\": [1{}]}}\n", ",1".repeat(29_999));
    assert!(datagram.len() < 65_000);
    let s = udp_socket("127.0.0.1".parse().expect("address"), Duration::from_millis(50));
    let watch = RssWatch::start(d.pid(), 2 * bound.kib(), Duration::from_secs(60));
    // Replies, read meanwhile: each must be the sum or a `busy` error.
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (r, done) = (s.try_clone().expect("clone"), Arc::clone(&done));
        thread::spawn(move || {
            let (mut ok, mut busy, mut other) = (0, 0, Vec::new());
            let mut buf = vec![0u8; 65536];
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                match r.recv(&mut buf) {
                    Ok(n) => {
                        let v: serde_json::Value = serde_json::from_slice(&buf[..n]).unwrap_or_default();
                        if v["ok"] == true && v["result"] == 30_000 {
                            ok += 1;
                        } else if v["error"] == "busy" {
                            busy += 1;
                        } else if other.len() < 3 {
                            other.push(String::from_utf8_lossy(&buf[..n.min(200)]).into_owned());
                        }
                    }
                    Err(_) if done.load(Ordering::SeqCst) => break,
                    Err(_) => {}
                }
            }
            (ok, busy, other)
        })
    };
    let mut sent = 0;
    for i in 0..DATAGRAMS {
        if watch.over() {
            break;
        }
        if s.send_to(datagram.as_bytes(), d.udp).is_ok() {
            sent += 1;
        }
        if i % 20 == 19 {
            thread::sleep(Duration::from_millis(1));
        }
    }
    thread::sleep(Duration::from_secs(1));
    let peak = proc::peak_rss(d.pid());
    done.store(true, Ordering::SeqCst);
    let (ok, busy_replies, other) = reader.join().expect("the reader");
    verdict(
        "2,000 UDP datagrams of 64 KB JSON",
        vec![
            bound.broken_by(peak, "memory"),
            (!other.is_empty()).then(|| format!("promised the sum or ERR busy; seen {other:?}")),
        ],
        &stopped_early(
            &watch,
            &format!(
                "{sent} datagrams sent ({}); {ok} sums and {busy_replies} busy replies read",
                mib(sent as u64 * datagram.len() as u64)
            ),
        ),
    );
}
