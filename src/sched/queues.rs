use std::collections::VecDeque;
use std::time::Instant;

use super::cost::CLASSES;

/// A queued task with what the policies need to rank it.
#[derive(Debug)]
pub(super) struct Entry<T> {
    pub(super) task: T,
    /// Global arrival order; breaks every tie, so no two entries rank equal.
    pub(super) seq: u64,
    pub(super) arrival: Instant,
}

/// The incoming queue as one FIFO per cost class.
///
/// Every policy ranks tasks of the same class by arrival alone, so the head
/// of each FIFO dominates the rest of it and a pick only has to look at the
/// heads of non-empty classes (at most 64), whatever the number of tasks.
#[derive(Debug)]
pub(super) struct ClassQueues<T> {
    classes: [VecDeque<Entry<T>>; CLASSES],
    /// Bit `c` is set iff class `c` is non-empty: sjf is one
    /// `trailing_zeros`, and the others skip empty classes for free.
    nonempty: u64,
    len: usize,
}

impl<T> ClassQueues<T> {
    pub(super) fn new() -> Self {
        Self {
            classes: std::array::from_fn(|_| VecDeque::new()),
            nonempty: 0,
            len: 0,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn nonempty_mask(&self) -> u64 {
        self.nonempty
    }

    /// Entries must be pushed in increasing `seq` so each class FIFO stays in
    /// arrival order, which is what lets picks look at heads only.
    pub(super) fn push(&mut self, class: u32, entry: Entry<T>) {
        let idx = class as usize;
        debug_assert!(self.classes[idx].back().is_none_or(|b| b.seq < entry.seq));
        self.classes[idx].push_back(entry);
        self.nonempty |= 1u64 << class;
        self.len += 1;
    }

    pub(super) fn pop(&mut self, class: u32) -> Option<Entry<T>> {
        let queue = &mut self.classes[class as usize];
        let entry = queue.pop_front()?;
        if queue.is_empty() {
            self.nonempty &= !(1u64 << class);
        }
        self.len -= 1;
        Some(entry)
    }

    /// `(class, head)` for every non-empty class, in increasing class order.
    pub(super) fn heads(&self) -> impl Iterator<Item = (u32, &Entry<T>)> + '_ {
        let mut mask = self.nonempty;
        std::iter::from_fn(move || {
            while mask != 0 {
                let class = mask.trailing_zeros();
                mask &= mask - 1;
                if let Some(head) = self.classes[class as usize].front() {
                    return Some((class, head));
                }
            }
            None
        })
    }

    /// Removes every entry, returned in arrival order.
    pub(super) fn drain(&mut self) -> Vec<Entry<T>> {
        let mut all: Vec<Entry<T>> = Vec::with_capacity(self.len);
        for queue in &mut self.classes {
            all.extend(queue.drain(..));
        }
        self.nonempty = 0;
        self.len = 0;
        all.sort_unstable_by_key(|e| e.seq);
        all
    }
}
