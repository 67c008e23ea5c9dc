//! What the integration tests share, by subject:
//!
//! - `daemon` — [`Launch`], the one way to start the real taskd binary on
//!   free loopback ports with a temporary configuration, and the
//!   [`Daemon`] it returns (stopped when dropped, also when a test fails);
//! - `client` — the one line client ([`LineClient`], from testkit), UDP
//!   requests, the replies of `info` and `users` read into figures;
//! - `http` — raw HTTP/1.1 requests and responses ([`HttpConn`]);
//! - `tls` — a PKI made on the fly, TLS listeners, the line and HTTP
//!   clients over rustls;
//! - `systemd` — a NOTIFY_SOCKET of our own ([`Notifications`]);
//! - `proc` — child processes, signals, exits, figures from /proc;
//! - `cases` — the `REQUEST => REPLY` case files;
//! - `rng` — reproducible pseudo-random numbers.
//!
//! Each test file is its own crate and uses only part of this. A new test
//! starts the daemon with the configuration it needs and asserts what a
//! client sees:
//!
//! ```ignore
//! let d = Launch::line("[limits]\nmax_values = 3\n").start();
//! let mut c = d.connect();
//! assert_eq!(c.ask("#1 max 1 2 3"), "#1 OK 3");
//! ```
//!
//! A folder `tests/NAME/main.rs` with `#[path = "../common/mod.rs"] mod
//! common;` and one module per subject keeps a long test file readable
//! (tests/tls/, tests/attacks/).

#![allow(dead_code, unused_imports)]

pub mod cases;
pub mod client;
pub mod daemon;
pub mod http;
pub mod proc;
pub mod rng;
pub mod systemd;
pub mod tls;

use std::time::{Duration, Instant};

pub use cases::{Case, read_cases, reply_matches};
pub use client::{
    LOCALHOST, LOCALHOST_2, LOCALHOST_3, LineClient, connect_from, free_port, free_port_v6, line_from,
    parse_info, parse_users, udp_ask, udp_recv, udp_socket,
};
pub use daemon::{BIN, Daemon, Launch, line_config};
pub use http::{HttpConn, HttpResponse, http_config, http_get, http_post, read_http_response};
pub use proc::{Exited, Proc, mkfifo, run_to_exit};
pub use rng::Rng;
pub use systemd::{Notifications, has};

/// Polls `f` every 20 ms until it is true or `timeout` has passed; whether
/// it became true.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
