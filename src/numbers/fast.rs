//! The fast paths of the text scanner: SIMD classification of 64-byte blocks, and digits read
//! eight at a time as one word (SWAR).
//!
//! Value lines can be 8 MB. The event loop counts a line's values before anything else
//! ([`count_values`]), and a worker then parses it; both go through here. Counting classifies
//! 64 bytes at a time into a bit mask of separators and counts where values start. Parsing
//! ([`fast_ints`]) uses the same masks to find every value of a block at once and reads plain
//! integers without a branch per digit, and in lists of doubles every value of up to 19
//! significant digits and a 3-digit exponent ([`fast_double`]: Clinger's exact fast path, else
//! fast-float2's Eisel-Lemire); anything else (a longer value, a bracket, a second comma, a
//! malformed or infinite value, the last bytes of the line) is left to the general scanner
//! in `parse.rs`, which defines the grammar
//! and the error messages. The two must agree on every input, which `reference.rs` checks
//! against a parser written the obvious way.
//!
//! Instruction sets: SSE2 (part of every x86_64), AVX2 with BMI1/BMI2/POPCNT when the CPU has
//! them, AVX-512 (F, BW, DQ, VBMI, VBMI2) on top of those, which also converts a block of
//! short integers whole (checked at run time, [`Isa::detect`]), and plain Rust on other
//! architectures.

use std::mem::MaybeUninit;

/// Bytes that separate values; everything else belongs to a value token.
#[inline(always)]
pub(super) fn is_sep(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b',' | b'[' | b']')
}

#[inline(always)]
pub(super) fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// [`is_sep`] as a table, for the byte after a token's digits.
const SEPARATOR: [bool; 256] = {
    let mut t = [false; 256];
    t[b' ' as usize] = true;
    t[b'\t' as usize] = true;
    t[b',' as usize] = true;
    t[b'[' as usize] = true;
    t[b']' as usize] = true;
    t
};

/// Which code to run. Invariant: `Avx2` only exists when the CPU has AVX2, BMI1, BMI2 and
/// POPCNT, and `Avx512` when it also has AVX-512 F, BW, DQ, VBMI and VBMI2 (only
/// [`Isa::detect`] makes them, and [`Isa::available`] when `detect` did).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Isa {
    /// Plain Rust: other architectures, and the tests everywhere.
    #[cfg_attr(target_arch = "x86_64", allow(dead_code))]
    Portable,
    #[cfg(target_arch = "x86_64")]
    Sse2,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Isa {
    /// The best this CPU can run, asked once: std caches each feature, but the nine
    /// questions still cost ~35 instructions, twice per request.
    #[inline]
    pub(super) fn detect() -> Isa {
        static BEST: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
        *BEST.get_or_init(Isa::probe)
    }

    fn probe() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx2")
                && std::is_x86_feature_detected!("bmi1")
                && std::is_x86_feature_detected!("bmi2")
                && std::is_x86_feature_detected!("popcnt")
            {
                if std::is_x86_feature_detected!("avx512f")
                    && std::is_x86_feature_detected!("avx512bw")
                    && std::is_x86_feature_detected!("avx512dq")
                    && std::is_x86_feature_detected!("avx512vbmi")
                    && std::is_x86_feature_detected!("avx512vbmi2")
                {
                    return Isa::Avx512;
                }
                return Isa::Avx2;
            }
            Isa::Sse2
        }
        #[cfg(not(target_arch = "x86_64"))]
        Isa::Portable
    }

    /// The variant for `len` bytes of text: AVX-512 only from [`AVX512_MIN_LEN`] on. Short
    /// lines are most requests and gain nothing from it, and on some CPUs (Skylake-SP and
    /// its kin) any 512-bit instruction lowers the core's clock for a while after, which
    /// would slow every other request the event loop handles.
    #[inline]
    pub(super) fn for_len(self, len: usize) -> Isa {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 if len < AVX512_MIN_LEN => Isa::Avx2,
            other => other,
        }
    }

    /// Every variant this CPU can run, for the tests.
    #[cfg(test)]
    pub(super) fn available() -> Vec<Isa> {
        #[cfg(target_arch = "x86_64")]
        {
            let mut all = vec![Isa::Portable, Isa::Sse2];
            match Isa::detect() {
                Isa::Avx512 => all.extend([Isa::Avx2, Isa::Avx512]),
                Isa::Avx2 => all.push(Isa::Avx2),
                _ => {}
            }
            all
        }
        #[cfg(not(target_arch = "x86_64"))]
        vec![Isa::Portable]
    }
}

/// Lines shorter than this are read without AVX-512 (see [`Isa::for_len`]).
pub(super) const AVX512_MIN_LEN: usize = 4096;

/// A 64-byte block as bit masks, bit k for byte k.
#[derive(Clone, Copy)]
struct Classes {
    /// Spaces and tabs.
    blank: u64,
    comma: u64,
    bracket: u64,
    /// ASCII digits.
    digit: u64,
}

impl Classes {
    /// Separators: space, tab, ',', '[', ']'.
    #[inline(always)]
    fn sep(&self) -> u64 {
        self.blank | self.comma | self.bracket
    }
}

#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
#[inline(always)]
fn classify_portable(block: &[u8; 64]) -> Classes {
    let mut c = Classes {
        blank: 0,
        comma: 0,
        bracket: 0,
        digit: 0,
    };
    for (k, &b) in block.iter().enumerate() {
        c.blank |= u64::from(is_ws(b)) << k;
        c.comma |= u64::from(b == b',') << k;
        c.bracket |= u64::from(b == b'[' || b == b']') << k;
        c.digit |= u64::from(b.is_ascii_digit()) << k;
    }
    c
}

