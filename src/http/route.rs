//! Routing (taskd(8), "HTTP API"). Op requests become the line protocol's
//! [`Request`]s directly, checked in its order and with its codes and
//! messages (the shared checks of `protocol::head`), so HTTP clients get
//! the same precedence as everyone else: id, user, op, arguments; then
//! `denied`, `too-many`, `empty`, `range`. A POST body goes to the JSON
//! request parser with the path's op.

use std::borrow::Cow;

use super::{Action, HttpError, HttpRequest};
use crate::numbers::count_text_values;
use crate::ops::{ArgKind, Exec, LoopOp, OPS, OpId, lookup};
use crate::protocol::head::{
    PiArg, check_access, check_count, check_pi_range, malformed_id, malformed_user, valid_op_name,
};
use crate::protocol::json::{self, OpFrom};
use crate::protocol::{
    Args, Body, Code, Failure, Format, Id, Name, ParseCtx, Rejection, Request, Syntax, sanitize,
};

/// `/pi`'s defaults: `simulations` and `concurrency`.
pub const SEED_PI_DEFAULT_SIMULATIONS: u64 = 1_000_000;
pub const SEED_PI_DEFAULT_CONCURRENCY: u32 = 1;

const GET: &str = "GET, HEAD";
const GET_POST: &str = "GET, HEAD, POST";

/// Routes one request; see the module's documentation.
///
/// `GET /pi`, `/statistics`, `/healthz`, `/metrics`; `GET` and `POST`
/// `/v1/{op}` (HEAD wherever GET is allowed). Anything else is 404
/// `not-found`; a known path with another method is 405 `method` with
/// `Allow`. `close`: the response ends the connection.
pub fn route(req: &mut HttpRequest, ctx: &ParseCtx, close: bool) -> Action {
    let path = req.path;
    let get = req.method == "GET" || req.method == "HEAD";
    let fixed = match path {
        "/pi" => Some(None),
        "/statistics" => Some(Some(Action::Statistics)),
        "/healthz" => Some(Some(Action::Healthz)),
        "/metrics" => Some(Some(Action::Metrics)),
        _ => None,
    };
    if let Some(action) = fixed {
        if !get {
            return method_not_allowed(req, GET);
        }
        return action.unwrap_or_else(|| seed_pi(req, ctx, close));
    }
    let seg = match path.strip_prefix("/v1/") {
        Some(seg) if !seg.is_empty() && !seg.bytes().any(|b| b == b'/') => seg,
        _ => {
            return Action::Error(HttpError::new(
                404,
                "not-found",
                format!("no such path \"{}\"", sanitize(path.as_bytes(), 64)),
                false,
            ));
        }
    };
    let format = Format::Http {
        body: Body::Reply,
        close,
        head: req.method == "HEAD",
    };
    let routed = match req.method {
        "GET" | "HEAD" => v1_get(seg, req, ctx, format),
        "POST" => v1_post(seg, req, ctx, format),
        _ => return method_not_allowed(req, GET_POST),
    };
    finish(routed, seg, ("samples", "chunks"))
}

fn method_not_allowed(req: &HttpRequest, allow: &'static str) -> Action {
    Action::Error(HttpError {
        allow: Some(allow),
        ..HttpError::new(
            405,
            "method",
            format!(
                "{} is not allowed on {}; allowed: {allow}",
                sanitize(req.method.as_bytes(), 16),
                sanitize(req.path.as_bytes(), 64)
            ),
            false,
        )
    })
}

/// Whether an op is served over HTTP: not `help` or `quit`.
fn http_op(op: OpId) -> bool {
    !matches!(OPS[op].exec, Exec::Loop(LoopOp::Help | LoopOp::Quit))
}

fn unknown_op_message(seg: &str) -> String {
    match lookup(seg) {
        Some(op) if !http_op(op) => format!("{} is not served over HTTP", OPS[op].name),
        _ => format!("no operation \"{}\"", sanitize(seg.as_bytes(), 32)),
    }
}

/// The pi argument names used in range messages: (samples, chunks).
type PiNames = (&'static str, &'static str);

/// A routed op request: the request, and the bytes its values' span
/// refers to.
type Routed = Result<(Request, Vec<u8>), Rejection>;

