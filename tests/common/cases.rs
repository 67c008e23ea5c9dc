//! Case files: `REQUEST <tab> => <tab> REPLY`, one case a line
//! (tests/cases/line-protocol.txt, the product contract's examples, for
//! tests/cases.rs; tests/cases/bad-inputs.txt, the hostile-input corpus,
//! for tests/abuse.rs), and how a reply is compared with what they expect.
//! Every case knows its file and line, and failures name them.

/// One case of a case file.
pub struct Case {
    /// The case file's path (relative to the repository), for messages.
    pub file: String,
    /// Line number in the case file, for messages.
    pub line: usize,
    /// The request as sent, its escapes decoded.
    pub request: Vec<u8>,
    pub expected: String,
}

impl Case {
    /// The request as text (case files are UTF-8 but for their `\xHH`
    /// escapes, which a lossy conversion shows as U+FFFD).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.request).into_owned()
    }

    /// `file:line "request"`, for messages.
    pub fn shown(&self) -> String {
        format!(
            "{}:{} {:?}",
            self.file,
            self.line,
            String::from_utf8_lossy(&self.request)
        )
    }
}

/// Decodes the escapes of a case file's requests: `\t`, `\r`, `\\` and
/// `\xHH`; any other backslash stands for itself.
fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() {
            let simple = match b[i + 1] {
                b't' => Some(b'\t'),
                b'r' => Some(b'\r'),
                b'\\' => Some(b'\\'),
                _ => None,
            };
            if let Some(c) = simple {
                out.push(c);
                i += 2;
                continue;
            }
            if b[i + 1] == b'x'
                && let Some(hex) = s.get(i + 2..i + 4)
                && let Ok(v) = u8::from_str_radix(hex, 16)
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// The cases of the case file at `path`, relative to the repository (the
/// folder of taskd's Cargo.toml); messages name it that way.
pub fn read_cases(path: &str) -> Vec<Case> {
    let full = format!("{}/{path}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"));
    parse_cases(path, &text)
}

/// The cases of `text`, the case file `file`. A case is any line with a
/// tab-separated `=>`, also one whose request starts with `#id`; other lines
/// are comments (`#`) or blank.
pub fn parse_cases(file: &str, text: &str) -> Vec<Case> {
    text.lines()
        .enumerate()
        .filter_map(|(i, l)| match l.split_once("\t=>\t") {
            Some(pair) => Some((i, pair)),
            None => {
                assert!(
                    l.starts_with('#') || l.trim().is_empty(),
                    "{file}:{}: neither a case nor a comment: {l:?}",
                    i + 1
                );
                None
            }
        })
        .map(|(i, (req, exp))| {
            let request = unescape(req);
            assert!(
                !request.contains(&b'\n'),
                "{file}:{}: a request is one line",
                i + 1
            );
            Case {
                file: file.to_string(),
                line: i + 1,
                request,
                expected: exp.to_string(),
            }
        })
        .collect()
}

/// Compares JSON values, where the expected string "*" matches any string
/// and numbers match by value and by spelling.
fn json_matches(expected: &serde_json::Value, got: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (expected, got) {
        (Value::String(e), Value::String(_)) if e == "*" => true,
        (Value::Object(e), Value::Object(g)) => {
            e.len() == g.len()
                && e.iter()
                    .all(|(k, v)| g.get(k).is_some_and(|gv| json_matches(v, gv)))
        }
        (Value::Number(e), Value::Number(g)) => e.as_f64() == g.as_f64() && e.to_string() == g.to_string(),
        _ => expected == got,
    }
}

/// Whether a reply line matches a case's expectation: JSON as JSON, text
/// exactly, or up to a free-text message written `*`.
pub fn reply_matches(expected: &str, got: &str) -> bool {
    if expected.starts_with('{') {
        let e: serde_json::Value = serde_json::from_str(expected).expect("expected JSON");
        return serde_json::from_str(got).is_ok_and(|g| json_matches(&e, &g));
    }
    match expected.strip_suffix(" *") {
        // Only the code is fixed; the message is free text.
        Some(prefix) => got.starts_with(&format!("{prefix} ")) && got.len() > prefix.len() + 1,
        None => got == expected,
    }
}
