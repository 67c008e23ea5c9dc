//! The list operations: max, min, sum, mean, median and stats.
//!
//! taskd(8), OPERATIONS, "Numbers", asks for exact answers whenever the values are all integers
//! (i128 arithmetic, a mean rounded once, a median that may end in `.5`) and for compensated
//! summation otherwise, so each op has an integer path and a double path. Every function takes
//! non-empty [`Values`] (the event loop answers `empty` before a task exists); `Err` carries the
//! message of a `range` error, which here means only that a double result is not finite.

use crate::numbers::{Num, Values};

/// Callers guarantee values; this only keeps a caller bug from becoming a panic on a worker.
fn no_values() -> String {
    "no values".to_string()
}

pub fn max(v: &Values) -> Result<Num, String> {
    match v {
        Values::Ints(xs) => xs.iter().max().map(|&m| Num::Int(m.into())),
        Values::Floats(xs) => xs.iter().copied().reduce(f64::max).map(Num::Float),
    }
    .ok_or_else(no_values)
}

pub fn min(v: &Values) -> Result<Num, String> {
    match v {
        Values::Ints(xs) => xs.iter().min().map(|&m| Num::Int(m.into())),
        Values::Floats(xs) => xs.iter().copied().reduce(f64::min).map(Num::Float),
    }
    .ok_or_else(no_values)
}

/// Integers: exact (i128). Doubles: Neumaier-compensated, `Err` if the result is not finite.
pub fn sum(v: &Values) -> Result<Num, String> {
    match v {
        Values::Ints(xs) => Ok(Num::Int(int_sum(xs))),
        Values::Floats(xs) => {
            let (s, k) = scaled_sum(xs);
            finite(s * pow2(k), "sum")
        }
    }
}

/// Integers: the exact sum over the count, rounded once. Doubles: compensated sum over the count.
pub fn mean(v: &Values) -> Result<Num, String> {
    match v {
        Values::Ints(xs) => {
            if xs.is_empty() {
                return Err(no_values());
            }
            Ok(Num::Float(int_mean(int_sum(xs), xs.len())))
        }
        Values::Floats(xs) => {
            if xs.is_empty() {
                return Err(no_values());
            }
            let (s, k) = scaled_sum(xs);
            // Dividing before scaling back keeps a mean finite whose sum is not.
            finite(s / xs.len() as f64 * pow2(k), "mean")
        }
    }
}

/// Found by selection (linear time, unlike a sort; see `middle_keys`). For an even count,
/// integers give their exact midpoint (`Num::Half` when it ends in .5), doubles `(a + b) / 2`.
pub fn median(v: &Values) -> Result<Num, String> {
    match v {
        Values::Ints(xs) => {
            let (lo, hi) = middle_keys(xs, |x| x, SAMPLED_SELECTION_MIN).ok_or_else(no_values)?;
            if xs.len() % 2 == 1 {
                return Ok(Num::Int(hi.into()));
            }
            let s = i128::from(lo) + i128::from(hi);
            Ok(if s % 2 == 0 { Num::Int(s / 2) } else { Num::Half(s) })
        }
        Values::Floats(xs) => {
            let (lo, hi) = middle_keys(xs, total_key, SAMPLED_SELECTION_MIN).ok_or_else(no_values)?;
            // The key is an involution of the bits: applied again, it gives them back.
            let (lo, hi) = (from_total_key(lo), from_total_key(hi));
            if xs.len() % 2 == 1 {
                return Ok(Num::Float(hi));
            }
            let s = lo + hi;
            let m = if s.is_finite() {
                s / 2.0
            } else {
                lo / 2.0 + hi / 2.0
            };
            finite(m, "median")
        }
    }
}

/// A double's place in `f64::total_cmp`'s order as an i64 (the same transformation
/// total_cmp does): negative doubles get their other bits flipped, so that the signed
/// integer order is the total order, -0 just below +0.
fn total_key(x: f64) -> i64 {
    let bits = x.to_bits() as i64;
    bits ^ ((((bits >> 63) as u64) >> 1) as i64)
}

