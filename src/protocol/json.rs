//! JSON requests: a line starting with `{`, answered by one JSON line.

use serde_json::{Map, Value};

use super::head::{check_access, check_count, check_pi_range, valid_id, valid_user};
use super::{Args, Code, Id, ParseCtx, RawValues, Rejection, Request, sanitize};
use crate::ops::{ArgKind, OPS, lookup};

/// Deepest nesting of arrays and objects accepted; deeper input is `parse`
/// before serde_json ever recurses into it.
pub const MAX_DEPTH: usize = 32;

const KEYS: [&str; 6] = ["id", "user", "op", "values", "samples", "chunks"];

/// Nesting depth of JSON text, ignoring brackets inside strings.
fn depth_exceeds(line: &[u8], max: usize) -> bool {
    let (mut depth, mut in_str, mut escaped) = (0usize, false, false);
    for &b in line {
        if in_str {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_str = false;
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

fn reject(
    id: &Option<Id>,
    user: &Option<String>,
    op: Option<usize>,
    code: Code,
    message: String,
) -> Rejection {
    Rejection {
        id: id.clone(),
        user: user.clone(),
        op,
        json: true,
        code,
        message,
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn parse_id(v: &Value) -> Result<Id, String> {
    match v {
        Value::String(s) if valid_id(s.as_bytes()) => Ok(Id::Text(s.clone())),
        Value::Number(n) => n
            .as_i64()
            .map(Id::Int)
            .ok_or_else(|| format!("id {n} is not a 64-bit integer")),
        Value::String(s) => Err(format!(
            "malformed id \"{}\": 1 to 64 letters, digits, '-', '_', '.', ':'",
            sanitize(s.as_bytes(), 32)
        )),
        other => Err(format!(
            "id must be a string or an integer, not {}",
            type_name(other)
        )),
    }
}

fn unsigned(obj: &Map<String, Value>, key: &str) -> Result<Option<u64>, String> {
    match obj.get(key) {
        None => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(Some)
            .ok_or_else(|| format!("{key} must be an unsigned integer, not {n}")),
        Some(other) => Err(format!(
            "{key} must be an unsigned integer, not {}",
            type_name(other)
        )),
    }
}

pub fn parse(line: &[u8], ctx: &ParseCtx) -> Result<Request, Rejection> {
    let none = (None, None);
    if depth_exceeds(line, MAX_DEPTH) {
        return Err(reject(
            &none.0,
            &none.1,
            None,
            Code::Parse,
            format!("JSON nested deeper than {MAX_DEPTH} levels"),
        ));
    }
    let value: Value = serde_json::from_slice(line).map_err(|e| {
        reject(
            &none.0,
            &none.1,
            None,
            Code::Parse,
            format!("malformed JSON: {e}"),
        )
    })?;
    let Value::Object(obj) = value else {
        return Err(reject(
            &none.0,
            &none.1,
            None,
            Code::Parse,
            "a JSON request must be an object".into(),
        ));
    };

    let id = match obj.get("id").map(parse_id).transpose() {
        Ok(id) => id,
        Err(m) => return Err(reject(&None, &None, None, Code::Parse, m)),
    };
    let mut user = None;
    let fail = |user: &Option<String>, op, code, m| reject(&id, user, op, code, m);
    if let Some(k) = obj.keys().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(fail(
            &user,
            None,
            Code::Parse,
            format!("unknown key \"{}\"", sanitize(k.as_bytes(), 32)),
        ));
    }
    match obj.get("user") {
        None => {}
        Some(Value::String(s)) if valid_user(s.as_bytes()) => user = Some(s.clone()),
        Some(Value::String(s)) => {
            return Err(fail(
                &user,
                None,
                Code::Parse,
                format!(
                    "malformed user \"{}\": 1 to 64 letters, digits, '-', '_', '.'",
                    sanitize(s.as_bytes(), 32)
                ),
            ));
        }
        Some(other) => {
            return Err(fail(
                &user,
                None,
                Code::Parse,
                format!("user must be a string, not {}", type_name(other)),
            ));
        }
    }
    let name = match obj.get("op") {
        Some(Value::String(s)) => s,
        Some(other) => {
            return Err(fail(
                &user,
                None,
                Code::Parse,
                format!("op must be a string, not {}", type_name(other)),
            ));
        }
        None => return Err(fail(&user, None, Code::Parse, "missing \"op\"".into())),
    };
    let Some(op) = lookup(name) else {
        return Err(fail(
            &user,
            None,
            Code::UnknownOp,
            format!("no operation \"{}\"; try help", sanitize(name.as_bytes(), 32)),
        ));
    };
    let spec = &OPS[op];
    let has = |k: &str| obj.contains_key(k);
    let misplaced = match spec.args {
        ArgKind::None => ["values", "samples", "chunks"].into_iter().find(|k| has(k)),
        ArgKind::Values => ["samples", "chunks"].into_iter().find(|k| has(k)),
        ArgKind::Pi => ["values"].into_iter().find(|k| has(k)),
    };
    if let Some(k) = misplaced {
        return Err(fail(
            &user,
            Some(op),
            Code::Parse,
            format!("{} takes no \"{k}\"", spec.name),
        ));
    }
    let (samples, chunks) = if spec.args == ArgKind::Pi {
        let samples = unsigned(&obj, "samples").map_err(|m| fail(&user, Some(op), Code::Parse, m))?;
        let chunks = unsigned(&obj, "chunks").map_err(|m| fail(&user, Some(op), Code::Parse, m))?;
        let Some(samples) = samples else {
            return Err(fail(&user, Some(op), Code::Parse, "pi needs \"samples\"".into()));
        };
        (samples, chunks.map(|c| u32::try_from(c).unwrap_or(u32::MAX)))
    } else {
        (0, None)
    };
    let values = match obj.get("values") {
        None => Vec::new(),
        Some(Value::Array(a)) => a.clone(),
        Some(other) => {
            return Err(fail(
                &user,
                Some(op),
                Code::Parse,
                format!("values must be an array, not {}", type_name(other)),
            ));
        }
    };
    check_access(op, ctx).map_err(|(c, m)| fail(&user, Some(op), c, m))?;
    let args = match spec.args {
        ArgKind::None => Args::None,
        ArgKind::Values => {
            let count = values.len();
            check_count(count, ctx).map_err(|(c, m)| fail(&user, Some(op), c, m))?;
            Args::Values {
                raw: RawValues::Json(values),
                count,
            }
        }
        ArgKind::Pi => {
            check_pi_range(samples, chunks, ctx).map_err(|m| fail(&user, Some(op), Code::Range, m))?;
            Args::Pi { samples, chunks }
        }
    };
    Ok(Request {
        id,
        user,
        op,
        args,
        json: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(line: &str) -> Result<Request, Rejection> {
        let all = vec![true; OPS.len()];
        let ctx = ParseCtx {
            max_values: 4,
            max_samples: 1_000_000,
            allowed: &all,
            udp: false,
            workers: 2,
        };
        parse(line.as_bytes(), &ctx)
    }

    #[test]
    fn accepts_the_spec_examples() {
        let r = run(r#"{"id": 7, "user": "alice", "op": "max", "values": [1, 2, 3]}"#).unwrap();
        assert_eq!(r.id, Some(Id::Int(7)));
        assert_eq!(r.user.as_deref(), Some("alice"));
        let r = run(r#"{"op": "pi", "samples": 1000000, "chunks": 4}"#).unwrap();
        assert_eq!(
            r.args,
            Args::Pi {
                samples: 1_000_000,
                chunks: Some(4)
            }
        );
    }

    #[test]
    fn rejects_with_the_right_code() {
        let code = |l: &str| run(l).unwrap_err().code;
        assert_eq!(code(r#"{"op": "max", "extra": 1, "values": [1]}"#), Code::Parse);
        assert_eq!(code(r#"{"op": "max", "values": [1, 2]"#), Code::Parse);
        assert_eq!(code(r#"{"op": "max", "values": []}"#), Code::Empty);
        assert_eq!(code(r#"{"op": "max", "values": [1,2,3,4,5]}"#), Code::TooMany);
        assert_eq!(code(r#"{"id": "x", "op": "nosuchop"}"#), Code::UnknownOp);
        assert_eq!(code(r#"{"op": "ping", "values": [1]}"#), Code::Parse);
        assert_eq!(code(r#"{"op": "pi", "samples": "1"}"#), Code::Parse);
        assert_eq!(code(r#"{"op": "pi", "samples": 0}"#), Code::Range);
        assert_eq!(code(r#"{"op": 1}"#), Code::Parse);
        assert_eq!(code(r#"[1]"#), Code::Parse);
        let deep = format!(
            "{{\"op\":\"max\",\"values\":{}1{}}}",
            "[".repeat(40),
            "]".repeat(40)
        );
        assert_eq!(code(&deep), Code::Parse);
    }

    #[test]
    fn echoes_the_id_on_errors() {
        let r = run(r#"{"id": "x", "op": "nosuchop"}"#).unwrap_err();
        assert_eq!(r.id, Some(Id::Text("x".into())));
        assert!(r.json);
    }
}
