//! The files taskd writes: the results log and `state_dir/users.json`.
//!
//! The event loop serves thousands of connections from one thread, so it must
//! never wait for a disk: a full disk, a slow NFS mount or an fsync would stall
//! every client at once. One writer thread therefore owns both files. The loop
//! only appends lines to an in-memory buffer and hands it over once per turn
//! through a channel, which never blocks; rotation, reopening after logrotate,
//! atomic replacement of users.json and the handling of write failures all
//! happen on the writer thread, where a slow or failing disk costs nothing but
//! a counter and a rate-limited warning.
//!
//! Nothing a writable folder can hold makes that thread hang (see `open.rs`:
//! links are not followed, FIFOs and devices refused without blocking). A
//! disk that stops answering can still block a `write` or `fsync` in the
//! kernel, where no thread can be interrupted; so shutdown waits for the
//! thread's last flush only [`FLUSH_TIMEOUT`], then leaves without it.

mod open;
mod rotate;
mod users_file;
mod writer;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

pub use users_file::{load_users, users_json};

use crate::ratelimit::RateLimited;

/// What can be known about the files without opening them for writing,
/// for `taskd --check-config` (as `nginx -t` opens its logs): the results
/// log's folder exists and is writable, an existing log is a regular file
/// it may append to; `state_dir` (or, when it does not exist yet, the
/// folder it would be created in) is writable, and an existing users.json is
/// a regular file. One message per problem, each naming the path.
pub fn check_paths(results_log: Option<&Path>, state_dir: &Path) -> Vec<String> {
    let mut errors = Vec::new();
    if let Some(log) = results_log {
        let dir = parent(log);
        if let Err(e) = open::check_writable_dir(dir) {
            errors.push(format!("results log {}: {e}", log.display()));
        } else if let Err(e) =
            open::check_regular_or_absent(log).and_then(|()| match open::access(log, libc::W_OK) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                other => other,
            })
        {
            errors.push(format!("results log {}: {e}", log.display()));
        }
    }
    // users.json is written into state_dir, created (with its parents) if
    // missing: the nearest folder that exists must take it.
    let existing = state_dir
        .ancestors()
        .find(|d| std::fs::symlink_metadata(d).is_ok())
        .unwrap_or(state_dir);
    if let Err(e) = open::check_writable_dir(existing) {
        errors.push(format!("state_dir {}: {e}", state_dir.display()));
    } else if existing == state_dir {
        let users = state_dir.join("users.json");
        if let Err(e) = open::check_regular_or_absent(&users) {
            errors.push(format!("{}: {e}", users.display()));
        }
    }
    errors
}

/// The folder of a file path ("." for a bare name).
fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Where and how the results log is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    /// None: the results log is off.
    pub path: Option<PathBuf>,
    /// Rotate before the file would grow past this size; 0 = never rotate.
    pub max_bytes: u64,
    /// How many rotated files (`results.log.1` …) are kept; 0 = the file is emptied instead.
    pub keep: u32,
}

/// Past this many bytes handed over but not yet written, new batches are dropped
/// (and counted as failed writes): a disk slower than the request rate must not
/// turn into unbounded memory growth in the daemon.
const MAX_QUEUED_BYTES: usize = 64 << 20;

/// How long shutdown waits for the writer thread's last flush of the
/// results log and users.json. Past it the daemon exits anyway (logging
/// that the files may lack their last lines): a hung disk must not turn a
/// stop into systemd's SIGKILL at `TimeoutStopSec=`.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

enum Msg {
    Lines(Vec<u8>),
    Users(Vec<(std::sync::Arc<str>, u64)>),
    Reopen(LogSettings),
    Shutdown,
    /// Tests: the thread sleeps, as if stuck in a write.
    #[cfg(test)]
    Stall(Duration),
}

/// State both sides read without locking.
#[derive(Default)]
struct Shared {
    write_errors: AtomicU64,
    /// Bytes sent to the thread and not yet taken by it.
    queued_bytes: AtomicUsize,
}

impl Shared {
    fn count_error(&self) {
        self.write_errors.fetch_add(1, Ordering::Relaxed);
    }
}

/// Handle held by the event loop. Cheap, never blocks (except `shutdown`,
/// which waits for the thread at most [`FLUSH_TIMEOUT`]).
pub struct FileWriter {
    buf: Vec<u8>,
    tx: mpsc::Sender<Msg>,
    /// Emptied buffers coming back from the thread, so a steady load does not allocate every turn.
    spare: mpsc::Receiver<Vec<u8>>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    /// Disconnected when the thread has ended (its sender is dropped then,
    /// also on a panic): what shutdown waits on, with a timeout.
    done: mpsc::Receiver<()>,
    /// For batches dropped on this side (queue full, thread gone).
    warn: RateLimited,
}

impl fmt::Debug for FileWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileWriter")
            .field("buffered", &self.buf.len())
            .field("write_errors", &self.write_errors())
            .finish_non_exhaustive()
    }
}