/// 16 bytes at a time. Masks a caller does not use are never computed (the function is
/// inlined and the compares are pure), so counting pays for the separators only.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn classify_sse2(block: &[u8; 64]) -> Classes {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_min_epu8, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8, _mm_sub_epi8,
    };
    let mut c = Classes {
        blank: 0,
        comma: 0,
        bracket: 0,
        digit: 0,
    };
    for k in 0..4 {
        // SAFETY: SSE2 is part of x86_64; bytes 16k..16k+16 are inside the block, and loadu
        // has no alignment requirement.
        let (blank, comma, bracket, digit) = unsafe {
            let v = _mm_loadu_si128(block.as_ptr().add(16 * k).cast::<__m128i>());
            let comma = _mm_cmpeq_epi8(v, _mm_set1_epi8(b',' as i8));
            let bracket = _mm_or_si128(
                _mm_cmpeq_epi8(v, _mm_set1_epi8(b'[' as i8)),
                _mm_cmpeq_epi8(v, _mm_set1_epi8(b']' as i8)),
            );
            let blank = _mm_or_si128(
                _mm_cmpeq_epi8(v, _mm_set1_epi8(b' ' as i8)),
                _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\t' as i8)),
            );
            // A digit is a byte at most 9 above '0', unsigned.
            let d = _mm_sub_epi8(v, _mm_set1_epi8(b'0' as i8));
            let digit = _mm_cmpeq_epi8(_mm_min_epu8(d, _mm_set1_epi8(9)), d);
            (
                _mm_movemask_epi8(blank) as u16,
                _mm_movemask_epi8(comma) as u16,
                _mm_movemask_epi8(bracket) as u16,
                _mm_movemask_epi8(digit) as u16,
            )
        };
        c.blank |= u64::from(blank) << (16 * k);
        c.comma |= u64::from(comma) << (16 * k);
        c.bracket |= u64::from(bracket) << (16 * k);
        c.digit |= u64::from(digit) << (16 * k);
    }
    c
}

/// 32 bytes at a time. (No closures here: they would not inherit the target feature, and
/// the intrinsics would stop being single instructions.)
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn classify_avx2(block: &[u8; 64]) -> Classes {
    use std::arch::x86_64::{
        __m256i, _mm256_cmpeq_epi8, _mm256_loadu_si256, _mm256_min_epu8, _mm256_movemask_epi8,
        _mm256_or_si256, _mm256_set1_epi8, _mm256_sub_epi8,
    };
    #[target_feature(enable = "avx2")]
    fn half(v: __m256i) -> [u32; 4] {
        let comma = _mm256_cmpeq_epi8(v, _mm256_set1_epi8(b',' as i8));
        let bracket = _mm256_or_si256(
            _mm256_cmpeq_epi8(v, _mm256_set1_epi8(b'[' as i8)),
            _mm256_cmpeq_epi8(v, _mm256_set1_epi8(b']' as i8)),
        );
        let blank = _mm256_or_si256(
            _mm256_cmpeq_epi8(v, _mm256_set1_epi8(b' ' as i8)),
            _mm256_cmpeq_epi8(v, _mm256_set1_epi8(b'\t' as i8)),
        );
        // A digit is a byte at most 9 above '0', unsigned.
        let d = _mm256_sub_epi8(v, _mm256_set1_epi8(b'0' as i8));
        let digit = _mm256_cmpeq_epi8(_mm256_min_epu8(d, _mm256_set1_epi8(9)), d);
        [
            _mm256_movemask_epi8(blank) as u32,
            _mm256_movemask_epi8(comma) as u32,
            _mm256_movemask_epi8(bracket) as u32,
            _mm256_movemask_epi8(digit) as u32,
        ]
    }
    // SAFETY: both halves are inside the block, and loadu has no alignment requirement.
    let (lo, hi) = unsafe {
        let p = block.as_ptr().cast::<__m256i>();
        (_mm256_loadu_si256(p), _mm256_loadu_si256(p.add(1)))
    };
    let [blank0, comma0, bracket0, digit0] = half(lo);
    let [blank1, comma1, bracket1, digit1] = half(hi);
    let join = |a: u32, b: u32| u64::from(a) | (u64::from(b) << 32);
    Classes {
        blank: join(blank0, blank1),
        comma: join(comma0, comma1),
        bracket: join(bracket0, bracket1),
        digit: join(digit0, digit1),
    }
}

/// 64 bytes at once, each class straight into a mask register.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
fn classify_avx512(block: &[u8; 64]) -> Classes {
    use std::arch::x86_64::{
        __m512i, _mm512_cmpeq_epi8_mask, _mm512_cmple_epu8_mask, _mm512_loadu_si512, _mm512_set1_epi8,
        _mm512_sub_epi8,
    };
    // SAFETY: the block is 64 bytes, and loadu has no alignment requirement.
    let v = unsafe { _mm512_loadu_si512(block.as_ptr().cast::<__m512i>()) };
    // A macro, not a closure, so that the compares are compiled with this function's features.
    macro_rules! eq {
        ($c:expr) => {
            _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8($c as i8))
        };
    }
    Classes {
        blank: eq!(b' ') | eq!(b'\t'),
        comma: eq!(b','),
        bracket: eq!(b'[') | eq!(b']'),
        // A digit is a byte at most 9 above '0', unsigned.
        digit: _mm512_cmple_epu8_mask(
            _mm512_sub_epi8(v, _mm512_set1_epi8(b'0' as i8)),
            _mm512_set1_epi8(9),
        ),
    }
}

