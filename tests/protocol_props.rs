//! Property tests of the line protocol's parser, through the library: no
//! input makes it panic, and every request written by the
//! grammar of taskd(8)'s PROTOCOL parses to what it says (id, user, op, arguments, values).

#![allow(clippy::result_large_err)]

mod common;

use proptest::prelude::*;

use taskd::numbers::{Values, count_text_values, parse_json_values, parse_text_list};
use taskd::ops::{ArgKind, OPS, lookup};
use taskd::protocol::{Args, Format, Id, Name, ParseCtx, Syntax, parse_line};

const MAX_VALUES: usize = 1000;
const MAX_SAMPLES: u64 = 10_000_000_000;

fn with_ctx<T>(udp: bool, f: impl FnOnce(&ParseCtx) -> T) -> T {
    let allowed = vec![true; OPS.len()];
    let ctx = ParseCtx {
        max_values: MAX_VALUES,
        max_samples: MAX_SAMPLES,
        allowed: &allowed,
        udp,
    };
    f(&ctx)
}

/// Parses `line` as the event loop would, then its values as a worker
/// would; none of it may panic.
fn parse_everything(line: &[u8], udp: bool) {
    let parsed = with_ctx(udp, |ctx| parse_line(line, ctx));
    if let Ok(req) = parsed
        && let Args::Values { span, syntax, count } = req.args
    {
        assert!((1..=MAX_VALUES).contains(&count));
        let values = &line[span];
        match syntax {
            Syntax::Text => {
                assert_eq!(count_text_values(values), count);
                let _ = parse_text_list(values);
            }
            Syntax::JsonArray => {
                let _ = parse_json_values(values);
            }
        }
    }
}

/// Pieces that make random lines reach deep into the parser.
const VOCABULARY: &[&str] = &[
    "#",
    "@",
    "#id ",
    "@bob ",
    "max",
    "MIN",
    "sum",
    "mean",
    "median",
    "stats",
    "pi",
    "ping",
    "users",
    "info",
    "help",
    "quit",
    "nosuchop",
    " ",
    "\t",
    "  ",
    ",",
    "[",
    "]",
    "{",
    "}",
    "\"",
    ":",
    "0",
    "1",
    "-",
    "+",
    ".",
    "e",
    "E",
    "5.",
    ".5",
    "1e308",
    "1e999",
    "-0",
    "9223372036854775808",
    "nan",
    "inf",
    "0x10",
    "1_000",
    "\"op\"",
    "\"values\"",
    "\"id\"",
    "\"user\"",
    "\"samples\"",
    "\"chunks\"",
    "\"max\"",
    "\"pi\"",
    "null",
    "true",
    "[[[[",
    "]]]]",
    "\\",
    "\\u0000",
    "\u{e9}",
    "\r",
    "\x00",
    "18446744073709551616",
    "1024",
    "1025",
];

/// Cases of the byte-level fuzz properties: 2000 by default, more with
/// TASKD_FUZZ_CASES (e.g. a long release-mode run before a release).
fn fuzz_cases() -> u32 {
    std::env::var("TASKD_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

fn token_soup() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            3 => prop::sample::select(VOCABULARY).prop_map(|s| s.as_bytes().to_vec()),
            1 => prop::collection::vec(any::<u8>(), 1..4),
        ],
        0..40,
    )
    .prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(fuzz_cases()))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300), udp in any::<bool>()) {
        parse_everything(&bytes, udp);
        let _ = parse_text_list(&bytes);
        let _ = count_text_values(&bytes);
    }

    #[test]
    fn token_soup_never_panics(bytes in token_soup(), udp in any::<bool>()) {
        parse_everything(&bytes, udp);
        let _ = parse_text_list(&bytes);
    }
}

/// One value as text, with what it must parse to: `Some(i)` for an integer
/// text within i64, else None (then the value is the text read as a double).
#[derive(Debug, Clone)]
struct Value {
    text: String,
    int: Option<i64>,
}

