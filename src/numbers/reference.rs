//! The value grammar of taskd(8) (PROTOCOL, "Values") written the obvious way (a token list, then std's
//! `str::parse`), as the oracle for the scanner: every instruction-set variant of the fast
//! paths must give exactly its values and its errors, messages included, on any input.

use proptest::prelude::*;

use crate::numbers::fast::{Isa, count_values};
use crate::numbers::parse::{parse_text_with, quote, short_ints};
use crate::numbers::{ValueError, Values};

enum Token<'a> {
    Comma,
    Open,
    Close,
    Value(&'a [u8]),
}

fn is_sep(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b',' | b'[' | b']')
}

fn tokens(args: &[u8]) -> Vec<Token<'_>> {
    let mut out = Vec::new();
    let mut k = 0;
    while k < args.len() {
        match args[k] {
            b' ' | b'\t' => {}
            b',' => out.push(Token::Comma),
            b'[' => out.push(Token::Open),
            b']' => out.push(Token::Close),
            _ => {
                let start = k;
                while k + 1 < args.len() && !is_sep(args[k + 1]) {
                    k += 1;
                }
                out.push(Token::Value(&args[start..=k]));
            }
        }
        k += 1;
    }
    out
}

/// A value's text: `Ok` an integer within i64, `Err` a double, `None` not a number.
fn reference_value(text: &[u8]) -> Option<Result<i64, f64>> {
    let s = std::str::from_utf8(text).ok()?;
    let b = s.as_bytes();
    let digits_from = |k: usize| {
        b[k.min(b.len())..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count()
    };
    let mut k = usize::from(matches!(b.first(), Some(b'+' | b'-')));
    let int_digits = digits_from(k);
    k += int_digits;
    let fraction = b.get(k) == Some(&b'.');
    let mut frac_digits = 0;
    if fraction {
        frac_digits = digits_from(k + 1);
        k += 1 + frac_digits;
    }
    if int_digits + frac_digits == 0 {
        return None;
    }
    let exponent = matches!(b.get(k), Some(b'e' | b'E'));
    if exponent {
        k += 1 + usize::from(matches!(b.get(k + 1), Some(b'+' | b'-')));
        let exp_digits = digits_from(k);
        if exp_digits == 0 {
            return None;
        }
        k += exp_digits;
    }
    if k != b.len() {
        return None;
    }
    if !fraction
        && !exponent
        && let Ok(i) = s.parse::<i64>()
    {
        return Some(Ok(i));
    }
    Some(Err(s.parse::<f64>().expect("std parses the grammar")))
}

fn place(n: usize) -> String {
    if n == 0 {
        "before the first value".to_string()
    } else {
        format!("after value {n}")
    }
}

fn reference_parse(args: &[u8]) -> Result<Values, ValueError> {
    let parse_err = |m: String| Err(ValueError::parse(m));
    let toks = tokens(args);
    let mut it = toks.iter().peekable();
    let bracketed = matches!(it.peek(), Some(Token::Open));
    if bracketed {
        it.next();
    }
    let mut n = 0;
    let mut after_comma = false;
    let mut nums = Vec::new();
    let mut range = None;
    loop {
        match it.next() {
            None => {
                if after_comma {
                    return parse_err(format!("missing value after \",\" following value {n}"));
                }
                if bracketed {
                    return parse_err("missing \"]\"".to_string());
                }
                break;
            }
            Some(Token::Comma) => {
                if n == 0 || after_comma {
                    return parse_err(format!("unexpected \",\" {}", place(n)));
                }
                after_comma = true;
            }
            Some(Token::Close) => {
                if after_comma {
                    return parse_err(format!("missing value after \",\" following value {n}"));
                }
                if !bracketed {
                    return parse_err(format!("unexpected \"]\" {}", place(n)));
                }
                if let Some(t) = it.next() {
                    let text: &[u8] = match t {
                        Token::Comma => b",",
                        Token::Open => b"[",
                        Token::Close => b"]",
                        Token::Value(v) => v,
                    };
                    return parse_err(format!("unexpected {} after \"]\"", quote(text)));
                }
                break;
            }
            Some(Token::Open) => return parse_err(format!("unexpected \"[\" {}", place(n))),
            Some(Token::Value(text)) => {
                n += 1;
                after_comma = false;
                match reference_value(text) {
                    None => return parse_err(format!("value {n} {} is not a number", quote(text))),
                    Some(Err(x)) if !x.is_finite() && range.is_none() => {
                        range = Some(ValueError::range(format!(
                            "value {n} {} is out of range",
                            quote(text)
                        )));
                    }
                    Some(v) => nums.push(v),
                }
            }
        }
    }
    if let Some(e) = range {
        return Err(e);
    }
    if nums.iter().all(Result::is_ok) {
        Ok(Values::Ints(nums.into_iter().flatten().collect()))
    } else {
        Ok(Values::Floats(
            nums.into_iter()
                .map(|v| match v {
                    Ok(i) => i as f64,
                    Err(x) => x,
                })
                .collect(),
        ))
    }
}

fn reference_count(args: &[u8]) -> usize {
    args.split(|&b| is_sep(b)).filter(|t| !t.is_empty()).count()
}

/// Every variant against the reference; doubles compared by their bits.
fn agree(args: &[u8]) -> Result<(), TestCaseError> {
    let want = reference_parse(args);
    let bits = |r: &Result<Values, ValueError>| match r {
        Ok(Values::Floats(f)) => Ok(Ok(f.iter().map(|x| x.to_bits()).collect::<Vec<_>>())),
        Ok(Values::Ints(i)) => Ok(Err(i.clone())),
        Err(e) => Err(e.clone()),
    };
    for isa in Isa::available() {
        let got = parse_text_with(args, isa);
        prop_assert_eq!(
            bits(&got),
            bits(&want),
            "{:?} on {:?}",
            isa,
            String::from_utf8_lossy(args)
        );
        prop_assert_eq!(count_values(args, isa), reference_count(args), "{:?}", isa);
    }
    Ok(())
}

#[track_caller]
fn check(args: &str) {
    if let Err(e) = agree(args.as_bytes()) {
        panic!("{e}");
    }
}

#[test]
fn reference_agrees_with_the_unit_cases() {
    for args in [
        "1 2 3",
        "[1, 2, 3]",
        "1,,2",
        "[1,2",
        "1 2 12x",
        "1e999 x",
        "[1] 2",
        "9223372036854775808",
        "-9223372036854775808",
        "00000000000000000000000000000000000000001",
        "1 , 2 ,3",
        "1 -1e999",
        "",
        "[]",
        " [ ] ",
    ] {
        check(args);
    }
}

/// The short-line path takes the common shapes itself and leaves every other one, valid or
/// not, to the scanner (whose answers `agree` compares with the reference).
#[test]
fn short_lines_take_the_plain_path_or_leave_it() {
    for (args, plain) in [
        ("1 2 3 4 5 6 7 8 9 10", Some(vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10])),
        ("", Some(vec![])),
        (" \t ", Some(vec![])),
        ("4, -5 ,6\t-0", Some(vec![4, -5, 6, 0])),
        ("007 999999999999999999", Some(vec![7, 999_999_999_999_999_999])),
        ("-999999999999999999", Some(vec![-999_999_999_999_999_999])),
        ("1234567890123456789", None),
        ("1-2", None),
        ("-", None),
        ("1 -", None),
        ("- 1", None),
        ("--1", None),
        ("+1", None),
        (",1", None),
        ("1,", None),
        ("1,,2", None),
        ("1 , , 2", None),
        ("1.5 2", None),
        ("1e3", None),
        ("[1 2]", None),
        ("1 x", None),
    ] {
        assert_eq!(short_ints(args.as_bytes()), plain, "{args:?}");
        check(args);
    }
}

