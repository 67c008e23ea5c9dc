//! The value grammar of SPEC section 1 written the obvious way (a token list, then std's
//! `str::parse`), as the oracle for the scanner: every instruction-set variant of the fast
//! paths must give exactly its values and its errors, messages included, on any input.

use proptest::prelude::*;

use crate::numbers::fast::{Isa, count_values};
use crate::numbers::parse::{parse_text_with, quote};
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

proptest! {
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