/// The counting loop: a value starts at every non-separator whose predecessor is a separator
/// (or the line start), so each block adds the population count of `!sep & (sep << 1 |
/// carry)`, the carry being whether the previous block ended in a separator. The last partial
/// block is copied into a block padded with spaces, which start nothing. A macro so that it
/// expands inside each `#[target_feature]` function and is compiled with its features.
macro_rules! count_body {
    ($classify:expr, $args:expr) => {{
        let args: &[u8] = $args;
        let mut count = 0usize;
        let mut carry = 1u64;
        let mut blocks = args.chunks_exact(64);
        for block in &mut blocks {
            let sep = $classify(block.try_into().expect("64 bytes")).sep();
            count += (!sep & ((sep << 1) | carry)).count_ones() as usize;
            carry = sep >> 63;
        }
        let rest = blocks.remainder();
        if !rest.is_empty() {
            let mut block = [b' '; 64];
            block[..rest.len()].copy_from_slice(rest);
            let sep = $classify(&block).sep();
            count += (!sep & ((sep << 1) | carry)).count_ones() as usize;
        }
        count
    }};
}

/// The number of maximal runs of bytes that are not space, tab, ',', '[' or ']'.
pub(super) fn count_values(args: &[u8], isa: Isa) -> usize {
    match isa {
        Isa::Portable => count_body!(classify_portable, args),
        #[cfg(target_arch = "x86_64")]
        Isa::Sse2 => count_body!(classify_sse2, args),
        // SAFETY: `Isa::Avx2` exists only on CPUs with the features (its invariant).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { count_avx2(args) },
        // SAFETY: as for Avx2.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { count_avx512(args) },
    }
}

/// # Safety
/// The CPU must support AVX-512 F and BW, and POPCNT.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,popcnt")]
unsafe fn count_avx512(args: &[u8]) -> usize {
    count_body!(classify_avx512, args)
}

/// # Safety
/// The CPU must support AVX2 and POPCNT.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,popcnt")]
unsafe fn count_avx2(args: &[u8]) -> usize {
    count_body!(classify_avx2, args)
}

/// b'0' in every byte: XORed in, it turns ASCII digits into their values 0..=9.
pub(super) const ZEROS: u64 = 0x3030_3030_3030_3030;

/// For a word XORed with b'0' in every byte: the number of leading (lowest-address) bytes
/// that were ASCII digits. A byte was a digit iff it is now below 10; adding 0x76 sets the high
/// bit of bytes 10..=0x89 and OR-ing in the byte itself catches the rest. Carries only run
/// towards later bytes, so the first flagged byte is always right.
#[inline(always)]
pub(super) fn digit_run(x: u64) -> u32 {
    let non_digit = (x.wrapping_add(0x7676_7676_7676_7676) | x) & 0x8080_8080_8080_8080;
    non_digit.trailing_zeros() / 8
}

/// The value of 8 digit bytes (already XORed with b'0', first digit in the lowest byte):
/// the SWAR reduction used by fast_float/simdjson, pairs, then quads, then the whole word.
#[inline(always)]
pub(super) fn eight_digits(x: u64) -> u64 {
    const MASK: u64 = 0x0000_00FF_0000_00FF;
    const MUL1: u64 = 0x000F_4240_0000_0064; // 100 + (1_000_000 << 32)
    const MUL2: u64 = 0x0000_2710_0000_0001; // 1 + (10_000 << 32)
    let x = x.wrapping_mul(10).wrapping_add(x >> 8);
    let hi = (x & MASK).wrapping_mul(MUL1);
    let lo = ((x >> 16) & MASK).wrapping_mul(MUL2);
    u64::from((hi.wrapping_add(lo) >> 32) as u32)
}

/// The value of the first `n` (0..=7) digits of a word XORed with b'0': shifting them to the
/// top leaves zero bytes, leading zeros, below them. The shift is split in two so that n = 0
/// shifts everything out instead of overflowing.
#[inline(always)]
fn leading_digits(x: u64, n: usize) -> u64 {
    eight_digits((x << (8 * (7 - n))) << 8)
}

/// [`eight_digits`] of four words of ASCII digits (zero bytes below the digits count as
/// leading zeros), one after the other.
#[inline(always)]
fn eight_digits_x4(words: [u64; 4]) -> [u64; 4] {
    words.map(|w| eight_digits(w & 0x0F0F_0F0F_0F0F_0F0F))
}

/// The same on all four at once: the masked bytes are the digits' values, pairs of bytes
/// become 10a + b (vpmaddubsw), pairs of those 100a + b (vpmaddwd), and the two halves of
/// each word 10^4 a + b (vpmuludq and an add).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn eight_digits_x4_avx2(words: [u64; 4]) -> [u64; 4] {
    use std::arch::x86_64::{
        __m256i, _mm256_add_epi64, _mm256_and_si256, _mm256_madd_epi16, _mm256_maddubs_epi16,
        _mm256_mul_epu32, _mm256_set_epi64x, _mm256_set1_epi8, _mm256_set1_epi16, _mm256_set1_epi32,
        _mm256_set1_epi64x, _mm256_srli_epi64, _mm256_storeu_si256,
    };
    let [a, b, c, d] = words.map(|w| w as i64);
    let x = _mm256_and_si256(_mm256_set_epi64x(d, c, b, a), _mm256_set1_epi8(0x0F));
    // Bytes (10, 1) and words (100, 1): the lower address holds the higher digits.
    let pairs = _mm256_maddubs_epi16(x, _mm256_set1_epi16(0x010A));
    let quads = _mm256_madd_epi16(pairs, _mm256_set1_epi32(0x0001_0064));
    let v = _mm256_add_epi64(
        _mm256_mul_epu32(quads, _mm256_set1_epi64x(10_000)),
        _mm256_srli_epi64::<32>(quads),
    );
    let mut out = [0u64; 4];
    // SAFETY: `out` is 32 bytes; storeu has no alignment requirement.
    unsafe { _mm256_storeu_si256(out.as_mut_ptr().cast::<__m256i>(), v) };
    out
}