/// Plain integers of every length, to put every kind of value and fault at every offset
/// within a block and across the blocks' edges.
#[test]
fn faults_at_every_position() {
    let specials = [
        "9223372036854775807",
        "-9223372036854775808",
        "+9223372036854775807",
        "9223372036854775808",
        "-9223372036854775809",
        "99999999999999999999",
        "1234567890123456789",
        "12345678",
        "123456789",
        "-7",
        "+7",
        "007",
        "1.5",
        "1e3",
        "x",
        "1x",
        "-",
        ",",
        ", ,",
        "]",
        "[",
        "1e999",
        "1 ,",
    ];
    // Lists of plain integers of one length (so that the block loop takes them), shifted
    // against the blocks, with each special in each place.
    for (shift, len) in [(0, 1), (1, 7), (63, 8), (64, 9), (57, 3)] {
        let pad = " ".repeat(shift);
        let plain: Vec<String> = (0..30)
            .map(|k| (10usize.pow(len - 1) + (k * 7919 + 13) % (9 * 10usize.pow(len - 1))).to_string())
            .collect();
        for at in 0..plain.len() {
            for s in specials {
                let mut vals = plain.clone();
                vals[at] = s.to_string();
                check(&format!("{pad}{}", vals.join(" ")));
                check(&format!("[{pad}{}]", vals.join(", ")));
            }
        }
    }
}

