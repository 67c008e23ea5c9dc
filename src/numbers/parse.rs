//! Parsing request values from line-protocol text and from JSON.
//!
//! Lines can be 8 MB of numbers, and the worker parses them, so this is a hand-written
//! single-pass scanner over bytes: no UTF-8 validation of the line, no allocation per value,
//! digits read eight at a time, and integers and short decimals never reach a general float
//! parser (the others go to fast-float2's Eisel-Lemire, not std's UTF-8-checked `str::parse`).
//! This file defines the grammar and every error; the bulk of a long list (integers,
//! doubles of up to 19 digits, blanks and single commas) is taken 64 bytes at a time by
//! the fast loop in `fast.rs`, which stops wherever anything else begins and leaves it to the
//! scanner here. The event loop counts values with [`count_text_values`] before any parsing
//! (for `too-many` and the scheduling cost); the tokenizer here uses the same separator set,
//! so on valid input the two agree.

use crate::numbers::fast::{
    Isa, POW10, SLACK, SPAN, ZEROS, clinger, count_values, digit_run, eight_digits, fast_ints, is_sep, is_ws,
};
use crate::numbers::{ValueError, Values};
use crate::spare;

/// Counts values of a list argument the way the event loop does BEFORE parsing: the number of
/// maximal runs of bytes that are not space, tab, ',', '[' or ']'.
#[inline(never)]
pub fn count_text_values(args: &[u8]) -> usize {
    count_values(args, Isa::detect().for_len(args.len()))
}

/// What a value token turned out to be.
enum Scan {
    /// An integer within i64.
    Int(i64),
    /// A double computed exactly by the scanner (Clinger's fast path).
    Float(f64),
    /// Valid, but needs the full float parser: a double with many digits or a large
    /// exponent, or integer text outside i64.
    Slow,
    Invalid,
}

/// Reads 8 bytes at `i` as a little-endian word, if there are 8.
#[inline(always)]
fn word_at(b: &[u8], i: usize) -> Option<u64> {
    let chunk: [u8; 8] = b.get(i..i.checked_add(8)?)?.try_into().ok()?;
    Some(u64::from_le_bytes(chunk))
}

/// Reads a run of ASCII digits from `i` into `acc`, 8 at a time where the line allows.
/// Returns the end of the run and whether `acc` overflowed (then its value is meaningless,
/// but the run is still consumed so the token's extent is right).
#[inline(always)]
fn digits(b: &[u8], mut i: usize, acc: &mut u64) -> (usize, bool) {
    let mut overflow = false;
    // Eight bytes at a time: most numbers take one step and no per-digit branch.
    while let Some(w) = word_at(b, i) {
        let x = w ^ ZEROS;
        let n = digit_run(x);
        if n == 0 {
            return (i, overflow);
        }
        let part = eight_digits(x << (8 * (8 - n)));
        match acc
            .checked_mul(POW10[n as usize])
            .and_then(|a| a.checked_add(part))
        {
            Some(a) => *acc = a,
            None => overflow = true,
        }
        i += n as usize;
        if n < 8 {
            return (i, overflow);
        }
    }
    // The last bytes of the line, fewer than eight.
    while let Some(&c) = b.get(i) {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            break;
        }
        match acc.checked_mul(10).and_then(|a| a.checked_add(u64::from(d))) {
            Some(a) => *acc = a,
            None => overflow = true,
        }
        i += 1;
    }
    (i, overflow)
}

/// Scans the value starting at `start` and returns what it is and where its token ends. The
/// token is the maximal run of non-separators, so an invalid value's end is still the place
/// where the next separator starts.
#[inline(always)]
fn scan_value(b: &[u8], start: usize) -> (Scan, usize) {
    // Signs are random in real data: deciding without a branch avoids a mispredict per value.
    let first = b.get(start).copied().unwrap_or(0);
    let neg = first == b'-';
    let int_start = start + usize::from(neg || first == b'+');
    // All significant digits (integer and fraction) go into one u64; `big` marks text whose
    // digits do not fit, which is still scanned but left to the full float parser.
    let mut mantissa: u64 = 0;
    let (mut i, mut big) = digits(b, int_start, &mut mantissa);
    let mut digit_count = i - int_start;
    let mut float = false;
    let mut frac_digits = 0usize;
    if b.get(i) == Some(&b'.') {
        float = true;
        let frac_start = i + 1;
        let (end, overflow) = digits(b, frac_start, &mut mantissa);
        big |= overflow;
        frac_digits = end - frac_start;
        digit_count += frac_digits;
        i = end;
    }
    let mut ok = digit_count > 0;
    let mut exp: u64 = 0;
    let mut exp_neg = false;
    if ok && matches!(b.get(i), Some(b'e' | b'E')) {
        float = true;
        i += 1;
        match b.get(i) {
            Some(b'-') => {
                exp_neg = true;
                i += 1;
            }
            Some(b'+') => i += 1,
            _ => {}
        }
        let exp_start = i;
        let (end, overflow) = digits(b, exp_start, &mut exp);
        // An exponent too long for a u64 is far outside the fast path's range anyway.
        if overflow {
            exp = u64::MAX;
        }
        ok = end > exp_start;
        i = end;
    }
    if !ok || b.get(i).is_some_and(|&c| !is_sep(c)) {
        while b.get(i).is_some_and(|&c| !is_sep(c)) {
            i += 1;
        }
        return (Scan::Invalid, i);
    }
    if big {
        return (Scan::Slow, i);
    }
    if float {
        return (fast_float(neg, mantissa, frac_digits, exp, exp_neg), i);
    }
    let scan = if neg {
        if mantissa <= 1 << 63 {
            // 2^63 wraps to i64::MIN, whose negation is itself: exactly -2^63.
            Scan::Int((mantissa as i64).wrapping_neg())
        } else {
            Scan::Slow
        }
    } else if mantissa <= i64::MAX as u64 {
        Scan::Int(mantissa as i64)
    } else {
        Scan::Slow
    };
    (scan, i)
}

