//! `state_dir/users.json`: the per-user request counts that survive restarts.
//!
//! The file is replaced atomically (temporary file created with `O_EXCL`,
//! fsync, rename, fsync of the folder) so that a crash or power loss leaves either the old or the new
//! snapshot, never a mix; a file that is nevertheless unreadable is moved aside
//! rather than deleted, so an operator can still recover the counts by hand.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::open;
use crate::protocol::reply::write_users_json;

/// The users.json format, written by the `users` op's own writer:
/// `[{"request_count":3,"username":"alice"},...]` sorted by the names' bytes.
pub fn users_json<S: AsRef<str>>(users: &[(S, u64)]) -> Vec<u8> {
    let mut sorted: Vec<&(S, u64)> = users.iter().collect();
    sorted.sort_unstable_by(|a, b| a.0.as_ref().as_bytes().cmp(b.0.as_ref().as_bytes()));
    let mut out = Vec::with_capacity(2 + users.len() * 48);
    write_users_json(
        &mut out,
        sorted.into_iter().map(|(name, count)| (name.as_ref(), *count)),
    );
    out
}

/// Parses the users.json array; the error says what is wrong, for the log.
fn parse(data: &[u8]) -> Result<Vec<(String, u64)>, String> {
    let value: serde_json::Value = serde_json::from_slice(data).map_err(|e| e.to_string())?;
    let items = value.as_array().ok_or("not a JSON array")?;
    // A BTreeMap of Strings is ordered by the names' bytes, the order the file promises.
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for (i, item) in items.iter().enumerate() {
        let entry = || format!("entry {i}");
        let obj = item
            .as_object()
            .ok_or_else(|| format!("{} is not an object", entry()))?;
        let name = obj
            .get("username")
            .and_then(|v| v.as_str())
            .ok_or_else(|| format!("{} has no string \"username\"", entry()))?;
        let count = obj
            .get("request_count")
            .and_then(|v| v.as_u64())
            .ok_or_else(|| format!("{} has no unsigned integer \"request_count\"", entry()))?;
        // taskd never writes a name twice; a hand-edited file that does loses nothing.
        let total = counts.entry(name.to_owned()).or_insert(0);
        *total = total.saturating_add(count);
    }
    Ok(counts.into_iter().collect())
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn with_path(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

/// Reads state_dir/users.json at start: Ok(counts). A missing file is Ok(empty).
/// A corrupt one (not the array above) is moved aside to
/// `users.json.corrupt-<unix seconds>` with a log::warn! naming both paths, and
/// Ok(empty) is returned. A symbolic link, a FIFO or anything else that is
/// not a regular file is refused (never followed, never waited on), like
/// other I/O errors: Err (the message names the path).
pub fn load_users(path: &Path) -> io::Result<Vec<(String, u64)>> {
    let data = match read_regular(path) {
        Ok(data) => data,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            log::info!("user counts: no {} yet, starting with none", path.display());
            return Ok(Vec::new());
        }
        Err(e) => return Err(with_path(e, "cannot read", path)),
    };
    let reason = match parse(&data) {
        Ok(users) => {
            log::info!(
                "user counts: {} users loaded from {}",
                users.len(),
                path.display()
            );
            return Ok(users);
        }
        Err(reason) => reason,
    };
    let now = SystemTime::now();
    // A clock before 1970 is absurd but must not stop the daemon; 0 still names the file.
    let secs = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let aside = with_suffix(path, &format!(".corrupt-{secs}"));
    // Moving aside (not deleting) keeps the counts recoverable; if even that
    // fails, starting empty would overwrite them at the first save, so refuse.
    fs::rename(path, &aside).map_err(|e| with_path(e, "cannot move aside the corrupt", path))?;
    log::warn!(
        "{} is corrupt ({reason}); moved it aside to {} at {} and starting with empty user counts",
        path.display(),
        aside.display(),
        humantime::format_rfc3339_seconds(now),
    );
    Ok(Vec::new())
}

fn read_regular(path: &Path) -> io::Result<Vec<u8>> {
    let mut data = Vec::new();
    open::open_regular(path, OpenOptions::new().read(true))?.read_to_end(&mut data)?;
    Ok(data)
}

/// Writes the snapshot to a temporary file of its own: whatever was at `tmp`
/// (a stale file of a crashed run, or a link or FIFO someone put there) is
/// unlinked first, which never follows a link, and the file is then created
/// with `O_EXCL`, which fails rather than open anything that reappeared.
fn write_tmp<S: AsRef<str>>(tmp: &Path, users: &[(S, u64)]) -> io::Result<()> {
    // Something other than a file left there was put there: say so.
    if let Ok(meta) = fs::symlink_metadata(tmp)
        && !meta.file_type().is_file()
    {
        let what = open::kind(meta.file_type());
        log::warn!("{} was {what}; removed, not followed", tmp.display());
    }
    match fs::remove_file(tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            return Err(with_path(e, "cannot remove the stale", tmp));
        }
        _ => {}
    }
    let mut file = open::open_regular(tmp, OpenOptions::new().write(true).create_new(true).mode(0o640))
        .map_err(|e| with_path(e, "cannot create", tmp))?;
    let mut data = users_json(users);
    data.push(b'\n');
    file.write_all(&data)?;
    // The data must be on disk before the rename makes it the file of record.
    file.sync_all()
}

/// Replaces `path` atomically with the snapshot; creates the folder if missing.
pub(super) fn save_users<S: AsRef<str>>(path: &Path, users: &[(S, u64)]) -> io::Result<()> {
    let dir = super::parent(path);
    fs::create_dir_all(dir).map_err(|e| with_path(e, "cannot create", dir))?;
    let tmp = with_suffix(path, ".tmp");
    // rename replaces the name `path` itself: a link or FIFO put there is
    // replaced, never written through.
    if let Err(e) = write_tmp(&tmp, users).and_then(|()| fs::rename(&tmp, path)) {
        // Best effort: a stale .tmp is harmless (the next save removes it) but untidy.
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    // The rename itself is durable only once the folder is synced.
    open::open_dir(dir)?.sync_all()
}
