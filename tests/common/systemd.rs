//! systemd as taskd sees it, played by the tests: a NOTIFY_SOCKET of our
//! own that records every sd_notify message with the time it arrived.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Every datagram received on a notify socket, in order.
pub struct Notifications {
    pub path: PathBuf,
    got: Arc<Mutex<Vec<(Instant, String)>>>,
    _dir: tempfile::TempDir,
}

impl Notifications {
    /// Binds a datagram socket in a fresh folder and collects what arrives
    /// on it from a background thread (which ends with the test process).
    pub fn listen() -> Notifications {
        let dir = tempfile::tempdir().expect("temporary folder");
        let path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path).expect("bind the notify socket");
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&got);
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while let Ok(n) = sock.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                sink.lock().unwrap().push((Instant::now(), msg));
            }
        });
        Notifications { path, got, _dir: dir }
    }

    /// `NOTIFY_SOCKET` for the daemon's environment.
    pub fn env(&self) -> (&'static str, String) {
        (
            "NOTIFY_SOCKET",
            self.path.to_str().expect("utf-8 path").to_string(),
        )
    }

    /// Every message so far, with the time it arrived.
    pub fn all(&self) -> Vec<(Instant, String)> {
        self.got.lock().unwrap().clone()
    }

    pub fn messages(&self) -> Vec<String> {
        self.all().into_iter().map(|(_, m)| m).collect()
    }

    /// Waits (at most 5 s) for a message, after the first `skip` ones,
    /// that satisfies `f`; returns its index.
    pub fn wait_for(&self, skip: usize, what: &str, f: impl Fn(&str) -> bool) -> usize {
        let mut found = None;
        super::wait_until(Duration::from_secs(5), || {
            found = self
                .messages()
                .iter()
                .skip(skip)
                .position(|m| f(m))
                .map(|i| i + skip);
            found.is_some()
        });
        found.unwrap_or_else(|| panic!("no {what} notification; got {:?}", self.messages()))
    }

    /// When each message with the assignment `line` (e.g. `WATCHDOG=1`)
    /// arrived.
    pub fn times_of(&self, line: &str) -> Vec<Instant> {
        self.all()
            .into_iter()
            .filter(|(_, m)| has(m, line))
            .map(|(t, _)| t)
            .collect()
    }
}

/// Whether a notification has the assignment `line` (e.g. `READY=1`).
pub fn has(msg: &str, line: &str) -> bool {
    msg.lines().any(|l| l == line)
}
