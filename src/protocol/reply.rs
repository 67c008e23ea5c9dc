//! Reply lines, text and JSON. Numbers are written by `Num::write_to` in
//! both forms, because serde_json's own float output (`31.0`) is not the
//! ECMAScript form the contract asks for. Nothing here goes through
//! `core::fmt`: a reply is a handful of appends to the output buffer.

use super::{Code, Id};
use crate::numbers::Num;
use crate::ops::{InfoValue, Output};

/// An integer's decimal digits.
pub fn push_int(out: &mut Vec<u8>, n: impl Into<i128>) {
    let n: i128 = n.into();
    match u64::try_from(n) {
        Ok(u) => crate::numbers::write_u64(out, u),
        Err(_) => Num::Int(n).write_to(out),
    }
}

/// A JSON string. Most strings here (names, ids, codes, messages) need no
/// escape and are copied as they are; the rest go through serde_json, and
/// U+2028, U+2029 and U+FEFF are escaped too, so that a line stays one
/// line for every JSON reader.
pub fn json_str(out: &mut Vec<u8>, s: &str) {
    let plain = s
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\');
    if plain {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
        return;
    }
    // Writing a &str to a Vec cannot fail.
    let start = out.len();
    let _ = serde_json::to_writer(&mut *out, s);
    if s.contains(['\u{2028}', '\u{2029}', '\u{feff}']) {
        let escaped = String::from_utf8_lossy(&out[start..])
            .replace('\u{2028}', "\\u2028")
            .replace('\u{2029}', "\\u2029")
            .replace('\u{feff}', "\\ufeff");
        out.truncate(start);
        out.extend_from_slice(escaped.as_bytes());
    }
}

pub fn write_id(out: &mut Vec<u8>, id: &Id) {
    match id {
        // The id grammar is plain ASCII: nothing to escape.
        Id::Text(s) => {
            out.push(b'"');
            out.extend_from_slice(s.as_bytes());
            out.push(b'"');
        }
        Id::Int(n) => push_int(out, *n),
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
            out.push(b'#');
            push_int(out, *n);
            out.push(b' ');
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

/// `"ok":true,"result":…`: the fields of a JSON success, in replies and
/// in the results log.
pub fn write_json_ok_fields(out: &mut Vec<u8>, result: &Output) {
    out.extend_from_slice(b"\"ok\":true,\"result\":");
    write_json_result(out, result);
}

/// `"ok":false,"error":code,"message":…`: the fields of a JSON error, in
/// replies, HTTP error bodies and the results log.
pub fn write_json_err_fields(out: &mut Vec<u8>, code: &str, message: &str) {
    out.extend_from_slice(b"\"ok\":false,\"error\":");
    json_str(out, code);
    out.extend_from_slice(b",\"message\":");
    json_str(out, message);
}

/// The JSON line of an error: `{"id"?,"ok":false,"error":…,"message":…}`.
pub fn write_json_err(out: &mut Vec<u8>, id: Option<&Id>, code: &str, message: &str) {
    json_prefix(out, id);
    write_json_err_fields(out, code, message);
    out.extend_from_slice(b"}\n");
}

/// `[#id ]OK result\n`, or the JSON line `{"id"?,"ok":true,"result":…}`.
pub fn write_ok(out: &mut Vec<u8>, id: Option<&Id>, json: bool, result: &Output) {
    if json {
        json_prefix(out, id);
        write_json_ok_fields(out, result);
        out.extend_from_slice(b"}\n");
    } else {
        text_prefix(out, id);
        out.extend_from_slice(b"OK ");
        write_text_result(out, result);
        out.push(b'\n');
    }
}

/// `[#id ]ERR code message\n`, or the JSON line of an error.
pub fn write_err(out: &mut Vec<u8>, id: Option<&Id>, json: bool, code: Code, message: &str) {
    if json {
        write_json_err(out, id, code.as_str(), message);
    } else {
        text_prefix(out, id);
        out.extend_from_slice(b"ERR ");
        out.extend_from_slice(code.as_str().as_bytes());
        out.push(b' ');
        out.extend(
            message
                .bytes()
                .map(|b| if b == b'\n' || b == b'\r' { b' ' } else { b }),
        );
        out.push(b'\n');
    }
}

/// The `users` array: `[{"request_count":3,"username":"alice"},…]`.
pub fn write_users_json<'a>(out: &mut Vec<u8>, users: impl IntoIterator<Item = (&'a str, u64)>) {
    out.push(b'[');
    for (i, (name, count)) in users.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"request_count\":");
        push_int(out, count);
        out.extend_from_slice(b",\"username\":");
        json_str(out, name);
        out.push(b'}');
    }
    out.push(b']');
}

