//! systemd integration against the real binary (SPEC section 5): sd_notify
//! messages on a NOTIFY_SOCKET of our own (READY, STATUS, WATCHDOG,
//! RELOADING with MONOTONIC_USEC, STOPPING) and socket activation
//! (LISTEN_FDS / LISTEN_PID), with and without systemd-socket-activate.

mod common;

use std::ffi::CStr;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{BIN, Client, Daemon, free_port, svc_wait_until};

/// Every datagram received on a notify socket, in order.
struct Notifications {
    path: PathBuf,
    got: Arc<Mutex<Vec<(Instant, String)>>>,
    _dir: tempfile::TempDir,
}

impl Notifications {
    /// Binds a datagram socket in a fresh folder and collects what arrives
    /// on it from a background thread (which ends with the test process).
    fn listen() -> Notifications {
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

    fn all(&self) -> Vec<(Instant, String)> {
        self.got.lock().unwrap().clone()
    }

    fn messages(&self) -> Vec<String> {
        self.all().into_iter().map(|(_, m)| m).collect()
    }

    /// Waits (at most 5 s) for a message, after the first `skip` ones,
    /// that satisfies `f`; returns its index.
    fn wait_for(&self, skip: usize, what: &str, f: impl Fn(&str) -> bool) -> usize {
        let mut found = None;
        svc_wait_until(Duration::from_secs(5), || {
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
}

/// Whether a notification has the assignment `line` (e.g. `READY=1`).
fn has(msg: &str, line: &str) -> bool {
    msg.lines().any(|l| l == line)
}

fn start_notified(n: &Notifications, watchdog_usec: Option<&str>) -> Daemon {
    let path = n.path.to_str().expect("utf-8 path").to_string();
    let mut env = vec![("NOTIFY_SOCKET", path.as_str())];
    if let Some(usec) = watchdog_usec {
        env.push(("WATCHDOG_USEC", usec));
    }
    Daemon::start_env("", &env)
}

#[test]
fn ready_with_status_then_regular_watchdog_pings() {
    let n = Notifications::listen();
    let d = start_notified(&n, Some("400000"));
    let ready = n.wait_for(0, "READY=1", |m| has(m, "READY=1"));
    let msg = &n.messages()[ready];
    assert!(
        msg.lines()
            .any(|l| l.starts_with("STATUS=") && l.len() > "STATUS=".len()),
        "READY=1 without a STATUS= line: {msg:?}"
    );
    let ready_at = n.all()[ready].0;
    // WATCHDOG_USEC = 400 ms: a ping every 200 ms or so, at least 3 in 2 s.
    let enough = svc_wait_until(Duration::from_secs(3), || {
        n.all()
            .iter()
            .filter(|(t, m)| *t >= ready_at && has(m, "WATCHDOG=1"))
            .count()
            >= 3
    });
    let pings: Vec<Duration> = n
        .all()
        .iter()
        .filter(|(_, m)| has(m, "WATCHDOG=1"))
        .map(|(t, _)| t.duration_since(ready_at))
        .collect();
    assert!(enough, "fewer than 3 WATCHDOG=1 after READY=1: {pings:?}");
    assert!(
        pings.iter().filter(|t| **t <= Duration::from_secs(2)).count() >= 3,
        "fewer than 3 WATCHDOG=1 within 2 s of READY=1: {pings:?}"
    );
    assert_eq!(d.session(&["ping"]), ["OK pong"]);
}

#[test]
fn sighup_sends_reloading_with_monotonic_usec_then_ready() {
    let n = Notifications::listen();
    let d = start_notified(&n, None);
    let ready = n.wait_for(0, "READY=1", |m| has(m, "READY=1"));
    d.send_signal(libc::SIGHUP);
    let reloading = n.wait_for(ready + 1, "RELOADING=1", |m| has(m, "RELOADING=1"));
    let msg = &n.messages()[reloading];
    assert!(
        msg.lines().any(|l| l
            .strip_prefix("MONOTONIC_USEC=")
            .is_some_and(|v| v.parse::<u64>().is_ok_and(|v| v > 0))),
        "RELOADING=1 without MONOTONIC_USEC=: {msg:?}"
    );
    n.wait_for(reloading + 1, "READY=1 after RELOADING=1", |m| has(m, "READY=1"));
    assert_eq!(d.session(&["ping"]), ["OK pong"]);
}

#[test]
fn a_failed_reload_shows_in_status() {
    let n = Notifications::listen();
    let d = start_notified(&n, None);
    let ready = n.wait_for(0, "READY=1", |m| has(m, "READY=1"));
    let good = std::fs::read_to_string(&d.config).expect("config");
    d.rewrite_config(&format!("{good}\n[server]\nno_such_key = 1\n"));
    d.send_signal(libc::SIGHUP);
    let after = n.wait_for(ready + 1, "STATUS= after the failed reload", |m| {
        m.lines().any(|l| l.starts_with("STATUS="))
    });
    let msg = &n.messages()[after];
    assert!(
        msg.contains("fail"),
        "STATUS= after a failed reload does not say so: {msg:?}"
    );
    assert_eq!(d.session(&["ping"]), ["OK pong"]);
}

#[test]
fn sigterm_sends_stopping() {
    let n = Notifications::listen();
    let mut d = start_notified(&n, None);
    let ready = n.wait_for(0, "READY=1", |m| has(m, "READY=1"));
    d.send_signal(libc::SIGTERM);
    n.wait_for(ready + 1, "STOPPING=1", |m| has(m, "STOPPING=1"));
    let status = d.wait_exit(Duration::from_secs(10));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", d.stderr());
}

/// A C string for setenv, built without allocating (for use after fork).
struct CBuf([u8; 24]);

impl CBuf {
    fn decimal(mut n: u32) -> CBuf {
        let mut digits = [0u8; 10];
        let mut len = 0;
        loop {
            digits[len] = b'0' + (n % 10) as u8;
            len += 1;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        let mut out = [0u8; 24];
        for (o, d) in out.iter_mut().zip(digits[..len].iter().rev()) {
            *o = *d;
        }
        CBuf(out)
    }

    fn as_ptr(&self) -> *const libc::c_char {
        self.0.as_ptr().cast()
    }
}

/// Starts taskd with `listener` passed as systemd would: as fd 3, with
/// LISTEN_FDS=1 and LISTEN_PID = the child's own pid.
fn spawn_activated(listener: &TcpListener, config: &Path, dir: &Path) -> Child {
    let fd: RawFd = listener.as_raw_fd();
    let mut cmd = Command::new(BIN);
    cmd.arg("--config")
        .arg(config)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(dir.join("stderr.log")).expect("stderr log"),
        ));
    // The environment is set inside pre_exec (LISTEN_PID needs the child's
    // pid), and nothing with Command::env: with it, std execs with an
    // environment array it built before the fork, which could drop ours.
    const VARS: [(&CStr, &CStr); 2] = [(c"LISTEN_FDS", c"1"), (c"RUST_LOG", c"info")];
    // SAFETY: the closure runs in the forked child before exec. It calls
    // only dup2, fcntl, getpid and setenv, on memory it owns (no allocation
    // of its own; the pid is formatted into a stack buffer). setenv is not
    // async-signal-safe in general: it takes glibc's environment lock and
    // may allocate. That is sound here because the child has a single
    // thread, glibc's fork leaves malloc usable in the child, and no thread
    // of this test process calls setenv or std::env::set_var (std holds its
    // environment lock across the fork anyway), so the lock is free.
    unsafe {
        cmd.pre_exec(move || {
            if fd == 3 {
                // Already fd 3: only the close-on-exec flag must go.
                if libc::fcntl(3, libc::F_SETFD, 0) == -1 {
                    return Err(io::Error::last_os_error());
                }
            } else if libc::dup2(fd, 3) == -1 {
                return Err(io::Error::last_os_error());
            }
            let pid = CBuf::decimal(libc::getpid() as u32);
            if libc::setenv(c"LISTEN_PID".as_ptr(), pid.as_ptr(), 1) != 0 {
                return Err(io::Error::last_os_error());
            }
            for (k, v) in VARS {
                if libc::setenv(k.as_ptr(), v.as_ptr(), 1) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    cmd.spawn().expect("start taskd")
}

fn tcp_config(addr: SocketAddr) -> String {
    format!("[[listener]]\nproto = \"tcp\"\naddress = \"{addr}\"\n")
}

/// Kills the child when the test ends, also when it fails.
struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_exit(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let mut status = None;
    svc_wait_until(timeout, || {
        status = child.try_wait().expect("try_wait");
        status.is_some()
    });
    status
}

#[test]
fn socket_activation_serves_the_passed_listener() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    let config = dir.path().join("taskd.toml");
    std::fs::write(&config, tcp_config(addr)).expect("config");
    let mut child = Reap(spawn_activated(&listener, &config, dir.path()));
    // Only the daemon holds the socket now: every connection is its own.
    drop(listener);
    let stderr = || std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
    let mut c = Client::connect(addr);
    assert_eq!(c.ask("#1 sum 1 2 3"), "#1 OK 6", "{}", stderr());
    assert_eq!(c.ask("ping"), "OK pong");
    assert!(
        stderr().contains("socket from systemd"),
        "taskd did not adopt the passed socket:\n{}",
        stderr()
    );
    assert!(child.0.try_wait().expect("try_wait").is_none(), "{}", stderr());
    // SAFETY: kill(2) on our own unreaped child.
    unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) };
    let status = wait_exit(&mut child.0, Duration::from_secs(10));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", stderr());
}

#[test]
fn a_reload_never_closes_a_passed_socket() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    let other: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = dir.path().join("taskd.toml");
    std::fs::write(&config, format!("{}{}", tcp_config(addr), tcp_config(other))).expect("config");
    let child = Reap(spawn_activated(&listener, &config, dir.path()));
    drop(listener);
    let stderr = || std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
    assert_eq!(Client::connect(addr).ask("ping"), "OK pong", "{}", stderr());
    // The new configuration drops the passed socket's listener.
    std::fs::write(&config, tcp_config(other)).expect("config");
    // SAFETY: kill(2) on our own unreaped child.
    unsafe { libc::kill(child.0.id() as i32, libc::SIGHUP) };
    assert!(
        svc_wait_until(Duration::from_secs(5), || stderr().contains("reload")),
        "no reload logged:\n{}",
        stderr()
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        Client::connect(addr).ask("#p sum 1 1"),
        "#p OK 2",
        "the passed socket after a reload without its listener:\n{}",
        stderr()
    );
}

#[test]
fn a_passed_socket_matching_no_listener_is_exit_1() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let other: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = dir.path().join("taskd.toml");
    std::fs::write(&config, tcp_config(other)).expect("config");
    let mut child = Reap(spawn_activated(&listener, &config, dir.path()));
    let status = wait_exit(&mut child.0, Duration::from_secs(10));
    let stderr = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(1),
        "a socket on {} that no listener names:\n{stderr}",
        listener.local_addr().unwrap()
    );
    assert!(
        stderr.contains(&listener.local_addr().unwrap().to_string()),
        "the error does not name the passed socket's address:\n{stderr}"
    );
}

#[test]
fn systemd_socket_activate_passes_a_listener_taskd_serves() {
    let Some(tool) = [
        "/lib/systemd/systemd-socket-activate",
        "/usr/bin/systemd-socket-activate",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists()) else {
        println!("note: systemd-socket-activate not installed; variant skipped (pre_exec test covers it)");
        return;
    };
    for _ in 0..5 {
        let dir = tempfile::tempdir().expect("temporary folder");
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let config = dir.path().join("taskd.toml");
        std::fs::write(&config, tcp_config(addr)).expect("config");
        let stderr_path = dir.path().join("stderr.log");
        // It binds the address, and on the first connection execs taskd
        // in place (same pid) with the socket as fd 3.
        let mut child = Reap(
            Command::new(tool)
                .arg("-l")
                .arg(addr.to_string())
                .arg("-E")
                .arg("RUST_LOG=info")
                .arg(BIN)
                .arg("--config")
                .arg(&config)
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::from(std::fs::File::create(&stderr_path).expect("stderr")))
                .spawn()
                .expect("start systemd-socket-activate"),
        );
        let stderr = || std::fs::read_to_string(&stderr_path).unwrap_or_default();
        let listening = svc_wait_until(Duration::from_secs(10), || {
            child.0.try_wait().expect("try_wait").is_none()
                && TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        });
        if !listening {
            // The port was taken meanwhile: try another one.
            continue;
        }
        let mut c = Client::connect(addr);
        assert_eq!(c.ask("#s max 4 8 1"), "#s OK 8", "{}", stderr());
        assert!(
            stderr().contains("socket from systemd"),
            "taskd did not adopt the passed socket:\n{}",
            stderr()
        );
        // SAFETY: kill(2) on our own unreaped child (taskd, exec'd in place).
        unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) };
        let status = wait_exit(&mut child.0, Duration::from_secs(10));
        assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", stderr());
        return;
    }
    panic!("systemd-socket-activate could not listen on a free port");
}
