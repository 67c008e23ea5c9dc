//! The Monte Carlo estimate of π: each chunk draws its share of the samples
//! from its own independently seeded [`PiStream`], and the event loop adds
//! the chunks' hit counts once all have finished.
//!
//! A stream is [`LANES`] xoshiro256++ generators side by side, so that SIMD
//! registers can step them all at once (AVX-512: 8 lanes a register, AVX2:
//! 4, picked at run time; a plain loop elsewhere). Every path computes the
//! same thing, lane for lane: sample `16 r + k` is the `r`-th output of lane
//! `k`. So a seed gives the same hits on every CPU, the paths are tested
//! against each other, and a chunk can be cut into slices that run one after
//! the other (see [`PiStream::GRANULE`]).

/// Generators of one stream. Sixteen fill two AVX-512 registers per state
/// word (or four AVX2 registers), enough independent work per step to keep
/// the vector units busy.
pub const LANES: usize = 16;

/// The SplitMix64 generator, which the xoshiro authors recommend for seeding
/// and which rand_xoshiro's `seed_from_u64` uses: a counter stepped by the
/// golden gamma and a bijective finalizer.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One xoshiro256++ step of one lane: its output, and the state advanced.
#[inline(always)]
fn xoshiro_next(s: &mut [u64; 4]) -> u64 {
    let out = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
    let t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = s[3].rotate_left(45);
    out
}

/// The hit test of one draw: its two 32-bit halves are the point's x and y,
/// and the point is inside the quarter disc when x² + y² < 2^64, i.e. exactly
/// when the u64 addition of the squares does not overflow. Integers only.
#[inline(always)]
fn is_hit(r: u64) -> bool {
    let x = r >> 32;
    let y = r & 0xffff_ffff;
    !(x * x).overflowing_add(y * y).1
}

/// Which code steps the lanes. All of them give the same hits for the same
/// state; they differ only in speed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// Plain Rust, one lane after the other: every CPU.
    Scalar,
    /// x86_64 with AVX2: 4 lanes a register.
    Avx2,
    /// x86_64 with AVX-512F: 8 lanes a register, rotations and an unsigned
    /// compare in one instruction each.
    Avx512,
}

impl Kernel {
    /// The fastest kernel this CPU runs (std caches the CPU's answers, so
    /// this costs a few loads).
    pub fn detect() -> Kernel {
        if Kernel::Avx512.is_supported() {
            Kernel::Avx512
        } else if Kernel::Avx2.is_supported() {
            Kernel::Avx2
        } else {
            Kernel::Scalar
        }
    }

    /// Whether this CPU can run the kernel.
    pub fn is_supported(self) -> bool {
        match self {
            Kernel::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => std::is_x86_feature_detected!("avx2"),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => std::is_x86_feature_detected!("avx512f"),
            #[cfg(not(target_arch = "x86_64"))]
            Kernel::Avx2 | Kernel::Avx512 => false,
        }
    }

    /// Every kernel this CPU runs, the scalar one first.
    pub fn available() -> Vec<Kernel> {
        [Kernel::Scalar, Kernel::Avx2, Kernel::Avx512]
            .into_iter()
            .filter(|k| k.is_supported())
            .collect()
    }

    pub fn name(self) -> &'static str {
        match self {
            Kernel::Scalar => "scalar",
            Kernel::Avx2 => "avx2",
            Kernel::Avx512 => "avx512",
        }
    }
}

/// The resumable state of one chunk's Monte Carlo draw: [`LANES`]
/// xoshiro256++ generators, stored word by word (all lanes' first words,
/// then all second words, ...) so that a SIMD register loads a word of
/// several lanes at once. 512 bytes, `Copy` and `Send`: a chunk cut into
/// slices carries it from one slice's job to the next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C, align(64))]
pub struct PiStream {
    s: [[u64; LANES]; 4],
}

impl PiStream {
    /// `run(a)` followed by `run(b)` counts the same hits as `run(a + b)`
    /// whenever `a` is a multiple of this. (A run takes whole steps of all
    /// lanes; one that ends inside a step counts only that step's first
    /// lanes and drops the others' draws, so slices of a chunk must be whole
    /// granules, except the last.) A multiple of [`LANES`], with room to
    /// widen the lanes without changing the promise.
    pub const GRANULE: u64 = 64;

