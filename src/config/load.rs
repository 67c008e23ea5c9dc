//! Reading the configuration files, merging conf.d into the main file, and
//! turning serde's errors into "file:line: key" messages.
//!
//! Merging happens on the span-carrying TOML trees (`toml::de::DeTable`)
//! before serde sees anything, so the merge rules (tables key by key,
//! `[[listener]]` appended, other values replaced) are written once and the
//! raw structs stay plain. To keep every value's origin, each file's spans are
//! shifted by a per-file base offset: one global offset then names both the
//! file and the byte in it ([`Sources::at`]).

use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeArray, DeTable, DeValue};

use super::raw::RawConfig;
use super::{Located, NOWHERE};

/// Where the main configuration comes from.
pub(super) enum Main {
    File(PathBuf),
    Embedded,
}

/// One configuration text and where its spans start in the global offsets.
pub(super) struct Source {
    /// `None` for the embedded default.
    pub path: Option<PathBuf>,
    pub text: String,
    base: usize,
}

/// Every text that makes up the configuration, main file first.
pub(super) struct Sources {
    pub files: Vec<Source>,
    /// The absolute folder of the main file; `None` for the embedded default.
    pub main_dir: Option<PathBuf>,
}

/// The name the embedded default goes by in origins and messages.
pub(super) const EMBEDDED_NAME: &str = "embedded default";

impl Sources {
    fn new(texts: Vec<(Option<PathBuf>, String)>, main_dir: Option<PathBuf>) -> Sources {
        let mut base = 0;
        let files = texts
            .into_iter()
            .map(|(path, text)| {
                let s = Source { path, base, text };
                // The +1 keeps an offset at the very end of one file (an error
                // "at end of input") from being read as the next file's start.
                base += s.text.len() + 1;
                s
            })
            .collect();
        Sources { files, main_dir }
    }

    /// The files actually read, in order (none for the embedded default).
    pub fn loaded(&self) -> Vec<PathBuf> {
        self.files.iter().filter_map(|f| f.path.clone()).collect()
    }

    fn name(source: &Source) -> String {
        match &source.path {
            Some(p) => p.display().to_string(),
            None => EMBEDDED_NAME.to_string(),
        }
    }

    /// `"path:line"` for a global offset.
    pub fn at(&self, span: &Range<usize>) -> String {
        let offset = span.start;
        let Some(f) = self.files.iter().rev().find(|f| f.base <= offset) else {
            return "?".to_string();
        };
        let local = (offset - f.base).min(f.text.len());
        format!("{}:{}", Sources::name(f), line_of(&f.text, local))
    }

    /// A listener's origin: `"path:line"`, or [`EMBEDDED_NAME`].
    pub fn origin(&self, span: &Range<usize>) -> String {
        if self.main_dir.is_none() {
            EMBEDDED_NAME.to_string()
        } else {
            self.at(span)
        }
    }
}

/// The 1-based line holding byte `offset` of `text`.
pub(super) fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    1 + text.as_bytes()[..end].iter().filter(|&&b| b == b'\n').count()
}

/// Reads the main file and its conf.d drop-ins.
pub(super) fn read_sources(main: &Main) -> Result<Sources, Vec<String>> {
    let path = match main {
        Main::Embedded => {
            return Ok(Sources::new(
                vec![(None, super::EMBEDDED_DEFAULT.to_string())],
                None,
            ));
        }
        Main::File(p) => p,
    };
    // Absolute from the start, so every path resolved against the main
    // file's folder (and every message) stays valid whatever the cwd.
    let path = std::path::absolute(path).map_err(|e| vec![format!("{}: {e}", path.display())])?;
    let main_dir = path
        .parent()
        .map_or_else(|| PathBuf::from("/"), Path::to_path_buf);
    let mut errors = Vec::new();
    let mut texts = Vec::new();
    match read_text(&path) {
        Ok(t) => texts.push((Some(path.clone()), t)),
        Err(e) => errors.push(e),
    }
    match drop_ins(&main_dir.join("conf.d")) {
        Ok(files) => {
            for f in files {
                match read_text(&f) {
                    Ok(t) => texts.push((Some(f), t)),
                    Err(e) => errors.push(e),
                }
            }
        }
        Err(e) => errors.push(e),
    }
    if errors.is_empty() {
        Ok(Sources::new(texts, Some(main_dir)))
    } else {
        Err(errors)
    }
}

fn read_text(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))
}