/// [`clinger`]'s fast path for a scanned double; everything else is `Scan::Slow`.
#[inline(always)]
fn fast_float(neg: bool, mantissa: u64, frac_digits: usize, exp: u64, exp_neg: bool) -> Scan {
    // Beyond 22 the fast path cannot apply, and the exponent may not fit an i64.
    if exp > 22 {
        return Scan::Slow;
    }
    // Decimal exponent of the last digit; both terms are small here, so no overflow.
    let e = if exp_neg { -(exp as i64) } else { exp as i64 } - frac_digits as i64;
    clinger(neg, mantissa, e).map_or(Scan::Slow, Scan::Float)
}

/// Parses text the scanner accepted as a valid value into a double, with fast-float2 (an
/// Eisel-Lemire parser, correctly rounded as std's `str::parse` is, without its UTF-8
/// check); `None` only if the scanner and that grammar ever disagreed, which the tests rule
/// out.
fn parse_f64(text: &[u8]) -> Option<f64> {
    fast_float2::parse(text).ok()
}

/// Quotes a piece of request text for an error message: at most 32 bytes, and anything that
/// could garble a reply line or a log (control bytes, non-ASCII, the quote and the backslash
/// themselves) as \xNN.
pub(super) fn quote(text: &[u8]) -> String {
    const MAX: usize = 32;
    let shown = &text[..text.len().min(MAX)];
    let mut s = String::with_capacity(shown.len() + 8);
    s.push('"');
    for &b in shown {
        if (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\' {
            s.push(char::from(b));
        } else {
            s.push_str(&format!("\\x{b:02X}"));
        }
    }
    s.push('"');
    if text.len() > MAX {
        s.push_str("...");
    }
    s
}

fn not_a_number(pos: usize, text: &[u8]) -> ValueError {
    ValueError::parse(format!("value {pos} {} is not a number", quote(text)))
}

fn out_of_range(pos: usize, text: &[u8]) -> ValueError {
    ValueError::range(format!("value {pos} {} is out of range", quote(text)))
}

/// Collects values as integers until the first one that is not, then as doubles.
struct Acc {
    /// Allocated for the final count (or an estimate of it): a switch to doubles keeps the
    /// capacity, so it allocates once.
    values: Values,
    /// The first value that overflowed a double. Reported only at the end, because a
    /// malformed value anywhere (`parse`) outranks an out-of-range one (`range`).
    range_error: Option<ValueError>,
}

impl Acc {
    fn new(capacity: usize) -> Self {
        Acc {
            values: Values::Ints(spare::ints(capacity)),
            range_error: None,
        }
    }

    #[inline(always)]
    fn push_int(&mut self, v: i64) {
        match &mut self.values {
            Values::Ints(ints) => ints.push(v),
            Values::Floats(floats) => floats.push(v as f64),
        }
    }

    fn push_float(&mut self, x: f64, pos: usize, text: &[u8]) {
        if !x.is_finite() && self.range_error.is_none() {
            self.range_error = Some(out_of_range(pos, text));
        }
        if let Values::Ints(ints) = &mut self.values {
            let ints = std::mem::take(ints);
            let mut floats = spare::floats(ints.capacity().max(ints.len() + 1));
            floats.extend(ints.iter().map(|&v| v as f64));
            spare::give_ints(ints);
            self.values = Values::Floats(floats);
        }
        if let Values::Floats(floats) = &mut self.values {
            floats.push(x);
        }
    }

    /// Handles one scanned, valid-or-not token at position `pos` (1-based).
    #[inline(always)]
    fn push_scanned(&mut self, scan: Scan, pos: usize, text: &[u8]) -> Result<(), ValueError> {
        match scan {
            Scan::Int(v) => self.push_int(v),
            Scan::Float(x) => self.push_float(x, pos, text),
            Scan::Slow => match parse_f64(text) {
                Some(x) => self.push_float(x, pos, text),
                None => return Err(not_a_number(pos, text)),
            },
            Scan::Invalid => return Err(not_a_number(pos, text)),
        }
        Ok(())
    }

