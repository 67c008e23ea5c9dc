//! Routing (SPEC section 2). Op requests are handed to the line protocol's
//! parsers so precedence, codes and messages are the same as over TCP: a
//! GET's query string is rebuilt into a text line for `protocol::head`
//! once each piece is known not to change its tokens, and a POST body goes
//! to `protocol::json` with the path's op added when the body names none.

use super::{Action, HttpError, HttpRequest};
use crate::ops::{ArgKind, Exec, LoopOp, OPS, OpId, lookup};
use crate::protocol::{Code, Id, ParseCtx, Rejection, Request, head, json, sanitize};

/// `/pi`'s defaults: `simulations` and `concurrency`.
pub const SEED_PI_DEFAULT_SIMULATIONS: u64 = 1_000_000;
pub const SEED_PI_DEFAULT_CONCURRENCY: u32 = 1;

const GET: &str = "GET";
const GET_POST: &str = "GET, POST";

/// Routes one request; see the crate docs of [`super`] and SPEC section 2.
///
/// `GET /pi`, `/statistics`, `/healthz`, `/metrics`; `GET` and `POST`
/// `/v1/{op}`. Anything else is 404 `not-found`; a known path with another
/// method is 405 `method` with `Allow`.
pub fn route(req: &HttpRequest, ctx: &ParseCtx) -> Action {
    let path = req.path.as_str();
    let fixed = match path {
        "/pi" => Some(None),
        "/statistics" => Some(Some(Action::Statistics)),
        "/healthz" => Some(Some(Action::Healthz)),
        "/metrics" => Some(Some(Action::Metrics)),
        _ => None,
    };
    if let Some(action) = fixed {
        if req.method != "GET" {
            return method_not_allowed(req, GET);
        }
        return action.unwrap_or_else(|| seed_pi(req, ctx));
    }
    match path.strip_prefix("/v1/") {
        Some(seg) if !seg.is_empty() && !seg.contains('/') => match req.method.as_str() {
            "GET" => v1_get(seg, req, ctx),
            "POST" => v1_post(seg, req, ctx),
            _ => method_not_allowed(req, GET_POST),
        },
        _ => Action::Error(HttpError::new(
            404,
            "not-found",
            format!("no such path \"{}\"", sanitize(path.as_bytes(), 64)),
            false,
        )),
    }
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

fn reject(id: Option<Id>, user: Option<String>, op: Option<OpId>, code: Code, message: String) -> Action {
    Action::Reject(Rejection {
        id,
        user,
        op,
        json: true,
        code,
        message,
    })
}

/// Whether an op is served over HTTP: not `help` or `quit`.
fn http_op(op: OpId) -> bool {
    !matches!(OPS[op].exec, Exec::Loop(LoopOp::Help | LoopOp::Quit))
}

fn valid_op_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn unknown_op_message(seg: &str) -> String {
    match lookup(seg) {
        Some(op) if !http_op(op) => format!("{} is not served over HTTP", OPS[op].name),
        _ => format!("no operation \"{}\"", sanitize(seg.as_bytes(), 32)),
    }
}

/// The pi argument names used in range messages: (samples, chunks).
type PiNames = (&'static str, &'static str);

/// Turns the line parsers' result into an action: JSON answers, `help` and
/// `quit` refused as unknown, HTTP's names in pi's range messages.
fn finish(r: Result<Request, Rejection>, seg: &str, seed_pi: bool, pi_names: PiNames) -> Action {
    match r {
        Ok(req) if http_op(req.op) => Action::Request {
            req: Request { json: true, ..req },
            seed_pi,
        },
        Ok(req) => reject(req.id, req.user, None, Code::UnknownOp, unknown_op_message(seg)),
        Err(rej) if rej.code == Code::UnknownOp || rej.op.is_some_and(|op| !http_op(op)) => {
            reject(rej.id, rej.user, None, Code::UnknownOp, unknown_op_message(seg))
        }
        Err(mut rej) => {
            rej.json = true;
            if rej.code == Code::Range {
                rej.message = rej
                    .message
                    .replace("SAMPLES", pi_names.0)
                    .replace("CHUNKS", pi_names.1);
            }
            Action::Reject(rej)
        }
    }
}

/// The first value of a query parameter.
fn param<'a>(q: &'a [(String, String)], key: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// Unknown and repeated query parameters are `parse`, as unknown JSON keys are.
fn check_keys(q: &[(String, String)], allowed: &[&str]) -> Result<(), String> {
    for (i, (k, _)) in q.iter().enumerate() {
        if !allowed.contains(&k.as_str()) {
            return Err(format!(
                "unknown query parameter \"{}\"; allowed: {}",
                sanitize(k.as_bytes(), 32),
                allowed.join(", ")
            ));
        }
        if q[..i].iter().any(|(prev, _)| prev == k) {
            return Err(format!("query parameter \"{k}\" given more than once"));
        }
    }
    Ok(())
}

fn check_user(q: &[(String, String)]) -> Result<Option<String>, String> {
    match param(q, "username") {
        None => Ok(None),
        Some(u) if head::valid_user(u.as_bytes()) => Ok(Some(u.to_owned())),
        Some(u) => Err(format!(
            "malformed username \"{}\": 1 to 64 letters, digits, '-', '_', '.'",
            sanitize(u.as_bytes(), 32)
        )),
    }
}

fn check_unsigned(s: &str, what: &str) -> Result<(), String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "{what} \"{}\" is not an unsigned decimal integer",
            sanitize(s.as_bytes(), 32)
        ));
    }
    Ok(())
}

