//! The taskd binary: command line, logging, configuration, then the event
//! loop. Exit codes (SPEC section 7): 0 clean stop, 1 configuration error,
//! 2 any other startup failure or a usage error (clap's own).

use std::process::ExitCode;

use clap::Parser;

use taskd::cli::Cli;
use taskd::config;
use taskd::server::Server;

/// Raises the soft RLIMIT_NOFILE to the hard limit: every connection is a
/// descriptor, and the default soft limit (1024) is far below
/// `max_connections`.
fn raise_nofile(max_connections: usize) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return;
        }
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                log::warn!("cannot raise the open files limit to {}", lim.rlim_max);
            }
        }
    }
    let want = max_connections as u64 + 64;
    if lim.rlim_cur < want {
        log::warn!(
            "open files limit {} is below max_connections + 64 = {want}; accepting will pause when it is reached",
            lim.rlim_cur
        );
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    taskd::systemd::init_logging();
    let cfg = match config::load(cli.config.as_deref(), &|k| std::env::var_os(k)) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("taskd: configuration error:\n{e}");
            return ExitCode::from(1);
        }
    };
    // Certificates are part of the configuration: one that does not load
    // is a configuration error, also for --check-config.
    for l in cfg.listeners.iter().filter(|l| l.proto.is_tls()) {
        if let Err(e) = taskd::tls::server_config(l) {
            eprintln!("taskd: configuration error:\n{} ({}): {e}", l.address, l.origin);
            return ExitCode::from(1);
        }
    }
    if cli.check_config {
        if !cli.quiet {
            print!("{}", config::render(&cfg));
        }
        return ExitCode::SUCCESS;
    }
    if cfg.sources.is_empty() {
        log::info!("no configuration file; running on the embedded default");
    } else {
        for s in &cfg.sources {
            log::info!("loaded {}", s.display());
        }
    }
    raise_nofile(cfg.limits.max_connections);
    let mut server = match Server::new(cfg, cli.config.clone()) {
        Ok(s) => s,
        Err(e) => {
            log::error!("{e}");
            return ExitCode::from(e.exit_code);
        }
    };
    match server.run() {
        Ok(()) => {
            drop(server);
            log::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            log::error!("event loop failed: {e}");
            ExitCode::from(2)
        }
    }
}
