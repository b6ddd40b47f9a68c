//! Confidence interval and point estimate of the location shift canary − baseline, as R's
//! `wilcox.test(canary, baseline, conf.int = TRUE, exact = FALSE, correct = TRUE)` defines
//! them, computed exactly instead of by R's coarse root-finding.
//!
//! # What R computes
//!
//! R evaluates `wdiff(d, zq)`: rank the pooled sample `(canary − d, baseline)`, take the
//! canary's U minus its mean `nm/2`, subtract the continuity correction `½·sign(·)`, divide by
//! the tie-corrected σ of that pooled sample, subtract `zq`. The lower bound is the root for
//! `zq = z₁₋α/₂`, the upper bound the root for `zq = −z₁₋α/₂`, both searched by `uniroot`
//! over `[min(canary) − max(baseline), max(canary) − min(baseline)]` (R returns an end of
//! that range when `wdiff` already has the target sign there). The estimate is the root of
//! `wdiff(d, 0)` without continuity correction.
//!
//! # What we compute, and why it is R's true root
//!
//! U at shift d only changes where `canary[i] − d == baseline[j]`, i.e. at a pairwise
//! difference D. Between two consecutive differences U is the count c of differences above
//! d and σ is constant (only ties within a side remain), so `wdiff` is a step function whose
//! value there is a non-decreasing function of c alone. Its sign change is therefore at a
//! pairwise difference: with c* the smallest count for which the corrected statistic exceeds
//! `zq`, the root is the (N − c* + 1)-th smallest difference (N = n·m, 1-based). We find c* by
//! bisection over integers using R's own expression, then select that order statistic
//! (`select.rs`). The result is the jump point itself, exact to the rounding of one
//! subtraction, where `uniroot(tol = 1e-4)` is only within 1e-4 of it in absolute terms — no
//! precision at all for metrics around 1e-5.
//!
//! For the estimate, `wdiff(d, 0)` is zero exactly where c = N/2. With N odd that is the single
//! jump at the middle difference; with N even it is the whole stretch between the two middle
//! differences, and R returns wherever its iteration happens to land in it. We return the
//! midpoint of that stretch, which is the Hodges–Lehmann estimator (the median of the
//! pairwise differences) and what R returns for symmetric data such as Kayenta's examples.
//!
//! # The value *at* a jump: where heavy ties part canaryd from Kayenta
//!
//! The step-function argument above describes `wdiff` between jumps. At a jump D itself R's
//! statistic is different again: the canary values that land on baseline values at shift D
//! count one half in U, and the pooled tie correction sees those new cross ties, so σ shrinks.
//! For continuous data that single point does not matter. For zero-heavy samples (error rates
//! at low traffic: 146 of 210 canary and 193 of 210 baseline samples exactly 0 in Kayenta's
//! "High Metric (Large Input)" case) it is everything: the zero–zero pairs make d = 0 a jump
//! that carries most of the n·m differences. Just left of 0 the statistic is z ≈ +16.6, just
//! right of it z ≈ −7.8, so both roots — and the Hodges–Lehmann estimate — are the jump at 0,
//! and the interval is [0, 0]. But *at* 0, with the zeros tied across sides and counted half,
//! z = 5.94 (p ≈ 3e-9): the test at shift 0 rejects, so 0 is not a plausible shift even
//! though it is the root. Kayenta's Brent solver (absolute tolerance 1e-4) cannot land on a
//! jump; it converges to a point a hair to the right of it (3.5e-5 there), which lies above
//! its tolerance band `tolerance·|estimate|` (the estimate is also a hair above 0), so Kayenta
//! says `high`. canaryd returned the jump itself, 0, which is not above a band of 0·tolerance,
//! and passed a canary with 4.4 times the baseline's error rate.
//!
//! We keep the exact bounds and say in addition whether R's statistic evaluated exactly at a
//! bound still rejects (`lower_open`, `upper_open`): then the bound is the edge of the set of
//! plausible shifts but not a member of it, as Kayenta's root-finder sees it, without depending
//! on where a tolerance of 1e-4 happens to stop. The classifier treats an open bound that sits
//! exactly on its tolerance band as beyond it.