/// `help` and `quit` refused as unknown, HTTP's names in pi's range
/// messages.
fn finish(r: Routed, seg: &str, pi_names: PiNames) -> Action {
    match r {
        Ok((req, _)) if !http_op(req.op) => {
            let failure = Failure::new(Code::UnknownOp, unknown_op_message(seg));
            Action::Reject(Rejection {
                op: None,
                ..Rejection::of(&Ok(req), failure)
            })
        }
        Ok((req, bytes)) => Action::Request { req, bytes },
        Err(mut rej) if rej.failure.code == Code::UnknownOp || rej.op.is_some_and(|op| !http_op(op)) => {
            rej.failure = Failure::new(Code::UnknownOp, unknown_op_message(seg));
            rej.op = None;
            Action::Reject(rej)
        }
        Err(mut rej) => {
            if rej.failure.code == Code::Range {
                rej.failure.message = rej
                    .failure
                    .message
                    .replace("SAMPLES", pi_names.0)
                    .replace("CHUNKS", pi_names.1);
            }
            Action::Reject(rej)
        }
    }
}

/// The first value of a query parameter.
fn param<'a>(q: &'a [(Cow<str>, Cow<str>)], key: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_ref())
}

/// Unknown and repeated query parameters are `parse`, as unknown JSON keys are.
fn check_keys(q: &[(Cow<str>, Cow<str>)], allowed: &[&str]) -> Result<(), Failure> {
    for (i, (k, _)) in q.iter().enumerate() {
        if !allowed.contains(&k.as_ref()) {
            let m = format!(
                "unknown query parameter \"{}\"; allowed: {}",
                sanitize(k.as_bytes(), 32),
                allowed.join(", ")
            );
            return Err(Failure::new(Code::Parse, m));
        }
        if q[..i].iter().any(|(prev, _)| prev == k) {
            let m = format!("query parameter \"{k}\" given more than once");
            return Err(Failure::new(Code::Parse, m));
        }
    }
    Ok(())
}

fn check_user(q: &[(Cow<str>, Cow<str>)]) -> Result<Option<Name>, Failure> {
    match param(q, "username") {
        None => Ok(None),
        Some(u) => Name::user(u.as_bytes())
            .map(Some)
            .ok_or_else(|| malformed_user("username", u.as_bytes())),
    }
}

/// `GET /pi?simulations=N&concurrency=K&username=U`, the seed's endpoint.
fn seed_pi(req: &HttpRequest, ctx: &ParseCtx, close: bool) -> Action {
    let format = Format::Http {
        body: Body::SeedPi,
        close,
        head: req.method == "HEAD",
    };
    let q = &req.query;
    let pi = lookup("pi");
    let reject = |user, op, failure| {
        Action::Reject(Rejection {
            id: None,
            user,
            op,
            format,
            failure,
        })
    };
    if let Err(f) = check_keys(q, &["simulations", "concurrency", "username"]) {
        return reject(None, None, f);
    }
    let user = match check_user(q) {
        Ok(u) => u,
        Err(f) => return reject(None, None, f),
    };
    let n = param(q, "simulations").map(|s| PiArg::parse(s.as_bytes(), "simulations"));
    let k = param(q, "concurrency").map(|s| PiArg::parse(s.as_bytes(), "concurrency"));
    let (n, k) = match (n.transpose(), k.transpose()) {
        (Ok(n), Ok(k)) => (n, k),
        (Err(f), _) | (_, Err(f)) => return reject(user, pi, f),
    };
    let default_n = SEED_PI_DEFAULT_SIMULATIONS.to_string();
    let default_k = SEED_PI_DEFAULT_CONCURRENCY.to_string();
    let n = n.unwrap_or(PiArg {
        value: Some(SEED_PI_DEFAULT_SIMULATIONS),
        digits: default_n.as_bytes(),
    });
    let k = k.unwrap_or(PiArg {
        value: Some(u64::from(SEED_PI_DEFAULT_CONCURRENCY)),
        digits: default_k.as_bytes(),
    });
    let Some(op) = pi else {
        return reject(user, None, Failure::new(Code::UnknownOp, "no operation \"pi\""));
    };
    let head = Request {
        id: None,
        user,
        op,
        args: Args::None,
        format,
    };
    let routed = check_access(op, ctx)
        .and_then(|()| check_pi_range(n, Some(k), ctx))
        .map(|(samples, chunks)| {
            let args = Args::Pi { samples, chunks };
            (Request { args, ..head }, Vec::new())
        })
        .map_err(|f| Rejection::of(&Ok(head), f));
    finish(routed, "pi", ("simulations", "concurrency"))
}