pub(super) const POW10: [u64; 9] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
];

/// Bytes read from a token's start: a sign, 19 digits and the byte after them fit.
const WINDOW: usize = 32;

/// The 8 bytes at `at` of a window as a little-endian word; `at` is at most 17 here, so the
/// compiler drops the bounds check.
#[inline(always)]
fn window_word(w: &[u8; WINDOW], at: usize) -> u64 {
    let bytes: &[u8; 8] = w[at..].first_chunk().expect("inside the window");
    u64::from_le_bytes(*bytes)
}

/// The common value: an integer of up to 19 digits within i64, with or without a sign, and
/// followed by a separator. `w` starts at the token's first byte. Returns the value and the
/// length of its text; `None` for anything else (left to the general scanner). Reads whole
/// words and has no branch per digit.
#[inline(always)]
fn fast_int(w: &[u8; WINDOW]) -> Option<(i64, usize)> {
    let c0 = w[0];
    let neg = c0 == b'-';
    let start = usize::from(neg | (c0 == b'+'));
    let x = window_word(w, start) ^ ZEROS;
    let digits = digit_run(x) as usize;
    let (v, end) = if digits < 8 {
        if digits == 0 {
            return None;
        }
        (leading_digits(x, digits), start + digits)
    } else {
        let x2 = window_word(w, start + 8) ^ ZEROS;
        let digits2 = digit_run(x2) as usize;
        let (v, end) = if digits2 < 8 {
            let v = eight_digits(x) * POW10[digits2] + leading_digits(x2, digits2);
            (v, start + 8 + digits2)
        } else {
            let x3 = window_word(w, start + 16) ^ ZEROS;
            let digits3 = digit_run(x3) as usize;
            if digits3 > 3 {
                // 20 digits or more: only leading zeros could keep it in i64.
                return None;
            }
            // At most 19 digits: below 10^19 < 2^64, so no overflow.
            let v16 = eight_digits(x) * 100_000_000 + eight_digits(x2);
            let v = v16 * POW10[digits3] + leading_digits(x3, digits3);
            (v, start + 16 + digits3)
        };
        // i64 goes down to -2^63 but only up to 2^63 - 1; outside, a double.
        if v > i64::MAX as u64 + u64::from(neg) {
            return None;
        }
        (v, end)
    };
    // `end` is at most 20: the mask only spares the bounds check. A '.', an exponent or any
    // other byte of a value here makes the token something else.
    if !SEPARATOR[usize::from(w[end & (WINDOW - 1)])] {
        return None;
    }
    // 2^63 wraps to i64::MIN, whose negation is itself: exactly -2^63.
    let v = if neg { (v as i64).wrapping_neg() } else { v as i64 };
    Some((v, end))
}

/// Powers of ten that are exact doubles, for Clinger's fast path.
pub(super) const EXACT_POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18,
    1e19, 1e20, 1e21, 1e22,
];

/// Clinger's fast path: when the digits are an exact double (<= 2^53) and the power of ten
/// is exact too (<= 1e22), one IEEE multiplication or division rounds the exact decimal value
/// correctly, the same result as a full parser. None otherwise. `e` is the decimal exponent
/// of the last digit.
#[inline(always)]
pub(super) fn clinger(neg: bool, mantissa: u64, e: i64) -> Option<f64> {
    if mantissa > 1 << 53 || !(-22..=22).contains(&e) {
        return None;
    }
    let m = mantissa as f64;
    let v = if e >= 0 {
        m * EXACT_POW10[e as usize]
    } else {
        m / EXACT_POW10[(-e) as usize]
    };
    Some(if neg { -v } else { v })
}

/// Bytes a double's token may take in the fast path: a sign, 19 digits and a '.', an
/// exponent of up to 3 digits with its 'e' and sign, and the bytes read after them (at most
/// 46 in all) fit.
const TOKEN: usize = 64;

/// The significant digits of a double's token from `at` (after the sign): digits, maybe a
/// '.' and more digits. Returns the digits as one integer, the counts of digits before and
/// after the '.', whether there was a '.', and where the digits end; `None` for more than 19
/// digits.
///
/// Byte by byte, unlike the integers' word-at-a-time reading: in a list of doubles the
/// digits are few on each side of the '.' and of the exponent, and a word's digit count
/// would put three loads in a row, each waiting for the count before it. Read byte by
/// byte, where each part ends is a predicted branch, so the loads of a value and of the
/// next ones go out together. (Measured on 10^6 values like 1.5e-3: 581 MB/s against 408
/// word at a time; shortest round-trip doubles, whose lengths vary, 718 against 783.)
#[inline(always)]
fn mantissa(w: &[u8; TOKEN], at: usize) -> Option<(u64, usize, usize, bool, usize)> {
    let mut i = at;
    let mut m = 0u64;
    while i < at + 19 {
        let d = w[i].wrapping_sub(b'0');
        if d > 9 {
            break;
        }
        m = m * 10 + u64::from(d);
        i += 1;
    }
    let int_digits = i - at;
    if w[i].is_ascii_digit() {
        return None;
    }
    if w[i] != b'.' {
        return Some((m, int_digits, 0, false, i));
    }
    i += 1;
    let f = i;
    let limit = f + (19 - int_digits);
    while i < limit {
        let d = w[i].wrapping_sub(b'0');
        if d > 9 {
            break;
        }
        m = m * 10 + u64::from(d);
        i += 1;
    }
    if w[i].is_ascii_digit() {
        return None;
    }
    Some((m, int_digits, i - f, true, i))
}