/// The `*.toml` files of a conf.d folder in lexical order; none when the
/// folder does not exist. Hidden files are skipped like the shell's `*` would,
/// so an editor's `.10-x.toml.swp` or `.#x.toml` is never loaded.
fn drop_ins(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: cannot list: {e}", dir.display())),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: cannot list: {e}", dir.display()))?;
        let name = entry.file_name();
        let name = name.as_encoded_bytes();
        if !name.ends_with(b".toml") || name.starts_with(b".") {
            continue;
        }
        let path = entry.path();
        // metadata() follows symlinks: a link to a file counts, a folder
        // named x.toml does not.
        if std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            files.push(path);
        }
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(files)
}

/// Parses every source and merges them in order into one tree with global
/// spans. Syntax errors of all files are reported together.
pub(super) fn parse_and_merge(sources: &Sources) -> Result<Spanned<DeTable<'_>>, Vec<String>> {
    let mut errors = Vec::new();
    let mut root = DeTable::new();
    for f in &sources.files {
        let (tree, errs) = DeTable::parse_recoverable(&f.text);
        if !errs.is_empty() {
            for e in errs {
                let at = match e.span() {
                    Some(s) => format!("{}:{}", Sources::name(f), line_of(&f.text, s.start)),
                    None => Sources::name(f),
                };
                errors.push(format!("{at}: invalid TOML: {}", e.message()));
            }
            continue;
        }
        merge(&mut root, shift_table(tree.into_inner(), f.base), true);
    }
    if errors.is_empty() {
        let end = sources.files.last().map_or(0, |f| f.base + f.text.len());
        Ok(Spanned::new(0..end, root))
    } else {
        Err(errors)
    }
}

