use std::collections::HashSet;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;

fn at(base: Instant, micros: u64) -> Instant {
    base + Duration::from_micros(micros)
}

/// Admits and pops everything, one task at a time, all at instant `now`.
fn order<T>(s: &mut Scheduler<T>, now: Instant) -> Vec<T> {
    let mut out = Vec::new();
    while s.admit(now) > 0 {
        while let Some(t) = s.pop_ready() {
            out.push(t);
        }
    }
    out
}

#[test]
fn cost_class_rounds_up_to_power_of_two() {
    assert_eq!(cost_class(0), 0);
    assert_eq!(cost_class(1), 0);
    assert_eq!(cost_class(2), 1);
    assert_eq!(cost_class(3), 2);
    assert_eq!(cost_class(4), 2);
    assert_eq!(cost_class(5), 3);
    assert_eq!(cost_class(1_000_000), 20);
    assert_eq!(cost_class(1 << 20), 20);
    assert_eq!(cost_class((1 << 20) + 1), 21);
    assert_eq!(cost_class(1 << 63), 63);
    assert_eq!(cost_class((1 << 63) + 1), 63);
    assert_eq!(cost_class(u64::MAX), 63);
}

#[test]
fn policy_names_round_trip() {
    for p in [Policy::Hrrn, Policy::Sjf, Policy::Fifo] {
        assert_eq!(Policy::parse(p.as_str()), Some(p));
    }
    assert_eq!(Policy::parse("HRRN"), Some(Policy::Hrrn));
    assert_eq!(Policy::parse("lifo"), None);
    assert_eq!(Policy::parse(""), None);
    assert_eq!(Policy::default(), Policy::Hrrn);
}

#[test]
fn hrrn_runs_short_tasks_first_when_all_arrive_together() {
    let base = Instant::now();
    let mut s = Scheduler::new(Policy::Hrrn, 100, 1);
    for (id, cost) in [(0, 64), (1, 8), (2, 1), (3, 1000), (4, 2), (5, 1)] {
        s.push(id, cost, base).unwrap();
    }
    // Any positive wait ranks by cost; the two cost-1 tasks keep arrival order.
    assert_eq!(order(&mut s, at(base, 10)), vec![2, 5, 4, 1, 0, 3]);
}

#[test]
fn hrrn_with_no_wait_at_all_is_arrival_order() {
    // Every ratio is exactly 1, so the tie rule alone decides.
    let base = Instant::now();
    let mut s = Scheduler::new(Policy::Hrrn, 100, 1);
    for (id, cost) in [(0, 64), (1, 8), (2, 1)] {
        s.push(id, cost, base).unwrap();
    }
    assert_eq!(order(&mut s, base), vec![0, 1, 2]);
}

#[test]
fn hrrn_ties_go_to_earlier_arrival() {
    let base = Instant::now();
    // a: cost 2, pushed at 0; b: cost 1, pushed at 1. At 2: a = (2+2)/2 = 2,
    // b = (1+1)/1 = 2.
    let mut s = Scheduler::new(Policy::Hrrn, 10, 1);
    s.push('a', 2, at(base, 0)).unwrap();
    s.push('b', 1, at(base, 1)).unwrap();
    assert_eq!(order(&mut s, at(base, 2)), vec!['a', 'b']);
    // One microsecond later b's ratio (3) beats a's (2.5).
    let mut s = Scheduler::new(Policy::Hrrn, 10, 1);
    s.push('a', 2, at(base, 0)).unwrap();
    s.push('b', 1, at(base, 1)).unwrap();
    assert_eq!(order(&mut s, at(base, 3)), vec!['b', 'a']);
    // Same class: arrival order even when the later one is cheaper in raw cost.
    let mut s = Scheduler::new(Policy::Hrrn, 10, 1);
    s.push('x', 4, at(base, 0)).unwrap();
    s.push('y', 3, at(base, 0)).unwrap();
    assert_eq!(order(&mut s, at(base, 5)), vec!['x', 'y']);
}

