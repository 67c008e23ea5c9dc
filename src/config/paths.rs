//! Where relative paths point (taskd.toml(5), "PATHS").
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
    /// Whether `state` and `logs` came from the environment.
    pub state_from_env: bool,
    pub logs_from_env: bool,
}

impl Bases {
    pub fn new(sources: &Sources, env: &dyn Fn(&str) -> Option<OsString>) -> Bases {
        let main_dir = match &sources.main_dir {
            Some(d) => d.clone(),
            // Made absolute so that `render` output means the same wherever
            // it is loaded from; "." only if the cwd itself is gone.
            None => std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
        };
        let state = env_dir(env, "STATE_DIRECTORY");
        let logs = env_dir(env, "LOGS_DIRECTORY");
        Bases {
            state_from_env: state.is_some(),
            logs_from_env: logs.is_some(),
            state: state.unwrap_or_else(|| main_dir.clone()),
            logs: logs.unwrap_or_else(|| main_dir.clone()),
            main_dir,
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

impl Bases {
    /// What `--check-config` says about them.
    pub fn resolved_against(&self) -> super::ResolvedAgainst {
        super::ResolvedAgainst {
            main_dir: self.main_dir.clone(),
            state_directory: self.state_from_env.then(|| self.state.clone()),
            logs_directory: self.logs_from_env.then(|| self.logs.clone()),
        }
    }
}
