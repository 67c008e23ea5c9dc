//! Micro-benchmarks of the text scanner on the benchmark's `sum` line (1,000,000 integers below
//! 10^6, space-separated, ~6.9 MB) and a few other shapes, ignored by default:
//!
//! ```sh
//! cargo test --release -p taskd --lib numbers::bench -- --ignored --nocapture --test-threads 1
//! ```
//!
//! `bench_*` print MB/s, the median of several runs (the fastest run with
//! `TASKD_BENCH_MIN=1`, steadier on a busy machine). Timings on a shared machine are noisy;
//! instruction counts are not: `callgrind_count`, `callgrind_parse` and `callgrind_sum` run
//! one call on the line, `callgrind_parse_shapes` one parse of each other shape (of the k-th
//! only with `TASKD_BENCH_SHAPE=k`), and print the bytes, so that callgrind's total divided by
//! them is the instructions per byte (the binary's name comes from `cargo test --no-run`):
//!
//! ```sh
//! valgrind --tool=callgrind --toggle-collect='*parse_text_list*' \
//!     target/release/deps/taskd-HASH numbers::bench::callgrind_parse --ignored --exact --nocapture
//! ```
//!
//! (`*count_text_values*` for counting, `*list*sum*` for `sum`.)

use std::hint::black_box;
use std::time::Instant;

use crate::numbers::{Values, count_text_values, parse_text_list};

