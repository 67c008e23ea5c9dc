//! The HTTP API against the real binary (taskd(8), HTTP API): every endpoint,
//! every error status and which of them close the connection, keep-alive,
//! pipelining, a slow client beside a normal one, the SIGTERM drain,
//! `/metrics` in the Prometheus text format, and arbitrary bytes.
//!
//! Well-formed requests go through a real HTTP client (ureq); malformed,
//! pipelined and connection-level cases through a raw TcpStream.

mod common;

use std::cell::Cell;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use common::{Daemon, HttpConn, HttpResponse, Launch, http_config, http_get, http_post, wait_until};
use serde_json::{Value, json};

// ---------------------------------------------------------------- clients

/// A real HTTP client (ureq) on one daemon; error statuses are answers,
/// not errors.
struct Api {
    agent: ureq::Agent,
    base: String,
}

impl Api {
    fn new(port: u16) -> Api {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        Api {
            agent,
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    fn of(d: &Daemon) -> Api {
        Api::new(d.port)
    }

    fn get(&self, path: &str) -> HttpResponse {
        response(self.agent.get(format!("{}{path}", self.base)).call(), path)
    }

    fn post(&self, path: &str, body: &str) -> HttpResponse {
        let r = self
            .agent
            .post(format!("{}{path}", self.base))
            .header("Content-Type", "application/json")
            .send(body);
        response(r, path)
    }

    fn put(&self, path: &str) -> HttpResponse {
        response(self.agent.put(format!("{}{path}", self.base)).send_empty(), path)
    }

    fn delete(&self, path: &str) -> HttpResponse {
        response(self.agent.delete(format!("{}{path}", self.base)).call(), path)
    }
}

/// A ureq response as an [`HttpResponse`].
fn response(r: Result<ureq::http::Response<ureq::Body>, ureq::Error>, path: &str) -> HttpResponse {
    let mut r = r.unwrap_or_else(|e| panic!("{path}: {e}"));
    let headers = r
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or_default().to_string()))
        .collect();
    HttpResponse {
        version: format!("{:?}", r.version()),
        status: r.status().as_u16(),
        headers,
        body: r.body_mut().read_to_vec().expect("response body"),
    }
}

// ---------------------------------------------------------------- checks

/// A 200 with a JSON body; returns the body.
fn ok_json(r: &HttpResponse, what: &str) -> Value {
    assert_eq!(r.status, 200, "{what}: {r:?} {}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"), "{what}");
    r.json()
}

/// `{"id"?, "ok": true, "result": …}`; returns the result.
fn ok_result(r: &HttpResponse, what: &str) -> Value {
    let v = ok_json(r, what);
    assert_eq!(v["ok"], json!(true), "{what}: {v}");
    v["result"].clone()
}

/// An error response of taskd(8)'s HTTP API: the status, `application/json`, and a
/// body of exactly `ok: false`, `error`, a non-empty `message` (and the
/// request's `id`, when it had one).
fn assert_error(r: &HttpResponse, status: u16, code: &str, what: &str) {
    assert_eq!(r.status, status, "{what}: {}", r.text());
    assert_eq!(
        r.header("content-type"),
        Some("application/json"),
        "{what}: {r:?}"
    );
    let v = r.json();
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("{what}: not an object: {v}"));
    assert_eq!(obj.get("ok"), Some(&json!(false)), "{what}: {v}");
    assert_eq!(obj.get("error"), Some(&json!(code)), "{what}: {v}");
    assert!(
        obj.get("message")
            .and_then(Value::as_str)
            .is_some_and(|m| !m.is_empty()),
        "{what}: {v}"
    );
    for k in obj.keys() {
        assert!(
            ["id", "ok", "error", "message"].contains(&k.as_str()),
            "{what}: key {k} in {v}"
        );
    }
}

/// Whether a raw connection was closed by the daemon after its last response.
fn assert_closed(c: &mut HttpConn, what: &str) {
    c.set_read_timeout(Duration::from_secs(10));
    assert!(c.closed(), "{what}: the connection stayed open");
}

fn as_f64(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

// ---------------------------------------------------------------- endpoints

#[test]
fn pi_endpoint_and_its_defaults() {
    let d = Launch::http("").start();
    let api = Api::of(&d);
    let r = api.get("/pi?simulations=100000&concurrency=2");
    let v = ok_json(&r, "/pi");
    let keys: Vec<&str> = v
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys.len(), 4, "{v}");
    let pi = as_f64(&v["pi"]);
    assert!((3.0..3.3).contains(&pi), "{v}");
    assert_eq!(v["simulations"], json!(100000), "{v}");
    assert_eq!(v["concurrency"], json!(2), "{v}");
    assert!(as_f64(&v["elapsed_s"]) >= 0.0, "{v}");

    let v = ok_json(&api.get("/pi"), "/pi defaults");
    assert_eq!(v["simulations"], json!(1_000_000), "{v}");
    assert_eq!(v["concurrency"], json!(1), "{v}");
    assert!((3.1..3.2).contains(&as_f64(&v["pi"])), "{v}");
}

