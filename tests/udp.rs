//! The line protocol over UDP against the real binary: one reply datagram
//! per line in line order, the 64-line limit, TCP-only operations, the UDP
//! pi limit, and replies reaching only the socket that asked (taskd(8),
//! PROTOCOL).

mod common;

use std::collections::HashSet;
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use common::{LOCALHOST, Launch, udp_socket};

fn socket(timeout: Duration) -> UdpSocket {
    udp_socket(LOCALHOST, timeout)
}

/// The next datagram, or None when nothing came within the read timeout.
fn recv(s: &UdpSocket) -> Option<(String, SocketAddr)> {
    let mut buf = vec![0; 65536];
    match s.recv_from(&mut buf) {
        Ok((n, from)) => Some((String::from_utf8_lossy(&buf[..n]).into_owned(), from)),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => None,
        Err(e) => panic!("udp receive: {e}"),
    }
}

/// The next reply, checked to be exactly one `\n`-terminated line from the
/// daemon's address.
fn reply(s: &UdpSocket, daemon: SocketAddr) -> String {
    let (text, from) = recv(s).expect("a reply datagram");
    assert_eq!(from, daemon, "reply from the address the request went to");
    let line = text
        .strip_suffix('\n')
        .unwrap_or_else(|| panic!("unterminated reply {text:?}"));
    assert!(!line.contains('\n'), "one line per datagram: {text:?}");
    line.to_string()
}

#[test]
fn lines_of_one_datagram_get_one_reply_each_in_order() {
    let d = Launch::line("").start();
    let s = socket(Duration::from_secs(10));
    let datagram = "#a max 1 2\n#b min 1 2\n\n   \n#c sum 1 2 3\r\n#d ping\n#e nosuchop\n\
                    stats 7 8 54 89\n#g pi 1000 1\n{\"id\": \"h\", \"op\": \"mean\", \"values\": [1, 2]}\n#i max 4 9";
    s.send_to(datagram.as_bytes(), d.udp).expect("send");
    let got: Vec<String> = (0..9).map(|_| reply(&s, d.udp)).collect();
    assert_eq!(got[..4], ["#a OK 2", "#b OK 1", "#c OK 6", "#d OK pong"]);
    assert!(got[4].starts_with("#e ERR unknown-op "), "{:?}", got[4]);
    assert_eq!(got[5], "OK count=4 min=7 max=89 mean=39.5 median=31");
    assert!(
        got[6].starts_with("#g OK ") && got[6].ends_with(" samples=1000 chunks=1"),
        "{:?}",
        got[6]
    );
    let v: serde_json::Value = serde_json::from_str(&got[7]).expect("a JSON reply");
    assert_eq!(v, serde_json::json!({"id": "h", "ok": true, "result": 1.5}));
    assert_eq!(got[8], "#i OK 9");
    // Nothing more for that datagram: the next reply is the next request's.
    s.send_to(b"#end ping\n", d.udp).expect("send");
    assert_eq!(reply(&s, d.udp), "#end OK pong");
}

#[test]
fn a_datagram_with_only_blank_lines_gets_no_reply() {
    let d = Launch::line("").start();
    let s = socket(Duration::from_secs(10));
    s.send_to(b"\n  \n\t\n", d.udp).expect("send");
    s.send_to(b"#after ping", d.udp).expect("send");
    assert_eq!(reply(&s, d.udp), "#after OK pong");
}

#[test]
fn more_than_64_lines_get_exactly_64_replies() {
    let d = Launch::line("").start();
    let s = socket(Duration::from_secs(10));
    let mut datagram = String::new();
    for i in 0..70 {
        datagram.push_str(&format!("#l{i} max {i} -1\n"));
        if i % 10 == 0 {
            // Blank lines do not count towards the 64.
            datagram.push_str("  \n\n");
        }
    }
    s.send_to(datagram.as_bytes(), d.udp).expect("send");
    let got: Vec<String> = (0..64).map(|_| reply(&s, d.udp)).collect();
    let expected: Vec<String> = (0..64).map(|i| format!("#l{i} OK {i}")).collect();
    assert_eq!(got, expected);
    // Then only the marker's reply: lines 65 to 70 were dropped.
    s.send_to(b"#end ping\n", d.udp).expect("send");
    let mut extra = Vec::new();
    loop {
        let r = reply(&s, d.udp);
        if r == "#end OK pong" {
            break;
        }
        extra.push(r);
        assert!(extra.len() < 10, "{extra:?}");
    }
    assert!(extra.is_empty(), "replies beyond the 64th line: {extra:?}");
    // Counted: lines 65 to 70, blank lines not.
    let info = d.info_map();
    assert_eq!(
        info.get("udp_lines_dropped").map(String::as_str),
        Some("6"),
        "{info:?}"
    );
}