#[test]
fn hrrn_long_task_is_not_starved_by_a_stream_of_short_ones() {
    const STEP_US: u64 = 1000;
    const SHORT_WAIT_US: u64 = 1;
    let base = Instant::now();
    let mut s = Scheduler::new(Policy::Hrrn, 16, 1);
    s.push(u64::MAX, 1_000_000, base).unwrap();
    let mut admitted_at = None;
    for step in 0..5_000u64 {
        let t = step * STEP_US;
        // A short task arrives each step and the scheduler admits one task
        // shortly after: the short stream never backs up, but its head
        // always has ratio 1 + 1 = 2.
        s.push(step, 1, at(base, t)).unwrap();
        assert_eq!(s.admit(at(base, t + SHORT_WAIT_US)), 1);
        if s.pop_ready() == Some(u64::MAX) {
            admitted_at = Some(step);
            break;
        }
    }
    // The long task (rounded cost 2^20) reaches ratio 2 once it has waited
    // 2^20 us, i.e. at step ceil((2^20 - 1) / 1000) = 1049; the tie at 2 goes
    // to it as the earlier arrival.
    assert_eq!(admitted_at, Some(1049));
    // Nothing lost: the shorts that lost to it are still queued.
    assert_eq!(s.incoming_len(), 1);
}

#[test]
fn sjf_orders_by_class_then_arrival() {
    let base = Instant::now();
    let mut s = Scheduler::new(Policy::Sjf, 100, 1);
    // 3 and 4 share class 2; 5 and 8 share class 3.
    for (i, (id, cost)) in [(0, 8), (1, 3), (2, 1000), (3, 4), (4, 1), (5, 5), (6, 0)]
        .into_iter()
        .enumerate()
    {
        s.push(id, cost, at(base, i as u64)).unwrap();
    }
    // Waiting a long time changes nothing under sjf.
    assert_eq!(order(&mut s, at(base, 1 << 40)), vec![4, 6, 1, 3, 0, 5, 2]);
}

#[test]
fn fifo_orders_by_arrival_regardless_of_cost() {
    let base = Instant::now();
    let mut s = Scheduler::new(Policy::Fifo, 100, 1);
    let costs = [1000u64, 1, 64, 1, 0, 1 << 40, 7];
    for (id, cost) in costs.into_iter().enumerate() {
        s.push(id, cost, base).unwrap();
    }
    assert_eq!(order(&mut s, at(base, 5)), (0..costs.len()).collect::<Vec<_>>());
}

#[test]
fn push_fails_exactly_at_incoming_capacity() {
    let base = Instant::now();
    let mut s = Scheduler::new(Policy::Hrrn, 3, 2);
    for id in 0..3 {
        assert!(!s.incoming_is_full());
        assert_eq!(s.push(id, 1, base), Ok(()));
    }
    assert!(s.incoming_is_full());
    assert_eq!(s.push(99, 1, base), Err(99));
    assert_eq!(s.incoming_len(), 3);
    // Admission makes room again.
    assert_eq!(s.admit(base), 2);
    assert!(!s.incoming_is_full());
    assert_eq!(s.push(3, 1, base), Ok(()));
}

#[test]
fn admit_stops_at_ready_capacity_and_pop_frees_room() {
    let base = Instant::now();
    let mut s = Scheduler::new(Policy::Fifo, 10, 2);
    for id in 0..5 {
        s.push(id, 1, base).unwrap();
    }
    assert_eq!(s.admit(base), 2);
    assert_eq!((s.incoming_len(), s.ready_len()), (3, 2));
    assert_eq!(s.admit(base), 0);
    assert_eq!(s.pop_ready(), Some(0));
    assert_eq!(s.admit(base), 1);
    assert_eq!((s.incoming_len(), s.ready_len()), (2, 2));
    assert_eq!(s.pop_ready(), Some(1));
    assert_eq!(s.pop_ready(), Some(2));
    assert_eq!(s.pop_ready(), None);
    assert_eq!(s.admit(base), 2);
    assert_eq!(s.admit(base), 0);
    assert_eq!(s.incoming_len(), 0);
}

#[test]
fn zero_capacities_take_nothing() {
    let base = Instant::now();
    let mut s = Scheduler::new(Policy::Hrrn, 0, 0);
    assert!(s.incoming_is_full());
    assert_eq!(s.push(1, 1, base), Err(1));
    s.reconfigure(Policy::Hrrn, 1, 0);
    s.push(1, 1, base).unwrap();
    assert_eq!(s.admit(base), 0);
    assert_eq!(s.drain_all(), vec![1]);
}

