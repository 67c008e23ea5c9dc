//! `max_buffered_bytes`: one running count of every byte held on behalf of
//! clients (read and write buffers, reply slots, the payloads of queued and
//! running tasks at their in-memory size, UDP reply batches, rendered
//! `users` tables), and the rule that keeps it bounded.
//!
//! The rule: while the count is over the limit, a connection that holds
//! [`SMALL`] bytes or more (buffers, replies and its tasks together) reads
//! nothing, except the one whose turn it is; one that holds less may still
//! read a little (so small requests are still served). The turn goes to the
//! connections that wait, oldest first, and lasts until the holder's
//! current request is complete, so legal requests that together exceed the
//! limit are served one after another instead of all freezing with half a
//! line each. Hence the bound of taskd(8): `max_buffered_bytes`, plus one
//! read, plus one request of `max_line_bytes`, plus [`SMALL`] per
//! connection.

use std::collections::VecDeque;
use std::time::Duration;

use super::conn::READ_CHUNK;
use crate::ratelimit::RateLimited;

/// What a connection may hold and still read while the count is over the
/// limit.
pub const SMALL: usize = 4096;

/// A connection, by slab key and lifetime-unique id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holder {
    pub key: usize,
    pub id: u64,
}

pub struct Budget {
    max: usize,
    held: usize,
    /// Connections that stopped reading for memory, oldest first.
    waiting: VecDeque<Holder>,
    /// The one connection that may read over the limit.
    turn: Option<Holder>,
    log: RateLimited,
}

impl Budget {
    pub fn new(max: usize) -> Budget {
        Budget {
            max,
            held: 0,
            waiting: VecDeque::new(),
            turn: None,
            log: RateLimited::new("buffer pauses", log::Level::Info, Duration::from_secs(1)),
        }
    }

    pub fn set_max(&mut self, max: usize) {
        self.max = max;
    }

    pub fn held(&self) -> usize {
        self.held
    }

    pub fn over(&self) -> bool {
        self.held > self.max
    }

    /// A holder's count changed from `before` to `now`.
    pub fn update(&mut self, before: usize, now: usize) {
        let was_over = self.over();
        self.held = self.held + now - before;
        if !was_over && self.over() {
            let (held, max) = (self.held, self.max);
            self.log.log(|| {
                format!("clients hold {held} bytes, over max_buffered_bytes ({max}); the larger holders wait their turn")
            });
        }
    }

    /// How much a connection holding `holds` may read now: 0 when it must
    /// wait (it is then queued for a turn).
    pub fn may_read(&mut self, who: Holder, holds: usize) -> usize {
        if self.turn == Some(who) {
            return READ_CHUNK;
        }
        if !self.over() {
            // Reads while under the limit together overshoot it by at most
            // one read.
            return READ_CHUNK.min((self.max - self.held).max(SMALL));
        }
        if holds < SMALL {
            return SMALL - holds;
        }
        if !self.waiting.contains(&who) {
            self.waiting.push_back(who);
        }
        0
    }

    /// Whether a connection holding `holds` with `inflight` tasks out may
    /// take one more request now (the same rule as reading, for the
    /// requests already read; a turn is one request).
    pub fn may_take(&self, who: Holder, holds: usize, inflight: usize) -> bool {
        !self.over() || holds < SMALL || (self.turn == Some(who) && inflight == 0)
    }

    /// The connections to read again now: every waiting one once the count
    /// is under the limit, else the next one whose turn it is. `alive`
    /// says whether a holder still exists and waits for memory alone;
    /// `busy` whether the turn holder is still in the middle of a request.
    pub fn resume(&mut self, alive: impl Fn(Holder) -> bool, busy: impl Fn(Holder) -> bool) -> Vec<Holder> {
        if let Some(t) = self.turn
            && !(alive(t) && busy(t))
        {
            self.turn = None;
        }
        if !self.over() {
            self.turn = None;
            return self.waiting.drain(..).filter(|&h| alive(h)).collect();
        }
        if self.turn.is_some() {
            return Vec::new();
        }
        while let Some(h) = self.waiting.pop_front() {
            if alive(h) {
                self.turn = Some(h);
                return vec![h];
            }
        }
        Vec::new()
    }

    /// A waiting connection goes first in line (its client has shut its
    /// side down: serving it soon frees what it holds).
    pub fn prefer(&mut self, who: Holder) {
        if let Some(i) = self.waiting.iter().position(|&h| h == who) {
            self.waiting.remove(i);
            self.waiting.push_front(who);
        }
    }

    /// A connection is gone.
    pub fn forget(&mut self, who: Holder) {
        self.waiting.retain(|&h| h != who);
        if self.turn == Some(who) {
            self.turn = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(key: usize) -> Holder {
        Holder { key, id: key as u64 }
    }

    #[test]
    fn under_the_limit_everyone_reads() {
        let mut b = Budget::new(1 << 20);
        assert_eq!(b.may_read(h(1), 500_000), READ_CHUNK);
        b.update(0, (1 << 20) - 100);
        assert_eq!(b.may_read(h(1), 0), SMALL, "near the limit, reads shrink");
    }

    #[test]
    fn over_the_limit_large_holders_take_turns() {
        let mut b = Budget::new(10_000);
        b.update(0, 50_000);
        assert_eq!(b.may_read(h(1), 30_000), 0);
        assert_eq!(b.may_read(h(2), 20_000), 0);
        assert_eq!(
            b.may_read(h(3), 10),
            SMALL - 10,
            "small holders still read a little"
        );
        let all = |_| true;
        assert_eq!(b.resume(all, all), vec![h(1)]);
        assert_eq!(b.may_read(h(1), 30_000), READ_CHUNK);
        assert_eq!(b.may_read(h(2), 20_000), 0);
        // Holder 1's request is complete: the turn passes to holder 2.
        assert_eq!(b.resume(all, |x| x != h(1)), vec![h(2)]);
        assert!(b.may_take(h(2), 20_000, 0));
        assert!(!b.may_take(h(2), 20_000, 1), "one request per turn");
        assert!(!b.may_take(h(1), 30_000, 0));
        // Under the limit again: everyone waiting reads.
        b.update(50_000, 10);
        assert_eq!(b.may_read(h(4), 0), READ_CHUNK.min(10_000 - 10));
        assert!(b.resume(all, all).is_empty());
        assert!(b.may_take(h(1), 30_000, 3));
    }

    #[test]
    fn a_gone_holder_loses_its_turn() {
        let mut b = Budget::new(10);
        b.update(0, 100_000);
        b.may_read(h(1), 50_000);
        b.may_read(h(2), 50_000);
        b.may_read(h(3), 50_000);
        b.prefer(h(3));
        assert_eq!(b.resume(|_| true, |_| true), vec![h(3)]);
        b.forget(h(3));
        assert_eq!(b.resume(|_| true, |_| true), vec![h(1)]);
        assert_eq!(b.resume(|x| x != h(1), |_| true), vec![h(2)]);
    }
}
