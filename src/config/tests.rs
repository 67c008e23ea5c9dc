//! Unit tests: files in temporary folders, environment through the closure.

use std::ffi::OsString;
use std::fs;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tempfile::TempDir;

use super::*;
use crate::ops::{OPS, lookup};

fn no_env(_: &str) -> Option<OsString> {
    None
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    if let Some(parent) = p.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(&p, text).unwrap();
    p
}

/// Writes `text` as `taskd.toml` in a new folder and loads it.
fn load_text(text: &str) -> (TempDir, Result<Config, ConfigError>) {
    let dir = TempDir::new().unwrap();
    let main = write(dir.path(), "taskd.toml", text);
    let r = load(Some(&main), &no_env);
    (dir, r)
}

fn ok(text: &str) -> (TempDir, Config) {
    let (dir, r) = load_text(text);
    match r {
        Ok(c) => (dir, c),
        Err(e) => panic!("unexpected errors:\n{e}"),
    }
}

fn errors(text: &str) -> Vec<String> {
    match load_text(text).1 {
        Ok(_) => panic!("no error for:\n{text}"),
        Err(e) => e.messages,
    }
}

/// Asserts that one message contains every fragment.
#[track_caller]
fn assert_has(messages: &[String], fragments: &[&str]) {
    assert!(
        messages.iter().any(|m| fragments.iter().all(|f| m.contains(f))),
        "no message contains all of {fragments:?}:\n{}",
        messages.join("\n")
    );
}

const TCP: &str = "[[listener]]\nproto = \"tcp\"\naddress = \"127.0.0.1:7700\"\n";

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn op(name: &str) -> OpId {
    lookup(name).unwrap()
}

fn pi() -> OpId {
    op("pi")
}

#[test]
fn embedded_default_loads_with_three_listeners() {
    let cfg = load_main(load::Main::Embedded, &no_env).unwrap();
    assert!(cfg.sources.is_empty());
    let keys: Vec<_> = cfg.listeners.iter().map(listener_key).collect();
    assert_eq!(
        keys,
        [
            (Proto::Tcp, sa("127.0.0.1:7700")),
            (Proto::Udp, sa("127.0.0.1:7700")),
            (Proto::Http, sa("127.0.0.1:7780")),
        ]
    );
    assert!(cfg.listeners.iter().all(|l| l.origin == "embedded default"));
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(cfg.server.state_dir, cwd);
    assert_eq!(cfg.results_log.path, Some(cwd.join("results.log")));
    assert_eq!(cfg.server.workers, DEFAULT_WORKERS);
}

#[test]
fn embedded_default_comments_show_the_defaults() {
    // Uncommenting every `#key = value` line must change nothing, so the
    // packaged file cannot drift from the constants.
    let uncommented: String = EMBEDDED_DEFAULT
        .lines()
        .map(|l| match l.strip_prefix('#') {
            Some(rest) if rest.starts_with(|c: char| c.is_ascii_lowercase()) && rest.contains(" = ") => rest,
            _ => l,
        })
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(uncommented.contains("\nworkers = 0"));
    let (dir, plain) = ok(EMBEDDED_DEFAULT);
    let main = write(dir.path(), "taskd.toml", &uncommented);
    let full = load(Some(&main), &no_env).unwrap();
    assert_eq!(plain, full);
}