/// The start of a text line: `[#id ][@user ]`.
fn line_head(id: &Option<Id>, user: &Option<String>) -> Vec<u8> {
    let mut line = Vec::new();
    if let Some(Id::Text(id)) = id {
        line.push(b'#');
        line.extend_from_slice(id.as_bytes());
        line.push(b' ');
    }
    if let Some(user) = user {
        line.push(b'@');
        line.extend_from_slice(user.as_bytes());
        line.push(b' ');
    }
    line
}

/// `GET /pi?simulations=N&concurrency=K&username=U`, the seed's endpoint.
fn seed_pi(req: &HttpRequest, ctx: &ParseCtx) -> Action {
    let q = &req.query;
    if let Err(m) = check_keys(q, &["simulations", "concurrency", "username"]) {
        return reject(None, None, None, Code::Parse, m);
    }
    let user = match check_user(q) {
        Ok(u) => u,
        Err(m) => return reject(None, None, None, Code::Parse, m),
    };
    let default_n = SEED_PI_DEFAULT_SIMULATIONS.to_string();
    let default_k = SEED_PI_DEFAULT_CONCURRENCY.to_string();
    let n = param(q, "simulations").unwrap_or(&default_n);
    let k = param(q, "concurrency").unwrap_or(&default_k);
    let pi = lookup("pi");
    if let Err(m) = check_unsigned(n, "simulations").and_then(|()| check_unsigned(k, "concurrency")) {
        return reject(None, user, pi, Code::Parse, m);
    }
    let mut line = line_head(&None, &user);
    line.extend_from_slice(format!("pi {n} {k}").as_bytes());
    finish(
        head::parse(&line, ctx),
        "pi",
        true,
        ("simulations", "concurrency"),
    )
}

