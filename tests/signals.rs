//! Signals against the real binary (taskd(8), SIGNALS): SIGTERM/SIGINT drain
//! under load, the shutdown timeout, drain_delay_s, SIGHUP reloads (new,
//! broken, removed listeners) and SIGUSR1 reopening the results log
//! (section 6).

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Launch, LineClient, free_port, line_config, wait_until};

/// Client connections of the drain test.
const CLIENTS: usize = 4;
/// Requests a client keeps outstanding while loading the daemon: enough
/// pi tasks that the daemon is still busy for a good while after SIGTERM.
const OUTSTANDING: usize = 16;
/// Requests each client sends after SIGTERM, which must be refused.
const AFTER_SIGNAL: usize = 10;
/// Tens of milliseconds each, even on the vectorized kernel.
const PI_SAMPLES: u64 = 100_000_000;

/// Request `i` of client `c`: its line, and its OK reply when it is not a pi
/// (None: a pi estimate).
fn load_request(c: usize, i: usize) -> (String, Option<String>) {
    let id = format!("c{c}-{i}");
    if i.is_multiple_of(2) {
        (format!("#{id} pi {PI_SAMPLES}"), None)
    } else {
        (format!("#{id} sum {i} {c}"), Some(format!("#{id} OK {}", i + c)))
    }
}

/// Whether `got` is a plausible `#id OK <pi> samples=PI_SAMPLES chunks=K`.
fn is_pi_reply(got: &str, id: &str) -> bool {
    let Some(rest) = got.strip_prefix(&format!("#{id} OK ")) else {
        return false;
    };
    let f: Vec<&str> = rest.split(' ').collect();
    f.len() == 3
        && f[0].parse::<f64>().is_ok_and(|p| (2.5..=3.8).contains(&p))
        && f[1] == format!("samples={PI_SAMPLES}")
        && f[2].starts_with("chunks=")
}

struct ClientRun {
    client: usize,
    /// Number of request lines written (ids c{client}-0 .. sent-1).
    sent: usize,
    /// Lines written before the writer noticed the signal.
    sent_before_signal: usize,
    replies: Vec<String>,
    /// OK replies read after the signal (tasks in flight at SIGTERM).
    ok_after_signal: usize,
    write_error: Option<String>,
    read_error: Option<String>,
}

/// One pipelining client: a writer thread keeps `OUTSTANDING` requests in
/// flight until `signalled`, then sends `AFTER_SIGNAL` more and half-closes;
/// this thread reads every reply until EOF.
fn load_client(
    addr: SocketAddr,
    client: usize,
    signalled: Arc<AtomicBool>,
    total: Arc<AtomicUsize>,
) -> ClientRun {
    let stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(40)))
        .expect("read timeout");
    let received = Arc::new(AtomicUsize::new(0));
    let mut w = stream.try_clone().expect("clone");
    let (sig, rcv) = (Arc::clone(&signalled), Arc::clone(&received));
    let writer = std::thread::spawn(move || {
        let mut sent = 0;
        let mut before = None;
        let mut error = None;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if sig.load(Ordering::SeqCst) {
                let b = *before.get_or_insert(sent);
                if sent - b >= AFTER_SIGNAL {
                    break;
                }
            } else if sent - rcv.load(Ordering::SeqCst) >= OUTSTANDING {
                if Instant::now() > deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            let (line, _) = load_request(client, sent);
            if let Err(e) = w.write_all(format!("{line}\n").as_bytes()) {
                error = Some(format!("writing request {sent}: {e}"));
                break;
            }
            sent += 1;
        }
        let _ = w.shutdown(Shutdown::Write);
        (sent, before.unwrap_or(sent), error)
    });
    let mut reader = BufReader::new(stream);
    let mut replies = Vec::new();
    let mut ok_after_signal = 0;
    let mut read_error = None;
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) => break,
            Ok(_) => {
                let line = line.trim_end_matches('\n').to_string();
                if signalled.load(Ordering::SeqCst) && line.contains(" OK ") {
                    ok_after_signal += 1;
                }
                replies.push(line);
                received.fetch_add(1, Ordering::SeqCst);
                total.fetch_add(1, Ordering::SeqCst);
            }
            Err(e) => {
                read_error = Some(format!("reading reply {}: {e}", replies.len()));
                break;
            }
        }
    }
    let (sent, sent_before_signal, write_error) = writer.join().expect("writer thread");
    ClientRun {
        client,
        sent,
        sent_before_signal,
        replies,
        ok_after_signal,
        write_error,
        read_error,
    }
}