#[test]
fn every_key_has_its_default() {
    let (dir, cfg) = ok(TCP);
    let dir = dir.path();
    assert_eq!(cfg.sources, [dir.join("taskd.toml")]);
    let s = &cfg.server;
    assert_eq!(s.workers, 0);
    assert_eq!(s.state_dir, dir);
    assert_eq!(s.shutdown_timeout, Duration::from_secs(30));
    assert_eq!(s.drain_delay, Duration::ZERO);
    assert_eq!(s.servers_csv, None);
    assert!(s.self_ip.is_empty());
    assert_eq!(cfg.scheduler.policy, Policy::Hrrn);
    assert_eq!(cfg.scheduler.incoming_capacity, 65536);
    assert_eq!(cfg.scheduler.ready_capacity, 0);
    let l = &cfg.limits;
    assert_eq!(l.max_line_bytes, 8_388_608);
    assert_eq!(l.max_values, 1_000_000);
    assert_eq!(l.max_connections, 10_000);
    assert_eq!(l.max_connections_per_ip, 1_000);
    assert_eq!(l.max_inflight_per_conn, 128);
    assert_eq!(l.max_buffered_bytes, 268_435_456);
    assert_eq!(l.idle_timeout, Some(Duration::from_secs(300)));
    assert_eq!(l.max_users, 100_000);
    let r = &cfg.results_log;
    assert_eq!(r.path, Some(dir.join("results.log")));
    assert_eq!(r.max_bytes, 10_485_760);
    assert_eq!(r.keep, 5);
    assert_eq!(r.values_logged, 16);
    assert!(!cfg.metrics.per_user);
    assert_eq!(cfg.ops.len(), OPS.len());
    assert!(cfg.ops.iter().all(|o| o.enabled));
    assert_eq!(cfg.op_limit(pi(), "max_samples"), 10_000_000_000);
    assert_eq!(cfg.op_limit(pi(), "udp_max_samples"), 10_000_000);
    assert_eq!(cfg.ops[pi()].limit(pi(), "max_samples"), 10_000_000_000);
    let ls = &cfg.listeners[0];
    assert_eq!(listener_key(ls), (Proto::Tcp, sa("127.0.0.1:7700")));
    assert_eq!(
        (&ls.allow, &ls.ops, ls.recv_buffer, ls.reuse_port),
        (&None, &None, None, false)
    );
    assert_eq!((&ls.cert, &ls.key, &ls.client_ca), (&None, &None, &None));
    assert_eq!(ls.origin, format!("{}:1", dir.join("taskd.toml").display()));
}

const FULL: &str = r#"
[server]
workers = 8
state_dir = "/var/lib/taskd"
shutdown_timeout_s = 60
drain_delay_s = 5
servers_csv = "servers.csv"
self_ip = ["127.0.0.1"]

[scheduler]
policy = "sjf"
incoming_capacity = 1000
ready_capacity = 32

[limits]
max_line_bytes = 1024
max_values = 100
max_connections = 50
max_connections_per_ip = 5
max_inflight_per_conn = 4
max_buffered_bytes = 1048576
idle_timeout_s = 0
max_users = 10

[results_log]
path = "/var/log/taskd/results.log"
max_bytes = 0
keep = 2
values_logged = 3

[metrics]
per_user = true

[ops.pi]
enabled = false
max_samples = 1000
udp_max_samples = 10

[ops.median]
enabled = false

[[listener]]
proto = "tcp"
address = "0.0.0.0:7700"
allow = ["127.0.0.0/8", "::1", "10.1.2.3/8"]
ops = ["MAX", "mean", "max"]
reuse_port = true

[[listener]]
proto = "udp"
address = "[::1]:7701"
recv_buffer = 4194304

[[listener]]
proto = "https"
address = "127.0.0.1:7743"
cert = "tls/cert.pem"
key = "/etc/ssl/private/taskd.key"
client_ca = "ca.pem"
"#;

const CSV: &str = "ip,port,proto\n# local rows\n127.0.0.1,7800\n127.0.0.1, 7801 ,tcp\n192.0.2.1,7800,udp\n";

