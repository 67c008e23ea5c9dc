use std::time::Instant;

use super::cost::class_cost;
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
    /// Looks at class heads only: O(classes), never O(tasks).
    pub(super) fn pick<T>(&self, queues: &ClassQueues<T>, now: Instant) -> Option<u32> {
        match self {
            Policy::Sjf => {
                let mask = queues.nonempty_mask();
                (mask != 0).then(|| mask.trailing_zeros())
            }
            // Each class FIFO is in arrival order, so the oldest head is the
            // oldest task overall.
            Policy::Fifo => queues
                .heads()
                .min_by_key(|(_, head)| head.seq)
                .map(|(class, _)| class),
            Policy::Hrrn => pick_hrrn(queues, now),
        }
    }
}

/// Exact comparison of (w_a + c_a) / c_a against (w_b + c_b) / c_b as
/// (w_a + c_a) * c_b against (w_b + c_b) * c_a in u128: floats would round
/// nearly equal ratios and make the order depend on the platform.
///
/// Overflow bound: the wait is clamped to u64::MAX microseconds and a cost
/// is at most 2^63, so a product is at most (2^64 - 1 + 2^63) * 2^63
/// < 2^127 + 2^126 < u128::MAX.
fn pick_hrrn<T>(queues: &ClassQueues<T>, now: Instant) -> Option<u32> {
    // (class, wait + cost, cost, seq) of the best head so far.
    let mut best: Option<(u32, u128, u128, u64)> = None;
    for (class, head) in queues.heads() {
        let cost = u128::from(class_cost(class));
        // A caller clock that went backwards counts as no wait.
        let wait = now
            .saturating_duration_since(head.arrival)
            .as_micros()
            .min(u128::from(u64::MAX));
        let num = wait + cost;
        let better = match best {
            None => true,
            Some((_, best_num, best_cost, best_seq)) => {
                let lhs = num * best_cost;
                let rhs = best_num * cost;
                lhs > rhs || (lhs == rhs && head.seq < best_seq)
            }
        };
        if better {
            best = Some((class, num, cost, head.seq));
        }
    }
    best.map(|(class, ..)| class)
}

impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
