//! Where relative paths point (SPEC section 4, "Paths").
//!
//! `state_dir` and `results_log.path` follow systemd's `StateDirectory=` and
//! `LogsDirectory=` when the unit provides them, because under
//! `DynamicUser=yes` those are the only writable places; everything else an
//! operator names (servers.csv, certificates) sits beside the main file, even
//! when a drop-in names it, so a drop-in reads the same as the main file.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::load::Sources;

/// The folders relative paths are resolved against.
pub(super) struct Bases {
    /// The main file's folder; the current directory for the embedded default.
    pub main_dir: PathBuf,
    /// `$STATE_DIRECTORY`, else `main_dir`.
    pub state: PathBuf,
    /// `$LOGS_DIRECTORY`, else `main_dir`.
    pub logs: PathBuf,
}

impl Bases {
    pub fn new(sources: &Sources, env: &dyn Fn(&str) -> Option<OsString>) -> Bases {
        let main_dir = match &sources.main_dir {
            Some(d) => d.clone(),
            // Made absolute so that `render` output means the same wherever
            // it is loaded from; "." only if the cwd itself is gone.
            None => std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
        };
        let state = env_dir(env, "STATE_DIRECTORY").unwrap_or_else(|| main_dir.clone());
        let logs = env_dir(env, "LOGS_DIRECTORY").unwrap_or_else(|| main_dir.clone());
        Bases {
            main_dir,
            state,
            logs,
        }
    }
}

/// The first folder of a systemd directory variable: with several
/// `StateDirectory=` entries systemd joins them with `:`, and the first is the
/// one the unit file lists first.
fn env_dir(env: &dyn Fn(&str) -> Option<OsString>, name: &str) -> Option<PathBuf> {
    let value = env(name)?;
    std::env::split_paths(&value).find(|p| !p.as_os_str().is_empty())
}

/// `p` as is when absolute, else `base/p`; `""` is `base` itself.
/// Rebuilding from components drops interior `.` and trailing slashes, so
/// logged and rendered paths read cleanly.
pub(super) fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    };
    let out: PathBuf = joined.components().collect();
    if out.as_os_str().is_empty() {
        base.to_path_buf()
    } else {
        out
    }
}