#[test]
fn full_example_sets_every_key() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    write(d, "servers.csv", CSV);
    let main = write(d, "taskd.toml", FULL);
    let cfg = load(Some(&main), &no_env).unwrap();
    let s = &cfg.server;
    assert_eq!(s.workers, 8);
    assert_eq!(s.state_dir, Path::new("/var/lib/taskd"));
    assert_eq!(s.shutdown_timeout, Duration::from_secs(60));
    assert_eq!(s.drain_delay, Duration::from_secs(5));
    assert_eq!(s.servers_csv, Some(d.join("servers.csv")));
    assert_eq!(s.self_ip, ["127.0.0.1".parse::<IpAddr>().unwrap()]);
    assert_eq!(
        cfg.scheduler,
        SchedulerConfig {
            policy: Policy::Sjf,
            incoming_capacity: 1000,
            ready_capacity: 32
        }
    );
    assert_eq!(
        cfg.limits,
        Limits {
            max_line_bytes: 1024,
            max_values: 100,
            max_connections: 50,
            max_connections_per_ip: 5,
            max_inflight_per_conn: 4,
            max_buffered_bytes: 1_048_576,
            idle_timeout: None,
            max_users: 10,
        }
    );
    assert_eq!(
        cfg.results_log,
        ResultsLogConfig {
            path: Some(PathBuf::from("/var/log/taskd/results.log")),
            max_bytes: 0,
            keep: 2,
            values_logged: 3
        }
    );
    assert!(cfg.metrics.per_user);
    assert!(!cfg.op_enabled(pi()));
    assert!(!cfg.op_enabled(op("median")));
    assert!(cfg.op_enabled(op("max")));
    assert_eq!(cfg.ops[pi()].limits, [1000, 10]);

    let l = &cfg.listeners;
    assert_eq!(l.len(), 6, "{l:#?}");
    assert_eq!(listener_key(&l[0]), (Proto::Tcp, sa("0.0.0.0:7700")));
    let allow: Vec<String> = l[0]
        .allow
        .as_ref()
        .unwrap()
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(allow, ["127.0.0.0/8", "::1/128", "10.0.0.0/8"]);
    assert_eq!(l[0].ops, Some(vec![op("max"), op("mean")]));
    assert!(l[0].reuse_port);
    let line = FULL[..FULL.find("[[listener]]").unwrap()].matches('\n').count() + 1;
    assert_eq!(l[0].origin, format!("{}:{line}", main.display()));
    assert_eq!(listener_key(&l[1]), (Proto::Udp, sa("[::1]:7701")));
    assert_eq!(l[1].recv_buffer, Some(4_194_304));
    assert_eq!(l[2].proto, Proto::Https);
    assert_eq!(l[2].cert, Some(d.join("tls/cert.pem")));
    assert_eq!(l[2].key, Some(PathBuf::from("/etc/ssl/private/taskd.key")));
    assert_eq!(l[2].client_ca, Some(d.join("ca.pem")));
    let csv = d.join("servers.csv").display().to_string();
    assert_eq!(listener_key(&l[3]), (Proto::Tcp, sa("127.0.0.1:7800")));
    assert_eq!(listener_key(&l[4]), (Proto::Udp, sa("127.0.0.1:7800")));
    assert_eq!(listener_key(&l[5]), (Proto::Tcp, sa("127.0.0.1:7801")));
    assert_eq!(l[3].origin, format!("{csv}:3 (servers.csv)"));
}

#[test]
fn unknown_keys_name_file_line_and_key() {
    let text = "wrong = 1\n\n[server]\nworkers = 2\nwrokers = 3\n\n[[listener]]\nproto = \"tcp\"\naddress = \"127.0.0.1:1\"\nallowed = []\n\n[ops.pi]\nmax_sample = 5\n\n[ops.nosuch]\nenabled = true\n";
    let errs = errors(text);
    assert_has(&errs, &["taskd.toml:1:", "unknown key `wrong` at the top level"]);
    assert_has(
        &errs,
        &["taskd.toml:5:", "unknown key `wrokers` in [server]", "`workers`"],
    );
    assert_has(
        &errs,
        &["taskd.toml:10:", "unknown key `allowed` in [[listener]]"],
    );
    assert_has(&errs, &["taskd.toml:13:", "unknown key `max_sample` in [ops.pi]"]);
    assert_has(&errs, &["taskd.toml:15:", "unknown operation `nosuch`"]);
    assert_eq!(errs.len(), 5, "{errs:#?}");
    let lines: Vec<&str> = errs
        .iter()
        .map(|m| m.split(".toml:").nth(1).unwrap().split(':').next().unwrap())
        .collect();
    assert_eq!(lines, ["1", "5", "10", "13", "15"], "in file order");
}

#[test]
fn type_errors_name_file_and_line() {
    let errs = errors(&format!("[server]\n\nworkers = \"x\"\n{TCP}"));
    assert_has(
        &errs,
        &["taskd.toml:3:", "`workers` in [server]", "expected an integer"],
    );
    let errs = errors(&format!("server = 5\n{TCP}"));
    assert_has(&errs, &["taskd.toml:1:", "`server`", "expected a table"]);
    let errs = errors(&format!("[ops.pi]\nenabled = \"yes\"\n{TCP}"));
    assert_has(
        &errs,
        &["taskd.toml:2:", "`enabled` in [ops.pi] must be true or false"],
    );
    let errs = errors(&format!("{TCP}allow = [\"127.0.0.1\", 5]\n"));
    assert_has(&errs, &["taskd.toml:4:", "element 2 of `allow` in [[listener]]"]);
}

#[test]
fn syntax_errors_name_file_and_line() {
    let errs = errors(&format!("{TCP}\n[server\nworkers = 1\n"));
    assert_has(&errs, &["taskd.toml:5:", "invalid TOML"]);
}

