//! The compute kernels' cases: value parsing per kind of value in process,
//! big `sum` of doubles and `stats` requests end to end, and the π kernels
//! one by one. Each side is measured in turn with its baseline, as in the
//! other cases, so that the machine's noise falls on both.
//!
//! - `parse`: `taskd::numbers::parse_text_list` of a line of 10^6 small
//!   integers, of 400,000 19-digit integers and of 10^6 doubles like
//!   `1.5e-3`, against splitting on spaces and `str::parse` (`i64` or `f64`)
//!   into a `Vec`.
//! - `floats`: `sum` of the doubles' line, end to end, against
//!   `str::parse::<f64>` of the same values in this process (and their sum).
//! - `stats`: `stats` of the `sum` case's line end to end, against
//!   `str::parse::<i64>` in this process and the four fields computed with
//!   std (min, max, an i128 sum, `select_nth_unstable` on a copy).
//! - `kernels`: one `PiStream` on each π kernel this CPU runs (scalar, AVX2,
//!   AVX-512), in this process, against the plain xoshiro256++ loop.

use std::hint::black_box;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use taskd::numbers::{Values, parse_text_list};
use taskd::ops::pi::{Kernel, PiStream};

use super::{CaseOut, CaseResult, Client, Ctx, Row, err, with_server};
use crate::inproc;

/// SplitMix64, for the lines' values: cheap and reproducible.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// `n` values made by `f`, separated by single spaces.
fn line(n: usize, seed: u64, f: impl Fn(u64) -> String) -> String {
    let mut g = Gen(seed);
    let mut s = String::with_capacity(n * 8);
    for i in 0..n {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(&f(g.next()));
    }
    s
}

/// 10^6 integers below 1000.
pub fn small_ints() -> &'static str {
    static L: OnceLock<String> = OnceLock::new();
    L.get_or_init(|| line(1_000_000, 11, |x| (x % 1000).to_string()))
}

/// 400,000 integers of 19 digits, from 10^18 up to i64::MAX (beyond it they would be
/// doubles for taskd and errors for `str::parse::<i64>`).
pub fn long_ints() -> &'static str {
    static L: OnceLock<String> = OnceLock::new();
    L.get_or_init(|| {
        let span = i64::MAX as u64 - 1_000_000_000_000_000_000;
        line(400_000, 12, move |x| {
            (1_000_000_000_000_000_000 + x % span).to_string()
        })
    })
}

/// 10^6 doubles like `1.5e-3`: one digit, a fraction digit, an exponent from -9 to 9.
pub fn doubles() -> &'static str {
    static L: OnceLock<String> = OnceLock::new();
    L.get_or_init(|| {
        line(1_000_000, 13, |x| {
            format!("{}.{}e{}", 1 + x % 9, (x >> 8) % 10, ((x >> 16) % 19) as i64 - 9)
        })
    })
}

/// Seconds of `f`, once.
fn time(f: impl FnOnce()) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_secs_f64()
}

fn std_parse<T: std::str::FromStr>(values: &str) -> Option<Vec<T>> {
    values.split(' ').map(|t| t.parse::<T>().ok()).collect()
}

/// taskd's parser and `str::parse` of one line in turn, `reps` times each; MB/s of both.
fn parse_pair<T: std::str::FromStr>(values: &str, reps: usize, round: usize) -> Result<(f64, f64), String> {
    let ours = parse_text_list(values.as_bytes()).map_err(|e| format!("taskd: {e}"))?;
    let theirs = std_parse::<T>(values).ok_or("str::parse refused a value")?;
    if ours.len() != theirs.len() {
        return Err(format!(
            "taskd parsed {} values, str::parse {}",
            ours.len(),
            theirs.len()
        ));
    }
    let (mut t, mut b) = (Vec::new(), Vec::new());
    for i in 0..=reps {
        let taskd_side = || time(|| drop(black_box(parse_text_list(black_box(values.as_bytes())))));
        let base_side = || time(|| drop(black_box(std_parse::<T>(black_box(values)))));
        let (ts, bs) = if (round + i).is_multiple_of(2) {
            let ts = taskd_side();
            (ts, base_side())
        } else {
            let bs = base_side();
            (taskd_side(), bs)
        };
        // The first pair warms up.
        if i > 0 {
            t.push(ts);
            b.push(bs);
        }
    }
    let mb = values.len() as f64 / 1e6;
    Ok((mb / crate::median(&mut t), mb / crate::median(&mut b)))
}