impl FileWriter {
    /// Starts the writer thread. `users_path` = state_dir/users.json.
    ///
    /// The results log is opened here, on the caller's thread, so that a log
    /// that cannot be opened at all (a missing or unwritable folder) is a startup
    /// error naming the path rather than a silent stream of warnings. Later
    /// failures (reopen, rotation, writes) are counted and retried instead.
    pub fn start(log: LogSettings, users_path: PathBuf) -> io::Result<FileWriter> {
        let shared = Arc::new(Shared::default());
        let log = writer::LogFile::open_at_start(log, Arc::clone(&shared))?;
        let (tx, rx) = mpsc::channel();
        let (spare_tx, spare) = mpsc::channel();
        let writer = writer::Writer::new(log, users_path, Arc::clone(&shared), spare_tx);
        let (done_tx, done) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("taskd-files".to_owned())
            .spawn(move || {
                // Dropped when run returns or unwinds: the end the handle waits for.
                let _done = done_tx;
                writer.run(rx);
            })?;
        Ok(FileWriter {
            buf: Vec::new(),
            tx,
            spare,
            shared,
            thread: Some(thread),
            done,
            warn: RateLimited::new("results log", log::Level::Warn, writer::WARN_INTERVAL),
        })
    }

    /// The loop appends complete JSON lines (each ending in '\n') here during a turn of the event loop...
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// ...and hands them to the thread once per turn (one channel send per turn,
    /// not per line; no-op when empty).
    pub fn send(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let len = self.buf.len();
        if self
            .shared
            .queued_bytes
            .load(Ordering::Relaxed)
            .saturating_add(len)
            > MAX_QUEUED_BYTES
        {
            self.buf.clear();
            self.shared.count_error();
            self.warn.log(|| {
                format!(
                    "results log: the writer is more than {} MiB behind; lines dropped",
                    MAX_QUEUED_BYTES >> 20
                )
            });
            return;
        }
        let next = self.spare.try_recv().unwrap_or_default();
        let batch = std::mem::replace(&mut self.buf, next);
        self.shared.queued_bytes.fetch_add(len, Ordering::Relaxed);
        if self.tx.send(Msg::Lines(batch)).is_err() {
            // Only possible when the thread died (a panic): the lines are lost.
            self.shared.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            self.thread_gone();
        }
    }

    /// A new users.json snapshot to write atomically (the loop calls this at
    /// most once a second when counts changed, and at shutdown).
    pub fn save_users(&mut self, users: Vec<(std::sync::Arc<str>, u64)>) {
        if self.tx.send(Msg::Users(users)).is_err() {
            self.thread_gone();
        }
    }

    /// SIGUSR1 / SIGHUP: close and reopen the log (after logrotate renamed it), possibly with new settings.
    pub fn reopen(&mut self, log: LogSettings) {
        // Lines of this turn were produced before the signal: they belong to the old file.
        self.send();
        if self.tx.send(Msg::Reopen(log)).is_err() {
            self.thread_gone();
        }
    }

    /// Failed writes so far (for `info` and /metrics).
    pub fn write_errors(&self) -> u64 {
        self.shared.write_errors.load(Ordering::Relaxed)
    }

    /// Flushes everything (log lines and the last users snapshot), stops and
    /// joins the thread; gives up waiting after [`FLUSH_TIMEOUT`].
    pub fn shutdown(mut self) {
        self.finish(FLUSH_TIMEOUT);
    }

    fn finish(&mut self, timeout: Duration) {
        self.send();
        let Some(thread) = self.thread.take() else {
            return;
        };
        // A send error means the thread already ended; join reports why.
        let _ = self.tx.send(Msg::Shutdown);
        match self.done.recv_timeout(timeout) {
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                if thread.join().is_err() {
                    log::error!(
                        "the file writer thread panicked: the results log or users.json may be incomplete"
                    );
                }
            }
            // Never sent on, so only a timeout is left: the thread is stuck
            // in a write or fsync. It is left behind (detached) and ends with
            // the process.
            Ok(()) | Err(mpsc::RecvTimeoutError::Timeout) => log::error!(
                "the file writer did not finish within {} s (a disk that does not answer?); \
                 exiting without it: the results log and users.json may lack their last changes",
                timeout.as_secs()
            ),
        }
    }

    #[cfg(test)]
    fn stall(&mut self, d: Duration) {
        let _ = self.tx.send(Msg::Stall(d));
    }

    fn thread_gone(&mut self) {
        self.shared.count_error();
        self.warn
            .log(|| "the file writer thread is gone; results log lines and user counts are lost".to_owned());
    }
}

impl Drop for FileWriter {
    /// Dropping without `shutdown` (an early return or a panic unwinding the
    /// loop) still flushes what was handed over.
    fn drop(&mut self) {
        self.finish(FLUSH_TIMEOUT);
    }
}

#[cfg(test)]
mod tests;