/// A value of a list of doubles: `[sign] digits [. digits] [e|E [sign] digits]` with at
/// most 19 digits in all and an exponent of at most 3 digits, followed by a separator, and
/// finite. `w` starts at the token's first byte.
/// Returns the double and the length of the token; `None` for anything else, which the
/// general scanner takes (with the same results, and the error messages).
///
/// The digits are read byte by byte ([`mantissa`]). When they make an exact double (<= 2^53) and the
/// power of ten is exact too (|e| <= 22), one IEEE multiplication or division rounds the
/// exact decimal value correctly (Clinger's fast path); the rest of the valid tokens go to
/// fast-float2, an Eisel-Lemire parser, correctly rounded like std's `str::parse` (which is
/// the same algorithm). An integer token (no '.', no exponent) is converted as the general
/// scanner converts integers in a list of doubles: `-0` is 0, not -0.
#[inline(always)]
pub(super) fn fast_double(w: &[u8; TOKEN]) -> Option<(f64, usize)> {
    let c0 = w[0];
    let neg = c0 == b'-';
    let start = usize::from(neg | (c0 == b'+'));
    let (mantissa, int_digits, frac_digits, dot, mut i) = mantissa(w, start)?;
    if int_digits + frac_digits == 0 {
        return None;
    }
    let mut exp = 0i64;
    let has_exp = w[i] | 0x20 == b'e';
    if has_exp {
        let exp_neg = w[i + 1] == b'-';
        i += 1 + usize::from(exp_neg | (w[i + 1] == b'+'));
        // One to three digits, byte by byte: exponents are short.
        let mut e = 0i64;
        let mut n = 0;
        while n < 4 {
            let d = w[i].wrapping_sub(b'0');
            if d > 9 {
                break;
            }
            e = e * 10 + i64::from(d);
            i += 1;
            n += 1;
        }
        if n == 0 || n > 3 {
            return None;
        }
        exp = if exp_neg { -e } else { e };
    }
    if !SEPARATOR[usize::from(w[i])] {
        return None;
    }
    if !dot && !has_exp {
        // At most 19 digits but maybe beyond i64: those are the general scanner's.
        let v = i64::try_from(mantissa).ok()?;
        return Some((if neg { -v } else { v } as f64, i));
    }
    let v = match clinger(neg, mantissa, exp - frac_digits as i64) {
        Some(v) => v,
        // The token's bytes are ASCII of the grammar above, which fast-float2 reads the same
        // way; it only fails on text this function has already refused.
        None => fast_float2::parse::<f64, _>(&w[..i]).ok()?,
    };
    // An infinite value is a `range` error, which the general scanner reports.
    v.is_finite().then_some((v, i))
}

/// An element type of `Values`, so that one loop serves both.
pub(super) trait Element: Copy {
    fn from_int(v: i64) -> Self;
    /// Four values below 10^8.
    fn write4(dst: &mut [MaybeUninit<Self>; 4], v: [u64; 4]);
    /// A token the fast paths take, and the length of its text.
    fn fast_token(w: &[u8; TOKEN]) -> Option<(Self, usize)>;
}

impl Element for i64 {
    #[inline(always)]
    fn from_int(v: i64) -> Self {
        v
    }

    #[inline(always)]
    fn write4(dst: &mut [MaybeUninit<Self>; 4], v: [u64; 4]) {
        for (d, v) in dst.iter_mut().zip(v) {
            d.write(v as i64);
        }
    }

    /// Integers only: a double would turn the list into doubles, which is the general
    /// scanner's business.
    #[inline(always)]
    fn fast_token(w: &[u8; TOKEN]) -> Option<(Self, usize)> {
        fast_int(w.first_chunk().expect("WINDOW < TOKEN"))
    }
}

impl Element for f64 {
    /// As the general scanner converts integers in a list of doubles.
    #[inline(always)]
    fn from_int(v: i64) -> Self {
        v as f64
    }

    #[inline(always)]
    fn write4(dst: &mut [MaybeUninit<Self>; 4], v: [u64; 4]) {
        for (d, v) in dst.iter_mut().zip(v) {
            d.write(v as i64 as f64);
        }
    }

    #[inline(always)]
    fn fast_token(w: &[u8; TOKEN]) -> Option<(Self, usize)> {
        fast_double(w)
    }
}

/// Free capacity [`fast_ints`] needs to take values: it writes a block's values into 32
/// slots that must all exist. The parser reserves this much beyond the count of values.
pub(super) const SLACK: usize = 32;

/// Bytes a block's loop reads: the block and the next one (a value may run into it, and the
/// next block is classified one step ahead). Every WINDOW and TOKEN from a start in the block
/// ends within them.
pub(super) const SPAN: usize = 128;