    /// The stream of `seed`: lane k's four state words are outputs 4k to
    /// 4k + 3 of SplitMix64 seeded with `seed` (lane 0 is thus exactly
    /// rand_xoshiro's `Xoshiro256PlusPlus::seed_from_u64(seed)`). SplitMix64
    /// is a bijection of its counter, so no lane is ever all zeros, and
    /// lanes of different seeds share no state unless the seeds differ by a
    /// small multiple of its gamma (a 2^-57 chance for random seeds).
    pub fn new(seed: u64) -> PiStream {
        let mut sm = seed;
        let mut s = [[0u64; LANES]; 4];
        for lane in 0..LANES {
            for word in &mut s {
                word[lane] = splitmix64(&mut sm);
            }
        }
        PiStream { s }
    }

    /// Draws `samples` points and returns how many fell inside the quarter
    /// disc, on the fastest kernel of this CPU.
    pub fn run(&mut self, samples: u64) -> u64 {
        self.run_on(Kernel::detect(), samples)
    }

    /// [`PiStream::run`] on the given kernel; the scalar one if this CPU
    /// does not have it (the result is the same, only slower).
    pub fn run_on(&mut self, kernel: Kernel, samples: u64) -> u64 {
        let rounds = samples / LANES as u64;
        let tail = (samples % LANES as u64) as usize;
        let mut hits = match kernel {
            // SAFETY: the CPU has AVX-512F, checked in the guard.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 if kernel.is_supported() => unsafe { self.rounds_avx512(rounds) },
            // SAFETY: the CPU has AVX2, checked in the guard.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 if kernel.is_supported() => unsafe { self.rounds_avx2(rounds) },
            _ => self.rounds_scalar(rounds),
        };
        if tail > 0 {
            // One more step of every lane; the first `tail` lanes' draws count.
            for lane in 0..LANES {
                let r = self.step_lane(lane);
                hits += u64::from(lane < tail && is_hit(r));
            }
        }
        hits
    }

    fn lane(&self, lane: usize) -> [u64; 4] {
        [self.s[0][lane], self.s[1][lane], self.s[2][lane], self.s[3][lane]]
    }

    fn set_lane(&mut self, lane: usize, s: [u64; 4]) {
        for (word, v) in self.s.iter_mut().zip(s) {
            word[lane] = v;
        }
    }

    fn step_lane(&mut self, lane: usize) -> u64 {
        let mut s = self.lane(lane);
        let r = xoshiro_next(&mut s);
        self.set_lane(lane, s);
        r
    }

    /// `rounds` steps of every lane, one lane after the other, each the
    /// plain xoshiro256++ loop with its state in registers.
    fn rounds_scalar(&mut self, rounds: u64) -> u64 {
        let mut hits = 0;
        for lane in 0..LANES {
            let mut s = self.lane(lane);
            for _ in 0..rounds {
                hits += u64::from(is_hit(xoshiro_next(&mut s)));
            }
            self.set_lane(lane, s);
        }
        hits
    }

