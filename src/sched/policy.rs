use std::hint::select_unpredictable;
use std::time::Instant;

use super::cost::{CLASSES, MAX_CLASS, class_cost};
use super::queues::ClassQueues;

/// How the long-term scheduler picks the next task to admit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// Highest response ratio next: ratio = (wait + cost) / cost, on the
    /// rounded cost, with the wait counted in microseconds (one cost unit
    /// weighs as much as one microsecond of waiting). Short tasks go first,
    /// yet every waiting task's ratio keeps growing, so none starves.
    #[default]
    Hrrn,
    /// Smallest cost class first, arrival order within a class.
    Sjf,
    /// Arrival order, whatever the cost.
    Fifo,
}

impl Policy {
    /// Every policy.
    pub const ALL: [Policy; 3] = [Policy::Hrrn, Policy::Sjf, Policy::Fifo];

    /// The configuration spelling: `"hrrn"`, `"sjf"` or `"fifo"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Policy::Hrrn => "hrrn",
            Policy::Sjf => "sjf",
            Policy::Fifo => "fifo",
        }
    }

    /// Parses the configuration spelling, ignoring ASCII case.
    pub fn parse(s: &str) -> Option<Policy> {
        Policy::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s))
    }

    /// The class whose head should be admitted next, or `None` when empty.
    /// Looks at class heads only: O(classes), never O(tasks). `now_at` is
    /// `queues.stamp_of(now)`, computed once per admission round.
    pub(super) fn pick<T>(&self, queues: &ClassQueues<T>, now: Instant, now_at: Option<i64>) -> Option<u32> {
        let mask = queues.nonempty_mask();
        if mask == 0 {
            return None;
        }
        Some(match self {
            Policy::Sjf => mask.trailing_zeros(),
            // Each class FIFO is in arrival order, so the oldest head is the
            // oldest task overall.
            Policy::Fifo => pick_fifo(queues.head_seq(), mask),
            Policy::Hrrn => match now_at {
                // Unless the caller's clock went backwards, no head arrived
                // after `now`, and the loop can skip clamping the waits.
                Some(now_at) if now_at >= queues.latest_at() => {
                    pick_hrrn::<false>(queues.head_at(), queues.head_seq(), mask, now_at)
                }
                Some(now_at) => pick_hrrn::<true>(queues.head_at(), queues.head_seq(), mask, now_at),
                None => pick_hrrn_slow(queues, mask, now),
            },
        })
    }
}

/// The class of the head with the smallest `seq` among the classes of
/// `mask` (non-zero).
fn pick_fifo(head_seq: &[u64; CLASSES], mask: u64) -> u32 {
    let mut rest = mask;
    let mut best = rest.trailing_zeros();
    let mut best_seq = head_seq[best as usize];
    rest &= rest - 1;
    while rest != 0 {
        let class = rest.trailing_zeros();
        rest &= rest - 1;
        let seq = head_seq[(class & MAX_CLASS) as usize];
        if seq < best_seq {
            best = class;
            best_seq = seq;
        }
    }
    best
}

/// 2^-c for every class c, exact in an f64 (normal down to 2^-1022).
const INV_CLASS_COST: [f64; CLASSES] = {
    let mut t = [0.0; CLASSES];
    let mut c = 0;
    while c < CLASSES {
        // The biased exponent of 2^-c, with a zero mantissa.
        t[c] = f64::from_bits((1023 - c as u64) << 52);
        c += 1;
    }
    t
};

