//! The in-process baselines and the scheduler measurement: `str::parse`
//! of a big value line, a plain xoshiro256++ Monte Carlo π loop on one or
//! more threads, and taskd's `Scheduler` driven directly.

use std::hint::black_box;
use std::time::{Duration, Instant};

use rand_xoshiro::Xoshiro256PlusPlus;
use rand_xoshiro::rand_core::{Rng, SeedableRng};
use taskd::sched::{Policy, Scheduler};

use crate::affinity;

/// The line of the `sum` case: `n` values below `bound`, space-separated,
/// and their sum.
pub fn value_line(n: usize, bound: u64, seed: u64) -> (String, i64) {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut s = String::with_capacity(n * 8);
    let mut sum = 0i64;
    for i in 0..n {
        let v = rng.next_u64() % bound;
        if i > 0 {
            s.push(' ');
        }
        s.push_str(&v.to_string());
        sum += v as i64;
    }
    (s, sum)
}

/// Sums the values with `str::parse::<i64>`; None if one does not parse.
pub fn parse_sum(values: &str) -> Option<i64> {
    let mut sum = 0i64;
    for t in values.split(' ') {
        sum = sum.wrapping_add(t.parse::<i64>().ok()?);
    }
    Some(sum)
}

/// Fails unless `parse_sum` of `values` is `expect`.
pub fn check_parse(values: &str, expect: i64) -> Result<(), String> {
    match parse_sum(black_box(values)) {
        Some(sum) if sum == expect => Ok(()),
        other => Err(format!(
            "str::parse::<i64> summed to {other:?}, expected {expect}"
        )),
    }
}

/// Seconds of one `parse_sum` of `values`.
pub fn time_parse_once(values: &str) -> f64 {
    let t = Instant::now();
    black_box(parse_sum(black_box(values)));
    t.elapsed().as_secs_f64()
}

/// The plain Monte Carlo π loop: one xoshiro256++ draw per sample, x and y
/// its two 32-bit halves, inside when x² + y² < 2^64. The same arithmetic
/// as taskd's kernel, written the obvious way.
pub fn prng_hits(samples: u64, seed: u64) -> u64 {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut hits = 0u64;
    for _ in 0..samples {
        let r = rng.next_u64();
        let (x, y) = (r >> 32, r & 0xffff_ffff);
        if x * x <= u64::MAX - y * y {
            hits += 1;
        }
    }
    hits
}

/// Samples per second of `threads` threads running `prng_hits` on
/// `samples_each` samples each. With `cpus`, thread k runs on
/// `cpus[k % cpus.len()]`.
pub fn prng_rate(threads: usize, samples_each: u64, cpus: Option<&[usize]>) -> f64 {
    let barrier = std::sync::Barrier::new(threads + 1);
    let elapsed = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|k| {
                let barrier = &barrier;
                s.spawn(move || {
                    if let Some(cpus) = cpus {
                        affinity::pin_current_thread(&[cpus[k % cpus.len()]]);
                    }
                    barrier.wait();
                    black_box(prng_hits(black_box(samples_each), 0x5eed + k as u64))
                })
            })
            .collect();
        barrier.wait();
        let t = Instant::now();
        for h in handles {
            let hits = h.join().expect("PRNG thread panicked");
            black_box(hits);
        }
        t.elapsed()
    });
    (threads as u64 * samples_each) as f64 / elapsed.as_secs_f64()
}

/// The scheduler's cost per task with `depth` tasks queued: a steady state
/// of one push, one admit and one pop_ready per task, `batch` times, under
/// the default policy (hrrn) and the default ready capacity for 2 workers.
/// Costs are drawn over 21 cost classes (1 to 10^6 values), so a pick
/// compares many class heads. Returns ns per task (median of `reps`).
pub fn sched_ns_per_task(depth: usize, batch: usize, reps: usize) -> f64 {
    let ready_capacity = 4;
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(7);
    let costs: Vec<u64> = (0..depth + ready_capacity + batch)
        .map(|_| {
            let r = rng.next_u64();
            // 1 .. 2^20, spread over the classes.
            (1u64 << (r % 21)) - (r >> 60) % 2
        })
        .collect();
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let base = Instant::now();
        let mut s: Scheduler<usize> = Scheduler::new(
            Policy::default(),
            depth + ready_capacity + batch + 1,
            ready_capacity,
        );
        let mut clock = 0u64;
        for (i, &cost) in costs[..depth + ready_capacity].iter().enumerate() {
            s.push(i, cost, base + Duration::from_micros(clock))
                .expect("capacity is enough");
            clock += 1;
        }
        s.admit(base + Duration::from_micros(clock));
        // One ready slot free, so each round below admits exactly one task.
        black_box(s.pop_ready());
        assert_eq!(s.incoming_len(), depth);
        let tasks = &costs[depth + ready_capacity..];
        let t = Instant::now();
        for (i, &cost) in tasks.iter().enumerate() {
            let now = base + Duration::from_micros(clock);
            clock += 1;
            if s.push(i, cost, now).is_err() {
                panic!("scheduler refused a task");
            }
            s.admit(now);
            black_box(s.pop_ready());
        }
        let elapsed = t.elapsed();
        assert_eq!(s.incoming_len(), depth, "the queue depth stays constant");
        times.push(elapsed.as_nanos() as f64 / tasks.len() as f64);
    }
    crate::median(&mut times)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_line_sums_and_parses() {
        let (line, sum) = value_line(1000, 1_000_000, 1);
        assert_eq!(line.split(' ').count(), 1000);
        assert_eq!(parse_sum(&line), Some(sum));
        assert!(line.split(' ').all(|t| t.parse::<u64>().unwrap() < 1_000_000));
    }

    #[test]
    fn prng_loop_estimates_pi() {
        let n = 1_000_000;
        let pi = 4.0 * prng_hits(n, 3) as f64 / n as f64;
        assert!((pi - std::f64::consts::PI).abs() < 0.01, "{pi}");
    }

    #[test]
    fn prng_hits_agree_with_taskd_kernel() {
        // Same draws, same test: the first sample of taskd's stream is the
        // first draw of rand_xoshiro seeded the same way, so the baseline is
        // taskd's arithmetic.
        for seed in 0..2000 {
            assert_eq!(
                prng_hits(1, seed),
                taskd::ops::pi::count_hits(1, seed),
                "seed {seed}"
            );
        }
    }

    #[test]
    fn scheduler_measurement_runs() {
        assert!(sched_ns_per_task(100, 1000, 1) > 0.0);
    }
}