/// The JSON lines of a results log file; every line must be valid JSON.
fn log_lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    text.lines()
        .enumerate()
        .map(|(n, l)| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{} line {}: not JSON ({e}): {l:?}", path.display(), n + 1))
        })
        .collect()
}

/// The id of a results log line as text (ids may be logged as numbers).
fn log_id(v: &serde_json::Value) -> Option<String> {
    match &v["id"] {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[test]
fn sigterm_under_load_answers_every_request_once_and_exits_0() {
    const TIMEOUT_S: u64 = 20;
    let mut d = Launch::line(&format!("[server]\nshutdown_timeout_s = {TIMEOUT_S}\n")).start();
    let signalled = Arc::new(AtomicBool::new(false));
    let total = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (addr, sig, tot) = (d.tcp, Arc::clone(&signalled), Arc::clone(&total));
            std::thread::spawn(move || load_client(addr, c, sig, tot))
        })
        .collect();
    // Load first: some replies back, and every client with requests in flight.
    assert!(
        wait_until(Duration::from_secs(10), || total.load(Ordering::SeqCst) >= 40),
        "the daemon answered only {} requests under load",
        total.load(Ordering::SeqCst)
    );
    d.send_signal(libc::SIGTERM);
    let signal_at = Instant::now();
    // Requests sent from now on must be refused: the daemon must have seen
    // the signal first (kill(2) returns before it is handled, and a fast
    // daemon could read a request sent right after it before noticing).
    assert!(
        wait_until(Duration::from_secs(5), || d.stderr().contains("draining:")),
        "no drain logged after SIGTERM"
    );
    signalled.store(true, Ordering::SeqCst);
    let runs: Vec<ClientRun> = clients
        .into_iter()
        .map(|t| t.join().expect("client thread"))
        .collect();
    let status = d.wait_exit(Duration::from_secs(TIMEOUT_S + 5).saturating_sub(signal_at.elapsed()));
    let stderr = d.stderr();

    let mut accepted = 0;
    let mut refused = 0;
    let mut ok_after_signal = 0;
    let mut problems = Vec::new();
    // id -> whether its reply was OK.
    let mut answered: HashMap<String, bool> = HashMap::new();
    for run in &runs {
        let c = run.client;
        if let Some(e) = &run.write_error {
            problems.push(format!("client {c}: {e}"));
        }
        if let Some(e) = &run.read_error {
            problems.push(format!("client {c}: {e}"));
        }
        if run.replies.len() != run.sent {
            problems.push(format!(
                "client {c}: {} request lines sent ({} before SIGTERM), {} replies before EOF; last replies: {:?}",
                run.sent,
                run.sent_before_signal,
                run.replies.len(),
                &run.replies[run.replies.len().saturating_sub(3)..]
            ));
        }
        ok_after_signal += run.ok_after_signal;
        let mut refusing = false;
        for (i, got) in run.replies.iter().enumerate() {
            // Replies come in request order, one per request: reply i is for request i.
            let id = format!("c{c}-{i}");
            let (_, expect) = load_request(c, i);
            let ok = match &expect {
                Some(e) => got == e,
                None => is_pi_reply(got, &id),
            };
            let shutting_down = got.starts_with(&format!("#{id} ERR shutting-down"));
            if ok && !refusing {
                accepted += 1;
            } else if shutting_down {
                refusing = true;
                refused += 1;
            } else {
                problems.push(format!(
                    "client {c} request {i}: expected {} (or, once refusing, #{id} ERR shutting-down), got {got:?}",
                    expect.as_deref().unwrap_or("a pi estimate"),
                ));
            }
            if answered.insert(id.clone(), ok).is_some() {
                problems.push(format!("{id} answered twice"));
            }
        }
        if !refusing && run.sent > run.sent_before_signal {
            problems.push(format!(
                "client {c}: {} requests sent after SIGTERM, none answered shutting-down",
                run.sent - run.sent_before_signal
            ));
        }
    }
    println!(
        "drain under load: {} answered = {accepted} accepted (OK) + {refused} refused (shutting-down); \
         {ok_after_signal} OK replies arrived after SIGTERM",
        accepted + refused
    );
    assert!(problems.is_empty(), "{}\nstderr:\n{stderr}", problems.join("\n"));
    assert!(
        ok_after_signal > 0,
        "no task in flight at SIGTERM was answered after it"
    );
    let status = status.unwrap_or_else(|| {
        panic!("taskd did not exit within shutdown_timeout_s + 5 s after SIGTERM\n{stderr}")
    });
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM\n{stderr}");

    // The results log: every answered request exactly once, ok as replied.
    let mut logged: HashMap<String, Vec<bool>> = HashMap::new();
    for v in log_lines(&d.file("results.log")) {
        if let Some(id) = log_id(&v).filter(|id| id.starts_with('c')) {
            logged
                .entry(id)
                .or_default()
                .push(v["ok"].as_bool().expect("ok is a bool"));
        }
    }
    let ok_lines = logged.values().flatten().filter(|ok| **ok).count();
    assert_eq!(ok_lines, accepted, "ok lines in results.log vs OK replies");
    for (id, ok) in &answered {
        assert_eq!(
            logged.get(id).map(Vec::as_slice),
            Some(&[*ok][..]),
            "results.log lines for {id}"
        );
    }
    assert_eq!(
        logged.len(),
        answered.len(),
        "results.log has lines for requests never answered"
    );
}

