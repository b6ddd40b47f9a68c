//! Wilcoxon rank-sum / Mann–Whitney U test with the normal approximation, as R's
//! `wilcox.test(exact = FALSE, correct = TRUE)` and SciPy's
//! `mannwhitneyu(method = "asymptotic", use_continuity = True)` compute it.
//!
//! The exact distribution is never used: canary metrics have ties (counters that did not
//! move, quantised latencies), the exact test is undefined with ties, and Kayenta's judge
//! always takes the approximation.

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, Normal};

use super::SortedPair;

/// Outcome of the rank-sum test of canary against baseline.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RankSumTest {
    /// Mann–Whitney U of the canary: the number of (canary, baseline) pairs in which the canary
    /// is larger, ties counting one half. R reports this number as `W`.
    pub u: f64,
    /// Wilcoxon's rank sum of the canary in the pooled sample (average ranks for ties):
    /// `u + n(n+1)/2`.
    pub w: f64,
    /// Standardised statistic `(U − nm/2 − ½·sign(U − nm/2)) / σ`, σ with the tie
    /// correction. Zero when every pooled value is tied (σ = 0): no evidence either way.
    pub z: f64,
    /// Two-sided p-value from the normal approximation.
    pub p_value: f64,
    /// Number of canary samples.
    pub n_canary: usize,
    /// Number of baseline samples.
    pub n_baseline: usize,
}

impl RankSumTest {
    /// Common-language effect size U / (n·m).
    pub fn cles(&self) -> f64 {
        self.u / (self.n_canary as f64 * self.n_baseline as f64)
    }
}

/// Rank-sum test of `canary` against `baseline`. `None` when a side is empty or a value is
/// NaN or infinite. Costs one sort of each side and a linear merge.
pub fn rank_sum(canary: &[f64], baseline: &[f64]) -> Option<RankSumTest> {
    SortedPair::new(canary, baseline).map(|p| p.rank_sum())
}

/// What a merge of the two sorted sides yields: U of the canary and the tie term
/// Σ(t³ − t) over groups of equal pooled values.
pub(super) struct Merged {
    pub u: f64,
    pub ties: f64,
}

/// Merges ascending `x` (shifted by `-d`, as R's `x - d`) with ascending `y`, counting for
/// every group of equal pooled values how many of each side it holds. Linear time; the shift
/// keeps `x` sorted, so the same merge evaluates the statistic at any candidate shift.
pub(super) fn merge_counts(x: &[f64], y: &[f64], d: f64) -> Merged {
    let (mut i, mut j) = (0usize, 0usize);
    let (mut u, mut ties) = (0.0f64, 0.0f64);
    if d.is_nan() {
        return Merged { u: f64::NAN, ties };
    }
    while i < x.len() || j < y.len() {
        let xi = x.get(i).map(|v| v - d);
        let v = match (xi, y.get(j)) {
            (Some(a), Some(&b)) => a.min(b),
            (Some(a), None) => a,
            (None, Some(&b)) => b,
            (None, None) => break,
        };
        let below_y = j as f64;
        let mut a = 0usize;
        while i < x.len() && x[i] - d == v {
            a += 1;
            i += 1;
        }
        let mut b = 0usize;
        while j < y.len() && y[j] == v {
            b += 1;
            j += 1;
        }
        if a == 0 && b == 0 {
            // Unreachable for finite input; guards against an endless loop on NaN.
            break;
        }
        let (a, b) = (a as f64, b as f64);
        u += a * below_y + 0.5 * a * b;
        let t = a + b;
        ties += t * t * t - t;
    }
    Merged { u, ties }
}

/// σ of U under the null hypothesis with the tie correction, exactly R's expression.
pub(super) fn sigma(n: f64, m: f64, ties: f64) -> f64 {
    let total = n + m;
    let var = (n * m / 12.0) * ((total + 1.0) - ties / (total * (total - 1.0)));
    if var > 0.0 { var.sqrt() } else { 0.0 }
}

/// The test on sides already sorted ascending and known finite and non-empty.
pub(super) fn rank_sum_sorted(x: &[f64], y: &[f64]) -> RankSumTest {
    let (n, m) = (x.len() as f64, y.len() as f64);
    let merged = merge_counts(x, y, 0.0);
    let s = sigma(n, m, merged.ties);
    let dz = merged.u - n * m / 2.0;
    let z = if s > 0.0 {
        (dz - 0.5 * sign(dz)) / s
    } else {
        0.0
    };
    RankSumTest {
        u: merged.u,
        w: merged.u + n * (n + 1.0) / 2.0,
        z,
        p_value: two_sided_p(z),
        n_canary: x.len(),
        n_baseline: y.len(),
    }
}

/// R's `sign`: zero at zero, so an exactly central statistic gets no continuity correction.
pub(super) fn sign(v: f64) -> f64 {
    if v > 0.0 {
        1.0
    } else if v < 0.0 {
        -1.0
    } else {
        0.0
    }
}

/// `2·min(Φ(z), 1 − Φ(z))` using the survival function in the upper tail so that tiny
/// p-values keep their precision.
fn two_sided_p(z: f64) -> f64 {
    let Ok(normal) = Normal::new(0.0, 1.0) else {
        return 1.0;
    };
    let tail = if z > 0.0 { normal.sf(z) } else { normal.cdf(z) };
    (2.0 * tail).min(1.0)
}

/// Quantile of the standard normal distribution, shared with the interval code.
pub(super) fn normal_quantile(p: f64) -> f64 {
    match Normal::new(0.0, 1.0) {
        Ok(normal) => normal.inverse_cdf(p),
        Err(_) => f64::NAN,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn u_counts_pairs_where_canary_is_larger() {
        let t = rank_sum(&[10.0, 20.0, 30.0, 40.0], &[1.0, 2.0, 3.0, 4.0]).expect("finite");
        assert_eq!(t.u, 16.0);
        assert_eq!(t.w, 26.0);
    }

    #[test]
    fn ties_get_average_ranks() {
        // Pooled 1,2,2,3: the canary's 2 has rank 2.5, its 3 rank 4.
        let t = rank_sum(&[2.0, 3.0], &[1.0, 2.0]).expect("finite");
        assert_eq!(t.w, 6.5);
        assert_eq!(t.u, 3.5);
    }

    #[test]
    fn all_tied_samples_give_no_evidence() {
        let t = rank_sum(&[1.0, 1.0], &[1.0, 1.0, 1.0]).expect("finite");
        assert_eq!((t.z, t.p_value), (0.0, 1.0));
    }

    #[test]
    fn empty_side_has_no_test() {
        assert!(rank_sum(&[], &[1.0]).is_none());
    }
}
