//! The command line (taskd(8), OPTIONS), parsed by clap so usage errors and
//! `--help` behave like every other tool's (usage errors exit 2). The short
//! options are nginx's and sshd's: `-c` for the file, `-t` to test it, `-q`
//! to test quietly.
//!
//! The shell completions shipped in the package (`packaging/completions/`)
//! are generated from this definition by clap_complete; a test below fails
//! when they are out of date.

use std::path::PathBuf;

use clap::Parser;

/// The version `--version` prints: the package version, and the git commit
/// it was built from when the build could tell (see build.rs).
pub const VERSION: &str = env!("TASKD_VERSION");

#[derive(Debug, Parser)]
#[command(
    name = "taskd",
    version = VERSION,
    about = "Computes small numeric tasks (max, min, sum, mean, median, stats, pi) for network clients",
    long_about = None,
    after_help = "Without --config, taskd reads /etc/taskd/taskd.toml if it exists, else runs on its \
embedded default (TCP and UDP on 127.0.0.1:7700, HTTP on 127.0.0.1:7780). See taskd(8) and taskd.toml(5)."
)]
pub struct Cli {
    /// Configuration file (its conf.d/*.toml drop-ins are merged in)
    #[arg(short = 'c', long, value_name = "PATH", value_hint = clap::ValueHint::FilePath)]
    pub config: Option<PathBuf>,

    /// Load and validate the configuration, print the effective one, exit
    #[arg(short = 't', long)]
    pub check_config: bool,

    /// With --check-config: print nothing on success, only errors
    #[arg(short = 'q', long, requires = "check_config")]
    pub quiet: bool,
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use clap::CommandFactory;
    use clap_complete::Shell;

    use super::*;

    /// The completion files of the package and the shell each is for.
    const COMPLETIONS: [(Shell, &str); 3] = [
        (Shell::Bash, "packaging/completions/taskd.bash"),
        (Shell::Zsh, "packaging/completions/_taskd"),
        (Shell::Fish, "packaging/completions/taskd.fish"),
    ];

    /// The packaged completions are what clap_complete makes of [`Cli`]
    /// today. `TASKD_UPDATE_COMPLETIONS=1 cargo test --lib completions`
    /// rewrites them after a change of the options.
    #[test]
    fn packaged_completions_are_up_to_date() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let update = std::env::var_os("TASKD_UPDATE_COMPLETIONS").is_some();
        for (shell, file) in COMPLETIONS {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "taskd", &mut out);
            let path = root.join(file);
            if update {
                std::fs::write(&path, &out).unwrap();
                continue;
            }
            let shipped = std::fs::read(&path).unwrap_or_default();
            assert!(
                shipped == out,
                "{file} is not what clap_complete generates from src/cli.rs; \
                 run TASKD_UPDATE_COMPLETIONS=1 cargo test --lib completions"
            );
        }
    }

    #[test]
    fn short_options_are_the_long_ones() {
        let long = Cli::try_parse_from(["taskd", "--config", "x.toml", "--check-config", "--quiet"]).unwrap();
        let short = Cli::try_parse_from(["taskd", "-c", "x.toml", "-t", "-q"]).unwrap();
        let bundled = Cli::try_parse_from(["taskd", "-tqc", "x.toml"]).unwrap();
        for c in [&long, &short, &bundled] {
            assert_eq!(c.config.as_deref(), Some(Path::new("x.toml")));
            assert!(c.check_config && c.quiet);
        }
        assert!(Cli::try_parse_from(["taskd", "-q"]).is_err(), "-q needs -t");
    }

    #[test]
    fn version_starts_with_the_package_version() {
        assert!(VERSION.starts_with(env!("CARGO_PKG_VERSION")), "{VERSION}");
    }
}
