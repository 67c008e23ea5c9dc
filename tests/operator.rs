//! What an operator sees, through the real binary: the short options,
//! `--version`, what `--check-config` checks and says, the startup lines,
//! and the files the daemon refuses to write through (a link, a FIFO).

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, Exited, Launch, Proc, line_config, mkfifo, run_to_exit, wait_until};

/// Runs taskd with `args` in `dir` and `env`, killed after 10 s (every case
/// here exits at once; one that serves instead must not hang the test).
fn run_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Exited {
    run_to_exit(
        Command::new(BIN)
            .args(args)
            .current_dir(dir)
            .env_remove("RUST_LOG")
            .env_remove("STATE_DIRECTORY")
            .env_remove("LOGS_DIRECTORY")
            .envs(env.iter().copied()),
        dir,
        Duration::from_secs(10),
    )
}

fn run(dir: &Path, args: &[&str]) -> Exited {
    run_env(dir, args, &[])
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p.to_str().expect("utf-8 path").to_string()
}

fn tcp_config() -> String {
    format!(
        "[[listener]]\nproto = \"tcp\"\naddress = \"127.0.0.1:{}\"\n",
        common::free_port().expect("a free port")
    )
}

#[test]
fn short_options_work_like_the_long_ones() {
    let d = tempfile::tempdir().expect("folder");
    let f = write(d.path(), "taskd.toml", &tcp_config());
    let long = run(d.path(), &["--check-config", "--config", &f]);
    let short = run(d.path(), &["-t", "-c", &f]);
    assert_eq!(long.code, Some(0), "{}", long.stderr);
    assert_eq!(short.code, Some(0), "{}", short.stderr);
    assert_eq!(long.stdout, short.stdout);
    let quiet = run(d.path(), &["-tq", "-c", &f]);
    assert_eq!((quiet.code, quiet.stdout.as_str()), (Some(0), ""));
    let help = run(d.path(), &["-h"]);
    for opt in ["-c, --config", "-t, --check-config", "-q, --quiet"] {
        assert!(help.stdout.contains(opt), "no {opt} in:\n{}", help.stdout);
    }
}

