//! The HTTP API inside TLS (`proto = "https"`): ALPN, keep-alive,
//! pipelining and a clean TLS end after `Connection: close`.

use serde_json::json;

use crate::common::http::{http_get, http_post};
use crate::common::tls::{Ca, client_config, https_connect, launch_tls};

#[test]
fn https_serves_the_api_over_one_keep_alive_connection() {
    let ca = Ca::new("test CA");
    let d = launch_tls("https", &ca, None, "").start();
    let mut r = https_connect(d.tcp, &client_config(&[ca.der()], None));

    let resp = r.ask(http_get("/v1/max?values=1,2,3"));
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.header("content-type"), Some("application/json"));
    assert_eq!(resp.json(), json!({"ok": true, "result": 3}));
    assert_eq!(r.get_ref().conn.alpn_protocol(), Some(&b"http/1.1"[..]));

    let resp = r.ask(http_post("/v1/sum", r#"{"id": "s1", "values": [1, 2, 3.5]}"#));
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json(), json!({"id": "s1", "ok": true, "result": 6.5}));

    let resp = r.ask(http_get("/healthz"));
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json(), json!({"status": "ok"}));

    // Pipelined: both requests in one write, answered in order.
    r.send(format!(
        "{}{}",
        http_get("/v1/min?values=4,-2"),
        http_get("/nowhere")
    ));
    let a = r.response();
    assert_eq!((a.status, a.json()), (200, json!({"ok": true, "result": -2})));
    let b = r.response();
    assert_eq!(b.status, 404, "{}", b.text());
    assert_eq!(b.json()["error"], "not-found");

    // Still the same connection, still usable.
    let resp = r.ask(http_get("/v1/ping"));
    assert_eq!(
        (resp.status, resp.json()),
        (200, json!({"ok": true, "result": "pong"}))
    );

    // `Connection: close`: the response, then a clean TLS end.
    let resp = r.ask("GET /v1/max?values=7 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    assert_eq!(
        (resp.status, resp.json()),
        (200, json!({"ok": true, "result": 7}))
    );
    match r.read_rest() {
        Ok(rest) => assert!(rest.is_empty(), "bytes after the last response: {rest:?}"),
        Err(e) => panic!("the connection ended without the daemon's close_notify: {e}"),
    }
}
