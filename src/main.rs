//! The taskd binary: command line, logging, configuration, then the event
//! loop. Exit codes (taskd(8), EXIT STATUS): 0 clean stop, 1 configuration
//! error (also everything `--check-config` finds), 2 any other startup
//! failure or a usage error (clap's own).

use std::process::ExitCode;

use clap::Parser;

use taskd::cli::{Cli, VERSION};
use taskd::config::{self, Config};
use taskd::files;
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

/// What `--check-config` checks beyond the configuration itself, without
/// binding a port: the folders the daemon will write in. Run by hand, the
/// paths may not be the service's: the message says which environment they
/// were resolved in.
fn check_files(cfg: &Config) -> Result<(), String> {
    let errors = files::check_paths(cfg.results_log.path.as_deref(), &cfg.server.state_dir);
    if errors.is_empty() {
        return Ok(());
    }
    let mut text = errors.join("\n");
    let r = &cfg.resolved_against;
    if r.state_directory.is_none() || r.logs_directory.is_none() {
        text.push_str(&format!(
            "\n(relative paths resolved against {}: $STATE_DIRECTORY or $LOGS_DIRECTORY is not set; \
             taskd.service sets them)",
            r.main_dir.display()
        ));
    }
    Err(text)
}

/// The startup lines: what runs, with which files.
fn log_start(cfg: &Config) {
    let workers = match cfg.server.workers {
        0 => format!(
            "{} workers (one per CPU)",
            std::thread::available_parallelism().map_or(1, |n| n.get())
        ),
        1 => "1 worker".to_string(),
        n => format!("{n} workers"),
    };
    log::info!("taskd {VERSION} starting: pid {}, {workers}", std::process::id());
    if cfg.sources.is_empty() {
        log::info!("no configuration file; running on the embedded default");
    } else {
        for s in &cfg.sources {
            log::info!("loaded {}", s.display());
        }
    }
    match &cfg.results_log.path {
        Some(p) => log::info!("results log: {}", p.display()),
        None => log::info!("results log: off"),
    }
    log::info!(
        "user counts: {}",
        cfg.server.state_dir.join("users.json").display()
    );
}

/// Blocks of 1 MiB and more (big request lines, their parsed values,
/// rendered `users` tables) are mapped on their own and unmapped when
/// freed. glibc's default threshold starts at 128 KiB but rises to the size
/// of the largest block freed (up to 32 MiB), after which such blocks come
/// from the per-thread arenas and stay resident once freed: 40 clients
/// sending 8 MiB lines peaked at 100-131 MiB, at times over the bound
/// taskd(8) documents (118 MiB there), and at 69-76 MiB with it. Setting
/// the threshold turns that adjustment off. An
/// operator's own `glibc.malloc.mmap_threshold` tunable is left alone.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn map_big_blocks() {
    let tuned = std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("mmap_threshold"));
    if !tuned {
        // SAFETY: mallopt only sets an allocator parameter; called first
        // thing in main, before any other thread exists.
        unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20) };
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn map_big_blocks() {}

fn main() -> ExitCode {
    map_big_blocks();
    let cli = Cli::parse();
    taskd::systemd::init_logging();
    if cli.quiet {
        // --quiet: nothing on success, whatever RUST_LOG says (the unit's
        // ExecStartPre= and ExecReload= run this way).
        log::set_max_level(log::LevelFilter::Error);
    }
    let cfg = match config::load(cli.config.as_deref(), &|k| std::env::var_os(k)) {
        Ok(cfg) => cfg,
        Err(e) => {
            taskd::systemd::print_error(&format!("taskd: configuration error:\n{e}"));
            return ExitCode::from(1);
        }
    };
    // Certificates are part of the configuration: one that does not load
    // is a configuration error, also for --check-config.
    for l in cfg.listeners.iter().filter(|l| l.proto.is_tls()) {
        if let Err(e) = taskd::tls::server_config(l) {
            taskd::systemd::print_error(&format!(
                "taskd: configuration error:\n{} ({}): {e}",
                l.address, l.origin
            ));
            return ExitCode::from(1);
        }
    }
    if cli.check_config {
        if let Err(e) = check_files(&cfg) {
            taskd::systemd::print_error(&format!("taskd: configuration error:\n{e}"));
            return ExitCode::from(1);
        }
        if !cli.quiet {
            print!("{}", config::render(&cfg));
        }
        return ExitCode::SUCCESS;
    }
    log_start(&cfg);
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
