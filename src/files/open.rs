//! Opening the files taskd writes (the results log, users.json and its
//! temporary file) so that nobody who can write to their folder can make
//! taskd write elsewhere or hang.
//!
//! - `O_NOFOLLOW`: a symbolic link in place of the file is refused, never
//!   followed, so its target is never overwritten.
//! - `O_NONBLOCK`: opening a FIFO returns at once (or fails with ENXIO)
//!   instead of waiting for a reader, so the writer thread never blocks in
//!   `open`; the flag is cleared again on the regular file that remains.
//! - `fstat` after opening: anything but a regular file (a FIFO, a device, a
//!   socket, a folder) is refused, and the error names what it found.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// What a non-regular file is, for the message.
pub(super) fn kind(ft: std::fs::FileType) -> &'static str {
    if ft.is_symlink() {
        "a symbolic link"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_dir() {
        "a folder"
    } else {
        "not a regular file"
    }
}

/// The error for a path that is there but not a regular file.
fn refused(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "is {what}, not a regular file: refused (taskd writes only regular files and follows no links)"
        ),
    )
}

/// An open error made explicit where it comes from the checks above: ELOOP
/// is what `O_NOFOLLOW` answers for a link, ENXIO what `O_NONBLOCK` answers
/// for a FIFO without a reader.
fn explain(path: &Path, e: io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(libc::ELOOP) | Some(libc::ENXIO) | Some(libc::EISDIR) => match std::fs::symlink_metadata(path) {
            Ok(m) if !m.file_type().is_file() => refused(kind(m.file_type())),
            _ => e,
        },
        _ => e,
    }
}

/// Opens `path` with `opts` plus `O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC` and
/// returns it only if it is a regular file, in blocking mode.
pub(super) fn open_regular(path: &Path, opts: &OpenOptions) -> io::Result<File> {
    let mut opts = opts.clone();
    opts.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC);
    let file = opts.open(path).map_err(|e| explain(path, e))?;
    let ft = file.metadata()?.file_type();
    if !ft.is_file() {
        return Err(refused(kind(ft)));
    }
    set_blocking(&file)?;
    Ok(file)
}

/// Clears `O_NONBLOCK` (it means nothing for regular files, but the file
/// should behave as any other).
fn set_blocking(file: &File) -> io::Result<()> {
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a descriptor this File owns, with integer arguments.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A folder opened for `fsync` after a rename: `O_DIRECTORY` makes anything
/// else (a FIFO put in its place) fail at once instead of blocking. Links
/// are followed here: under `DynamicUser=yes`, `$STATE_DIRECTORY` itself is
/// a link to `/var/lib/private/taskd`.
pub(super) fn open_dir(dir: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir)
}

/// Whether a file the daemon will open as a regular file could be: Ok when
/// it is one or does not exist, the refusal otherwise. Looks without
/// opening, for `--check-config`.
pub(super) fn check_regular_or_absent(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_file() => Ok(()),
        Ok(m) => Err(refused(kind(m.file_type()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Whether the daemon could create or write files in `dir`: Ok when it is
/// a folder it may write to (`access(2)` with the caller's ids, which also
/// reports a read-only file system).
pub(super) fn check_writable_dir(dir: &Path) -> Result<(), String> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(m) => {
            return Err(format!(
                "{} is {}, not a folder",
                dir.display(),
                kind(m.file_type())
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(format!("the folder {} does not exist", dir.display()));
        }
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    }
    access(dir, libc::W_OK | libc::X_OK)
        .map_err(|e| format!("cannot write in the folder {}: {e}", dir.display()))
}

/// `access(2)`.
pub(super) fn access(path: &Path, mode: libc::c_int) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in the path"))?;
    // SAFETY: a valid NUL-terminated path; access only reads it.
    if unsafe { libc::access(c.as_ptr(), mode) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