#[test]
fn reconfigure_resorts_queued_tasks_and_loses_none() {
    let base = Instant::now();
    let mut s = Scheduler::new(Policy::Fifo, 100, 1);
    for (id, cost) in [(0, 64), (1, 8), (2, 1), (3, 1000), (4, 2)] {
        s.push(id, cost, base).unwrap();
    }
    assert_eq!(s.admit(base), 1);
    assert_eq!(s.pop_ready(), Some(0));
    s.reconfigure(Policy::Sjf, 100, 1);
    assert_eq!(s.policy(), Policy::Sjf);
    assert_eq!(order(&mut s, base), vec![2, 4, 1, 3]);

    // Back to hrrn: arrival times are kept, so the old expensive task has
    // out-waited a fresh cheap one.
    let mut s = Scheduler::new(Policy::Sjf, 100, 1);
    s.push("old", 4, base).unwrap();
    s.push("new", 1, at(base, 100)).unwrap();
    s.reconfigure(Policy::Hrrn, 100, 1);
    // old: (104 + 4) / 4 = 27; new: (4 + 1) / 1 = 5.
    assert_eq!(order(&mut s, at(base, 104)), vec!["old", "new"]);
}

#[test]
fn shrinking_capacity_keeps_tasks_until_they_drain() {
    let base = Instant::now();
    let mut s = Scheduler::new(Policy::Fifo, 10, 4);
    for id in 0..8 {
        s.push(id, 1, base).unwrap();
    }
    assert_eq!(s.admit(base), 4);
    s.reconfigure(Policy::Fifo, 2, 1);
    assert_eq!((s.incoming_len(), s.ready_len()), (4, 4));
    assert!(s.incoming_is_full());
    assert_eq!(s.push(100, 1, base), Err(100));
    assert_eq!(s.admit(base), 0);
    assert_eq!(s.pop_ready(), Some(0));
    assert_eq!(s.admit(base), 0);
    let mut rest = s.drain_all();
    rest.sort_unstable();
    assert_eq!(rest, vec![1, 2, 3, 4, 5, 6, 7]);
    assert_eq!((s.incoming_len(), s.ready_len()), (0, 0));
    assert!(!s.incoming_is_full());
}

#[test]
fn drain_all_returns_ready_then_incoming_in_arrival_order() {
    let base = Instant::now();
    let mut s = Scheduler::new(Policy::Sjf, 10, 2);
    for (id, cost) in [(0, 100), (1, 1), (2, 50), (3, 2), (4, 1)] {
        s.push(id, cost, base).unwrap();
    }
    assert_eq!(s.admit(base), 2); // 1 and 4
    assert_eq!(s.drain_all(), vec![1, 4, 0, 2, 3]);
    assert!(s.drain_all().is_empty());
}

#[test]
fn clock_going_backwards_counts_as_no_wait() {
    let base = Instant::now() + Duration::from_secs(10);
    let mut s = Scheduler::new(Policy::Hrrn, 10, 1);
    s.push(0, 8, base).unwrap();
    s.push(1, 1, base).unwrap();
    let earlier = base - Duration::from_secs(1);
    assert_eq!(order(&mut s, earlier), vec![0, 1]);
}

#[test]
fn hrrn_extreme_waits_and_costs_do_not_overflow() {
    let base = Instant::now();
    let mut s = Scheduler::new(Policy::Hrrn, 10, 1);
    s.push(0, u64::MAX, base).unwrap();
    s.push(1, 1 << 62, base).unwrap();
    s.push(2, 1, base).unwrap();
    // About 3 years of wait; the cheapest still wins.
    assert_eq!(order(&mut s, at(base, 1 << 47)), vec![2, 1, 0]);
}

// ---- property tests against a naive model that scans every task ----

#[derive(Debug, Clone)]
enum Op {
    Push(u64),
    Admit,
    Pop,
    Tick(u64),
    Reconfigure(Policy, usize, usize),
}

fn policy_strategy() -> impl Strategy<Value = Policy> {
    prop_oneof![Just(Policy::Hrrn), Just(Policy::Sjf), Just(Policy::Fifo)]
}

const POLICIES: [Policy; 3] = [Policy::Hrrn, Policy::Sjf, Policy::Fifo];