/// `GET /v1/{op}?values=…&samples=…&chunks=…&username=U&id=I`, checked in
/// the line protocol's order: id, user, op, arguments.
fn v1_get(seg: &str, req: &HttpRequest, ctx: &ParseCtx, format: Format) -> Routed {
    let q = &req.query;
    let mut rej = Rejection::bare(format, Failure::new(Code::Parse, ""));
    let fail = |rej: &Rejection, f: Failure| Rejection {
        failure: f,
        ..rej.clone()
    };
    if let Some(s) = param(q, "id") {
        rej.id = Some(Id::Text(
            Name::id(s.as_bytes()).ok_or_else(|| fail(&rej, malformed_id(s.as_bytes())))?,
        ));
    }
    check_keys(q, &["id", "username", "values", "samples", "chunks"]).map_err(|f| fail(&rej, f))?;
    rej.user = check_user(q).map_err(|f| fail(&rej, f))?;
    if !valid_op_name(seg.as_bytes()) {
        let m = format!("malformed operation \"{}\"", sanitize(seg.as_bytes(), 32));
        return Err(fail(&rej, Failure::new(Code::Parse, m)));
    }
    let Some(op) = lookup(seg).filter(|&op| http_op(op)) else {
        return Err(fail(&rej, Failure::new(Code::UnknownOp, unknown_op_message(seg))));
    };
    rej.op = Some(op);
    let spec = &OPS[op];
    let misplaced: &[&str] = match spec.args {
        ArgKind::None => &["values", "samples", "chunks"],
        ArgKind::Values => &["samples", "chunks"],
        ArgKind::Pi => &["values"],
    };
    if let Some(k) = misplaced.iter().find(|k| param(q, k).is_some()) {
        let m = format!("{} takes no \"{k}\"", spec.name);
        return Err(fail(&rej, Failure::new(Code::Parse, m)));
    }
    let pi = match spec.args {
        ArgKind::Pi => {
            let Some(samples) = param(q, "samples") else {
                return Err(fail(&rej, Failure::new(Code::Parse, "pi needs \"samples\"")));
            };
            let samples = PiArg::parse(samples.as_bytes(), "samples").map_err(|f| fail(&rej, f))?;
            let chunks = param(q, "chunks")
                .map(|c| PiArg::parse(c.as_bytes(), "chunks"))
                .transpose()
                .map_err(|f| fail(&rej, f))?;
            Some((samples, chunks))
        }
        _ => None,
    };
    check_access(op, ctx).map_err(|f| fail(&rej, f))?;
    let (args, bytes) = match (spec.args, pi) {
        (ArgKind::Values, _) => {
            let values = param(q, "values")
                .map(|v| v.as_bytes().to_vec())
                .unwrap_or_default();
            let count = count_text_values(&values);
            check_count(count, ctx).map_err(|f| fail(&rej, f))?;
            let args = Args::Values {
                span: 0..values.len(),
                syntax: Syntax::Text,
                count,
            };
            (args, values)
        }
        (ArgKind::Pi, Some((samples, chunks))) => {
            let (samples, chunks) = check_pi_range(samples, chunks, ctx).map_err(|f| fail(&rej, f))?;
            (Args::Pi { samples, chunks }, Vec::new())
        }
        _ => (Args::None, Vec::new()),
    };
    let request = Request {
        id: rej.id,
        user: rej.user,
        op,
        args,
        format,
    };
    Ok((request, bytes))
}

