//! What taskd's integration tests (`tests/`) and its benchmark (`bench/`)
//! both need, in one place: free loopback ports and connections from a
//! chosen loopback address ([`net`]), the one blocking client of the line
//! protocol ([`LineClient`]), and figures of a running process read from
//! /proc, plus raising this process's own descriptor limit ([`process`]).
//!
//! A dev-only crate of the workspace: a dev-dependency of taskd and a
//! dependency of taskd-bench, never part of the daemon or its package.
//! Functions return `io::Result` (the benchmark reports errors); the
//! client also has panicking forms for tests, named without `try_`.

pub mod line;
pub mod net;
pub mod process;

pub use line::LineClient;
pub use net::{connect_from, connect_from_within, free_port, free_port_v6};
