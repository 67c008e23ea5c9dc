//! Per-user request counts (the `users` op and `/statistics`), bounded by
//! `limits.max_users`: past the limit, new names are counted under the
//! reserved name `~other`, so a client inventing names cannot grow memory.

use std::collections::HashMap;

pub const ANONYMOUS: &str = "anonymous";
pub const OTHER: &str = "~other";

#[derive(Debug, Default)]
pub struct UserCounts {
    counts: HashMap<String, u64>,
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
        *self.counts.entry(name.to_owned()).or_insert(0) += 1;
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
            let key = if reserved || self.counts.contains_key(&name) || self.named < self.max_users {
                if !reserved && !self.counts.contains_key(&name) {
                    self.named += 1;
                }
                name
            } else {
                OTHER.to_string()
            };
            *self.counts.entry(key).or_insert(0) += n;
        }
    }

    /// How many names are kept.
    pub fn len(&self) -> usize {
        self.counts.len() + usize::from(self.anonymous > 0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// (name, count) sorted by the names' bytes.
    pub fn snapshot(&self) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = self.counts.iter().map(|(k, v)| (k.clone(), *v)).collect();
        if self.anonymous > 0 {
            v.push((ANONYMOUS.to_string(), self.anonymous));
        }
        v.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_sorts() {
        let mut u = UserCounts::new(10);
        u.count(Some("bob"));
        u.count(None);
        u.count(Some("bob"));
        u.count(Some("Alice"));
        assert_eq!(
            u.snapshot(),
            vec![("Alice".into(), 1), ("anonymous".into(), 1), ("bob".into(), 2)]
        );
    }

    #[test]
    fn restored_counts_continue() {
        let mut u = UserCounts::new(1);
        u.restore(vec![("a".into(), 5), ("anonymous".into(), 2), ("b".into(), 1)]);
        u.count(Some("a"));
        assert_eq!(
            u.snapshot(),
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
            u.snapshot(),
            vec![
                ("a".into(), 2),
                ("anonymous".into(), 1),
                ("b".into(), 1),
                ("~other".into(), 2)
            ]
        );
    }
}
