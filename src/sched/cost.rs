/// The cost class of a task: the cost rounded up to a power of two (cost 0
/// treated as 1), returned as the class index, log2 of the rounded cost, in
/// `0..=63`.
///
/// Rounding to powers of two is what keeps scheduling sub-linear: tasks of
/// one class are interchangeable for every policy except by arrival, so each
/// class is one FIFO and only the 64 heads ever compete. A cost above 2^63
/// would round to 2^64, which does not fit; it lands in the top class 63.
pub fn cost_class(cost: u64) -> u32 {
    if cost <= 1 {
        return 0;
    }
    // ceil(log2(cost)) is the bit length of cost - 1 for cost >= 2.
    (u64::BITS - (cost - 1).leading_zeros()).min(MAX_CLASS)
}

/// Highest class index; there are `MAX_CLASS + 1` classes.
pub(super) const MAX_CLASS: u32 = 63;

/// Number of cost classes.
pub(super) const CLASSES: usize = MAX_CLASS as usize + 1;

/// The rounded cost of a class, 2^class.
pub(super) fn class_cost(class: u32) -> u64 {
    1u64 << class.min(MAX_CLASS)
}
