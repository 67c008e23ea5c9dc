//! Mutual TLS: a client certificate is required, and the user a request
//! counts for is the certificate's name — over the line protocol and over
//! HTTPS; clients without a certificate, or with one of another CA or a
//! self-signed one, are refused and counted.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::sync::Arc;

use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair};
use serde_json::json;

use crate::common::client::parse_users;
use crate::common::http::{HttpConn, http_get};
use crate::common::tls::{
    Ca, Leaf, client_config, info_of, launch_tls, line_tls, refused_exchange, tls_connect, tls_failures,
};

/// The request counts of a `users` reply, by name.
fn user_counts(reply: &str) -> HashMap<String, u64> {
    parse_users(reply).into_iter().collect()
}

#[test]
fn mutual_tls_attributes_requests_to_the_certificate_and_refuses_others() {
    let ca = Ca::new("server CA");
    let clients = Ca::new("clients CA");
    let d = launch_tls("tls", &ca, Some(&clients), "").start();
    let roots = [ca.der()];

    // The first DNS SAN names the user, and is the identity: another
    // @user is denied (allow_user_override is off by default).
    let seven = clients.client(&["client-7", "second-name"], Some("cn-ignored"));
    let mut c7 = line_tls(d.tcp, client_config(&roots, Some(&seven)));
    assert_eq!(c7.ask("sum 1 2"), "OK 3");
    let denied = c7.ask("#b @bob sum 1 2");
    assert!(denied.starts_with("#b ERR denied "), "{denied}");
    assert_eq!(c7.ask("@client-7 sum 1 2"), "OK 3");
    let users = user_counts(&c7.ask("users"));
    assert_eq!(
        users.get("client-7"),
        Some(&3),
        "two sums and users itself: {users:?}"
    );
    assert_eq!(users.get("bob"), None, "{users:?}");
    assert!(!users.contains_key("anonymous"), "{users:?}");
    let failures_before = tls_failures(&info_of(&mut c7));

    // No client certificate: the handshake fails.
    let got = refused_exchange(d.tcp, client_config(&roots, None));
    assert!(got.is_err(), "a client without a certificate was served: {got:?}");
    // A certificate of another CA: refused too.
    let stranger = Ca::new("someone else").client(&["client-7"], None);
    let got = refused_exchange(d.tcp, client_config(&roots, Some(&stranger)));
    assert!(
        got.is_err(),
        "a certificate of a foreign CA was accepted: {got:?}"
    );
    // A self-signed client certificate with the right name: refused.
    let mut p = CertificateParams::new(vec!["client-7".to_string()]).expect("params");
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate().expect("key");
    let selfsigned = Leaf {
        cert: p.self_signed(&key).expect("self-signed"),
        key,
    };
    let got = refused_exchange(d.tcp, client_config(&roots, Some(&selfsigned)));
    assert!(got.is_err(), "a self-signed certificate was accepted: {got:?}");

    // The daemon keeps serving: the old connection and new ones.
    assert_eq!(c7.ask("ping"), "OK pong");
    let info = info_of(&mut c7);
    assert!(
        tls_failures(&info) >= failures_before + 3,
        "three refused handshakes, tls_failures {} -> {}",
        failures_before,
        tls_failures(&info)
    );
    assert!(tls_failures(&info) >= 1);

    // A certificate with only a CN counts for its CN.
    let alice = clients.client(&[], Some("alice"));
    let mut ca_client = line_tls(d.tcp, client_config(&roots, Some(&alice)));
    assert_eq!(ca_client.ask("max 1 2"), "OK 2");
    // A CN that is not a valid user name counts as anonymous.
    let odd = clients.client(&[], Some("not a user"));
    let mut odd_client = line_tls(d.tcp, client_config(&roots, Some(&odd)));
    assert_eq!(odd_client.ask("min 1 2"), "OK 1");
    // An IP address SAN is skipped for the first DNS name after it.
    let mut p = CertificateParams::new(vec!["10.0.0.9".to_string(), "client-9".to_string()]).expect("params");
    p.distinguished_name.push(DnType::CommonName, "cn-nine");
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let nine = clients.sign(&p);
    let mut nine_client = line_tls(d.tcp, client_config(&roots, Some(&nine)));
    assert_eq!(nine_client.ask("sum 9"), "OK 9");
    let users = user_counts(&ca_client.ask("users"));
    assert_eq!(users.get("client-9"), Some(&1), "{users:?}");
    assert!(!users.contains_key("cn-nine"), "{users:?}");
    assert_eq!(users.get("alice"), Some(&2), "max and users: {users:?}");
    assert_eq!(users.get("anonymous"), Some(&1), "{users:?}");
    assert_eq!(
        users.get("client-7"),
        Some(&6),
        "two sums, users, info, ping, info: {users:?}"
    );
    assert!(!users.contains_key("not a user"), "{users:?}");
}