/// The benchmark's line shape: `n` values below `bound`, separated by single spaces.
fn value_line(n: usize, bound: u64, seed: u64) -> (Vec<u8>, i128) {
    let mut state = seed;
    let mut next = || {
        // splitmix64
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut s = Vec::with_capacity(n * 8);
    let mut sum = 0i128;
    for i in 0..n {
        let v = next() % bound;
        if i > 0 {
            s.push(b' ');
        }
        s.extend_from_slice(v.to_string().as_bytes());
        sum += i128::from(v);
    }
    (s, sum)
}

fn sum_line() -> (Vec<u8>, i128) {
    value_line(1_000_000, 1_000_000, 1)
}

/// Median seconds of `reps` runs of `f` (the minimum, with `TASKD_BENCH_MIN=1`: steadier on
/// a busy machine).
fn median_secs(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut times: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    if std::env::var_os("TASKD_BENCH_MIN").is_some() {
        times[0]
    } else {
        times[reps / 2]
    }
}

fn report(what: &str, bytes: usize, secs: f64) {
    println!(
        "{what:<40} {:>8.1} MB/s  ({:.2} ms for {:.2} MB)",
        bytes as f64 / secs / 1e6,
        secs * 1e3,
        bytes as f64 / 1e6
    );
}

#[test]
#[ignore = "benchmark"]
fn bench_sum_line() {
    let (line, want) = sum_line();
    let Ok(Values::Ints(xs)) = parse_text_list(&line) else {
        panic!("the line does not parse as integers");
    };
    assert_eq!(xs.iter().map(|&x| i128::from(x)).sum::<i128>(), want);
    let reps = 21;
    let t = median_secs(reps, || {
        black_box(count_text_values(black_box(&line)));
    });
    report("count_text_values", line.len(), t);
    let t = median_secs(reps, || {
        black_box(parse_text_list(black_box(&line)).ok());
    });
    report("parse_text_list", line.len(), t);
    let t = median_secs(reps, || {
        let v = parse_text_list(black_box(&line)).expect("parses");
        black_box(crate::ops::list::sum(&v).ok());
    });
    report("parse_text_list + ops::list::sum", line.len(), t);
    let values = parse_text_list(&line).expect("parses");
    let t = median_secs(reps, || {
        black_box(crate::ops::list::sum(black_box(&values)).ok());
    });
    report("ops::list::sum (of parsed values)", line.len(), t);
    let t = median_secs(reps, || {
        let n = count_text_values(black_box(&line));
        let v = parse_text_list(black_box(&line)).expect("parses");
        assert_eq!(v.len(), n);
        black_box(crate::ops::list::sum(&v).ok());
    });
    report("count + parse + sum (the daemon's work)", line.len(), t);
    let t = median_secs(reps, || {
        let mut v: Vec<i64> = Vec::with_capacity(xs.len() + 32);
        v.extend(black_box(&xs).iter().copied());
        black_box(&v);
    });
    report("(allocating and writing the output Vec)", line.len(), t);
    let text = std::str::from_utf8(&line).expect("ascii");
    let t = median_secs(reps, || {
        let mut s = 0i64;
        for tok in black_box(text).split(' ') {
            s = s.wrapping_add(tok.parse::<i64>().unwrap_or(0));
        }
        black_box(s);
    });
    report("baseline: split(' ') + str::parse::<i64>", line.len(), t);
}

/// Other lines: signed 64-bit integers with ", ", small integers in brackets, decimals,
/// shortest-round-trip doubles.
fn shapes() -> Vec<(&'static str, Vec<u8>)> {
    let map = |n: usize, bound: u64, seed: u64, sep: &str, f: &dyn Fn(u64) -> String| {
        let (l, _) = value_line(n, bound, seed);
        let s = std::str::from_utf8(&l).expect("ascii").to_string();
        s.split(' ')
            .map(|t| f(t.parse().expect("u64")))
            .collect::<Vec<_>>()
            .join(sep)
            .into_bytes()
    };
    vec![
        (
            "signed i64 (any), \", \" separators",
            map(300_000, u64::MAX, 2, ", ", &|x| (x as i64).to_string()),
        ),
        ("small ints < 100, bracketed", {
            let (l, _) = value_line(1_000_000, 100, 3);
            [b"[".as_slice(), &l, b"]"].concat()
        }),
        (
            "decimals like 123.456",
            map(500_000, 1_000_000, 4, " ", &|x| {
                format!("{}.{:03}", x / 1000, x % 1000)
            }),
        ),
        (
            "19-digit ints",
            map(400_000, 9 * 10u64.pow(18), 6, " ", &|x| {
                (x + 10u64.pow(18)).to_string()
            }),
        ),
        (
            "floats like 1.5e-3",
            map(1_000_000, 10_000, 7, " ", &|x| {
                format!("{}.{}e{}", 1 + x % 9, (x / 9) % 10, ((x / 90) % 19) as i64 - 9)
            }),
        ),
        (
            "shortest doubles (ryu)",
            map(300_000, u64::MAX, 5, " ", &|x| {
                ((x >> 11) as f64 / (1u64 << 53) as f64 * 1000.0).to_string()
            }),
        ),
    ]
}

#[test]
#[ignore = "benchmark"]
fn bench_other_shapes() {
    for (name, line) in &shapes() {
        assert!(parse_text_list(line).is_ok(), "{name}");
        let t = median_secs(11, || {
            black_box(count_text_values(black_box(line)));
        });
        report(&format!("count: {name}"), line.len(), t);
        let t = median_secs(11, || {
            black_box(parse_text_list(black_box(line)).ok());
        });
        report(&format!("parse: {name}"), line.len(), t);
        let text = std::str::from_utf8(line).expect("ascii");
        let t = median_secs(11, || {
            let mut s = 0f64;
            for tok in black_box(text)
                .split([' ', ',', '[', ']'])
                .filter(|t| !t.is_empty())
            {
                s += tok.parse::<f64>().unwrap_or(0.0);
            }
            black_box(s);
        });
        report(&format!("str::parse::<f64>: {name}"), line.len(), t);
        let t = median_secs(11, || {
            let mut s = 0i64;
            for tok in black_box(text)
                .split([' ', ',', '[', ']'])
                .filter(|t| !t.is_empty())
            {
                s = s.wrapping_add(tok.parse::<i64>().unwrap_or(0));
            }
            black_box(s);
        });
        report(&format!("str::parse::<i64>: {name}"), line.len(), t);
    }
}

/// One `parse_text_list` of each other shape, or with `TASKD_BENCH_SHAPE=k` of the k-th (from
/// 0) only, for callgrind; prints the bytes of each.
#[test]
#[ignore = "callgrind"]
fn callgrind_parse_shapes() {
    let only: Option<usize> = std::env::var("TASKD_BENCH_SHAPE")
        .ok()
        .and_then(|k| k.parse().ok());
    for (k, (name, line)) in shapes().iter().enumerate() {
        if only.is_none_or(|o| o == k) {
            println!("{name}: {} bytes", line.len());
            black_box(parse_text_list(black_box(line)).ok());
        }
    }
}

/// One `count_text_values` of the line, for callgrind.
#[test]
#[ignore = "callgrind"]
fn callgrind_count() {
    let (line, _) = sum_line();
    println!("{} bytes", line.len());
    black_box(count_text_values(black_box(&line)));
}

/// One `ops::list::sum` of the parsed line, for callgrind (`--toggle-collect='*list*sum*'`).
#[test]
#[ignore = "callgrind"]
fn callgrind_sum() {
    let (line, want) = sum_line();
    let values = parse_text_list(&line).expect("parses");
    let got = crate::ops::list::sum(black_box(&values));
    assert_eq!(got, Ok(crate::numbers::Num::Int(want)));
}

/// One `parse_text_list` of the line, for callgrind.
#[test]
#[ignore = "callgrind"]
fn callgrind_parse() {
    let (line, _) = sum_line();
    println!("{} bytes", line.len());
    black_box(parse_text_list(black_box(&line)).ok());
}

/// The stages of a big `stats` request: parsing, then each field (median by selection).
#[test]
#[ignore = "benchmark"]
fn bench_stats_stages() {
    let (line, _) = sum_line();
    let values = parse_text_list(&line).expect("parses");
    let reps = 21;
    let t = median_secs(reps, || {
        black_box(parse_text_list(black_box(&line)).ok());
    });
    report("parse_text_list", line.len(), t);
    for (name, f) in [
        (
            "min",
            crate::ops::list::min as fn(&Values) -> Result<crate::numbers::Num, String>,
        ),
        ("max", crate::ops::list::max),
        ("mean", crate::ops::list::mean),
        ("median", crate::ops::list::median),
    ] {
        let t = median_secs(reps, || {
            black_box(f(black_box(&values)).ok());
        });
        report(name, line.len(), t);
    }
    let t = median_secs(reps, || {
        black_box(crate::ops::list::stats(black_box(&values)).ok());
    });
    report("stats (all fields)", line.len(), t);
    let floats = Values::Floats(match &values {
        Values::Ints(v) => v.iter().map(|&x| x as f64 / 7.0).collect(),
        Values::Floats(v) => v.clone(),
    });
    let t = median_secs(reps, || {
        black_box(crate::ops::list::median(black_box(&floats)).ok());
    });
    report("median of doubles", line.len(), t);
}
