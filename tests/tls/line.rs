//! The line protocol inside TLS (`proto = "tls"`): pipelining and order,
//! the end of a session (close_notify from either side, a bare TCP
//! half-close, `quit`), TLS 1.2 and 1.3, and backpressure through rustls.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::ClientConnection;
use rustls::pki_types::ServerName;
use serde_json::{Value, json};

use crate::common::tls::{Ca, IO_TIMEOUT, client_config, client_config_with, launch_tls, line_tls};

#[test]
fn pipelined_requests_over_tls_are_answered_in_order_then_eof_after_close_notify() {
    let ca = Ca::new("test CA");
    let d = launch_tls("tls", &ca, None, "").start();
    let mut c = line_tls(d.tcp, client_config(&[ca.der()], None));
    // Everything in one write: the replies must come back in request order.
    c.try_send_raw(
        "max 1 5 3\n#7 stats 7 8 54 89\nping\n\
         {\"id\": 9, \"op\": \"sum\", \"values\": [1, 2, \"3\"]}\n\n#last mean 1 2\n"
            .as_bytes(),
    )
    .expect("write the requests");
    assert_eq!(c.line().as_deref(), Some("OK 5"));
    assert_eq!(
        c.line().as_deref(),
        Some("#7 OK count=4 min=7 max=89 mean=39.5 median=31")
    );
    assert_eq!(c.line().as_deref(), Some("OK pong"));
    let j: Value = serde_json::from_str(&c.line().expect("a reply, not EOF")).expect("a JSON reply");
    assert_eq!(j, json!({"id": 9, "ok": true, "result": 6}));
    assert_eq!(c.line().as_deref(), Some("#last OK 1.5"));

    // Half-close with close_notify; requests still pending (and an
    // unterminated last line) are answered, then the connection ends.
    c.try_send_raw("#a max 4 2\n#b min 4 2\n#c sum 4 2".as_bytes())
        .expect("write");
    c.get_mut().conn.send_close_notify();
    c.get_mut().flush().expect("send close_notify");
    assert_eq!(c.line().as_deref(), Some("#a OK 4"));
    assert_eq!(c.line().as_deref(), Some("#b OK 2"));
    assert_eq!(c.line().as_deref(), Some("#c OK 6"));
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
    let d = launch_tls("tls", &ca, None, "").start();
    let mut c = line_tls(d.tcp, client_config(&[ca.der()], None));
    assert_eq!(c.ask("ping"), "OK pong");
    c.try_send_raw("#1 max 1 2\n#2 pi 1000 2\n#3 min 1 2".as_bytes())
        .expect("write");
    c.get_mut()
        .sock
        .shutdown(std::net::Shutdown::Write)
        .expect("shutdown");
    assert_eq!(c.line().as_deref(), Some("#1 OK 2"));
    let pi = c.line().expect("a reply, not EOF");
    assert!(
        pi.starts_with("#2 OK ") && pi.ends_with(" samples=1000 chunks=2"),
        "{pi}"
    );
    assert_eq!(c.line().as_deref(), Some("#3 OK 1"));
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
    let d = launch_tls("tls", &ca, None, "").start();
    let mut c = line_tls(d.tcp, client_config(&[ca.der()], None));
    assert_eq!(c.ask("ping"), "OK pong");
    c.try_send_raw("#x sum 1 2\n".as_bytes()).expect("write");
    c.get_mut().conn.send_close_notify();
    c.get_mut().flush().expect("send close_notify");
    assert_eq!(c.line().as_deref(), Some("#x OK 3"));
    match c.try_line() {
        Ok(None) => {}
        Ok(Some(l)) => panic!("a line after the last reply: {l:?}"),
        Err(e) => panic!("the connection ended without the daemon's close_notify: {e}"),
    }
}

#[test]
fn quit_over_tls_replies_bye_then_closes() {
    let ca = Ca::new("test CA");
    let d = launch_tls("tls", &ca, None, "").start();
    let mut c = line_tls(d.tcp, client_config(&[ca.der()], None));
    c.try_send_raw("help\n#1 max 2 9\nquit\nping\n".as_bytes())
        .expect("write");
    let help = c.line().expect("a reply, not EOF");
    assert!(help.starts_with("OK ") && help.contains("max"), "{help}");
    assert_eq!(c.line().as_deref(), Some("#1 OK 9"));
    assert_eq!(c.line().as_deref(), Some("OK bye"));
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
    let d = launch_tls("tls", &ca, None, "").start();
    for (version, want) in [
        (&rustls::version::TLS12, rustls::ProtocolVersion::TLSv1_2),
        (&rustls::version::TLS13, rustls::ProtocolVersion::TLSv1_3),
    ] {
        let mut c = line_tls(d.tcp, client_config_with(&[ca.der()], None, &[version]));
        assert_eq!(c.ask("max 3 4"), "OK 4");
        assert_eq!(c.get_mut().conn.protocol_version(), Some(want));
    }
}

/// A slow reader of a long pipelined session: more than 1 MiB of replies
/// (past rustls' own buffer limit in the daemon) come back complete and in
/// order while the client keeps writing.
#[test]
fn a_long_pipelined_session_over_tls_keeps_order_through_backpressure() {
    const N: usize = 30_000;
    let ca = Ca::new("test CA");
    let d = launch_tls("tls", &ca, None, "").start();
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