fn from_total_key(k: i64) -> f64 {
    f64::from_bits((k ^ ((((k >> 63) as u64) >> 1) as i64)) as u64)
}

/// Lists shorter than this are selected on a plain copy: the sample below would be most of
/// them.
const SAMPLED_SELECTION_MIN: usize = 1 << 14;

/// Values of the sample that brackets the middle.
const SAMPLE: usize = 2048;

/// The keys of ranks n/2 - 1 and n/2 (0-based) in sorted order, for n = `xs.len()`; with an
/// odd n the second is the median, with an even n the two middle values. `None` if empty.
///
/// Selection on a copy (`select_nth_unstable`) costs about as much as parsing the values, so
/// long lists go by Floyd and Rivest's idea instead: sort a sample spread evenly over the
/// list, take two of its values that bracket the middle with a wide margin (4 standard
/// deviations of the sample's rank either way), then one pass over the list counts the
/// values below the bracket and copies those inside it, about 9 % of them, and selection on
/// that copy finds the ranks. When the bracket misses (a list arranged against the evenly
/// spread sample), the plain selection on a copy of all keys is the fallback: linear time in
/// every case.
fn middle_keys<T: Copy>(xs: &[T], key: impl Fn(T) -> i64, sampled_min: usize) -> Option<(i64, i64)> {
    let n = xs.len();
    let k = n / 2;
    let even = n.is_multiple_of(2);
    if n == 0 {
        return None;
    }
    if n >= sampled_min.max(4 * SAMPLE) {
        let mut sample: Vec<i64> = (0..SAMPLE)
            .map(|j| key(xs[j * n / SAMPLE + n / (2 * SAMPLE)]))
            .collect();
        sample.sort_unstable();
        // The sample's rank of the middle, with a margin of 4 standard deviations of a
        // binomial count of SAMPLE draws at p = 1/2: 4 * sqrt(SAMPLE) / 2.
        let margin = 2 * SAMPLE.isqrt();
        let at = k * SAMPLE / n;
        let lo = at.checked_sub(margin).map_or(i64::MIN, |j| sample[j]);
        let hi = sample.get(at + margin).copied().unwrap_or(i64::MAX);
        let mut below = 0usize;
        let mut inside: Vec<i64> = Vec::with_capacity(n);
        {
            let spare = inside.spare_capacity_mut();
            let mut len = 0usize;
            for &x in xs {
                let v = key(x);
                below += usize::from(v < lo);
                // Written every time and kept when inside: no branch to mispredict. `len`
                // counts writes kept, at most one per value, so the slot exists.
                spare[len].write(v);
                len += usize::from(lo <= v && v <= hi);
            }
            // SAFETY: the first `len` slots were written above.
            unsafe { inside.set_len(len) };
        }
        // Ranks k - 1 (for an even n) and k of the list are ranks k - 1 - below and
        // k - below of `inside` when both fall inside it.
        let first = if even { k - 1 } else { k };
        if below <= first && k < below + inside.len() {
            return Some(pair_at(&mut inside, k - below, even));
        }
    }
    let mut keys: Vec<i64> = xs.iter().map(|&x| key(x)).collect();
    Some(pair_at(&mut keys, k, even))
}

/// The value of rank `k` of `v` and, when `with_lower` (then k >= 1), the one of rank k - 1;
/// else the rank-k value twice.
fn pair_at(v: &mut [i64], k: usize, with_lower: bool) -> (i64, i64) {
    let (lower, &mut hi, _) = v.select_nth_unstable(k);
    // After selection everything before `k` is <= hi, so rank k - 1 is the largest of them.
    let lo = if with_lower {
        lower.iter().copied().max().unwrap_or(hi)
    } else {
        hi
    };
    (lo, hi)
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    pub count: usize,
    pub min: Num,
    pub max: Num,
    pub mean: Num,
    pub median: Num,
}

/// The fields of `stats`, each by the rules of its own operation.
pub fn stats(v: &Values) -> Result<Stats, String> {
    Ok(Stats {
        count: v.len(),
        min: min(v)?,
        max: max(v)?,
        mean: mean(v)?,
        median: median(v)?,
    })
}

