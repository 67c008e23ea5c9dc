//! Stalls: nothing one client sends holds up the others or the watchdog.
//! The loop never blocks (a capped number of accepts a turn, `users`
//! rendered off the loop, JSON values parsed on a worker), workers are
//! time-sliced (a huge `pi` never keeps a small request waiting), and the
//! memory budget can never freeze every connection at once.

use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::{Launch, LineClient, Notifications, has, proc, wait_until};
use crate::{
    MIB, MemoryBound, PER_CONNECTION, PROBE_BOUND, Probe, RssWatch, default_workers, io_failure, largest_gap,
    mib, verdict,
};

/// WATCHDOG_USEC given to taskd: 200 ms.
const WATCHDOG_USEC: u64 = 200_000;

/// The promise: WATCHDOG=1 every WATCHDOG_USEC / 2 (100 ms), whatever the
/// loop's tick. Allowed: three quarters of WATCHDOG_USEC (150 ms), the
/// promised interval plus 50 ms of scheduling on a loaded machine, still
/// short of the 200 ms after which systemd kills the service.
const WATCHDOG_GAP_BOUND: Duration = Duration::from_micros(WATCHDOG_USEC * 3 / 4);

/// One `@name ping` per name: fills the users table with `n` names (and
/// checks every reply).
fn fill_users(c: &mut LineClient, n: usize) {
    let mut w = c.stream().try_clone().expect("clone");
    let writer = thread::spawn(move || {
        let mut batch = String::new();
        for i in 0..n {
            batch.push_str(&format!("@user-{i:06} ping\n"));
            if batch.len() > 64 * 1024 {
                w.write_all(batch.as_bytes()).expect("write names");
                batch.clear();
            }
        }
        w.write_all(batch.as_bytes()).expect("write names");
    });
    for i in 0..n {
        assert_eq!(c.line().as_deref(), Some("OK pong"), "reply {i} of the names");
    }
    writer.join().expect("writer");
}

#[test]
fn a_200_ms_watchdog_is_petted_every_100_ms() {
    let _one_at_a_time = crate::exclusive();
    let n = Notifications::listen();
    let (key, path) = n.env();
    let usec = WATCHDOG_USEC.to_string();
    let d = Launch::line("")
        .env(&[(key, &path), ("WATCHDOG_USEC", &usec)])
        .start();
    let ready = n.wait_for(0, "READY=1", |m| has(m, "READY=1"));
    let from = n.all()[ready].0;
    thread::sleep(Duration::from_secs(2));
    let to = Instant::now();
    let pets = n.times_of("WATCHDOG=1");
    let gap = largest_gap(&pets, from, to);
    let count = pets.iter().filter(|t| **t >= from).count();
    verdict(
        "WATCHDOG_USEC=200000",
        vec![(gap > WATCHDOG_GAP_BOUND).then(|| {
            format!(
                "promised WATCHDOG=1 every {} ms (half of WATCHDOG_USEC), gaps under {WATCHDOG_GAP_BOUND:?}; \
                 seen a gap of {gap:?} ({count} pets in 2 s)",
                WATCHDOG_USEC / 2000
            )
        })],
        "",
    );
    assert_eq!(d.session(&["ping"]), ["OK pong"]);
}