/// `GET /v1/{op}?values=…&samples=…&chunks=…&username=U&id=I`.
fn v1_get(seg: &str, req: &HttpRequest, ctx: &ParseCtx) -> Action {
    let q = &req.query;
    // Checked in the line protocol's order: id, user, op, arguments; each
    // piece is validated before it goes into the line, so the line's
    // tokens are exactly the parameters.
    let id = match param(q, "id") {
        None => None,
        Some(s) if head::valid_id(s.as_bytes()) => Some(Id::Text(s.to_owned())),
        Some(s) => {
            let m = format!(
                "malformed id \"{}\": 1 to 64 letters, digits, '-', '_', '.', ':'",
                sanitize(s.as_bytes(), 32)
            );
            return reject(None, None, None, Code::Parse, m);
        }
    };
    if let Err(m) = check_keys(q, &["id", "username", "values", "samples", "chunks"]) {
        return reject(id, None, None, Code::Parse, m);
    }
    let user = match check_user(q) {
        Ok(u) => u,
        Err(m) => return reject(id, None, None, Code::Parse, m),
    };
    if !valid_op_name(seg) {
        let m = format!("malformed operation \"{}\"", sanitize(seg.as_bytes(), 32));
        return reject(id, user, None, Code::Parse, m);
    }
    let Some(op) = lookup(seg).filter(|&op| http_op(op)) else {
        return reject(id, user, None, Code::UnknownOp, unknown_op_message(seg));
    };
    let spec = &OPS[op];
    let misplaced: &[&str] = match spec.args {
        ArgKind::None => &["values", "samples", "chunks"],
        ArgKind::Values => &["samples", "chunks"],
        ArgKind::Pi => &["values"],
    };
    if let Some(k) = misplaced.iter().find(|k| param(q, k).is_some()) {
        let m = format!("{} takes no \"{k}\"", spec.name);
        return reject(id, user, Some(op), Code::Parse, m);
    }
    let mut line = line_head(&id, &user);
    line.extend_from_slice(spec.name.as_bytes());
    match spec.args {
        ArgKind::None => {}
        ArgKind::Values => {
            // The values go last, so whatever they hold stays arguments.
            if let Some(v) = param(q, "values") {
                line.push(b' ');
                line.extend_from_slice(v.as_bytes());
            }
        }
        ArgKind::Pi => {
            let Some(samples) = param(q, "samples") else {
                return reject(id, user, Some(op), Code::Parse, "pi needs \"samples\"".into());
            };
            let chunks = param(q, "chunks");
            let checked = check_unsigned(samples, "samples")
                .and_then(|()| chunks.map_or(Ok(()), |c| check_unsigned(c, "chunks")));
            if let Err(m) = checked {
                return reject(id, user, Some(op), Code::Parse, m);
            }
            for arg in [Some(samples), chunks].into_iter().flatten() {
                line.push(b' ');
                line.extend_from_slice(arg.as_bytes());
            }
        }
    }
    finish(head::parse(&line, ctx), seg, false, ("samples", "chunks"))
}

