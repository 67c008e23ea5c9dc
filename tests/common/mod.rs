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
        self.stream.write_all(line.as_bytes()).expect("write");
        self.stream.write_all(b"\n").expect("write");
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