    /// Makes sure the fast loop has its SLACK spare slots, `i` bytes into a line of `len`
    /// bytes that held `n` values so far: room for the rest of the line at the density so
    /// far, plus an eighth (never more than the rest could hold), when the estimate the
    /// parse started with runs out.
    fn room_for_rest(&mut self, len: usize, i: usize, n: usize) {
        let spare = match &self.values {
            Values::Ints(v) => v.capacity() - v.len(),
            Values::Floats(v) => v.capacity() - v.len(),
        };
        if spare >= SLACK {
            return;
        }
        let rest = len - i;
        let estimate = (rest as u128 * (n as u128 + 1) / i.max(1) as u128) as usize;
        let additional = (estimate + estimate / 8).min(rest / 2 + 1) + SLACK;
        match &mut self.values {
            Values::Ints(v) => v.reserve(additional),
            Values::Floats(v) => v.reserve(additional),
        }
    }

    fn finish(self) -> Result<Values, ValueError> {
        match self.range_error {
            Some(e) => Err(e),
            None => Ok(self.values),
        }
    }
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while b.get(i).copied().is_some_and(is_ws) {
        i += 1;
    }
    i
}

/// The token at `i` for an "unexpected" message: a single separator byte, or a run of
/// non-separators.
fn token_at(b: &[u8], i: usize) -> &[u8] {
    let rest = &b[i.min(b.len())..];
    match rest.first() {
        Some(&c) if is_sep(c) => &rest[..1],
        _ => {
            let end = rest.iter().position(|&c| is_sep(c)).unwrap_or(rest.len());
            &rest[..end]
        }
    }
}

/// Where in the list something unexpected was met, for messages.
fn place(n: usize) -> String {
    if n == 0 {
        "before the first value".to_string()
    } else {
        format!("after value {n}")
    }
}

/// Lines up to this long are not counted: see `expected_values`.
const SHORT: usize = 256;

/// Lines up to twice this long are counted exactly; longer ones are estimated from this
/// many bytes at their start.
const SAMPLE: usize = 16 * 1024;

/// How many values to allocate for: the count for short lines. For a long line a second pass
/// counting all values would cost a tenth of the parse, so the density of its start stands
/// for the whole, plus an eighth (never more than the line could hold: a byte and a
/// separator per value). Lists are rarely denser further on; when one is,
/// [`Acc::room_for_rest`] makes more room.
fn expected_values(args: &[u8], isa: Isa) -> usize {
    // A short line: its most values (one byte and a separator each) cost
    // less than counting them.
    if args.len() <= SHORT {
        return args.len() / 2 + 1;
    }
    if args.len() <= 2 * SAMPLE {
        return count_values(args, isa);
    }
    let head = count_values(&args[..SAMPLE], isa);
    let estimate = (args.len() as u128 * head as u128 / SAMPLE as u128) as usize;
    (estimate + estimate / 8 + 1).min(args.len() / 2 + 1)
}

/// Parses the argument text of a list op (everything after the op name, may be empty, may
/// contain arbitrary bytes incl. non-UTF-8). See taskd(8), PROTOCOL, "Values": values separated by
/// spaces/tabs and/or a single comma with optional spaces around it, optionally one pair of
/// square brackets around the whole list. All integers within i64 give [`Values::Ints`],
/// anything else [`Values::Floats`]; zero values give an empty `Values::Ints`.
// Not inlined: once per request, and callgrind's `--toggle-collect='*parse_text_list*'`
// (numbers::bench) needs it to be a function of its own.
#[inline(never)]
pub fn parse_text_list(args: &[u8]) -> Result<Values, ValueError> {
    parse_text_with(args, Isa::detect().for_len(args.len()))
}

