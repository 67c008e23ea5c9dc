use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::*;

fn settings(path: &Path, max_bytes: u64, keep: u32) -> LogSettings {
    LogSettings {
        path: Some(path.to_path_buf()),
        max_bytes,
        keep,
    }
}

fn start(dir: &Path, max_bytes: u64, keep: u32) -> (FileWriter, PathBuf) {
    let log = dir.join("results.log");
    let w = FileWriter::start(settings(&log, max_bytes, keep), dir.join("state/users.json")).unwrap();
    (w, log)
}

fn lines(path: &Path) -> Vec<String> {
    match fs::read_to_string(path) {
        Ok(s) => s.lines().map(str::to_owned).collect(),
        Err(_) => Vec::new(),
    }
}

/// Polls `cond` for up to 3 s.
fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(3);
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

fn line(i: usize) -> String {
    format!("{{\"id\":{i:04},\"pad\":\"xxxxxxxxxx\"}}\n")
}

#[test]
fn lines_across_sends_appear_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (mut w, log) = start(dir.path(), 0, 5);
    let mut expected = Vec::new();
    for turn in 0..50 {
        for j in 0..(turn % 4) {
            let l = line(turn * 10 + j);
            expected.push(l.trim_end().to_owned());
            w.buffer().extend_from_slice(l.as_bytes());
        }
        w.send();
    }
    w.send(); // empty: no-op
    w.shutdown();
    assert_eq!(lines(&log), expected);
}

#[test]
fn flushed_within_a_second_without_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let (mut w, log) = start(dir.path(), 0, 5);
    w.buffer().extend_from_slice(b"{\"a\":1}\n");
    w.send();
    let t = Instant::now();
    assert!(eventually(|| lines(&log) == ["{\"a\":1}"]));
    assert!(
        t.elapsed() < Duration::from_millis(2500),
        "took {:?}",
        t.elapsed()
    );
    w.shutdown();
    assert_eq!(lines(&log), ["{\"a\":1}"]);
}

#[test]
fn rotation_by_size_keeps_whole_lines() {
    let dir = tempfile::tempdir().unwrap();
    let (mut w, log) = start(dir.path(), 200, 2);
    let n = 50;
    for i in 0..n {
        w.buffer().extend_from_slice(line(i).as_bytes());
        if i % 7 == 0 {
            w.send();
        }
    }
    w.shutdown();
    let line_len = line(0).len();
    assert_eq!(line_len, 31);
    let per_file = 200 / line_len; // 6 lines = 186 bytes; a 7th would pass 200
    let mut all = Vec::new();
    for p in [
        log.with_extension("log.2"),
        log.with_extension("log.1"),
        log.clone(),
    ] {
        let data = fs::read(&p).unwrap();
        assert!(data.len() <= 200, "{} has {} bytes", p.display(), data.len());
        assert!(data.ends_with(b"\n"));
        let ls = lines(&p);
        for l in &ls {
            assert_eq!(l.len(), line_len - 1, "split line {l:?} in {}", p.display());
        }
        all.extend(ls);
    }
    assert!(!log.with_extension("log.3").exists());
    // 50 = 8 full files of 6 + 2: results.log has 2, .1 and .2 have 6 each.
    let kept = n % per_file + 2 * per_file;
    let expected: Vec<String> = (n - kept..n).map(|i| line(i).trim_end().to_owned()).collect();
    assert_eq!(all, expected);
}

#[test]
fn rotation_with_keep_zero_restarts_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (mut w, log) = start(dir.path(), 100, 0);
    for i in 0..10 {
        w.buffer().extend_from_slice(line(i).as_bytes());
    }
    w.send();
    w.shutdown();
    // 3 lines = 93 bytes per file: lines 9 alone remains.
    assert_eq!(lines(&log), [line(9).trim_end()]);
    assert!(!log.with_extension("log.1").exists());
}

