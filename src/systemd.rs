//! systemd integration: sd_notify messages (READY, RELOADING, STOPPING,
//! STATUS, WATCHDOG), socket activation (LISTEN_FDS), and the journal's
//! priority prefixes on stderr (JOURNAL_STREAM). Each is a no-op outside
//! systemd.

use std::io::Write;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd};
use std::time::Duration;

use sd_notify::NotifyState;

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        log::warn!("sd_notify: {e}");
    }
}

pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// How often to send WATCHDOG=1: half of WATCHDOG_USEC, when systemd asks.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled()
        .map(|d| d / 2)
        .filter(|d| !d.is_zero())
}

/// A listening socket passed by systemd.
pub struct Passed {
    pub fd: OwnedFd,
    pub stream: bool,
    pub addr: SocketAddr,
}

/// The descriptors passed with LISTEN_FDS/LISTEN_PID, with their kind and
/// local address. Unusable ones (not an inet socket) are an error.
pub fn passed_sockets() -> Result<Vec<Passed>, String> {
    let fds = sd_notify::listen_fds().map_err(|e| format!("LISTEN_FDS: {e}"))?;
    let mut out = Vec::new();
    for raw in fds {
        // SAFETY: systemd passes these descriptors to this process alone
        // (LISTEN_PID was checked); nothing else in taskd owns them.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let sock = socket2::Socket::from(fd);
        let ty = sock
            .r#type()
            .map_err(|e| format!("passed descriptor {raw}: {e}"))?;
        let addr = sock
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .ok_or_else(|| format!("passed descriptor {raw} is not an IP socket"))?;
        let stream = ty == socket2::Type::STREAM;
        out.push(Passed {
            fd: sock.into(),
            stream,
            addr,
        });
    }
    Ok(out)
}

/// Whether stderr is the journal (JOURNAL_STREAM names its device and
/// inode), in which case log lines carry `<N>` priority prefixes and no
/// timestamps.
pub fn stderr_is_journal() -> bool {
    let Some(v) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = v.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    let mut st = std::mem::MaybeUninit::<libc::stat>::zeroed();
    // SAFETY: fstat writes only into the struct we pass; fd 2 may be closed,
    // which fstat reports as an error.
    let ok = unsafe { libc::fstat(2, st.as_mut_ptr()) } == 0;
    if !ok {
        return false;
    }
    // SAFETY: fstat succeeded, so the struct is initialized.
    let st = unsafe { st.assume_init() };
    st.st_dev == dev && st.st_ino == ino
}

/// Writes `text` with the journal's priority prefix on every line: the
/// journal splits stderr into lines and reads each one's prefix on its own,
/// so the second line of a multi-line error (a failed reload's reasons)
/// would otherwise be logged at the default priority, info, and
/// `journalctl -p err` would show the failure without its reason.
fn write_prefixed(out: &mut impl Write, prio: u8, text: &str) -> std::io::Result<()> {
    for line in text.split('\n') {
        writeln!(out, "<{prio}>{line}")?;
    }
    Ok(())
}

/// Prints an error report to stderr, at priority err for the journal when
/// stderr is the journal: a configuration error found by the unit's
/// `ExecStartPre=` or `ExecReload=` check shows under `journalctl -p err`.
pub fn print_error(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = if stderr_is_journal() {
        write_prefixed(&mut err, 3, text)
    } else {
        writeln!(err, "{text}")
    };
}

/// Sets up env_logger: default filter `info` (RUST_LOG overrides), journal
/// prefixes when stderr is the journal.
pub fn init_logging() {
    let mut b = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    if stderr_is_journal() {
        b.format(|buf, record| {
            let prio = match record.level() {
                log::Level::Error => 3,
                log::Level::Warn => 4,
                log::Level::Info => 6,
                log::Level::Debug | log::Level::Trace => 7,
            };
            write_prefixed(buf, prio, &record.args().to_string())
        });
    }
    b.init();
}

#[cfg(test)]
mod tests {
    use super::write_prefixed;

    #[test]
    fn every_line_of_a_message_gets_the_prefix() {
        let mut out = Vec::new();
        write_prefixed(
            &mut out,
            3,
            "reload failed:\ntaskd.toml:3: unknown key `x`\nconf.d/a.toml:1: bad",
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "<3>reload failed:\n<3>taskd.toml:3: unknown key `x`\n<3>conf.d/a.toml:1: bad\n"
        );
        let mut out = Vec::new();
        write_prefixed(&mut out, 6, "one line").unwrap();
        assert_eq!(out, b"<6>one line\n");
    }
}