/// Ops are generated as plain `(u8, u64)` pairs and decoded here: proptest's
/// nested enum strategies are an order of magnitude slower to generate in
/// debug builds, and the suite must stay fast.
fn decode(raw: &[(u8, u64)], reconfigure: bool) -> Vec<Op> {
    raw.iter()
        .map(|&(kind, x)| {
            let variant = kind / 11;
            match kind % 11 {
                0..=3 => Op::Push(match variant % 4 {
                    0 => x % 4,
                    1 => x % 100,
                    2 => x % 5_000_000,
                    _ => x,
                }),
                4 | 5 => Op::Admit,
                6 | 7 => Op::Pop,
                10 if reconfigure => Op::Reconfigure(
                    POLICIES[(x % 3) as usize],
                    ((x >> 8) % 12) as usize,
                    ((x >> 16) % 6) as usize,
                ),
                _ => Op::Tick(match variant % 3 {
                    0 => x % 5,
                    1 => x % 10_000,
                    _ => x % 10_000_000,
                }),
            }
        })
        .collect()
}

struct ModelTask {
    id: usize,
    class: u32,
    arrival_us: u64,
    seq: usize,
}

/// The obviously-correct version: rank every queued task, no class FIFOs.
fn model_pick(policy: Policy, tasks: &[ModelTask], now_us: u64) -> Option<usize> {
    let better = |a: &ModelTask, b: &ModelTask| -> bool {
        let key_cmp = match policy {
            Policy::Fifo => std::cmp::Ordering::Equal,
            Policy::Sjf => b.class.cmp(&a.class),
            Policy::Hrrn => {
                let ratio = |t: &ModelTask| {
                    let cost = 1u128 << t.class;
                    (u128::from(now_us - t.arrival_us) + cost, cost)
                };
                let (an, ad) = ratio(a);
                let (bn, bd) = ratio(b);
                (an * bd).cmp(&(bn * ad))
            }
        };
        key_cmp.then(b.seq.cmp(&a.seq)).is_gt()
    };
    let mut best: Option<usize> = None;
    for (i, t) in tasks.iter().enumerate() {
        if best.is_none_or(|b| better(t, &tasks[b])) {
            best = Some(i);
        }
    }
    best
}

fn run_ops(policy: Policy, inc_cap: usize, ready_cap: usize, ops: &[Op]) -> Vec<usize> {
    let base = Instant::now();
    let mut now_us = 0u64;
    let mut s = Scheduler::new(policy, inc_cap, ready_cap);
    let (mut policy, mut inc_cap, mut ready_cap) = (policy, inc_cap, ready_cap);
    // Queue bounds that hold at all times: the capacity, or the length a
    // shrinking reconfigure left behind until it drains under the capacity.
    let (mut inc_bound, mut ready_bound) = (inc_cap, ready_cap);
    let mut model_incoming: Vec<ModelTask> = Vec::new();
    let mut model_ready: std::collections::VecDeque<usize> = Default::default();
    let mut pushed = 0usize;
    let mut popped: Vec<usize> = Vec::new();

    for op in ops {
        match *op {
            Op::Push(cost) => {
                let full = s.incoming_len() >= inc_cap;
                assert_eq!(s.incoming_is_full(), full);
                let id = pushed;
                match s.push(id, cost, at(base, now_us)) {
                    Ok(()) => {
                        assert!(!full);
                        model_incoming.push(ModelTask {
                            id,
                            class: cost_class(cost),
                            arrival_us: now_us,
                            seq: id,
                        });
                        pushed += 1;
                    }
                    Err(back) => {
                        assert!(full);
                        assert_eq!(back, id);
                    }
                }
            }
            Op::Admit => {
                let room = ready_cap.saturating_sub(s.ready_len());
                let expected = room.min(s.incoming_len());
                assert_eq!(s.admit(at(base, now_us)), expected);
                for _ in 0..expected {
                    let i = model_pick(policy, &model_incoming, now_us).unwrap();
                    model_ready.push_back(model_incoming.remove(i).id);
                }
            }
            Op::Pop => {
                let got = s.pop_ready();
                assert_eq!(got, model_ready.pop_front());
                popped.extend(got);
            }
            Op::Tick(us) => now_us += us,
            Op::Reconfigure(p, i, r) => {
                s.reconfigure(p, i, r);
                (policy, inc_cap, ready_cap) = (p, i, r);
                inc_bound = i.max(s.incoming_len());
                ready_bound = r.max(s.ready_len());
            }
        }
        assert_eq!(s.policy(), policy);
        assert_eq!(s.incoming_len(), model_incoming.len());
        assert_eq!(s.ready_len(), model_ready.len());
        if s.incoming_len() <= inc_cap {
            inc_bound = inc_cap;
        }
        if s.ready_len() <= ready_cap {
            ready_bound = ready_cap;
        }
        assert!(s.incoming_len() <= inc_bound);
        assert!(s.ready_len() <= ready_bound);
    }

    // Every pushed task comes out exactly once.
    let drained = s.drain_all();
    assert_eq!((s.incoming_len(), s.ready_len()), (0, 0));
    let mut all: Vec<usize> = popped.iter().chain(&drained).copied().collect();
    assert_eq!(all.iter().copied().collect::<HashSet<_>>().len(), all.len());
    all.sort_unstable();
    assert_eq!(all, (0..pushed).collect::<Vec<_>>());
    popped
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn matches_naive_model_and_loses_nothing(
        policy in policy_strategy(),
        inc_cap in 0usize..12,
        ready_cap in 0usize..6,
        raw in prop::collection::vec(any::<(u8, u64)>(), 0..200),
    ) {
        run_ops(policy, inc_cap, ready_cap, &decode(&raw, true));
    }

    #[test]
    fn fifo_pops_in_push_order(
        inc_cap in 1usize..12,
        ready_cap in 1usize..6,
        raw in prop::collection::vec(any::<(u8, u64)>(), 0..200),
    ) {
        let popped = run_ops(Policy::Fifo, inc_cap, ready_cap, &decode(&raw, false));
        prop_assert_eq!(popped.clone(), (0..popped.len()).collect::<Vec<_>>());
    }
}