#[test]
fn out_of_range_values_are_errors() {
    let text = format!(
        "[server]\nworkers = 2000\nshutdown_timeout_s = -1\n[scheduler]\nincoming_capacity = 0\npolicy = \"lifo\"\n\
         [limits]\nmax_line_bytes = 10\nmax_values = 0\nmax_connections = 0\nmax_inflight_per_conn = 0\n\
         [results_log]\nkeep = 5000\n[ops.pi]\nmax_samples = 0\nudp_max_samples = -5\n{TCP}"
    );
    let errs = errors(&text);
    assert_has(
        &errs,
        &[
            "taskd.toml:2:",
            "`workers` in [server] must be between 0 and 1024, found 2000",
        ],
    );
    assert_has(&errs, &["taskd.toml:3:", "`shutdown_timeout_s`", "found -1"]);
    assert_has(
        &errs,
        &[
            "taskd.toml:5:",
            "`incoming_capacity` in [scheduler] must be between 1 and",
        ],
    );
    assert_has(
        &errs,
        &[
            "taskd.toml:6:",
            "`policy` in [scheduler] must be hrrn, sjf or fifo",
        ],
    );
    assert_has(
        &errs,
        &[
            "taskd.toml:8:",
            "`max_line_bytes` in [limits] must be between 64 and",
        ],
    );
    assert_has(
        &errs,
        &["taskd.toml:9:", "`max_values` in [limits] must be at least 1"],
    );
    assert_has(&errs, &["taskd.toml:10:", "`max_connections`"]);
    assert_has(&errs, &["taskd.toml:11:", "`max_inflight_per_conn`"]);
    assert_has(
        &errs,
        &[
            "taskd.toml:13:",
            "`keep` in [results_log] must be between 0 and 1000",
        ],
    );
    assert_has(
        &errs,
        &[
            "taskd.toml:15:",
            "`max_samples` in [ops.pi] must be at least 1, found 0",
        ],
    );
    assert_has(&errs, &["taskd.toml:16:", "`udp_max_samples`", "found -5"]);
    assert_eq!(errs.len(), 11, "{errs:#?}");

    let errs = errors(&format!("[server]\ndrain_delay_s = 40\n{TCP}"));
    assert_has(
        &errs,
        &[
            "taskd.toml:2:",
            "`drain_delay_s` (40)",
            "`shutdown_timeout_s` (30)",
        ],
    );
    let errs = errors(&format!("[limits]\nmax_buffered_bytes = 1000\n{TCP}"));
    assert_has(
        &errs,
        &[
            "taskd.toml:2:",
            "`max_buffered_bytes` (1000) in [limits] must be at least `max_line_bytes`",
        ],
    );
}

#[test]
fn listener_errors() {
    let cases: &[(&str, &[&str])] = &[
        (
            "proto = \"tls\"\naddress = \"127.0.0.1:1\"\n",
            &["taskd.toml:1:", "needs `cert`"],
        ),
        (
            "proto = \"tcp\"\naddress = \"127.0.0.1:1\"\ncert = \"c.pem\"\n",
            &["taskd.toml:4:", "`cert` in [[listener]] is for tls and https"],
        ),
        (
            "proto = \"http\"\naddress = \"127.0.0.1:1\"\nrecv_buffer = 10\n",
            &["taskd.toml:4:", "`recv_buffer` in [[listener]] is for udp"],
        ),
        (
            "proto = \"udp\"\naddress = \"127.0.0.1:1\"\nrecv_buffer = 0\n",
            &["taskd.toml:4:", "`recv_buffer` in [[listener]] must be between 1"],
        ),
        (
            "proto = \"sctp\"\naddress = \"127.0.0.1:1\"\n",
            &[
                "taskd.toml:2:",
                "`proto` in [[listener]] must be tcp, udp, http, tls or https",
            ],
        ),
        (
            "address = \"127.0.0.1:1\"\n",
            &["taskd.toml:1:", "has no `proto`"],
        ),
        ("proto = \"tcp\"\n", &["taskd.toml:1:", "has no `address`"]),
        (
            "proto = \"tcp\"\naddress = \"localhost:7700\"\n",
            &[
                "taskd.toml:3:",
                "`address` in [[listener]] must be an IP address and port",
            ],
        ),
        (
            "proto = \"tcp\"\naddress = \"127.0.0.1:1\"\nallow = [\"10.0.0.0/33\"]\n",
            &["taskd.toml:4:", "element 1 of `allow`", "10.0.0.0/33"],
        ),
        (
            "proto = \"tcp\"\naddress = \"127.0.0.1:1\"\nops = [\"max\", \"nope\"]\n",
            &[
                "taskd.toml:4:",
                "element 2 of `ops` in [[listener]]: unknown operation `nope`",
            ],
        ),
    ];
    for (body, fragments) in cases {
        let errs = errors(&format!("[[listener]]\n{body}"));
        assert_has(&errs, fragments);
    }
}

