//! Processes the tests start: a child killed when the test ends (also when
//! it fails), signals, waiting for an exit, a run of taskd that must exit
//! by itself, and the figures of a process read from /proc (from testkit,
//! shared with the benchmark).

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub use testkit::process::{cpu_secs, fd_count, peak_rss_kib, raise_nofile, rss_kib};

/// A child process, killed and reaped when dropped.
pub struct Proc {
    child: Child,
}

impl Proc {
    pub fn new(child: Child) -> Proc {
        Proc { child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `sig` (libc::SIGTERM, SIGHUP, ...).
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) only sends a signal to the pid of our own child,
        // which is reaped only by `wait_exit`/`try_wait` returning its
        // status or on drop, so the pid cannot name another process.
        let rc = unsafe { libc::kill(self.child.id() as i32, sig) };
        assert_eq!(rc, 0, "kill({}, {sig}) failed", self.child.id());
    }

    /// The exit status if the process has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// Waits at most `timeout` for the process to exit; None if it is still
    /// running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let mut status = None;
        super::wait_until(timeout, || {
            status = self.try_wait();
            status.is_some()
        });
        status
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a process that ran to its end left.
pub struct Exited {
    /// The exit code; None when killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Exited {
    /// stdout then stderr, for messages and searches in both.
    pub fn output(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs `cmd` (stdin empty; stdout and stderr to files in `scratch`) and
/// waits for it to exit by itself; kills it and panics after `timeout`
/// (a taskd that starts serving instead of failing must not hang a test).
pub fn run_to_exit(cmd: &mut Command, scratch: &Path, timeout: Duration) -> Exited {
    // Names of their own, should two runs share a folder.
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    let n = RUNS.fetch_add(1, Ordering::Relaxed);
    let out = scratch.join(format!("run-{n}.stdout"));
    let err = scratch.join(format!("run-{n}.stderr"));
    let child = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("stdout file"))
        .stderr(std::fs::File::create(&err).expect("stderr file"))
        .spawn()
        .expect("start the program");
    let mut p = Proc::new(child);
    let status = p.wait_exit(timeout);
    let exited = Exited {
        code: status.and_then(|s| s.code()),
        stdout: std::fs::read_to_string(&out).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err).unwrap_or_default(),
    };
    let _ = std::fs::remove_file(&out);
    let _ = std::fs::remove_file(&err);
    assert!(
        status.is_some(),
        "{cmd:?} did not exit within {timeout:?}; stderr: {}",
        exited.stderr
    );
    exited
}

/// A figure of `pid` from /proc, panicking when it cannot be read.
pub fn rss(pid: u32) -> u64 {
    rss_kib(pid).unwrap_or_else(|e| panic!("VmRSS of {pid}: {e}"))
}

/// The peak resident memory (VmHWM) of `pid` in KiB, panicking when it
/// cannot be read.
pub fn peak_rss(pid: u32) -> u64 {
    peak_rss_kib(pid).unwrap_or_else(|e| panic!("VmHWM of {pid}: {e}"))
}

/// CPU seconds of `pid`, panicking when they cannot be read.
pub fn cpu(pid: u32) -> f64 {
    cpu_secs(pid).unwrap_or_else(|e| panic!("CPU time of {pid}: {e}"))
}

/// How long `f` took.
pub fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t = Instant::now();
    let v = f();
    (v, t.elapsed())
}

/// Makes a FIFO at `path` (to put in place of a file taskd writes).
pub fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.to_str().expect("utf-8 path")).expect("a C path");
    // SAFETY: mkfifo(3) reads the NUL-terminated path we own.
    let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
    assert_eq!(
        rc,
        0,
        "mkfifo {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}
