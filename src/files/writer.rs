//! The writer thread: the only code that touches the results log and users.json.
//!
//! Lines are gathered in `pending` and written with one `write_all` once a second
//! or when enough has gathered, so a busy daemon makes few system calls. A failed
//! write drops what was pending, closes the file and reopens it with the next
//! batch: reopening repairs a half-written last line and picks the file up again
//! once the disk has room, so writing resumes without anyone's help.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use super::{LogSettings, Msg, Shared, open, rotate, users_file};
use crate::ratelimit::RateLimited;

/// Lines reach the file at least this often, and a failed users.json is retried this often.
const TICK: Duration = Duration::from_secs(1);
/// Write as soon as this much is pending, so memory stays small under load.
const WRITE_AT: usize = 64 << 10;
/// Buffers larger than this are freed rather than handed back for reuse.
const SPARE_MAX: usize = 1 << 20;
/// Messages taken in one go before looking at the clock again, so a flood of
/// batches cannot postpone the once-a-second flush indefinitely.
const DRAIN_MAX: usize = 256;
/// At most one warning per this interval for each file.
pub(super) const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// Opens the log for appending; returns the file and its size. Only a
/// regular file is accepted, never through a symbolic link, and a FIFO is
/// refused without blocking (see `open.rs`).
fn open_log(path: &Path) -> io::Result<(File, Option<u64>)> {
    let mut opts = OpenOptions::new();
    opts.append(true).create(true).mode(0o640);
    // Read access is only needed to look at the last byte; a log we may only
    // append to is still used, without that check.
    let (mut file, readable) = match open::open_regular(path, opts.clone().read(true)) {
        Ok(f) => (f, true),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => (open::open_regular(path, &opts)?, false),
        Err(e) => return Err(e),
    };
    let mut len = file.metadata()?.len();
    if len > 0 && readable {
        let mut last = [0u8; 1];
        file.read_exact_at(&mut last, len - 1)?;
        // A crash (or a failed write) may have left half a line: end it, so the
        // next line starts on its own and only that one line is damaged.
        if last[0] != b'\n' {
            file.write_all(b"\n")?;
            len += 1;
        }
    }
    Ok((file, Some(len)))
}

/// The results log as the thread sees it.
pub(super) struct LogFile {
    settings: LogSettings,
    /// None: off, or closed after a failure (reopened with the next batch).
    file: Option<File>,
    /// Bytes in the file plus `pending`; None while the file is closed after a failure.
    size: Option<u64>,
    /// Complete lines not yet written.
    pending: Vec<u8>,
    shared: Arc<Shared>,
    warn: RateLimited,
}

impl LogFile {
    pub(super) fn open_at_start(settings: LogSettings, shared: Arc<Shared>) -> io::Result<LogFile> {
        let mut log = LogFile {
            settings,
            file: None,
            size: None,
            pending: Vec::new(),
            shared,
            warn: RateLimited::new("results log", log::Level::Warn, WARN_INTERVAL),
        };
        if let Some(path) = &log.settings.path {
            let (file, size) = open_log(path)
                .map_err(|e| io::Error::new(e.kind(), format!("results log {}: {e}", path.display())))?;
            log.file = Some(file);
            log.size = size;
        }
        Ok(log)
    }

    fn fail(&mut self, msg: String) {
        self.shared.count_error();
        self.warn.log(|| msg);
    }

    /// Opens the configured file; a failure is counted and logged.
    fn open(&mut self) -> bool {
        let Some(path) = &self.settings.path else {
            return false;
        };
        match open_log(path) {
            Ok((file, size)) => {
                self.file = Some(file);
                self.size = size;
                true
            }
            Err(e) => {
                let msg = format!("cannot open the results log {}: {e}", path.display());
                self.fail(msg);
                false
            }
        }
    }

    /// Takes a batch of complete lines (each ending in '\n'); `batch` may
    /// come back as another buffer (empty or not, for the caller to clear).
    fn add(&mut self, batch: &mut Vec<u8>) {
        if self.settings.path.is_none() {
            return;
        }
        // When the file could not be opened the batch is dropped: keeping it
        // would only grow memory while the disk stays unusable.
        if self.file.is_none() && !self.open() {
            return;
        }
        let max = self.settings.max_bytes;
        match self.size {
            Some(size) if max > 0 && size + batch.len() as u64 > max => {
                // Rare path: rotation falls inside this batch, so go line by line
                // to rotate between lines and never split one.
                for line in batch.split_inclusive(|&b| b == b'\n') {
                    if !self.add_line_rotating(line, max) {
                        break;
                    }
                }
            }
            _ => {
                if let Some(size) = &mut self.size {
                    *size += batch.len() as u64;
                }
                if self.pending.is_empty() {
                    // The batch becomes the pending lines (the loop sends
                    // 64 KiB at a time, one write's worth): no copy.
                    std::mem::swap(&mut self.pending, batch);
                } else {
                    self.pending.extend_from_slice(batch);
                }
            }
        }
        if self.pending.len() >= WRITE_AT {
            self.write_pending();
        }
    }