use serde::{Deserialize, Serialize};

use super::SortedPair;
use super::rank_sum::{merge_counts, normal_quantile, sigma, sign};
use super::select::kth_differences;

/// Where the shift canary − baseline plausibly lies.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ShiftInterval {
    /// Lower confidence bound.
    pub lower: f64,
    /// Upper confidence bound.
    pub upper: f64,
    /// Hodges–Lehmann estimate: the median of all pairwise differences canary − baseline.
    pub estimate: f64,
    /// Confidence level the bounds were computed for, e.g. 0.98.
    pub confidence: f64,
    /// The test at shift `lower` itself rejects towards a larger shift: every plausible shift
    /// lies strictly above `lower` (see "The value *at* a jump" above).
    #[serde(default)]
    pub lower_open: bool,
    /// The test at shift `upper` itself rejects towards a smaller shift.
    #[serde(default)]
    pub upper_open: bool,
}

/// Confidence interval and estimate of the shift canary − baseline at `confidence` (strictly
/// between 0 and 1). `None` when a side is empty, a value is not finite, the confidence is out
/// of range, or both sides are constant — there every pooled value ties at the only candidate
/// shift and R stops with "cannot compute confidence interval when all observations are tied".
pub fn shift_interval(canary: &[f64], baseline: &[f64], confidence: f64) -> Option<ShiftInterval> {
    SortedPair::new(canary, baseline)?.shift_interval(confidence)
}

/// Hodges–Lehmann estimate of the shift canary − baseline: the median of the n·m pairwise
/// differences, found by selection in O((n + m) log) time and O(n + m) memory.
pub fn hodges_lehmann(canary: &[f64], baseline: &[f64]) -> Option<f64> {
    let pair = SortedPair::new(canary, baseline)?;
    median_difference(pair.canary(), pair.baseline())
}

pub(super) fn shift_interval_sorted(
    x: &[f64],
    y: &[f64],
    confidence: f64,
) -> Option<ShiftInterval> {
    if !(confidence > 0.0 && confidence < 1.0) {
        return None;
    }
    let (first_x, last_x) = (*x.first()?, *x.last()?);
    let (first_y, last_y) = (*y.first()?, *y.last()?);
    if first_x == last_x && first_y == last_y {
        return None;
    }
    let stat = Statistic::new(x, y);
    let z = normal_quantile(1.0 - (1.0 - confidence) / 2.0);
    let (mumin, mumax) = (first_x - last_y, last_x - first_y);
    // R's statistic at both ends of its search range, each merge done at most once and only
    // when R would evaluate it.
    let at_min = stat.at(mumin)?;
    let mut at_max = None;
    let mut root = |zq: f64| -> Option<Root> {
        if at_min - zq <= 0.0 {
            return Some(Root::At(mumin));
        }
        let hi = match at_max {
            Some(v) => v,
            None => *at_max.insert(stat.at(mumax)?),
        };
        if hi - zq >= 0.0 {
            return Some(Root::At(mumax));
        }
        stat.root_rank(zq).map(Root::Rank)
    };
    let lower = root(z)?;
    let upper = root(-z)?;
    let total = (x.len() as u64).checked_mul(y.len() as u64)?;
    let k = (total - 1) / 2;
    let k2 = if total % 2 == 1 { k } else { k + 1 };
    let rank = |r: Root| match r {
        Root::Rank(r) => r,
        Root::At(_) => k,
    };
    let [lo, a, b, hi] = kth_differences(x, y, [rank(lower), k, k2, rank(upper)])?;
    let value = |r: Root, v: f64| match r {
        Root::Rank(_) => v,
        Root::At(d) => d,
    };
    let (lower, upper) = (value(lower, lo), value(upper, hi));
    // R's statistic exactly at each bound, with the ties across sides that exist only there,
    // computed as R computes it (`x − d` against `y`).
    let lower_open = stat.at(lower).is_some_and(|v| v - z > 0.0);
    let upper_open = stat.at(upper).is_some_and(|v| v + z < 0.0);
    Some(ShiftInterval {
        lower,
        upper,
        estimate: a + (b - a) / 2.0,
        confidence,
        lower_open,
        upper_open,
    })
}

