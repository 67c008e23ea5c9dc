//! The files taskd writes, against the real binary (taskd(8), FILES):
//! results log rotation, a log that cannot be written, users.json across a
//! restart, a corrupt users.json, and $STATE_DIRECTORY / $LOGS_DIRECTORY.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Daemon, Launch, wait_until};

/// Every line of `path`, each of which must be a JSON object.
fn json_lines(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "{} does not end with a newline",
        path.display()
    );
    text.lines()
        .enumerate()
        .map(|(n, l)| {
            let v: serde_json::Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{} line {}: not JSON ({e}): {l:?}", path.display(), n + 1));
            assert!(
                v.is_object(),
                "{} line {}: not an object: {l}",
                path.display(),
                n + 1
            );
            v
        })
        .collect()
}

/// Stops the daemon with SIGTERM, so it flushes its files, and checks it exits 0.
fn stop(d: &mut Daemon) {
    d.send_signal(libc::SIGTERM);
    let status = d.wait_exit(Duration::from_secs(10));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "exit after SIGTERM\n{}",
        d.stderr()
    );
}

/// The `users` reply as (name, count) pairs.
fn users(d: &Daemon) -> Vec<(String, u64)> {
    let reply = d.session(&["users"]);
    let json = reply
        .first()
        .and_then(|r| r.strip_prefix("OK "))
        .unwrap_or_else(|| panic!("users failed: {reply:?}"));
    let v: serde_json::Value = serde_json::from_str(json).expect("users is JSON");
    v.as_array()
        .expect("users is an array")
        .iter()
        .map(|e| {
            (
                e["username"].as_str().expect("username").to_string(),
                e["request_count"].as_u64().expect("request_count"),
            )
        })
        .collect()
}

fn count_of(users: &[(String, u64)], name: &str) -> Option<u64> {
    users.iter().find(|(n, _)| n == name).map(|(_, c)| *c)
}

#[test]
fn results_log_rotates_by_size_and_keeps_two() {
    let mut d = Launch::line("[results_log]\nmax_bytes = 2000\nkeep = 2\n").start();
    let mut c = d.connect();
    for i in 0..100 {
        let reply = c.ask(&format!("#r{i} @rot sum {i} 1 2 3 4 5 6 7 8"));
        assert_eq!(reply, format!("#r{i} OK {}", i + 36));
    }
    let log = d.file("results.log");
    let old1 = d.file("results.log.1");
    let old2 = d.file("results.log.2");
    assert!(
        wait_until(Duration::from_secs(5), || old2.exists()),
        "no results.log.2 after 100 requests with max_bytes = 2000\n{}",
        d.stderr()
    );
    drop(c);
    stop(&mut d);
    let mut ids = Vec::new();
    for path in [&old2, &old1, &log] {
        assert!(path.exists(), "{} missing", path.display());
        let lines = json_lines(path);
        assert!(!lines.is_empty(), "{} is empty", path.display());
        ids.extend(lines.iter().filter_map(|v| v["id"].as_str().map(str::to_string)));
    }
    assert!(
        !d.file("results.log.3").exists(),
        "results.log.3 exists with keep = 2"
    );
    // Newest lines are in results.log, older ones in .1, then .2, none twice,
    // and the very last request is there.
    let numbers: Vec<u32> = ids
        .iter()
        .map(|id| id.trim_start_matches('r').parse().expect("id number"))
        .collect();
    assert!(
        numbers.windows(2).all(|w| w[1] == w[0] + 1),
        "the kept files do not hold consecutive requests in order: {numbers:?}"
    );
    assert_eq!(numbers.last(), Some(&99), "the last request is not logged");
}

