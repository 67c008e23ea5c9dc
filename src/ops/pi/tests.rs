//! The kernels against each other and against rand_xoshiro, the slicing
//! promise, and the statistics of the estimate.
//!
//! The statistical tests draw `TASKD_PI_SAMPLES` samples in all (default
//! 2^24, a fraction of a second even in a debug build); for the issue's 10^9:
//!
//! ```sh
//! TASKD_PI_SAMPLES=1000000000 cargo test --release --lib ops::pi
//! ```

use super::*;
use rand_xoshiro::Xoshiro256PlusPlus;
use rand_xoshiro::rand_core::{Rng, SeedableRng};

/// The definition written out: sample `16 r + k` is the `r`-th draw of lane `k`.
fn reference_hits(stream: &mut PiStream, samples: u64) -> u64 {
    let mut hits = 0;
    let rounds = samples.div_ceil(LANES as u64);
    for r in 0..rounds {
        for lane in 0..LANES {
            let draw = stream.step_lane(lane);
            if r * LANES as u64 + (lane as u64) < samples {
                hits += u64::from(is_hit(draw));
            }
        }
    }
    hits
}

const SEEDS: [u64; 5] = [0, 1, 42, 0x5eed_5eed_5eed_5eed, u64::MAX];

#[test]
fn every_lane_is_rand_xoshiro_seeded_by_splitmix() {
    for seed in SEEDS {
        let stream = PiStream::new(seed);
        let mut sm = rand_xoshiro::SplitMix64::seed_from_u64(seed);
        for lane in 0..LANES {
            let words: [u64; 4] = std::array::from_fn(|_| sm.next_u64());
            assert_eq!(stream.lane(lane), words, "seed {seed} lane {lane}");
            let mut bytes = [0u8; 32];
            for (chunk, w) in bytes.chunks_exact_mut(8).zip(words) {
                chunk.copy_from_slice(&w.to_le_bytes());
            }
            let mut theirs = Xoshiro256PlusPlus::from_seed(bytes);
            let mut ours = stream.lane(lane);
            for _ in 0..1000 {
                assert_eq!(xoshiro_next(&mut ours), theirs.next_u64());
            }
        }
        // Lane 0 is the crate's own seeding.
        let mut theirs = Xoshiro256PlusPlus::seed_from_u64(seed);
        let mut ours = stream.lane(0);
        assert_eq!(xoshiro_next(&mut ours), theirs.next_u64());
    }
}

#[test]
fn hit_test_is_exact_at_the_circle() {
    // x² + y² = 2^64 - 2^33 + 1 + y²: below 2^64 exactly when y² < 2^33 - 1.
    let max = 0xffff_ffffu64;
    assert!(is_hit(max << 32));
    assert!(is_hit((max << 32) | 92681)); // 92681² = 8589767761 < 2^33 - 1
    assert!(!is_hit((max << 32) | 92682)); // 92682² = 8589953124 > 2^33 - 1
    assert!(!is_hit(u64::MAX));
    assert!(is_hit(0));
    // 2^63 + 2^63 = 2^64 is outside: x = y = 2^31.5 is not an integer, so
    // take the pair just below and above.
    let below = 3_037_000_499u64; // floor(2^31.5)
    assert!(is_hit((below << 32) | below));
    assert!(!is_hit(((below + 1) << 32) | (below + 1)));
}

#[test]
fn kernels_agree_with_the_definition() {
    let counts = [0, 1, 15, 16, 17, 63, 64, 65, 1000, 4096 + 7, 100_003];
    for seed in SEEDS {
        for samples in counts {
            let mut want_state = PiStream::new(seed);
            let want = reference_hits(&mut want_state, samples);
            for kernel in Kernel::available() {
                let mut s = PiStream::new(seed);
                assert_eq!(
                    s.run_on(kernel, samples),
                    want,
                    "{kernel:?} seed {seed} samples {samples}"
                );
                assert_eq!(s, want_state, "{kernel:?} state after {samples}");
            }
        }
    }
}

#[test]
fn kernels_agree_on_arbitrary_lane_states() {
    // States no seed makes (adjacent lanes equal, sparse bits), the same
    // state given to every kernel.
    let mut states = Vec::new();
    let mut s = PiStream::new(7);
    for lane in 0..LANES {
        s.set_lane(lane, [1 << lane, 0, 0, 1]);
    }
    states.push(s);
    let mut s = PiStream::new(8);
    for lane in 0..LANES {
        let first = s.lane(0);
        s.set_lane(lane, first);
    }
    states.push(s);
    for start in states {
        let mut want_state = start;
        let want = reference_hits(&mut want_state, 5000);
        for kernel in Kernel::available() {
            let mut got = start;
            assert_eq!(got.run_on(kernel, 5000), want, "{kernel:?}");
            assert_eq!(got, want_state, "{kernel:?}");
        }
    }
}

#[test]
fn slices_of_whole_granules_add_up() {
    let kernels = Kernel::available();
    for seed in SEEDS {
        let total = 10 * PiStream::GRANULE + 37;
        let whole = PiStream::new(seed).run(total);
        for a in (0..=total).step_by(PiStream::GRANULE as usize) {
            for k1 in &kernels {
                for k2 in &kernels {
                    let mut s = PiStream::new(seed);
                    let first = s.run_on(*k1, a);
                    let second = s.run_on(*k2, total - a);
                    assert_eq!(first + second, whole, "{k1:?} {a} + {k2:?} {}", total - a);
                }
            }
        }
        // Many slices of one granule each, then the rest.
        let mut s = PiStream::new(seed);
        let mut sliced = 0;
        for _ in 0..10 {
            sliced += s.run(PiStream::GRANULE);
        }
        sliced += s.run(37);
        assert_eq!(sliced, whole);
    }
}

