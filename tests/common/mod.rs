//! Test harness: starts the real taskd binary on free loopback ports with a
//! temporary configuration, and stops it when the handle is dropped, also
//! when the test fails.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_taskd");

pub struct Daemon {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub tcp: SocketAddr,
    pub udp: SocketAddr,
    pub config: PathBuf,
}

/// A port free for both TCP and UDP on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    for _ in 0..100 {
        let t = TcpListener::bind("127.0.0.1:0").expect("bind a probe port");
        let port = t.local_addr().expect("probe address").port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port found");
}

impl Daemon {
    /// Starts taskd with TCP and UDP listeners on one free port and `extra`
    /// appended to the configuration.
    pub fn start(extra: &str) -> Daemon {
        Daemon::start_with(|port| {
            format!(
                "[[listener]]\nproto = \"tcp\"\naddress = \"127.0.0.1:{port}\"\n\n\
                 [[listener]]\nproto = \"udp\"\naddress = \"127.0.0.1:{port}\"\n\n{extra}\n"
            )
        })
    }

    /// Starts taskd with the configuration `make(port)`, retrying on
    /// another port if the chosen one was taken meanwhile.
    pub fn start_with(make: impl Fn(u16) -> String) -> Daemon {
        let mut last = String::new();
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("temporary folder");
            let port = free_port();
            let config = dir.path().join("taskd.toml");
            std::fs::write(&config, make(port)).expect("write config");
            let mut child = Command::new(BIN)
                .arg("--config")
                .arg(&config)
                .current_dir(dir.path())
                .env("RUST_LOG", "info")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::from(
                    std::fs::File::create(dir.path().join("stderr.log")).expect("stderr log"),
                ))
                .spawn()
                .expect("start taskd");
            let tcp: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(status)) = child.try_wait() {
                    last = format!(
                        "taskd exited with {status}: {}",
                        std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default()
                    );
                    break;
                }
                if TcpStream::connect_timeout(&tcp, Duration::from_millis(200)).is_ok() {
                    return Daemon {
                        child,
                        dir,
                        port,
                        tcp,
                        udp: tcp,
                        config,
                    };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("taskd did not start: {last}");
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// A connected client with read timeouts, so a missing reply fails
    /// the test instead of hanging it.
    pub fn connect(&self) -> Client {
        Client::connect(self.tcp)
    }

    /// Sends `lines` on one connection, half-closes, and returns every
    /// reply line until the daemon closes.
    pub fn session(&self, lines: &[&str]) -> Vec<String> {
        let mut c = self.connect();
        for l in lines {
            c.send(l);
        }
        c.finish()
    }

    /// One UDP request, one reply.
    pub fn udp(&self, line: &str) -> String {
        let s = UdpSocket::bind("127.0.0.1:0").expect("udp client");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        s.send_to(format!("{line}\n").as_bytes(), self.udp).expect("send");
        let mut buf = vec![0; 65536];
        let n = s.recv(&mut buf).expect("udp reply");
        String::from_utf8_lossy(&buf[..n])
            .trim_end_matches('\n')
            .to_string()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Client {
    pub stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let reader = BufReader::new(stream.try_clone().expect("clone"));
        Client { stream, reader }
    }

    pub fn send(&mut self, line: &str) {
        // One write per line: two small writes would wait on Nagle and the
        // peer's delayed ACK.
        self.stream
            .write_all(format!("{line}\n").as_bytes())
            .expect("write");
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// The next reply line, without its newline; None at EOF.
    pub fn line(&mut self) -> Option<String> {
        let mut s = String::new();
        match self.reader.read_line(&mut s) {
            Ok(0) => None,
            Ok(_) => Some(s.trim_end_matches('\n').to_string()),
            Err(e) => panic!("reading a reply: {e}"),
        }
    }

    pub fn ask(&mut self, line: &str) -> String {
        self.send(line);
        self.line().expect("a reply")
    }

    /// Half-closes and reads every remaining reply.
    pub fn finish(mut self) -> Vec<String> {
        self.stream.shutdown(std::net::Shutdown::Write).expect("shutdown");
        let mut rest = String::new();
        self.reader.read_to_string(&mut rest).expect("read replies");
        rest.lines().map(str::to_string).collect()
    }
}

// ---- service helpers
// Signals, exit, `info`, files and extra environment for the service tests
// (tests/signals.rs, tests/notify.rs, tests/files.rs).

/// The configuration `Daemon::start` writes: TCP and UDP on `port`, then `extra`.
pub fn svc_config(port: u16, extra: &str) -> String {
    format!(
        "[[listener]]\nproto = \"tcp\"\naddress = \"127.0.0.1:{port}\"\n\n\
         [[listener]]\nproto = \"udp\"\naddress = \"127.0.0.1:{port}\"\n\n{extra}\n"
    )
}

/// Polls `f` every 20 ms until it is true or `timeout` has passed.
pub fn svc_wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
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

/// Parses an `info` reply (`OK key=value ...`) into its figures.
pub fn svc_parse_info(reply: &str) -> std::collections::HashMap<String, String> {
    let body = reply
        .strip_prefix("OK ")
        .unwrap_or_else(|| panic!("info failed: {reply:?}"));
    body.split(' ')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl Daemon {
    /// Like `start`, with extra environment variables for the daemon.
    pub fn start_env(extra: &str, env: &[(&str, &str)]) -> Daemon {
        Daemon::start_with_env(|port| svc_config(port, extra), env)
    }

    /// Like `start_with`, with extra environment variables for the daemon;
    /// retries on another port if the chosen one was taken meanwhile.
    pub fn start_with_env(make: impl Fn(u16) -> String, env: &[(&str, &str)]) -> Daemon {
        let mut last = String::new();
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("temporary folder");
            let port = free_port();
            let config = dir.path().join("taskd.toml");
            std::fs::write(&config, make(port)).expect("write config");
            let mut cmd = Command::new(BIN);
            cmd.arg("--config")
                .arg(&config)
                .current_dir(dir.path())
                .env("RUST_LOG", "info")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::from(
                    std::fs::File::create(dir.path().join("stderr.log")).expect("stderr log"),
                ));
            for (k, v) in env {
                cmd.env(k, v);
            }
            let mut child = cmd.spawn().expect("start taskd");
            let tcp: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(status)) = child.try_wait() {
                    last = format!(
                        "taskd exited with {status}: {}",
                        std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default()
                    );
                    break;
                }
                if TcpStream::connect_timeout(&tcp, Duration::from_millis(200)).is_ok() {
                    return Daemon {
                        child,
                        dir,
                        port,
                        tcp,
                        udp: tcp,
                        config,
                    };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("taskd did not start: {last}");
    }

    /// Sends `sig` (libc::SIGTERM, SIGHUP, ...) to the daemon.
    pub fn send_signal(&self, sig: i32) {
        // SAFETY: kill(2) only sends a signal to the pid of our own child,
        // which is not reaped yet (a reaped pid is waited for only in
        // `wait_exit` and on drop), so it cannot name another process.
        let rc = unsafe { libc::kill(self.child.id() as i32, sig) };
        assert_eq!(rc, 0, "kill({}, {sig}) failed", self.child.id());
    }

    /// Waits at most `timeout` for the daemon to exit; None if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The figures of `info`, asked on a new connection.
    pub fn info_map(&self) -> std::collections::HashMap<String, String> {
        let mut c = self.connect();
        svc_parse_info(&c.ask("info"))
    }

    /// A file in the daemon's folder (its cwd and config folder).
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Rewrites the configuration file (for SIGHUP tests).
    pub fn rewrite_config(&self, text: &str) {
        std::fs::write(&self.config, text).expect("rewrite config");
    }
}
