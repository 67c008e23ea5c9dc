//! Clients of the line protocol: the one line client (testkit's
//! [`LineClient`], over TCP or TLS), UDP requests, and the replies of
//! `info` and `users` read into figures.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

pub use testkit::{LineClient, connect_from, free_port, free_port_v6};

/// 127.0.0.1.
pub const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// A second loopback address: Linux answers for all of 127.0.0.0/8.
pub const LOCALHOST_2: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
/// A third one.
pub const LOCALHOST_3: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));

/// A line client on a connection from the local address `from` to `to`,
/// with [`LineClient::TIMEOUT`] on every read.
pub fn line_from(from: IpAddr, to: SocketAddr) -> LineClient {
    let stream = connect_from(from, to).unwrap_or_else(|e| panic!("connect from {from} to {to}: {e}"));
    LineClient::from_tcp(stream, LineClient::TIMEOUT)
}

/// Parses an `info` reply (`OK key=value ...`) into its figures.
pub fn parse_info(reply: &str) -> HashMap<String, String> {
    let body = reply
        .strip_prefix("OK ")
        .unwrap_or_else(|| panic!("info failed: {reply:?}"));
    body.split(' ')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The (name, request count) pairs of a `users` reply (`OK [...]`), in the
/// reply's order; panics unless every entry is exactly
/// `{"request_count": N, "username": S}`.
pub fn parse_users(reply: &str) -> Vec<(String, u64)> {
    let body = reply
        .strip_prefix("OK ")
        .unwrap_or_else(|| panic!("users failed: {:?}", clipped(reply)));
    let v: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("users is not JSON ({e}): {}", clipped(body)));
    v.as_array()
        .unwrap_or_else(|| panic!("users is not an array: {}", clipped(body)))
        .iter()
        .map(|e| {
            let o = e.as_object().unwrap_or_else(|| panic!("not an object: {e}"));
            assert_eq!(o.len(), 2, "{e}");
            (
                o["username"].as_str().expect("username").to_string(),
                o["request_count"].as_u64().expect("request_count"),
            )
        })
        .collect()
}

/// At most the first 200 characters of `s`, for messages.
fn clipped(s: &str) -> &str {
    s.char_indices().nth(200).map_or(s, |(i, _)| &s[..i])
}

/// A UDP socket on `from` (a port the kernel picks) with a read timeout.
pub fn udp_socket(from: IpAddr, timeout: Duration) -> UdpSocket {
    let s = UdpSocket::bind(SocketAddr::new(from, 0)).expect("udp client");
    s.set_read_timeout(Some(timeout)).expect("timeout");
    s
}

/// The next datagram as text without its final newline, or None when
/// nothing came within the read timeout.
pub fn udp_recv(s: &UdpSocket) -> Option<String> {
    let mut buf = vec![0u8; 65536];
    match s.recv(&mut buf) {
        Ok(n) => Some(
            String::from_utf8_lossy(&buf[..n])
                .trim_end_matches('\n')
                .to_string(),
        ),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => None,
        Err(e) => panic!("udp receive: {e}"),
    }
}

/// Sends `request` and a newline as one datagram to `to`; the next
/// datagram received, or None.
pub fn udp_ask(s: &UdpSocket, to: SocketAddr, request: &[u8]) -> Option<String> {
    let mut datagram = request.to_vec();
    datagram.push(b'\n');
    s.send_to(&datagram, to).expect("udp send");
    udp_recv(s)
}
