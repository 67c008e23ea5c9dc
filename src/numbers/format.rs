//! Writing result numbers.
//!
//! Text and JSON replies must carry the same digits, and those digits are fixed by the
//! contract: exact decimal for integer results, ECMAScript Number::toString for doubles
//! (serde_json and Rust's `Display` both differ, e.g. `31.0` or `1e21`). Writing straight into
//! the reply buffer keeps the hot path free of temporary Strings.

use std::fmt;

use crate::numbers::Num;

impl Num {
    /// Appends the number's text (used for both text and JSON replies): Int as decimal, Half as
    /// n/2 exactly ("-1.5", "9223372036854775806.5"), Float as ECMAScript Number::toString via
    /// ryu_js (shortest round-trip; "1e+21", "2.5e-7", "0.000001", "100000000000000000000");
    /// -0 written "0".
    pub fn write_to(&self, out: &mut Vec<u8>) {
        match *self {
            Num::Int(n) => write_i128(out, n),
            Num::Half(n) => {
                // An even n is not a valid Half, but its value is still n/2, and writing that
                // is better than writing something wrong.
                if n % 2 == 0 {
                    write_i128(out, n / 2);
                } else {
                    if n < 0 {
                        out.push(b'-');
                    }
                    // Truncating |n| / 2 and appending ".5" is exact because n is odd.
                    write_u128(out, n.unsigned_abs() / 2);
                    out.extend_from_slice(b".5");
                }
            }
            Num::Float(x) => {
                // ECMAScript writes -0 as "0"; the explicit check keeps that independent of
                // the formatting crate's choice.
                if x == 0.0 {
                    out.push(b'0');
                } else {
                    out.extend_from_slice(ryu_js::Buffer::new().format(x).as_bytes());
                }
            }
        }
    }
}

impl fmt::Display for Num {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = Vec::with_capacity(48);
        self.write_to(&mut buf);
        // write_to only ever emits ASCII, so the lossy conversion never replaces anything.
        f.write_str(&String::from_utf8_lossy(&buf))
    }
}

fn write_i128(out: &mut Vec<u8>, n: i128) {
    if n < 0 {
        out.push(b'-');
    }
    write_u128(out, n.unsigned_abs());
}

fn write_u128(out: &mut Vec<u8>, n: u128) {
    // Most results fit 64 bits, whose division is a multiply, not a call.
    if let Ok(small) = u64::try_from(n) {
        return write_u64(out, small);
    }
    let mut n = n;
    // u128::MAX has 39 decimal digits.
    let mut buf = [0u8; 40];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// The decimal digits of `n`, two at a time.
pub fn write_u64(out: &mut Vec<u8>, mut n: u64) {
    const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
        2021222324252627282930313233343536373839\
        4041424344454647484950515253545556575859\
        6061626364656667686970717273747576777879\
        8081828384858687888990919293949596979899";
    // Most numbers of a log line and a reply are short: written without
    // the buffer and its variable-length copy (a call to memcpy).
    if n < 10 {
        out.push(b'0' + n as u8);
        return;
    }
    if n < 100 {
        let pair = n as usize * 2;
        out.extend_from_slice(&[PAIRS[pair], PAIRS[pair + 1]]);
        return;
    }
    // u64::MAX has 20 decimal digits.
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    while n >= 100 {
        let pair = (n % 100) as usize * 2;
        n /= 100;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    }
    if n >= 10 {
        i -= 2;
        let pair = n as usize * 2;
        buf[i..i + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    } else {
        i -= 1;
        buf[i] = b'0' + n as u8;
    }
    out.extend_from_slice(&buf[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn text(n: Num) -> String {
        let mut out = Vec::new();
        n.write_to(&mut out);
        String::from_utf8(out).expect("ascii")
    }

    #[test]
    fn u64_digits() {
        for n in [0, 7, 10, 99, 100, 101, 12345, u64::MAX, u64::MAX - 1, 1 << 63] {
            let mut v = Vec::new();
            write_u64(&mut v, n);
            assert_eq!(String::from_utf8(v).unwrap(), n.to_string());
        }
    }

    #[test]
    fn ints() {
        assert_eq!(text(Num::Int(0)), "0");
        assert_eq!(text(Num::Int(-7)), "-7");
        assert_eq!(text(Num::Int(9223372036854775808)), "9223372036854775808");
        assert_eq!(text(Num::Int(i128::MIN)), i128::MIN.to_string());
        assert_eq!(text(Num::Int(i128::MAX)), i128::MAX.to_string());
    }

    #[test]
    fn halves() {
        assert_eq!(text(Num::Half(3)), "1.5");
        assert_eq!(text(Num::Half(-3)), "-1.5");
        assert_eq!(text(Num::Half(1)), "0.5");
        assert_eq!(text(Num::Half(-1)), "-0.5");
        assert_eq!(text(Num::Half(18446744073709551613)), "9223372036854775806.5");
        assert_eq!(text(Num::Half(-18446744073709551617)), "-9223372036854775808.5");
        assert_eq!(text(Num::Half(i128::MIN + 1)), format!("-{}.5", i128::MAX / 2));
        // Not produced by the ops, but still the right value.
        assert_eq!(text(Num::Half(-4)), "-2");
    }

    #[test]
    fn floats_like_ecmascript() {
        let cases: &[(f64, &str)] = &[
            (31.0, "31"),
            (0.1, "0.1"),
            (2.5, "2.5"),
            (1e21, "1e+21"),
            (1e20, "100000000000000000000"),
            (2.5e-7, "2.5e-7"),
            (0.000001, "0.000001"),
            (1e-7, "1e-7"),
            (-0.0, "0"),
            (0.0, "0"),
            (-1.5, "-1.5"),
            (0.30000000000000004, "0.30000000000000004"),
            (0.19999999999999998, "0.19999999999999998"),
            (1.0 / 3.0, "0.3333333333333333"),
            (4503599627370497.0, "4503599627370497"),
            (9223372036854775807.0, "9223372036854776000"),
            (f64::MAX, "1.7976931348623157e+308"),
            (f64::MIN_POSITIVE, "2.2250738585072014e-308"),
            (5e-324, "5e-324"),
            (-1e300, "-1e+300"),
        ];
        for &(x, want) in cases {
            assert_eq!(text(Num::Float(x)), want, "{x:e}");
        }
    }

    #[test]
    fn display_matches_write_to() {
        assert_eq!(Num::Float(1e21).to_string(), "1e+21");
        assert_eq!(Num::Half(-3).to_string(), "-1.5");
    }

    proptest! {
        #[test]
        fn finite_floats_round_trip(bits in any::<u64>()) {
            let x = f64::from_bits(bits);
            prop_assume!(x.is_finite());
            let s = text(Num::Float(x));
            let back: f64 = s.parse().expect("parses");
            let want = if x == 0.0 { 0.0 } else { x };
            prop_assert_eq!(back.to_bits(), want.to_bits(), "{}", s);
        }

        #[test]
        fn ints_match_display(n in any::<i128>()) {
            prop_assert_eq!(text(Num::Int(n)), n.to_string());
        }
    }
}
