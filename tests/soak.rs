//! A soak against the real binary, bounded in time (20 s; `TASKD_SOAK_SECS`
//! overrides): 32 TCP clients pipelining windows of requests and 8 UDP
//! clients sending windows of datagrams, at the same time, each with ids of
//! its own and a mix of max, min, sum, mean, median, stats and pi, in text
//! and JSON, with values whose answers the client computes itself (taskd(8):
//! PROTOCOL, SCHEDULING AND RESOURCES). Over TCP nothing may be lost or misrouted; over UDP
//! nothing misrouted and little lost; the daemon's memory stays steady.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

use common::{Launch, Rng, proc};

const TCP_CLIENTS: usize = 32;
const UDP_CLIENTS: usize = 8;
/// Requests a TCP client writes before reading their replies.
const TCP_WINDOW: usize = 16;
/// Requests a UDP client has unanswered at most.
const UDP_WINDOW: usize = 8;
/// A TCP client reconnects after this many requests.
const PER_CONNECTION: usize = 1500;
/// An unanswered UDP request counts as lost after this long.
const UDP_PATIENCE: Duration = Duration::from_secs(2);
const DEFAULT_SECS: u64 = 20;

/// What the answer to a request must be.
#[derive(Debug, Clone, PartialEq)]
enum Expect {
    Num(f64),
    Stats([f64; 5]),
    Pi { samples: u64, chunks: u64 },
}

struct Request {
    id: String,
    line: String,
    json: bool,
    expect: Expect,
}

const LIST_OPS: [&str; 6] = ["max", "min", "sum", "mean", "median", "stats"];

/// The answer of a list operation on small integers, computed here: every
/// figure is exact in a double, and the mean is rounded once, as the daemon
/// must do too.
fn expected(op: &str, values: &[i64]) -> Expect {
    let n = values.len();
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let sum: i64 = values.iter().sum();
    let mean = sum as f64 / n as f64;
    let median = if n % 2 == 1 {
        sorted[n / 2] as f64
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) as f64 / 2.0
    };
    let (min, max) = (sorted[0] as f64, sorted[n - 1] as f64);
    match op {
        "max" => Expect::Num(max),
        "min" => Expect::Num(min),
        "sum" => Expect::Num(sum as f64),
        "mean" => Expect::Num(mean),
        "median" => Expect::Num(median),
        _ => Expect::Stats([n as f64, min, max, mean, median]),
    }
}

fn make_request(client: &str, user: &str, seq: u64, rng: &mut Rng) -> Request {
    let id = format!("{client}-{seq}");
    let json = rng.below(4) == 0;
    if rng.below(8) == 0 {
        let samples = 100 + rng.below(4900);
        let chunks = 1 + rng.below(4);
        let line = if json {
            format!(
                "{{\"id\": \"{id}\", \"user\": \"{user}\", \"op\": \"pi\", \"samples\": {samples}, \"chunks\": {chunks}}}"
            )
        } else {
            format!("#{id} @{user} pi {samples} {chunks}")
        };
        return Request {
            id,
            line,
            json,
            expect: Expect::Pi { samples, chunks },
        };
    }
    let op = LIST_OPS[rng.below(LIST_OPS.len() as u64) as usize];
    let n = 1 + rng.below(12) as usize;
    let values: Vec<i64> = (0..n).map(|_| rng.below(2001) as i64 - 1000).collect();
    let texts: Vec<String> = values.iter().map(i64::to_string).collect();
    let line = if json {
        format!(
            "{{\"id\": \"{id}\", \"user\": \"{user}\", \"op\": \"{op}\", \"values\": [{}]}}",
            texts.join(", ")
        )
    } else {
        // The separators of taskd(8)'s PROTOCOL, in turn.
        let list = match rng.below(3) {
            0 => texts.join(" "),
            1 => texts.join(","),
            _ => format!("[{}]", texts.join(", ")),
        };
        format!("#{id} @{user} {op} {list}")
    };
    Request {
        id,
        line,
        json,
        expect: expected(op, &values),
    }
}

/// A reply, split into its id and what it says.
enum Reply {
    Text(String),
    /// The result, and the whole line: serde_json (without its
    /// `float_roundtrip` feature) may parse a double 1 ulp off, so numbers
    /// are read from the line's own digits.
    Json(serde_json::Value, String),
    Err(String),
}

fn split_reply(line: &str) -> Option<(String, Reply)> {
    if line.starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        let id = v.get("id")?.as_str()?.to_string();
        return Some(if v["ok"] == true {
            (id, Reply::Json(v["result"].clone(), line.to_string()))
        } else {
            (id, Reply::Err(v["error"].as_str().unwrap_or("?").to_string()))
        });
    }
    let (id, rest) = line.strip_prefix('#')?.split_once(' ')?;
    if let Some(result) = rest.strip_prefix("OK ") {
        return Some((id.to_string(), Reply::Text(result.to_string())));
    }
    let code = rest.strip_prefix("ERR ")?.split(' ').next()?;
    Some((id.to_string(), Reply::Err(code.to_string())))
}

