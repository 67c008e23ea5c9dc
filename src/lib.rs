//! taskd computes small numeric tasks for network clients. The binary is
//! a thin wrapper around this library, which the integration tests and
//! benchmarks also use.

// A refused request carries what was parsed of its head inline (ids and
// user names without an allocation), which makes it larger than clippy
// likes in a `Result`; moving it is cheaper than allocating it.
#![allow(clippy::result_large_err)]

pub mod cli;
pub mod config;
pub mod files;
pub mod http;
pub mod metrics;
pub mod numbers;
pub mod ops;
pub mod pool;
pub mod protocol;
pub mod ratelimit;
pub mod reply;
pub mod sched;
pub mod server;
pub mod signals;
pub mod spare;
pub mod systemd;
pub mod tasks;
pub mod tls;
pub mod users;
