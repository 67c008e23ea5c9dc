//! Access and files: disabling `users` disables `/statistics`; a `users`
//! reply is logged as a count, so the results log keeps its history; the
//! results log and users.json are opened with O_NOFOLLOW (the temporary
//! file with O_EXCL), a symlink or FIFO in their place is refused with a
//! log line, and the writer thread never blocks shutdown.

use std::path::Path;
use std::time::Duration;

use crate::common::{Daemon, Launch, LineClient, mkfifo, parse_users, wait_until};
use crate::{clip, verdict};

/// How long SIGTERM may take on an idle daemon: it has nothing to drain.
const PROMPT_EXIT: Duration = Duration::from_secs(5);

#[test]
fn statistics_when_users_is_disabled() {
    let _one_at_a_time = crate::exclusive();
    let d = Launch::http("[ops.users]\nenabled = false\n").start();
    let mut c = d.http();
    let r = c.ask(crate::common::http_get("/v1/max?values=1,2&username=alice"));
    assert_eq!(r.status, 200, "{}", r.text());
    let r = c.ask(crate::common::http_get("/statistics"));
    verdict(
        "[ops.users] enabled = false",
        vec![(r.status != 404 || r.text().contains("alice")).then(|| {
            format!(
                "promised GET /statistics 404 like the users operation; seen {} {}",
                r.status,
                r.text()
            )
        })],
        "",
    );
}