#[test]
fn version_names_the_commit_when_built_from_git() {
    let d = tempfile::tempdir().expect("folder");
    let r = run(d.path(), &["--version"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let v = r.stdout.trim();
    let pkg = format!("taskd {}", env!("CARGO_PKG_VERSION"));
    assert!(v.starts_with(&pkg), "{v}");
    let git = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    match git {
        // The binary may be older than HEAD by a commit made since the
        // build; the form is what matters.
        Some(_) => assert!(
            v.len() > pkg.len() + 3 && v[pkg.len()..].starts_with(" (") && v.ends_with(')'),
            "no commit in {v:?}"
        ),
        None => println!("note: no git here; version {v:?}"),
    }
}

#[test]
fn check_config_quiet_prints_nothing_at_all_on_success() {
    // Rows for other hosts are skipped with an info line when the daemon
    // starts; under -q nothing at all is printed.
    let d = tempfile::tempdir().expect("folder");
    let port = common::free_port().expect("a free port");
    write(
        d.path(),
        "servers.csv",
        &format!("127.0.0.1,{port},tcp\n192.0.2.1,{port},tcp\n"),
    );
    let f = write(
        d.path(),
        "taskd.toml",
        "[server]\nservers_csv = \"servers.csv\"\n",
    );
    let r = run_env(
        d.path(),
        &["--check-config", "--quiet", "--config", &f],
        &[("RUST_LOG", "debug")],
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!((r.stdout.as_str(), r.stderr.as_str()), ("", ""));
    let r = run(d.path(), &["--check-config", "--config", &f]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(r.stderr.contains("192.0.2.1"), "{}", r.stderr);
}

#[test]
fn check_config_refuses_a_results_log_that_cannot_be_written() {
    let d = tempfile::tempdir().expect("folder");
    let text = format!(
        "{}\n[results_log]\npath = \"no-such-folder/results.log\"\n",
        tcp_config()
    );
    let f = write(d.path(), "taskd.toml", &text);
    let r = run(d.path(), &["--check-config", "--quiet", "--config", &f]);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(
        r.stderr.contains("no-such-folder/results.log") && r.stderr.contains("does not exist"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("$LOGS_DIRECTORY"),
        "names the environment: {}",
        r.stderr
    );
    // With $LOGS_DIRECTORY, the relative path lands there instead.
    std::fs::create_dir(d.path().join("logs")).expect("logs");
    std::fs::create_dir(d.path().join("logs/no-such-folder")).expect("sub");
    let logs = d.path().join("logs");
    let r = run_env(
        d.path(),
        &["--check-config", "--config", &f],
        &[("LOGS_DIRECTORY", logs.to_str().expect("utf-8"))],
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(
        r.stdout.contains(&format!(
            "#   results_log.path: $LOGS_DIRECTORY = {}",
            logs.display()
        )),
        "{}",
        r.stdout
    );
    // A FIFO where users.json would be.
    let state = d.path().join("state");
    std::fs::create_dir(&state).expect("state");
    mkfifo(&state.join("users.json"));
    let text = format!("{}\n[server]\nstate_dir = \"state\"\n", tcp_config());
    let f = write(d.path(), "fifo.toml", &text);
    let r = run(d.path(), &["--check-config", "--config", &f]);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(r.stderr.contains("users.json: is a FIFO"), "{}", r.stderr);
}

#[test]
fn an_empty_configuration_file_is_exit_1_saying_why() {
    let d = tempfile::tempdir().expect("folder");
    let f = write(d.path(), "taskd.toml", "");
    for args in [&["--config", f.as_str()][..], &["-t", "-c", f.as_str()][..]] {
        let r = run(d.path(), args);
        assert_eq!(r.code, Some(1), "{args:?}: {}", r.stderr);
        assert!(
            r.stderr.contains("the configuration is empty")
                && r.stderr.contains("every key has a default except the listeners"),
            "{}",
            r.stderr
        );
    }
}

#[test]
fn startup_logs_version_pid_workers_files_and_users() {
    let state = tempfile::tempdir().expect("state");
    std::fs::write(
        state.path().join("users.json"),
        "[{\"request_count\":2,\"username\":\"a\"},{\"request_count\":3,\"username\":\"b\"}]\n",
    )
    .expect("users.json");
    let extra = format!(
        "[server]\nworkers = 3\nstate_dir = \"{}\"\n",
        state.path().display()
    );
    let d = Launch::line(&extra).start();
    let log = d.stderr();
    let pid = d.pid();
    for want in [
        format!("taskd {}", env!("CARGO_PKG_VERSION")),
        format!("pid {pid}, 3 workers"),
        format!("loaded {}", d.config.display()),
        format!("results log: {}", d.file("results.log").display()),
        format!("user counts: {}", state.path().join("users.json").display()),
        format!(
            "user counts: 2 users loaded from {}",
            state.path().join("users.json").display()
        ),
    ] {
        assert!(log.contains(&want), "no {want:?} in:\n{log}");
    }
}

#[test]
fn a_fifo_as_results_log_is_refused_at_start_without_hanging() {
    let d = tempfile::tempdir().expect("folder");
    mkfifo(&d.path().join("results.log"));
    let f = write(d.path(), "taskd.toml", &tcp_config());
    let r = run(d.path(), &["--config", &f]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(r.stderr.contains("results.log: is a FIFO"), "{}", r.stderr);
}

/// The attack of issue 10: results.log and users.json.tmp replaced by a FIFO
/// and a link while taskd runs. Nothing is written through the link, and
/// SIGTERM still ends the daemon at once.
#[test]
fn files_swapped_for_a_fifo_or_link_neither_block_nor_redirect() {
    let mut d = Launch::line("").start();
    assert_eq!(d.session(&["@x ping"]), ["OK pong"]);
    let victim = d.file("victim");
    std::fs::write(&victim, "keep\n").expect("victim");
    std::os::unix::fs::symlink(&victim, d.file("users.json.tmp")).expect("link");
    let log = d.file("results.log");
    assert!(
        wait_until(Duration::from_secs(5), || log.exists()),
        "no results.log"
    );
    std::fs::remove_file(&log).expect("rm results.log");
    mkfifo(&log);
    d.send_signal(libc::SIGUSR1);
    assert!(
        wait_until(Duration::from_secs(5), || d.stderr().contains("is a FIFO")),
        "the refused FIFO is not logged:\n{}",
        d.stderr()
    );
    assert_eq!(d.session(&["@y sum 1 2"]), ["OK 3"]);
    let t = Instant::now();
    d.send_signal(libc::SIGTERM);
    let status = d.wait_exit(Duration::from_secs(10));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", d.stderr());
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "stop took {:?}",
        t.elapsed()
    );
    assert_eq!(std::fs::read_to_string(&victim).expect("victim"), "keep\n");
    let users = std::fs::read_to_string(d.file("users.json")).expect("users.json");
    assert!(users.contains("\"y\""), "{users}");
    assert!(std::fs::symlink_metadata(d.file("users.json.tmp")).is_err());
}

/// `line_config` is what `Launch::line` serves; kept in use here so this
/// file reads on its own.
#[test]
fn check_config_of_the_test_configuration_passes() {
    let d = tempfile::tempdir().expect("folder");
    let f = write(
        d.path(),
        "taskd.toml",
        &line_config(common::free_port().expect("a free port"), ""),
    );
    let r = run(d.path(), &["-tq", "-c", &f]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
}

/// With stderr as the journal (JOURNAL_STREAM names it), every line of a
/// configuration error carries priority err, so `journalctl -p err` shows
/// the reason of a refused start or reload, not only its first line.
#[test]
fn configuration_errors_reach_the_journal_at_priority_err_on_every_line() {
    use std::os::unix::fs::MetadataExt;
    let d = tempfile::tempdir().expect("folder");
    let f = write(
        d.path(),
        "taskd.toml",
        "[server]\nbogus = 1\n[limits]\nnope = 2\n",
    );
    let err_path = d.path().join("journal.err");
    let err = std::fs::File::create(&err_path).expect("stderr file");
    let meta = err.metadata().expect("stat");
    // JOURNAL_STREAM must name this very file, so not run_to_exit; bounded
    // in time all the same.
    let child = Command::new(BIN)
        .args(["-t", "-q", "-c", &f])
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .expect("run taskd");
    let status = Proc::new(child).wait_exit(Duration::from_secs(10));
    assert_eq!(status.and_then(|s| s.code()), Some(1));
    let text = std::fs::read_to_string(&err_path).expect("stderr");
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() >= 3, "{text}");
    assert!(lines.iter().all(|l| l.starts_with("<3>")), "{text}");
    assert!(text.contains("bogus") && text.contains("nope"), "{text}");
}
