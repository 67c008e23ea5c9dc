//! taskd computes small numeric tasks for network clients. The binary is
//! a thin wrapper around this library, which the integration tests and
//! benchmarks also use.

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
pub mod sched;
pub mod server;
pub mod signals;
pub mod systemd;
pub mod tls;
pub mod users;