/// Long lines, whose output is allocated for an estimate from their first bytes: sparse
/// first and dense later (the estimate runs out), dense first and sparse later, and faults
/// far into the line.
#[test]
fn long_lines_whose_density_changes() {
    let sparse: Vec<String> = (0..3000)
        .map(|k| format!("{}", 1_000_000_000_000_000_000i64 + k))
        .collect();
    let dense: Vec<String> = (0..40_000).map(|k| (k % 10).to_string()).collect();
    let sparse = sparse.join(" ");
    let dense = dense.join(",");
    for line in [
        format!("{sparse} {dense}"),
        format!("[{dense}, {sparse}]"),
        format!("{sparse} {dense} 1.5 {dense}"),
        format!("{dense} {sparse} x {dense}"),
        format!("{sparse},{dense},,1"),
        format!("{dense} 1e999 {sparse} {dense}"),
    ] {
        if let Err(e) = agree(line.as_bytes()) {
            panic!("{e}");
        }
    }
}

fn good_value() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => (0u64..1_000_000).prop_map(|v| v.to_string()),
        2 => any::<i64>().prop_map(|v| v.to_string()),
        1 => (0u64..100).prop_map(|v| format!("+{v}")),
        1 => "[+-]?0{0,25}[0-9]{1,21}",
        1 => prop::sample::select(vec![
            "9223372036854775807",
            "-9223372036854775808",
            "+9223372036854775807",
            "9223372036854775808",
            "-9223372036854775809",
            "18446744073709551615",
            "18446744073709551616",
            "99999999999999999999",
            "10000000000000000000",
            "-0",
            "+0",
            "0000000000000000000",
        ])
        .prop_map(String::from),
        1 => "[-+]?[0-9]{0,10}[.][0-9]{1,10}([eE][-+]?[0-9]{1,3})?",
        1 => "[-+]?[0-9]{1,5}[.]?[eE][-+]?[0-9]{1,3}",
    ]
}

fn bad_value() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "x", "1x", "--1", "+-1", "1.2.3", "-", "+", ".", "1e", "1e+", "nan", "inf", "0x10", "1_000",
            "1-", "12\r", "\u{661}", "1e999", "-1e999", "1e5e5", "..5",
        ])
        .prop_map(String::from),
        "[0-9]{1,20}[a-z.+-][0-9]{0,3}",
    ]
}

fn good_sep() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        8 => Just(" "),
        4 => Just(", "),
        3 => Just(","),
        1 => prop::sample::select(vec!["\t", "  ", " , ", ",\t", " ,", ",  ", " \t ", "\t,\t"]),
    ]
}

fn bad_sep() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![",,", ", ,", "[", "]", " ] ", " [ ", "] [", ",]", "[,"])
}