#[test]
fn tcp_and_http_cannot_share_an_address() {
    let errs = errors(&format!(
        "{TCP}[[listener]]\nproto = \"http\"\naddress = \"127.0.0.1:7700\"\n"
    ));
    assert_has(
        &errs,
        &[
            "taskd.toml:4:",
            "conflicts with the tcp listener at",
            "taskd.toml:1",
        ],
    );
}

#[test]
fn no_listener_is_an_error() {
    let errs = errors("[server]\nworkers = 1\n");
    assert_has(&errs, &["taskd.toml", "no listener"]);
}

#[test]
fn missing_config_file_is_named() {
    let dir = TempDir::new().unwrap();
    let missing = dir.path().join("nope.toml");
    let e = load(Some(&missing), &no_env).unwrap_err();
    assert_has(&e.messages, &[&missing.display().to_string(), "cannot read"]);
}

#[test]
fn conf_d_merges_in_lexical_order() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    write(
        d,
        "servers.csv",
        "127.0.0.1,7800,tcp\n127.0.0.2,7801,tcp\n127.0.0.3,7802,tcp\n",
    );
    let main = write(
        d,
        "taskd.toml",
        &format!(
            "[server]\nworkers = 2\nservers_csv = \"servers.csv\"\nself_ip = [\"127.0.0.1\", \"127.0.0.2\"]\n[scheduler]\npolicy = \"sjf\"\n{TCP}"
        ),
    );
    // Written in reverse so directory order is not lexical order by luck.
    write(
        d,
        "conf.d/20-b.toml",
        "[server]\nworkers = 4\n[[listener]]\nproto = \"udp\"\naddress = \"127.0.0.1:7701\"\n",
    );
    write(
        d,
        "conf.d/10-a.toml",
        "[server]\nworkers = 3\nself_ip = [\"127.0.0.3\"]\n[[listener]]\nproto = \"http\"\naddress = \"127.0.0.1:7780\"\n",
    );
    write(d, "conf.d/30-c.toml.bak", "this is not toml");
    write(d, "conf.d/.hidden.toml", "this is not toml");
    write(d, "conf.d/README", "nor this");
    fs::create_dir(d.join("conf.d/dir.toml")).unwrap();
    let cfg = load(Some(&main), &no_env).unwrap();
    assert_eq!(
        cfg.sources,
        [
            main.clone(),
            d.join("conf.d/10-a.toml"),
            d.join("conf.d/20-b.toml")
        ]
    );
    assert_eq!(cfg.server.workers, 4, "the later drop-in wins");
    assert_eq!(cfg.scheduler.policy, Policy::Sjf, "untouched keys stay");
    assert_eq!(
        cfg.server.self_ip,
        ["127.0.0.3".parse::<IpAddr>().unwrap()],
        "arrays are replaced"
    );
    let keys: Vec<_> = cfg.listeners.iter().map(listener_key).collect();
    assert_eq!(
        keys,
        [
            (Proto::Tcp, sa("127.0.0.1:7700")),
            (Proto::Http, sa("127.0.0.1:7780")),
            (Proto::Udp, sa("127.0.0.1:7701")),
            (Proto::Tcp, sa("127.0.0.3:7802")),
        ]
    );
    assert_eq!(
        cfg.listeners[1].origin,
        format!("{}:4", d.join("conf.d/10-a.toml").display())
    );
}

#[test]
fn errors_in_drop_ins_name_the_drop_in() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    let main = write(d, "taskd.toml", &format!("[server]\nworkers = 2\n{TCP}"));
    write(
        d,
        "conf.d/10-x.toml",
        "# comment\n\n[server]\nwrokers = 3\n[limits]\nmax_values = 0\n",
    );
    let e = load(Some(&main), &no_env).unwrap_err();
    let x = d.join("conf.d/10-x.toml").display().to_string();
    assert_has(
        &e.messages,
        &[&format!("{x}:4: unknown key `wrokers` in [server]")],
    );
    assert_has(&e.messages, &[&format!("{x}:6:"), "`max_values`"]);
    assert_eq!(e.messages.len(), 2, "{e}");
}