fn finite(x: f64, what: &str) -> Result<Num, String> {
    if x.is_finite() {
        Ok(Num::Float(x))
    } else {
        Err(format!("{what} overflows"))
    }
}

/// The exact sum. Cannot overflow: |sum| <= len * 2^63 < 2^127 for any slice that fits in
/// memory.
fn int_sum(xs: &[i64]) -> i128 {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above.
        return unsafe { int_sum_avx2(xs) };
    }
    int_sum_words(xs)
}

/// [`int_sum_words`] compiled for AVX2: four lanes at a time instead of two.
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn int_sum_avx2(xs: &[i64]) -> i128 {
    int_sum_words(xs)
}

/// Written so that the loop vectorizes (an i128 accumulator does not): as u64, a negative x
/// reads x + 2^64, so the sum is the sum of the u64 readings minus 2^64 per negative value;
/// and the u64 readings are summed as their low and high 32-bit halves, each total fitting a
/// u64 for fewer than 2^32 values (hence the chunks).
#[inline(always)]
fn int_sum_words(xs: &[i64]) -> i128 {
    xs.chunks(1 << 31)
        .map(|chunk| {
            let (mut lo, mut hi, mut negative) = (0u64, 0u64, 0u64);
            for &x in chunk {
                let u = x as u64;
                lo += u & 0xFFFF_FFFF;
                hi += u >> 32;
                negative += u >> 63;
            }
            i128::from(lo) + (i128::from(hi) << 32) - (i128::from(negative) << 64)
        })
        .sum()
}

/// `sum / n` rounded once to the nearest double (ties to even).
fn int_mean(sum: i128, n: usize) -> f64 {
    let m = sum.unsigned_abs();
    let n = n as u128;
    let bits = |x: u128| 128 - x.leading_zeros();
    // Shift the dividend left until the quotient has at least 60 significant bits: then the
    // round bit of a 53-bit double lies inside the quotient, and the remainder only matters
    // as a sticky bit below it. bits(m << s) <= 60 + bits(n) <= 124, so nothing is lost.
    let s = (60 + bits(n)).saturating_sub(bits(m));
    let scaled = m << s;
    let q = (scaled / n) | u128::from(!scaled.is_multiple_of(n));
    // `as` rounds a u128 to nearest-even: the single rounding. Scaling by 2^-s is exact
    // because the mean is 0 or at least 1/n >= 2^-64, far from the subnormal range.
    let f = q as f64 * pow2(-(s as i32));
    if sum < 0 { -f } else { f }
}

/// 2^k for |k| <= 1022, built from its bits so it is exact.
fn pow2(k: i32) -> f64 {
    f64::from_bits(((1023 + k) as u64) << 52)
}

/// Neumaier's compensated sum of `x * scale`.
fn neumaier(xs: &[f64], scale: f64) -> f64 {
    let mut s = 0.0f64;
    let mut c = 0.0f64;
    for &x in xs {
        let x = x * scale;
        let t = s + x;
        c += if s.abs() >= x.abs() {
            (s - t) + x
        } else {
            (x - t) + s
        };
        s = t;
    }
    s + c
}

