//! Build script: the version string `taskd --version` prints, with the git
//! commit when the build can tell it.
//!
//! `TASKD_VERSION` is the package version followed by the short commit,
//! `0.1.0 (ac1d51c)`, taken from `$TASKD_GIT_COMMIT` when set (for builds
//! from a tarball that know their commit) or else from
//! `git rev-parse --short HEAD` when the package folder is the top of a git
//! checkout. Without either (no git, a tarball, a checkout git refuses to
//! read) it is the package version alone: a build never fails for want of
//! git.

use std::path::PathBuf;
use std::process::Command;

/// `git ARGS` in the package folder, its trimmed output on success.
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=TASKD_GIT_COMMIT");
    let commit = match std::env::var("TASKD_GIT_COMMIT") {
        Ok(c) if !c.trim().is_empty() => Some(c.trim().to_string()),
        _ => own_checkout()
            .then(|| git(&["rev-parse", "--short", "HEAD"]))
            .flatten()
            .inspect(|_| {
                // Rebuild when HEAD moves: HEAD itself (a checkout), the branch
                // it points to (a commit), and packed-refs (a gc). Paths from
                // git, so worktrees work too.
                for p in ["HEAD", "packed-refs"] {
                    if let Some(path) = git(&["rev-parse", "--git-path", p]) {
                        rerun_if_changed(path);
                    }
                }
                if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"])
                    && let Some(path) = git(&["rev-parse", "--git-path", &branch])
                {
                    rerun_if_changed(path);
                }
            }),
    };
    let version = env!("CARGO_PKG_VERSION");
    let full = match commit {
        Some(c) => format!("{version} ({c})"),
        None => version.to_string(),
    };
    println!("cargo:rustc-env=TASKD_VERSION={full}");
}

/// Whether the package folder is the top of a git checkout: a tarball
/// unpacked inside some other repository must not take that one's commit.
fn own_checkout() -> bool {
    let Some(top) = git(&["rev-parse", "--show-toplevel"]) else {
        return false;
    };
    let here = std::fs::canonicalize(env!("CARGO_MANIFEST_DIR"));
    matches!((std::fs::canonicalize(top), here), (Ok(a), Ok(b)) if a == b)
}

/// A path git printed, relative to the package folder unless absolute.
fn rerun_if_changed(path: String) {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path);
    // Only paths that exist: a missing one would make cargo rerun this
    // script on every build.
    if p.exists() {
        println!("cargo:rerun-if-changed={}", p.display());
    }
}