fn num(s: &str) -> Option<f64> {
    s.parse().ok()
}

/// The number after `"key":` in a JSON line, parsed from its digits.
fn json_num(line: &str, key: &str) -> Option<f64> {
    let at = line.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = line[at..].trim_start();
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '-' | '+' | '.' | 'e' | 'E')))
        .unwrap_or(rest.len());
    num(&rest[..end])
}

/// Whether a reply holds the expected answer, in the request's form.
fn correct(req_json: bool, expect: &Expect, reply: &Reply) -> bool {
    match (expect, reply) {
        (Expect::Num(x), Reply::Text(t)) if !req_json => num(t) == Some(*x),
        (Expect::Num(x), Reply::Json(v, line)) if req_json => {
            v.is_number() && json_num(line, "result") == Some(*x)
        }
        (Expect::Stats(want), Reply::Text(t)) if !req_json => {
            let fields: Vec<(&str, &str)> = t.split(' ').filter_map(|kv| kv.split_once('=')).collect();
            let keys = ["count", "min", "max", "mean", "median"];
            fields.len() == 5
                && fields
                    .iter()
                    .zip(keys.iter().zip(want))
                    .all(|((k, v), (wk, wv))| k == wk && num(v) == Some(*wv))
        }
        (Expect::Stats(want), Reply::Json(v, line)) if req_json => {
            let keys = ["count", "min", "max", "mean", "median"];
            v.as_object().is_some_and(|o| o.len() == 5)
                && keys
                    .iter()
                    .zip(want)
                    .all(|(k, wv)| v[k].is_number() && json_num(line, k) == Some(*wv))
        }
        (Expect::Pi { samples, chunks }, Reply::Text(t)) if !req_json => {
            let parts: Vec<&str> = t.split(' ').collect();
            parts.len() == 3
                && num(parts[0]).is_some_and(|p| (0.0..=4.0).contains(&p))
                && parts[1] == format!("samples={samples}")
                && parts[2] == format!("chunks={chunks}")
        }
        (Expect::Pi { samples, chunks }, Reply::Json(v, _)) if req_json => {
            v["pi"].as_f64().is_some_and(|p| (0.0..=4.0).contains(&p))
                && v["samples"].as_u64() == Some(*samples)
                && v["chunks"].as_u64() == Some(*chunks)
        }
        _ => false,
    }
}

#[derive(Default, Debug)]
struct Tally {
    sent: u64,
    answered: u64,
    lost: u64,
    misrouted: u64,
    /// UDP: answered after they had been given up as lost.
    late: u64,
    /// UDP: `ERR busy`, which taskd(8) allows when the incoming queue is full.
    busy: u64,
    connections: u64,
    /// The first few problems, for the failure message.
    notes: Vec<String>,
}

impl Tally {
    fn note(&mut self, s: String) {
        if self.notes.len() < 5 {
            self.notes.push(s);
        }
    }

    fn add(&mut self, o: Tally) {
        self.sent += o.sent;
        self.answered += o.answered;
        self.lost += o.lost;
        self.misrouted += o.misrouted;
        self.late += o.late;
        self.busy += o.busy;
        self.connections += o.connections;
        for n in o.notes {
            self.note(n);
        }
    }
}