/// A list made of `values` and `seps`, with one fault at `fault` (if any), maybe bracketed.
fn assemble(
    values: &[String],
    seps: &[&str],
    fault: Option<(usize, bool, String)>,
    brackets: bool,
    pad: &str,
) -> String {
    let mut s = String::new();
    for (k, v) in values.iter().enumerate() {
        if k > 0 {
            match &fault {
                Some((at, true, f)) if *at == k => s.push_str(f),
                _ => s.push_str(seps[k % seps.len()]),
            }
        }
        match &fault {
            Some((at, false, f)) if *at == k => s.push_str(f),
            _ => s.push_str(v),
        }
    }
    if brackets {
        format!("{pad}[{pad}{s}{pad}]{pad}")
    } else {
        format!("{pad}{s}{pad}")
    }
}

/// Every word of a few kinds with a byte replaced or inserted at each of its positions, a
/// byte that breaks the grammar there or changes the word's kind, among integers and among
/// doubles, at the start of a list and in its middle (past the first 64-byte block).
#[test]
fn invalid_bytes_at_every_position_of_a_word() {
    let words = [
        "-1.5e-3",
        "12345678",
        "123456789.123456789",
        "9223372036854775807",
        "-9223372036854775808",
        "0.30000000000000004",
        "+.5e+10",
        "1e308",
    ];
    let bytes = [
        b'x', b'.', b'e', b'-', b'+', 0xff, b'\r', b'_', b'0', 0, b',', b']', b' ',
    ];
    let ints: Vec<String> = (0..24).map(|k| (k * 7919 % 100_000).to_string()).collect();
    let doubles: Vec<String> = (0..24)
        .map(|k| format!("{}.{}e-{}", k % 9 + 1, k % 10, k % 12))
        .collect();
    for word in words {
        let w = word.as_bytes();
        for k in 0..=w.len() {
            for b in bytes {
                let mut variants = vec![[&w[..k], &[b], &w[k..]].concat()];
                if k < w.len() {
                    variants.push([&w[..k], &[b], &w[k + 1..]].concat());
                }
                for v in variants {
                    for context in [&ints, &doubles] {
                        for at in [0, 17] {
                            let mut line = Vec::new();
                            for (j, c) in context.iter().enumerate() {
                                if j > 0 {
                                    line.push(b' ');
                                }
                                if j == at {
                                    line.extend_from_slice(&v);
                                    line.push(b' ');
                                }
                                line.extend_from_slice(c.as_bytes());
                            }
                            if let Err(e) = agree(&line) {
                                panic!("{e}");
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Lists of one value repeated, joined by every separator the grammar allows and by some it
/// does not, long enough for the block loop.
#[test]
fn every_separator_mix() {
    let seps = [
        " ", "\t", ",", ", ", " ,", " , ", ",\t", "\t,\t", "  ", " \t ", ",,", ", ,", "[", "]",
    ];
    for value in ["7", "-12345678901", "1.5e-3", "0.1"] {
        for a in seps {
            for b in seps {
                let mut line = String::new();
                for k in 0..40 {
                    if k > 0 {
                        line.push_str(if k % 3 == 0 { b } else { a });
                    }
                    line.push_str(value);
                }
                check(&line);
                check(&format!("[{line}]"));
            }
        }
    }
}

/// Cases of each property below: proptest's 256 by default, more with TASKD_FUZZ_CASES
/// (for a long run: `TASKD_FUZZ_CASES=100000 cargo test --release --lib numbers`).
fn fuzz_cases() -> u32 {
    std::env::var("TASKD_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

/// Values of a list of doubles: short ones with exponents (the common shape), shortest
/// round-trip doubles in both notations, long mantissas and exponents around every limit of
/// the fast paths (16 and 19 digits, 3-digit exponents, 2^53, 10^22), and the edges of the
/// double range.
fn double_value() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (1u32..10, 0u32..10, -12i32..12, any::<bool>())
            .prop_map(|(a, b, e, neg)| format!("{}{a}.{b}e{e}", if neg { "-" } else { "" })),
        2 => any::<f64>().prop_filter("finite", |x| x.is_finite()).prop_map(|x| format!("{x:e}")),
        1 => (-1e6f64..1e6).prop_map(|x| x.to_string()),
        1 => "[-+]?[0-9]{0,20}[.]?[0-9]{0,20}[eE][-+]?[0-9]{1,4}",
        1 => "[-+]?0{0,20}[0-9]{0,3}[.][0-9]{0,25}",
        1 => "[-+]?[0-9]{15,21}",
        1 => prop::sample::select(vec![
            "-0", "-0.0", "+.5", "5.", "0e0", "-0e-0", "1e22", "1e23", "1e-22", "9007199254740992.5",
            "9007199254740993", "9007199254740993.0", "18446744073709551615", "1e308",
            "1.7976931348623157e308", "1.7976931348623158e308", "1.7976931348623159e308", "2e-324",
            "5e-324", "2.4703282292062327e-324", "2.4703282292062328e-324", "4.9406564584124654e-324",
            "2.2250738585072011e-308", "2.2250738585072014e-308", "123456789012345678e-10",
            "1234567890123456789e3", "12345678901234567890e-3", "0.000000000000000000001",
            "1e999", "1e-999", "1e0000", "9999999999999999.9999",
        ])
        .prop_map(String::from),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(fuzz_cases()))]

    #[test]
    fn double_lists_match_the_reference(
        values in prop::collection::vec(double_value(), 0..120),
        seps in prop::collection::vec(good_sep(), 1..8),
        fault_at in any::<prop::sample::Index>(),
        fault in prop::option::weighted(0.3, prop_oneof![
            bad_value().prop_map(|v| (false, v)),
            bad_sep().prop_map(|s| (true, s.to_string())),
        ]),
        brackets in any::<bool>(),
    ) {
        let fault = fault.filter(|_| !values.is_empty()).map(|(is_sep, f)| (fault_at.index(values.len()), is_sep, f));
        agree(assemble(&values, &seps, fault, brackets, "").as_bytes())?;
    }

    #[test]
    fn long_lists_match_the_reference(
        values in prop::collection::vec(good_value(), 0..150),
        seps in prop::collection::vec(good_sep(), 1..8),
        fault_at in any::<prop::sample::Index>(),
        fault in prop::option::weighted(0.5, prop_oneof![
            bad_value().prop_map(|v| (false, v)),
            bad_sep().prop_map(|s| (true, s.to_string())),
        ]),
        brackets in any::<bool>(),
        pad in prop::sample::select(vec!["", " ", "\t ", "  "]),
    ) {
        let fault = fault.filter(|_| !values.is_empty()).map(|(is_sep, f)| (fault_at.index(values.len()), is_sep, f));
        agree(assemble(&values, &seps, fault, brackets, pad).as_bytes())?;
    }

    #[test]
    fn int_lists_match_the_reference(
        values in prop::collection::vec(prop_oneof![
            (0u64..1_000_000).prop_map(|v| v.to_string()),
            any::<i64>().prop_map(|v| v.to_string()),
            (0u64..10_000_000_000).prop_map(|v| v.to_string()),
        ], 0..300),
        seps in prop::collection::vec(good_sep(), 1..4),
        brackets in any::<bool>(),
    ) {
        agree(assemble(&values, &seps, None, brackets, "").as_bytes())?;
    }

    #[test]
    fn digit_counts_mix_in_blocks(
        values in prop::collection::vec((1u32..=11, any::<u64>(), any::<bool>()), 0..300),
        seps in prop::collection::vec(good_sep(), 1..4),
    ) {
        // Plain integers of 1 to 11 digits (some with leading zeros), so that the block loop
        // sees every mix of short and long values in its groups of four.
        let values: Vec<String> = values
            .iter()
            .map(|&(digits, x, zeros)| {
                let v = x % 10u64.pow(digits);
                if zeros { format!("{v:0width$}", width = digits as usize) } else { v.to_string() }
            })
            .collect();
        agree(assemble(&values, &seps, None, false, "").as_bytes())?;
    }

    #[test]
    fn grammar_soup_matches_the_reference(bytes in prop::collection::vec(
        prop::sample::select(b"0123456789012345678901234567890123456789 , .eE+-[]\tx".to_vec()), 0..600)) {
        agree(&bytes)?;
    }

    #[test]
    fn arbitrary_bytes_match_the_reference(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        agree(&bytes)?;
    }
}