fn write_stats(out: &mut Vec<u8>, s: &crate::ops::list::Stats, json: bool) {
    let [count, min, max, mean, median]: [&[u8]; 5] = if json {
        [
            b"{\"count\":",
            b",\"min\":",
            b",\"max\":",
            b",\"mean\":",
            b",\"median\":",
        ]
    } else {
        [b"count=", b" min=", b" max=", b" mean=", b" median="]
    };
    out.extend_from_slice(count);
    push_int(out, s.count as u64);
    for (label, n) in [(min, s.min), (max, s.max), (mean, s.mean), (median, s.median)] {
        out.extend_from_slice(label);
        n.write_to(out);
    }
    if json {
        out.push(b'}');
    }
}

pub fn write_text_result(out: &mut Vec<u8>, result: &Output) {
    match result {
        Output::Num(n) => n.write_to(out),
        Output::Stats(s) => write_stats(out, s, false),
        Output::Pi { pi, samples, chunks } => {
            Num::Float(*pi).write_to(out);
            out.extend_from_slice(b" samples=");
            push_int(out, *samples);
            out.extend_from_slice(b" chunks=");
            push_int(out, *chunks);
        }
        Output::Word(w) => out.extend_from_slice(w.as_bytes()),
        Output::Users(u) => out.extend_from_slice(&u.json),
        Output::Info(pairs) => {
            for (i, (k, v)) in pairs.iter().enumerate() {
                if i > 0 {
                    out.push(b' ');
                }
                out.extend_from_slice(k.as_bytes());
                out.push(b'=');
                match v {
                    InfoValue::Int(n) => push_int(out, *n),
                    InfoValue::Text(t) => out.extend_from_slice(t.as_bytes()),
                    InfoValue::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
                }
            }
        }
        Output::Help(names) => {
            for (i, n) in names.iter().enumerate() {
                if i > 0 {
                    out.push(b' ');
                }
                out.extend_from_slice(n.as_bytes());
            }
        }
    }
}

pub fn write_json_result(out: &mut Vec<u8>, result: &Output) {
    match result {
        Output::Num(n) => n.write_to(out),
        Output::Stats(s) => write_stats(out, s, true),
        Output::Pi { pi, samples, chunks } => {
            out.extend_from_slice(b"{\"pi\":");
            Num::Float(*pi).write_to(out);
            out.extend_from_slice(b",\"samples\":");
            push_int(out, *samples);
            out.extend_from_slice(b",\"chunks\":");
            push_int(out, *chunks);
            out.push(b'}');
        }
        Output::Word(w) => json_str(out, w),
        Output::Users(u) => out.extend_from_slice(&u.json),
        Output::Info(pairs) => {
            out.push(b'{');
            for (i, (k, v)) in pairs.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                json_str(out, k);
                out.push(b':');
                match v {
                    InfoValue::Int(n) => push_int(out, *n),
                    InfoValue::Text(t) => json_str(out, t),
                    InfoValue::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
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
    use crate::ops::UsersTable;
    use crate::protocol::Name;

    fn text(id: Option<Id>, out: Output) -> String {
        let mut v = Vec::new();
        write_ok(&mut v, id.as_ref(), false, &out);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn text_replies() {
        assert_eq!(text(None, Output::Word("pong")), "OK pong\n");
        assert_eq!(
            text(Name::id(b"42").map(Id::Text), Output::Num(Num::Int(2))),
            "#42 OK 2\n"
        );
        assert_eq!(text(Some(Id::Int(-3)), Output::Word("bye")), "#-3 OK bye\n");
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
            Name::id(b"x").map(Id::Text).as_ref(),
            true,
            Code::Empty,
            "no \"values\"",
        );
        let j: serde_json::Value = serde_json::from_slice(&v).unwrap();
        assert_eq!(j["error"], "empty");
        assert_eq!(j["ok"], false);
        v.clear();
        let table = UsersTable::render(vec![("a\"b", 3)]);
        write_ok(&mut v, None, true, &Output::Users(table));
        let j: serde_json::Value = serde_json::from_slice(&v).unwrap();
        assert_eq!(j["result"][0]["request_count"], 3);
    }

    #[test]
    fn line_separators_are_escaped() {
        for s in ["a\u{2028}b", "\u{feff}", "x\u{2029}", "\u{1}"] {
            let mut v = Vec::new();
            json_str(&mut v, s);
            let text = String::from_utf8(v.clone()).unwrap();
            assert!(
                !text.contains(['\u{2028}', '\u{2029}', '\u{feff}', '\u{1}']),
                "{text}"
            );
            assert_eq!(serde_json::from_slice::<String>(&v).unwrap(), s);
        }
    }
}