/// Returns (s, k) with the compensated sum of `xs` equal to s * 2^k and s finite.
///
/// A partial sum can overflow even when the result does not (1e308 + 1e308 - 1e308), and a
/// mean can be finite when the sum is not (mean 1e308 1e308). Once a partial sum is infinite
/// the result is inf or NaN, so that is detected at the end and the sum is redone on values
/// scaled down by a power of two large enough that no partial sum can overflow: every
/// |partial| <= len * max|x| < 2^(1024 + bits(len)). Scaling by a power of two is exact except
/// for values that become subnormal, which are far below the precision of such a sum anyway.
fn scaled_sum(xs: &[f64]) -> (f64, i32) {
    let s = neumaier(xs, 1.0);
    if s.is_finite() {
        return (s, 0);
    }
    let k = (usize::BITS - xs.len().leading_zeros() + 1) as i32;
    (neumaier(xs, pow2(-k)), k)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::numbers::{ValueErrorKind, count_text_values, parse_text_list};
    use proptest::prelude::*;

    fn text(n: Num) -> String {
        let mut out = Vec::new();
        n.write_to(&mut out);
        String::from_utf8(out).expect("ascii")
    }

    /// Runs a line-protocol list request the way the daemon does (count first, then parse,
    /// then the op) and renders the result like a reply, "ERR code" for errors.
    fn run(req: &str) -> String {
        let (op, args) = req
            .split_once([' ', '\t'])
            .map(|(op, rest)| (op, rest.trim_start_matches([' ', '\t'])))
            .unwrap_or((req, ""));
        if count_text_values(args.as_bytes()) == 0 {
            return "ERR empty".into();
        }
        let v = match parse_text_list(args.as_bytes()) {
            Ok(v) => v,
            Err(e) => {
                return match e.kind {
                    ValueErrorKind::Parse => "ERR parse".into(),
                    ValueErrorKind::Range => "ERR range".into(),
                };
            }
        };
        assert_eq!(v.len(), count_text_values(args.as_bytes()), "{req}");
        let r = match op.to_ascii_lowercase().as_str() {
            "max" => max(&v),
            "min" => min(&v),
            "sum" => sum(&v),
            "mean" => mean(&v),
            "median" => median(&v),
            "stats" => {
                return match stats(&v) {
                    Ok(s) => format!(
                        "count={} min={} max={} mean={} median={}",
                        s.count,
                        text(s.min),
                        text(s.max),
                        text(s.mean),
                        text(s.median)
                    ),
                    Err(_) => "ERR range".into(),
                };
            }
            other => panic!("not a list op: {other}"),
        };
        match r {
            Ok(n) => text(n),
            Err(_) => "ERR range".into(),
        }
    }

    #[track_caller]
    fn check(req: &str, want: &str) {
        assert_eq!(run(req), want, "request {req:?}");
    }

    /// Every list-op case of shared/cases/line-protocol.txt.
    #[test]
    fn protocol_cases() {
        check("max 3 9 4", "9");
        check("MAX 3 9 4", "9");
        check("min 4 -2 7", "-2");
        check("sum 1 2 3 4", "10");
        check("mean 1 2 3 4", "2.5");
        check("mean 2 4", "3");
        check("median 5", "5");
        check("median 3 1 2", "2");
        check("median 4 1 3 2", "2.5");
        check("median 1 2", "1.5");
        check("stats 7 8 54 89", "count=4 min=7 max=89 mean=39.5 median=31");
        check("stats [7, 8, 54, 89]", "count=4 min=7 max=89 mean=39.5 median=31");
        check("max 1,2,3", "3");
        check("max [1, 2, 3]", "3");
        check("max 1 , 2 ,3", "3");
        check("max\t1\t2", "2");
        check("sum 9223372036854775807 1", "9223372036854775808");
        check("sum -9223372036854775808 -1", "-9223372036854775809");
        check("max 9007199254740993 1", "9007199254740993");
        check("mean 9007199254740993 1", "4503599627370497");
        check(
            "median 9223372036854775807 9223372036854775806",
            "9223372036854775806.5",
        );
        check("mean 1e16 1 -1e16", "0.3333333333333333");
        check("sum 0.1 0.2", "0.30000000000000004");
        check("mean 0.1 0.2 0.3", "0.19999999999999998");
        check("sum 1e21", "1e+21");
        check("sum 1e20", "100000000000000000000");
        check("max 2.5e-7", "2.5e-7");
        check("max 0.000001", "0.000001");
        check("max -0", "0");
        check("min -0.0 0", "0");
        check("max .5", "0.5");
        check("max 5.", "5");
        check("max -3", "-3");
        check("max +3", "3");
        check("sum 1e308 1e308", "ERR range");
        check("mean 1.5 2.5", "2");
        check("median 1.5 2.5 3.5 4.5", "3");
        check("max", "ERR empty");
        check("max 1 x", "ERR parse");
        check("max nan", "ERR parse");
        check("max inf", "ERR parse");
        check("max 0x10", "ERR parse");
        check("max 1_000", "ERR parse");
        check("max 1,,2", "ERR parse");
        check("max [1,2", "ERR parse");
        check("max 1e999", "ERR range");
    }

    #[test]
    fn integer_extremes() {
        let max = i64::MAX;
        let min = i64::MIN;
        check(&format!("sum {max} {max} {max}"), "27670116110564327421");
        check(&format!("sum {min} {min} {min}"), "-27670116110564327424");
        check(&format!("sum {min} {max}"), "-1");
        check(&format!("max {min} {max}"), &max.to_string());
        check(&format!("min {min} {max}"), &min.to_string());
        check(&format!("median {min} {max}"), "-0.5");
        check(&format!("median {min} {min}"), &min.to_string());
        check(&format!("median {max} {max} {min} {min}"), "-0.5");
        check(&format!("mean {min} {max}"), "-0.5");
        check(&format!("mean {max} {max} {max}"), "9223372036854776000");
        check(&format!("mean {min}"), "-9223372036854776000");
        // One past i64 makes the request doubles.
        check("max 9223372036854775808 1", "9223372036854776000");
        check("sum -9223372036854775809 0", "-9223372036854776000");
        check("median -3 0", "-1.5");
        check("median 0 -3", "-1.5");
        check("median -4 0", "-2");
        check("median -1 0", "-0.5");
        check("median 1 2 3 -7", "1.5");
        check("sum -0 -0", "0");
    }

    #[test]
    fn long_integer_sums_are_exact() {
        let n = 100_000;
        assert_eq!(int_sum(&vec![i64::MIN; n]), i128::from(i64::MIN) * n as i128);
        assert_eq!(int_sum(&vec![i64::MAX; n]), i128::from(i64::MAX) * n as i128);
        assert_eq!(int_sum(&vec![-1; n]), -(n as i128));
        let mixed: Vec<i64> = (0..n as i64)
            .map(|k| if k % 3 == 0 { i64::MIN + k } else { i64::MAX - k })
            .collect();
        assert_eq!(
            int_sum(&mixed),
            mixed.iter().map(|&x| i128::from(x)).sum::<i128>()
        );
    }

    #[test]
    fn integer_mean_is_rounded_once() {
        // Exact 9007199254740993.5 rounds up to ...994; summing as doubles would give ...992.
        check("mean 9007199254740993 9007199254740994", "9007199254740994");
        check("mean 9007199254740993 9007199254740993", "9007199254740992");
        check("mean 1 2", "1.5");
        check("mean -1 -2", "-1.5");
        check("mean 1 1 2", "1.3333333333333333");
        check("mean -1 -1 -2", "-1.3333333333333333");
        check("mean 1 -1", "0");
        check("mean 0", "0");
        check("mean 1 0 0 0 0 0 0", "0.14285714285714285");
        // 2^63 - 1 sums: (3 * (2^63 - 1) - 1) / 3 = 2^63 - 4/3, nearest double 2^63.
        let max = i64::MAX;
        check(&format!("mean {max} {max} {}", max - 1), "9223372036854776000");
        // Ties go to even: (2^53 + 1) exactly halfway between two doubles.
        assert_eq!(int_mean((1i128 << 54) + 2, 2), 9007199254740992.0);
        assert_eq!(int_mean((1i128 << 54) + 6, 2), 9007199254740996.0);
        // Just above the tie must round up (sticky bit).
        assert_eq!(int_mean((1i128 << 55) + 4 * 3 + 1, 4), 9007199254740996.0);
        assert_eq!(int_mean((1i128 << 55) + 5, 4), 9007199254740994.0);
        assert_eq!(int_mean(i128::MIN + 1, usize::MAX), -(2f64.powi(63)));
        assert_eq!(int_mean(1, usize::MAX), 1.0 / 18446744073709551615.0);
    }

    #[test]
    fn neumaier_summation() {
        check("sum 1e100 1 -1e100", "1");
        check("sum 1 1e100 1 -1e100", "2");
        check("mean 1e16 1 -1e16", "0.3333333333333333");
        check("sum 0.1 0.2 0.3", "0.6");
        check("sum 1e16 1 1 1 1", "10000000000000004");
        check("sum 3.5", "3.5");
        check("sum 1 2.5", "3.5");
    }

    #[test]
    fn double_overflow() {
        check("sum 1e308 1e308", "ERR range");
        check("sum -1e308 -1e308", "ERR range");
        check("sum 1.7976931348623157e308 1e292", "ERR range");
        // Partial sums overflow, the result does not.
        check("sum 1e308 1e308 -1e308", "1e+308");
        check("mean 1e308 1e308", "1e+308");
        check("mean 1e308 1e308 1e308 -1e308", "5e+307");
        check(
            "mean -1.7976931348623157e308 -1.7976931348623157e308",
            "-1.7976931348623157e+308",
        );
        check("median 1e308 1.5e308", "1.25e+308");
        check("median -1e308 -1.5e308", "-1.25e+308");
        check(
            "stats 1e308 1e308",
            "count=2 min=1e+308 max=1e+308 mean=1e+308 median=1e+308",
        );
        assert_eq!(
            sum(&Values::Floats(vec![1e308, 1e308])),
            Err("sum overflows".to_string())
        );
    }

    #[test]
    fn double_medians_and_extremes() {
        check("median 2.5 1", "1.75");
        check("median 3 1 2.0", "2");
        check("median 0.1 0.2 0.3 0.4", "0.25");
        check("max 1 2.5", "2.5");
        check("min 1 2.5", "1");
        check("min -0 0.0", "0");
        check("max -0.0 -0", "0");
        check("min 5e-324 1", "5e-324");
        check(
            "stats 1 2.5 -3",
            "count=3 min=-3 max=2.5 mean=0.16666666666666666 median=1",
        );
        check("stats -3 0", "count=2 min=-3 max=0 mean=-1.5 median=-1.5");
        check("stats 5", "count=1 min=5 max=5 mean=5 median=5");
    }

    #[test]
    fn empty_values_are_errors_not_panics() {
        for v in [Values::Ints(vec![]), Values::Floats(vec![])] {
            assert!(max(&v).is_err());
            assert!(min(&v).is_err());
            assert!(mean(&v).is_err());
            assert!(median(&v).is_err());
            assert!(stats(&v).is_err());
        }
    }

    fn sorted_median(xs: &[i64]) -> Num {
        let mut s = xs.to_vec();
        s.sort_unstable();
        let n = s.len();
        if n % 2 == 1 {
            Num::Int(s[n / 2].into())
        } else {
            let t = i128::from(s[n / 2 - 1]) + i128::from(s[n / 2]);
            if t % 2 == 0 { Num::Int(t / 2) } else { Num::Half(t) }
        }
    }

    /// Ranks n/2 - 1 and n/2 by sorting (the rank-n/2 value twice for an odd n).
    fn sorted_pair(xs: &[i64]) -> (i64, i64) {
        let mut s = xs.to_vec();
        s.sort_unstable();
        let k = s.len() / 2;
        if s.len().is_multiple_of(2) {
            (s[k - 1], s[k])
        } else {
            (s[k], s[k])
        }
    }

    /// Long lists of many shapes, through the sampled selection (and its fallback, for lists
    /// whose evenly spread sample is all on one side of the middle), against sorting.
    #[test]
    fn sampled_selection_matches_sorting() {
        let mut state = 11u64;
        let mut next = move || {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        for n in [8192usize, 8193, 10_000, 20_001] {
            let random: Vec<i64> = (0..n).map(|_| next() as i64).collect();
            let few: Vec<i64> = (0..n).map(|_| (next() % 7) as i64 - 3).collect();
            let sorted: Vec<i64> = (0..n as i64).collect();
            let reversed: Vec<i64> = (0..n as i64).rev().collect();
            let equal = vec![42i64; n];
            let extremes: Vec<i64> = (0..n)
                .map(|j| if j % 2 == 0 { i64::MIN } else { i64::MAX })
                .collect();
            let pipe: Vec<i64> = (0..n as i64).map(|j| j.min(n as i64 - j)).collect();
            // Every sampled position holds the largest value: the bracket misses.
            let mut against = random.clone();
            for j in 0..SAMPLE {
                against[j * n / SAMPLE + n / (2 * SAMPLE)] = i64::MAX;
            }
            for xs in [random, few, sorted, reversed, equal, extremes, pipe, against] {
                assert_eq!(middle_keys(&xs, |x| x, 0), Some(sorted_pair(&xs)), "n = {n}");
                let floats: Vec<f64> = xs.iter().map(|&x| x as f64 / 3.0).collect();
                let mut s = floats.clone();
                s.sort_by(f64::total_cmp);
                let k = n / 2;
                let want = if n % 2 == 1 { s[k] } else { (s[k - 1] + s[k]) / 2.0 };
                assert_eq!(median(&Values::Floats(floats)), Ok(Num::Float(want)), "n = {n}");
            }
        }
    }

    #[test]
    fn total_keys_order_doubles_like_total_cmp() {
        let xs = [
            f64::NEG_INFINITY,
            -1e308,
            -1.0,
            -5e-324,
            -0.0,
            0.0,
            5e-324,
            1.0,
            1e308,
            f64::INFINITY,
        ];
        for w in xs.windows(2) {
            assert!(total_key(w[0]) < total_key(w[1]), "{} {}", w[0], w[1]);
        }
        for x in xs {
            assert_eq!(from_total_key(total_key(x)).to_bits(), x.to_bits());
        }
    }

    /// The exact mean rounded to a double by way of a long decimal expansion: the digits are
    /// cut far below a double's precision and a trailing 1 stands for any nonzero rest, so
    /// Rust's correctly rounded parser rounds it the same way as the exact quotient.
    fn reference_mean(xs: &[i64]) -> f64 {
        let s: i128 = xs.iter().map(|&x| i128::from(x)).sum();
        let n = xs.len() as u128;
        let m = s.unsigned_abs();
        let mut digits = format!("{}{}.", if s < 0 { "-" } else { "" }, m / n);
        let mut r = m % n;
        for _ in 0..60 {
            r *= 10;
            digits.push(char::from(b'0' + (r / n) as u8));
            r %= n;
        }
        if r != 0 {
            digits.push('1');
        }
        digits.parse().expect("decimal")
    }

    proptest! {
        #[test]
        fn int_sum_is_exact(xs in prop::collection::vec(
            prop_oneof![any::<i64>(), -1000i64..1000, Just(i64::MAX), Just(i64::MIN)], 0..100)) {
            let want: i128 = xs.iter().map(|&x| i128::from(x)).sum();
            prop_assert_eq!(int_sum(&xs), want);
            prop_assert_eq!(int_sum_words(&xs), want);
        }

        #[test]
        fn int_median_matches_sorting(xs in prop::collection::vec(any::<i64>(), 1..60)) {
            prop_assert_eq!(median(&Values::Ints(xs.clone())), Ok(sorted_median(&xs)));
        }

        #[test]
        fn int_median_small_values(xs in prop::collection::vec(-5i64..5, 1..20)) {
            prop_assert_eq!(median(&Values::Ints(xs.clone())), Ok(sorted_median(&xs)));
        }

        #[test]
        fn int_mean_is_correctly_rounded(xs in prop::collection::vec(
            prop_oneof![any::<i64>(), -1000i64..1000, Just(i64::MAX), Just(i64::MIN)], 1..50)) {
            let got = mean(&Values::Ints(xs.clone()));
            prop_assert_eq!(got, Ok(Num::Float(reference_mean(&xs))));
        }

        #[test]
        fn selection_matches_sorting(xs in prop::collection::vec(prop_oneof![any::<i64>(), -3i64..3], 1..200)) {
            // The sampled path needs 4 samples' worth of values; below, the plain one.
            prop_assert_eq!(middle_keys(&xs, |x| x, 0), Some(sorted_pair(&xs)));
        }

        #[test]
        fn float_median_matches_sorting(xs in prop::collection::vec(-1e6f64..1e6, 1..40)) {
            let mut s = xs.clone();
            s.sort_by(f64::total_cmp);
            let n = s.len();
            let want = if n % 2 == 1 { s[n / 2] } else { (s[n / 2 - 1] + s[n / 2]) / 2.0 };
            prop_assert_eq!(median(&Values::Floats(xs)), Ok(Num::Float(want)));
        }
    }
}
