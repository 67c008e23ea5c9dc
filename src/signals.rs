//! Signals delivered into the event loop: each handled signal sets its
//! flag and writes a byte to a socket the loop polls, so the loop learns of
//! it at once and acts on it in its own time (never in a signal handler).

use std::io::{self, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use mio::net::UnixStream;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};

/// What arrived since the last look.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pending {
    pub terminate: bool,
    pub reload: bool,
    pub reopen: bool,
}

pub struct Signals {
    /// Registered with the loop's Poll.
    pub receiver: UnixStream,
    terminate: Arc<AtomicBool>,
    reload: Arc<AtomicBool>,
    reopen: Arc<AtomicBool>,
}

impl Signals {
    pub fn install() -> io::Result<Signals> {
        let (receiver, sender) = UnixStream::pair()?;
        let sender = std::os::unix::net::UnixStream::from(std::os::fd::OwnedFd::from(sender));
        let s = Signals {
            receiver,
            terminate: Arc::new(AtomicBool::new(false)),
            reload: Arc::new(AtomicBool::new(false)),
            reopen: Arc::new(AtomicBool::new(false)),
        };
        for (sig, flag) in [
            (SIGTERM, &s.terminate),
            (SIGINT, &s.terminate),
            (SIGHUP, &s.reload),
            (SIGUSR1, &s.reopen),
        ] {
            signal_hook::flag::register(sig, Arc::clone(flag))?;
            signal_hook::low_level::pipe::register(sig, sender.try_clone()?)?;
        }
        Ok(s)
    }

    /// Empties the wake-up socket and returns the signals seen.
    pub fn take(&mut self) -> Pending {
        let mut buf = [0u8; 64];
        loop {
            match self.receiver.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        Pending {
            terminate: self.terminate.swap(false, Ordering::AcqRel),
            reload: self.reload.swap(false, Ordering::AcqRel),
            reopen: self.reopen.swap(false, Ordering::AcqRel),
        }
    }
}