pub fn parse(ctx: &Ctx, round: usize) -> CaseResult {
    let reps = if ctx.quick { 3 } else { 9 };
    let mut out = CaseOut::default();
    let mut notes = Vec::new();
    for (row, name, values, float) in [
        (Row::ParseSmall, "ints < 1000", small_ints(), false),
        (Row::ParseLong, "19-digit ints", long_ints(), false),
        (Row::ParseDouble, "doubles like 1.5e-3", doubles(), true),
    ] {
        let (t, b) = if float {
            parse_pair::<f64>(values, reps, round)?
        } else {
            parse_pair::<i64>(values, reps, round)?
        };
        out.rows.push((row, t, b));
        notes.push(format!("{name}: taskd {t:.0} MB/s, str::parse {b:.0} MB/s"));
    }
    out.note = notes.join(" | ");
    Ok(out)
}

/// A big request and what its reply must be.
struct Big<'a> {
    /// The request line, newline included.
    request: &'a str,
    /// Bytes of the values alone (what the baseline parses).
    values_len: usize,
    check: &'a dyn Fn(&str) -> bool,
    /// The expected reply, for the error message.
    expect: &'a str,
}

/// One big request to taskd and one in-process baseline run, in turn, `reps` times. Returns
/// MB/s of the request line end to end, and of the values for the baseline.
fn big_request(
    ctx: &Ctx,
    round: usize,
    big: &Big,
    baseline: &dyn Fn(),
    out: &mut CaseOut,
) -> Result<(f64, f64), String> {
    let reps = if ctx.quick { 3 } else { 7 };
    let (mut t_times, mut b_times) = (Vec::new(), Vec::new());
    with_server(&ctx.taskd(), ctx.server_cpus().as_deref(), |s| {
        let mut c = Client::connect(s.addr, Duration::from_secs(30)).map_err(err)?;
        // One untimed request and baseline run first: warm-ups.
        for i in 0..=reps {
            let mut taskd_rep = || -> Result<f64, String> {
                let (reply, t) = c.ask(big.request.as_bytes()).map_err(|e| format!("taskd: {e}"))?;
                if !(big.check)(&reply) {
                    out.invalid += 1;
                    out.first_error
                        .get_or_insert(format!("taskd: expected {}, got {reply:.200}", big.expect));
                }
                Ok(t.as_secs_f64())
            };
            let (ts, bs) = if (round + i).is_multiple_of(2) {
                let ts = taskd_rep()?;
                (ts, time(baseline))
            } else {
                let bs = time(baseline);
                (taskd_rep()?, bs)
            };
            if i > 0 {
                t_times.push(ts);
                b_times.push(bs);
            }
        }
        Ok(())
    })?;
    let t = big.request.len() as f64 / crate::median(&mut t_times) / 1e6;
    let b = big.values_len as f64 / crate::median(&mut b_times) / 1e6;
    Ok((t, b))
}

/// A result as taskd writes it.
fn num_text(n: taskd::numbers::Num) -> String {
    let mut v = Vec::new();
    n.write_to(&mut v);
    String::from_utf8_lossy(&v).into_owned()
}