#[test]
fn https_with_mutual_tls_counts_requests_for_the_certificate_user() {
    let ca = Ca::new("server CA");
    let clients = Ca::new("clients CA");
    let d = launch_tls("https", &ca, Some(&clients), "").start();
    let client = clients.client(&["client-7"], Some("ignored-cn"));
    let mut r = HttpConn::over(tls_connect(d.tcp, client_config(&[ca.der()], Some(&client))));
    let resp = r.ask(http_get("/v1/sum?values=1,2"));
    assert_eq!(
        (resp.status, resp.json()),
        (200, json!({"ok": true, "result": 3}))
    );
    // The certificate is the identity: naming someone else is denied.
    let resp = r.ask(http_get("/v1/sum?values=1,2&username=bob"));
    assert_eq!(resp.status, 403, "{}", resp.text());
    assert_eq!(resp.json()["error"], "denied");
    let resp = r.ask(http_get("/v1/sum?values=1,2&username=client-7"));
    assert_eq!(resp.status, 200, "{}", resp.text());
    let resp = r.ask(http_get("/statistics"));
    assert_eq!(resp.status, 200, "{}", resp.text());
    let mut stats: Vec<(String, u64)> = resp
        .json()
        .as_array()
        .expect("an array")
        .iter()
        .map(|u| {
            (
                u["username"].as_str().expect("username").to_string(),
                u["request_count"].as_u64().expect("request_count"),
            )
        })
        .collect();
    stats.sort();
    assert_eq!(stats, vec![("client-7".to_string(), 2)]);

    // Without a client certificate there is no HTTP at all.
    let mut config = (*client_config(&[ca.der()], None)).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let mut bare = BufReader::new(tls_connect(d.tcp, Arc::new(config)));
    let sent = bare
        .get_mut()
        .write_all(http_get("/healthz").as_bytes())
        .and_then(|_| bare.get_mut().flush());
    if sent.is_ok() {
        let mut line = String::new();
        let got = bare.read_line(&mut line);
        assert!(
            got.is_err(),
            "a client without a certificate read {got:?}: {line:?}"
        );
    }
}

#[test]
fn allow_user_override_lets_a_certificate_speak_for_others() {
    let ca = Ca::new("server CA");
    let clients = Ca::new("clients CA");
    let d = launch_tls("tls", &ca, Some(&clients), "allow_user_override = true").start();
    let seven = clients.client(&["client-7"], None);
    let mut c7 = line_tls(d.tcp, client_config(&[ca.der()], Some(&seven)));
    assert_eq!(c7.ask("@bob sum 1 2"), "OK 3");
    assert_eq!(c7.ask("sum 1 2"), "OK 3");
    let users = user_counts(&c7.ask("users"));
    assert_eq!(users.get("bob"), Some(&1), "{users:?}");
    assert_eq!(users.get("client-7"), Some(&2), "sum and users itself: {users:?}");
}