/// The body of [`fast_ints`], expanded once per classification function so that each copy is
/// compiled with that function's target features.
///
/// A block's classes give every value's start at once (a non-separator after a separator)
/// and its end (the first separator after it), so finding the next value never waits for the
/// digits of the previous one, and the values of a block are parsed independently of each
/// other. In a block whose values are all plain digits (no sign, '.', exponent or other
/// byte), a value of up to 8 digits is one load, one shift and the SWAR reduction, with no
/// check at all; the values of any other block go through [`fast_int`], which checks
/// everything itself. The masks also check the separators between the values taken: at a
/// bracket, or a comma after a comma with only blanks between, the loop stops and leaves the
/// rest to the general scanner (and its error messages).
macro_rules! fast_ints_body {
    ($classify:expr, $convert4:expr, $plain:expr, $b:expr, $i:expr, $values:expr) => {{
        let (b, i, values): (&[u8], usize, &mut Vec<_>) = ($b, $i, $values);
        let mut taken_end = i;
        let len0 = values.len();
        let mut filled = 0usize;
        let spare = values.spare_capacity_mut();
        let mut pos = i;
        // Whether the byte before the block is part of a value; the entry is a value's start.
        let mut in_value = 0u64;
        // Whether the byte before the block is a comma, or a blank after one.
        let mut in_comma = 0u64;
        let Some(span) = b.get(pos..).and_then(<[u8]>::first_chunk::<SPAN>) else {
            return i;
        };
        let mut cur = $classify(span.first_chunk().expect("64 bytes"));
        // A block's values are read inside its span, and a block holds at most 32 values:
        // both are checked once per block.
        while let Some(span) = b.get(pos..).and_then(<[u8]>::first_chunk::<SPAN>)
            && let Some(out) = spare.get_mut(filled..).and_then(<[_]>::first_chunk_mut::<32>)
        {
            let next = $classify(span[64..].first_chunk().expect("64 bytes"));
            let sep = cur.sep();
            let value = !sep;
            let mut starts = value & !((value << 1) | in_value);
            // The first separator after each run of value bytes; if the block starts inside
            // a value, the first one ends that value, which the previous block took.
            let mut ends = sep & ((value << 1) | in_value);
            ends &= ends.wrapping_sub(in_value);
            in_value = value >> 63;
            // Blanks reached from a comma: adding a one at the start of a run of blanks
            // clears the run, so the runs a comma seeds are those the sum cleared.
            let seed = ((cur.comma << 1) | in_comma) & cur.blank;
            let comma_run = cur.comma | (cur.blank & !cur.blank.wrapping_add(seed));
            let bad = cur.bracket | (cur.comma & ((comma_run << 1) | in_comma));
            in_comma = comma_run >> 63;
            // Values after the first bad separator are left to the general scanner.
            let mut stop = bad != 0;
            if stop {
                starts &= (1u64 << bad.trailing_zeros()) - 1;
            }
            // The block's last value may end in the next block, at its first separator.
            let next_sep = next.sep();
            let crossing_end = 64 + next_sep.trailing_zeros() as usize;
            let before_next_sep = !next_sep & next_sep.wrapping_sub(1);
            let odd = (value & !cur.digit) | (before_next_sep & !next.digit);
            let mut j = 0usize;
            let mut last = 0usize;
            if odd == 0 {
                // Plain digits only: a value's length is its number of digits. Values that end
                // in the block come in pairs of bits in `starts` and `ends`; the last start
                // may have its end in the next block. Values of the first bad separator's
                // run of text keep their ends, the later ones lose them like their starts.
                if stop {
                    ends &= (2u64 << bad.trailing_zeros()).wrapping_sub(1);
                }
                'plain: {
                    // The whole block at once, where the instruction set has a way.
                    if !stop && let Some((n, end)) = $plain(span, starts, ends, crossing_end, &mut *out) {
                        j = n;
                        last = end;
                        break 'plain;
                    }
                    // Four at a time: positions and words are found one by one, but the digits
                    // are read by one call, which works on all four at once where it can.
                    let mut groups = ends.count_ones() / 4;
                    while groups > 0 {
                        groups -= 1;
                        let mut words = [0u64; 4];
                        let mut bounds = [(0usize, 0usize); 4];
                        let mut over = 0usize;
                        for k in 0..4 {
                            let at = (starts.trailing_zeros() & 63) as usize;
                            starts &= starts - 1;
                            let end = (ends.trailing_zeros() & 63) as usize;
                            ends &= ends - 1;
                            // More than 8 digits (or none, which cannot be) makes it >= 8.
                            over |= end.wrapping_sub(at).wrapping_sub(1);
                            let w: &[u8; 8] = span[at..].first_chunk().expect("inside the span");
                            // The digits to the top, zero bytes (leading zeros) below them.
                            words[k] = u64::from_le_bytes(*w) << (at.wrapping_sub(end).wrapping_mul(8) & 63);
                            bounds[k] = (at, end);
                        }
                        if over < 8 {
                            let dst = out[j..]
                                .first_chunk_mut::<4>()
                                .expect("at most 32 values a block");
                            Element::write4(dst, $convert4(words));
                            j += 4;
                            last = bounds[3].1;
                        } else {
                            // A long value among them: the four one by one, checked.
                            for (at, end) in bounds {
                                let w: &[u8; WINDOW] = span[at..].first_chunk().expect("inside the span");
                                let Some((v, _)) = fast_int(w) else {
                                    stop = true;
                                    break 'plain;
                                };
                                out[j & 31].write(Element::from_int(v));
                                j += 1;
                                last = end;
                            }
                        }
                    }
                    while starts != 0 {
                        let at = (starts.trailing_zeros() & 63) as usize;
                        starts &= starts - 1;
                        let end = if ends != 0 {
                            ends.trailing_zeros() as usize
                        } else {
                            crossing_end
                        };
                        ends &= ends.wrapping_sub(1);
                        let w: &[u8; WINDOW] = span[at..].first_chunk().expect("inside the span");
                        let digits = end - at;
                        let v = if digits <= 8 {
                            let x = window_word(w, 0) ^ ZEROS;
                            // digits >= 1, so the shift is at most 56.
                            eight_digits(x << (8 * (8 - digits))) as i64
                        } else {
                            let Some((v, _)) = fast_int(w) else {
                                stop = true;
                                break;
                            };
                            v
                        };
                        // A block has at most 32 starts.
                        out[j & 31].write(Element::from_int(v));
                        j += 1;
                        last = end;
                    }
                }
            } else {
                while starts != 0 {
                    let at = (starts.trailing_zeros() & 63) as usize;
                    starts &= starts - 1;
                    let w: &[u8; TOKEN] = span[at..].first_chunk().expect("inside the span");
                    let Some((v, len)) = Element::fast_token(w) else {
                        stop = true;
                        break;
                    };
                    out[j & 31].write(v);
                    j += 1;
                    last = at + len;
                }
            }
            filled += j;
            if j > 0 {
                taken_end = pos + last;
            }
            if stop {
                break;
            }
            pos += 64;
            cur = next;
        }
        // SAFETY: the loop initialized the first `filled` slots of the spare capacity.
        unsafe { values.set_len(len0 + filled) };
        taken_end
    }};
}