/// `POST /v1/{op}` with a JSON request body (SPEC section 1); the body's
/// `op`, if any, must be the path's.
fn v1_post(seg: &str, req: &HttpRequest, ctx: &ParseCtx) -> Action {
    if !req.query.is_empty() {
        let m = "POST /v1/{op} takes its arguments in the JSON body, not in the query string".into();
        return reject(None, None, None, Code::Parse, m);
    }
    let body = req.body.as_slice();
    let seg_json = serde_json::to_string(seg).unwrap_or_default();
    let start = body.iter().position(|b| !b.is_ascii_whitespace());
    // The body with the path's op as its first key: a JSON object keeps
    // the last of repeated keys, so an `op` in the body still wins and is
    // compared below.
    let text = match start {
        None => format!("{{\"op\":{seg_json}}}").into_bytes(),
        Some(i) if body[i] == b'{' => {
            let rest = &body[i + 1..];
            let empty = rest.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'}');
            let mut t = Vec::with_capacity(body.len() + seg_json.len() + 8);
            t.extend_from_slice(b"{\"op\":");
            t.extend_from_slice(seg_json.as_bytes());
            if !empty {
                t.push(b',');
            }
            t.extend_from_slice(rest);
            t
        }
        // Not an object: the JSON parser says so.
        Some(_) => return finish(json::parse(body, ctx), seg, false, ("samples", "chunks")),
    };
    let r = json::parse(&text, ctx);
    if let Err(rej) = &r
        && rej.code == Code::Parse
        && rej.op.is_none()
        && start.is_some()
    {
        // A fault before the op (syntax, id, key, user, the op's type):
        // the body as sent has the same one; report it from there so a
        // syntax error's column is right.
        if let Err(orig) = json::parse(body, ctx)
            && orig.code == Code::Parse
            && orig.op.is_none()
        {
            return reject(orig.id, orig.user, None, Code::Parse, orig.message);
        }
        return finish(r, seg, false, ("samples", "chunks"));
    }
    let path_op = if valid_op_name(seg) { lookup(seg) } else { None };
    let (id, user, body_op) = match &r {
        Ok(req) => (&req.id, &req.user, Some(req.op)),
        Err(rej) => (&rej.id, &rej.user, rej.op),
    };
    let fault = match body_op {
        Some(op) if Some(op) != path_op => Some(format!(
            "the body's op \"{}\" is not the path's \"{}\"",
            OPS[op].name,
            sanitize(seg.as_bytes(), 32)
        )),
        // Unknown op: the path's, or (when the path's is known) the body's.
        None if !valid_op_name(seg) => Some(format!(
            "malformed operation \"{}\"",
            sanitize(seg.as_bytes(), 32)
        )),
        None if path_op.is_some() => Some(format!(
            "the body's op is not the path's \"{}\"",
            OPS[path_op.unwrap_or_default()].name
        )),
        _ => None,
    };
    match fault {
        Some(m) => reject(id.clone(), user.clone(), None, Code::Parse, m),
        None => finish(r, seg, false, ("samples", "chunks")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Args, RawValues};

    fn ctx(allowed: &[bool]) -> ParseCtx<'_> {
        ParseCtx {
            max_values: 4,
            max_samples: 1_000_000_000,
            allowed,
            udp: false,
            workers: 8,
        }
    }

    fn http(method: &str, target: &str, body: &str) -> HttpRequest {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        HttpRequest {
            method: method.into(),
            path: path.into(),
            query: super::super::parse::parse_query(query),
            body: body.as_bytes().to_vec(),
            keep_alive: true,
        }
    }

    fn run(method: &str, target: &str, body: &str) -> Action {
        let all = vec![true; OPS.len()];
        route(&http(method, target, body), &ctx(&all))
    }

    fn request(method: &str, target: &str, body: &str) -> (Request, bool) {
        match run(method, target, body) {
            Action::Request { req, seed_pi } => {
                assert!(req.json);
                (req, seed_pi)
            }
            other => panic!("{method} {target} {body}: {other:?}"),
        }
    }

    fn rejected(method: &str, target: &str, body: &str) -> Rejection {
        match run(method, target, body) {
            Action::Reject(r) => {
                assert!(r.json);
                r
            }
            other => panic!("{method} {target} {body}: {other:?}"),
        }
    }

    fn code(method: &str, target: &str, body: &str) -> Code {
        rejected(method, target, body).code
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
            route(&http("GET", "/statistics", ""), &ctx(&none)),
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
        assert_eq!(req.user.as_deref(), Some("1111"));

        let r = rejected("GET", "/pi?simulations=0", "");
        assert_eq!(r.code, Code::Range);
        assert!(r.message.contains("simulations"), "{}", r.message);
        let r = rejected("GET", "/pi?simulations=10&concurrency=11", "");
        assert_eq!(r.code, Code::Range);
        assert!(r.message.contains("concurrency"), "{}", r.message);
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
        let r = route(&http("GET", "/pi", ""), &ctx(&allowed));
        assert!(
            matches!(
                r,
                Action::Reject(Rejection {
                    code: Code::Denied,
                    ..
                })
            ),
            "{r:?}"
        );
    }

    #[test]
    fn v1_get_requests() {
        let (req, seed) = request("GET", "/v1/max?values=1,2,3", "");
        assert!(!seed);
        assert_eq!(req.op, op("max"));
        assert_eq!(
            req.args,
            Args::Values {
                raw: RawValues::Text(b"1,2,3".to_vec()),
                count: 3
            }
        );
        assert_eq!((req.id, req.user), (None, None));
        let (req, _) = request("GET", "/v1/MEAN?id=7&username=alice&values=%5B1%2C+2%5D", "");
        assert_eq!(req.op, op("mean"));
        assert_eq!(req.id, Some(Id::Text("7".into())));
        assert_eq!(req.user.as_deref(), Some("alice"));
        assert_eq!(
            req.args,
            Args::Values {
                raw: RawValues::Text(b"[1, 2]".to_vec()),
                count: 2
            }
        );
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
        assert_eq!(r.code, Code::Range);
        assert!(r.message.starts_with("chunks 6 out of range"), "{}", r.message);
        assert_eq!(code("GET", "/v1/nosuch", ""), Code::UnknownOp);
        assert_eq!(code("GET", "/v1/max!", ""), Code::Parse);
        assert_eq!(code("GET", "/v1/m%20x", ""), Code::Parse);
        // The line protocol's precedence: id, then user, then op.
        let r = rejected("GET", "/v1/nosuch?id=a+b&username=x", "");
        assert_eq!((r.code, r.id), (Code::Parse, None));
        let r = rejected("GET", "/v1/nosuch?id=q1&username=%40x", "");
        assert_eq!((r.code, r.id.clone()), (Code::Parse, Some(Id::Text("q1".into()))));
        let r = rejected("GET", "/v1/nosuch?id=q1&values=1", "");
        assert_eq!(
            (r.code, r.id, r.op),
            (Code::UnknownOp, Some(Id::Text("q1".into())), None)
        );
        // too-many and empty come before a malformed value.
        assert_eq!(code("GET", "/v1/max?values=x,y,z,w,v", ""), Code::TooMany);
    }

    #[test]
    fn help_and_quit_are_unknown_over_http() {
        for target in ["/v1/help", "/v1/quit", "/v1/HELP?values=1"] {
            let r = rejected("GET", target, "");
            assert_eq!((r.code, r.op), (Code::UnknownOp, None), "{target}");
        }
        assert_eq!(code("POST", "/v1/help", ""), Code::UnknownOp);
        assert_eq!(
            code("POST", "/v1/quit", r#"{"op":"quit","values":[1]}"#),
            Code::UnknownOp
        );
        let mut allowed = vec![true; OPS.len()];
        allowed[op("help")] = false;
        let r = route(&http("GET", "/v1/help", ""), &ctx(&allowed));
        assert!(matches!(
            r,
            Action::Reject(Rejection {
                code: Code::UnknownOp,
                ..
            })
        ));
    }

    #[test]
    fn denied_ops() {
        let mut allowed = vec![true; OPS.len()];
        allowed[op("max")] = false;
        let c = ctx(&allowed);
        for r in [
            route(&http("GET", "/v1/max?values=1", ""), &c),
            route(&http("POST", "/v1/max", r#"{"values":[1]}"#), &c),
        ] {
            let Action::Reject(r) = r else { panic!("{r:?}") };
            assert_eq!((r.code, r.op), (Code::Denied, Some(op("max"))));
        }
    }

    #[test]
    fn v1_post_requests() {
        let (req, seed) = request(
            "POST",
            "/v1/sum",
            r#"{"id": 9, "user": "bob", "values": [1, "2", 3.5]}"#,
        );
        assert!(!seed);
        assert_eq!(req.op, op("sum"));
        assert_eq!(req.id, Some(Id::Int(9)));
        assert_eq!(req.user.as_deref(), Some("bob"));
        let Args::Values {
            raw: RawValues::Json(v),
            count: 3,
        } = req.args
        else {
            panic!("{:?}", req.args)
        };
        assert_eq!(v[1], "2");
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
        assert_eq!((r.code, r.id), (Code::Parse, Some(Id::Text("a".into()))));
        assert!(r.message.contains("\"min\""), "{}", r.message);
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
        assert!(r.message.contains("column 15"), "{}", r.message);
        // Faults before the op win over a mismatched op, and keep the id.
        let r = rejected("POST", "/v1/max", r#"{"id": 5, "user": "a b", "op": "min"}"#);
        assert_eq!((r.code, r.id), (Code::Parse, Some(Id::Int(5))));
        assert!(r.message.contains("user"), "{}", r.message);
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
        assert_eq!((e.status, e.code, e.allow), (405, "method", Some("GET")));
        for (m, t) in [("POST", "/pi"), ("PUT", "/metrics"), ("HEAD", "/statistics")] {
            assert_eq!(http_error(m, t).allow, Some("GET"));
        }
        let e = http_error("DELETE", "/v1/max");
        assert_eq!((e.status, e.allow), (405, Some("GET, POST")));
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
            let req = HttpRequest {
                method,
                path,
                query,
                body: body.into_bytes(),
                keep_alive: true,
            };
            let all = vec![true; OPS.len()];
            match route(&req, &ctx(&all)) {
                Action::Request { req, .. } => proptest::prop_assert!(req.json),
                Action::Reject(r) => proptest::prop_assert!(r.json),
                _ => {}
            }
        }
    }
}
