//! Failed handshakes: plain text on a TLS port, a silent client and one
//! stuck in the middle of its ClientHello are closed (the latter two at the
//! handshake timeout), logged and counted, and others are still served.

use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;

use crate::common::tls::{
    Ca, IO_TIMEOUT, client_config, info_of, launch_tls, line_tls, read_until_closed, tls_failures,
};

#[test]
fn plain_text_on_a_tls_port_is_closed_and_counted() {
    let ca = Ca::new("test CA");
    let d = launch_tls("tls", &ca, None, "").start();
    let config = client_config(&[ca.der()], None);
    let mut good = line_tls(d.tcp, Arc::clone(&config));
    let before = tls_failures(&info_of(&mut good));

    for _ in 0..3 {
        let mut s = TcpStream::connect(d.tcp).expect("connect");
        s.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        s.write_all(b"ping\n").expect("write");
        let got = read_until_closed(&mut s);
        assert!(
            !String::from_utf8_lossy(&got).contains("pong"),
            "plain text was answered: {got:?}"
        );
    }

    let after = tls_failures(&info_of(&mut good));
    assert!(after >= before + 3, "tls_failures {before} -> {after}");
    assert_eq!(good.ask("ping"), "OK pong");
    let mut fresh = line_tls(d.tcp, config);
    assert_eq!(fresh.ask("median 1 2 3 4"), "OK 2.5");
    assert!(
        d.stderr().contains("TLS"),
        "the failure is logged: {}",
        d.stderr()
    );
}

/// The spec'd handshake timeout is 10 s: this test waits that long.
#[test]
fn a_silent_client_is_closed_after_the_handshake_timeout() {
    let ca = Ca::new("test CA");
    let d = launch_tls("tls", &ca, None, "").start();
    let config = client_config(&[ca.der()], None);
    let mut good = line_tls(d.tcp, Arc::clone(&config));
    let before = tls_failures(&info_of(&mut good));

    let mut silent = TcpStream::connect(d.tcp).expect("connect");
    silent.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    // A client stuck in the middle of its handshake: a ClientHello cut short.
    let mut half = TcpStream::connect(d.tcp).expect("connect");
    half.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    half.write_all(&[0x16, 0x03, 0x01, 0x01, 0x00, 0x01])
        .expect("write");

    // Meanwhile others are served.
    let mut other = line_tls(d.tcp, Arc::clone(&config));
    assert_eq!(other.ask("ping"), "OK pong");

    let got = read_until_closed(&mut silent);
    assert!(got.is_empty() || got[0] == 0x15, "not an alert: {got:?}");
    let got = read_until_closed(&mut half);
    assert!(got.is_empty() || got[0] == 0x15, "not an alert: {got:?}");

    let after = tls_failures(&info_of(&mut good));
    assert!(
        after >= before + 2,
        "two timed-out handshakes: tls_failures {before} -> {after}"
    );
    assert_eq!(good.ask("ping"), "OK pong");
}