/// The common case, 64 bytes at a time: integers (see [`fast_int`]) separated by blanks and
/// single commas. Starts at a value's first byte `i` (the general scanner's state there
/// does not matter: the value is taken either way) and appends values to `values`, never
/// beyond its capacity; returns the end of the last value taken, `i` if none, so the general
/// scanner goes on from a separator right after a value.
#[inline(always)]
pub(super) fn fast_ints<T: Element>(b: &[u8], i: usize, values: &mut Vec<T>, isa: Isa) -> usize {
    // The first value decides whether the loop is worth setting up: lists of doubles, or
    // the last bytes of a line, pay no more than this.
    match b.get(i..).and_then(<[u8]>::first_chunk::<SPAN>) {
        Some(span) if T::fast_token(span.first_chunk().expect("TOKEN bytes")).is_some() => {}
        _ => return i,
    }
    match isa {
        Isa::Portable => fast_ints_portable(b, i, values),
        #[cfg(target_arch = "x86_64")]
        Isa::Sse2 => fast_ints_sse2(b, i, values),
        // SAFETY: `Isa::Avx2` exists only on CPUs with the features (its invariant).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { fast_ints_avx2(b, i, values) },
        // SAFETY: as for Avx2.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { fast_ints_avx512(b, i, values) },
    }
}

/// The plain block of [`fast_ints_body`] for instruction sets without a whole-block way.
#[inline(always)]
fn no_plain_block<T>(
    _: &[u8; SPAN],
    _: u64,
    _: u64,
    _: usize,
    _: &mut [MaybeUninit<T>; 32],
) -> Option<(usize, usize)> {
    None
}

