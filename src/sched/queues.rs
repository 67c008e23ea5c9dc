use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use super::cost::CLASSES;

/// A queued task with what the policies need to rank it.
#[derive(Debug)]
pub(super) struct Entry<T> {
    pub(super) task: T,
    /// Global arrival order; breaks every tie, so no two entries rank equal.
    pub(super) seq: u64,
    /// Arrival as a stamp (see `stamp`) from the queues' base instant, or
    /// `FAR`.
    pub(super) at: i64,
}

/// The `at` of an arrival too far from the base instant to be stamped (over
/// a century away); its `Instant` is kept in `ClassQueues::far`.
const FAR: i64 = i64::MIN;

/// Stamps are taken within +-`STAMP_LIMIT_SECS` seconds of the base (about
/// 126 years): below 4e18 ns, so a stamp is below 4.1e18 in magnitude, the
/// difference of two stamps never overflows an i64 (< 8.2e18 < 2^63), and a
/// wait in microseconds stays below 8e15 < 2^53 (exact as an f64, which the
/// hrrn pick relies on).
const STAMP_LIMIT_SECS: u64 = 4_000_000_000;

/// A time as signed nanoseconds `ns` from the base, packed as
/// `floor(ns / 1000) * 1024 + ns mod 1000` (microseconds above 10 bits of
/// sub-microsecond nanoseconds). Ordered like `ns`, and for two stamps
/// `(b - a) >> 10` (arithmetic shift) is `floor((ns_b - ns_a) / 1000)`, the
/// wait in whole microseconds as `Duration::as_micros` counts it: the
/// remainders differ by less than 1000 < 1024, so they only ever borrow one
/// microsecond, exactly when the later remainder is the smaller. One
/// subtraction and one shift per head instead of a division.
fn stamp(ns: i64) -> i64 {
    // 1024 * q + r = 1000 * q + r + 24 * q = ns + 24 * q.
    ns + 24 * ns.div_euclid(1000)
}

/// The nanoseconds of a stamp: the inverse of `stamp`.
fn unstamp(at: i64) -> i64 {
    at - 24 * (at >> 10)
}

/// `d` in nanoseconds when it is under the stamp limit.
fn limited_nanos(d: Duration) -> Option<i64> {
    if d.as_secs() >= STAMP_LIMIT_SECS {
        return None;
    }
    // Below 4e18 < 2^62: no overflow, and it fits an i64.
    Some((d.as_secs() * 1_000_000_000 + u64::from(d.subsec_nanos())) as i64)
}

/// The stamp of `t` from `base`, exact, when under the stamp limit.
fn stamp_from(base: Instant, t: Instant) -> Option<i64> {
    let ns = match t.checked_duration_since(base) {
        Some(d) => limited_nanos(d)?,
        None => -limited_nanos(base.duration_since(t))?,
    };
    Some(stamp(ns))
}

/// The incoming queue as one FIFO per cost class.
///
/// Every policy ranks tasks of the same class by arrival alone, so the head
/// of each FIFO dominates the rest of it and a pick only has to look at the
/// heads of non-empty classes (at most 64), whatever the number of tasks.
///
/// Arrival instants are stored as stamps (integers, see `stamp`) from a base
/// instant (the arrival of the task that found the queue empty), and the
/// arrival and sequence number of each class head are mirrored in two flat
/// arrays, so a pick reads contiguous integers instead of chasing 64 deques
/// and doing `Instant` arithmetic per head. Arrivals more than a century
/// from the base (only a caller's made-up instants can be) keep their
/// `Instant` on the side, and picks then take an exact slow path.
#[derive(Debug)]
pub(super) struct ClassQueues<T> {
    classes: [VecDeque<Entry<T>>; CLASSES],
    /// Bit `c` is set iff class `c` is non-empty: sjf is one
    /// `trailing_zeros`, and the others skip empty classes for free.
    nonempty: u64,
    len: usize,
    /// `at` of each non-empty class's head (stale for empty classes), so a
    /// pick reads one contiguous array.
    head_at: [i64; CLASSES],
    /// `seq` of each non-empty class's head (stale for empty classes).
    head_seq: [u64; CLASSES],
    /// At least the greatest `at` queued (not `FAR`): an upper bound that
    /// only drops when the queue empties.
    latest_at: i64,
    /// What the stamps are relative to; `Some` whenever `len > 0`.
    base: Option<Instant>,
    /// The last instant stamped, with its stamp: the event loop pushes and
    /// admits with the same `now`, so this saves most conversions. Valid for
    /// the current base only.
    recent: Option<(Instant, i64)>,
    /// The arrivals of the queued entries whose `at` is `FAR`, by `seq`.
    far: BTreeMap<u64, Instant>,
}