/// Hrrn over the heads of `mask` (non-zero) from their arrival stamps and
/// the stamp of `now`; `CLAMP` false when `now_at` is known to be no earlier
/// than any arrival. The ratio (wait + cost) / cost is
/// 1 + wait / cost, so ranking by wait / cost is the same order, ties
/// included; with wait in whole microseconds (floored, as
/// `Duration::as_micros`) below 2^53 and cost = 2^class, wait * 2^-class is
/// computed exactly in an f64 (an exact integer times a power of two), so
/// comparing these keys is comparing the ratios exactly, like
/// `pick_hrrn_slow`'s u128 cross products, for a few instructions a head.
fn pick_hrrn<const CLAMP: bool>(
    head_at: &[i64; CLASSES],
    head_seq: &[u64; CLASSES],
    mask: u64,
    now_at: i64,
) -> u32 {
    // The best head as one u128: its key's bits above its complemented seq,
    // so the greatest rank is the highest ratio, then the earliest arrival.
    // Ranks are kept and selected without branches: in the steady state all
    // heads have nearly equal ratios, and which one wins is unpredictable.
    let mut best_rank = 0u128;
    let mut best = mask.trailing_zeros();
    let mut rest = mask;
    while rest != 0 {
        let class = rest.trailing_zeros() & MAX_CLASS;
        rest &= rest - 1;
        let idx = class as usize;
        // Stamps are below 4.1e18 in magnitude, so this cannot overflow, and
        // the shift floors to whole microseconds (see `queues::stamp`).
        let wait_us = (now_at - head_at[idx]) >> 10;
        // A clock that went backwards counts as no wait.
        let wait_us = if CLAMP { wait_us.max(0) } else { wait_us };
        // Below 2^53: exact as an f64.
        let wait_us = wait_us as f64;
        // Non-negative doubles order like their bit patterns.
        let key = (wait_us * INV_CLASS_COST[idx]).to_bits();
        let rank = (u128::from(key) << 64) | u128::from(!head_seq[idx]);
        let better = rank > best_rank;
        best_rank = select_unpredictable(better, rank, best_rank);
        best = select_unpredictable(better, class, best);
    }
    best
}

/// Hrrn from arrival instants, for when stamps do not apply (an instant more
/// than a century from the others): the original algorithm, kept as is.
/// Compares (w_a + c_a) / c_a against (w_b + c_b) / c_b exactly as
/// (w_a + c_a) * c_b against (w_b + c_b) * c_a in u128.
///
/// Overflow bound: the wait is clamped to u64::MAX microseconds and a cost
/// is at most 2^63, so a product is at most (2^64 - 1 + 2^63) * 2^63
/// < 2^127 + 2^126 < u128::MAX.
fn pick_hrrn_slow<T>(queues: &ClassQueues<T>, mask: u64, now: Instant) -> u32 {
    // (class, wait + cost, cost, seq) of the best head so far.
    let mut best: Option<(u32, u128, u128, u64)> = None;
    let mut rest = mask;
    while rest != 0 {
        let class = rest.trailing_zeros();
        rest &= rest - 1;
        let seq = queues.head_seq()[class as usize];
        let cost = u128::from(class_cost(class));
        // A caller clock that went backwards counts as no wait.
        let wait = now
            .saturating_duration_since(queues.head_arrival(class))
            .as_micros()
            .min(u128::from(u64::MAX));
        let num = wait + cost;
        let better = match best {
            None => true,
            Some((_, best_num, best_cost, best_seq)) => {
                let lhs = num * best_cost;
                let rhs = best_num * cost;
                lhs > rhs || (lhs == rhs && seq < best_seq)
            }
        };
        if better {
            best = Some((class, num, cost, seq));
        }
    }
    best.map_or(0, |(class, ..)| class)
}

/// For tests: the hrrn pick by the slow path, and by the fast path when it
/// applies (both variants of it when the clamp may be skipped, which must
/// agree), on the same queues at the same `now`. `None` when empty.
#[cfg(test)]
pub(super) fn pick_hrrn_paths<T>(queues: &mut ClassQueues<T>, now: Instant) -> Option<(u32, Option<u32>)> {
    let mask = queues.nonempty_mask();
    if mask == 0 {
        return None;
    }
    let fast = queues.stamp_of(now).map(|now_at| {
        let clamped = pick_hrrn::<true>(queues.head_at(), queues.head_seq(), mask, now_at);
        if now_at >= queues.latest_at() {
            let unclamped = pick_hrrn::<false>(queues.head_at(), queues.head_seq(), mask, now_at);
            assert_eq!(clamped, unclamped);
        }
        clamped
    });
    Some((pick_hrrn_slow(queues, mask, now), fast))
}

impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