/// `POST /v1/{op}` with a JSON request body (taskd(8)); the body's `op`,
/// if any, must be the path's. An empty body is `{}`.
fn v1_post(seg: &str, req: &mut HttpRequest, ctx: &ParseCtx, format: Format) -> Routed {
    if !req.query.is_empty() {
        let m = "POST /v1/{op} takes its arguments in the JSON body, not in the query string";
        return Err(Rejection::bare(format, Failure::new(Code::Parse, m)));
    }
    let mut body = std::mem::take(&mut req.body).into_owned();
    if body.iter().all(u8::is_ascii_whitespace) {
        body = b"{}".to_vec();
    }
    let request = json::parse_with(&body, ctx, OpFrom::Path(seg), format)?;
    Ok((request, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(allowed: &[bool]) -> ParseCtx<'_> {
        ParseCtx {
            max_values: 4,
            max_samples: 1_000_000_000,
            allowed,
            udp: false,
        }
    }

    fn id(s: &str) -> Option<Id> {
        Name::id(s.as_bytes()).map(Id::Text)
    }

    fn values(req: &Request, bytes: &[u8]) -> (String, usize) {
        let Args::Values { span, count, .. } = &req.args else {
            panic!("{req:?}")
        };
        (String::from_utf8_lossy(&bytes[span.clone()]).into_owned(), *count)
    }

    fn http<'a>(method: &'a str, target: &'a str, body: &'a str) -> HttpRequest<'a> {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        HttpRequest {
            method,
            path,
            query: super::super::parse::parse_query(query),
            body: body.as_bytes().into(),
            keep_alive: true,
        }
    }

    fn run(method: &str, target: &str, body: &str) -> Action {
        let all = vec![true; OPS.len()];
        route(&mut http(method, target, body), &ctx(&all), false)
    }

    /// The request, whether it is `/pi`'s, and the bytes its values are in.
    fn request_bytes(method: &str, target: &str, body: &str) -> (Request, bool, Vec<u8>) {
        match run(method, target, body) {
            Action::Request { req, bytes } => {
                let Format::Http { body: shape, .. } = req.format else {
                    panic!("{req:?}")
                };
                (req, shape == Body::SeedPi, bytes)
            }
            other => panic!("{method} {target} {body}: {other:?}"),
        }
    }

    fn request(method: &str, target: &str, body: &str) -> (Request, bool) {
        let (r, seed, _) = request_bytes(method, target, body);
        (r, seed)
    }

    fn rejected(method: &str, target: &str, body: &str) -> Rejection {
        match run(method, target, body) {
            Action::Reject(r) => {
                assert!(matches!(r.format, Format::Http { .. }), "{r:?}");
                r
            }
            other => panic!("{method} {target} {body}: {other:?}"),
        }
    }

    fn code(method: &str, target: &str, body: &str) -> Code {
        rejected(method, target, body).failure.code
    }

    fn http_error(method: &str, target: &str) -> HttpError {
        match run(method, target, "") {
            Action::Error(e) => e,
            other => panic!("{method} {target}: {other:?}"),
        }
    }

    fn op(name: &str) -> OpId {
        lookup(name).unwrap()
    }

    #[test]
    fn fixed_endpoints() {
        assert_eq!(run("GET", "/statistics", ""), Action::Statistics);
        assert_eq!(run("GET", "/healthz", ""), Action::Healthz);
        assert_eq!(run("GET", "/metrics?x=1", ""), Action::Metrics);
        // They ignore the listener's ops.
        let none = vec![false; OPS.len()];
        assert_eq!(
            route(&mut http("GET", "/statistics", ""), &ctx(&none), false),
            Action::Statistics
        );
    }

    #[test]
    fn seed_pi_endpoint() {
        let (req, seed) = request("GET", "/pi", "");
        assert!(seed);
        assert_eq!(req.op, op("pi"));
        assert_eq!(
            req.args,
            Args::Pi {
                samples: 1_000_000,
                chunks: Some(1)
            }
        );
        assert_eq!(req.user, None);
        let (req, _) = request("GET", "/pi?simulations=5000&concurrency=4&username=1111", "");
        assert_eq!(
            req.args,
            Args::Pi {
                samples: 5000,
                chunks: Some(4)
            }
        );
        assert_eq!(req.user, Name::user(b"1111"));

        let r = rejected("GET", "/pi?simulations=0", "");
        assert_eq!(r.failure.code, Code::Range);
        assert!(r.failure.message.contains("simulations"), "{}", r.failure.message);
        let r = rejected("GET", "/pi?simulations=10&concurrency=11", "");
        assert_eq!(r.failure.code, Code::Range);
        assert!(r.failure.message.contains("concurrency"), "{}", r.failure.message);
        assert_eq!(code("GET", "/pi?simulations=1000000001", ""), Code::Range);
        assert_eq!(
            code("GET", "/pi?simulations=99999999999999999999999", ""),
            Code::Range
        );
        assert_eq!(code("GET", "/pi?simulations=1e6", ""), Code::Parse);
        assert_eq!(code("GET", "/pi?simulations=", ""), Code::Parse);
        assert_eq!(code("GET", "/pi?simulations=5+3", ""), Code::Parse);
        assert_eq!(code("GET", "/pi?concurrency=-1", ""), Code::Parse);
        assert_eq!(code("GET", "/pi?username=a+b", ""), Code::Parse);
        assert_eq!(code("GET", "/pi?samples=5", ""), Code::Parse);

        let mut allowed = vec![true; OPS.len()];
        allowed[op("pi")] = false;
        let r = route(&mut http("GET", "/pi", ""), &ctx(&allowed), false);
        let Action::Reject(r) = r else { panic!("{r:?}") };
        assert_eq!(r.failure.code, Code::Denied);
    }

    #[test]
    fn v1_get_requests() {
        let (req, seed, bytes) = request_bytes("GET", "/v1/max?values=1,2,3", "");
        assert!(!seed);
        assert_eq!(req.op, op("max"));
        assert_eq!(values(&req, &bytes), ("1,2,3".to_string(), 3));
        assert_eq!((req.id, req.user), (None, None));
        let (req, _, bytes) = request_bytes("GET", "/v1/MEAN?id=7&username=alice&values=%5B1%2C+2%5D", "");
        assert_eq!(req.op, op("mean"));
        assert_eq!(req.id, id("7"));
        assert_eq!(req.user, Name::user(b"alice"));
        assert_eq!(values(&req, &bytes), ("[1, 2]".to_string(), 2));
        // A malformed value is the worker's to find.
        let (req, _) = request("GET", "/v1/sum?values=1+x", "");
        assert!(matches!(req.args, Args::Values { count: 2, .. }));
        let (req, _) = request("GET", "/v1/pi?samples=100&chunks=3", "");
        assert_eq!(
            req.args,
            Args::Pi {
                samples: 100,
                chunks: Some(3)
            }
        );
        let (req, _) = request("GET", "/v1/pi?samples=100", "");
        assert_eq!(
            req.args,
            Args::Pi {
                samples: 100,
                chunks: None
            }
        );
        for name in ["ping", "users", "info"] {
            let (req, _) = request("GET", &format!("/v1/{name}"), "");
            assert_eq!((req.op, req.args), (op(name), Args::None));
        }
    }

    #[test]
    fn v1_get_errors() {
        assert_eq!(code("GET", "/v1/max", ""), Code::Empty);
        assert_eq!(code("GET", "/v1/max?values=", ""), Code::Empty);
        assert_eq!(code("GET", "/v1/max?values=1,2,3,4,5", ""), Code::TooMany);
        assert_eq!(code("GET", "/v1/max?values=1&values=2", ""), Code::Parse);
        assert_eq!(code("GET", "/v1/max?values=1&bogus=2", ""), Code::Parse);
        assert_eq!(code("GET", "/v1/max?values=1&samples=2", ""), Code::Parse);
        assert_eq!(code("GET", "/v1/ping?values=1", ""), Code::Parse);
        assert_eq!(code("GET", "/v1/pi", ""), Code::Parse);
        assert_eq!(code("GET", "/v1/pi?samples=1e6", ""), Code::Parse);
        assert_eq!(code("GET", "/v1/pi?samples=5+5", ""), Code::Parse);
        assert_eq!(code("GET", "/v1/pi?samples=0", ""), Code::Range);
        let r = rejected("GET", "/v1/pi?samples=5&chunks=6", "");
        assert_eq!(r.failure.code, Code::Range);
        assert!(
            r.failure.message.starts_with("chunks 6 out of range"),
            "{}",
            r.failure.message
        );
        assert_eq!(code("GET", "/v1/nosuch", ""), Code::UnknownOp);
        assert_eq!(code("GET", "/v1/max!", ""), Code::Parse);
        assert_eq!(code("GET", "/v1/m%20x", ""), Code::Parse);
        // The line protocol's precedence: id, then user, then op.
        let r = rejected("GET", "/v1/nosuch?id=a+b&username=x", "");
        assert_eq!((r.failure.code, r.id), (Code::Parse, None));
        let r = rejected("GET", "/v1/nosuch?id=q1&username=%40x", "");
        assert_eq!((r.failure.code, r.id), (Code::Parse, id("q1")));
        let r = rejected("GET", "/v1/nosuch?id=q1&values=1", "");
        assert_eq!((r.failure.code, r.id, r.op), (Code::UnknownOp, id("q1"), None));
        // too-many and empty come before a malformed value.
        assert_eq!(code("GET", "/v1/max?values=x,y,z,w,v", ""), Code::TooMany);
    }

    #[test]
    fn help_and_quit_are_unknown_over_http() {
        for target in ["/v1/help", "/v1/quit", "/v1/HELP?values=1"] {
            let r = rejected("GET", target, "");
            assert_eq!((r.failure.code, r.op), (Code::UnknownOp, None), "{target}");
        }
        assert_eq!(code("POST", "/v1/help", ""), Code::UnknownOp);
        assert_eq!(
            code("POST", "/v1/quit", r#"{"op":"quit","values":[1]}"#),
            Code::UnknownOp
        );
        let mut allowed = vec![true; OPS.len()];
        allowed[op("help")] = false;
        let r = route(&mut http("GET", "/v1/help", ""), &ctx(&allowed), false);
        let Action::Reject(r) = r else { panic!("{r:?}") };
        assert_eq!(r.failure.code, Code::UnknownOp);
    }

    #[test]
    fn denied_ops() {
        let mut allowed = vec![true; OPS.len()];
        allowed[op("max")] = false;
        let c = ctx(&allowed);
        for r in [
            route(&mut http("GET", "/v1/max?values=1", ""), &c, false),
            route(&mut http("POST", "/v1/max", r#"{"values":[1]}"#), &c, false),
        ] {
            let Action::Reject(r) = r else { panic!("{r:?}") };
            assert_eq!((r.failure.code, r.op), (Code::Denied, Some(op("max"))));
        }
    }

    #[test]
    fn v1_post_requests() {
        let (req, seed, bytes) = request_bytes(
            "POST",
            "/v1/sum",
            r#"{"id": 9, "user": "bob", "values": [1, "2", 3.5]}"#,
        );
        assert!(!seed);
        assert_eq!(req.op, op("sum"));
        assert_eq!(req.id, Some(Id::Int(9)));
        assert_eq!(req.user, Name::user(b"bob"));
        assert_eq!(values(&req, &bytes), (r#"[1, "2", 3.5]"#.to_string(), 3));
        let (req, _) = request("POST", "/v1/Sum", "  {\"op\": \"SUM\", \"values\": [1]}\n");
        assert_eq!(req.op, op("sum"));
        let (req, _) = request("POST", "/v1/ping", "");
        assert_eq!(req.op, op("ping"));
        let (req, _) = request("POST", "/v1/ping", " { } ");
        assert_eq!(req.op, op("ping"));
        let (req, _) = request("POST", "/v1/pi", r#"{"samples": 1000, "chunks": 2}"#);
        assert_eq!(
            req.args,
            Args::Pi {
                samples: 1000,
                chunks: Some(2)
            }
        );
    }

    #[test]
    fn v1_post_errors() {
        let r = rejected("POST", "/v1/max", r#"{"id": "a", "op": "min", "values": [1]}"#);
        assert_eq!((r.failure.code, r.id), (Code::Parse, id("a")));
        assert!(r.failure.message.contains("\"min\""), "{}", r.failure.message);
        assert_eq!(
            code("POST", "/v1/max", r#"{"op": "nosuch", "values": [1]}"#),
            Code::Parse
        );
        assert_eq!(
            code("POST", "/v1/max", r#"{"op": 3, "values": [1]}"#),
            Code::Parse
        );
        assert_eq!(code("POST", "/v1/nosuch", r#"{"values": [1]}"#), Code::UnknownOp);
        assert_eq!(code("POST", "/v1/nosuch", r#"{"op": "nosuch"}"#), Code::UnknownOp);
        assert_eq!(code("POST", "/v1/max!", r#"{"values": [1]}"#), Code::Parse);
        assert_eq!(code("POST", "/v1/max", r#"{"values": []}"#), Code::Empty);
        assert_eq!(
            code("POST", "/v1/max", r#"{"values": [1,2,3,4,5]}"#),
            Code::TooMany
        );
        assert_eq!(code("POST", "/v1/max", r#"{"values": [1], "x": 1}"#), Code::Parse);
        assert_eq!(code("POST", "/v1/max", r#"{"values": [1]"#), Code::Parse);
        assert_eq!(code("POST", "/v1/max", "[1]"), Code::Parse);
        assert_eq!(code("POST", "/v1/max", "{\"values\": [1]} x"), Code::Parse);
        assert_eq!(
            code("POST", "/v1/max?values=1", r#"{"values": [1]}"#),
            Code::Parse
        );
        assert_eq!(code("POST", "/v1/pi", r#"{"samples": 0}"#), Code::Range);
        // A syntax error's position is the body's own.
        let r = rejected("POST", "/v1/max", "{\"values\": [1,]}");
        assert!(r.failure.message.contains("column 15"), "{}", r.failure.message);
        // Faults before the op win over a mismatched op, and keep the id.
        let r = rejected("POST", "/v1/max", r#"{"id": 5, "user": "a b", "op": "min"}"#);
        assert_eq!((r.failure.code, r.id), (Code::Parse, Some(Id::Int(5))));
        assert!(r.failure.message.contains("user"), "{}", r.failure.message);
        let deep = format!("{{\"values\":{}1{}}}", "[".repeat(200), "]".repeat(200));
        assert_eq!(code("POST", "/v1/max", &deep), Code::Parse);
    }

    #[test]
    fn path_and_method_errors() {
        let e = http_error("GET", "/nosuch");
        assert_eq!(
            (e.status, e.code, e.close, e.allow),
            (404, "not-found", false, None)
        );
        for target in ["/", "/v1", "/v1/", "/v1/max/x", "/pi/", "/statistics/x"] {
            assert_eq!(http_error("GET", target).status, 404, "{target}");
        }
        let e = http_error("POST", "/healthz");
        assert_eq!((e.status, e.code, e.allow), (405, "method", Some("GET, HEAD")));
        for (m, t) in [("POST", "/pi"), ("PUT", "/metrics"), ("DELETE", "/statistics")] {
            assert_eq!(http_error(m, t).allow, Some("GET, HEAD"));
        }
        let e = http_error("DELETE", "/v1/max");
        assert_eq!((e.status, e.allow), (405, Some("GET, HEAD, POST")));
        assert_eq!(run("HEAD", "/healthz", ""), Action::Healthz);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_requests_never_panic(
            method in "(GET|POST|PUT)",
            seg in "[a-zA-Z!%]{0,6}",
            query in proptest::collection::vec(("(id|username|values|samples|chunks|simulations|concurrency|x)", "[ -~]{0,12}"), 0..4),
            body in "[ -~]{0,40}",
            seed in proptest::bool::ANY,
        ) {
            let path = if seed { "/pi".to_string() } else { format!("/v1/{seg}") };
            let mut req = HttpRequest {
                method: &method,
                path: &path,
                query: query.into_iter().map(|(k, v)| (k.into(), v.into())).collect(),
                body: body.into_bytes().into(),
                keep_alive: true,
            };
            let all = vec![true; OPS.len()];
            match route(&mut req, &ctx(&all), false) {
                Action::Request { req, .. } => proptest::prop_assert!(req.format.is_json()),
                Action::Reject(r) => proptest::prop_assert!(r.format.is_json()),
                _ => {}
            }
        }
    }
}