impl<T> ClassQueues<T> {
    pub(super) fn new() -> Self {
        Self {
            classes: std::array::from_fn(|_| VecDeque::new()),
            nonempty: 0,
            len: 0,
            head_at: [0; CLASSES],
            head_seq: [0; CLASSES],
            latest_at: 0,
            base: None,
            recent: None,
            far: BTreeMap::new(),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn nonempty_mask(&self) -> u64 {
        self.nonempty
    }

    /// Arrival stamps of the class heads, indexed by class.
    pub(super) fn head_at(&self) -> &[i64; CLASSES] {
        &self.head_at
    }

    /// Sequence numbers of the class heads, indexed by class.
    pub(super) fn head_seq(&self) -> &[u64; CLASSES] {
        &self.head_seq
    }

    /// An upper bound of the queued arrival stamps: a `now` stamp at least
    /// this large is no earlier than any queued arrival.
    pub(super) fn latest_at(&self) -> i64 {
        self.latest_at
    }

    /// `now` as a stamp comparable with every queued `at`, or `None` when
    /// the exact fast path does not apply (`now` out of range of the base,
    /// or some queued arrival is `FAR`).
    pub(super) fn stamp_of(&mut self, now: Instant) -> Option<i64> {
        if !self.far.is_empty() {
            return None;
        }
        self.stamp_from_base(now)
    }

    /// The stamp of `t` when in range, through `recent`.
    fn stamp_from_base(&mut self, t: Instant) -> Option<i64> {
        if let Some((recent, at)) = self.recent
            && recent == t
        {
            return Some(at);
        }
        let at = stamp_from(self.base?, t)?;
        self.recent = Some((t, at));
        Some(at)
    }

    /// The arrival instant of a non-empty class's head, for the slow path.
    pub(super) fn head_arrival(&self, class: u32) -> Instant {
        let idx = class as usize;
        let at = self.head_at[idx];
        if at == FAR {
            return self.far[&self.head_seq[idx]];
        }
        let base = self.base.expect("a non-empty queue has a base instant");
        // Exact inverse of `stamp_from`: base + (arrival - base) is the arrival.
        let ns = unstamp(at);
        if ns >= 0 {
            base + Duration::from_nanos(ns as u64)
        } else {
            base - Duration::from_nanos(ns.unsigned_abs())
        }
    }

    /// Enqueues `task` with arrival order `seq` and arrival instant
    /// `arrival`. Entries must be pushed in increasing `seq` so each class
    /// FIFO stays in arrival order, which is what lets picks look at heads
    /// only.
    pub(super) fn push(&mut self, class: u32, task: T, seq: u64, arrival: Instant) {
        let at = if self.len > 0 {
            self.stamp_from_base(arrival).unwrap_or_else(|| {
                self.far.insert(seq, arrival);
                FAR
            })
        } else {
            // Empty: rebase on this arrival, so stamps stay small.
            debug_assert!(self.far.is_empty());
            self.base = Some(arrival);
            self.recent = Some((arrival, 0));
            self.latest_at = 0;
            0
        };
        self.latest_at = self.latest_at.max(at);
        let idx = class as usize;
        let queue = &mut self.classes[idx];
        debug_assert!(queue.back().is_none_or(|b| b.seq < seq));
        if queue.is_empty() {
            self.head_at[idx] = at;
            self.head_seq[idx] = seq;
            self.nonempty |= 1u64 << class;
        }
        queue.push_back(Entry { task, seq, at });
        self.len += 1;
    }

    /// Removes and returns the head of a class.
    pub(super) fn pop(&mut self, class: u32) -> Option<T> {
        let idx = class as usize;
        let queue = &mut self.classes[idx];
        let entry = queue.pop_front()?;
        match queue.front() {
            Some(next) => {
                self.head_at[idx] = next.at;
                self.head_seq[idx] = next.seq;
            }
            None => self.nonempty &= !(1u64 << class),
        }
        self.len -= 1;
        if entry.at == FAR {
            self.far.remove(&entry.seq);
        }
        Some(entry.task)
    }

    /// Removes every entry, returned in arrival order.
    pub(super) fn drain(&mut self) -> Vec<T> {
        let mut all: Vec<Entry<T>> = Vec::with_capacity(self.len);
        for queue in &mut self.classes {
            all.extend(queue.drain(..));
        }
        self.nonempty = 0;
        self.len = 0;
        self.far.clear();
        all.sort_unstable_by_key(|e| e.seq);
        all.into_iter().map(|e| e.task).collect()
    }
}