/// Every line of the results log and of the two files rotation keeps, as
/// JSON, oldest first.
fn log_lines(d: &Daemon) -> Vec<serde_json::Value> {
    ["results.log.2", "results.log.1", "results.log"]
        .iter()
        .flat_map(|name| {
            let text = std::fs::read_to_string(d.file(name)).unwrap_or_default();
            text.lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The ids of every logged line.
fn logged_ids(d: &Daemon) -> Vec<String> {
    log_lines(d)
        .iter()
        .filter_map(|v| v["id"].as_str().map(str::to_string))
        .collect()
}

/// The logged lines with this id.
fn logged(d: &Daemon, id: &str) -> Vec<serde_json::Value> {
    log_lines(d).into_iter().filter(|v| v["id"] == id).collect()
}

/// 20,000 names, then a request to remember, then six `users`: the log
/// (256 KiB, two kept) must still hold the request, and each `users` line
/// the number of names, not the table.
#[test]
fn users_of_a_big_table_and_the_results_log() {
    let _one_at_a_time = crate::exclusive();
    const NAMES: usize = 20_000;
    let mut d =
        Launch::line("[results_log]\nmax_bytes = 262144\nkeep = 2\n\n[limits]\nmax_users = 100000\n").start();
    let mut c = d.connect();
    let names: String = (0..NAMES).map(|i| format!("@name-{i:05} ping\n")).collect();
    let mut w = c.stream().try_clone().expect("clone");
    let writer = std::thread::spawn(move || std::io::Write::write_all(&mut w, names.as_bytes()));
    for i in 0..NAMES {
        assert_eq!(c.line().as_deref(), Some("OK pong"), "name {i}");
    }
    writer.join().expect("writer").expect("write names");
    assert_eq!(c.ask("#history sum 1 2"), "#history OK 3");
    assert!(
        wait_until(Duration::from_secs(5), || !logged(&d, "history").is_empty()),
        "#history never reached the results log"
    );
    let mut counts = Vec::new();
    for i in 0..6 {
        let reply = c.ask(&format!("#u{i} users"));
        let table = reply.strip_prefix(&format!("#u{i} ")).unwrap_or(&reply);
        counts.push(parse_users(table).len());
    }
    let flushed = wait_until(Duration::from_secs(5), || {
        logged_ids(&d).iter().any(|id| id == "u5")
    });
    let ids = logged_ids(&d);
    let users_lines: Vec<serde_json::Value> = (0..6).flat_map(|i| logged(&d, &format!("u{i}"))).collect();
    // A count: of the names in the reply (which may be a page of the
    // table) or in the whole table, never the table itself.
    let as_counts = users_lines.iter().zip(&counts).all(|(v, n)| {
        v["result"]
            .as_u64()
            .is_some_and(|r| (*n as u64..=NAMES as u64 + 100).contains(&r))
    });
    d.send_signal(libc::SIGTERM);
    let exited = d.wait_exit(PROMPT_EXIT);
    verdict(
        "six `users` of a 20,000-name table",
        vec![
            (!flushed).then(|| "the `users` requests never reached the results log".to_string()),
            (!ids.iter().any(|id| id == "history")).then(|| {
                format!(
                    "promised the earlier history kept (max_bytes 256 KiB, keep 2); seen #history rotated \
                     away, {} lines left",
                    ids.len()
                )
            }),
            (!as_counts || users_lines.len() != 6).then(|| {
                format!(
                    "promised each `users` logged with a number of names (its reply had {:?}); seen {} \
                     such lines in the log, the first with result {}",
                    counts[0],
                    users_lines.len(),
                    clip(
                        &users_lines
                            .first()
                            .map(|v| v["result"].to_string())
                            .unwrap_or_default(),
                        120
                    )
                )
            }),
            exited
                .is_none()
                .then(|| format!("SIGTERM: still running after {PROMPT_EXIT:?}")),
        ],
        "",
    );
}

/// Whether stderr has a warning or an error naming `file`.
fn warned_about(d: &Daemon, file: &str) -> bool {
    d.stderr()
        .lines()
        .any(|l| l.contains(file) && (l.contains("WARN") || l.contains("ERROR")))
}

/// What a planted file did: the victim's content afterwards (for a
/// symlink), whether taskd logged a refusal, and whether SIGTERM ended it.
fn after_the_plant(d: &mut Daemon, file: &str, victim: Option<&Path>, what: &str) {
    let logged = wait_until(Duration::from_secs(4), || warned_about(d, file));
    let victim_text = victim.map(|v| std::fs::read_to_string(v).unwrap_or_default());
    d.send_signal(libc::SIGTERM);
    let exited = d.wait_exit(PROMPT_EXIT);
    let stderr = d.stderr();
    verdict(
        what,
        vec![
            victim_text.filter(|t| t != "precious\n").map(|t| {
                format!(
                    "promised the symlink not followed; seen its target written: {}",
                    clip(&t, 120)
                )
            }),
            (!logged).then(|| format!("promised a warning naming {file}; seen none")),
            exited.is_none().then(|| {
                format!("promised SIGTERM to exit within {PROMPT_EXIT:?}; still running (the writer blocked)")
            }),
        ],
        &format!("stderr:\n{stderr}"),
    );
}

/// Changes the users table so users.json is saved (at most once a second).
fn touch_users(d: &Daemon) {
    assert_eq!(d.session(&["@alice ping"]), ["OK pong"]);
}

#[test]
fn a_symlink_in_place_of_users_json_tmp() {
    let _one_at_a_time = crate::exclusive();
    let mut d = Launch::line("").start();
    let victim = d.file("victim");
    std::fs::write(&victim, "precious\n").expect("victim");
    std::os::unix::fs::symlink(&victim, d.file("users.json.tmp")).expect("symlink");
    touch_users(&d);
    after_the_plant(
        &mut d,
        "users.json.tmp",
        Some(&victim),
        "a symlink in place of users.json.tmp",
    );
}

#[test]
fn a_fifo_in_place_of_users_json_tmp() {
    let _one_at_a_time = crate::exclusive();
    let mut d = Launch::line("").start();
    mkfifo(&d.file("users.json.tmp"));
    touch_users(&d);
    after_the_plant(
        &mut d,
        "users.json.tmp",
        None,
        "a FIFO in place of users.json.tmp",
    );
}

/// Puts `plant` in place of results.log and has taskd reopen it
/// (SIGUSR1, as after logrotate), then writes `requests` lines' worth.
fn replace_results_log(d: &Daemon, plant: impl FnOnce(&Path), requests: usize) {
    let mut c = d.connect();
    assert_eq!(c.ask("#before sum 1 2"), "#before OK 3");
    assert!(
        wait_until(Duration::from_secs(5), || !logged(d, "before").is_empty()),
        "the results log never got its first line"
    );
    std::fs::remove_file(d.file("results.log")).expect("remove results.log");
    plant(&d.file("results.log"));
    d.send_signal(libc::SIGUSR1);
    std::thread::sleep(Duration::from_millis(300));
    let batch: String = (0..requests).map(|i| format!("#after{i} sum {i} 1\n")).collect();
    let mut w = c.stream().try_clone().expect("clone");
    let writer = std::thread::spawn(move || std::io::Write::write_all(&mut w, batch.as_bytes()));
    for i in 0..requests {
        assert_eq!(c.line(), Some(format!("#after{i} OK {}", i + 1)));
    }
    writer.join().expect("writer").expect("write");
    let _: &LineClient = &c;
}

#[test]
fn a_symlink_in_place_of_results_log() {
    let _one_at_a_time = crate::exclusive();
    let mut d = Launch::line("").start();
    let victim = d.file("victim");
    std::fs::write(&victim, "precious\n").expect("victim");
    replace_results_log(
        &d,
        |path| std::os::unix::fs::symlink(&victim, path).expect("symlink"),
        10,
    );
    after_the_plant(
        &mut d,
        "results.log",
        Some(&victim),
        "a symlink in place of results.log",
    );
}

#[test]
fn a_fifo_in_place_of_results_log() {
    let _one_at_a_time = crate::exclusive();
    let mut d = Launch::line("").start();
    // Enough lines to fill a pipe's 64 KiB.
    replace_results_log(&d, mkfifo, 2_000);
    after_the_plant(&mut d, "results.log", None, "a FIFO in place of results.log");
}