#[test]
fn an_oversized_existing_file_is_rotated_first() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("results.log");
    fs::write(&log, "x".repeat(300) + "\n").unwrap();
    let (mut w, _) = start(dir.path(), 200, 3);
    w.buffer().extend_from_slice(b"new\n");
    w.send();
    w.shutdown();
    assert_eq!(lines(&log), ["new"]);
    assert_eq!(fs::read(log.with_extension("log.1")).unwrap().len(), 301);
}

#[test]
fn partial_last_line_is_ended_before_new_lines() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("results.log");
    fs::write(&log, "{\"whole\":1}\n{\"half").unwrap();
    let (mut w, _) = start(dir.path(), 0, 5);
    w.buffer().extend_from_slice(b"{\"next\":2}\n");
    w.send();
    w.shutdown();
    assert_eq!(
        fs::read_to_string(&log).unwrap(),
        "{\"whole\":1}\n{\"half\n{\"next\":2}\n"
    );
}

#[test]
fn a_complete_last_line_gets_no_extra_newline() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("results.log");
    fs::write(&log, "a\n").unwrap();
    let (mut w, _) = start(dir.path(), 0, 5);
    w.buffer().extend_from_slice(b"b\n");
    w.send();
    w.shutdown();
    assert_eq!(fs::read_to_string(&log).unwrap(), "a\nb\n");
}

#[test]
fn reopen_after_logrotate_renamed_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (mut w, log) = start(dir.path(), 0, 5);
    w.buffer().extend_from_slice(b"old1\n");
    w.send();
    w.buffer().extend_from_slice(b"old2\n");
    w.send();
    let renamed = dir.path().join("results.log.1");
    fs::rename(&log, &renamed).unwrap();
    // Lines of the turn in which the signal arrived belong to the old file.
    w.buffer().extend_from_slice(b"old3\n");
    w.reopen(settings(&log, 0, 5));
    w.buffer().extend_from_slice(b"new1\n");
    w.send();
    w.shutdown();
    assert_eq!(lines(&renamed), ["old1", "old2", "old3"]);
    assert_eq!(lines(&log), ["new1"]);
}

/// A FIFO at `path`.
fn mkfifo(path: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

/// Runs `f` on another thread and fails if it takes over 5 s: what these
/// tests check is that nothing blocks.
fn within_5s<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(5))
        .expect("blocked for more than 5 s")
}

#[test]
fn a_device_fifo_or_link_as_the_log_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.json");
    let err = FileWriter::start(settings(Path::new("/dev/full"), 100, 2), users.clone()).unwrap_err();
    assert!(
        err.to_string()
            .contains("/dev/full: is a character device, not a regular file"),
        "{err}"
    );

    let fifo = dir.path().join("fifo.log");
    mkfifo(&fifo);
    let (f, u) = (fifo.clone(), users.clone());
    let err = within_5s(move || FileWriter::start(settings(&f, 0, 5), u).unwrap_err());
    assert!(err.to_string().contains("is a FIFO, not a regular file"), "{err}");

    let victim = dir.path().join("victim");
    fs::write(&victim, "keep\n").unwrap();
    let link = dir.path().join("link.log");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let err = FileWriter::start(settings(&link, 0, 5), users).unwrap_err();
    assert!(err.to_string().contains("is a symbolic link"), "{err}");
    assert_eq!(fs::read_to_string(&victim).unwrap(), "keep\n");
}

#[test]
fn a_fifo_or_link_put_in_place_of_the_log_is_refused_at_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (mut w, log) = start(dir.path(), 0, 5);
    let victim = dir.path().join("victim");
    fs::write(&victim, "keep\n").unwrap();
    fs::remove_file(&log).unwrap();
    std::os::unix::fs::symlink(&victim, &log).unwrap();
    w.reopen(settings(&log, 0, 5));
    w.buffer().extend_from_slice(b"x\n");
    w.send();
    assert!(
        eventually(|| w.write_errors() >= 2),
        "the reopen and the batch are counted"
    );
    fs::remove_file(&log).unwrap();
    mkfifo(&log);
    w.reopen(settings(&log, 0, 5));
    w.buffer().extend_from_slice(b"y\n");
    w.send();
    assert!(eventually(|| w.write_errors() >= 4));
    within_5s(move || w.shutdown());
    assert_eq!(fs::read_to_string(&victim).unwrap(), "keep\n");
}