/// [`parse_text_list`] with the given instruction set, which the tests vary.
pub(super) fn parse_text_with(args: &[u8], isa: Isa) -> Result<Values, ValueError> {
    if args.len() <= SHORT_INTS
        && let Some(ints) = short_ints(args)
    {
        return Ok(Values::Ints(ints));
    }
    // One allocation for the output as a rule, with the SLACK spare slots the fast loop
    // wants at the end.
    let mut acc = Acc::new(expected_values(args, isa) + SLACK);
    let mut i = skip_ws(args, 0);
    let bracketed = args.get(i) == Some(&b'[');
    if bracketed {
        i += 1;
    }
    let mut n = 0usize;
    let mut after_comma = false;
    let (mut skip_fast, mut fast_backoff) = (0u32, 1u32);
    loop {
        i = skip_ws(args, i);
        let Some(&c) = args.get(i) else {
            if after_comma {
                return Err(ValueError::parse(format!(
                    "missing value after \",\" following value {n}"
                )));
            }
            if bracketed {
                return Err(ValueError::parse("missing \"]\"".to_string()));
            }
            break;
        };
        match c {
            b',' => {
                if n == 0 || after_comma {
                    return Err(ValueError::parse(format!("unexpected \",\" {}", place(n))));
                }
                after_comma = true;
                i += 1;
            }
            b']' => {
                if after_comma {
                    return Err(ValueError::parse(format!(
                        "missing value after \",\" following value {n}"
                    )));
                }
                if !bracketed {
                    return Err(ValueError::parse(format!("unexpected \"]\" {}", place(n))));
                }
                i = skip_ws(args, i + 1);
                if i < args.len() {
                    return Err(ValueError::parse(format!(
                        "unexpected {} after \"]\"",
                        quote(token_at(args, i))
                    )));
                }
                break;
            }
            b'[' => {
                return Err(ValueError::parse(format!("unexpected \"[\" {}", place(n))));
            }
            _ => {
                // A value token always ends at a separator, so reaching another value here
                // means whitespace or a comma came between them: no check needed. Most
                // values are taken many at a time by the fast loop, which stops right after
                // a value, before anything it leaves to this loop.
                // The fast loop reads whole blocks: the last bytes of a line,
                // and a short line, are the scanner's.
                if skip_fast == 0 && args.len() - i >= SPAN {
                    acc.room_for_rest(args.len(), i, n);
                    let (before, stop) = match &mut acc.values {
                        Values::Ints(out) => (out.len(), fast_ints(args, i, out, isa)),
                        Values::Floats(out) => (out.len(), fast_ints(args, i, out, isa)),
                    };
                    if stop > i {
                        n += acc.values.len() - before;
                        i = stop;
                        after_comma = false;
                        fast_backoff = 1;
                        continue;
                    }
                    // Values the fast loop does not take tend to come in runs (long
                    // doubles): try again after 1, 2, 4, ... 64 values.
                    skip_fast = fast_backoff;
                    fast_backoff = (fast_backoff * 2).min(64);
                } else {
                    skip_fast = skip_fast.saturating_sub(1);
                }
                n += 1;
                let (scan, end) = scan_value(args, i);
                acc.push_scanned(scan, n, &args[i..end])?;
                after_comma = false;
                i = end;
            }
        }
    }
    acc.finish()
}

/// Lines up to this long try [`short_ints`] first.
const SHORT_INTS: usize = 96;

/// The common request, a few small integers (`max 1 2 3`, `sum 4, -5, 6`), in one plain pass:
/// the scanner's per-value set-up costs more than such a line's digits. Only the simplest
/// well-formed shape is taken here: blanks, single commas between values, an optional `-`
/// and at most 18 digits (no overflow possible). Anything else (brackets, `+`, doubles, a
/// fault anywhere) gives `None`, and the full scanner starts over, so its messages and
/// their precedence are the only ones.
#[inline(always)]
pub(super) fn short_ints(args: &[u8]) -> Option<Vec<i64>> {
    let mut out = Vec::with_capacity(args.len() / 2 + 1);
    // The value being read: its digits so far (0: between values), sign and magnitude.
    let (mut digits, mut neg, mut v) = (0u32, false, 0i64);
    // A comma was met since the last value: the next must be a value.
    let mut comma = false;
    for &b in args {
        let d = b.wrapping_sub(b'0');
        if d <= 9 {
            // Wrapping: a run over 18 digits is refused at its end, its value unused.
            v = v.wrapping_mul(10).wrapping_add(i64::from(d));
            digits += 1;
            continue;
        }
        if digits > 0 {
            // A value ends only at a blank or a comma ("1-2", "1.5" and "1e3" do not).
            if digits > 18 || !(is_ws(b) || b == b',') {
                return None;
            }
            out.push(if neg { -v } else { v });
            (digits, neg, v, comma) = (0, false, 0, false);
        } else if neg {
            // A "-" not followed by digits.
            return None;
        }
        // Between values here: after a separator, or at the start.
        match b {
            b' ' | b'\t' => {}
            b',' if !comma && !out.is_empty() => comma = true,
            b'-' => neg = true,
            _ => return None,
        }
    }
    if digits > 0 {
        if digits > 18 {
            return None;
        }
        out.push(if neg { -v } else { v });
    } else if neg || comma {
        return None;
    }
    Some(out)
}

/// JSON "values": the text of a JSON array (the event loop has checked its structure and
/// counted it), each element a JSON number or a string holding a number of the text grammar
/// ("9223372036854775807"). A JSON number that is an i64 counts as integer; a u64 above
/// i64::MAX or a float makes the request doubles. Any other element type is a parse error
/// naming its position. The elements are read one by one from the text, never into a tree of
/// `serde_json::Value`s: a big JSON request costs its values and nothing else.
pub fn parse_json_values(array: &[u8]) -> Result<Values, ValueError> {
    use serde::Deserializer as _;
    let mut de = serde_json::Deserializer::from_slice(array);
    let acc = Acc::new(count_values(array, Isa::detect()) + SLACK);
    let mut visitor = JsonValues {
        acc,
        pos: 0,
        error: None,
    };
    let outcome = de.deserialize_seq(&mut visitor);
    if let Some(e) = visitor.error.take() {
        return Err(e);
    }
    match outcome.and_then(|()| de.end()) {
        Ok(()) => visitor.acc.finish(),
        Err(e) => Err(ValueError::parse(format!(
            "value {} is not valid JSON ({e})",
            visitor.pos + 1
        ))),
    }
}

