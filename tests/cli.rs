//! The command line of taskd(8) (OPTIONS, EXIT STATUS) and the configuration
//! errors of taskd.toml(5), through the real binary: exit codes 0, 1 and 2, and messages
//! that name what was wrong.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{BIN, Exited, Launch, run_to_exit};

/// Runs taskd with `args` in `dir`, without RUST_LOG, killing it if it has
/// not exited after 10 s (a taskd that starts serving instead of failing
/// must not hang the test; every case here exits at once).
fn run(dir: &Path, args: &[&str]) -> Exited {
    run_to_exit(
        Command::new(BIN)
            .args(args)
            .current_dir(dir)
            .env_remove("RUST_LOG"),
        dir,
        Duration::from_secs(10),
    )
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("temporary folder")
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write config");
    p.to_str().expect("utf-8 path").to_string()
}

fn listener(proto: &str, port: u16) -> String {
    format!("[[listener]]\nproto = \"{proto}\"\naddress = \"127.0.0.1:{port}\"\n")
}

#[test]
fn version_prints_the_version() {
    let d = tmp();
    let r = run(d.path(), &["--version"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(r.stdout.contains(env!("CARGO_PKG_VERSION")), "{:?}", r.stdout);
    assert!(r.stdout.contains("taskd"), "{:?}", r.stdout);
}

#[test]
fn help_exits_0_and_names_the_options() {
    let d = tmp();
    let r = run(d.path(), &["--help"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    for opt in ["--config", "--check-config", "--quiet", "--version", "--help"] {
        assert!(r.stdout.contains(opt), "--help lacks {opt}: {}", r.stdout);
    }
}

#[test]
fn an_unknown_flag_is_a_usage_error() {
    let d = tmp();
    let r = run(d.path(), &["--no-such-flag"]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(r.stderr.contains("--no-such-flag"), "{}", r.stderr);
    let r = run(d.path(), &["stray-argument"]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
}

#[test]
fn quiet_without_check_config_is_a_usage_error() {
    let d = tmp();
    let r = run(d.path(), &["--quiet"]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(r.stderr.contains("--check-config"), "{}", r.stderr);
}

#[test]
fn a_missing_config_file_is_exit_1_naming_it() {
    let d = tmp();
    for args in [
        &["--config", "/nonexistent/taskd.toml"][..],
        &["--check-config", "--config", "/nonexistent/taskd.toml"][..],
    ] {
        let r = run(d.path(), args);
        assert_eq!(r.code, Some(1), "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains("/nonexistent/taskd.toml"), "{}", r.stderr);
    }
}

/// The 1-based number of the first line of `text` starting with `prefix`.
fn line_of(text: &str, prefix: &str) -> usize {
    1 + text
        .lines()
        .position(|l| l.starts_with(prefix))
        .expect("the line is in the text")
}

/// Checks that stderr names the file, the line and the key.
fn assert_names(stderr: &str, file: &str, line: usize, key: &str) {
    assert!(stderr.contains(file), "no file {file} in: {stderr}");
    assert!(
        stderr.contains(&format!("{file}:{line}")) || stderr.contains(&format!("line {line}")),
        "no line {line} in: {stderr}"
    );
    assert!(stderr.contains(key), "no key {key} in: {stderr}");
}

#[test]
fn an_unknown_key_is_exit_1_naming_file_line_and_key() {
    let d = tmp();
    let port = common::free_port().expect("a free port");
    let text = format!(
        "{}\n[limits]\nmax_values = 10\nbogus_limit = 3\n",
        listener("tcp", port)
    );
    let f = write(d.path(), "taskd.toml", &text);
    for args in [
        &["--config", f.as_str()][..],
        &["--check-config", "--config", f.as_str()][..],
    ] {
        let r = run(d.path(), args);
        assert_eq!(r.code, Some(1), "{args:?}: {}", r.stderr);
        assert_names(&r.stderr, &f, line_of(&text, "bogus_limit"), "bogus_limit");
    }
    // In a listener table, and at the top level.
    let text = format!(
        "{}\n[[listener]]\nproto = \"udp\"\naddres = \"127.0.0.1:{port}\"\n",
        listener("tcp", port)
    );
    let f = write(d.path(), "listener.toml", &text);
    let r = run(d.path(), &["--check-config", "--config", &f]);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert_names(&r.stderr, &f, line_of(&text, "addres "), "addres");
    let text = format!("colour = \"blue\"\n{}", listener("tcp", port));
    let f = write(d.path(), "top.toml", &text);
    let r = run(d.path(), &["--check-config", "--config", &f]);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert_names(&r.stderr, &f, 1, "colour");
}

#[test]
fn check_config_prints_a_configuration_that_loads_again() {
    let d = tmp();
    let port = common::free_port().expect("a free port");
    let text = format!(
        "[server]\nworkers = 3\n\n[scheduler]\npolicy = \"sjf\"\n\n\
         [limits]\nmax_values = 10\nidle_timeout_s = 7\n\n\
         [ops.median]\nenabled = false\n\n[ops.pi]\nudp_max_samples = 1000\n\n\
         {}ops = [\"max\", \"sum\"]\nallow = [\"127.0.0.0/8\"]\n\n{}",
        listener("tcp", port),
        listener("udp", port)
    );
    let f = write(d.path(), "taskd.toml", &text);
    let r = run(d.path(), &["--check-config", "--config", &f]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let first: toml::Table = toml::from_str(&r.stdout).expect("the output is TOML");
    assert!(first.contains_key("listener"), "{}", r.stdout);
    assert!(r.stdout.contains("policy = \"sjf\""), "{}", r.stdout);
    // The printed configuration is itself a valid one, with the same effect.
    let g = write(d.path(), "effective.toml", &r.stdout);
    let again = run(d.path(), &["--check-config", "--config", &g]);
    assert_eq!(again.code, Some(0), "{}\n{}", again.stderr, r.stdout);
    let second: toml::Table = toml::from_str(&again.stdout).expect("the output is TOML");
    assert_eq!(
        first, second,
        "not a fixed point:\n{}\n---\n{}",
        r.stdout, again.stdout
    );
    // The embedded default, too.
    let r = run(d.path(), &["--check-config"]);
    if !Path::new("/etc/taskd/taskd.toml").exists() {
        assert_eq!(r.code, Some(0), "{}", r.stderr);
        let g = write(d.path(), "default.toml", &r.stdout);
        let again = run(d.path(), &["--check-config", "--quiet", "--config", &g]);
        assert_eq!(again.code, Some(0), "{}\n{}", again.stderr, r.stdout);
    }
}

#[test]
fn check_config_quiet_prints_nothing() {
    let d = tmp();
    let f = write(
        d.path(),
        "taskd.toml",
        &listener("tcp", common::free_port().expect("a free port")),
    );
    let r = run(d.path(), &["--check-config", "--quiet", "--config", &f]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(r.stdout, "");
    let bad = write(d.path(), "bad.toml", "[limits]\nmax_values = \"many\"\n");
    let r = run(d.path(), &["--check-config", "--quiet", "--config", &bad]);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert_eq!(r.stdout, "");
}

/// A second instance configured on the port of a running one.
fn second_instance_on_a_busy_port(proto: &str) {
    let running = Launch::line("").start();
    let d = tmp();
    let address = format!("127.0.0.1:{}", running.port);
    let f = write(d.path(), "taskd.toml", &listener(proto, running.port));
    let r = run(d.path(), &["--config", &f]);
    assert_eq!(r.code, Some(2), "{proto}: {}", r.stderr);
    assert!(
        r.stderr.contains(&address),
        "{proto}: no {address} in: {}",
        r.stderr
    );
    // --check-config does not bind, so the busy port does not matter.
    let r = run(d.path(), &["--check-config", "--quiet", "--config", &f]);
    assert_eq!(r.code, Some(0), "{proto}: {}", r.stderr);
    // The first instance is unaffected.
    assert_eq!(running.session(&["ping"]), ["OK pong"]);
    assert_eq!(running.udp("ping"), "OK pong");
}

#[test]
fn a_busy_tcp_port_is_exit_2_naming_the_address() {
    second_instance_on_a_busy_port("tcp");
}

#[test]
fn a_busy_udp_port_is_exit_2_naming_the_address() {
    second_instance_on_a_busy_port("udp");
}

#[test]
fn no_listener_is_exit_1() {
    let d = tmp();
    let f = write(d.path(), "taskd.toml", "[limits]\nmax_values = 10\n");
    for args in [
        &["--config", f.as_str()][..],
        &["--check-config", "--config", f.as_str()][..],
    ] {
        let r = run(d.path(), args);
        assert_eq!(r.code, Some(1), "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains("listener"), "{}", r.stderr);
    }
    let f = write(d.path(), "empty.toml", "");
    let r = run(d.path(), &["--config", &f]);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
}