/// 100,000 names in the users table (`max_users`' default), then 30
/// connections a second each asking `users` and never reading the reply.
#[test]
fn users_requests_on_a_full_users_table() {
    let _one_at_a_time = crate::exclusive();
    const NAMES: usize = 100_000;
    const BUDGET: u64 = 4 * MIB;
    const ATTACK: Duration = Duration::from_secs(3);
    const PER_SECOND: u64 = 30;
    let n = Notifications::listen();
    let (key, path) = n.env();
    let usec = WATCHDOG_USEC.to_string();
    let d = Launch::line(&format!(
        "[limits]\nmax_line_bytes = {MIB}\nmax_buffered_bytes = {BUDGET}\n\n[results_log]\npath = \"\"\n"
    ))
    .env(&[(key, &path), ("WATCHDOG_USEC", &usec)])
    .start();
    n.wait_for(0, "READY=1", |m| has(m, "READY=1"));
    fill_users(&mut d.connect(), NAMES);
    // The table is state max_users allows: the bound is over it.
    let attackers = ATTACK.as_secs() * PER_SECOND;
    // One request: the rendered table, at most 112 bytes per name.
    let bound =
        MemoryBound::measure(&d, BUDGET, attackers + 2, PER_CONNECTION).with_request(NAMES as u64 * 112);
    let watch = RssWatch::start(d.pid(), 2 * bound.kib(), ATTACK + Duration::from_secs(10));
    let probe = Probe::start(d.tcp, "ping", "OK pong", Duration::from_millis(50));
    let from = Instant::now();
    let mut held = Vec::new();
    while from.elapsed() < ATTACK && !watch.over() {
        if let Ok(mut s) = TcpStream::connect_timeout(&d.tcp, Duration::from_secs(1)) {
            let _ = s.write_all(b"users\n");
            held.push(s);
        }
        thread::sleep(Duration::from_millis(1000 / PER_SECOND));
    }
    let to = Instant::now();
    let probed = probe.finish();
    let gap = largest_gap(&n.times_of("WATCHDOG=1"), from, to);
    let peak = proc::peak_rss(d.pid());
    let sent = held.len();
    drop(held);
    verdict(
        "users requests on a full users table",
        vec![
            probed.broken(PROBE_BOUND, "ping on another connection"),
            (gap > WATCHDOG_GAP_BOUND).then(|| {
                format!("promised WATCHDOG=1 gaps under {WATCHDOG_GAP_BOUND:?}; seen a gap of {gap:?}")
            }),
            bound.broken_by(peak, "memory"),
        ],
        &format!(
            "({NAMES} names, then {sent} connections sent `users` in {:?}{})",
            to - from,
            if watch.over() {
                "; stopped early: memory over twice the bound"
            } else {
                ""
            }
        ),
    );
}

/// A `sum` line of `values` times the value `v`, with its newline, and
/// the sum it must get.
fn sum_line(values: usize, v: u64) -> (Vec<u8>, u128) {
    let mut line = b"sum".to_vec();
    for _ in 0..values {
        line.push(b' ');
        line.extend_from_slice(v.to_string().as_bytes());
    }
    line.push(b'\n');
    (line, values as u128 * v as u128)
}