#[test]
fn rotation_with_keep_0_does_not_truncate_through_a_link() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    fs::write(&victim, "keep\n").unwrap();
    let log = dir.path().join("results.log");
    std::os::unix::fs::symlink(&victim, &log).unwrap();
    assert!(rotate::rotate(&log, 0).is_err());
    assert_eq!(fs::read_to_string(&victim).unwrap(), "keep\n");
}

#[test]
fn users_tmp_in_the_way_is_replaced_never_followed() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    fs::create_dir(&state).unwrap();
    let tmp = state.join("users.json.tmp");
    let victim = dir.path().join("victim");
    fs::write(&victim, "keep\n").unwrap();
    std::os::unix::fs::symlink(&victim, &tmp).unwrap();
    let (mut w, _) = start(dir.path(), 0, 5);
    w.save_users(vec![("alice".into(), 1)]);
    w.shutdown();
    assert_eq!(fs::read_to_string(&victim).unwrap(), "keep\n");
    assert_eq!(
        load_users(&state.join("users.json")).unwrap(),
        [("alice".to_owned(), 1)]
    );
    assert!(
        !tmp.exists() && fs::symlink_metadata(&tmp).is_err(),
        "no tmp left"
    );

    // A FIFO there is removed too, without blocking.
    mkfifo(&tmp);
    let d = dir.path().to_path_buf();
    within_5s(move || {
        let (mut w, _) = start(&d, 0, 5);
        w.save_users(vec![("bob".into(), 2)]);
        w.shutdown();
    });
    assert_eq!(
        load_users(&state.join("users.json")).unwrap(),
        [("bob".to_owned(), 2)]
    );
}

#[test]
fn a_link_or_fifo_as_users_json_is_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    fs::write(&victim, "[{\"request_count\":5,\"username\":\"eve\"}]").unwrap();
    let path = dir.path().join("users.json");
    std::os::unix::fs::symlink(&victim, &path).unwrap();
    let err = load_users(&path).unwrap_err();
    assert!(err.to_string().contains("is a symbolic link"), "{err}");
    fs::remove_file(&path).unwrap();
    mkfifo(&path);
    let p = path.clone();
    let err = within_5s(move || load_users(&p).unwrap_err());
    assert!(err.to_string().contains("is a FIFO"), "{err}");
    assert!(path.exists(), "refused, not moved aside");
}

#[test]
fn shutdown_does_not_wait_for_a_stuck_writer() {
    let dir = tempfile::tempdir().unwrap();
    let (mut w, _) = start(dir.path(), 0, 5);
    // The thread is stuck as in a write to a disk that does not answer.
    w.stall(Duration::from_secs(30));
    let t = Instant::now();
    w.finish(Duration::from_millis(300));
    assert!(t.elapsed() < Duration::from_secs(3), "waited {:?}", t.elapsed());
}

#[test]
fn check_paths_names_what_the_daemon_could_not_write() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert_eq!(
        check_paths(Some(&d.join("results.log")), &d.join("state/sub")),
        Vec::<String>::new()
    );
    let errs = check_paths(Some(&d.join("missing/results.log")), d);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].contains("missing/results.log") && errs[0].contains("does not exist"),
        "{errs:?}"
    );
    fs::write(d.join("file"), "").unwrap();
    let errs = check_paths(None, &d.join("file"));
    assert!(errs.len() == 1 && errs[0].contains("not a folder"), "{errs:?}");
    mkfifo(&d.join("users.json"));
    mkfifo(&d.join("results.log"));
    let errs = check_paths(Some(&d.join("results.log")), d);
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(errs.iter().all(|e| e.contains("is a FIFO")), "{errs:?}");
}