#[test]
fn stream_only_operations_are_tcp_only() {
    let d = Launch::line("").start();
    for op in ["users", "info", "help", "quit", "USERS"] {
        let got = d.udp(op);
        assert!(got.starts_with("ERR tcp-only "), "{op}: {got:?}");
        let got = d.udp(&format!("#x {op}"));
        assert!(got.starts_with("#x ERR tcp-only "), "{op}: {got:?}");
    }
    let got = d.udp(r#"{"id": 4, "op": "users"}"#);
    let v: serde_json::Value = serde_json::from_str(&got).expect("a JSON reply");
    assert_eq!(
        (&v["id"], &v["ok"], &v["error"]),
        (&4.into(), &false.into(), &"tcp-only".into())
    );
    // The same over TCP work.
    let replies = d.session(&["help", "info"]);
    assert!(replies.iter().all(|r| r.starts_with("OK ")), "{replies:?}");
}

#[test]
fn pi_over_udp_is_limited_by_udp_max_samples() {
    let d = Launch::line("[ops.pi]\nudp_max_samples = 1000\n").start();
    let got = d.udp("#p pi 1001");
    assert!(got.starts_with("#p ERR range "), "{got:?}");
    assert!(d.udp("pi 5000 2").starts_with("ERR range "));
    let got = d.udp("pi 1000");
    assert!(
        got.starts_with("OK ") && got.contains(" samples=1000 "),
        "{got:?}"
    );
    let replies = d.session(&["#p pi 1001", "pi 5000 2"]);
    assert_eq!(replies.len(), 2, "{replies:?}");
    assert!(
        replies[0].starts_with("#p OK ") && replies[0].contains(" samples=1001 "),
        "{replies:?}"
    );
    assert!(replies[1].starts_with("OK ") && replies[1].ends_with(" samples=5000 chunks=2"));
}

#[test]
fn concurrent_sockets_get_only_their_own_replies() {
    const SOCKETS: u64 = 20;
    const EACH: u64 = 100;
    const WINDOW: u64 = 10;
    let d = Launch::line("").start();
    let daemon = d.udp;
    let threads: Vec<_> = (0..SOCKETS)
        .map(|t| {
            std::thread::spawn(move || {
                let s = socket(Duration::from_secs(2));
                let mut seen = HashSet::new();
                let mut misrouted = Vec::new();
                // In windows, so 20 sockets do not overflow the daemon's
                // receive buffer all at once; replies are matched by id,
                // whatever window they arrive in.
                for window in 0..EACH / WINDOW {
                    for j in window * WINDOW..(window + 1) * WINDOW {
                        let v = (t + 1) * 1_000_000 + j;
                        s.send_to(format!("#s{t}-{j} sum {v} 0\n").as_bytes(), daemon)
                            .expect("send");
                    }
                    let want = ((window + 1) * WINDOW) as usize;
                    for _ in 0..2 * WINDOW {
                        if seen.len() >= want {
                            break;
                        }
                        let Some((text, from)) = recv(&s) else { break };
                        assert_eq!(from, daemon);
                        let line = text.trim_end_matches('\n');
                        let ok = line
                            .strip_prefix(&format!("#s{t}-"))
                            .and_then(|r| r.split_once(" OK "))
                            .and_then(|(j, v)| Some((j.parse::<u64>().ok()?, v.parse::<u64>().ok()?)))
                            .filter(|(j, v)| *j < EACH && *v == (t + 1) * 1_000_000 + j);
                        match ok {
                            Some((j, _)) => assert!(seen.insert(j), "reply {line:?} twice"),
                            None => misrouted.push(line.to_string()),
                        }
                    }
                }
                (seen.len() as u64, misrouted)
            })
        })
        .collect();
    let mut total = 0;
    for (t, th) in threads.into_iter().enumerate() {
        let (got, misrouted) = th.join().expect("a client thread failed");
        assert!(
            misrouted.is_empty(),
            "socket {t} got others' or wrong replies: {misrouted:?}"
        );
        total += got;
    }
    println!("{total} of {} UDP replies arrived", SOCKETS * EACH);
    assert!(
        total * 10 >= SOCKETS * EACH * 9,
        "only {total} of {} replies",
        SOCKETS * EACH
    );
}

#[test]
fn a_wildcard_listener_replies_from_the_address_it_was_asked_on() {
    let d = Launch::config(|port| {
        format!(
            "[[listener]]\nproto = \"tcp\"\naddress = \"127.0.0.1:{port}\"\n\n\
             [[listener]]\nproto = \"udp\"\naddress = \"0.0.0.0:{port}\"\n"
        )
    })
    .start();
    for dst in ["127.0.0.1", "127.0.0.2", "127.0.0.3"] {
        let s = UdpSocket::bind("127.0.0.1:0").expect("client socket");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let to: SocketAddr = format!("{dst}:{}", d.port).parse().expect("address");
        s.send_to(b"max 1 9\n", to).expect("send");
        let mut buf = [0u8; 256];
        let (n, from) = s.recv_from(&mut buf).expect("a reply");
        assert_eq!(&buf[..n], b"OK 9\n");
        assert_eq!(
            from, to,
            "the reply comes from the address the request was sent to"
        );
    }
}

/// Replies leave in batches (`sendmmsg`): a burst of datagrams from many
/// sockets, each datagram of lines answered on the loop and by workers, is
/// answered completely, each reply to the socket that asked and, within a
/// datagram, in line order.
#[test]
fn a_burst_from_many_sockets_is_answered_to_each_socket_in_line_order() {
    const SOCKETS: usize = 50;
    const DATAGRAMS: usize = 40;
    const LINES: usize = 3;
    /// Datagrams in flight per socket: 200 in all, well within the
    /// daemon's receive buffer even at the kernel's default size.
    const WINDOW: usize = 4;
    let d = Launch::config(|port| {
        format!(
            "[[listener]]\nproto = \"tcp\"\naddress = \"127.0.0.1:{port}\"\n\n\
             [[listener]]\nproto = \"udp\"\naddress = \"127.0.0.1:{port}\"\nrecv_buffer = 4194304\n"
        )
    })
    .start();
    let daemon = d.udp;
    let start = std::sync::Arc::new(std::sync::Barrier::new(SOCKETS));
    let threads: Vec<_> = (0..SOCKETS)
        .map(|t| {
            let start = std::sync::Arc::clone(&start);
            std::thread::spawn(move || -> Result<(), String> {
                let s = socket(Duration::from_secs(10));
                // Per datagram, the next line whose reply is due.
                let mut next = [0usize; DATAGRAMS];
                let mut done = 0;
                let mut sent = 0;
                start.wait();
                while done < DATAGRAMS {
                    while sent < DATAGRAMS && sent < done + WINDOW {
                        // A list line (on the loop or a worker), a pi line
                        // (always a worker), a list line again: the third
                        // reply is often ready before the second.
                        let v = t * 1_000_000 + sent;
                        let datagram = format!(
                            "#{t}-{sent}-0 sum {v} 1\n#{t}-{sent}-1 pi 1000 1\n#{t}-{sent}-2 max {v} 2\n"
                        );
                        s.send_to(datagram.as_bytes(), daemon)
                            .map_err(|e| e.to_string())?;
                        sent += 1;
                    }
                    let (text, from) = recv(&s).ok_or(format!("socket {t}: no reply within 10 s"))?;
                    if from != daemon {
                        return Err(format!("socket {t}: a reply from {from}"));
                    }
                    let line = text.strip_suffix('\n').unwrap_or(&text);
                    let (tag, answer) = line.split_once(' ').ok_or(format!("socket {t}: {line:?}"))?;
                    let ids: Vec<usize> = tag
                        .trim_start_matches('#')
                        .split('-')
                        .map(|x| x.parse().map_err(|_| format!("socket {t}: {line:?}")))
                        .collect::<Result<_, _>>()?;
                    let &[owner, dg, l] = &ids[..] else {
                        return Err(format!("socket {t}: {line:?}"));
                    };
                    if owner != t || dg >= sent || l >= LINES {
                        return Err(format!("socket {t} got another's reply: {line:?}"));
                    }
                    if l != next[dg] {
                        return Err(format!(
                            "socket {t}, datagram {dg}: line {l} answered before line {}",
                            next[dg]
                        ));
                    }
                    let v = t * 1_000_000 + dg;
                    let ok = match l {
                        0 => answer == format!("OK {}", v + 1),
                        1 => answer.starts_with("OK ") && answer.ends_with(" samples=1000 chunks=1"),
                        _ => answer == format!("OK {}", v.max(2)),
                    };
                    if !ok {
                        return Err(format!("socket {t}: wrong reply {line:?}"));
                    }
                    next[dg] += 1;
                    if next[dg] == LINES {
                        done += 1;
                    }
                }
                // Nothing more: every reply came once.
                s.set_read_timeout(Some(Duration::from_millis(100)))
                    .map_err(|e| e.to_string())?;
                match recv(&s) {
                    Some((extra, _)) => Err(format!("socket {t}: an extra reply {extra:?}")),
                    None => Ok(()),
                }
            })
        })
        .collect();
    let failures: Vec<String> = threads
        .into_iter()
        .filter_map(|th| th.join().expect("a client thread panicked").err())
        .collect();
    assert!(
        failures.is_empty(),
        "{} sockets failed: {failures:?}",
        failures.len()
    );
}

/// One socket asks a wildcard listener on several of the host's addresses
/// at once, several lines per datagram: the replies, sent together, each
/// come from the address their request was sent to.
#[test]
fn replies_sent_together_each_come_from_the_address_asked() {
    let d = Launch::config(|port| {
        format!(
            "[[listener]]\nproto = \"tcp\"\naddress = \"127.0.0.1:{port}\"\n\n\
             [[listener]]\nproto = \"udp\"\naddress = \"0.0.0.0:{port}\"\n"
        )
    })
    .start();
    let s = socket(Duration::from_secs(10));
    let to: Vec<SocketAddr> = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
        .iter()
        .map(|ip| SocketAddr::new(ip.parse().expect("address"), d.port))
        .collect();
    const ROUNDS: usize = 30;
    for r in 0..ROUNDS {
        for (i, t) in to.iter().enumerate() {
            s.send_to(format!("#{i}-{r}-a ping\n#{i}-{r}-b max {r} 1\n").as_bytes(), t)
                .expect("send");
        }
    }
    let mut counts = [0usize; 3];
    for _ in 0..ROUNDS * to.len() * 2 {
        let (text, from) = recv(&s).expect("a reply");
        let i: usize = text[1..2].parse().expect("an index");
        assert_eq!(from, to[i], "the reply {text:?} comes from the address asked");
        counts[i] += 1;
    }
    assert_eq!(counts, [ROUNDS * 2; 3]);
}

#[test]
fn a_wildcard_ipv6_listener_replies_from_the_address_it_was_asked_on() {
    if UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback address: skipped");
        return;
    }
    let d = Launch::config(|port| {
        format!(
            "[[listener]]\nproto = \"tcp\"\naddress = \"127.0.0.1:{port}\"\n\n\
             [[listener]]\nproto = \"udp\"\naddress = \"[::]:{port}\"\n"
        )
    })
    .start();
    let s = UdpSocket::bind("[::1]:0").expect("client socket");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let to: SocketAddr = format!("[::1]:{}", d.port).parse().expect("address");
    s.send_to(b"max 1 9\nmin 1 9\n", to).expect("send");
    assert_eq!(reply(&s, to), "OK 9");
    assert_eq!(reply(&s, to), "OK 1");
}