/// 40 clients each send one legal 8 MiB `sum` line at once: more than
/// max_buffered_bytes together. They must all be answered, in turn.
#[test]
fn forty_clients_with_one_8_mib_sum_line_each() {
    let _one_at_a_time = crate::exclusive();
    const CLIENTS: u64 = 40;
    /// Nine-digit values and their spaces: 838,000 of them fill 8 MiB
    /// (8,380,004 bytes, under max_line_bytes' 8,388,608) without
    /// passing max_values (1,000,000).
    const VALUES: usize = 838_000;
    const BUDGET: u64 = 64 * MIB;
    /// No progress (bytes written or replies read) for this long: stuck.
    const STUCK: Duration = Duration::from_secs(10);
    const DEADLINE: Duration = Duration::from_secs(120);
    let d = Launch::line(&format!(
        "[server]\nworkers = 2\n\n[limits]\nmax_buffered_bytes = {BUDGET}\n\n[results_log]\npath = \"\"\n"
    ))
    .start();
    let bound = MemoryBound::measure(&d, BUDGET, CLIENTS + 1, PER_CONNECTION).with_line(8 * MIB, 2);
    let progress = Arc::new(AtomicU64::new(0));
    let give_up = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|k| {
            let (addr, progress, give_up) = (d.tcp, Arc::clone(&progress), Arc::clone(&give_up));
            thread::spawn(move || -> Result<(), String> {
                let (line, sum) = sum_line(VALUES, 100_000_000 + k);
                assert!(line.len() <= 8 << 20, "{}", line.len());
                let mut c =
                    LineClient::try_connect(addr, Duration::from_secs(1)).map_err(|e| e.to_string())?;
                c.stream()
                    .set_write_timeout(Some(Duration::from_secs(1)))
                    .expect("write timeout");
                let mut sent = 0;
                while sent < line.len() {
                    if give_up.load(Ordering::SeqCst) {
                        return Err(format!("wrote {sent} of {} bytes", line.len()));
                    }
                    match c.get_mut().write(&line[sent..]) {
                        Ok(n) => {
                            sent += n;
                            progress.fetch_add(n as u64, Ordering::SeqCst);
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                        Err(e) => return Err(format!("write after {sent} bytes: {e}")),
                    }
                }
                loop {
                    match c.try_line() {
                        Ok(Some(reply)) if reply == format!("OK {sum}") => {
                            progress.fetch_add(1, Ordering::SeqCst);
                            return Ok(());
                        }
                        Ok(reply) => return Err(format!("answered {reply:?}")),
                        Err(_) if !give_up.load(Ordering::SeqCst) => {}
                        Err(e) => return Err(format!("line written, no reply: {e}")),
                    }
                }
            })
        })
        .collect();
    // Watch progress; give up when there is none for STUCK.
    let watch = RssWatch::start(d.pid(), 2 * bound.kib(), DEADLINE);
    let (mut last, mut since) = (0, Instant::now());
    while !clients.iter().all(|c| c.is_finished()) && start.elapsed() < DEADLINE {
        thread::sleep(Duration::from_millis(100));
        let now = progress.load(Ordering::SeqCst);
        if now != last {
            (last, since) = (now, Instant::now());
        } else if since.elapsed() > STUCK || watch.over() {
            break;
        }
    }
    let stuck_after = start.elapsed();
    give_up.store(true, Ordering::SeqCst);
    let results: Vec<Result<(), String>> = clients
        .into_iter()
        .map(|c| c.join().expect("a client thread"))
        .collect();
    let answered = results.iter().filter(|r| r.is_ok()).count();
    let first_error = results.iter().find_map(|r| r.as_ref().err().cloned());
    let peak = proc::peak_rss(d.pid());
    verdict(
        "40 clients with one 8 MiB sum line each",
        vec![
            (answered as u64 != CLIENTS).then(|| {
                format!(
                    "promised all {CLIENTS} answered with their sum, in turn; seen {answered} answered, the \
                     rest stuck (no progress for {STUCK:?}, gave up after {stuck_after:?}; {} MiB written); \
                     first: {}",
                    progress.load(Ordering::SeqCst) >> 20,
                    first_error.unwrap_or_default()
                )
            }),
            bound.broken_by(peak, "memory"),
        ],
        "",
    );
}

