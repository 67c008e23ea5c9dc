//! The line protocol over TCP against the real binary: pipelining, many
//! clients, disconnects, framing (half-close, unterminated lines, `\r\n`,
//! blank lines, over-long lines), `quit`, limits, idle timeout,
//! backpressure, `users`, `info`, `help` and access control (taskd(8):
//! PROTOCOL, SCHEDULING AND RESOURCES, LIMITS AND SECURITY).

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use common::{Daemon, Launch, LineClient, parse_users};

/// Every error code of taskd(8), ERRORS, in its table's order.
const CODES: [&str; 11] = [
    "too-long",
    "shutting-down",
    "parse",
    "unknown-op",
    "denied",
    "tcp-only",
    "too-many",
    "empty",
    "range",
    "busy",
    "internal",
];

/// Every operation of taskd(8), OPERATIONS.
const OP_NAMES: [&str; 12] = [
    "ping", "max", "min", "sum", "mean", "median", "stats", "pi", "users", "info", "help", "quit",
];

/// What a reply must be.
enum Expect {
    /// Exactly this line.
    Exact(String),
    /// A pi estimate for this id and sample count (the digits are random).
    Pi { id: String, samples: u64 },
}

impl Expect {
    fn check(&self, got: &str) -> Result<(), String> {
        match self {
            Expect::Exact(e) if e == got => Ok(()),
            Expect::Exact(e) => Err(format!("expected {e:?}, got {got:?}")),
            Expect::Pi { id, samples } => check_pi(got, Some(id), *samples),
        }
    }
}

/// Checks `[#id ]OK <estimate> samples=N chunks=K` with a plausible estimate.
fn check_pi(got: &str, id: Option<&str>, samples: u64) -> Result<(), String> {
    let rest = match id {
        Some(id) => got.strip_prefix(&format!("#{id} ")),
        None => Some(got),
    };
    let fields: Vec<&str> = rest
        .and_then(|r| r.strip_prefix("OK "))
        .map(|r| r.split(' ').collect())
        .unwrap_or_default();
    let ok = fields.len() == 3
        && fields[0].parse::<f64>().is_ok_and(|p| (0.0..=4.0).contains(&p))
        && fields[1] == format!("samples={samples}")
        && fields[2]
            .strip_prefix("chunks=")
            .and_then(|k| k.parse::<u64>().ok())
            .is_some_and(|k| (1..=samples.min(1024)).contains(&k));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "expected a pi reply for {id:?} with samples={samples}, got {got:?}"
        ))
    }
}

/// Request number `i` of the pipelined mix, with the reply it must get.
fn mixed_request(i: u64) -> (String, Expect) {
    let id = format!("r{i}");
    if i % 50 == 49 {
        return (format!("#{id} pi 2000"), Expect::Pi { id, samples: 2000 });
    }
    let (req, result) = match i % 6 {
        0 => (format!("sum {i} 1"), format!("{}", i + 1)),
        1 => (format!("max {i} {} 3", i + 5), format!("{}", i + 5)),
        2 => (format!("min {i},-{i}"), format!("-{i}")),
        3 => (format!("mean [{i}, {}]", i + 2), format!("{}", i + 1)),
        4 => (format!("median {i} 1 {}", 2 * i + 2), format!("{i}")),
        _ => (
            format!("stats {i}\t{}", i + 2),
            format!("count=2 min={i} max={} mean={} median={}", i + 2, i + 1, i + 1),
        ),
    };
    (
        format!("#{id} {req}"),
        Expect::Exact(format!("#{id} OK {result}")),
    )
}

/// Reads reply lines until EOF, at most `max` of them (more fails the test).
fn read_to_eof(c: &mut LineClient, max: usize) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(l) = c.line() {
        out.push(l);
        assert!(out.len() <= max, "more than {max} replies: {out:#?}");
    }
    out
}

