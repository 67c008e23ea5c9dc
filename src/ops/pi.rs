//! The Monte Carlo estimate of π: each chunk draws its share of the samples
//! from its own independently seeded xoshiro256++ stream, and the event loop
//! adds the chunks' hit counts once all have finished.

use rand_xoshiro::Xoshiro256PlusPlus;
use rand_xoshiro::rand_core::{Rng, SeedableRng};

/// One chunk's stream of sample points, resumable: a big chunk runs as a
/// series of slices (each a job of its own, so small requests are not
/// held up behind it), carrying this state from one slice to the next.
///
/// Running `a` samples and then `b` gives the same hits as running `a + b`
/// at once whenever `a` is a multiple of [`PiStream::GRANULE`].
#[derive(Debug, Clone)]
pub struct PiStream {
    rng: Xoshiro256PlusPlus,
}

impl PiStream {
    /// Slices are cut at multiples of this many samples.
    pub const GRANULE: u64 = 64;

    pub fn new(seed: u64) -> PiStream {
        PiStream {
            rng: Xoshiro256PlusPlus::seed_from_u64(seed),
        }
    }

    /// How many of the next `samples` points of the unit square fall in
    /// the quarter disc.
    ///
    /// One 64-bit draw gives both coordinates as 32-bit integers x and y;
    /// the point is inside when x² + y² < 2^64, i.e. exactly when the u64
    /// addition of the squares does not overflow. Integer work only.
    pub fn run(&mut self, samples: u64) -> u64 {
        let mut hits = 0u64;
        for _ in 0..samples {
            let r = self.rng.next_u64();
            let x = r >> 32;
            let y = r & 0xffff_ffff;
            let (_, outside) = (x * x).overflowing_add(y * y);
            hits += u64::from(!outside);
        }
        hits
    }
}

/// How many of `samples` points of the stream seeded with `seed` fall in
/// the quarter disc.
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
mod tests {
    use super::*;

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
    fn slices_add_up_to_the_whole() {
        let whole = count_hits(10_000, 7);
        let mut s = PiStream::new(7);
        let parts = s.run(PiStream::GRANULE * 3) + s.run(PiStream::GRANULE * 70) + s.run(10_000 - 73 * 64);
        assert_eq!(parts, whole);
    }

    #[test]
    fn seeds_differ_between_chunks_and_tasks() {
        let a = chunk_seed(1, 1, 0);
        assert_ne!(a, chunk_seed(1, 1, 1));
        assert_ne!(a, chunk_seed(1, 2, 0));
        assert_ne!(a, chunk_seed(2, 1, 0));
    }
}