/// One TCP client: windows of pipelined requests on one connection, whose
/// replies must come back in order, each with its own id and the right
/// answer; a new connection every `PER_CONNECTION` requests.
fn tcp_client(k: usize, addr: SocketAddr, deadline: Instant) -> Tally {
    let (name, user) = (format!("t{k}"), format!("soak-t{k}"));
    let mut rng = Rng(0x1234_5678_9abc_def1 ^ ((k as u64 + 1) << 17));
    let mut t = Tally::default();
    let mut seq = 0u64;
    'connections: while Instant::now() < deadline {
        let stream = match TcpStream::connect(addr) {
            Ok(s) => s,
            Err(e) => {
                t.note(format!("{name}: connect: {e}"));
                break;
            }
        };
        t.connections += 1;
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let _ = stream.set_nodelay(true);
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        let mut writer = stream;
        let mut on_connection = 0;
        while on_connection < PER_CONNECTION && Instant::now() < deadline {
            let batch: Vec<Request> = (0..TCP_WINDOW)
                .map(|_| {
                    seq += 1;
                    make_request(&name, &user, seq, &mut rng)
                })
                .collect();
            let mut bytes = String::new();
            for r in &batch {
                bytes.push_str(&r.line);
                bytes.push('\n');
            }
            if let Err(e) = writer.write_all(bytes.as_bytes()) {
                t.note(format!("{name}: write: {e}"));
                t.lost += batch.len() as u64;
                t.sent += batch.len() as u64;
                break 'connections;
            }
            t.sent += batch.len() as u64;
            on_connection += batch.len();
            for (i, r) in batch.iter().enumerate() {
                let mut line = String::new();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => {
                        t.note(format!("{name}: no reply to {:?} (EOF or timeout)", r.line));
                        t.lost += (batch.len() - i) as u64;
                        break 'connections;
                    }
                    Ok(_) => {}
                }
                let line = line.trim_end_matches('\n');
                match split_reply(line) {
                    Some((id, reply)) if id == r.id && correct(r.json, &r.expect, &reply) => t.answered += 1,
                    _ => {
                        t.misrouted += 1;
                        t.note(format!("{name}: {:?} answered {line:?}", r.line));
                    }
                }
            }
        }
        // Half-close: the daemon owes nothing more and closes.
        let _ = writer.shutdown(Shutdown::Write);
        let mut rest = String::new();
        match reader.read_to_string(&mut rest) {
            Ok(_) if rest.is_empty() => {}
            Ok(_) => {
                t.misrouted += rest.lines().count() as u64;
                t.note(format!("{name}: extra replies {rest:?}"));
            }
            Err(e) => t.note(format!("{name}: reading EOF: {e}")),
        }
    }
    t
}

/// One UDP client: at most `UDP_WINDOW` requests unanswered, sent in
/// datagrams of one to three lines; each reply must carry one of its own
/// ids and the right answer.
fn udp_client(k: usize, addr: SocketAddr, deadline: Instant) -> Tally {
    let (name, user) = (format!("u{k}"), format!("soak-u{k}"));
    let mut rng = Rng(0x0fed_cba9_8765_4321 ^ ((k as u64 + 1) << 23));
    let mut t = Tally::default();
    let s = UdpSocket::bind("127.0.0.1:0").expect("udp client");
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let mut pending: HashMap<String, (Request, Instant)> = HashMap::new();
    // Given up as lost, but a late reply must still be right.
    let mut given_up: HashMap<String, Request> = HashMap::new();
    let mut seq = 0u64;
    let mut buf = vec![0u8; 65536];
    let handle = |t: &mut Tally,
                  pending: &mut HashMap<String, (Request, Instant)>,
                  given_up: &mut HashMap<String, Request>,
                  text: &str| {
        let line = text.strip_suffix('\n').unwrap_or(text);
        let Some((id, reply)) = split_reply(line) else {
            t.misrouted += 1;
            t.note(format!("{name}: malformed reply {line:?}"));
            return;
        };
        let req = match pending.remove(&id) {
            Some((r, _)) => r,
            None => match given_up.remove(&id) {
                Some(r) => {
                    t.late += 1;
                    r
                }
                None => {
                    t.misrouted += 1;
                    t.note(format!("{name}: a reply not for this client: {line:?}"));
                    return;
                }
            },
        };
        match reply {
            Reply::Err(code) if code == "busy" => t.busy += 1,
            reply if correct(req.json, &req.expect, &reply) => t.answered += 1,
            _ => {
                t.misrouted += 1;
                t.note(format!("{name}: {:?} answered {line:?}", req.line));
            }
        }
    };
    while Instant::now() < deadline {
        while pending.len() < UDP_WINDOW {
            let lines = 1 + rng.below(3) as usize;
            let mut datagram = String::new();
            for _ in 0..lines {
                seq += 1;
                let r = make_request(&name, &user, seq, &mut rng);
                datagram.push_str(&r.line);
                datagram.push('\n');
                pending.insert(r.id.clone(), (r, Instant::now()));
            }
            s.send_to(datagram.as_bytes(), addr).expect("udp send");
            t.sent += lines as u64;
        }
        match s.recv(&mut buf) {
            Ok(n) => handle(
                &mut t,
                &mut pending,
                &mut given_up,
                &String::from_utf8_lossy(&buf[..n]),
            ),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("udp receive: {e}"),
        }
        let now = Instant::now();
        let expired: Vec<String> = pending
            .iter()
            .filter(|(_, (_, at))| now.duration_since(*at) > UDP_PATIENCE)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            if let Some((r, _)) = pending.remove(&id) {
                given_up.insert(id, r);
            }
        }
    }
    // The last replies, then whatever never came is lost.
    let drain_until = Instant::now() + UDP_PATIENCE;
    while !pending.is_empty() && Instant::now() < drain_until {
        if let Ok(n) = s.recv(&mut buf) {
            handle(
                &mut t,
                &mut pending,
                &mut given_up,
                &String::from_utf8_lossy(&buf[..n]),
            );
        }
    }
    t.lost = (pending.len() + given_up.len()) as u64;
    t
}

