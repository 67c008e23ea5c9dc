//! The two-level task scheduler (ARCHITECTURE.md; taskd(8), "SCHEDULING"): a bounded incoming queue,
//! a long-term scheduler that admits the best-scored task into a bounded
//! ready queue under a policy (hrrn, sjf or fifo), and the ready queue that
//! the worker pool takes tasks from in admission order.
//!
//! It is a pure state machine, generic over the task payload: no I/O, no
//! threads, no clock reads. Every call that needs the time takes `now` from
//! the caller, so the event loop owns the clock and the scheduler's decisions
//! are deterministic and can be tested with made-up instants.
//!
//! Costs are rounded up to a power of two (the cost class) and the incoming
//! queue keeps one FIFO per class, so a push is O(1) and a pick compares at
//! most 64 class heads, whatever the number of queued tasks.
//!
//! Arrivals are kept as integer stamps from a base instant, with each class
//! head's stamp and arrival number in flat arrays, and `now` is converted
//! once per call: comparing a head under hrrn is a few integer and
//! floating-point instructions (exact, see `policy::pick_hrrn`) without a
//! branch, not `Instant` arithmetic.

mod cost;
mod policy;
mod queues;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::time::Instant;

pub use cost::cost_class;
pub use policy::Policy;

use queues::ClassQueues;

/// Incoming queue, long-term scheduler and ready queue for tasks of type `T`.
#[derive(Debug)]
pub struct Scheduler<T> {
    policy: Policy,
    incoming_capacity: usize,
    ready_capacity: usize,
    incoming: ClassQueues<T>,
    ready: VecDeque<T>,
    /// Next arrival number. A u64 cannot wrap: at a billion pushes a second
    /// it would take over 500 years.
    next_seq: u64,
}

impl<T> Scheduler<T> {
    /// An empty scheduler. A capacity of 0 means that queue never takes a
    /// task (the configuration layer resolves `ready_capacity = 0` to
    /// 2 x workers before calling this).
    pub fn new(policy: Policy, incoming_capacity: usize, ready_capacity: usize) -> Self {
        Self {
            policy,
            incoming_capacity,
            ready_capacity,
            incoming: ClassQueues::new(),
            ready: VecDeque::new(),
            next_seq: 0,
        }
    }

    pub fn policy(&self) -> Policy {
        self.policy
    }

    pub fn incoming_len(&self) -> usize {
        self.incoming.len()
    }

    pub fn ready_len(&self) -> usize {
        self.ready.len()
    }

    /// True when `push` would refuse a task: the event loop stops reading
    /// connections (backpressure) and answers UDP `ERR busy`.
    pub fn incoming_is_full(&self) -> bool {
        self.incoming.len() >= self.incoming_capacity
    }

    /// Enqueues into the incoming queue, stamped with `now` as its arrival.
    /// `Err(task)` hands the task back when the incoming queue is full.
    pub fn push(&mut self, task: T, cost: u64, now: Instant) -> Result<(), T> {
        if self.incoming_is_full() {
            return Err(task);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.incoming.push(cost_class(cost), task, seq, now);
        Ok(())
    }

    /// Enqueues a task that is already in the system and must not be lost
    /// (the next slice of a running π chunk): the capacity does not apply.
    /// Such tasks are bounded by the tasks already admitted.
    pub fn requeue(&mut self, task: T, cost: u64, now: Instant) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.incoming.push(cost_class(cost), task, seq, now);
    }

    /// Long-term scheduler: while the ready queue holds fewer than
    /// `ready_capacity` tasks and the incoming queue is non-empty, moves the
    /// best-scored task (under the policy, at `now`) to the ready queue.
    /// Returns how many moved.
    pub fn admit(&mut self, now: Instant) -> usize {
        let room = self.ready_capacity.saturating_sub(self.ready.len());
        let count = room.min(self.incoming.len());
        if count == 0 {
            return 0;
        }
        // `now` converted once for the whole round, not once per head.
        let now_at = match self.policy {
            Policy::Hrrn => self.incoming.stamp_of(now),
            Policy::Sjf | Policy::Fifo => None,
        };
        let mut moved = 0;
        while moved < count {
            // The queue is non-empty here, so pick names a non-empty class
            // and the pop succeeds.
            let Some(task) = self
                .policy
                .pick(&self.incoming, now, now_at)
                .and_then(|class| self.incoming.pop(class))
            else {
                break;
            };
            self.ready.push_back(task);
            moved += 1;
        }
        moved
    }

    /// Short-term side: the oldest task of the ready queue (admission order).
    pub fn pop_ready(&mut self) -> Option<T> {
        self.ready.pop_front()
    }

    /// Reload: changes the policy and the capacities. Queued tasks keep
    /// their arrival times and are ranked by the new policy from the next
    /// `admit` on (the ranking is computed at pick time, so nothing has to
    /// move). A smaller capacity never drops tasks: a queue may stay over
    /// capacity until it drains.
    pub fn reconfigure(&mut self, policy: Policy, incoming_capacity: usize, ready_capacity: usize) {
        self.policy = policy;
        self.incoming_capacity = incoming_capacity;
        self.ready_capacity = ready_capacity;
    }

    /// Shutdown: removes and returns every queued task, the ready queue's in
    /// admission order first, then the incoming queue's in arrival order
    /// (callers must not rely on the order).
    pub fn drain_all(&mut self) -> Vec<T> {
        let mut all: Vec<T> = Vec::with_capacity(self.ready.len() + self.incoming.len());
        all.extend(self.ready.drain(..));
        all.extend(self.incoming.drain());
        all
    }
}