#[test]
fn duplicate_listener_names_both_origins() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    let main = write(d, "taskd.toml", &format!("\n{TCP}"));
    write(
        d,
        "conf.d/10-x.toml",
        &format!("[metrics]\nper_user = true\n{TCP}"),
    );
    let e = load(Some(&main), &no_env).unwrap_err();
    let x = d.join("conf.d/10-x.toml").display().to_string();
    assert_has(
        &e.messages,
        &[
            &format!("{x}:3: duplicate listener tcp 127.0.0.1:7700"),
            &format!("{}:2", main.display()),
        ],
    );
}

#[test]
fn paths_resolve_against_the_right_folders() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    let main = write(
        d,
        "taskd.toml",
        "[server]\nstate_dir = \"state\"\n[results_log]\npath = \"logs/results.log\"\n",
    );
    // Named in a drop-in, still relative to the main file's folder.
    write(
        d,
        "conf.d/10-tls.toml",
        "[server]\nservers_csv = \"servers.csv\"\n[[listener]]\nproto = \"tls\"\naddress = \"127.0.0.1:7743\"\ncert = \"c.pem\"\nkey = \"./k.pem\"\nclient_ca = \"/etc/ca.pem\"\n",
    );
    write(d, "servers.csv", "127.0.0.1,7700\n");
    let cfg = load(Some(&main), &no_env).unwrap();
    assert_eq!(cfg.server.state_dir, d.join("state"));
    assert_eq!(cfg.results_log.path, Some(d.join("logs/results.log")));
    assert_eq!(cfg.server.servers_csv, Some(d.join("servers.csv")));
    let tls = &cfg.listeners[0];
    assert_eq!(tls.cert, Some(d.join("c.pem")));
    assert_eq!(tls.key, Some(d.join("k.pem")));
    assert_eq!(tls.client_ca, Some(PathBuf::from("/etc/ca.pem")));

    let env = |k: &str| match k {
        "STATE_DIRECTORY" => Some(OsString::from("/var/lib/taskd:/var/lib/other")),
        "LOGS_DIRECTORY" => Some(OsString::from("/var/log/taskd")),
        _ => None,
    };
    let cfg = load(Some(&main), &env).unwrap();
    assert_eq!(cfg.server.state_dir, Path::new("/var/lib/taskd/state"));
    assert_eq!(
        cfg.results_log.path,
        Some(PathBuf::from("/var/log/taskd/logs/results.log"))
    );
    assert_eq!(
        cfg.server.servers_csv,
        Some(d.join("servers.csv")),
        "not affected by the env"
    );

    // Defaults: state_dir is the base itself, the log file inside it.
    let main = write(d, "taskd.toml", "[results_log]\n");
    let cfg = load(Some(&main), &env).unwrap();
    assert_eq!(cfg.server.state_dir, Path::new("/var/lib/taskd"));
    assert_eq!(
        cfg.results_log.path,
        Some(PathBuf::from("/var/log/taskd/results.log"))
    );

    // Absolute paths are used as is; "" turns the log off.
    let main = write(
        d,
        "taskd.toml",
        "[server]\nstate_dir = \"/srv/state\"\n[results_log]\npath = \"\"\n",
    );
    let cfg = load(Some(&main), &env).unwrap();
    assert_eq!(cfg.server.state_dir, Path::new("/srv/state"));
    assert_eq!(cfg.results_log.path, None);
}

/// Loads a config whose listeners all come from `csv`.
fn load_csv(csv: &str, server_extra: &str) -> (TempDir, Result<Config, ConfigError>) {
    let dir = TempDir::new().unwrap();
    write(dir.path(), "servers.csv", csv);
    let main = write(
        dir.path(),
        "taskd.toml",
        &format!("[server]\nservers_csv = \"servers.csv\"\n{server_extra}"),
    );
    let r = load(Some(&main), &no_env);
    (dir, r)
}