#[test]
fn shutdown_timeout_answers_a_running_task_shutting_down() {
    // Far more samples than the vectorized kernel runs in the timeout.
    let mut d =
        Launch::line("[server]\nshutdown_timeout_s = 1\n\n[ops.pi]\nmax_samples = 1000000000000\n").start();
    let mut c = d.connect();
    c.send("#big pi 1000000000000");
    assert!(
        wait_until(Duration::from_secs(5), || d.info_map()["running"] != "0"),
        "the pi task never started"
    );
    d.send_signal(libc::SIGTERM);
    let signal_at = Instant::now();
    let reply = c.line();
    assert!(
        reply
            .as_deref()
            .is_some_and(|r| r.starts_with("#big ERR shutting-down")),
        "reply to the running pi after the shutdown timeout: {reply:?}"
    );
    let status = d.wait_exit(Duration::from_secs(4).saturating_sub(signal_at.elapsed()));
    let stderr = d.stderr();
    let status = status.unwrap_or_else(|| panic!("taskd still running 4 s after SIGTERM\n{stderr}"));
    assert_eq!(status.code(), Some(0), "{stderr}");
    // The abandoned task was answered, so it is in the results log.
    let lines: Vec<_> = log_lines(&d.file("results.log"))
        .into_iter()
        .filter(|v| log_id(v).as_deref() == Some("big"))
        .collect();
    assert!(
        lines.len() == 1 && lines[0]["ok"] == false && lines[0]["error"] == "shutting-down",
        "results.log lines for the abandoned task: {lines:?}"
    );
}