/// A plain block (values of digits only, no bad separator) whole: every value's first and
/// end byte from the masks at once (`vpcompressb` of the byte offsets), then 8 values per
/// register: each value's 8 bytes up to its end gathered from the block and the next with
/// one `vpermi2b`, the bytes before its start masked to zero (leading zeros), and the digits
/// reduced as in [`eight_digits_x4_avx2`]. `None` when a value has more than 8 digits
/// (the caller then reads the block its usual way). Returns the values written to `out` and
/// the end of the last one.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vbmi,avx512vbmi2,popcnt,bmi1")]
fn plain_block_avx512<T: Element>(
    span: &[u8; SPAN],
    starts: u64,
    ends: u64,
    crossing_end: usize,
    out: &mut [MaybeUninit<T>; 32],
) -> Option<(usize, usize)> {
    use std::arch::x86_64::{
        __m128i, __m512i, _mm_loadl_epi64, _mm512_add_epi8, _mm512_add_epi64, _mm512_and_si512,
        _mm512_cvtepu8_epi64, _mm512_loadu_si512, _mm512_madd_epi16, _mm512_maddubs_epi16,
        _mm512_mask_cmpgt_epu64_mask, _mm512_mask_set1_epi8, _mm512_maskz_compress_epi8, _mm512_mul_epu32,
        _mm512_permutex2var_epi8, _mm512_set_epi8, _mm512_set1_epi8, _mm512_set1_epi16, _mm512_set1_epi32,
        _mm512_set1_epi64, _mm512_shuffle_epi8, _mm512_slli_epi64, _mm512_sllv_epi64, _mm512_srli_epi64,
        _mm512_storeu_si512, _mm512_sub_epi8, _mm512_sub_epi64,
    };
    let n = starts.count_ones() as usize;
    if n == 0 {
        return Some((0, 0));
    }
    let n_ends = ends.count_ones() as usize;
    // Each start has its end in the block, but the last one's may be in the next block.
    let crossing = n_ends < n;
    // Byte offsets 0..63.
    #[rustfmt::skip]
    let iota = _mm512_set_epi8(
        63, 62, 61, 60, 59, 58, 57, 56, 55, 54, 53, 52, 51, 50, 49, 48,
        47, 46, 45, 44, 43, 42, 41, 40, 39, 38, 37, 36, 35, 34, 33, 32,
        31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16,
        15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0,
    );
    let first = _mm512_maskz_compress_epi8(starts, iota);
    let mut end = _mm512_maskz_compress_epi8(ends, iota);
    if crossing {
        // The crossing value ends at most at 128, which the length check below refuses
        // (as a byte, 128 reads as 0 in the gather, but that value is never written).
        end = _mm512_mask_set1_epi8(end, 1u64 << n_ends, crossing_end as u8 as i8);
    }
    let mut firsts = [0u8; 64];
    let mut ends_at = [0u8; 64];
    // SAFETY: both arrays are 64 bytes, and storeu has no alignment requirement.
    unsafe {
        _mm512_storeu_si512(firsts.as_mut_ptr().cast::<__m512i>(), first);
        _mm512_storeu_si512(ends_at.as_mut_ptr().cast::<__m512i>(), end);
    }
    // SAFETY: the span is 128 bytes, two registers' worth; loadu has no alignment requirement.
    let (lo, hi) = unsafe {
        let p = span.as_ptr().cast::<__m512i>();
        (_mm512_loadu_si512(p), _mm512_loadu_si512(p.add(1)))
    };
    // Per 8-byte lane: its first byte repeated (to broadcast a lane's end to its bytes), and
    // the offsets -8..-1 of the bytes before the end.
    #[rustfmt::skip]
    let lane_byte0 = _mm512_set_epi8(
        8, 8, 8, 8, 8, 8, 8, 8, 0, 0, 0, 0, 0, 0, 0, 0,
        8, 8, 8, 8, 8, 8, 8, 8, 0, 0, 0, 0, 0, 0, 0, 0,
        8, 8, 8, 8, 8, 8, 8, 8, 0, 0, 0, 0, 0, 0, 0, 0,
        8, 8, 8, 8, 8, 8, 8, 8, 0, 0, 0, 0, 0, 0, 0, 0,
    );
    #[rustfmt::skip]
    let before_end = _mm512_set_epi8(
        -1, -2, -3, -4, -5, -6, -7, -8, -1, -2, -3, -4, -5, -6, -7, -8,
        -1, -2, -3, -4, -5, -6, -7, -8, -1, -2, -3, -4, -5, -6, -7, -8,
        -1, -2, -3, -4, -5, -6, -7, -8, -1, -2, -3, -4, -5, -6, -7, -8,
        -1, -2, -3, -4, -5, -6, -7, -8, -1, -2, -3, -4, -5, -6, -7, -8,
    );
    let eight = _mm512_set1_epi64(8);
    let mut groups = [_mm512_set1_epi64(0); 4];
    for (g, values) in groups.iter_mut().enumerate().take(n.div_ceil(8)) {
        // SAFETY: 8 bytes at 8g <= 24 of 64-byte arrays.
        let (f, e) = unsafe {
            (
                _mm512_cvtepu8_epi64(_mm_loadl_epi64(firsts[8 * g..].as_ptr().cast::<__m128i>())),
                _mm512_cvtepu8_epi64(_mm_loadl_epi64(ends_at[8 * g..].as_ptr().cast::<__m128i>())),
            )
        };
        let len = _mm512_sub_epi64(e, f);
        let lanes = (n - 8 * g).min(8);
        let live: u8 = if lanes == 8 { 0xFF } else { (1u8 << lanes) - 1 };
        if _mm512_mask_cmpgt_epu64_mask(live, len, eight) != 0 {
            return None;
        }
        // Lane byte j is the value's byte 8 - j before its end; bytes before its start are
        // masked to zero, which reads as leading zeros.
        let idx = _mm512_add_epi8(_mm512_shuffle_epi8(e, lane_byte0), before_end);
        let bytes = _mm512_permutex2var_epi8(lo, idx, hi);
        // The last `len` bytes of each lane: all ones shifted up by 8 (8 - len) bits.
        let keep = _mm512_sllv_epi64(
            _mm512_set1_epi64(-1),
            _mm512_slli_epi64::<3>(_mm512_sub_epi64(eight, len)),
        );
        let digits = _mm512_and_si512(_mm512_sub_epi8(bytes, _mm512_set1_epi8(b'0' as i8)), keep);
        // Bytes (10, 1), then words (100, 1): the lower address holds the higher digits.
        let pairs = _mm512_maddubs_epi16(digits, _mm512_set1_epi16(0x010A));
        let quads = _mm512_madd_epi16(pairs, _mm512_set1_epi32(0x0001_0064));
        *values = _mm512_add_epi64(
            _mm512_mul_epu32(quads, _mm512_set1_epi64(10_000)),
            _mm512_srli_epi64::<32>(quads),
        );
    }
    // Stored once all groups are known to fit (a group that does not returns above, before
    // anything is written).
    let mut vals = [0i64; 32];
    for (g, v) in groups.iter().enumerate().take(n.div_ceil(8)) {
        // SAFETY: 8 i64s at 8g <= 24 of 32.
        unsafe { _mm512_storeu_si512(vals[8 * g..].as_mut_ptr().cast::<__m512i>(), *v) };
    }
    for (slot, &v) in out.iter_mut().zip(&vals).take(n) {
        slot.write(T::from_int(v));
    }
    let last = if crossing {
        crossing_end
    } else {
        63 - ends.leading_zeros() as usize
    };
    Some((n, last))
}

// Not inlined: on their own, the loops keep their state in registers.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
#[inline(never)]
fn fast_ints_portable<T: Element>(b: &[u8], i: usize, values: &mut Vec<T>) -> usize {
    fast_ints_body!(classify_portable, eight_digits_x4, no_plain_block, b, i, values)
}

#[cfg(target_arch = "x86_64")]
#[inline(never)]
fn fast_ints_sse2<T: Element>(b: &[u8], i: usize, values: &mut Vec<T>) -> usize {
    fast_ints_body!(classify_sse2, eight_digits_x4, no_plain_block, b, i, values)
}

/// # Safety
/// The CPU must support AVX2, BMI1, BMI2 and POPCNT.
#[cfg(target_arch = "x86_64")]
#[inline(never)]
#[target_feature(enable = "avx2,bmi1,bmi2,popcnt")]
unsafe fn fast_ints_avx2<T: Element>(b: &[u8], i: usize, values: &mut Vec<T>) -> usize {
    fast_ints_body!(classify_avx2, eight_digits_x4_avx2, no_plain_block, b, i, values)
}

/// # Safety
/// The CPU must support what `Isa::Avx512` stands for.
#[cfg(target_arch = "x86_64")]
#[inline(never)]
#[target_feature(enable = "avx2,bmi1,bmi2,popcnt,avx512f,avx512bw,avx512dq,avx512vbmi,avx512vbmi2")]
unsafe fn fast_ints_avx512<T: Element>(b: &[u8], i: usize, values: &mut Vec<T>) -> usize {
    fast_ints_body!(
        classify_avx512,
        eight_digits_x4_avx2,
        plain_block_avx512,
        b,
        i,
        values
    )
}