    /// # Safety
    /// The CPU must support AVX2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn rounds_avx2(&mut self, rounds: u64) -> u64 {
        use std::arch::x86_64::{
            __m256i, _mm256_add_epi64, _mm256_cmpgt_epi64, _mm256_loadu_si256, _mm256_mul_epu32,
            _mm256_or_si256, _mm256_set1_epi64x, _mm256_setzero_si256, _mm256_slli_epi64, _mm256_srli_epi64,
            _mm256_storeu_si256, _mm256_sub_epi64, _mm256_xor_si256,
        };
        /// The lanes' state words, one register per word.
        struct V {
            s0: __m256i,
            s1: __m256i,
            s2: __m256i,
            s3: __m256i,
        }
        let sign = _mm256_set1_epi64x(i64::MIN);
        let low63 = _mm256_set1_epi64x(i64::MAX);
        /// One step of 4 lanes; adds their misses (as -1s) to `miss`. A macro, not a
        /// closure or a nested fn, so that it is compiled with this function's features.
        macro_rules! step {
            ($v:expr, $miss:expr) => {{
                let v: &mut V = $v;
                let sum = _mm256_add_epi64(v.s0, v.s3);
                let rot = _mm256_or_si256(_mm256_slli_epi64::<23>(sum), _mm256_srli_epi64::<41>(sum));
                let r = _mm256_add_epi64(rot, v.s0);
                let t = _mm256_slli_epi64::<17>(v.s1);
                v.s2 = _mm256_xor_si256(v.s2, v.s0);
                v.s3 = _mm256_xor_si256(v.s3, v.s1);
                v.s1 = _mm256_xor_si256(v.s1, v.s2);
                v.s0 = _mm256_xor_si256(v.s0, v.s3);
                v.s2 = _mm256_xor_si256(v.s2, t);
                v.s3 = _mm256_or_si256(_mm256_slli_epi64::<45>(v.s3), _mm256_srli_epi64::<19>(v.s3));
                // x² and y² from the 32-bit halves (vpmuludq multiplies the low halves).
                let x = _mm256_srli_epi64::<32>(r);
                let xx = _mm256_mul_epu32(x, x);
                let yy = _mm256_mul_epu32(r, r);
                // A miss is x² + y² >= 2^64, i.e. x² > !y² unsigned; AVX2 compares
                // signed, so both sides get their top bit flipped:
                // x² ^ 2^63 > !y² ^ 2^63 = y² ^ (2^63 - 1).
                let is_miss = _mm256_cmpgt_epi64(_mm256_xor_si256(xx, sign), _mm256_xor_si256(yy, low63));
                *$miss = _mm256_sub_epi64(*$miss, is_miss);
            }};
        }
        let mut misses = 0u64;
        // Two registers of 4 lanes at a time (eight state registers leave
        // room for the temporaries among AVX2's sixteen), all rounds, then
        // the next eight lanes: each lane takes `rounds` steps either way.
        for group in 0..LANES / 8 {
            let at = 8 * group;
            let word = |w: usize, k: usize| self.s[w][at + 4 * k..].as_ptr().cast::<__m256i>();
            // SAFETY: each pointer has 4 u64s behind it (at + 4k + 4 <= LANES), and loadu
            // has no alignment requirement.
            let mut v = unsafe {
                [0, 1].map(|k| V {
                    s0: _mm256_loadu_si256(word(0, k)),
                    s1: _mm256_loadu_si256(word(1, k)),
                    s2: _mm256_loadu_si256(word(2, k)),
                    s3: _mm256_loadu_si256(word(3, k)),
                })
            };
            let mut miss = [_mm256_setzero_si256(); 2];
            for _ in 0..rounds {
                let [va, vb] = &mut v;
                let [ma, mb] = &mut miss;
                step!(va, ma);
                step!(vb, mb);
            }
            for (k, vk) in v.iter().enumerate() {
                for (w, reg) in [vk.s0, vk.s1, vk.s2, vk.s3].into_iter().enumerate() {
                    let dst = self.s[w][at + 4 * k..].as_mut_ptr().cast::<__m256i>();
                    // SAFETY: 4 u64s behind `dst`, as for the loads.
                    unsafe { _mm256_storeu_si256(dst, reg) };
                }
            }
            let mut out = [0u64; 4];
            for m in miss {
                // SAFETY: `out` is 32 bytes.
                unsafe { _mm256_storeu_si256(out.as_mut_ptr().cast::<__m256i>(), m) };
                misses += out.iter().sum::<u64>();
            }
        }
        rounds * LANES as u64 - misses
    }

    /// # Safety
    /// The CPU must support AVX-512F.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn rounds_avx512(&mut self, rounds: u64) -> u64 {
        use std::arch::x86_64::{
            __m512i, _mm512_add_epi64, _mm512_cmplt_epu64_mask, _mm512_loadu_si512, _mm512_mask_add_epi64,
            _mm512_mul_epu32, _mm512_reduce_add_epi64, _mm512_rol_epi64, _mm512_set1_epi64,
            _mm512_setzero_si512, _mm512_slli_epi64, _mm512_srli_epi64, _mm512_storeu_si512,
            _mm512_xor_si512,
        };
        struct V {
            s0: __m512i,
            s1: __m512i,
            s2: __m512i,
            s3: __m512i,
        }
        let one = _mm512_set1_epi64(1);
        /// One step of 8 lanes; counts their misses in `miss` (a macro, as for AVX2).
        macro_rules! step {
            ($v:expr, $miss:expr) => {{
                let v: &mut V = $v;
                let r = _mm512_add_epi64(_mm512_rol_epi64::<23>(_mm512_add_epi64(v.s0, v.s3)), v.s0);
                let t = _mm512_slli_epi64::<17>(v.s1);
                v.s2 = _mm512_xor_si512(v.s2, v.s0);
                v.s3 = _mm512_xor_si512(v.s3, v.s1);
                v.s1 = _mm512_xor_si512(v.s1, v.s2);
                v.s0 = _mm512_xor_si512(v.s0, v.s3);
                v.s2 = _mm512_xor_si512(v.s2, t);
                v.s3 = _mm512_rol_epi64::<45>(v.s3);
                let x = _mm512_srli_epi64::<32>(r);
                let xx = _mm512_mul_epu32(x, x);
                let yy = _mm512_mul_epu32(r, r);
                // The sum wraps exactly when x² + y² >= 2^64: a miss.
                let wrapped = _mm512_cmplt_epu64_mask(_mm512_add_epi64(xx, yy), xx);
                *$miss = _mm512_mask_add_epi64(*$miss, wrapped, *$miss, one);
            }};
        }
        let word = |w: usize, k: usize| self.s[w][8 * k..].as_ptr().cast::<__m512i>();
        // SAFETY: each pointer has 8 u64s behind it (8k + 8 <= LANES), and loadu has no
        // alignment requirement.
        let mut v = unsafe {
            [0, 1].map(|k| V {
                s0: _mm512_loadu_si512(word(0, k)),
                s1: _mm512_loadu_si512(word(1, k)),
                s2: _mm512_loadu_si512(word(2, k)),
                s3: _mm512_loadu_si512(word(3, k)),
            })
        };
        let mut miss = [_mm512_setzero_si512(); 2];
        for _ in 0..rounds {
            let [va, vb] = &mut v;
            let [ma, mb] = &mut miss;
            step!(va, ma);
            step!(vb, mb);
        }
        for (k, vk) in v.iter().enumerate() {
            for (w, reg) in [vk.s0, vk.s1, vk.s2, vk.s3].into_iter().enumerate() {
                let dst = self.s[w][8 * k..].as_mut_ptr().cast::<__m512i>();
                // SAFETY: 8 u64s behind `dst`, as for the loads.
                unsafe { _mm512_storeu_si512(dst, reg) };
            }
        }
        let misses = miss
            .iter()
            .map(|&m| _mm512_reduce_add_epi64(m) as u64)
            .sum::<u64>();
        rounds * LANES as u64 - misses
    }
}

/// How many of `samples` points of the unit square fall in the quarter disc,
/// drawn from the [`PiStream`] of `seed`.
pub fn count_hits(samples: u64, seed: u64) -> u64 {
    PiStream::new(seed).run(samples)
}

/// The samples chunk `index` of `chunks` draws: an even split, the first
/// `samples % chunks` chunks taking one more.
pub fn chunk_samples(samples: u64, chunks: u32, index: u32) -> u64 {
    let chunks = u64::from(chunks.max(1));
    let base = samples / chunks;
    base + u64::from(u64::from(index) < samples % chunks)
}

/// Seeds for the chunks of one task: distinct for every (task, chunk) pair
/// of this process, and different from one process start to the next.
pub fn chunk_seed(process_seed: u64, task: u64, index: u32) -> u64 {
    // SplitMix64's finalizer: adjacent inputs give unrelated seeds.
    let mut z = process_seed
        ^ task.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ u64::from(index).wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub fn estimate(hits: u64, samples: u64) -> f64 {
    4.0 * hits as f64 / samples as f64
}

#[cfg(test)]
mod tests;