    /// False when the log could not be reopened after rotating (the rest of the batch is dropped).
    fn add_line_rotating(&mut self, line: &[u8], max: u64) -> bool {
        if let Some(size) = self.size
            && size > 0
            && size + line.len() as u64 > max
        {
            self.rotate();
            if self.file.is_none() {
                return false;
            }
        }
        self.pending.extend_from_slice(line);
        if let Some(size) = &mut self.size {
            *size += line.len() as u64;
        }
        true
    }

    fn rotate(&mut self) {
        self.write_pending();
        self.file = None;
        let Some(path) = self.settings.path.clone() else {
            return;
        };
        let rotated = rotate::rotate(&path, self.settings.keep);
        if let Err(e) = &rotated {
            self.fail(format!("cannot rotate the results log {}: {e}", path.display()));
        }
        if self.open() && rotated.is_err() {
            // Keep appending to the unrotated file and try again only after
            // another max_bytes, not before every line.
            self.size = self.size.map(|_| 0);
        }
    }

    /// Writes the pending lines; on failure they are dropped and the file is
    /// closed, to be reopened (and its last line ended) with the next batch.
    pub(super) fn write_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let result = match &mut self.file {
            Some(file) => file.write_all(&self.pending),
            None => Ok(()),
        };
        self.pending.clear();
        if self.pending.capacity() > SPARE_MAX {
            // One huge batch must not pin its memory for the life of the daemon.
            self.pending = Vec::new();
        }
        if let Err(e) = result {
            self.file = None;
            self.size = None;
            let msg = match &self.settings.path {
                Some(path) => format!(
                    "cannot write the results log {}: {e}; lines dropped",
                    path.display()
                ),
                None => format!("cannot write the results log: {e}; lines dropped"),
            };
            self.fail(msg);
        }
    }

    fn reopen(&mut self, settings: LogSettings) {
        // Pending lines go to the file they were meant for, the one logrotate renamed.
        self.write_pending();
        self.file = None;
        self.size = None;
        self.settings = settings;
        // A failure is counted here and retried with the next batch.
        self.open();
    }
}

/// Everything the thread owns.
pub(super) struct Writer {
    log: LogFile,
    users_path: PathBuf,
    /// The newest snapshot not yet written (only the newest matters).
    users: Option<Vec<(Arc<str>, u64)>>,
    /// `users` arrived since the last attempt (else it is a failed one waiting for a retry).
    users_new: bool,
    users_warn: RateLimited,
    shared: Arc<Shared>,
    spare: Sender<Vec<u8>>,
}

impl Writer {
    pub(super) fn new(
        log: LogFile,
        users_path: PathBuf,
        shared: Arc<Shared>,
        spare: Sender<Vec<u8>>,
    ) -> Writer {
        Writer {
            log,
            users_path,
            users: None,
            users_new: false,
            users_warn: RateLimited::new("users.json", log::Level::Warn, WARN_INTERVAL),
            shared,
            spare,
        }
    }

    pub(super) fn run(mut self, rx: Receiver<Msg>) {
        let mut next_tick = Instant::now() + TICK;
        loop {
            let mut stop = match rx.recv_timeout(next_tick.saturating_duration_since(Instant::now())) {
                Ok(msg) => self.handle(msg),
                Err(RecvTimeoutError::Timeout) => false,
                Err(RecvTimeoutError::Disconnected) => true,
            };
            // Take what else is queued before writing users.json, so that of
            // several snapshots only the last is written.
            let mut taken = 0;
            while !stop && taken < DRAIN_MAX {
                match rx.try_recv() {
                    Ok(msg) => stop = self.handle(msg),
                    Err(_) => break,
                }
                taken += 1;
            }
            if stop {
                break;
            }
            if self.users_new {
                self.write_users();
            }
            let now = Instant::now();
            if now >= next_tick {
                self.log.write_pending();
                if self.users.is_some() {
                    self.write_users();
                }
                next_tick = now + TICK;
            }
        }
        self.log.write_pending();
        if self.users.is_some() {
            self.write_users();
        }
        self.log.warn.finish();
        self.users_warn.finish();
    }

    /// True on shutdown.
    fn handle(&mut self, msg: Msg) -> bool {
        match msg {
            Msg::Lines(mut batch) => {
                self.shared.queued_bytes.fetch_sub(batch.len(), Ordering::Relaxed);
                // The loop promises complete lines; ending a stray one here keeps
                // a caller's mistake from gluing two lines together.
                if !batch.ends_with(b"\n") {
                    batch.push(b'\n');
                }
                self.log.add(&mut batch);
                batch.clear();
                if batch.capacity() <= SPARE_MAX {
                    // The handle may already be gone at shutdown; the buffer is then just freed.
                    let _ = self.spare.send(batch);
                }
            }
            Msg::Users(users) => {
                self.users = Some(users);
                self.users_new = true;
            }
            Msg::Reopen(settings) => self.log.reopen(settings),
            Msg::Shutdown => return true,
            #[cfg(test)]
            Msg::Stall(d) => std::thread::sleep(d),
        }
        false
    }

    fn write_users(&mut self) {
        self.users_new = false;
        let Some(users) = &self.users else {
            return;
        };
        match users_file::save_users(&self.users_path, users) {
            Ok(()) => self.users = None,
            Err(e) => {
                self.shared.count_error();
                let path = &self.users_path;
                self.users_warn
                    .log(|| format!("cannot write {}: {e}", path.display()));
            }
        }
    }
}