#[test]
fn count_hits_is_a_fresh_stream() {
    assert_eq!(count_hits(12_345, 9), PiStream::new(9).run(12_345));
    assert_eq!(count_hits(0, 9), 0);
    assert!(count_hits(1, 9) <= 1);
}

#[test]
fn chunks_add_up_to_the_samples() {
    for (samples, chunks) in [(10, 3), (1, 1), (1000, 1024), (7, 7), (1 << 40, 1000)] {
        let total: u64 = (0..chunks).map(|i| chunk_samples(samples, chunks, i)).sum();
        assert_eq!(total, samples, "{samples} in {chunks}");
    }
}

#[test]
fn estimate_is_close_to_pi() {
    let n = 2_000_000;
    let pi = estimate(count_hits(n, 42), n);
    assert!((pi - std::f64::consts::PI).abs() < 0.01, "{pi}");
}

#[test]
fn seeds_differ_between_chunks_and_tasks() {
    let a = chunk_seed(1, 1, 0);
    assert_ne!(a, chunk_seed(1, 1, 1));
    assert_ne!(a, chunk_seed(1, 2, 0));
    assert_ne!(a, chunk_seed(2, 1, 0));
}

/// Samples of the statistical tests, in all.
fn stat_samples() -> u64 {
    std::env::var("TASKD_PI_SAMPLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1 << 24)
}

/// The probability of a hit: the share of the 2^64 points (x, y) with
/// x² + y² < 2^64, which is π/4 to far better than the tests can see.
const P: f64 = std::f64::consts::FRAC_PI_4;

fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = a.iter().map(|x| (x - ma) * (x - ma)).sum();
    let vb: f64 = b.iter().map(|y| (y - mb) * (y - mb)).sum();
    cov / (va * vb).sqrt()
}

/// Chunks seeded as the daemon seeds a task's chunks: mean and variance of
/// the hit counts against the binomial model, and adjacent chunks
/// uncorrelated, each within 5 standard deviations.
#[test]
fn chunk_hits_follow_the_binomial_model() {
    let chunks = 256u32;
    let per_chunk = (stat_samples() / u64::from(chunks)).max(PiStream::GRANULE);
    let hits: Vec<f64> = (0..chunks)
        .map(|i| count_hits(per_chunk, chunk_seed(0xC0FF_EE00, 17, i)) as f64)
        .collect();
    let k = f64::from(chunks);
    let m = per_chunk as f64;
    let total: f64 = hits.iter().sum();
    let n = k * m;
    let z_mean = (total - n * P) / (n * P * (1.0 - P)).sqrt();
    assert!(
        z_mean.abs() < 5.0,
        "mean: z = {z_mean}, estimate {}",
        4.0 * total / n
    );
    // (k - 1) s² / σ² is χ² with k - 1 degrees of freedom: mean k - 1,
    // standard deviation sqrt(2 (k - 1)).
    let mean = total / k;
    let s2 = hits.iter().map(|h| (h - mean) * (h - mean)).sum::<f64>() / (k - 1.0);
    let chi2 = (k - 1.0) * s2 / (m * P * (1.0 - P));
    let z_var = (chi2 - (k - 1.0)) / (2.0 * (k - 1.0)).sqrt();
    assert!(z_var.abs() < 5.0, "variance: z = {z_var}");
    // Pearson's r of independent pairs has standard deviation ~ 1/sqrt(pairs).
    let r = pearson(&hits[..hits.len() - 1], &hits[1..]);
    let z_corr = r * (k - 1.0).sqrt();
    assert!(z_corr.abs() < 5.0, "adjacent chunks: r = {r}");
}

/// The lanes of one stream are independent generators: their hit counts
/// over many streams are uncorrelated, lane against lane.
#[test]
fn lanes_are_uncorrelated() {
    let streams = 200u64;
    let per_lane = (stat_samples() / 16 / streams / LANES as u64).max(64);
    let mut counts = vec![vec![0f64; streams as usize]; LANES];
    for t in 0..streams {
        let mut s = PiStream::new(chunk_seed(0xBEEF, t, 0));
        for (lane, c) in counts.iter_mut().enumerate() {
            let mut st = s.lane(lane);
            c[t as usize] = (0..per_lane).filter(|_| is_hit(xoshiro_next(&mut st))).count() as f64;
            s.set_lane(lane, st);
        }
    }
    for a in 0..LANES {
        let b = (a + 1) % LANES;
        let r = pearson(&counts[a], &counts[b]);
        assert!(
            (r * (streams as f64 - 1.0).sqrt()).abs() < 5.0,
            "lanes {a} and {b}: r = {r}"
        );
    }
}

/// One run of 10^7 samples on the kernel named by `TASKD_PI_KERNEL` (scalar, avx2 or
/// avx512; the detected one without it), for callgrind's instructions per sample:
///
/// ```sh
/// TASKD_PI_KERNEL=avx512 valgrind --tool=callgrind --toggle-collect='*run_on*' \
///     target/release/deps/taskd-HASH ops::pi::tests::callgrind_pi --ignored --exact --nocapture
/// ```
#[test]
#[ignore = "callgrind"]
fn callgrind_pi() {
    let kernel = std::env::var("TASKD_PI_KERNEL")
        .ok()
        .and_then(|name| Kernel::available().into_iter().find(|k| k.name() == name))
        .unwrap_or_else(Kernel::detect);
    let samples = 10_000_000;
    let hits = std::hint::black_box(PiStream::new(1)).run_on(kernel, samples);
    println!("{} samples on {kernel:?}: {hits} hits", samples);
}