fn shift_table(table: DeTable<'_>, base: usize) -> DeTable<'_> {
    let mut out = DeTable::new();
    for (k, v) in table {
        out.insert(shift(k, base), shift_value(v, base));
    }
    out
}

fn shift<T>(s: Spanned<T>, base: usize) -> Spanned<T> {
    let span = s.span();
    Spanned::new(span.start + base..span.end + base, s.into_inner())
}

fn shift_value(v: Spanned<DeValue<'_>>, base: usize) -> Spanned<DeValue<'_>> {
    let v = shift(v, base);
    let span = v.span();
    let inner = match v.into_inner() {
        DeValue::Table(t) => DeValue::Table(shift_table(t, base)),
        DeValue::Array(a) => DeValue::Array(a.into_iter().map(|e| shift_value(e, base)).collect()),
        other => other,
    };
    Spanned::new(span, inner)
}

/// Merges `src` into `dst`: tables key by key, the top-level `listener`
/// array appended, anything else replaced by `src`'s value.
fn merge<'a>(dst: &mut DeTable<'a>, src: DeTable<'a>, top: bool) {
    for (k, v) in src {
        let name = k.get_ref().to_string();
        let old = dst.get(name.as_str()).map(|o| o.get_ref());
        let both_tables = matches!(old, Some(DeValue::Table(_))) && matches!(v.get_ref(), DeValue::Table(_));
        let append = top
            && name == "listener"
            && matches!(old, Some(DeValue::Array(_)))
            && matches!(v.get_ref(), DeValue::Array(_));
        if both_tables || append {
            if let Some(old) = dst.get_mut(name.as_str()) {
                match (old.get_mut(), v.into_inner()) {
                    (DeValue::Table(d), DeValue::Table(s)) => merge(d, s, false),
                    (DeValue::Array(d), DeValue::Array(s)) => s.into_iter().for_each(|e| d.push(e)),
                    _ => {} // the types were checked just above
                }
            }
            continue;
        }
        // Remove first: inserting over an existing key would keep the old
        // key, and with it the old file's span.
        dst.remove(name.as_str());
        dst.insert(k, v);
    }
}

/// Deserializes the merged tree into the raw structs. serde stops at the
/// first error, so each error's entry is removed from the tree and the rest
/// deserialized again: the operator sees every unknown key at once.
pub(super) fn deserialize(
    mut tree: Spanned<DeTable<'_>>,
    sources: &Sources,
) -> (Option<RawConfig>, Vec<Located>) {
    // More than this many errors is a wrong file, not a list of typos.
    const MAX_ERRORS: usize = 50;
    let mut errors = Vec::new();
    while errors.len() < MAX_ERRORS {
        let de = toml::de::Deserializer::from(tree.clone());
        let e = match RawConfig::deserialize(de) {
            Ok(raw) => return (Some(raw), errors),
            Err(e) => e,
        };
        let Some(span) = e.span() else {
            errors.push((NOWHERE, e.message().to_string()));
            return (None, errors);
        };
        let mut best = None;
        find(tree.get_ref(), &span, &mut Vec::new(), &mut best);
        let Some(hit) = best.filter(|h| remove(tree.get_mut(), &h.path)) else {
            errors.push((span.start, format!("{}: {}", sources.at(&span), e.message())));
            return (None, errors);
        };
        errors.push((span.start, describe(&e, &span, &hit, sources)));
    }
    errors.push((NOWHERE, "too many errors; giving up".to_string()));
    (None, errors)
}

#[derive(Clone)]
enum Seg {
    Key(String),
    Index(usize),
}

struct Hit {
    path: Vec<Seg>,
    on_key: bool,
}

/// Finds the deepest entry whose key or value has exactly `span` (serde's
/// errors carry the span of the offending key or value). Deepest, because a
/// `[[listener]]` array and its first table share the header's span.
fn find(t: &DeTable<'_>, span: &Range<usize>, path: &mut Vec<Seg>, best: &mut Option<Hit>) {
    for (k, v) in t.iter() {
        path.push(Seg::Key(k.get_ref().to_string()));
        if k.span() == *span {
            record(path, true, best);
        }
        find_value(v, span, path, best);
        path.pop();
    }
}

fn find_value(v: &Spanned<DeValue<'_>>, span: &Range<usize>, path: &mut Vec<Seg>, best: &mut Option<Hit>) {
    if v.span() == *span {
        record(path, false, best);
    }
    match v.get_ref() {
        DeValue::Table(t) => find(t, span, path, best),
        DeValue::Array(a) => {
            for (i, e) in a.iter().enumerate() {
                path.push(Seg::Index(i));
                find_value(e, span, path, best);
                path.pop();
            }
        }
        _ => {}
    }
}

fn record(path: &[Seg], on_key: bool, best: &mut Option<Hit>) {
    if best.as_ref().is_none_or(|b| path.len() >= b.path.len()) {
        *best = Some(Hit {
            path: path.to_vec(),
            on_key,
        });
    }
}

fn remove(t: &mut DeTable<'_>, path: &[Seg]) -> bool {
    match path {
        [Seg::Key(k)] => t.remove(k.as_str()).is_some(),
        [Seg::Key(k), rest @ ..] => match t.get_mut(k.as_str()) {
            Some(v) => remove_in_value(v.get_mut(), rest),
            None => false,
        },
        _ => false,
    }
}

fn remove_in_value(v: &mut DeValue<'_>, path: &[Seg]) -> bool {
    match (v, path) {
        (DeValue::Table(t), _) => remove(t, path),
        (DeValue::Array(a), [Seg::Index(i)]) if *i < a.len() => {
            let old = std::mem::replace(a, DeArray::new());
            *a = old
                .into_iter()
                .enumerate()
                .filter(|(j, _)| j != i)
                .map(|(_, e)| e)
                .collect();
            true
        }
        (DeValue::Array(a), [Seg::Index(i), rest @ ..]) => match a.get_mut(*i) {
            Some(e) => remove_in_value(e.get_mut(), rest),
            None => false,
        },
        _ => false,
    }
}

/// "in [server]", "in [[listener]]", "in [ops.pi]", "at the top level".
fn table_label(path: &[Seg]) -> String {
    let keys: Vec<&str> = path
        .iter()
        .filter_map(|s| match s {
            Seg::Key(k) => Some(k.as_str()),
            Seg::Index(_) => None,
        })
        .collect();
    match path.last() {
        None => "at the top level".to_string(),
        Some(Seg::Index(_)) => format!("in [[{}]]", keys.join(".")),
        Some(Seg::Key(_)) => format!("in [{}]", keys.join(".")),
    }
}

fn describe(e: &toml::de::Error, span: &Range<usize>, hit: &Hit, sources: &Sources) -> String {
    let at = sources.at(span);
    let msg = e.message();
    let (item, parent) = match hit.path.as_slice() {
        [parent @ .., Seg::Key(k), Seg::Index(i)] => (format!("element {} of `{k}`", i + 1), parent),
        [parent @ .., Seg::Key(k)] => (format!("`{k}`"), parent),
        [parent @ .., Seg::Index(i)] => (format!("element {}", i + 1), parent),
        [] => (String::new(), &[][..]),
    };
    if hit.on_key && msg.starts_with("unknown field") {
        let hint = msg
            .split_once(", ")
            .map(|(_, h)| format!(" ({h})"))
            .unwrap_or_default();
        return format!("{at}: unknown key {item} {}{hint}", table_label(parent));
    }
    format!("{at}: {item} {}: {}", table_label(parent), plain_types(msg))
}

/// serde speaks Rust ("expected i64", "a map"); operators read TOML.
fn plain_types(msg: &str) -> String {
    let Some((head, expected)) = msg.split_once(", expected ") else {
        return msg.to_string();
    };
    let expected = match expected {
        "i64" => "an integer",
        "a sequence" => "an array",
        "a map" => "a table",
        e if e.starts_with("struct ") => "a table",
        e => e,
    };
    format!("{head}, expected {expected}")
}