#[test]
fn a_results_log_that_cannot_be_written_does_not_stop_serving() {
    // Writes past 2,000 bytes fail with EFBIG (a disk that is full, as far
    // as the daemon can tell). A device such as /dev/full would be refused
    // at start (not a regular file).
    let d = Launch::line("").fsize(2000).start();
    let log = d.file("results.log").display().to_string();
    let mut c = d.connect();
    for i in 0..20 {
        assert_eq!(c.ask(&format!("#f{i} sum {i} 1")), format!("#f{i} OK {}", i + 1));
    }
    // The writer thread writes at least once a second: the failure shows in
    // the log (warned) while serving goes on.
    let warned = wait_until(Duration::from_secs(5), || {
        d.stderr()
            .lines()
            .any(|l| l.contains(&log) && (l.contains("WARN") || l.contains("ERROR")))
    });
    for i in 20..40 {
        assert_eq!(c.ask(&format!("#f{i} sum {i} 1")), format!("#f{i} OK {}", i + 1));
    }
    let info = d.info_map();
    assert_eq!(info["last_reload_ok"], "true", "info works: {info:?}");
    assert!(warned, "no warning naming {log} on stderr:\n{}", d.stderr());
    // Failed writes are counted in `info`.
    match info.iter().find(|(k, _)| k.contains("write_error")) {
        Some((k, v)) => assert!(
            v.parse::<u64>().is_ok_and(|n| n > 0),
            "info {k}={v} after failed writes"
        ),
        None => println!("note: info has no write-error counter yet: {info:?}"),
    }
    assert_eq!(d.session(&["#last max 1 2"]), ["#last OK 2"]);
}

#[test]
fn user_counts_survive_a_restart() {
    let state = tempfile::tempdir().expect("state folder");
    let extra = format!("[server]\nstate_dir = \"{}\"\n", state.path().display());
    let mut d1 = Launch::line(&extra).start();
    let mut c = d1.connect();
    for i in 0..3 {
        assert_eq!(c.ask(&format!("@alice sum {i} 1")), format!("OK {}", i + 1));
    }
    drop(c);
    stop(&mut d1);
    let saved = state.path().join("users.json");
    assert!(saved.exists(), "no users.json in state_dir after SIGTERM");
    assert!(
        !d1.file("users.json").exists(),
        "users.json written to the config folder instead of state_dir"
    );

    let d2 = Launch::line(&extra).start();
    let counts = users(&d2);
    assert_eq!(
        count_of(&counts, "alice"),
        Some(3),
        "counts of run 1 in run 2: {counts:?}\n{}",
        d2.stderr()
    );
}

#[test]
fn a_corrupt_users_json_is_moved_aside() {
    let d0 = tempfile::tempdir().expect("state folder");
    let state = d0.path();
    std::fs::write(state.join("users.json"), "not json").expect("write users.json");
    let d = Launch::line(&format!("[server]\nstate_dir = \"{}\"\n", state.display())).start();
    let aside: Vec<_> = std::fs::read_dir(state)
        .expect("read state_dir")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("users.json.corrupt-"))
        })
        .collect();
    assert_eq!(aside.len(), 1, "users.json.corrupt-* in state_dir: {aside:?}");
    assert_eq!(
        std::fs::read_to_string(&aside[0]).expect("read the moved file"),
        "not json",
        "the corrupt file's content is kept"
    );
    let counts = users(&d);
    // Only the `users` request itself has been counted.
    assert!(
        counts.iter().all(|(n, c)| n == "anonymous" && *c == 1),
        "counts after a corrupt users.json: {counts:?}"
    );
    assert!(
        d.stderr().contains("corrupt"),
        "the corrupt file is not logged:\n{}",
        d.stderr()
    );
}

#[test]
fn state_and_logs_directory_hold_relative_files() {
    let base = tempfile::tempdir().expect("folder");
    let state = base.path().join("state");
    let logs = base.path().join("logs");
    std::fs::create_dir(&state).expect("state");
    std::fs::create_dir(&logs).expect("logs");
    let mut d = Launch::line("")
        .env(&[
            ("STATE_DIRECTORY", state.to_str().expect("utf-8")),
            ("LOGS_DIRECTORY", logs.to_str().expect("utf-8")),
        ])
        .start();
    assert_eq!(d.session(&["#e1 @bob sum 1 1"]), ["#e1 OK 2"]);
    stop(&mut d);
    let saved = std::fs::read_to_string(state.join("users.json")).expect("users.json in $STATE_DIRECTORY");
    assert!(
        saved.contains("\"bob\""),
        "users.json in $STATE_DIRECTORY: {saved}"
    );
    let lines = json_lines(&logs.join("results.log"));
    assert!(
        lines.iter().any(|v| v["id"] == "e1" && v["user"] == "bob"),
        "results.log in $LOGS_DIRECTORY: {lines:?}"
    );
    for name in ["users.json", "results.log"] {
        assert!(
            !d.file(name).exists(),
            "{name} written to the config folder despite the environment"
        );
    }
}