/// Five connections park 900 KB of an unfinished line each (1 MiB line
/// limit, 4 MiB budget), then close. What they held must be given back:
/// a later request over 64 KiB is served at once.
#[test]
fn parked_unfinished_lines_then_closed() {
    let _one_at_a_time = crate::exclusive();
    const BUDGET: u64 = 4 * MIB;
    let d = Launch::line(&format!(
        "[limits]\nmax_line_bytes = {}\nmax_buffered_bytes = {BUDGET}\n\n[results_log]\npath = \"\"\n",
        MIB
    ))
    .start();
    // A request over 64 KiB: 20,000 values, 100 KiB.
    let (big, sum) = sum_line(20_000, 12345);
    let big = String::from_utf8(big).expect("ascii");
    let big = big.trim_end();
    let mut c = d.connect();
    assert_eq!(c.ask(big), format!("OK {sum}"), "before the attack");
    let connections_before = d.info_map()["connections"].clone();
    let parked: Vec<TcpStream> = (0..5)
        .map(|_| {
            let mut s = TcpStream::connect(d.tcp).expect("connect");
            s.write_all(&b"1 ".repeat(450_000)).expect("park 900 KB");
            s
        })
        .collect();
    // The daemon reads what it may of them, then they go.
    thread::sleep(Duration::from_millis(500));
    drop(parked);
    let gone = wait_until(Duration::from_secs(5), || {
        d.info_map()["connections"] == connections_before
    });
    thread::sleep(Duration::from_millis(200));
    let mut slow = Vec::new();
    let mut failures = Vec::new();
    let mut fresh = LineClient::try_connect(d.tcp, Duration::from_secs(5)).expect("connect");
    for i in 0..5 {
        let t = Instant::now();
        match fresh.try_ask(big) {
            Ok(r) if r == format!("OK {sum}") => slow.push(t.elapsed()),
            Ok(r) => failures.push(format!("request {i} answered {r:?}")),
            Err(e) => {
                failures.push(format!("request {i}: {}", io_failure(&e, t)));
                break;
            }
        }
    }
    let max = slow.iter().copied().max().unwrap_or_default();
    verdict(
        "parked 5 x 900 KB unfinished lines, then closed",
        vec![
            (!gone).then(|| {
                format!(
                    "promised the closed connections dropped; info still counts {} (before: \
                     {connections_before})",
                    d.info_map()["connections"]
                )
            }),
            (!failures.is_empty() || max > PROBE_BOUND).then(|| {
                format!(
                    "promised a 100 KiB request answered within {PROBE_BOUND:?} afterwards; seen {} answered{}{}",
                    slow.len(),
                    if slow.is_empty() {
                        String::new()
                    } else {
                        format!(" (the slowest in {max:?})")
                    },
                    if failures.is_empty() {
                        String::new()
                    } else {
                        format!(", then {}", failures.join("; "))
                    }
                )
            }),
        ],
        "",
    );
}

/// One legal 8 MiB JSON line (838,000 values) while a probe pings; sent
/// three times in a row, on new connections, so that a probe meets one.
#[test]
fn one_8_mib_json_line() {
    let _one_at_a_time = crate::exclusive();
    let d = Launch::line("[results_log]\npath = \"\"\n").start();
    let values = vec!["100000001"; 838_000].join(",");
    let line = format!("{{\"id\": \"big\", \"op\": \"sum\", \"values\": [{values}]}}");
    assert!(line.len() < 8 << 20);
    let want = serde_json::json!({"id": "big", "ok": true, "result": 838_000u64 * 100_000_001});
    let probe = Probe::start(d.tcp, "ping", "OK pong", Duration::from_millis(20));
    let mut wrong = None;
    for _ in 0..3 {
        thread::sleep(Duration::from_millis(100));
        let mut c = LineClient::try_connect(d.tcp, Duration::from_secs(60)).expect("connect");
        let reply = c.ask(&line);
        if serde_json::from_str::<serde_json::Value>(&reply).ok() != Some(want.clone()) {
            wrong.get_or_insert(reply);
        }
    }
    thread::sleep(Duration::from_millis(100));
    let probed = probe.finish();
    verdict(
        "one 8 MiB JSON line",
        vec![
            probed.broken(PROBE_BOUND, "ping on another connection"),
            wrong.map(|reply| format!("promised {want}; seen {reply:.200}")),
        ],
        "",
    );
}

