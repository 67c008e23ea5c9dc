//! TLS and HTTPS listeners against the real binary (taskd(8), TLS), by
//! subject: the line protocol inside TLS (`line`), the HTTP API inside TLS
//! (`https`), mutual TLS and the user a client certificate stands for
//! (`mutual`), failed handshakes (`handshake`), and certificates at start
//! and on SIGHUP (`certs`).
//!
//! The PKI is made on the fly with rcgen and the clients are rustls over a
//! std TcpStream (tests/common/tls.rs). Certificates are named by paths
//! relative to the configuration file, which does not sit in the daemon's
//! working directory, so they are resolved against the config file's
//! folder as the spec says.

#[path = "../common/mod.rs"]
mod common;

mod certs;
mod handshake;
mod https;
mod line;
mod mutual;