pub fn floats(ctx: &Ctx, round: usize) -> CaseResult {
    let values = doubles();
    let request = format!("sum {values}\n");
    let parsed = parse_text_list(values.as_bytes()).map_err(|e| e.to_string())?;
    let sum = taskd::ops::list::sum(&parsed).map_err(|e| e.to_string())?;
    let expect = format!("OK {}", num_text(sum));
    let mut out = CaseOut::default();
    let baseline = || {
        let s: Option<f64> = std_parse::<f64>(black_box(values)).map(|v| v.iter().sum());
        black_box(s);
    };
    let big = Big {
        request: &request,
        values_len: values.len(),
        check: &|r| r == expect,
        expect: &expect,
    };
    let (t, b) = big_request(ctx, round, &big, &baseline, &mut out)?;
    out.rows.push((Row::FloatRate, t, b));
    out.note = format!(
        "taskd {t:.0} MB/s end to end ({:.1} MB line) | str::parse::<f64> {b:.0} MB/s",
        request.len() as f64 / 1e6
    );
    Ok(out)
}

/// The four fields of `stats` the obvious way with std, from the text.
fn std_stats(values: &str) -> Option<(i64, i64, i128, i64)> {
    let mut v = std_parse::<i64>(values)?;
    let min = *v.iter().min()?;
    let max = *v.iter().max()?;
    let sum: i128 = v.iter().map(|&x| i128::from(x)).sum();
    let k = v.len() / 2;
    let (_, &mut median, _) = v.select_nth_unstable(k);
    Some((min, max, sum, median))
}

pub fn stats(ctx: &Ctx, round: usize) -> CaseResult {
    let (values, _) = ctx.sum_line.as_ref().ok_or("the sum line was not made")?;
    let request = format!("stats {values}\n");
    let parsed = parse_text_list(values.as_bytes()).map_err(|e| e.to_string())?;
    let Values::Ints(ints) = &parsed else {
        return Err("the sum line is not integers".into());
    };
    let median = num_text(taskd::ops::list::median(&parsed).map_err(|e| e.to_string())?);
    let head = format!("OK count={} min=", ints.len());
    let tail = format!(" median={median}");
    let expect = format!("{head}... median={median}");
    let mut out = CaseOut::default();
    let baseline = || {
        black_box(std_stats(black_box(values)));
    };
    let big = Big {
        request: &request,
        values_len: values.len(),
        check: &|r| r.starts_with(&head) && r.ends_with(&tail),
        expect: &expect,
    };
    let (t, b) = big_request(ctx, round, &big, &baseline, &mut out)?;
    out.rows.push((Row::StatsRate, t, b));
    out.note = format!(
        "taskd {t:.0} MB/s end to end ({:.1} MB line) | str::parse::<i64> + std stats {b:.0} MB/s",
        request.len() as f64 / 1e6
    );
    Ok(out)
}

/// π per kernel in this process (pinned with the load generator under `--pin`), each
/// against the plain loop measured right before or after it.
pub fn kernels(ctx: &Ctx, round: usize) -> CaseResult {
    let samples: u64 = if ctx.quick { 50_000_000 } else { 200_000_000 };
    let mut out = CaseOut::default();
    let mut notes = Vec::new();
    for kernel in Kernel::available() {
        let row = match kernel {
            Kernel::Scalar => Row::PiScalar,
            Kernel::Avx2 => Row::PiAvx2,
            Kernel::Avx512 => Row::PiAvx512,
        };
        let ours = || {
            let mut s = PiStream::new(0x5eed);
            time(|| {
                black_box(s.run_on(kernel, black_box(samples)));
            })
        };
        let plain = || {
            time(|| {
                black_box(inproc::prng_hits(black_box(samples), 0x5eed));
            })
        };
        let (t, b) = if round.is_multiple_of(2) {
            let t = ours();
            (t, plain())
        } else {
            let b = plain();
            (ours(), b)
        };
        let (t, b) = (samples as f64 / t / 1e6, samples as f64 / b / 1e6);
        out.rows.push((row, t, b));
        notes.push(format!("{} {t:.0} M/s", kernel.name()));
        if kernel == Kernel::Scalar {
            notes.push(format!("plain loop {b:.0} M/s"));
        }
    }
    out.note = notes.join(" | ");
    Ok(out)
}