/// Kernel UDP counters of this network namespace (/proc/net/snmp):
/// receive buffer overflows, in errors.
fn kernel_udp_drops() -> u64 {
    let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let rows: Vec<&str> = snmp.lines().filter(|l| l.starts_with("Udp:")).collect();
    if rows.len() < 2 {
        return 0;
    }
    let names: Vec<&str> = rows[0].split_whitespace().collect();
    let values: Vec<&str> = rows[1].split_whitespace().collect();
    names
        .iter()
        .zip(&values)
        .find(|(n, _)| **n == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn soak_many_tcp_and_udp_clients_get_only_their_own_right_answers() {
    let secs = std::env::var("TASKD_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|&s| s > 0)
        .unwrap_or(DEFAULT_SECS);
    let d = Launch::line("").start();
    let pid = d.pid();
    let drops_before = kernel_udp_drops();
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let tcp: Vec<_> = (0..TCP_CLIENTS)
        .map(|k| {
            let addr = d.tcp;
            thread::spawn(move || tcp_client(k, addr, deadline))
        })
        .collect();
    let udp: Vec<_> = (0..UDP_CLIENTS)
        .map(|k| {
            let addr = d.udp;
            thread::spawn(move || udp_client(k, addr, deadline))
        })
        .collect();

    // Memory after a warm-up (a fifth of the run, 1 to 5 s), then sampled
    // every second until the end.
    let warm_up = Duration::from_secs((secs / 5).clamp(1, 5));
    thread::sleep(warm_up);
    let rss_start = proc::rss(pid);
    let mut rss_peak = rss_start;
    while Instant::now() < deadline {
        thread::sleep(Duration::from_secs(1).min(deadline.saturating_duration_since(Instant::now())));
        rss_peak = rss_peak.max(proc::rss(pid));
    }
    let mut tcp_total = Tally::default();
    for h in tcp {
        tcp_total.add(h.join().expect("tcp client"));
    }
    let mut udp_total = Tally::default();
    for h in udp {
        udp_total.add(h.join().expect("udp client"));
    }
    let rss_end = proc::rss(pid);
    rss_peak = rss_peak.max(rss_end);
    let kernel_drops = kernel_udp_drops().saturating_sub(drops_before);
    let info = d.info_map();
    let figure = |k: &str| info.get(k).cloned().unwrap_or_else(|| "?".into());
    let elapsed = start.elapsed().as_secs_f64();
    let requests = tcp_total.sent + udp_total.sent;
    let udp_loss = udp_total.lost as f64 / udp_total.sent.max(1) as f64;
    println!(
        "soak {secs} s: {requests} requests ({:.0}/s); \
         tcp {} clients, {} connections: sent {} answered {} lost {} misrouted {}; \
         udp {} clients: sent {} answered {} (late {}) busy {} lost {} ({:.3}%) misrouted {}; \
         kernel UDP receive-buffer drops {kernel_drops}, daemon udp_replies_dropped {} udp_lines_dropped {}; \
         daemon done {} failed {}; RSS start {rss_start} KiB, end {rss_end} KiB, peak {rss_peak} KiB",
        requests as f64 / elapsed,
        TCP_CLIENTS,
        tcp_total.connections,
        tcp_total.sent,
        tcp_total.answered,
        tcp_total.lost,
        tcp_total.misrouted,
        UDP_CLIENTS,
        udp_total.sent,
        udp_total.answered,
        udp_total.late,
        udp_total.busy,
        udp_total.lost,
        100.0 * udp_loss,
        udp_total.misrouted,
        figure("udp_replies_dropped"),
        figure("udp_lines_dropped"),
        figure("done"),
        figure("failed"),
    );
    let notes = || {
        tcp_total
            .notes
            .iter()
            .chain(&udp_total.notes)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(tcp_total.sent > 0 && udp_total.sent > 0, "nothing was sent");
    assert_eq!(tcp_total.lost, 0, "TCP requests without a reply:\n{}", notes());
    assert_eq!(
        tcp_total.misrouted,
        0,
        "TCP replies wrong or not ours:\n{}",
        notes()
    );
    assert_eq!(tcp_total.answered, tcp_total.sent, "{}", notes());
    assert_eq!(
        udp_total.misrouted,
        0,
        "UDP replies wrong or not ours:\n{}",
        notes()
    );
    assert!(
        udp_loss < 0.05,
        "{} of {} UDP requests lost ({:.2}%)",
        udp_total.lost,
        udp_total.sent,
        100.0 * udp_loss
    );
    assert!(
        rss_end <= rss_start + 64 * 1024,
        "daemon RSS grew from {rss_start} KiB to {rss_end} KiB during the soak"
    );
}
