//! systemd integration against the real binary (taskd(8), SYSTEMD): sd_notify
//! messages on a NOTIFY_SOCKET of our own (READY, STATUS, WATCHDOG,
//! RELOADING with MONOTONIC_USEC, STOPPING) and socket activation
//! (LISTEN_FDS / LISTEN_PID), with and without systemd-socket-activate.

mod common;

use std::ffi::CStr;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{BIN, Daemon, Launch, LineClient, Notifications, Proc, free_port, has, wait_until};

fn start_notified(n: &Notifications, watchdog_usec: Option<&str>) -> Daemon {
    let (key, path) = n.env();
    let mut env = vec![(key, path.as_str())];
    if let Some(usec) = watchdog_usec {
        env.push(("WATCHDOG_USEC", usec));
    }
    Launch::line("").env(&env).start()
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
    let enough = wait_until(Duration::from_secs(3), || {
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
fn spawn_activated(listener: &TcpListener, config: &Path, dir: &Path) -> Proc {
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
    Proc::new(cmd.spawn().expect("start taskd"))
}

fn tcp_config(addr: SocketAddr) -> String {
    format!("[[listener]]\nproto = \"tcp\"\naddress = \"{addr}\"\n")
}

#[test]
fn socket_activation_serves_the_passed_listener() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    let config = dir.path().join("taskd.toml");
    std::fs::write(&config, tcp_config(addr)).expect("config");
    let mut child = spawn_activated(&listener, &config, dir.path());
    // Only the daemon holds the socket now: every connection is its own.
    drop(listener);
    let stderr = || std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
    let mut c = LineClient::connect(addr);
    assert_eq!(c.ask("#1 sum 1 2 3"), "#1 OK 6", "{}", stderr());
    assert_eq!(c.ask("ping"), "OK pong");
    assert!(
        stderr().contains("socket from systemd"),
        "taskd did not adopt the passed socket:\n{}",
        stderr()
    );
    assert!(child.try_wait().is_none(), "{}", stderr());
    child.signal(libc::SIGTERM);
    let status = child.wait_exit(Duration::from_secs(10));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", stderr());
}

#[test]
fn a_reload_never_closes_a_passed_socket() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    let other: SocketAddr = format!("127.0.0.1:{}", free_port().expect("a free port"))
        .parse()
        .unwrap();
    let config = dir.path().join("taskd.toml");
    std::fs::write(&config, format!("{}{}", tcp_config(addr), tcp_config(other))).expect("config");
    let child = spawn_activated(&listener, &config, dir.path());
    drop(listener);
    let stderr = || std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
    assert_eq!(LineClient::connect(addr).ask("ping"), "OK pong", "{}", stderr());
    // The new configuration drops the passed socket's listener.
    std::fs::write(&config, tcp_config(other)).expect("config");
    child.signal(libc::SIGHUP);
    assert!(
        wait_until(Duration::from_secs(5), || stderr().contains("reload")),
        "no reload logged:\n{}",
        stderr()
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        LineClient::connect(addr).ask("#p sum 1 1"),
        "#p OK 2",
        "the passed socket after a reload without its listener:\n{}",
        stderr()
    );
}

#[test]
fn a_passed_socket_matching_no_listener_is_exit_1() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let other: SocketAddr = format!("127.0.0.1:{}", free_port().expect("a free port"))
        .parse()
        .unwrap();
    let config = dir.path().join("taskd.toml");
    std::fs::write(&config, tcp_config(other)).expect("config");
    let mut child = spawn_activated(&listener, &config, dir.path());
    let status = child.wait_exit(Duration::from_secs(10));
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
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port().expect("a free port"))
            .parse()
            .unwrap();
        let config = dir.path().join("taskd.toml");
        std::fs::write(&config, tcp_config(addr)).expect("config");
        let stderr_path = dir.path().join("stderr.log");
        // It binds the address, and on the first connection execs taskd
        // in place (same pid) with the socket as fd 3.
        let mut child = Proc::new(
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
        let listening = wait_until(Duration::from_secs(10), || {
            child.try_wait().is_none()
                && TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        });
        if !listening {
            // The port was taken meanwhile: try another one.
            continue;
        }
        let mut c = LineClient::connect(addr);
        assert_eq!(c.ask("#s max 4 8 1"), "#s OK 8", "{}", stderr());
        assert!(
            stderr().contains("socket from systemd"),
            "taskd did not adopt the passed socket:\n{}",
            stderr()
        );
        // taskd, exec'd in place of systemd-socket-activate: the same pid.
        child.signal(libc::SIGTERM);
        let status = child.wait_exit(Duration::from_secs(10));
        assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", stderr());
        return;
    }
    panic!("systemd-socket-activate could not listen on a free port");
}