#[test]
fn servers_csv_rows_this_host_serves() {
    let csv = "# the seed's list\nIP, port, proto\n\n127.0.0.1,7700\n  # indented comment\n127.0.0.1 , 7701 , tcp\n127.0.0.1,7702,UDP\n192.0.2.1,7700,both\n[::1],1,tcp\n";
    // "[::1]" is malformed: csv rows name bare addresses.
    let (dir, r) = load_csv(csv, "");
    let e = r.unwrap_err();
    let name = dir.path().join("servers.csv").display().to_string();
    assert_has(
        &e.messages,
        &[&format!("{name}:9:"), "`[::1]` is not an IP address"],
    );
    assert_eq!(e.messages.len(), 1, "{e}");

    let csv = csv.replace("[::1],1,tcp\n", "");
    let (dir, r) = load_csv(&csv, "");
    let cfg = r.unwrap();
    let name = dir.path().join("servers.csv").display().to_string();
    let got: Vec<_> = cfg
        .listeners
        .iter()
        .map(|l| (l.proto, l.address, l.origin.clone()))
        .collect();
    let origin = |line: u32| format!("{name}:{line} (servers.csv)");
    assert_eq!(
        got,
        [
            (Proto::Tcp, sa("127.0.0.1:7700"), origin(4)),
            (Proto::Udp, sa("127.0.0.1:7700"), origin(4)),
            (Proto::Tcp, sa("127.0.0.1:7701"), origin(6)),
            (Proto::Udp, sa("127.0.0.1:7702"), origin(7)),
        ]
    );
}

#[test]
fn servers_csv_self_ip_filter() {
    let csv = "127.0.0.1,7700,tcp\n127.0.0.2,7700,tcp\n192.0.2.1,7700,tcp\n";
    let (_dir, r) = load_csv(csv, "self_ip = [\"127.0.0.2\", \"192.0.2.1\"]\n");
    let keys: Vec<_> = r.unwrap().listeners.iter().map(listener_key).collect();
    assert_eq!(
        keys,
        [
            (Proto::Tcp, sa("127.0.0.2:7700")),
            (Proto::Tcp, sa("192.0.2.1:7700"))
        ]
    );
}

#[test]
fn servers_csv_errors() {
    let (dir, r) = load_csv("ip,port\n127.0.0.1,7700,sctp\n127.0.0.1\n127.0.0.1,0\n", "");
    let e = r.unwrap_err();
    let name = dir.path().join("servers.csv").display().to_string();
    assert_has(
        &e.messages,
        &[&format!("{name}:2:"), "proto must be tcp, udp or both"],
    );
    assert_has(
        &e.messages,
        &[&format!("{name}:3:"), "expected ip,port[,proto], found 1 fields"],
    );
    assert_has(&e.messages, &[&format!("{name}:4:"), "`0` is not a port"]);

    let (dir, r) = load_csv("192.0.2.1,7700\n", "");
    let name = dir.path().join("servers.csv").display().to_string();
    assert_has(&r.unwrap_err().messages, &[&name, "no row served"]);

    let (_dir, r) = load_csv("127.0.0.1,7700\n", "self_ip = [\"10.9.9.9\"]\n");
    assert_has(&r.unwrap_err().messages, &["no row served", "self_ip"]);

    let dir = TempDir::new().unwrap();
    let main = write(
        dir.path(),
        "taskd.toml",
        "[server]\n\nservers_csv = \"missing.csv\"\n",
    );
    let e = load(Some(&main), &no_env).unwrap_err();
    assert_has(&e.messages, &["taskd.toml:3:", "missing.csv", "cannot read"]);

    let errs = errors(&format!("[server]\nself_ip = [\"127.0.0.1\"]\n{TCP}"));
    assert_has(
        &errs,
        &[
            "taskd.toml:2:",
            "`self_ip` in [server] has no effect without `servers_csv`",
        ],
    );
}

#[test]
fn csv_and_toml_duplicates_are_errors() {
    let (dir, r) = load_csv("127.0.0.1,7700,tcp\n", &format!("\n{TCP}"));
    let e = r.unwrap_err();
    let csv = dir.path().join("servers.csv").display().to_string();
    assert_has(
        &e.messages,
        &[
            &format!("{csv}:1 (servers.csv): duplicate listener tcp 127.0.0.1:7700"),
            "taskd.toml:4",
        ],
    );
}

/// Everything but where it came from.
fn same(a: &Config, b: &Config) {
    let strip = |c: &Config| {
        let mut c = c.clone();
        c.sources.clear();
        c.resolved_against = ResolvedAgainst {
            main_dir: PathBuf::new(),
            state_directory: None,
            logs_directory: None,
        };
        c.listeners.iter_mut().for_each(|l| l.origin.clear());
        c
    };
    assert_eq!(strip(a), strip(b));
}