#[test]
fn ten_thousand_pipelined_requests_come_back_in_order() {
    const N: u64 = 10_000;
    let d = Launch::line("").start();
    let stream = TcpStream::connect(d.tcp).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("read timeout");
    let mut requests = Vec::new();
    let mut expected = Vec::new();
    for i in 0..N {
        let (req, exp) = mixed_request(i);
        requests.extend_from_slice(req.as_bytes());
        requests.push(b'\n');
        expected.push(exp);
    }
    let mut writer = stream.try_clone().expect("clone");
    let started = Instant::now();
    // Written from another thread while this one reads, so neither side
    // waits for the other with full buffers.
    let sender = std::thread::spawn(move || {
        writer.write_all(&requests).expect("write the requests");
        writer.shutdown(Shutdown::Write).expect("half-close");
    });
    let mut reader = BufReader::new(stream);
    let mut replies = Vec::with_capacity(N as usize);
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line).expect("read a reply");
        if n == 0 {
            break;
        }
        replies.push(line.trim_end_matches('\n').to_string());
        assert!(replies.len() as u64 <= N, "more replies than requests");
    }
    let elapsed = started.elapsed();
    sender.join().expect("sender thread");
    println!(
        "{N} pipelined requests: {:.0} replies/s ({elapsed:?})",
        N as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(replies.len() as u64, N, "every request answered before EOF");
    let bad: Vec<String> = expected
        .iter()
        .zip(&replies)
        .enumerate()
        .filter_map(|(i, (e, got))| e.check(got).err().map(|m| format!("request {i}: {m}")))
        .take(10)
        .collect();
    assert!(
        bad.is_empty(),
        "wrong or out-of-order replies:\n{}",
        bad.join("\n")
    );
}

