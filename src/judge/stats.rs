//! Rank statistics for comparing a canary with its baseline: the Wilcoxon rank-sum
//! (Mann–Whitney U) test, the confidence interval and Hodges–Lehmann estimate of the location
//! shift, and two effect sizes.
//!
//! Architecture Invariant: pure functions over slices. No I/O, no clock, no randomness that
//! is not seeded by the input, and no panics: every function returns `None` when its answer
//! is undefined (an empty side, a non-finite sample) instead of inventing a number.
//!
//! Everything works on sorted copies of the two samples. Sorting once is the floor of the
//! cost (the rank-sum test needs an order), and every later step — ranks, tie groups, the
//! statistic at a shift `d`, the k-th pairwise difference — is a linear merge of the two
//! sorted arrays, so a metric with 2×10,000 samples never materialises 10⁸ differences.

mod rank_sum;
mod select;
mod select_one;
mod shift;

pub use rank_sum::{RankSumTest, rank_sum};
pub use shift::{ShiftInterval, hodges_lehmann, shift_interval};

/// The two samples, validated and sorted once, so that a caller needing several statistics
/// (the classifier needs all of them) pays for the sort once.
#[derive(Debug, Clone, PartialEq)]
pub struct SortedPair {
    canary: Vec<f64>,
    baseline: Vec<f64>,
}

impl SortedPair {
    /// Sorts copies of both sides. `None` when a side is empty or holds a NaN or an infinity:
    /// ranks of NaN are meaningless and differences of infinities are NaN, so no statistic
    /// here has an honest answer for them. The classifier removes or replaces NaN first.
    pub fn new(canary: &[f64], baseline: &[f64]) -> Option<Self> {
        Self::from_vecs(canary.to_vec(), baseline.to_vec())
    }

    /// Like [`SortedPair::new`] but reuses the caller's buffers (the classifier already owns
    /// filtered copies).
    pub fn from_vecs(mut canary: Vec<f64>, mut baseline: Vec<f64>) -> Option<Self> {
        if canary.is_empty() || baseline.is_empty() {
            return None;
        }
        if !canary.iter().chain(baseline.iter()).all(|v| v.is_finite()) {
            return None;
        }
        canary.sort_unstable_by(f64::total_cmp);
        baseline.sort_unstable_by(f64::total_cmp);
        Some(Self { canary, baseline })
    }

    /// Like [`SortedPair::from_vecs`] for sides the caller already sorted ascending (the
    /// classifier sorts while trimming outliers), so they are not sorted twice.
    pub(crate) fn from_sorted_vecs(canary: Vec<f64>, baseline: Vec<f64>) -> Option<Self> {
        if canary.is_empty() || baseline.is_empty() {
            return None;
        }
        if !canary.iter().chain(baseline.iter()).all(|v| v.is_finite()) {
            return None;
        }
        debug_assert!(canary.is_sorted_by(|a, b| a.total_cmp(b).is_le()));
        debug_assert!(baseline.is_sorted_by(|a, b| a.total_cmp(b).is_le()));
        Some(Self { canary, baseline })
    }

    /// The canary samples, ascending.
    pub fn canary(&self) -> &[f64] {
        &self.canary
    }

    /// The baseline samples, ascending.
    pub fn baseline(&self) -> &[f64] {
        &self.baseline
    }

    /// Wilcoxon rank-sum test; see [`rank_sum`].
    pub fn rank_sum(&self) -> RankSumTest {
        rank_sum::rank_sum_sorted(&self.canary, &self.baseline)
    }

    /// Confidence interval and estimate of the shift canary − baseline; see
    /// [`shift_interval`].
    pub fn shift_interval(&self, confidence: f64) -> Option<ShiftInterval> {
        shift::shift_interval_sorted(&self.canary, &self.baseline, confidence)
    }

    /// Canary mean / baseline mean; see [`mean_ratio`].
    pub fn mean_ratio(&self) -> Option<f64> {
        ratio_of_means(&self.canary, &self.baseline)
    }

    /// Both sides hold one distinct value each (possibly the same one).
    pub fn both_constant(&self) -> bool {
        is_constant(&self.canary) && is_constant(&self.baseline)
    }
}

/// Ratio of the means, canary / baseline: Kayenta's default effect size, because "the canary
/// is 30 % slower" is what an operator can weigh against `allowed_increase`.
///
/// `None` when a side is empty, a value is not finite, or the baseline mean is zero (the ratio
/// is undefined; the classifier decides what that means). A zero canary mean gives `Some(0.0)`.
pub fn mean_ratio(canary: &[f64], baseline: &[f64]) -> Option<f64> {
    if canary.is_empty() || baseline.is_empty() {
        return None;
    }
    if !canary.iter().chain(baseline.iter()).all(|v| v.is_finite()) {
        return None;
    }
    ratio_of_means(canary, baseline)
}

fn ratio_of_means(canary: &[f64], baseline: &[f64]) -> Option<f64> {
    let (c, b) = (mean(canary)?, mean(baseline)?);
    if b == 0.0 {
        return None;
    }
    let r = c / b;
    r.is_finite().then_some(r)
}

/// Common-language effect size: the probability that a random canary sample exceeds a random
/// baseline sample, ties counting one half, i.e. U / (n·m). Unlike the mean ratio it is
/// bounded, scale-free and defined when the baseline mean is zero; 0.5 means no effect.
pub fn cles(canary: &[f64], baseline: &[f64]) -> Option<f64> {
    let pair = SortedPair::new(canary, baseline)?;
    Some(pair.rank_sum().cles())
}

/// Arithmetic mean by running update, which cannot overflow for finite inputs the way a plain
/// sum of values near `f64::MAX` would.
pub(crate) fn mean(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut m = 0.0;
    for (i, v) in values.iter().enumerate() {
        m += (v - m) / (i as f64 + 1.0);
    }
    Some(m)
}

fn is_constant(sorted: &[f64]) -> bool {
    match (sorted.first(), sorted.last()) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_ratio_is_canary_over_baseline() {
        assert_eq!(mean_ratio(&[2.0, 4.0], &[1.0, 2.0]), Some(2.0));
    }

    #[test]
    fn mean_ratio_is_undefined_for_a_zero_baseline_mean() {
        assert_eq!(mean_ratio(&[1.0], &[-1.0, 1.0]), None);
    }

    #[test]
    fn mean_of_huge_values_does_not_overflow() {
        assert_eq!(mean(&[f64::MAX, f64::MAX]), Some(f64::MAX));
    }

    #[test]
    fn cles_counts_ties_as_half() {
        assert_eq!(cles(&[1.0, 2.0], &[1.0]), Some(0.75));
    }

    #[test]
    fn non_finite_samples_have_no_statistics() {
        assert!(SortedPair::new(&[f64::NAN], &[1.0]).is_none());
        assert!(cles(&[f64::INFINITY], &[1.0]).is_none());
    }
}