fn digits(range: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = String> {
    prop::collection::vec(prop::char::range('0', '9'), range).prop_map(|d| d.into_iter().collect())
}

/// `[sign] digits [. digits] [exponent]`, with at least one digit before
/// the exponent (`5.` and `.5` included), and exponents small enough that
/// every value is finite.
fn value() -> impl Strategy<Value = Value> {
    let sign = prop::sample::select(vec!["", "", "-", "+"]);
    let fraction = prop::option::of(digits(0..=20));
    let exponent = prop::option::of((
        prop::sample::select(vec!["e", "E"]),
        prop::sample::select(vec!["", "-", "+"]),
        digits(1..=2),
    ));
    (sign, digits(0..=21), fraction, exponent)
        .prop_filter("a value has a digit", |(_, int, frac, _)| {
            !int.is_empty() || frac.as_ref().is_some_and(|f| !f.is_empty())
        })
        .prop_map(|(sign, int, frac, exp)| {
            let mut text = format!("{sign}{int}");
            if let Some(f) = &frac {
                text.push('.');
                text.push_str(f);
            }
            if let Some((e, s, d)) = &exp {
                text.push_str(&format!("{e}{s}{d}"));
            }
            let int = if frac.is_none() && exp.is_none() {
                text.parse::<i64>().ok()
            } else {
                None
            };
            Value { text, int }
        })
}

/// The separator between two values: blanks, or one comma with optional
/// blanks around it.
fn separator() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ \t]{1,3}",
        ("[ \t]{0,2}", "[ \t]{0,2}").prop_map(|(a, b)| format!("{a},{b}")),
    ]
}

/// A value list as text, optionally in one pair of brackets, and the values.
fn value_list() -> impl Strategy<Value = (String, Vec<Value>)> {
    (
        prop::collection::vec((value(), separator()), 1..30),
        any::<bool>(),
    )
        .prop_map(|(items, bracketed)| {
            let mut text = String::new();
            for (i, (v, sep)) in items.iter().enumerate() {
                if i > 0 {
                    text.push_str(sep);
                }
                text.push_str(&v.text);
            }
            if bracketed {
                text = format!("[{text}]");
            }
            (text, items.into_iter().map(|(v, _)| v).collect())
        })
}

/// What the values must parse to: all integers within i64 give `Ints`,
/// anything else `Floats`, each the text read as the nearest double.
fn expected(values: &[Value]) -> Values {
    if values.iter().all(|v| v.int.is_some()) {
        Values::Ints(values.iter().map(|v| v.int.unwrap()).collect())
    } else {
        Values::Floats(
            values
                .iter()
                .map(|v| v.text.parse::<f64>().expect("a valid double"))
                .collect(),
        )
    }
}

