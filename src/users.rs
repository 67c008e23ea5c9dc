//! Per-user request counts (the `users` op and `/statistics`), bounded by
//! `limits.max_users`: past the limit, new names are counted under the
//! reserved name `~other`, so a client inventing names cannot grow memory.
//!
//! Names are shared (`Arc<str>`), so a snapshot of a table of 100,000
//! names costs the loop a copy of pointers and counts; sorting and
//! rendering it happen on a worker (or the file writer).

use std::collections::HashMap;
use std::sync::Arc;

pub const ANONYMOUS: &str = "anonymous";
pub const OTHER: &str = "~other";

#[derive(Debug, Default)]
pub struct UserCounts {
    counts: HashMap<Arc<str>, u64>,
    /// Most requests carry no user: their count is kept apart, so the
    /// common case costs no hashing.
    anonymous: u64,
    /// Names kept, not counting `anonymous` and `~other`.
    named: usize,
    max_users: usize,
    /// Changed since the last snapshot was taken for saving.
    pub dirty: bool,
}

impl UserCounts {
    pub fn new(max_users: usize) -> UserCounts {
        UserCounts {
            max_users,
            ..UserCounts::default()
        }
    }

    pub fn set_max_users(&mut self, max_users: usize) {
        self.max_users = max_users;
    }

    /// Counts one request of `user` (None: anonymous).
    pub fn count(&mut self, user: Option<&str>) {
        self.dirty = true;
        let name = match user {
            None | Some(ANONYMOUS) => {
                self.anonymous += 1;
                return;
            }
            Some(name) => name,
        };
        if let Some(n) = self.counts.get_mut(name) {
            *n += 1;
            return;
        }
        let reserved = name == OTHER;
        let name = if reserved || self.named < self.max_users {
            if !reserved {
                self.named += 1;
            }
            name
        } else {
            OTHER
        };
        *self.counts.entry(Arc::from(name)).or_insert(0) += 1;
    }

    /// Puts back counts saved by an earlier run. Names beyond `max_users`
    /// are folded into `~other`, as they would have been when counted.
    pub fn restore(&mut self, saved: Vec<(String, u64)>) {
        for (name, n) in saved {
            if name == ANONYMOUS {
                self.anonymous += n;
                continue;
            }
            let reserved = name == ANONYMOUS || name == OTHER;
            let known = self.counts.contains_key(name.as_str());
            let key = if reserved || known || self.named < self.max_users {
                if !reserved && !known {
                    self.named += 1;
                }
                name
            } else {
                OTHER.to_string()
            };
            *self.counts.entry(Arc::from(key)).or_insert(0) += n;
        }
    }

    /// How many names are kept.
    pub fn len(&self) -> usize {
        self.counts.len() + usize::from(self.anonymous > 0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// (name, count) pairs, in no particular order.
    pub fn snapshot(&self) -> Vec<(Arc<str>, u64)> {
        let mut v: Vec<(Arc<str>, u64)> = Vec::with_capacity(self.counts.len() + 1);
        v.extend(self.counts.iter().map(|(k, v)| (Arc::clone(k), *v)));
        if self.anonymous > 0 {
            v.push((Arc::from(ANONYMOUS), self.anonymous));
        }
        v
    }

    /// Bytes a rendering of the table may take at most (a name is at most
    /// 64 bytes, escaped or not, and its entry's JSON around it 48): what a
    /// `users` task counts against `max_buffered_bytes`.
    pub fn rendered_size(&self) -> usize {
        self.len() * (48 + 64) + 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(u: &UserCounts) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = u
            .snapshot()
            .into_iter()
            .map(|(n, c)| (n.to_string(), c))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn counts_and_sorts() {
        let mut u = UserCounts::new(10);
        u.count(Some("bob"));
        u.count(None);
        u.count(Some("bob"));
        u.count(Some("Alice"));
        assert_eq!(
            sorted(&u),
            vec![("Alice".into(), 1), ("anonymous".into(), 1), ("bob".into(), 2)]
        );
    }

    #[test]
    fn restored_counts_continue() {
        let mut u = UserCounts::new(1);
        u.restore(vec![("a".into(), 5), ("anonymous".into(), 2), ("b".into(), 1)]);
        u.count(Some("a"));
        assert_eq!(
            sorted(&u),
            vec![("a".into(), 6), ("anonymous".into(), 2), ("~other".into(), 1)]
        );
    }

    #[test]
    fn names_past_the_limit_go_to_other() {
        let mut u = UserCounts::new(2);
        for name in ["a", "b", "c", "d", "a"] {
            u.count(Some(name));
        }
        u.count(None);
        assert_eq!(
            sorted(&u),
            vec![
                ("a".into(), 2),
                ("anonymous".into(), 1),
                ("b".into(), 1),
                ("~other".into(), 2)
            ]
        );
    }
}