/// One 8 MiB JSON line of nested arrays (30 deep, under the 32 allowed),
/// while a probe pings: a `parse` error, without a stall or a memory peak.
#[test]
fn one_8_mib_json_line_of_nested_arrays() {
    let _one_at_a_time = crate::exclusive();
    const BUDGET: u64 = 8 * MIB;
    let d = Launch::line(&format!(
        "[limits]\nmax_buffered_bytes = {BUDGET}\n\n[results_log]\npath = \"\"\n"
    ))
    .start();
    let nest = format!("{}1{}", "[".repeat(30), "]".repeat(30));
    let count = (8 * MIB as usize - 64) / (nest.len() + 1);
    let line = format!(
        "{{\"id\": \"deep\", \"op\": \"sum\", \"values\": [{}]}}",
        vec![nest; count].join(",")
    );
    assert!(line.len() < 8 << 20);
    let bound = MemoryBound::measure(&d, BUDGET, 2, PER_CONNECTION).with_line(8 * MIB, default_workers());
    let probe = Probe::start(d.tcp, "ping", "OK pong", Duration::from_millis(20));
    thread::sleep(Duration::from_millis(100));
    let mut c = LineClient::try_connect(d.tcp, Duration::from_secs(60)).expect("connect");
    let reply = c.ask(&line);
    thread::sleep(Duration::from_millis(100));
    let probed = probe.finish();
    let peak = proc::peak_rss(d.pid());
    let error = serde_json::from_str::<serde_json::Value>(&reply)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string));
    verdict(
        "one 8 MiB JSON line of nested arrays",
        vec![
            probed.broken(PROBE_BOUND, "ping on another connection"),
            bound.broken_by(peak, "memory"),
            (error.as_deref() != Some("parse"))
                .then(|| format!("promised a JSON `parse` error; seen {reply:.200}")),
        ],
        &format!("({} of nested arrays)", mib(line.len() as u64)),
    );
}

/// `max 1 2` (and other small requests) while a `pi 10000000000 2` keeps
/// both workers busy: each answered within 100 ms.
#[test]
fn max_1_2_during_pi_10000000000_2() {
    let _one_at_a_time = crate::exclusive();
    const BOUND: Duration = Duration::from_millis(100);
    let d = Launch::line("[server]\nworkers = 2\n\n[results_log]\npath = \"\"\n").start();
    let mut pi = d.connect();
    pi.send("#big pi 10000000000 2");
    assert!(
        wait_until(Duration::from_secs(5), || d.info_map()["running"] != "0"),
        "the pi task never started"
    );
    thread::sleep(Duration::from_millis(200));
    let mut c = LineClient::try_connect(d.tcp, Duration::from_secs(3)).expect("connect");
    let mut seen = Vec::new();
    let mut failures = Vec::new();
    // `max 1 2`, a list too long to be computed on the loop, and a small pi.
    let values: Vec<String> = (1..=100).map(|i| i.to_string()).collect();
    let requests = [
        ("max 1 2".to_string(), "OK 2".to_string()),
        (format!("sum {}", values.join(" ")), "OK 5050".to_string()),
        ("pi 1000 1".to_string(), "OK ".to_string()),
    ];
    for _ in 0..5 {
        for (req, want) in &requests {
            let t = Instant::now();
            match c.try_ask(req) {
                Ok(r) if r.starts_with(want.as_str()) => seen.push((req.clone(), t.elapsed())),
                Ok(r) => failures.push(format!("{req:.20} answered {r:?}")),
                Err(e) => {
                    failures.push(format!("{req:.20}: {}", io_failure(&e, t)));
                    break;
                }
            }
        }
        if !failures.is_empty() {
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
    let slow: Vec<String> = seen
        .iter()
        .filter(|(_, t)| *t > BOUND)
        .map(|(r, t)| format!("{r:.20} in {t:?}"))
        .collect();
    verdict(
        "small requests during pi 10000000000 2",
        vec![(!slow.is_empty() || !failures.is_empty()).then(|| {
            let mut seen_text = format!("{} answered in time", seen.len() - slow.len());
            if !slow.is_empty() {
                seen_text.push_str(&format!(", {} slow ({})", slow.len(), slow.join(", ")));
            }
            if !failures.is_empty() {
                seen_text.push_str(&format!(", then {}", failures.join("; ")));
            }
            format!("promised each answered within {BOUND:?} while pi runs; seen {seen_text}")
        })],
        "",
    );
}
