//! Certificates: missing or unusable files are configuration errors at
//! start and for `--check-config`; SIGHUP reloads them, and a broken one
//! keeps the old.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use crate::common::daemon::{BIN, Launch};
use crate::common::proc::run_to_exit;
use crate::common::tls::{
    Ca, client_config, info_of, line_tls, refused_exchange, server_cert, server_files, tls_listener,
};
use crate::common::{free_port, wait_until};

/// taskd run with `args` and `--config config` in the config's folder,
/// which must exit by itself: its exit code and its output.
fn run(args: &[&str], config: &Path) -> (Option<i32>, String) {
    let dir = config.parent().expect("config folder");
    let r = run_to_exit(
        Command::new(BIN)
            .args(args)
            .arg("--config")
            .arg(config)
            .current_dir(dir)
            .env("RUST_LOG", "info"),
        dir,
        Duration::from_secs(20),
    );
    (r.code, r.output())
}

/// A directory with a TLS listener configuration whose files are `files`
/// (relative to it); the config file's path.
fn config_with(dir: &Path, files: &[(&str, String)], listener: &str) -> PathBuf {
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("create folders");
        std::fs::write(&path, text).expect("write a file");
    }
    let config = dir.join("taskd.toml");
    std::fs::write(&config, listener).expect("write config");
    config
}

#[test]
fn a_missing_certificate_file_is_a_configuration_error() {
    let ca = Ca::new("test CA");
    let server = ca.server("s");
    let dir = tempfile::tempdir().expect("temporary folder");
    let port = free_port().expect("a free port");
    let listener = format!(
        "[[listener]]\nproto = \"tls\"\naddress = \"127.0.0.1:{port}\"\n\
         cert = \"tls/missing-cert.pem\"\nkey = \"tls/server.key\"\n"
    );
    let config = config_with(dir.path(), &[("tls/server.key", server.key_pem())], &listener);

    let (code, out) = run(&[], &config);
    assert_eq!(code, Some(1), "start: {out}");
    assert!(out.contains("missing-cert.pem"), "the file is named: {out}");

    let (code, out) = run(&["--check-config"], &config);
    assert_eq!(code, Some(1), "--check-config: {out}");
    assert!(out.contains("missing-cert.pem"), "the file is named: {out}");
    let (code, out) = run(&["--check-config", "--quiet"], &config);
    assert_eq!(code, Some(1), "--check-config --quiet: {out}");

    // The same for a missing client_ca.
    let listener = format!(
        "[[listener]]\nproto = \"https\"\naddress = \"127.0.0.1:{port}\"\n\
         cert = \"tls/server.pem\"\nkey = \"tls/server.key\"\nclient_ca = \"nope-ca.pem\"\n"
    );
    let config = config_with(
        dir.path(),
        &[
            ("tls/server.pem", server.cert_pem()),
            ("tls/server.key", server.key_pem()),
        ],
        &listener,
    );
    let (code, out) = run(&["--check-config"], &config);
    assert_eq!(code, Some(1), "--check-config: {out}");
    assert!(out.contains("nope-ca.pem"), "the file is named: {out}");
}