// ---- the stamped fast path against `Instant` arithmetic ----

fn at_ns(base: Instant, nanos: u64) -> Instant {
    base + Duration::from_nanos(nanos)
}

#[test]
fn hrrn_waits_are_floored_whole_microseconds_of_the_difference() {
    let base = Instant::now();
    // b: cost 2 at 0 ns; a: cost 1 at 900 ns. At 2,100 ns a has waited
    // 1,200 ns = 1 us (not 2 - 0 = 2 whole microseconds of the clock):
    // a = (1 + 1) / 1 = 2 and b = (2 + 2) / 2 = 2, a tie for b.
    let mut s = Scheduler::new(Policy::Hrrn, 10, 1);
    s.push('b', 2, at_ns(base, 0)).unwrap();
    s.push('a', 1, at_ns(base, 900)).unwrap();
    assert_eq!(order(&mut s, at_ns(base, 2_100)), vec!['b', 'a']);
    // At 2,899 ns still 1 us for a; at 2,900 ns a has waited 2 us: 3 > 2.
    for (now, first) in [(2_899, 'b'), (2_900, 'a')] {
        let mut s = Scheduler::new(Policy::Hrrn, 10, 1);
        s.push('b', 2, at_ns(base, 0)).unwrap();
        s.push('a', 1, at_ns(base, 900)).unwrap();
        assert_eq!(order(&mut s, at_ns(base, now))[0], first, "at {now} ns");
    }
}

#[test]
fn hrrn_arrivals_centuries_apart_stay_exact() {
    const CENTURIES: u64 = 3 * 100 * 365 * 86_400;
    let base = Instant::now();
    let far = base + Duration::from_secs(CENTURIES);
    // Both sides of the stamp range: arrivals over a century after the
    // first one, and a clock over a century past every arrival.
    let mut s = Scheduler::new(Policy::Hrrn, 10, 1);
    s.push(0, 1 << 20, base).unwrap();
    s.push(1, 1, far).unwrap();
    s.push(2, 1, far + Duration::from_micros(5)).unwrap();
    // At far + 10 us: 0 has a ratio of about 9e9, 1 of 11, 2 of 6.
    assert_eq!(order(&mut s, far + Duration::from_micros(10)), vec![0, 1, 2]);

    let mut s = Scheduler::new(Policy::Hrrn, 10, 1);
    s.push(0, 1 << 40, base).unwrap();
    s.push(1, 1 << 39, base + Duration::from_micros(1)).unwrap();
    s.push(2, 1, base + Duration::from_micros(2)).unwrap();
    // Three centuries, ~9.5e15 us: (9.5e15 + 2^39) / 2^39 ~ 17,000 < 9.5e15.
    assert_eq!(order(&mut s, far), vec![2, 1, 0]);

    // Arrivals centuries before the first one (a clock going backwards).
    let mut s = Scheduler::new(Policy::Hrrn, 10, 1);
    s.push(0, 1, far).unwrap();
    s.push(1, 2, base).unwrap();
    s.push(2, 4, base).unwrap();
    assert_eq!(order(&mut s, far), vec![1, 2, 0]);
}

