//! Every example of the shared protocol cases file, through the real
//! binary, over TCP (one connection, pipelined) and over UDP.

mod common;

use common::{Daemon, reply_matches};

const CONFIG: &str =
    "[limits]\nmax_values = 1000\n\n[ops.pi]\nmax_samples = 1000000\nudp_max_samples = 1000000\n";

/// The cases file of the product contract when the shared folder is beside
/// the repository, else the copy kept in tests/cases.
fn cases_text() -> String {
    let root = env!("CARGO_MANIFEST_DIR");
    let shared = format!("{root}/../shared/cases/line-protocol.txt");
    let local = format!("{root}/tests/cases/line-protocol.txt");
    std::fs::read_to_string(&shared)
        .or_else(|_| std::fs::read_to_string(&local))
        .expect("the protocol cases file")
}

struct Case {
    request: String,
    expected: String,
}

fn cases() -> Vec<Case> {
    // The shared case-file format: requests with an id start with '#' like
    // comments, so a case is any line with the tab-separated arrow.
    common::parse_cases("line-protocol.txt", &cases_text())
        .into_iter()
        .map(|c| Case {
            request: String::from_utf8_lossy(&c.request).into_owned(),
            expected: c.expected,
        })
        .collect()
}

#[test]
fn the_cases_file_is_the_shared_one() {
    let root = env!("CARGO_MANIFEST_DIR");
    if let Ok(shared) = std::fs::read_to_string(format!("{root}/../shared/cases/line-protocol.txt")) {
        let local =
            std::fs::read_to_string(format!("{root}/tests/cases/line-protocol.txt")).expect("local copy");
        assert_eq!(
            shared, local,
            "tests/cases/line-protocol.txt is out of date: copy ../shared/cases over it"
        );
    }
    let cases = cases();
    assert!(cases.len() >= 70, "the cases file has shrunk");
    let with_id = cases.iter().filter(|c| c.request.starts_with('#')).count();
    assert!(with_id >= 4, "the cases with an id are read");
}

#[test]
fn every_case_over_tcp_pipelined() {
    let d = Daemon::start(CONFIG);
    let cases = cases();
    let requests: Vec<&str> = cases.iter().map(|c| c.request.as_str()).collect();
    let replies = d.session(&requests);
    assert_eq!(replies.len(), cases.len(), "one reply per request: {replies:#?}");
    let failures: Vec<String> = cases
        .iter()
        .zip(&replies)
        .filter(|(c, got)| !reply_matches(&c.expected, got))
        .map(|(c, got)| format!("{:?}: expected {:?}, got {:?}", c.request, c.expected, got))
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
    let d = Daemon::start(CONFIG);
    let mut c = d.connect();
    for case in cases() {
        let got = c.ask(&case.request);
        assert!(
            reply_matches(&case.expected, &got),
            "{:?}: expected {:?}, got {:?}",
            case.request,
            case.expected,
            got
        );
    }
}

#[test]
fn every_case_over_udp() {
    let d = Daemon::start(CONFIG);
    for case in cases() {
        let got = d.udp(&case.request);
        assert!(
            reply_matches(&case.expected, &got),
            "{:?}: expected {:?}, got {:?}",
            case.request,
            case.expected,
            got
        );
    }
}
