//! The command line (SPEC section 7), parsed by clap so usage errors and
//! `--help` behave like every other tool's (usage errors exit 2).

use std::path::PathBuf;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "taskd",
    version,
    about = "Computes small numeric tasks (max, min, sum, mean, median, stats, pi) for network clients",
    long_about = None,
    after_help = "Without --config, taskd reads /etc/taskd/taskd.toml if it exists, else runs on its \
embedded default (TCP and UDP on 127.0.0.1:7700, HTTP on 127.0.0.1:7780). See taskd(8) and taskd.toml(5)."
)]
pub struct Cli {
    /// Configuration file (its conf.d/*.toml drop-ins are merged in)
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Load and validate the configuration, print the effective one, exit
    #[arg(long)]
    pub check_config: bool,

    /// With --check-config: print nothing, only set the exit status
    #[arg(long, requires = "check_config")]
    pub quiet: bool,
}