/// The original ranking, straight from `Instant`s: the wait is
/// `saturating_duration_since(..).as_micros()`, clamped to u64::MAX, and
/// ratios are compared by u128 cross products. Only the first queued task
/// of each class competes: with a clock that goes backwards a later task of
/// a class may have an earlier arrival, and it still waits its turn.
fn instant_model_pick(policy: Policy, tasks: &[(usize, u32, Instant)], now: Instant) -> Option<usize> {
    let ratio = |&(_, class, arrival): &(usize, u32, Instant)| {
        let cost = 1u128 << class;
        let wait = now
            .saturating_duration_since(arrival)
            .as_micros()
            .min(u128::from(u64::MAX));
        (wait + cost, cost)
    };
    let mut best: Option<usize> = None;
    let mut seen = 0u64;
    for (i, t) in tasks.iter().enumerate() {
        if seen & (1 << t.1) != 0 {
            continue;
        }
        seen |= 1 << t.1;
        // `tasks` is in arrival order, so only strictly better replaces.
        let better = best.is_none_or(|b| {
            let b = &tasks[b];
            match policy {
                Policy::Fifo => false,
                Policy::Sjf => t.1 < b.1,
                Policy::Hrrn => {
                    let ((tn, td), (bn, bd)) = (ratio(t), ratio(b));
                    tn * bd > bn * td
                }
            }
        });
        if better {
            best = Some(i);
        }
    }
    best
}

/// Ops for `run_ns_ops`: pushes at nanosecond-resolution times, admits,
/// and clock moves of every size in both directions, some over a century.
fn run_ns_ops(policy: Policy, ready_cap: usize, raw: &[(u8, u64)]) {
    const CENTURY_NS: u64 = 100 * 365 * 86_400 * 1_000_000_000;
    // Far enough from the machine's clock origin to go back centuries.
    let origin = Instant::now() + Duration::from_secs(1_000 * 365 * 86_400);
    let mut now = origin;
    let mut s = Scheduler::new(policy, usize::MAX, ready_cap);
    let mut model: Vec<(usize, u32, Instant)> = Vec::new();
    let mut pushed = 0;
    for &(kind, x) in raw {
        let step = match (kind >> 4) % 8 {
            0 => x % 1_000,
            1 => x % 5_000,
            2 => x % 1_000_000,
            3 => x % 10_000_000_000,
            4 => x % 1_000_000_000_000_000,
            5 => CENTURY_NS + x % (2 * CENTURY_NS),
            _ => x % 3_000,
        };
        match kind % 8 {
            0..=2 => {
                let cost = match x % 3 {
                    0 => x % 4,
                    1 => x % 5_000_000,
                    _ => x >> (x % 64),
                };
                s.push(pushed, cost, now).unwrap();
                model.push((pushed, cost_class(cost), now));
                pushed += 1;
            }
            3 | 4 => {
                if policy == Policy::Hrrn
                    && let Some((slow, fast)) = policy::pick_hrrn_paths(&mut s.incoming, now)
                {
                    assert!(fast.is_none_or(|f| f == slow), "fast {fast:?} slow {slow}");
                }
                let n = s.admit(now);
                assert_eq!(n, ready_cap.min(model.len()));
                for _ in 0..n {
                    let i = instant_model_pick(policy, &model, now).unwrap();
                    assert_eq!(s.pop_ready(), Some(model.remove(i).0));
                }
                assert_eq!(s.pop_ready(), None);
            }
            5 => now = now.checked_sub(Duration::from_nanos(step)).unwrap_or(now),
            _ => now += Duration::from_nanos(step),
        }
        assert_eq!(s.incoming_len(), model.len());
    }
    let rest = s.drain_all();
    assert_eq!(rest, model.iter().map(|t| t.0).collect::<Vec<_>>());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn stamped_picks_match_instant_arithmetic(
        policy in policy_strategy(),
        ready_cap in 1usize..4,
        raw in prop::collection::vec(any::<(u8, u64)>(), 0..200),
    ) {
        run_ns_ops(policy, ready_cap, &raw);
    }
}