#[test]
fn render_loads_back_to_the_same_config() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    write(d, "servers.csv", CSV);
    let main = write(d, "taskd.toml", FULL);
    write(
        d,
        "conf.d/10-x.toml",
        "[limits]\nmax_users = 7\n[ops.max]\nenabled = false\n",
    );
    let env = |k: &str| (k == "STATE_DIRECTORY").then(|| OsString::from("/var/lib/taskd"));
    let cfg = load(Some(&main), &env).unwrap();
    let text = render(&cfg);
    assert!(text.contains("# From "), "{text}");
    assert!(
        text.contains("(servers.csv), imported through servers_csv"),
        "{text}"
    );

    // Loaded from elsewhere, without the env: resolved paths are absolute.
    let other = TempDir::new().unwrap();
    let again = write(other.path(), "taskd.toml", &text);
    let back = load(Some(&again), &no_env).unwrap_or_else(|e| panic!("{e}\n{text}"));
    same(&cfg, &back);

    // The embedded default too, and with idle timeout "never" and no log.
    let embedded = load_main(load::Main::Embedded, &no_env).unwrap();
    let text = render(&embedded);
    let again = write(other.path(), "taskd.toml", &text);
    same(&embedded, &load(Some(&again), &no_env).unwrap());
}

#[test]
fn config_error_display_has_one_message_per_line() {
    let e = ConfigError {
        messages: vec!["a:1: x".into(), "b:2: y".into()],
    };
    assert_eq!(e.to_string(), "a:1: x\nb:2: y");
}

#[test]
fn op_limit_falls_back_to_the_spec_default() {
    let (_dir, mut cfg) = ok(TCP);
    cfg.ops.clear();
    assert_eq!(cfg.op_limit(pi(), "udp_max_samples"), 10_000_000);
    assert!(!cfg.op_enabled(pi()));
}

#[test]
fn an_empty_configuration_says_listeners_have_no_default() {
    for text in ["", "\n", "# only a comment\n\n"] {
        let errs = errors(text);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_has(
            &errs,
            &[
                "taskd.toml: the configuration is empty",
                "every key has a default except the listeners",
                "[[listener]]",
            ],
        );
    }
    // Not empty, still no listener: the usual words, with the same advice.
    assert_has(
        &errors("[limits]\nmax_values = 10\n"),
        &[
            "no listener configured",
            "every key has a default except the listeners",
        ],
    );
}

#[test]
fn servers_csv_without_rows_says_so() {
    let (dir, r) = load_csv("# nothing yet\nip,port,proto\n", "");
    let name = dir.path().join("servers.csv").display().to_string();
    let e = r.unwrap_err();
    assert_has(
        &e.messages,
        &[&name, "no row to serve: the file has no ip,port row"],
    );
    assert!(!e.to_string().contains("0 rows"), "{e}");
    let (_dir, r) = load_csv("192.0.2.1,7700\n", "");
    assert_has(
        &r.unwrap_err().messages,
        &["the address of none of its 1 row is on this host"],
    );
    let (_dir, r) = load_csv("192.0.2.1,7700\n198.51.100.1,7700\n", "");
    assert_has(&r.unwrap_err().messages, &["none of its 2 rows"]);
}

#[test]
fn render_says_which_environment_paths_were_resolved_against() {
    let (dir, cfg) = ok(TCP);
    let text = render(&cfg);
    let d = dir.path().display().to_string();
    assert!(
        text.contains(&format!(
            "#   state_dir: $STATE_DIRECTORY not set, so the configuration's folder {d}"
        )),
        "{text}"
    );
    assert!(text.contains("taskd.service sets $STATE_DIRECTORY"), "{text}");

    let main = write(dir.path(), "taskd.toml", TCP);
    let env = |k: &str| match k {
        "STATE_DIRECTORY" => Some(OsString::from("/var/lib/taskd")),
        "LOGS_DIRECTORY" => Some(OsString::from("/var/log/taskd")),
        _ => None,
    };
    let text = render(&load(Some(&main), &env).unwrap());
    assert!(
        text.contains("#   state_dir: $STATE_DIRECTORY = /var/lib/taskd"),
        "{text}"
    );
    assert!(
        text.contains("#   results_log.path: $LOGS_DIRECTORY = /var/log/taskd"),
        "{text}"
    );
    assert!(!text.contains("taskd.service sets"), "{text}");
    assert!(text.contains("path = \"/var/log/taskd/results.log\""), "{text}");
}