#[test]
fn drain_delay_keeps_serving_then_refuses() {
    let mut d = Launch::line(
        "[server]\ndrain_delay_s = 1\nshutdown_timeout_s = 3\n\n[ops.pi]\nmax_samples = 1000000000000\n",
    )
    .start();
    // A long task keeps the drain going past the delay (an idle daemon may
    // exit as soon as it starts refusing); one chunk, so a worker stays free
    // for the small requests.
    let mut long = d.connect();
    // 10^12 samples: minutes even for the vectorized kernel (10^10, the default largest,
    // takes 4 s in a debug build, about the drain's length).
    long.send("#long pi 1000000000000 1");
    let mut c = d.connect();
    assert_eq!(c.ask("#warm sum 1 2"), "#warm OK 3");
    d.send_signal(libc::SIGTERM);
    assert_eq!(
        c.ask("#a sum 1 2"),
        "#a OK 3",
        "right after SIGTERM, within drain_delay_s"
    );
    let mut served = 1;
    let mut refused = None;
    let deadline = Instant::now() + Duration::from_secs(5);
    for i in 0.. {
        assert!(Instant::now() < deadline, "never refused after drain_delay_s");
        let id = format!("p{i}");
        let reply = c.ask(&format!("#{id} sum 2 2"));
        if reply == format!("#{id} OK 4") {
            served += 1;
        } else {
            refused = Some(reply);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let refused = refused.expect("a reply");
    assert!(
        refused.starts_with('#') && refused.contains(" ERR shutting-down"),
        "after drain_delay_s: {refused:?}"
    );
    println!("drain_delay_s = 1: {served} requests served after SIGTERM, then {refused:?}");
    // Still refusing (not closing) while the long task runs; UDP too.
    assert!(c.ask("#z max 1").starts_with("#z ERR shutting-down"));
    let udp = d.udp("#u sum 1 1");
    assert!(
        udp.starts_with("#u ERR shutting-down"),
        "UDP while draining: {udp:?}"
    );
    let last = long.line();
    assert!(
        last.as_deref()
            .is_some_and(|r| r.starts_with("#long ERR shutting-down")),
        "the long task at the shutdown timeout: {last:?}"
    );
    let status = d.wait_exit(Duration::from_secs(8));
    let stderr = d.stderr();
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{stderr}");
}

#[test]
fn sigint_drains_like_sigterm() {
    let mut d = Launch::line("[server]\nshutdown_timeout_s = 20\n").start();
    let mut busy = d.connect();
    // Seconds of work on one worker (even on the vectorized kernel): still
    // running when SIGINT arrives, done well within the timeout.
    busy.send("#inflight pi 10000000000 1");
    assert!(
        wait_until(Duration::from_secs(5), || d.info_map()["running"] != "0"),
        "the pi task never started"
    );
    let mut other = d.connect();
    d.send_signal(libc::SIGINT);
    let refused = wait_until(Duration::from_secs(5), || {
        other.ask("#new sum 1 1").starts_with("#new ERR shutting-down")
    });
    assert!(refused, "new requests after SIGINT are not refused");
    let reply = busy.line().unwrap_or_default();
    assert!(
        reply.starts_with("#inflight OK ") && reply.contains("samples=10000000000"),
        "the task in flight at SIGINT: {reply:?}"
    );
    let status = d.wait_exit(Duration::from_secs(25));
    let stderr = d.stderr();
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{stderr}");
}

/// Whether a UDP request to `addr` gets its reply within 200 ms.
fn udp_answers(addr: SocketAddr) -> bool {
    let s = UdpSocket::bind("127.0.0.1:0").expect("udp client");
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    if s.send_to(b"#u sum 4 5\n", addr).is_err() {
        return false;
    }
    let mut buf = [0u8; 512];
    matches!(s.recv(&mut buf), Ok(n) if &buf[..n] == b"#u OK 9\n")
}

#[test]
fn sighup_adds_a_udp_listener_and_keeps_the_old_ones() {
    let d = Launch::line("").start();
    let mut before = d.connect();
    assert_eq!(before.ask("ping"), "OK pong");
    let new_port = free_port().expect("a free port");
    let new_addr: SocketAddr = format!("127.0.0.1:{new_port}").parse().unwrap();
    assert!(!udp_answers(new_addr), "something already answers on {new_addr}");
    d.rewrite_config(&line_config(
        d.port,
        &format!("[[listener]]\nproto = \"udp\"\naddress = \"{new_addr}\"\n"),
    ));
    d.send_signal(libc::SIGHUP);
    assert!(
        wait_until(Duration::from_secs(5), || udp_answers(new_addr)),
        "the new UDP listener {new_addr} does not answer after SIGHUP\n{}",
        d.stderr()
    );
    assert_eq!(
        before.ask("#old max 1 9"),
        "#old OK 9",
        "connection opened before SIGHUP"
    );
    assert_eq!(d.session(&["#new min 1 9"]), ["#new OK 1"], "old TCP listener");
    assert_eq!(d.udp("#o sum 1 1"), "#o OK 2", "old UDP listener");
    assert_eq!(d.info_map()["last_reload_ok"], "true");
}

#[test]
fn sighup_with_a_broken_config_keeps_the_old_one() {
    let d = Launch::line("").start();
    let mut before = d.connect();
    assert_eq!(before.ask("ping"), "OK pong");
    let good = line_config(d.port, "");
    let broken = format!("{good}[server]\nworkers = 2\nno_such_key = 1\n");
    let line = broken
        .lines()
        .position(|l| l.starts_with("no_such_key"))
        .expect("the key's line")
        + 1;
    d.rewrite_config(&broken);
    d.send_signal(libc::SIGHUP);
    assert!(
        wait_until(Duration::from_secs(5), || d.info_map()["last_reload_ok"]
            == "false"),
        "info does not say last_reload_ok=false after a broken reload\n{}",
        d.stderr()
    );
    assert_eq!(
        before.ask("#b sum 1 2"),
        "#b OK 3",
        "connection opened before SIGHUP"
    );
    assert_eq!(d.session(&["#n sum 3 4"]), ["#n OK 7"], "new connection");
    assert_eq!(d.udp("#u sum 1 1"), "#u OK 2");
    let stderr = d.stderr();
    let named = format!("{}:{line}", d.config.display());
    assert!(
        stderr
            .lines()
            .any(|l| l.contains(&named) && l.contains("no_such_key")),
        "stderr does not name {named} and no_such_key:\n{stderr}"
    );
    d.rewrite_config(&good);
    d.send_signal(libc::SIGHUP);
    assert!(
        wait_until(Duration::from_secs(5), || d.info_map()["last_reload_ok"]
            == "true"),
        "info does not say last_reload_ok=true after the fixed reload\n{}",
        d.stderr()
    );
    assert_eq!(before.ask("#c sum 5 5"), "#c OK 10");
}

#[test]
fn sighup_removing_a_listener_keeps_its_open_connections() {
    let extra_port = free_port().expect("a free port");
    let extra: SocketAddr = format!("127.0.0.1:{extra_port}").parse().unwrap();
    let d = Launch::line(&format!("[[listener]]\nproto = \"tcp\"\naddress = \"{extra}\"\n")).start();
    let mut old = LineClient::connect(extra);
    assert_eq!(old.ask("#1 sum 1 1"), "#1 OK 2");
    d.rewrite_config(&line_config(d.port, ""));
    d.send_signal(libc::SIGHUP);
    let closed = wait_until(Duration::from_secs(5), || {
        match TcpStream::connect_timeout(&extra, Duration::from_millis(200)) {
            Err(e) => e.kind() == ErrorKind::ConnectionRefused,
            Ok(_) => false,
        }
    });
    assert!(
        closed,
        "{extra} still accepts connections after its listener was removed"
    );
    assert_eq!(
        old.ask("#2 sum 2 2"),
        "#2 OK 4",
        "a connection opened before the reload"
    );
    assert_eq!(old.ask("#3 max 2 7"), "#3 OK 7");
    assert_eq!(d.session(&["ping"]), ["OK pong"], "the kept listener");
    assert_eq!(d.info_map()["last_reload_ok"], "true");
}

/// Whether `path` holds a results log line with id `id`.
fn logged(path: &std::path::Path, id: &str) -> bool {
    std::fs::read_to_string(path).is_ok_and(|t| {
        t.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .any(|v| log_id(&v).as_deref() == Some(id))
    })
}

#[test]
fn sigusr1_reopens_the_results_log() {
    let d = Launch::line("").start();
    let log = d.file("results.log");
    let old = d.file("results.log.1");
    let mut c = d.connect();
    for i in 0..5 {
        assert_eq!(
            c.ask(&format!("#before{i} sum {i} 1")),
            format!("#before{i} OK {}", i + 1)
        );
    }
    assert!(
        wait_until(Duration::from_secs(5), || logged(&log, "before4")),
        "results.log never got the first lines"
    );
    std::fs::rename(&log, &old).expect("rename results.log");
    d.send_signal(libc::SIGUSR1);
    assert!(
        wait_until(Duration::from_secs(5), || log.exists()),
        "no fresh results.log after SIGUSR1\n{}",
        d.stderr()
    );
    for i in 0..5 {
        assert_eq!(
            c.ask(&format!("#after{i} sum {i} 2")),
            format!("#after{i} OK {}", i + 2)
        );
    }
    assert!(
        wait_until(Duration::from_secs(5), || logged(&log, "after4")),
        "new lines do not reach the fresh results.log"
    );
    let ids = |p: &std::path::Path| -> Vec<String> { log_lines(p).iter().filter_map(log_id).collect() };
    let (new_ids, old_ids) = (ids(&log), ids(&old));
    for i in 0..5 {
        assert!(
            old_ids.contains(&format!("before{i}")),
            "results.log.1: {old_ids:?}"
        );
        assert!(new_ids.contains(&format!("after{i}")), "results.log: {new_ids:?}");
    }
    assert!(
        !old_ids.iter().any(|id| id.starts_with("after")),
        "new lines went to results.log.1: {old_ids:?}"
    );
    assert!(
        !new_ids.iter().any(|id| id.starts_with("before")),
        "old lines in the fresh results.log: {new_ids:?}"
    );
}

/// The worker threads of a daemon (named taskd-worker-N).
fn worker_threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|t| {
                    std::fs::read_to_string(t.path().join("comm"))
                        .is_ok_and(|c| c.starts_with("taskd-worker"))
                })
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn sighup_shrinks_and_grows_the_worker_pool() {
    let d = Launch::line("[server]\nworkers = 4\n").start();
    assert_eq!(d.info_map()["workers"], "4");
    assert!(wait_until(Duration::from_secs(5), || worker_threads(d.pid()) == 4));
    for (workers, want) in [(1, "1"), (3, "3")] {
        d.rewrite_config(&line_config(d.port, &format!("[server]\nworkers = {workers}\n")));
        d.send_signal(libc::SIGHUP);
        assert!(
            wait_until(Duration::from_secs(5), || d.info_map()["workers"] == want),
            "info after SIGHUP with workers = {workers}: {:?}",
            d.info_map()
        );
        // Surplus workers finish their job and exit.
        assert!(
            wait_until(Duration::from_secs(5), || worker_threads(d.pid()) == workers),
            "{} worker threads for workers = {workers}",
            worker_threads(d.pid())
        );
        let r = d.connect().ask("#p pi 100000 3");
        assert!(
            r.starts_with("#p OK ") && r.ends_with(" samples=100000 chunks=3"),
            "{r}"
        );
    }
}