#[test]
fn writing_resumes_after_a_failed_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (mut w, log) = start(dir.path(), 0, 5);
    let bad = dir.path().join("missing-folder/results.log");
    w.reopen(settings(&bad, 0, 5));
    w.buffer().extend_from_slice(b"lost\n");
    w.send();
    assert!(eventually(|| w.write_errors() >= 2)); // the reopen and the batch
    w.reopen(settings(&log, 0, 5));
    w.buffer().extend_from_slice(b"kept\n");
    w.send();
    w.shutdown();
    assert_eq!(lines(&log), ["kept"]);
}

#[test]
fn a_log_that_cannot_be_opened_at_start_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("missing-folder/results.log");
    let err = FileWriter::start(settings(&bad, 0, 5), dir.path().join("users.json")).unwrap_err();
    assert!(err.to_string().contains("missing-folder/results.log"), "{err}");
}

#[test]
fn log_off_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let off = LogSettings {
        path: None,
        max_bytes: 0,
        keep: 0,
    };
    let mut w = FileWriter::start(off, dir.path().join("users.json")).unwrap();
    w.buffer().extend_from_slice(b"x\n");
    w.send();
    w.shutdown();
    let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
    assert!(names.is_empty());
}

#[test]
fn a_line_without_newline_is_ended() {
    let dir = tempfile::tempdir().unwrap();
    let (mut w, log) = start(dir.path(), 0, 5);
    w.buffer().extend_from_slice(b"a");
    w.send();
    w.buffer().extend_from_slice(b"b\n");
    w.send();
    w.shutdown();
    assert_eq!(fs::read_to_string(&log).unwrap(), "a\nb\n");
}

#[test]
fn users_round_trip_and_newest_snapshot_wins() {
    let dir = tempfile::tempdir().unwrap();
    let (mut w, _) = start(dir.path(), 0, 5);
    w.save_users(vec![("zed".into(), 1)]);
    let users = vec![
        ("Alice".to_owned(), 3),
        ("anonymous".to_owned(), 7),
        ("b\"\\ö\n".to_owned(), u64::MAX),
        ("~other".to_owned(), 1),
    ];
    w.save_users(users.iter().map(|(n, c)| (n.as_str().into(), *c)).collect());
    w.shutdown();
    let path = dir.path().join("state/users.json");
    assert_eq!(load_users(&path).unwrap(), users);
    // Atomic replacement leaves no temporary file behind.
    let names: Vec<String> = fs::read_dir(dir.path().join("state"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["users.json"]);
}

#[test]
fn users_json_format() {
    let users = vec![
        ("bob".to_owned(), 1),
        ("Alice".to_owned(), 3),
        ("a\"b".to_owned(), 0),
    ];
    assert_eq!(
        String::from_utf8(users_json(&users)).unwrap(),
        r#"[{"request_count":3,"username":"Alice"},{"request_count":0,"username":"a\"b"},{"request_count":1,"username":"bob"}]"#
    );
    assert_eq!(users_json::<String>(&[]), b"[]");
}

#[test]
fn missing_users_file_is_empty() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(load_users(&dir.path().join("users.json")).unwrap(), []);
}

#[test]
fn corrupt_users_file_is_moved_aside() {
    for bad in [
        "",
        "not json",
        "{}",
        "[{\"username\":\"a\"}]",
        "[{\"username\":1,\"request_count\":2}]",
        "[-1]",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.json");
        fs::write(&path, bad).unwrap();
        assert_eq!(load_users(&path).unwrap(), [], "{bad:?}");
        assert!(!path.exists());
        let aside: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(aside.len(), 1);
        assert!(aside[0].starts_with("users.json.corrupt-"), "{aside:?}");
        assert_eq!(fs::read_to_string(dir.path().join(&aside[0])).unwrap(), bad);
    }
}

#[test]
fn unreadable_users_path_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    // A folder where the file should be: not "corrupt", an I/O error to report.
    let path = dir.path().join("users.json");
    fs::create_dir(&path).unwrap();
    assert!(load_users(&path).is_err());
    assert!(path.is_dir());
}