/// An op name in a random mix of cases.
fn cased(name: &str, flips: u64) -> String {
    name.chars()
        .enumerate()
        .map(|(i, c)| {
            if flips >> (i % 64) & 1 == 1 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect()
}

#[derive(Debug, Clone)]
enum GenArgs {
    None,
    Values(String, Vec<Value>),
    Pi(u64, Option<u32>),
}

fn args_for(op: usize) -> BoxedStrategy<GenArgs> {
    match OPS[op].args {
        ArgKind::None => Just(GenArgs::None).boxed(),
        ArgKind::Values => value_list().prop_map(|(t, v)| GenArgs::Values(t, v)).boxed(),
        ArgKind::Pi => (1..=MAX_SAMPLES)
            .prop_flat_map(|samples| {
                let max_chunks = samples.min(1024) as u32;
                (Just(samples), prop::option::of(1..=max_chunks))
            })
            .prop_map(|(s, c)| GenArgs::Pi(s, c))
            .boxed(),
    }
}

#[derive(Debug, Clone)]
struct GenRequest {
    id: Option<String>,
    user: Option<String>,
    op: usize,
    op_text: String,
    args: GenArgs,
    /// Blanks after the id, after the user and after the op.
    blanks: [String; 3],
}

impl GenRequest {
    fn line(&self) -> String {
        let mut line = String::new();
        if let Some(id) = &self.id {
            line.push_str(&format!("#{id}{}", self.blanks[0]));
        }
        if let Some(user) = &self.user {
            line.push_str(&format!("@{user}{}", self.blanks[1]));
        }
        line.push_str(&self.op_text);
        match &self.args {
            GenArgs::None => {}
            GenArgs::Values(text, _) => line.push_str(&format!("{}{text}", self.blanks[2])),
            GenArgs::Pi(samples, chunks) => {
                line.push_str(&format!("{}{samples}", self.blanks[2]));
                if let Some(c) = chunks {
                    line.push_str(&format!("{}{c}", self.blanks[0]));
                }
            }
        }
        line
    }
}

fn request() -> impl Strategy<Value = GenRequest> {
    (0..OPS.len())
        .prop_flat_map(|op| {
            (
                prop::option::of("[A-Za-z0-9._:-]{1,64}"),
                prop::option::of("[A-Za-z0-9._-]{1,64}"),
                Just(op),
                any::<u64>(),
                args_for(op),
                ["[ \t]{1,3}", "[ \t]{1,3}", "[ \t]{1,3}"],
            )
        })
        .prop_map(|(id, user, op, flips, args, blanks)| GenRequest {
            id,
            user,
            op,
            op_text: cased(OPS[op].name, flips),
            args,
            blanks,
        })
}

proptest! {
    #[test]
    fn valid_requests_parse_to_what_they_say(r in request()) {
        let line = r.line();
        let req = with_ctx(false, |ctx| parse_line(line.as_bytes(), ctx))
            .unwrap_or_else(|rej| panic!("{line:?} refused: {rej:?}"));
        prop_assert_eq!(req.id, r.id.as_ref().and_then(|s| Name::id(s.as_bytes())).map(Id::Text), "{:?}", line);
        prop_assert_eq!(req.user, r.user.as_ref().and_then(|u| Name::user(u.as_bytes())), "{:?}", line);
        prop_assert_eq!(req.op, r.op, "{:?}", line);
        prop_assert_eq!(lookup(&r.op_text), Some(r.op));
        prop_assert_eq!(req.format, Format::Text);
        match (&r.args, &req.args) {
            (GenArgs::None, Args::None) => {}
            (GenArgs::Pi(s, c), Args::Pi { samples, chunks }) => {
                prop_assert_eq!((s, c), (samples, chunks), "{:?}", line);
            }
            (GenArgs::Values(text, values), Args::Values { span, syntax, count }) => {
                prop_assert_eq!(*count, values.len(), "{:?}", line);
                prop_assert_eq!(*syntax, Syntax::Text, "text values expected for {:?}", line);
                let parsed = parse_text_list(&line.as_bytes()[span.clone()])
                    .unwrap_or_else(|e| panic!("values of {line:?} refused: {e}"));
                prop_assert_eq!(parsed, expected(values), "{:?}", line);
                // The list alone, as the worker sees it.
                prop_assert_eq!(parse_text_list(text.as_bytes()).ok(), Some(expected(values)));
            }
            (g, a) => panic!("{line:?}: generated {g:?}, parsed {a:?}"),
        }
    }

    #[test]
    fn valid_json_requests_parse_to_what_they_say(r in request(), int_id in any::<i64>(), use_int in any::<bool>()) {
        let mut obj = serde_json::Map::new();
        let id = r.id.clone().map(|s| {
            if use_int { Id::Int(int_id) } else { Id::Text(Name::id(s.as_bytes()).expect("a generated id")) }
        });
        match &id {
            Some(Id::Int(i)) => { obj.insert("id".into(), (*i).into()); }
            Some(Id::Text(s)) => { obj.insert("id".into(), s.as_str().into()); }
            None => {}
        }
        if let Some(u) = &r.user {
            obj.insert("user".into(), u.clone().into());
        }
        obj.insert("op".into(), r.op_text.clone().into());
        match &r.args {
            GenArgs::None => {}
            GenArgs::Pi(s, c) => {
                obj.insert("samples".into(), (*s).into());
                if let Some(c) = c {
                    obj.insert("chunks".into(), (*c).into());
                }
            }
            // Values as strings holding numbers of the text grammar.
            GenArgs::Values(_, values) => {
                obj.insert(
                    "values".into(),
                    values.iter().map(|v| serde_json::Value::from(v.text.clone())).collect(),
                );
            }
        }
        let line = serde_json::Value::Object(obj).to_string();
        let req = with_ctx(false, |ctx| parse_line(line.as_bytes(), ctx))
            .unwrap_or_else(|rej| panic!("{line} refused: {rej:?}"));
        prop_assert_eq!(req.format, Format::Json);
        prop_assert_eq!(&req.id, &id, "{}", line);
        prop_assert_eq!(req.user, r.user.as_ref().and_then(|u| Name::user(u.as_bytes())), "{}", line);
        prop_assert_eq!(req.op, r.op, "{}", line);
        match (&r.args, &req.args) {
            (GenArgs::None, Args::None) => {}
            (GenArgs::Pi(s, c), Args::Pi { samples, chunks }) => {
                prop_assert_eq!((s, c), (samples, chunks), "{}", line);
            }
            (GenArgs::Values(_, values), Args::Values { span, syntax, count }) => {
                prop_assert_eq!(*count, values.len(), "{}", line);
                prop_assert_eq!(*syntax, Syntax::JsonArray, "JSON values expected for {}", line);
                let parsed = parse_json_values(&line.as_bytes()[span.clone()])
                    .unwrap_or_else(|e| panic!("values of {line} refused: {e}"));
                prop_assert_eq!(parsed, expected(values), "{}", line);
            }
            (g, a) => panic!("{line}: generated {g:?}, parsed {a:?}"),
        }
    }

    #[test]
    fn generated_value_lists_parse_back_to_their_numbers((text, values) in value_list()) {
        prop_assert_eq!(count_text_values(text.as_bytes()), values.len());
        prop_assert_eq!(parse_text_list(text.as_bytes()).ok(), Some(expected(&values)), "{:?}", text);
    }
}
