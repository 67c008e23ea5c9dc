//! Every example of the shared protocol cases file, through the real
//! binary, over TCP (one connection, pipelined) and over UDP. A failure
//! names the case by its file and line.

mod common;

use common::{Case, Launch, read_cases, reply_matches};

const CONFIG: &str =
    "[limits]\nmax_values = 1000\n\n[ops.pi]\nmax_samples = 1000000\nudp_max_samples = 1000000\n";

/// The cases file of the product contract, relative to the repository.
const SHARED: &str = "../shared/cases/line-protocol.txt";
/// The copy kept in the repository.
const LOCAL: &str = "tests/cases/line-protocol.txt";

/// The cases of the shared file when the shared folder is beside the
/// repository, else of the copy kept in tests/cases.
fn cases() -> Vec<Case> {
    let shared = format!("{}/{SHARED}", env!("CARGO_MANIFEST_DIR"));
    // The shared case-file format: requests with an id start with '#' like
    // comments, so a case is any line with the tab-separated arrow.
    read_cases(if std::path::Path::new(&shared).exists() {
        SHARED
    } else {
        LOCAL
    })
}

/// `file:line "request": expected …, got …`, for failures.
fn mismatch(c: &Case, got: &str) -> String {
    format!("{}: expected {:?}, got {:?}", c.shown(), c.expected, got)
}

#[test]
fn the_cases_file_is_the_shared_one() {
    let root = env!("CARGO_MANIFEST_DIR");
    if let Ok(shared) = std::fs::read_to_string(format!("{root}/{SHARED}")) {
        let local = std::fs::read_to_string(format!("{root}/{LOCAL}")).expect("local copy");
        assert_eq!(
            shared, local,
            "tests/cases/line-protocol.txt is out of date: copy ../shared/cases over it"
        );
    }
    let cases = cases();
    assert!(cases.len() >= 70, "the cases file has shrunk");
    let with_id = cases.iter().filter(|c| c.request.starts_with(b"#")).count();
    assert!(with_id >= 4, "the cases with an id are read");
}

#[test]
fn every_case_over_tcp_pipelined() {
    let d = Launch::line(CONFIG).start();
    let cases = cases();
    let requests: Vec<String> = cases.iter().map(Case::text).collect();
    let requests: Vec<&str> = requests.iter().map(String::as_str).collect();
    let replies = d.session(&requests);
    assert_eq!(replies.len(), cases.len(), "one reply per request: {replies:#?}");
    let failures: Vec<String> = cases
        .iter()
        .zip(&replies)
        .filter(|(c, got)| !reply_matches(&c.expected, got))
        .map(|(c, got)| mismatch(c, got))
        .collect();
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_case_over_tcp_one_at_a_time() {
    let d = Launch::line(CONFIG).start();
    let mut c = d.connect();
    for case in cases() {
        let got = c.ask(&case.text());
        assert!(reply_matches(&case.expected, &got), "{}", mismatch(&case, &got));
    }
}

#[test]
fn every_case_over_udp() {
    let d = Launch::line(CONFIG).start();
    for case in cases() {
        let got = d.udp(&case.text());
        assert!(reply_matches(&case.expected, &got), "{}", mismatch(&case, &got));
    }
}
