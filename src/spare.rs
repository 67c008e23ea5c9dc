//! Big blocks kept for reuse.
//!
//! taskd has the allocator map every block of 1 MiB or more on its own
//! (`main.rs`), so a freed big block goes back to the kernel at once and
//! memory stays within the bound taskd(8) documents. The price would be
//! fresh, zeroed pages for every big request: a 6.9 MB `sum` line ran at
//! ~600 instead of ~1,100 MB/s. So the last big line buffer, and on each
//! worker the last big list of parsed values, are kept here and handed to
//! the next big request: at most one line buffer in all (a line of
//! `max_line_bytes` and a read), and per worker one list of integers and
//! one of doubles (8 bytes per value, `max_values` at most). A block is
//! kept only if it is bigger than the one it replaces.

use std::cell::Cell;
use std::sync::Mutex;

/// Blocks below this size come from the allocator's arenas and are not
/// kept here; the threshold set in `main.rs`.
pub const BIG: usize = 1 << 20;

/// The last big line buffer: filled by the loop, freed by a worker.
static LINE: Mutex<Vec<u8>> = Mutex::new(Vec::new());

/// An empty buffer of at least `capacity` bytes, if one is kept.
pub fn take_line(capacity: usize) -> Option<Vec<u8>> {
    let mut kept = LINE.lock().ok()?;
    (kept.capacity() >= capacity).then(|| std::mem::take(&mut *kept))
}

/// Keeps `buf` for the next big line, if it is big and bigger than the
/// buffer kept; otherwise it is freed.
pub fn give_line(mut buf: Vec<u8>) {
    if buf.capacity() < BIG {
        return;
    }
    if let Ok(mut kept) = LINE.lock()
        && buf.capacity() > kept.capacity()
    {
        buf.clear();
        // The smaller one is freed once the lock is released.
        buf = std::mem::replace(&mut *kept, buf);
    }
    drop(buf);
}

thread_local! {
    static INTS: Cell<Vec<i64>> = const { Cell::new(Vec::new()) };
    static FLOATS: Cell<Vec<f64>> = const { Cell::new(Vec::new()) };
}

/// A list with room for `capacity` values, taken from `kept` when the list
/// is big and the kept one is big enough.
fn take<T>(kept: &'static std::thread::LocalKey<Cell<Vec<T>>>, capacity: usize) -> Vec<T> {
    if capacity.saturating_mul(size_of::<T>()) >= BIG {
        let v = kept.take();
        if v.capacity() >= capacity {
            return v;
        }
        kept.set(v);
    }
    Vec::with_capacity(capacity)
}

fn give<T>(kept: &'static std::thread::LocalKey<Cell<Vec<T>>>, mut v: Vec<T>) {
    if v.capacity().saturating_mul(size_of::<T>()) < BIG {
        return;
    }
    let old = kept.take();
    if v.capacity() > old.capacity() {
        v.clear();
        kept.set(v);
    } else {
        kept.set(old);
    }
}

/// An empty list of integers with room for `capacity`.
pub fn ints(capacity: usize) -> Vec<i64> {
    take(&INTS, capacity)
}

/// An empty list of doubles with room for `capacity`.
pub fn floats(capacity: usize) -> Vec<f64> {
    take(&FLOATS, capacity)
}

pub fn give_ints(v: Vec<i64>) {
    give(&INTS, v);
}

pub fn give_floats(v: Vec<f64>) {
    give(&FLOATS, v);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn big_lists_are_reused_small_ones_are_not() {
        let mut big = ints(BIG / 8);
        big.extend([1, 2, 3]);
        let at = big.as_ptr();
        give_ints(big);
        let again = ints(BIG / 8);
        assert_eq!(again.as_ptr(), at, "the kept list comes back");
        assert!(again.is_empty());
        // Nothing is kept now: a second big list is a new one.
        let other = ints(BIG / 8);
        assert_ne!(other.as_ptr(), again.as_ptr());
        give_ints(vec![1; 10]);
        assert_eq!(INTS.take().capacity(), 0, "a small list is not kept");
        // A list bigger than the kept one takes its place.
        give_floats(Vec::with_capacity(BIG / 8));
        give_floats(Vec::with_capacity(BIG / 4));
        assert_eq!(floats(BIG / 8).capacity(), BIG / 4);
    }

    #[test]
    fn a_line_buffer_is_kept_for_the_next_big_line() {
        let mut buf = Vec::with_capacity(2 * BIG);
        buf.extend_from_slice(b"sum 1 2 3");
        let at = buf.as_ptr();
        give_line(buf);
        assert!(take_line(4 * BIG).is_none(), "too small for that line");
        let again = take_line(BIG).expect("kept");
        assert_eq!(again.as_ptr(), at);
        assert!(again.is_empty());
        assert!(take_line(BIG).is_none(), "taken");
        give_line(Vec::with_capacity(100));
        assert!(take_line(1).is_none(), "small buffers are not kept");
    }
}