#[test]
fn hundred_concurrent_clients_each_get_their_own_replies_in_order() {
    let d = Launch::line("").start();
    let addr = d.tcp;
    let threads: Vec<_> = (0..100u64)
        .map(|c| {
            std::thread::spawn(move || {
                let mut client = LineClient::connect(addr);
                let mut expected = Vec::new();
                for j in 0..50u64 {
                    // Values unique to this client: a misrouted reply shows.
                    let v = (c + 1) * 1_000_000 + j;
                    let (req, res) = match j % 4 {
                        0 => (format!("max {v} 1"), format!("{v}")),
                        1 => (format!("sum {v} 0 0"), format!("{v}")),
                        2 => (format!("median {} {v} {}", v - 1, v + 1), format!("{v}")),
                        _ => (format!("min {v} {}", v + 7), format!("{v}")),
                    };
                    client.send(&format!("#c{c}-{j} {req}"));
                    expected.push(format!("#c{c}-{j} OK {res}"));
                }
                let replies = client.finish();
                assert_eq!(replies, expected, "client {c}");
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a client thread failed");
    }
    assert_eq!(d.session(&["ping"]), ["OK pong"]);
}

#[test]
fn a_client_leaving_mid_task_does_not_disturb_others() {
    let mut d = Launch::line("").start();
    let addr = d.tcp;
    let normal = std::thread::spawn(move || {
        // One request at a time (the client sets TCP_NODELAY: no Nagle
        // delay between them).
        let mut c = LineClient::connect(addr);
        for i in 0..200u64 {
            assert_eq!(
                c.ask(&format!("#n{i} sum {i} {i}")),
                format!("#n{i} OK {}", 2 * i)
            );
        }
    });
    for _ in 0..3 {
        let mut leaver = d.connect();
        for k in 0..6 {
            leaver.send(&format!("#gone{k} pi 5000000"));
        }
        drop(leaver);
    }
    // One that reads part of its replies, then resets the connection.
    let mut partial = d.connect();
    for k in 0..6 {
        partial.send(&format!("#p{k} pi 5000000"));
    }
    check_pi(&partial.line().expect("a reply"), Some("p0"), 5_000_000).unwrap();
    drop(partial);
    normal.join().expect("the normal client failed");
    let mut c = d.connect();
    assert_eq!(c.ask("ping"), "OK pong");
    check_pi(&c.ask("pi 5000000"), None, 5_000_000).unwrap();
    assert_eq!(c.ask("#z max 1 2"), "#z OK 2");
    assert!(d.try_wait().is_none(), "taskd exited: {}", d.stderr());
}

#[test]
fn half_close_gets_every_reply_then_eof() {
    let d = Launch::line("").start();
    let mut c = d.connect();
    c.send("#1 pi 100000");
    c.send("#2 sum 1 2 3");
    c.send("#3 stats 7 8 54 89");
    c.send("#4 ping");
    let replies = c.finish();
    assert_eq!(replies.len(), 4, "{replies:?}");
    check_pi(&replies[0], Some("1"), 100_000).unwrap();
    assert_eq!(
        replies[1..],
        [
            "#2 OK 6",
            "#3 OK count=4 min=7 max=89 mean=39.5 median=31",
            "#4 OK pong"
        ]
    );
}

#[test]
fn an_unterminated_last_line_is_answered_at_eof() {
    let d = Launch::line("").start();
    let mut c = d.connect();
    c.send_raw(b"ping\n#last max 1 5 3");
    assert_eq!(c.finish(), ["OK pong", "#last OK 5"]);
    let mut c = d.connect();
    c.send_raw(b"sum 1 2\r");
    assert_eq!(c.finish(), ["OK 3"]);
}

#[test]
fn quit_says_bye_and_closes_ignoring_the_rest() {
    let d = Launch::line("").start();
    let mut c = d.connect();
    c.set_timeout(Duration::from_secs(10));
    c.send_raw(b"#a sum 1 2\n#q quit\n#b ping\nmax 1 2\n");
    // No half-close from this side: the daemon closes by itself.
    let replies = read_to_eof(&mut c, 10);
    assert_eq!(replies, ["#a OK 3", "#q OK bye"]);
    let mut c = d.connect();
    c.set_timeout(Duration::from_secs(10));
    c.send("QUIT");
    assert_eq!(read_to_eof(&mut c, 10), ["OK bye"]);
    // JSON quit.
    let mut c = d.connect();
    c.set_timeout(Duration::from_secs(10));
    c.send(r#"{"id": 3, "op": "quit"}"#);
    let replies = read_to_eof(&mut c, 10);
    assert_eq!(replies.len(), 1, "{replies:?}");
    let v: serde_json::Value = serde_json::from_str(&replies[0]).expect("a JSON reply");
    assert_eq!(v, serde_json::json!({"id": 3, "ok": true, "result": "bye"}));
}

#[test]
fn blank_lines_get_no_reply() {
    let d = Launch::line("").start();
    let mut c = d.connect();
    c.send_raw(b"\n   \n\t\n \t \r\n\r\n#1 ping\n\n  \t\n#2 max 4 2\n   ");
    assert_eq!(c.finish(), ["#1 OK pong", "#2 OK 4"]);
}

#[test]
fn crlf_line_endings_are_accepted() {
    let d = Launch::line("").start();
    let mut c = d.connect();
    c.send_raw(b"#1 max 1 2\r\n#2 sum 1,2,3\r\nmedian [4, 1, 3, 2]\r\n{\"id\": 5, \"op\": \"min\", \"values\": [3, 1]}\r\n");
    let replies = c.finish();
    assert_eq!(replies.len(), 4, "{replies:?}");
    assert_eq!(replies[..3], ["#1 OK 2", "#2 OK 6", "OK 2.5"]);
    let v: serde_json::Value = serde_json::from_str(&replies[3]).expect("a JSON reply");
    assert_eq!(v, serde_json::json!({"id": 5, "ok": true, "result": 1}));
    assert!(replies.iter().all(|r| !r.contains('\r')), "{replies:?}");
}

#[test]
fn an_over_long_line_gets_too_long_and_the_connection_stays_usable() {
    let d = Launch::line("[limits]\nmax_line_bytes = 1024\n").start();
    let long = format!("#big sum {}", "1 ".repeat(1000));
    let mut c = d.connect();
    c.send(&long);
    c.send("#next sum 1 2");
    // A long line sent in small pieces, then another request.
    for chunk in long.as_bytes().chunks(100) {
        c.send_raw(chunk);
    }
    c.send_raw(b"\n#after max 1 9\n");
    // Exactly at the limit passes.
    let at_limit = format!("sum 1{}", " ".repeat(1024 - 5));
    assert_eq!(at_limit.len(), 1024);
    c.send(&at_limit);
    let replies = c.finish();
    assert_eq!(replies.len(), 5, "{replies:?}");
    // The id is never echoed on too-long.
    assert!(replies[0].starts_with("ERR too-long "), "{:?}", replies[0]);
    assert_eq!(replies[1], "#next OK 3");
    assert!(replies[2].starts_with("ERR too-long "), "{:?}", replies[2]);
    assert_eq!(replies[3], "#after OK 9");
    assert_eq!(replies[4], "OK 1");
}

#[test]
fn an_over_long_json_line_gets_a_json_error() {
    let d = Launch::line("[limits]\nmax_line_bytes = 1024\n").start();
    let values = vec!["1"; 600].join(",");
    let long = format!(r#"{{"id": 9, "op": "sum", "values": [{values}]}}"#);
    assert!(long.len() > 1024);
    let mut c = d.connect();
    c.send(&long);
    c.send(r#"{"id": 10, "op": "sum", "values": [1, 2]}"#);
    c.send(&format!("  {long}"));
    c.send("ping");
    let replies = c.finish();
    assert_eq!(replies.len(), 4, "{replies:?}");
    for r in [&replies[0], &replies[2]] {
        let v: serde_json::Value = serde_json::from_str(r).expect("a JSON error");
        assert_eq!(v["ok"], false, "{r}");
        assert_eq!(v["error"], "too-long", "{r}");
        assert!(v["message"].is_string(), "{r}");
        assert!(v.get("id").is_none(), "no id on too-long: {r}");
    }
    let v: serde_json::Value = serde_json::from_str(&replies[1]).expect("a JSON reply");
    assert_eq!(v, serde_json::json!({"id": 10, "ok": true, "result": 3}));
    assert_eq!(replies[3], "OK pong");
}

#[test]
fn more_values_than_max_values_is_too_many() {
    let d = Launch::line("[limits]\nmax_values = 10\n").start();
    let ten: Vec<String> = (1..=10).map(|i| i.to_string()).collect();
    let eleven: Vec<String> = (1..=11).map(|i| i.to_string()).collect();
    let replies = d.session(&[
        &format!("#t sum {}", eleven.join(" ")),
        &format!("#u sum {}", ten.join(" ")),
        &format!("max [{}]", eleven.join(", ")),
        // too-many wins over a malformed value.
        &format!("max {} x", ten.join(" ")),
        &format!(r#"{{"id": "j", "op": "sum", "values": [{}]}}"#, eleven.join(",")),
    ]);
    assert_eq!(replies.len(), 5, "{replies:?}");
    assert!(replies[0].starts_with("#t ERR too-many "), "{:?}", replies[0]);
    assert_eq!(replies[1], "#u OK 55");
    assert!(replies[2].starts_with("ERR too-many "), "{:?}", replies[2]);
    assert!(replies[3].starts_with("ERR too-many "), "{:?}", replies[3]);
    let v: serde_json::Value = serde_json::from_str(&replies[4]).expect("a JSON error");
    assert_eq!(
        (&v["id"], &v["ok"], &v["error"]),
        (&"j".into(), &false.into(), &"too-many".into())
    );
}

#[test]
fn an_idle_connection_is_closed() {
    let d = Launch::line("[limits]\nidle_timeout_s = 1\n").start();
    let mut c = d.connect();
    c.set_timeout(Duration::from_secs(15));
    assert_eq!(c.ask("ping"), "OK pong");
    // Then silence: the daemon closes (lingering close, so EOF, not a reset).
    assert_eq!(c.line(), None);
    // Trickling bytes of an unfinished line counts as idle too.
    let mut c = d.connect();
    c.set_timeout(Duration::from_millis(200));
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut closed = false;
    while !closed && Instant::now() < deadline {
        if c.stream().write_all(b"1 ").is_err() {
            closed = true;
            break;
        }
        let mut b = [0u8; 64];
        match std::io::Read::read(&mut c, &mut b) {
            Ok(0) => closed = true,
            Ok(n) => panic!("unexpected reply {:?}", String::from_utf8_lossy(&b[..n])),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => closed = true,
        }
    }
    assert!(closed, "a connection trickling an unfinished line was not closed");
}

#[test]
fn a_connection_with_a_task_in_flight_is_not_idle() {
    let d = Launch::line("[limits]\nidle_timeout_s = 1\n").start();
    let mut c = d.connect();
    c.set_timeout(Duration::from_secs(120));
    // A task that runs well past the idle timeout (seconds, even on a fast
    // machine); the connection must stay open and get its reply.
    c.send("#long pi 10000000000 1");
    let got = c.line().expect("the reply, not EOF");
    check_pi(&got, Some("long"), 10_000_000_000).unwrap();
    // The idle time starts over once the reply is out.
    assert_eq!(c.ask("ping"), "OK pong");
}

#[test]
fn two_inflight_per_connection_still_answers_everything_in_order() {
    let d = Launch::line("[limits]\nmax_inflight_per_conn = 2\n").start();
    let requests: Vec<String> = (0..200u64)
        .map(|i| match i % 3 {
            0 => format!("#{i} sum {i} {i}"),
            1 => format!("#{i} pi 1000"),
            _ => format!("#{i} max {i} -1"),
        })
        .collect();
    let refs: Vec<&str> = requests.iter().map(String::as_str).collect();
    let replies = d.session(&refs);
    assert_eq!(replies.len(), 200, "{replies:#?}");
    for (i, r) in replies.iter().enumerate() {
        let i = i as u64;
        match i % 3 {
            0 => assert_eq!(r, &format!("#{i} OK {}", 2 * i)),
            1 => check_pi(r, Some(&i.to_string()), 1000).unwrap(),
            _ => assert_eq!(r, &format!("#{i} OK {i}")),
        }
    }
}

/// The `users` reply as name -> count, checking its shape and sort order.
fn users(d: &Daemon) -> Vec<(String, u64)> {
    let replies = d.session(&["users"]);
    assert_eq!(replies.len(), 1, "{replies:?}");
    let list = parse_users(&replies[0]);
    let mut sorted = list.clone();
    sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    assert_eq!(list, sorted, "users sorted by the names' bytes");
    list
}

#[test]
fn users_counts_per_user_except_refused_requests() {
    let d = Launch::line("").start();
    let replies = d.session(&[
        "@alice sum 1 2",                                   // ok
        "@alice max",                                       // empty: counts
        "@alice pi 0",                                      // range: counts
        "@alice sum 1e308 1e308",                           // range (overflow): counts
        "@alice max 1 x",                                   // parse (value): not counted
        "@alice nosuchop",                                  // unknown-op: not counted
        "#1 @alice ping 1",                                 // parse: not counted
        r#"{"user": "alice", "op": "min", "values": [1]}"#, // ok
        "@Zed mean 1 2",                                    // ok; sorts before lowercase
        "@bob nosuchop 1",                                  // unknown-op: bob never appears
        "@bob max 1 2 zz",                                  // parse: still not
        "@carol pi 1000",                                   // ok
        "sum 1 2",                                          // anonymous ok
        "min",                                              // anonymous empty: counts
        "nosuchop",                                         // not counted
        "ping",                                             // anonymous ok
    ]);
    assert_eq!(replies.len(), 16, "{replies:?}");
    let list = users(&d);
    let map: HashMap<&str, u64> = list.iter().map(|(n, c)| (n.as_str(), *c)).collect();
    assert_eq!(map.get("alice"), Some(&5), "{list:?}");
    assert_eq!(map.get("Zed"), Some(&1), "{list:?}");
    assert_eq!(map.get("carol"), Some(&1), "{list:?}");
    assert_eq!(map.get("bob"), None, "{list:?}");
    // Three anonymous requests before, plus the `users` request itself
    // when it counts itself (the README's walk-through shows it does).
    let anon = *map.get("anonymous").expect("anonymous counted");
    assert!(anon == 3 || anon == 4, "anonymous {anon}: {list:?}");
    assert_eq!(list.len(), 4, "{list:?}");
    let names: Vec<&str> = list.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["Zed", "alice", "anonymous", "carol"]);
    // Each `users` request counts once for anonymous.
    let again = users(&d);
    let anon2 = again.iter().find(|(n, _)| n == "anonymous").expect("anonymous").1;
    assert_eq!(anon2, anon + 1, "{again:?}");
}

#[test]
fn info_has_every_key_of_the_spec() {
    let d = Launch::line("").start();
    let pre = d.session(&["nosuchop", "max", "sum 1 2"]);
    assert_eq!(pre.len(), 3, "{pre:?}");
    let replies = d.session(&["info"]);
    assert_eq!(replies.len(), 1, "{replies:?}");
    let body = replies[0].strip_prefix("OK ").expect("OK info");
    let mut map = HashMap::new();
    for pair in body.split(' ') {
        let (k, v) = pair
            .split_once('=')
            .unwrap_or_else(|| panic!("not key=value: {pair:?}"));
        assert!(
            map.insert(k.to_string(), v.to_string()).is_none(),
            "key {k} twice"
        );
    }
    let mut keys: Vec<String> = [
        "version",
        "uptime_s",
        "workers",
        "connections",
        "incoming",
        "ready",
        "running",
        "done",
        "failed",
        "config_loaded_at",
        "last_reload_ok",
    ]
    .iter()
    .map(|k| k.to_string())
    .collect();
    keys.extend(CODES.iter().map(|c| format!("rejected_{}", c.replace('-', "_"))));
    for k in &keys {
        assert!(map.contains_key(k), "info lacks {k}: {body}");
    }
    assert_eq!(map["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(map["last_reload_ok"], "true");
    for k in keys
        .iter()
        .filter(|k| !matches!(k.as_str(), "version" | "config_loaded_at" | "last_reload_ok"))
    {
        assert!(map[k].parse::<u64>().is_ok(), "{k}={} is not a count", map[k]);
    }
    assert!(map["workers"].parse::<u64>().unwrap() >= 1);
    assert!(map["connections"].parse::<u64>().unwrap() >= 1);
    assert!(map["done"].parse::<u64>().unwrap() >= 1);
    assert!(map["failed"].parse::<u64>().unwrap() >= 2);
    assert!(map["rejected_unknown_op"].parse::<u64>().unwrap() >= 1);
    assert!(map["rejected_empty"].parse::<u64>().unwrap() >= 1);
    assert!(!map["config_loaded_at"].is_empty());
    // The JSON form: an object, numbers as numbers.
    let replies = d.session(&[r#"{"id": "i", "op": "info"}"#]);
    let v: serde_json::Value = serde_json::from_str(&replies[0]).expect("a JSON reply");
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["id"], "i", "{v}");
    let obj = v["result"].as_object().expect("an object");
    for k in &keys {
        assert!(obj.contains_key(k), "JSON info lacks {k}: {v}");
    }
    assert!(obj["uptime_s"].is_u64() && obj["workers"].is_u64() && obj["rejected_parse"].is_u64());
}

#[test]
fn help_lists_the_operations() {
    let d = Launch::line("").start();
    let replies = d.session(&["help", "HELP", r#"{"op": "help"}"#]);
    assert_eq!(replies.len(), 3, "{replies:?}");
    let body = replies[0].strip_prefix("OK ").expect("OK help");
    let names: Vec<&str> = body.split(' ').collect();
    for op in OP_NAMES {
        assert!(names.contains(&op), "help lacks {op}: {body}");
    }
    assert_eq!(replies[1], replies[0]);
    let v: serde_json::Value = serde_json::from_str(&replies[2]).expect("a JSON reply");
    let arr = v["result"].as_array().expect("an array of names");
    for op in OP_NAMES {
        assert!(arr.iter().any(|n| n == op), "JSON help lacks {op}: {v}");
    }
}

#[test]
fn listener_ops_restricts_what_it_serves() {
    let d = Launch::config(|port| {
        format!(
            "[[listener]]\nproto = \"tcp\"\naddress = \"127.0.0.1:{port}\"\nops = [\"max\"]\n\n\
             [[listener]]\nproto = \"udp\"\naddress = \"127.0.0.1:{port}\"\n"
        )
    })
    .start();
    let replies = d.session(&[
        "max 1 2",
        "sum 1 2",
        "#7 sum 1 2",
        r#"{"id": 1, "op": "sum", "values": [1]}"#,
        "nosuchop",
    ]);
    assert_eq!(replies.len(), 5, "{replies:?}");
    assert_eq!(replies[0], "OK 2");
    assert!(replies[1].starts_with("ERR denied "), "{:?}", replies[1]);
    assert!(replies[2].starts_with("#7 ERR denied "), "{:?}", replies[2]);
    let v: serde_json::Value = serde_json::from_str(&replies[3]).expect("a JSON reply");
    assert_eq!((&v["id"], &v["error"]), (&1.into(), &"denied".into()), "{v}");
    assert!(replies[4].starts_with("ERR unknown-op "), "{:?}", replies[4]);
    // The other listener serves everything.
    assert_eq!(d.udp("sum 1 2"), "OK 3");
}

#[test]
fn a_disabled_operation_is_denied() {
    let d = Launch::line("[ops.median]\nenabled = false\n").start();
    let replies = d.session(&[
        "median 1 2 3",
        "#m MEDIAN 1 2",
        r#"{"op": "median", "values": [1]}"#,
        "mean 1 2 3",
    ]);
    assert_eq!(replies.len(), 4, "{replies:?}");
    assert!(replies[0].starts_with("ERR denied "), "{:?}", replies[0]);
    assert!(replies[1].starts_with("#m ERR denied "), "{:?}", replies[1]);
    let v: serde_json::Value = serde_json::from_str(&replies[2]).expect("a JSON reply");
    assert_eq!(v["error"], "denied", "{v}");
    assert_eq!(replies[3], "OK 2");
    assert!(d.udp("median 1 2").starts_with("ERR denied "));
}

/// pi's range errors show the client's own digits, also when they do not
/// fit 64 bits (not a saturated value).
#[test]
fn pi_range_messages_show_the_clients_digits() {
    let d = Launch::line("").start();
    let mut c = d.connect();
    assert_eq!(
        c.ask("pi 99999999999999999999999"),
        "ERR range SAMPLES 99999999999999999999999 out of range 1..=10000000000"
    );
    assert_eq!(
        c.ask("pi 10 4294967296"),
        "ERR range CHUNKS 4294967296 out of range 1..=10"
    );
}