/// Where `wdiff(·, zq)` changes sign: an end of R's search range, or the pairwise difference
/// of this 0-based rank.
#[derive(Clone, Copy)]
enum Root {
    At(f64),
    Rank(u64),
}

fn median_difference(x: &[f64], y: &[f64]) -> Option<f64> {
    let total = (x.len() as u64).checked_mul(y.len() as u64)?;
    if total == 0 {
        return None;
    }
    let k = (total - 1) / 2;
    let k2 = if total % 2 == 1 { k } else { k + 1 };
    let [a, b] = kth_differences(x, y, [k, k2])?;
    Some(a + (b - a) / 2.0)
}

/// R's `wdiff` for fixed samples (sorted ascending).
struct Statistic<'a> {
    x: &'a [f64],
    y: &'a [f64],
    n: f64,
    m: f64,
    /// σ between pairwise differences, where only ties inside one side remain.
    sigma_between: f64,
}

impl<'a> Statistic<'a> {
    fn new(x: &'a [f64], y: &'a [f64]) -> Self {
        let (n, m) = (x.len() as f64, y.len() as f64);
        let ties = merge_counts(x, &[], 0.0).ties + merge_counts(&[], y, 0.0).ties;
        Self {
            x,
            y,
            n,
            m,
            sigma_between: sigma(n, m, ties),
        }
    }

    /// `wdiff(d, 0)` with continuity correction at an arbitrary shift, ties included (R's
    /// `wdiff(d, zq)` is this minus `zq`). `None` where R would stop because σ is zero.
    fn at(&self, d: f64) -> Option<f64> {
        let merged = merge_counts(self.x, self.y, d);
        let s = sigma(self.n, self.m, merged.ties);
        if s == 0.0 || merged.u.is_nan() {
            return None;
        }
        let dz = merged.u - self.n * self.m / 2.0;
        Some((dz - 0.5 * sign(dz)) / s)
    }

    /// `wdiff` between jumps, where c differences lie above the shift.
    fn between(&self, c: u64, zq: f64) -> f64 {
        let dz = c as f64 - self.n * self.m / 2.0;
        (dz - 0.5 * sign(dz)) / self.sigma_between - zq
    }

    /// 0-based rank of the pairwise difference where `wdiff(·, zq)` changes sign, given that
    /// it does so strictly inside R's search range; see the module documentation.
    fn root_rank(&self, zq: f64) -> Option<u64> {
        if self.sigma_between == 0.0 {
            return None;
        }
        let total = (self.x.len() as u64).checked_mul(self.y.len() as u64)?;
        // Smallest c in 0..=total with between(c) > 0; total + 1 when there is none.
        let (mut lo, mut hi) = (0u64, total + 1);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.between(mid, zq) > 0.0 {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        // Differences ranked total − c* + 1 (1-based) or above sit right of the jump.
        let rank = (total + 1).saturating_sub(lo).clamp(1, total);
        Some(rank - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kayenta_documented_interval_and_estimate() {
        let ci = shift_interval(&[10.0, 20.0, 30.0, 40.0], &[1.0, 2.0, 3.0, 4.0], 0.95)
            .expect("defined");
        assert_eq!((ci.lower, ci.upper, ci.estimate), (6.0, 39.0, 22.5));
    }

    #[test]
    fn hodges_lehmann_of_odd_count_is_the_middle_difference() {
        // Differences: 0, 1, 2 → median 1.
        assert_eq!(hodges_lehmann(&[1.0, 2.0, 3.0], &[1.0]), Some(1.0));
    }

    #[test]
    fn constant_sides_have_no_interval() {
        assert_eq!(shift_interval(&[2.0, 2.0], &[1.0], 0.95), None);
    }

    #[test]
    fn confidence_must_be_a_probability() {
        assert_eq!(shift_interval(&[1.0, 2.0], &[1.0, 3.0], 1.0), None);
    }
}