#[test]
fn unusable_certificates_and_keys_are_configuration_errors() {
    let ca = Ca::new("test CA");
    let server = ca.server("s");
    let other = ca.server("other");
    let dir = tempfile::tempdir().expect("temporary folder");
    let port = free_port().expect("a free port");
    let listener = format!(
        "[[listener]]\nproto = \"tls\"\naddress = \"127.0.0.1:{port}\"\n\
         cert = \"cert.pem\"\nkey = \"key.pem\"\n"
    );
    let cases: [(&str, String, String, &str); 4] = [
        // A key that is not the certificate's.
        ("mismatched key", server.cert_pem(), other.key_pem(), "cert.pem"),
        // Not PEM at all.
        (
            "garbage cert",
            "not a certificate\n".to_string(),
            server.key_pem(),
            "cert.pem",
        ),
        // A key file holding a certificate.
        ("no key", server.cert_pem(), server.cert_pem(), "key.pem"),
        // Both swapped.
        ("swapped", server.key_pem(), server.cert_pem(), "cert.pem"),
    ];
    for (what, cert, key, named) in cases {
        let config = config_with(dir.path(), &[("cert.pem", cert), ("key.pem", key)], &listener);
        let (code, out) = run(&["--check-config", "--quiet"], &config);
        assert_eq!(code, Some(1), "{what}: --check-config: {out}");
        assert!(out.contains(named), "{what}: {named} is named: {out}");
        let (code, out) = run(&[], &config);
        assert_eq!(code, Some(1), "{what}: start: {out}");
    }
    // And the good pair passes.
    let config = config_with(
        dir.path(),
        &[("cert.pem", server.cert_pem()), ("key.pem", server.key_pem())],
        &listener,
    );
    let (code, out) = run(&["--check-config", "--quiet"], &config);
    assert_eq!(code, Some(0), "good certificate: {out}");
}

#[test]
fn sighup_reloads_certificates_and_a_broken_one_keeps_the_old() {
    let ca1 = Ca::new("first CA");
    let ca2 = Ca::new("second CA");
    let first = ca1.server("first");
    let d = Launch::config(|port| tls_listener("tls", port, false))
        .config_in("etc")
        .files(&server_files(&first, None))
        .start();
    let cert_path = d.dir.path().join("etc/tls/server.pem");
    let key_path = d.dir.path().join("etc/tls/server.key");
    let both = client_config(&[ca1.der(), ca2.der()], None);
    let only1 = client_config(&[ca1.der()], None);
    let only2 = client_config(&[ca2.der()], None);

    let mut kept = line_tls(d.tcp, Arc::clone(&only1));
    assert_eq!(kept.ask("ping"), "OK pong");
    assert_eq!(server_cert(&kept), first.der());

    // A broken certificate: the reload fails, the old one stays.
    std::fs::write(
        &cert_path,
        "-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n",
    )
    .expect("overwrite the certificate");
    d.send_signal(libc::SIGHUP);
    let ok = wait_until(Duration::from_secs(10), || {
        info_of(&mut line_tls(d.tcp, Arc::clone(&both)))["last_reload_ok"] == "false"
    });
    assert!(
        ok,
        "the reload with a broken certificate did not fail: {}",
        d.stderr()
    );
    let mut c = line_tls(d.tcp, Arc::clone(&only1));
    assert_eq!(c.ask("max 1 2"), "OK 2");
    assert_eq!(server_cert(&c), first.der(), "still the old certificate");
    assert_eq!(kept.ask("ping"), "OK pong", "an open connection is untouched");
    assert!(
        d.stderr().contains("server.pem"),
        "the log names the file: {}",
        d.stderr()
    );

    // A valid certificate of another CA: the reload succeeds and new
    // connections get it.
    let second = ca2.server("second");
    std::fs::write(&key_path, second.key_pem()).expect("write the key");
    std::fs::write(&cert_path, second.cert_pem()).expect("write the certificate");
    d.send_signal(libc::SIGHUP);
    let ok = wait_until(Duration::from_secs(10), || {
        info_of(&mut line_tls(d.tcp, Arc::clone(&both)))["last_reload_ok"] == "true"
    });
    assert!(ok, "the reload with a valid certificate failed: {}", d.stderr());
    let mut c = line_tls(d.tcp, Arc::clone(&only2));
    assert_eq!(c.ask("max 1 2"), "OK 2");
    assert_eq!(server_cert(&c), second.der(), "the new certificate");
    let got = refused_exchange(d.tcp, only1);
    assert!(
        got.is_err(),
        "a client trusting only the old CA was served: {got:?}"
    );
    // The connection opened before the reload keeps its session.
    assert_eq!(kept.ask("ping"), "OK pong");
}
