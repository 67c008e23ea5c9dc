//! Reply lines, text and JSON. Numbers are written by `Num::write_to` in
//! both forms, because serde_json's own float output (`31.0`) is not the
//! ECMAScript form the contract asks for.

use std::io::Write;

use super::{Code, Id};
use crate::numbers::Num;
use crate::ops::{InfoValue, Output};

fn json_str(out: &mut Vec<u8>, s: &str) {
    // Writing a &str to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

fn write_id(out: &mut Vec<u8>, id: &Id) {
    match id {
        Id::Text(s) => json_str(out, s),
        Id::Int(n) => {
            let _ = write!(out, "{n}");
        }
    }
}

fn text_prefix(out: &mut Vec<u8>, id: Option<&Id>) {
    match id {
        Some(Id::Text(s)) => {
            out.push(b'#');
            out.extend_from_slice(s.as_bytes());
            out.push(b' ');
        }
        Some(Id::Int(n)) => {
            let _ = write!(out, "#{n} ");
        }
        None => {}
    }
}

fn json_prefix(out: &mut Vec<u8>, id: Option<&Id>) {
    out.push(b'{');
    if let Some(id) = id {
        out.extend_from_slice(b"\"id\":");
        write_id(out, id);
        out.push(b',');
    }
}

pub fn write_ok(out: &mut Vec<u8>, id: Option<&Id>, json: bool, result: &Output) {
    if json {
        json_prefix(out, id);
        out.extend_from_slice(b"\"ok\":true,\"result\":");
        write_json_result(out, result);
        out.extend_from_slice(b"}\n");
    } else {
        text_prefix(out, id);
        out.extend_from_slice(b"OK ");
        write_text_result(out, result);
        out.push(b'\n');
    }
}

pub fn write_err(out: &mut Vec<u8>, id: Option<&Id>, json: bool, code: Code, message: &str) {
    if json {
        json_prefix(out, id);
        out.extend_from_slice(b"\"ok\":false,\"error\":\"");
        out.extend_from_slice(code.as_str().as_bytes());
        out.extend_from_slice(b"\",\"message\":");
        json_str(out, message);
        out.extend_from_slice(b"}\n");
    } else {
        text_prefix(out, id);
        out.extend_from_slice(b"ERR ");
        out.extend_from_slice(code.as_str().as_bytes());
        out.push(b' ');
        // Messages are built from sanitized input, but a newline would
        // split the reply in two, so make sure of it here.
        out.extend(
            message
                .bytes()
                .map(|b| if b == b'\n' || b == b'\r' { b' ' } else { b }),
        );
        out.push(b'\n');
    }
}

fn write_users_json(out: &mut Vec<u8>, users: &[(String, u64)]) {
    out.push(b'[');
    for (i, (name, count)) in users.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let _ = write!(out, "{{\"request_count\":{count},\"username\":");
        json_str(out, name);
        out.push(b'}');
    }
    out.push(b']');
}

pub fn write_text_result(out: &mut Vec<u8>, result: &Output) {
    match result {
        Output::Num(n) => n.write_to(out),
        Output::Stats(s) => {
            let _ = write!(out, "count={} min=", s.count);
            s.min.write_to(out);
            out.extend_from_slice(b" max=");
            s.max.write_to(out);
            out.extend_from_slice(b" mean=");
            s.mean.write_to(out);
            out.extend_from_slice(b" median=");
            s.median.write_to(out);
        }
        Output::Pi { pi, samples, chunks } => {
            Num::Float(*pi).write_to(out);
            let _ = write!(out, " samples={samples} chunks={chunks}");
        }
        Output::Word(w) => out.extend_from_slice(w.as_bytes()),
        Output::Users(u) => write_users_json(out, u),
        Output::Info(pairs) => {
            for (i, (k, v)) in pairs.iter().enumerate() {
                if i > 0 {
                    out.push(b' ');
                }
                let _ = match v {
                    InfoValue::Int(n) => write!(out, "{k}={n}"),
                    InfoValue::Text(t) => write!(out, "{k}={t}"),
                    InfoValue::Bool(b) => write!(out, "{k}={b}"),
                };
            }
        }
        Output::Help(names) => out.extend_from_slice(names.join(" ").as_bytes()),
    }
}

pub fn write_json_result(out: &mut Vec<u8>, result: &Output) {
    match result {
        Output::Num(n) => n.write_to(out),
        Output::Stats(s) => {
            let _ = write!(out, "{{\"count\":{},\"min\":", s.count);
            s.min.write_to(out);
            out.extend_from_slice(b",\"max\":");
            s.max.write_to(out);
            out.extend_from_slice(b",\"mean\":");
            s.mean.write_to(out);
            out.extend_from_slice(b",\"median\":");
            s.median.write_to(out);
            out.push(b'}');
        }
        Output::Pi { pi, samples, chunks } => {
            out.extend_from_slice(b"{\"pi\":");
            Num::Float(*pi).write_to(out);
            let _ = write!(out, ",\"samples\":{samples},\"chunks\":{chunks}}}");
        }
        Output::Word(w) => json_str(out, w),
        Output::Users(u) => write_users_json(out, u),
        Output::Info(pairs) => {
            out.push(b'{');
            for (i, (k, v)) in pairs.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                json_str(out, k);
                out.push(b':');
                match v {
                    InfoValue::Int(n) => {
                        let _ = write!(out, "{n}");
                    }
                    InfoValue::Text(t) => json_str(out, t),
                    InfoValue::Bool(b) => {
                        let _ = write!(out, "{b}");
                    }
                }
            }
            out.push(b'}');
        }
        Output::Help(names) => {
            out.push(b'[');
            for (i, n) in names.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                json_str(out, n);
            }
            out.push(b']');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(id: Option<Id>, r: Output) -> String {
        let mut v = Vec::new();
        write_ok(&mut v, id.as_ref(), false, &r);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn text_replies() {
        assert_eq!(text(None, Output::Word("pong")), "OK pong\n");
        assert_eq!(
            text(Some(Id::Text("42".into())), Output::Num(Num::Int(2))),
            "#42 OK 2\n"
        );
        let mut v = Vec::new();
        write_err(&mut v, None, false, Code::Parse, "bad\nthing");
        assert_eq!(v, b"ERR parse bad thing\n");
    }

    #[test]
    fn json_replies_are_valid_json() {
        let mut v = Vec::new();
        write_ok(
            &mut v,
            Some(&Id::Int(7)),
            true,
            &Output::Pi {
                pi: 3.25,
                samples: 4,
                chunks: 1,
            },
        );
        let j: serde_json::Value = serde_json::from_slice(&v).unwrap();
        assert_eq!(j["id"], 7);
        assert_eq!(j["result"]["pi"], 3.25);
        v.clear();
        write_err(
            &mut v,
            Some(&Id::Text("x".into())),
            true,
            Code::Empty,
            "no \"values\"",
        );
        let j: serde_json::Value = serde_json::from_slice(&v).unwrap();
        assert_eq!(j["error"], "empty");
        assert_eq!(j["ok"], false);
        v.clear();
        write_ok(&mut v, None, true, &Output::Users(vec![("a\"b".into(), 3)]));
        let j: serde_json::Value = serde_json::from_slice(&v).unwrap();
        assert_eq!(j["result"][0]["request_count"], 3);
    }
}