/// Feeds the elements of a JSON array into an [`Acc`]. A fault of ours (a value that is not a
/// number) is kept in `error` and stops the walk with a placeholder serde error.
struct JsonValues {
    acc: Acc,
    /// Elements taken so far.
    pos: usize,
    error: Option<ValueError>,
}

/// One element of the array, pushed as it is read.
struct JsonElement<'a>(&'a mut JsonValues);

impl<'de> serde::de::Visitor<'de> for &mut JsonValues {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of numbers")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        loop {
            self.pos += 1;
            match seq.next_element_seed(JsonElement(&mut *self)) {
                Ok(Some(())) => {}
                Ok(None) => {
                    self.pos -= 1;
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for JsonElement<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for JsonElement<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a number or a string holding one")
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<(), E> {
        self.0.acc.push_int(v);
        Ok(())
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<(), E> {
        match i64::try_from(v) {
            Ok(i) => self.0.acc.push_int(i),
            Err(_) => self.0.acc.push_float(v as f64, self.0.pos, b""),
        }
        Ok(())
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<(), E> {
        // serde_json refuses number literals too large for a double, so `v` is finite.
        self.0.acc.push_float(v, self.0.pos, b"");
        Ok(())
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<(), E> {
        let b = s.as_bytes();
        let (scan, end) = scan_value(b, 0);
        // A string must hold exactly one value: no separators, no surrounding blanks.
        let scan = if end == b.len() { scan } else { Scan::Invalid };
        let e = self.0.acc.push_scanned(scan, self.0.pos, b).err();
        self.fail(e)
    }

    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<(), E> {
        let pos = self.0.pos;
        self.fail(Some(json_type_error(pos, "a boolean")))
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        let pos = self.0.pos;
        self.fail(Some(json_type_error(pos, "null")))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        let pos = self.0.pos;
        self.fail(Some(json_type_error(pos, "an array")))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        let pos = self.0.pos;
        self.fail(Some(json_type_error(pos, "an object")))
    }
}

impl JsonElement<'_> {
    fn fail<E: serde::de::Error>(self, e: Option<ValueError>) -> Result<(), E> {
        match e {
            None => Ok(()),
            Some(e) => {
                self.0.error = Some(e);
                Err(E::custom("stop"))
            }
        }
    }
}

fn json_type_error(pos: usize, what: &str) -> ValueError {
    ValueError::parse(format!(
        "value {pos} is {what}, not a number or a string holding one"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::numbers::ValueErrorKind;
    use proptest::prelude::*;
    use serde_json::json;

    fn ints(v: &[i64]) -> Result<Values, ValueError> {
        Ok(Values::Ints(v.to_vec()))
    }

    fn floats(v: &[f64]) -> Result<Values, ValueError> {
        Ok(Values::Floats(v.to_vec()))
    }

    fn parse_err(msg: &str) -> Result<Values, ValueError> {
        Err(ValueError::parse(msg.to_string()))
    }

    fn range_err(msg: &str) -> Result<Values, ValueError> {
        Err(ValueError::range(msg.to_string()))
    }

    #[track_caller]
    fn check(args: &str, want: Result<Values, ValueError>) {
        check_bytes(args.as_bytes(), want);
    }

    #[track_caller]
    fn check_bytes(args: &[u8], want: Result<Values, ValueError>) {
        let got = parse_text_list(args);
        assert_eq!(got, want, "args {:?}", String::from_utf8_lossy(args));
        if let Ok(v) = got {
            assert_eq!(v.len(), count_text_values(args), "count of {args:?}");
        }
    }

    #[test]
    fn separators_and_brackets() {
        check("1 2 3", ints(&[1, 2, 3]));
        check("1,2,3", ints(&[1, 2, 3]));
        check("1 , 2 ,3", ints(&[1, 2, 3]));
        check("1\t2", ints(&[1, 2]));
        check("1 \t 2", ints(&[1, 2]));
        check("1,\t2", ints(&[1, 2]));
        check("[1, 2, 3]", ints(&[1, 2, 3]));
        check("[ 1 ]", ints(&[1]));
        check(" [1,2] ", ints(&[1, 2]));
        check("[1 2]", ints(&[1, 2]));
        check("  1  ", ints(&[1]));
        check("", ints(&[]));
        check("   ", ints(&[]));
        check("[]", ints(&[]));
        check(" [ ] ", ints(&[]));
    }

    #[test]
    fn value_grammar() {
        check("-3", ints(&[-3]));
        check("+3", ints(&[3]));
        check("-0", ints(&[0]));
        check("007", ints(&[7]));
        check("2.5", floats(&[2.5]));
        check("1e6", floats(&[1e6]));
        check("1E-3", floats(&[1e-3]));
        check("1e+3", floats(&[1e3]));
        check(".5", floats(&[0.5]));
        check("-.5", floats(&[-0.5]));
        check("+.5", floats(&[0.5]));
        check("5.", floats(&[5.0]));
        check("5.e1", floats(&[50.0]));
        check("1.0", floats(&[1.0]));
        check("1e-999", floats(&[0.0]));
        check(
            "0.1000000000000000055511151231257827021181583404541015625",
            floats(&[0.1]),
        );
        check("00000000000000000000000000000000000000001", ints(&[1]));
    }

    #[test]
    fn i64_bounds_and_promotion() {
        check("9223372036854775807", ints(&[i64::MAX]));
        check("-9223372036854775808", ints(&[i64::MIN]));
        check("+9223372036854775807", ints(&[i64::MAX]));
        check("9223372036854775808", floats(&[9223372036854775808.0]));
        check("-9223372036854775809", floats(&[-9223372036854775808.0]));
        check("18446744073709551616", floats(&[18446744073709551616.0]));
        // Integers before and after a double all become doubles, converted exactly as `as`.
        check(
            "9007199254740993 2.5 9007199254740993",
            floats(&[9007199254740992.0, 2.5, 9007199254740992.0]),
        );
        check("1 2 3.0", floats(&[1.0, 2.0, 3.0]));
        check("1 99999999999999999999", floats(&[1.0, 1e20]));
    }

    #[test]
    fn value_errors() {
        check("1 2 12x", parse_err(r#"value 3 "12x" is not a number"#));
        check("1 x", parse_err(r#"value 2 "x" is not a number"#));
        for bad in [
            "nan", "NaN", "inf", "-inf", "infinity", "0x10", "1_000", "e5", ".", "-", "+", "1e", "1e+",
            "1e-", "--1", "+-1", "1..2", "1.2.3", "1e5e5", "1e5.0", "..5", "-.", "5x", "1-", "1+1", "0b1",
            "1f", "1d", "١",
        ] {
            check(
                bad,
                parse_err(&format!("value 1 {} is not a number", quote(bad.as_bytes()))),
            );
        }
        check("[1, x]", parse_err(r#"value 2 "x" is not a number"#));
        check_bytes(b"1 \xff\xfe", parse_err(r#"value 2 "\xFF\xFE" is not a number"#));
        check_bytes(b"1\r", parse_err(r#"value 1 "1\x0D" is not a number"#));
        check(r#"1 "2""#, parse_err(r#"value 2 "\x222\x22" is not a number"#));
        check(r"\1", parse_err(r#"value 1 "\x5C1" is not a number"#));
        check("½", parse_err(r#"value 1 "\xC2\xBD" is not a number"#));
        let long = "9".repeat(40) + "x";
        check(
            &long,
            parse_err(&format!("value 1 \"{}\"... is not a number", "9".repeat(32))),
        );
    }

    #[test]
    fn range_errors() {
        check("1e999", range_err(r#"value 1 "1e999" is out of range"#));
        check("1 -1e999", range_err(r#"value 2 "-1e999" is out of range"#));
        check("1e999 2e999", range_err(r#"value 1 "1e999" is out of range"#));
        let huge = "9".repeat(400);
        check(
            &format!("1 {huge}"),
            range_err(&format!("value 2 \"{}\"... is out of range", "9".repeat(32))),
        );
        // A malformed value outranks an out-of-range one, wherever it is.
        check("1e999 x", parse_err(r#"value 2 "x" is not a number"#));
        check("1e999,,1", parse_err(r#"unexpected "," after value 1"#));
    }

    #[test]
    fn structure_errors() {
        check("1,,2", parse_err(r#"unexpected "," after value 1"#));
        check("1, ,2", parse_err(r#"unexpected "," after value 1"#));
        check("[1,2", parse_err(r#"missing "]""#));
        check("[", parse_err(r#"missing "]""#));
        check("[ 1 2 ", parse_err(r#"missing "]""#));
        check("1,2]", parse_err(r#"unexpected "]" after value 2"#));
        check("]", parse_err(r#"unexpected "]" before the first value"#));
        check(",1", parse_err(r#"unexpected "," before the first value"#));
        check("[,1]", parse_err(r#"unexpected "," before the first value"#));
        check(",", parse_err(r#"unexpected "," before the first value"#));
        check("1,", parse_err(r#"missing value after "," following value 1"#));
        check("1 , ", parse_err(r#"missing value after "," following value 1"#));
        check("[1,]", parse_err(r#"missing value after "," following value 1"#));
        check("[[1]]", parse_err(r#"unexpected "[" before the first value"#));
        check("1 [2]", parse_err(r#"unexpected "[" after value 1"#));
        check("1[2", parse_err(r#"unexpected "[" after value 1"#));
        check("[1] 2", parse_err(r#"unexpected "2" after "]""#));
        check("[1]]", parse_err(r#"unexpected "]" after "]""#));
        check("[1],", parse_err(r#"unexpected "," after "]""#));
        check("[1] [2]", parse_err(r#"unexpected "[" after "]""#));
        check("[] 1", parse_err(r#"unexpected "1" after "]""#));
        // The first fault from the left wins.
        check("x,,1", parse_err(r#"value 1 "x" is not a number"#));
        check("1,,x", parse_err(r#"unexpected "," after value 1"#));
    }

    #[test]
    fn counting() {
        assert_eq!(count_text_values(b""), 0);
        assert_eq!(count_text_values(b"   "), 0);
        assert_eq!(count_text_values(b"[]"), 0);
        assert_eq!(count_text_values(b", , [ ]\t"), 0);
        assert_eq!(count_text_values(b"[1, 2,,3"), 3);
        assert_eq!(count_text_values(b"1"), 1);
        assert_eq!(count_text_values(b"1 2 3"), 3);
        assert_eq!(count_text_values(b"x[y]z"), 3);
        assert_eq!(count_text_values(b"\xff \r"), 2);
        // Runs that cross the 64-byte blocks.
        for len in 0..200 {
            for offset in 0..3 {
                let mut s = " ".repeat(offset);
                while s.len() < len {
                    s.push_str("12, ");
                }
                let want = s.split([' ', ',']).filter(|t| !t.is_empty()).count();
                assert_eq!(count_text_values(s.as_bytes()), want, "{s:?}");
            }
        }
        let long = "7".repeat(1000);
        assert_eq!(count_text_values(long.as_bytes()), 1);
        assert_eq!(count_text_values(format!("{long} {long}").as_bytes()), 2);
    }

    #[test]
    fn big_lists() {
        let xs: Vec<i64> = (0..100_000).map(|i| i * 7919 - 400_000_000).collect();
        let text = xs.iter().map(i64::to_string).collect::<Vec<_>>().join(", ");
        check(&format!("[{text}]"), ints(&xs));
    }

    #[test]
    fn json_values() {
        let p = |v: serde_json::Value| parse_json_values(v.to_string().as_bytes());
        assert_eq!(p(json!([1, 2, 3])), ints(&[1, 2, 3]));
        assert_eq!(p(json!([])), ints(&[]));
        assert_eq!(p(json!(["9223372036854775807", 1])), ints(&[i64::MAX, 1]));
        assert_eq!(p(json!(["-9223372036854775808"])), ints(&[i64::MIN]));
        assert_eq!(p(json!([i64::MIN, i64::MAX])), ints(&[i64::MIN, i64::MAX]));
        assert_eq!(p(json!([u64::MAX, 1])), floats(&[18446744073709551615.0, 1.0]));
        assert_eq!(p(json!([1, 2.5])), floats(&[1.0, 2.5]));
        assert_eq!(p(json!(["1e3", 1])), floats(&[1000.0, 1.0]));
        assert_eq!(
            p(json!(["9223372036854775808"])),
            floats(&[9223372036854775808.0])
        );
        assert_eq!(p(json!([".5", "5.", "+3"])), floats(&[0.5, 5.0, 3.0]));
        let parsed: serde_json::Value = serde_json::from_str("[1.0, -0]").expect("json");
        assert_eq!(p(parsed), floats(&[1.0, -0.0]));

        assert_eq!(p(json!([1, "a"])), parse_err(r#"value 2 "a" is not a number"#));
        assert_eq!(p(json!([""])), parse_err(r#"value 1 "" is not a number"#));
        assert_eq!(p(json!([" 1"])), parse_err(r#"value 1 " 1" is not a number"#));
        assert_eq!(p(json!(["1 "])), parse_err(r#"value 1 "1 " is not a number"#));
        assert_eq!(p(json!(["1,2"])), parse_err(r#"value 1 "1,2" is not a number"#));
        assert_eq!(p(json!(["[1]"])), parse_err(r#"value 1 "[1]" is not a number"#));
        assert_eq!(p(json!(["nan"])), parse_err(r#"value 1 "nan" is not a number"#));
        assert_eq!(
            p(json!(["1e999"])),
            range_err(r#"value 1 "1e999" is out of range"#)
        );
        assert_eq!(
            p(json!(["1e999", "x"])),
            parse_err(r#"value 2 "x" is not a number"#)
        );
        for (v, what) in [
            (json!(null), "null"),
            (json!(true), "a boolean"),
            (json!([1]), "an array"),
            (json!({"a": 1}), "an object"),
        ] {
            assert_eq!(
                p(json!([1, v])),
                parse_err(&format!(
                    "value 2 is {what}, not a number or a string holding one"
                ))
            );
        }
    }

    /// Separators that the grammar accepts between two values.
    fn separator() -> impl Strategy<Value = String> {
        (0usize..3, prop::bool::ANY, 0usize..3).prop_map(|(before, comma, after)| {
            let ws = |k: usize| ["", " ", "\t", "  ", " \t"][k % 5];
            if comma {
                format!("{},{}", ws(before), ws(after))
            } else {
                // Without a comma at least one blank is needed.
                ws(before + 1).to_string()
            }
        })
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(v) = parse_text_list(&bytes) {
                prop_assert_eq!(v.len(), count_text_values(&bytes));
            }
        }

        #[test]
        fn grammar_bytes_never_panic(bytes in prop::collection::vec(
            prop::sample::select(b"0123456789.eE+- ,[]\tx\xff".to_vec()), 0..60)) {
            if let Ok(v) = parse_text_list(&bytes) {
                prop_assert_eq!(v.len(), count_text_values(&bytes));
            }
        }

        #[test]
        fn scanner_agrees_with_rust_floats(token in "[-+]?[0-9]{0,3}[.]?[0-9]{0,3}([eE][-+]?[0-9]{0,3})?[.+-]?") {
            let (scan, end) = scan_value(token.as_bytes(), 0);
            let valid = !matches!(scan, Scan::Invalid);
            prop_assert_eq!(end, token.len());
            prop_assert_eq!(valid, token.parse::<f64>().is_ok(), "{}", token);
            let x = token.parse::<f64>().unwrap_or(f64::NAN);
            if valid && !x.is_finite() {
                let got = parse_text_list(token.as_bytes()).map_err(|e| e.kind);
                prop_assert_eq!(got, Err(ValueErrorKind::Range));
            } else if valid {
                let got = parse_text_list(token.as_bytes()).map(|v| match v {
                    Values::Ints(i) => i[0] as f64,
                    Values::Floats(f) => f[0],
                });
                prop_assert_eq!(got, Ok(x));
            }
        }

        #[test]
        fn values_match_rust_parsers(
            token in "[-+]?[0-9]{0,22}([.][0-9]{0,22})?([eE][-+]?[0-9]{1,3})?",
        ) {
            prop_assume!(!token.is_empty());
            let got = parse_text_list(token.as_bytes());
            match (token.parse::<i64>(), token.parse::<f64>()) {
                (Ok(i), _) => prop_assert_eq!(got, Ok(Values::Ints(vec![i]))),
                (Err(_), Ok(x)) if x.is_finite() => {
                    let Ok(Values::Floats(f)) = got else {
                        return Err(TestCaseError::fail(format!("{token}: {got:?}")));
                    };
                    prop_assert_eq!(f.len(), 1);
                    prop_assert_eq!(f[0].to_bits(), x.to_bits(), "{}", token);
                }
                (Err(_), Ok(_)) => {
                    prop_assert_eq!(got.map_err(|e| e.kind), Err(ValueErrorKind::Range));
                }
                (Err(_), Err(_)) => {
                    prop_assert_eq!(got.map_err(|e| e.kind), Err(ValueErrorKind::Parse));
                }
            }
        }

        #[test]
        fn short_decimals_match_rust_parser(int in 0u64..100_000_000, frac in 0u64..100_000_000,
                                            zeros in 0usize..12, exp in -30i32..30, neg in any::<bool>()) {
            let token = format!("{}{int}.{}{frac}e{exp}", if neg { "-" } else { "" }, "0".repeat(zeros));
            let want: f64 = token.parse().expect("valid");
            let Ok(Values::Floats(f)) = parse_text_list(token.as_bytes()) else {
                return Err(TestCaseError::fail(token));
            };
            prop_assert_eq!(f[0].to_bits(), want.to_bits(), "{}", token);
        }

        #[test]
        fn joined_ints_round_trip(
            xs in prop::collection::vec(any::<i64>(), 1..50),
            seps in prop::collection::vec(separator(), 50),
            plus in prop::collection::vec(prop::bool::ANY, 50),
            brackets in prop::bool::ANY,
            pad in 0usize..3,
        ) {
            let mut s = String::new();
            for (k, x) in xs.iter().enumerate() {
                if k > 0 {
                    s.push_str(&seps[k]);
                }
                if *x >= 0 && plus[k] {
                    s.push('+');
                }
                s.push_str(&x.to_string());
            }
            if brackets {
                s = format!("[{}{s}{}]", " ".repeat(pad), "\t".repeat(pad));
            }
            let s = format!("{}{s}{}", " ".repeat(pad), " ".repeat(pad));
            prop_assert_eq!(parse_text_list(s.as_bytes()), Ok(Values::Ints(xs.clone())), "{}", s);
            prop_assert_eq!(count_text_values(s.as_bytes()), xs.len());
        }

        #[test]
        fn counting_matches_split(s in "[ ,\\[\\]\t0-9a]{0,300}") {
            let want = s.split([' ', ',', '[', ']', '\t']).filter(|t| !t.is_empty()).count();
            prop_assert_eq!(count_text_values(s.as_bytes()), want);
        }
    }
}
