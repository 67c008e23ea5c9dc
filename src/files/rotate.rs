//! Size rotation of the results log, with logrotate's names (`results.log.1` is
//! the newest old file), so operators and their tools find the files where
//! they expect them whether taskd or logrotate rotated.

use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// `results.log` + `.n`.
pub(super) fn numbered(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// Shifts `.(keep-1)` → `.keep` … `results.log` → `.1`, the rename over `.keep`
/// dropping the oldest. keep = 0 keeps no old file, so the log is emptied in place.
/// The caller has closed the log and opens a fresh one afterwards.
pub(super) fn rotate(path: &Path, keep: u32) -> io::Result<()> {
    if keep == 0 {
        // Not O_TRUNC at open: only once the file is known to be a regular
        // file (not through a link) is it emptied.
        let mut opts = OpenOptions::new();
        opts.write(true).create(true).mode(0o640);
        return super::open::open_regular(path, &opts)?.set_len(0);
    }
    for n in (1..keep).rev() {
        match fs::rename(numbered(path, n), numbered(path, n + 1)) {
            // Fewer old files than `keep` so far.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            // Stop rather than go on and overwrite an old file that could not be moved.
            Err(e) => return Err(e),
            Ok(()) => {}
        }
    }
    match fs::rename(path, numbered(path, 1)) {
        // Someone removed the log: there is nothing to keep, the fresh file starts it again.
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}