#[test]
fn statistics_counts_named_users() {
    let d = Launch::http("").start();
    let api = Api::of(&d);
    let users = |api: &Api| -> Vec<(String, u64)> {
        let v = ok_json(&api.get("/statistics"), "/statistics");
        v.as_array()
            .unwrap_or_else(|| panic!("not an array: {v}"))
            .iter()
            .map(|e| {
                let o = e.as_object().expect("an object");
                assert_eq!(o.len(), 2, "{e}");
                let name = o["username"].as_str().expect("username").to_string();
                (name, o["request_count"].as_u64().expect("request_count"))
            })
            .collect()
    };
    assert_eq!(users(&api), []);

    for _ in 0..2 {
        let r = api.get("/pi?simulations=1000&concurrency=1&username=1111");
        ok_json(&r, "/pi with a username");
    }
    assert_eq!(users(&api), [("1111".to_string(), 2)]);

    // /v1 counts too, by query string or body; errors before the op does
    // not, and neither do the fixed endpoints.
    ok_result(&api.get("/v1/max?values=1,2&username=1111"), "max");
    ok_result(&api.post("/v1/sum", r#"{"user": "1111", "values": [1]}"#), "sum");
    ok_result(&api.get("/v1/min?values=3&username=alice"), "min");
    ok_result(&api.get("/v1/min?values=3&username=Zed"), "min");
    assert_error(&api.get("/v1/nosuch?username=1111"), 404, "unknown-op", "nosuch");
    assert_error(
        &api.get("/v1/max?values=1,x&username=1111"),
        400,
        "parse",
        "bad value",
    );
    // An empty list is counted, as every code but those taskd(8)'s ERRORS lists.
    assert_error(&api.get("/v1/max?values=&username=Zed"), 400, "empty", "empty");
    for path in ["/healthz", "/metrics", "/statistics"] {
        assert_eq!(api.get(path).status, 200, "{path}");
    }
    // Sorted by the names' bytes.
    assert_eq!(
        users(&api),
        [("1111".to_string(), 4), ("Zed".into(), 2), ("alice".into(), 1)]
    );
}

#[test]
fn v1_get_answers_the_json_reply() {
    let d = Launch::http("").start();
    let api = Api::of(&d);
    let r = api.get("/v1/max?values=1,2,3&id=x");
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.status, 200);
    assert_eq!(r.text().trim_end(), r#"{"id":"x","ok":true,"result":3}"#);
    // An id from a query string is echoed as a JSON string, digits too.
    assert_eq!(
        api.get("/v1/sum?values=%5B1%2C%202%5D&id=7").json(),
        json!({"id": "7", "ok": true, "result": 3})
    );
    assert_eq!(ok_result(&api.get("/v1/mean?values=2+4"), "mean"), json!(3));
    assert_eq!(
        ok_result(&api.get("/v1/median?values=4,1,3,2"), "median"),
        json!(2.5)
    );
    assert_eq!(
        ok_result(&api.get("/v1/stats?values=7,8,54,89"), "stats"),
        json!({"count": 4, "min": 7, "max": 89, "mean": 39.5, "median": 31})
    );
    assert_eq!(
        ok_result(&api.get("/v1/sum?values=9223372036854775807,1"), "exact sum").to_string(),
        "9223372036854775808"
    );
    assert_eq!(ok_result(&api.get("/v1/ping"), "ping"), json!("pong"));
    let pi = ok_result(&api.get("/v1/pi?samples=10000&chunks=2"), "pi");
    assert_eq!(
        (&pi["samples"], &pi["chunks"]),
        (&json!(10000), &json!(2)),
        "{pi}"
    );
    assert!((2.9..3.4).contains(&as_f64(&pi["pi"])), "{pi}");
    assert!(ok_result(&api.get("/v1/users"), "users").is_array());
    assert!(ok_result(&api.get("/v1/info"), "info").is_object());
}

#[test]
fn v1_post_takes_a_json_body() {
    let d = Launch::http("").start();
    let api = Api::of(&d);
    assert_eq!(
        api.post("/v1/sum", r#"{"id": 7, "values": [1, 2, 3.5]}"#).json(),
        json!({"id": 7, "ok": true, "result": 6.5})
    );
    assert_eq!(
        ok_result(
            &api.post("/v1/sum", r#"{"op": "sum", "values": ["9007199254740993", 0]}"#),
            "sum"
        )
        .to_string(),
        "9007199254740993"
    );
    let pi = ok_result(&api.post("/v1/pi", r#"{"samples": 1000, "chunks": 2}"#), "pi");
    assert_eq!((&pi["samples"], &pi["chunks"]), (&json!(1000), &json!(2)), "{pi}");
    let r = api.post("/v1/max", r#"{"id": "a", "op": "min", "values": [1]}"#);
    assert_error(&r, 400, "parse", "body op mismatch");
    assert_eq!(r.json()["id"], json!("a"));
}

#[test]
fn healthz_and_metrics() {
    let d = Launch::http("").start();
    let api = Api::of(&d);
    let r = api.get("/healthz");
    assert_eq!(ok_json(&r, "/healthz"), json!({"status": "ok"}));
    let r = api.get("/metrics");
    assert_eq!(r.status, 200);
    let ct = r.header("content-type").unwrap_or_default();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    assert!(r.text().contains("# TYPE taskd_requests_total counter"));
}

/// What a Python client of the seed's Flask API sends.
#[test]
fn seed_flask_clients_work() {
    let d = Launch::http("").start();
    let api = Api::of(&d);
    let v = ok_json(
        &api.get("/pi?simulations=1000&concurrency=1&username=alice"),
        "seed /pi",
    );
    assert_eq!((&v["simulations"], &v["concurrency"]), (&json!(1000), &json!(1)));
    // The bytes python-requests writes for requests.get(url).
    let mut c = d.http();
    let r = c.ask(format!(
        "GET /pi?simulations=1000&concurrency=1&username=alice HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\
         User-Agent: python-requests/2.28.1\r\nAccept-Encoding: gzip, deflate\r\nAccept: */*\r\n\
         Connection: keep-alive\r\n\r\n",
        d.port
    ));
    let v = ok_json(&r, "python-requests /pi");
    assert!((2.5..3.8).contains(&as_f64(&v["pi"])), "{v}");
    assert_eq!(r.header("connection"), Some("keep-alive"));
    assert_eq!(r.header("content-encoding"), None);
    let stats = ok_json(&c.ask(http_get("/statistics")), "/statistics");
    assert_eq!(stats, json!([{"request_count": 2, "username": "alice"}]));
}

// ---------------------------------------------------------------- errors

/// Every error status of taskd(8)'s HTTP API a well-formed request can get, on a
/// listener with every op and one with `ops = ["max"]`.
#[test]
fn error_statuses_of_spec_2() {
    let second = Cell::new(0);
    let d = Launch::config(|port| {
        let p2 = common::free_port().expect("a free port");
        second.set(p2);
        format!(
            "{}[[listener]]\nproto = \"http\"\naddress = \"127.0.0.1:{p2}\"\nops = [\"max\"]\n\n\
             [limits]\nmax_values = 3\nmax_line_bytes = 1024\n",
            http_config(port, "")
        )
    })
    .start();
    let api = Api::of(&d);
    let gets = [
        ("/v1/max?values=1,x", 400, "parse"),
        ("/v1/max?values=1&bogus=2", 400, "parse"),
        ("/v1/max?id=a+b&values=1", 400, "parse"),
        ("/v1/pi?samples=1e6", 400, "parse"),
        ("/pi?simulations=1e6", 400, "parse"),
        ("/v1/ping?values=1", 400, "parse"),
        ("/v1/max", 400, "empty"),
        ("/v1/max?values=", 400, "empty"),
        ("/v1/pi?samples=0", 400, "range"),
        ("/v1/pi?samples=5&chunks=6", 400, "range"),
        ("/pi?simulations=0", 400, "range"),
        ("/v1/sum?values=1e308,1e308", 400, "range"),
        ("/v1/max?values=1,2,3,4", 413, "too-many"),
        ("/v1/max?values=x,y,z,w", 413, "too-many"),
        ("/v1/nosuch?values=1", 404, "unknown-op"),
        ("/v1/help", 404, "unknown-op"),
        ("/v1/quit", 404, "unknown-op"),
        ("/nosuch", 404, "not-found"),
        ("/", 404, "not-found"),
        ("/v1/max/extra", 404, "not-found"),
    ];
    for (path, status, code) in gets {
        assert_error(&api.get(path), status, code, &format!("GET {path}"));
    }
    let posts = [
        ("/v1/max", r#"{"op": "min", "values": [1]}"#, 400, "parse"),
        ("/v1/max", r#"{"values": [1,"#, 400, "parse"),
        ("/v1/max", r#"{"values": [1], "x": 2}"#, 400, "parse"),
        ("/v1/sum", r#"{"values": []}"#, 400, "empty"),
        ("/v1/pi", r#"{"samples": 0}"#, 400, "range"),
        ("/v1/max", r#"{"values": [1, 2, 3, 4]}"#, 413, "too-many"),
        ("/v1/nosuch", r#"{"values": [1]}"#, 404, "unknown-op"),
        ("/v1/quit", "{}", 404, "unknown-op"),
        ("/v1/help", "", 404, "unknown-op"),
    ];
    for (path, body, status, code) in posts {
        assert_error(
            &api.post(path, body),
            status,
            code,
            &format!("POST {path} {body}"),
        );
    }

    // Wrong methods: 405 with Allow.
    for (r, what, allow) in [
        (api.post("/healthz", ""), "POST /healthz", "GET, HEAD"),
        (api.post("/pi", ""), "POST /pi", "GET, HEAD"),
        (api.put("/metrics"), "PUT /metrics", "GET, HEAD"),
        (api.delete("/statistics"), "DELETE /statistics", "GET, HEAD"),
        (api.delete("/v1/max"), "DELETE /v1/max", "GET, HEAD, POST"),
    ] {
        assert_error(&r, 405, "method", what);
        let got: Vec<&str> = r
            .header("allow")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .collect();
        let want: Vec<&str> = allow.split(", ").collect();
        assert_eq!(got, want, "{what}");
    }

    // The listener with ops = ["max"]: other ops are denied, the fixed
    // endpoints ignore its ops.
    let only_max = Api::new(second.get());
    assert_error(&only_max.get("/v1/sum?values=1"), 403, "denied", "sum there");
    assert_error(
        &only_max.post("/v1/sum", r#"{"values": [1]}"#),
        403,
        "denied",
        "POST sum there",
    );
    assert_error(&only_max.get("/pi?simulations=10"), 403, "denied", "/pi there");
    assert_eq!(
        ok_result(&only_max.get("/v1/max?values=1,5"), "max there"),
        json!(5)
    );
    for path in ["/healthz", "/statistics", "/metrics"] {
        assert_eq!(only_max.get(path).status, 200, "{path} there");
    }
}

/// Errors that do not close: the connection answers what follows.
#[test]
fn errors_keep_the_connection_unless_spec_closes_it() {
    let d = Launch::http("[limits]\nmax_values = 3\n").start();
    let mut c = d.http();
    let requests = [
        http_get("/nosuch"),
        "DELETE /v1/max HTTP/1.1\r\nHost: x\r\n\r\n".to_string(),
        http_get("/v1/max"),
        http_get("/v1/max?values=1,2,3,4"),
        http_get("/v1/nosuch"),
        http_post("/v1/max", r#"{"op": "min"}"#),
        http_get("/healthz"),
    ];
    c.send(requests.concat());
    let want = [
        (404, "not-found"),
        (405, "method"),
        (400, "empty"),
        (413, "too-many"),
        (404, "unknown-op"),
        (400, "parse"),
    ];
    for (status, code) in want {
        let r = c.response();
        assert_error(&r, status, code, code);
        assert_eq!(r.header("connection"), Some("keep-alive"), "{code}");
    }
    assert_eq!(ok_json(&c.response(), "healthz"), json!({"status": "ok"}));
}

/// taskd(8), HTTP API: the connection is closed after a malformed request line, 411,
/// 413 and 431, and after both Content-Length and Transfer-Encoding.
#[test]
fn errors_that_close_the_connection() {
    let d = Launch::http("[limits]\nmax_line_bytes = 1024\n").start();
    let check = |request: Vec<u8>, status: u16, code: &str, what: &str| {
        let mut c = d.http();
        // A good request first: answered before the bad one.
        c.send([http_get("/healthz").into_bytes(), request].concat());
        assert_eq!(c.response().status, 200, "{what}: the request before");
        let r = c.response();
        assert_error(&r, status, code, what);
        assert_eq!(r.header("connection"), Some("close"), "{what}");
        assert_closed(&mut c, what);
    };

    // A body over max_line_bytes: 413, decided from its Content-Length.
    let body = format!("{{\"values\": [1, 2]}}{}", " ".repeat(2000));
    check(
        http_post("/v1/sum", &body).into_bytes(),
        413,
        "too-long",
        "body over max_line_bytes",
    );
    // One exactly at the limit is fine.
    let body = format!("{{\"values\": [1, 2]}}{}", " ".repeat(1024 - 18));
    assert_eq!(body.len(), 1024);
    assert_eq!(
        ok_result(&d.http().ask(http_post("/v1/sum", &body)), "1024 bytes"),
        json!(3)
    );

    let chunked = "POST /v1/sum HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
                   12\r\n{\"values\": [1, 2]}\r\n0\r\n\r\n";
    check(chunked.into(), 411, "length-required", "chunked body");
    let both = "POST /v1/sum HTTP/1.1\r\nHost: x\r\nContent-Length: 18\r\nTransfer-Encoding: chunked\r\n\r\n\
                {\"values\": [1, 2]}";
    check(both.into(), 400, "parse", "Content-Length and Transfer-Encoding");

    // Header limits: 64 fields pass, 65 do not; 16 KiB of head passes,
    // more does not.
    let with_headers = |n: usize| {
        let mut h = "GET /v1/max?values=1,2 HTTP/1.1\r\n".to_string();
        for i in 0..n {
            h.push_str(&format!("X-H{i}: v\r\n"));
        }
        h + "\r\n"
    };
    assert_eq!(ok_result(&d.http().ask(with_headers(64)), "64 headers"), json!(2));
    check(with_headers(65).into(), 431, "headers-too-large", "65 headers");
    let big = |n: usize| {
        format!(
            "GET /v1/max?values=1,2 HTTP/1.1\r\nX-Big: {}\r\n\r\n",
            "a".repeat(n)
        )
    };
    assert_eq!(ok_result(&d.http().ask(big(15 * 1024)), "15 KiB head"), json!(2));
    check(big(17 * 1024).into(), 431, "headers-too-large", "17 KiB head");

    // Malformed request lines.
    for (bytes, what) in [
        (b"hello world\r\n\r\n".to_vec(), "no method"),
        (b"GET / HTTP/2.0\r\n\r\n".to_vec(), "HTTP/2.0"),
        (
            b"GET /v1/max?values=1\x01 HTTP/1.1\r\n\r\n".to_vec(),
            "control byte",
        ),
        (
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec(),
            "TLS hello",
        ),
    ] {
        check(bytes, 400, "parse", what);
    }
}

/// After the client's EOF in the middle of a request, nothing more can
/// come: the daemon closes (taskd(8), PROTOCOL: after a half-close, pending replies
/// are written and the connection closed).
#[test]
fn half_close_in_the_middle_of_a_request_closes() {
    let d = Launch::http("").start();
    let mut c = d.http();
    c.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHo");
    c.stream().shutdown(Shutdown::Write).expect("half-close");
    assert_eq!(c.response().status, 200);
    assert_closed(&mut c, "EOF inside the second request's head");
}

// ---------------------------------------------------------------- connections

#[test]
fn keep_alive_serves_many_requests_on_one_connection() {
    let d = Launch::http("").start();
    let mut c = d.http();
    for i in 0..20u64 {
        let r = c.ask(http_get(&format!("/v1/sum?values={i},{}&id=k{i}", i + 1)));
        assert_eq!(r.header("connection"), Some("keep-alive"));
        assert_eq!(
            r.json(),
            json!({"id": format!("k{i}"), "ok": true, "result": 2 * i + 1})
        );
    }

    // A figure, not a check: sequential requests on one connection.
    let request = http_get("/v1/max?values=1,2,3");
    let start = Instant::now();
    let mut n = 0u32;
    while n < 3000 && start.elapsed() < Duration::from_secs(3) {
        assert_eq!(c.ask(&request).status, 200);
        n += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "keep-alive: {n} sequential requests on one connection in {secs:.3} s: {:.0} requests/s",
        f64::from(n) / secs
    );
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let d = Launch::http("").start();
    let mut c = d.http();
    let mut requests = String::new();
    let mut want: Vec<(Value, Option<Value>)> = Vec::new();
    // Slow pi tasks first: everything after them finishes earlier.
    for i in 0..3 {
        requests.push_str(&http_get(&format!("/v1/pi?samples=2000000&chunks=2&id=p{i}")));
        want.push((json!(format!("p{i}")), None));
    }
    for i in 3..30i64 {
        let vals = [i, 2 * i + 1, 3 * i + 7, 100 - i];
        let (op, result) = match i % 5 {
            0 => ("max", json!(vals.iter().max())),
            1 => ("min", json!(vals.iter().min())),
            2 => ("sum", json!(vals.iter().sum::<i64>())),
            3 => ("mean", json!(vals.iter().sum::<i64>() as f64 / 4.0)),
            _ => {
                let mut s = vals;
                s.sort();
                ("median", json!((s[1] + s[2]) as f64 / 2.0))
            }
        };
        let list = vals.map(|v| v.to_string()).join(",");
        if i % 3 == 0 {
            let body = format!("{{\"id\": {i}, \"values\": [{list}]}}");
            requests.push_str(&http_post(&format!("/v1/{op}"), &body));
            want.push((json!(i), Some(result)));
        } else {
            requests.push_str(&http_get(&format!("/v1/{op}?values={list}&id=q{i}")));
            want.push((json!(format!("q{i}")), Some(result)));
        }
    }
    c.send(requests.as_bytes());
    for (i, (id, result)) in want.iter().enumerate() {
        let r = c.response();
        let v = ok_json(&r, &format!("response {i}"));
        assert_eq!(&v["id"], id, "response {i} out of order: {v}");
        match result {
            Some(result) => assert_eq!(as_f64(&v["result"]), as_f64(result), "response {i}: {v}"),
            None => {
                assert_eq!(v["result"]["samples"], json!(2_000_000), "{v}");
                assert!((3.0..3.3).contains(&as_f64(&v["result"]["pi"])), "{v}");
            }
        }
    }
}

#[test]
fn connection_close_and_http_1_0() {
    let d = Launch::http("").start();
    let mut c = d.http();
    let r = c.ask("GET /v1/max?values=1,2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(ok_result(&r, "Connection: close"), json!(2));
    assert_eq!(r.header("connection"), Some("close"));
    assert_closed(&mut c, "Connection: close");

    // HTTP/1.0 closes unless it asks for keep-alive.
    let mut c = d.http();
    let r = c.ask("GET /v1/max?values=1,2 HTTP/1.0\r\n\r\n");
    assert_eq!(ok_result(&r, "HTTP/1.0"), json!(2));
    assert_eq!(r.header("connection"), Some("close"));
    assert_closed(&mut c, "HTTP/1.0");

    let mut c = d.http();
    for i in 0..3 {
        let r = c.ask("GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        assert_eq!(r.status, 200, "request {i}");
        assert_eq!(r.header("connection"), Some("keep-alive"));
    }
}

/// A client sending its head one byte every 20 ms holds only its own
/// connection: a normal client is answered while the slow one still sends.
#[test]
fn a_slow_client_does_not_block_others() {
    let d = Launch::http("").start();
    let events = Arc::new(Mutex::new(Vec::new()));
    let (started_tx, started_rx) = mpsc::channel();
    let addr = d.tcp;
    let slow = {
        let events = Arc::clone(&events);
        std::thread::spawn(move || {
            let mut c = HttpConn::connect(addr);
            let request = format!(
                "GET /v1/max?values=7,9,8 HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: {}\r\n\r\n",
                "p".repeat(60)
            );
            for (i, b) in request.bytes().enumerate() {
                c.send([b]);
                if i == 8 {
                    started_tx.send(()).expect("signal the start");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            events
                .lock()
                .expect("events")
                .push("slow client sent its last byte");
            let r = c.response();
            events.lock().expect("events").push("slow client answered");
            r
        })
    };
    started_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the slow client started");
    let r = Api::of(&d).get("/v1/max?values=1,2");
    assert_eq!(ok_result(&r, "normal client"), json!(2));
    events.lock().expect("events").push("normal client answered");
    let r = slow.join().expect("slow client thread");
    assert_eq!(ok_result(&r, "slow client"), json!(9));
    assert_eq!(
        *events.lock().expect("events"),
        [
            "normal client answered",
            "slow client sent its last byte",
            "slow client answered"
        ]
    );
}

/// SIGTERM with drain_delay_s = 2: /healthz says 503 draining while /v1
/// still answers; then /v1 gets 503 shutting-down and the connection closes;
/// at shutdown_timeout_s the task still running is answered shutting-down
/// and the daemon exits 0.
#[test]
fn sigterm_drains_http() {
    // 10^12 samples: minutes even for the vectorized kernel (10^10 takes 4 s in a debug
    // build), so the task is surely running at the timeout.
    let mut d = Launch::http(
        "[server]\nworkers = 2\ndrain_delay_s = 2\nshutdown_timeout_s = 6\n\n[ops.pi]\nmax_samples = 1000000000000\n",
    )
    .start();
    let api = Api::of(&d);
    // A task that outlives the delay keeps the daemon serving after it.
    let mut long = d.http();
    long.send(http_get("/v1/pi?samples=1000000000000&chunks=1&id=long"));
    let running = wait_until(Duration::from_secs(10), || {
        let m = api.get("/metrics").text();
        m.contains("taskd_queue_tasks{queue=\"running\"} 1")
    });
    assert!(running, "the long pi task never ran");

    d.send_signal(libc::SIGTERM);

    let mut draining = None;
    assert!(
        wait_until(Duration::from_secs(5), || {
            let r = d.http().ask(http_get("/healthz"));
            let done = r.status == 503;
            draining = Some(r);
            done
        }),
        "/healthz never said draining"
    );
    let r = draining.expect("a /healthz response");
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.json(), json!({"status": "draining"}));
    // Still serving during the delay.
    assert_eq!(
        ok_result(&api.get("/v1/max?values=4,5"), "during the delay"),
        json!(5)
    );

    let mut refused = None;
    assert!(
        wait_until(Duration::from_secs(10), || {
            let mut c = d.http();
            let r = c.ask(http_get("/v1/max?values=1,2"));
            if r.status == 200 {
                return false;
            }
            refused = Some((r, c));
            true
        }),
        "/v1 was never refused"
    );
    let (r, mut c) = refused.expect("a refusal");
    assert_error(&r, 503, "shutting-down", "after the delay");
    assert_eq!(r.header("connection"), Some("close"));
    assert_closed(&mut c, "503 shutting-down");

    let r = long.response();
    assert_error(&r, 503, "shutting-down", "the task left at the timeout");
    assert_eq!(r.json()["id"], json!("long"));
    let status = d.wait_exit(Duration::from_secs(15));
    assert!(status.is_some(), "taskd did not exit");
    assert!(status.expect("exited").success(), "{status:?}: {}", d.stderr());
}

// ---------------------------------------------------------------- metrics

/// One sample of the exposition text.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: Labels,
    value: f64,
}

fn is_metric_name(s: &str) -> bool {
    let mut b = s.bytes();
    b.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_' || c == b':')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b':')
}

fn is_label_name(s: &str) -> bool {
    let mut b = s.bytes();
    b.next().is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ if s.bytes().all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b)) => s.parse().ok(),
        _ => None,
    }
}

/// A sample's labels, as (name, value).
type Labels = Vec<(String, String)>;

/// `{k="v",…}` after the name: the labels and the rest of the line.
fn parse_labels(s: &str) -> Result<(Labels, &str), String> {
    let mut labels = Vec::new();
    let mut rest = s;
    loop {
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((labels, r));
        }
        let (name, r) = rest.split_once("=\"").ok_or("a label without =\"")?;
        if !is_label_name(name) {
            return Err(format!("label name {name:?}"));
        }
        let mut value = String::new();
        let mut chars = r.char_indices();
        let end = loop {
            match chars.next() {
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("escape {other:?}")),
                },
                Some((_, c)) => value.push(c),
                None => return Err("unterminated label value".into()),
            }
        };
        labels.push((name.to_string(), value));
        rest = &r[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

/// Parses every line: `# HELP name text`, `# TYPE name kind`, or a sample.
fn parse_exposition(text: &str) -> Vec<Sample> {
    assert!(text.ends_with('\n'), "no final newline");
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(c) = line.strip_prefix("# ") {
            let (kind, rest) = c.split_once(' ').unwrap_or((c, ""));
            let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
            assert!(is_metric_name(name), "comment line {line:?}");
            match kind {
                "HELP" => assert!(!text.is_empty(), "{line:?}"),
                "TYPE" => assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&text),
                    "{line:?}"
                ),
                _ => panic!("comment line {line:?}"),
            }
            continue;
        }
        let end = line.find(['{', ' ']).unwrap_or(line.len());
        let name = &line[..end];
        assert!(is_metric_name(name), "sample line {line:?}");
        let (labels, rest) = match line[end..].strip_prefix('{') {
            Some(r) => parse_labels(r).unwrap_or_else(|e| panic!("{e} in {line:?}")),
            None => (Vec::new(), &line[end..]),
        };
        let value = rest
            .strip_prefix(' ')
            .and_then(parse_value)
            .unwrap_or_else(|| panic!("value of {line:?}"));
        samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    samples
}

/// The value of the sample with exactly these labels.
fn metric(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && s.labels.len() == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
        })
        .map(|s| s.value)
}

fn scrape(api: &Api) -> Vec<Sample> {
    let r = api.get("/metrics");
    assert_eq!(r.status, 200);
    parse_exposition(&r.text())
}

#[test]
fn metrics_follow_the_requests() {
    let d = Launch::http("").start();
    let api = Api::of(&d);
    const REQ: &str = "taskd_requests_total";
    const ERR: &str = "taskd_errors_total";
    let max = [("proto", "http"), ("op", "max")];

    ok_result(&api.get("/v1/max?values=1,2"), "max");
    let m = scrape(&api);
    let n = metric(&m, REQ, &max).expect("http max requests");
    assert!(n >= 1.0);
    ok_result(&api.get("/v1/max?values=3,4"), "max");
    let m = scrape(&api);
    assert_eq!(metric(&m, REQ, &max), Some(n + 1.0));

    // Errors, by op and code; an HTTP-level one under op "unknown".
    let empty = [("proto", "http"), ("op", "max"), ("code", "empty")];
    let before = metric(&m, ERR, &empty).unwrap_or(0.0);
    assert_error(&api.get("/v1/max"), 400, "empty", "empty");
    assert_error(&api.get("/nosuch"), 404, "not-found", "not-found");
    let m = scrape(&api);
    assert_eq!(metric(&m, ERR, &empty), Some(before + 1.0));
    assert_eq!(metric(&m, REQ, &max), Some(n + 2.0));
    let nf = [("proto", "http"), ("op", "unknown"), ("code", "not-found")];
    assert_eq!(metric(&m, ERR, &nf), Some(1.0));

    // The histogram: cumulative buckets up to +Inf = _count, and a _sum.
    let buckets: Vec<&Sample> = m
        .iter()
        .filter(|s| s.name == "taskd_task_duration_seconds_bucket")
        .collect();
    assert!(buckets.len() >= 2, "{buckets:?}");
    let mut last = 0.0;
    for b in &buckets {
        assert!(b.labels.iter().any(|(k, _)| k == "le"), "{b:?}");
        assert!(b.value >= last, "buckets not cumulative: {buckets:?}");
        last = b.value;
    }
    let inf = metric(&m, "taskd_task_duration_seconds_bucket", &[("le", "+Inf")]).expect("+Inf bucket");
    let count = metric(&m, "taskd_task_duration_seconds_count", &[]).expect("_count");
    assert_eq!(inf, count);
    assert!(count >= 2.0, "two max tasks ran: {count}");
    assert!(metric(&m, "taskd_task_duration_seconds_sum", &[]).expect("_sum") > 0.0);

    let build = m
        .iter()
        .find(|s| s.name == "taskd_build_info")
        .expect("taskd_build_info");
    assert_eq!(build.value, 1.0);
    assert!(
        build.labels.iter().any(|(k, v)| k == "version" && !v.is_empty()),
        "{build:?}"
    );
    assert!(metric(&m, "taskd_connections", &[("proto", "http")]).expect("http connections") >= 1.0);
    assert_eq!(metric(&m, "taskd_config_last_reload_successful", &[]), Some(1.0));
    for queue in ["incoming", "ready", "running"] {
        assert!(
            metric(&m, "taskd_queue_tasks", &[("queue", queue)]).is_some(),
            "{queue}"
        );
    }
    assert!(metric(&m, "taskd_users", &[]).is_some());
    assert!(metric(&m, "taskd_results_log_write_errors_total", &[]).is_some());
}

/// Operations the loop answers itself (ping, users, info) are requests
/// answered like any other: `taskd_requests_total` counts them.
#[test]
fn metrics_count_the_ops_the_loop_answers() {
    let d = Launch::http("").start();
    let api = Api::of(&d);
    for op in ["ping", "users", "info"] {
        ok_result(&api.get(&format!("/v1/{op}")), op);
    }
    let m = scrape(&api);
    for op in ["ping", "users", "info"] {
        assert_eq!(
            metric(&m, "taskd_requests_total", &[("proto", "http"), ("op", op)]),
            Some(1.0),
            "taskd_requests_total{{proto=\"http\",op=\"{op}\"}}"
        );
    }
}

// ---------------------------------------------------------------- arbitrary bytes

mod props {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    /// Requests that look like HTTP, with arbitrary pieces.
    fn http_like() -> impl Strategy<Value = Vec<u8>> {
        (
            "(GET|POST|PUT|HEAD|DELETE|get|G)",
            prop_oneof![
                "/v1/[a-z]{0,6}\\?[ -~]{0,40}",
                "/(pi|statistics|healthz|metrics)\\?[ -~]{0,20}",
                "[ -~]{0,30}",
            ],
            "(HTTP/1.1|HTTP/1.0|HTTP/1.1x|HTTP/2|)",
            vec(("[A-Za-z-]{0,20}", "[ -~]{0,24}"), 0..6),
            vec(any::<u8>(), 0..128),
            any::<bool>(),
        )
            .prop_map(|(method, target, version, headers, body, length)| {
                let mut out = format!("{method} {target} {version}\r\n").into_bytes();
                for (k, v) in headers {
                    out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
                }
                if length {
                    out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
                }
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(&body);
                out
            })
    }

    #[test]
    fn arbitrary_bytes_never_crash_the_daemon() {
        let mut d = Launch::http("[limits]\nmax_line_bytes = 4096\nmax_values = 100\n").start();
        let addr = d.tcp;
        let mut runner = TestRunner::new(Config {
            cases: 64,
            failure_persistence: None,
            ..Config::default()
        });
        let strategy = prop_oneof![vec(any::<u8>(), 0..2048), http_like()];
        runner
            .run(&strategy, |bytes| {
                let mut s = TcpStream::connect(addr).expect("connect");
                s.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
                // The daemon may answer and close before all is written.
                let _ = s.write_all(&bytes);
                let _ = s.shutdown(Shutdown::Write);
                let mut sink = Vec::new();
                let _ = s.read_to_end(&mut sink);
                let mut c = HttpConn::connect(addr);
                let r = c.ask(http_get("/healthz"));
                prop_assert_eq!(r.status, 200);
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{e}\n{}", d.stderr()));
        assert!(d.try_wait().is_none(), "taskd exited");
        assert_eq!(d.http().ask(http_get("/healthz")).status, 200);
    }
}

/// HEAD on every GET endpoint: the headers of the GET, Content-Length
/// included, and no body (monitors and balancers use it).
#[test]
fn head_answers_like_get_without_a_body() {
    let d = Launch::http("").start();
    for target in [
        "/healthz",
        "/v1/max?values=1,2",
        "/statistics",
        "/metrics",
        "/pi?simulations=1000",
    ] {
        let mut s = TcpStream::connect(d.tcp).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        // A HEAD, then a GET on the same connection: the GET's status line
        // must follow the HEAD's headers at once.
        let req = format!(
            "HEAD {target} HTTP/1.1\r\nHost: x\r\n\r\nGET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).expect("send");
        let mut all = Vec::new();
        s.read_to_end(&mut all).expect("read");
        let text = String::from_utf8_lossy(&all);
        let (head, rest) = text
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("{target}: {text}"));
        assert!(head.starts_with("HTTP/1.1 200 "), "{target}: {head}");
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{target}: no Content-Length in {head}"));
        assert!(len > 0, "{target}: the GET's length");
        assert!(
            rest.starts_with("HTTP/1.1 200 "),
            "{target}: a body after HEAD's headers: {rest:?}"
        );
        // The GET's body is as long as HEAD said (the /metrics text and
        // pi's estimate change between the two, not by much).
        let (_, body) = rest.split_once("\r\n\r\n").expect("the GET's head");
        if target != "/metrics" && !target.starts_with("/pi") {
            assert_eq!(body.len(), len, "{target}");
        }
    }
}
