//! Sample clean-up before classification, as Kayenta's NetflixACAJudge does it: NaN removal or
//! replacement, then Tukey fences widened to the 1st/99th percentiles.

use crate::verdict::{NanStrategy, OutlierStrategy};

/// Applies the NaN strategy to one side.
pub(super) fn handle_nan(values: &[f64], strategy: NanStrategy) -> Vec<f64> {
    match strategy {
        NanStrategy::Remove => values.iter().copied().filter(|v| !v.is_nan()).collect(),
        NanStrategy::Replace => values
            .iter()
            .map(|&v| if v.is_nan() { 0.0 } else { v })
            .collect(),
    }
}

/// Sorts `values` and drops outliers per `strategy`; the output stays sorted, which the
/// statistics reuse. Values must be finite.
pub(super) fn sort_and_trim(mut values: Vec<f64>, strategy: OutlierStrategy) -> Vec<f64> {
    values.sort_unstable_by(f64::total_cmp);
    let OutlierStrategy::Remove { factor } = strategy else {
        return values;
    };
    if values.is_empty() {
        return values;
    }
    let (q1, q3) = (percentile(&values, 25.0), percentile(&values, 75.0));
    let iqr = q3 - q1;
    let low = percentile(&values, 1.0).min(q1 - factor * iqr);
    let high = percentile(&values, 99.0).max(q3 + factor * iqr);
    values.retain(|&v| v >= low && v <= high);
    values
}

/// Percentile of sorted, non-empty data by Apache Commons Math's default estimator (position
/// p·(n+1)/100, linear interpolation, clamped to the extremes), so the fences are the ones
/// Kayenta draws.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let n = sorted.len();
    let (Some(&first), Some(&last)) = (sorted.first(), sorted.last()) else {
        return f64::NAN;
    };
    let pos = p * (n as f64 + 1.0) / 100.0;
    if n == 1 || pos < 1.0 {
        return first;
    }
    if pos >= n as f64 {
        return last;
    }
    let whole = pos.floor();
    let frac = pos - whole;
    let below = sorted[whole as usize - 1];
    let above = sorted[whole as usize];
    below + frac * (above - below)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_interpolates_like_commons_math() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&v, 25.0), 1.25);
        assert_eq!(percentile(&v, 75.0), 3.75);
        assert_eq!(percentile(&v, 1.0), 1.0);
        assert_eq!(percentile(&v, 99.0), 4.0);
    }

    #[test]
    fn a_gross_spike_is_removed_but_the_body_is_kept() {
        let mut v: Vec<f64> = (0..100).map(|i| 10.0 + (i % 10) as f64).collect();
        v.push(10_000.0);
        let trimmed = sort_and_trim(v, OutlierStrategy::default());
        assert_eq!(trimmed.len(), 100);
        assert_eq!(trimmed.last(), Some(&19.0));
    }

    #[test]
    fn replace_turns_nan_into_zero() {
        assert_eq!(
            handle_nan(&[f64::NAN, 1.0], NanStrategy::Replace),
            vec![0.0, 1.0]
        );
        assert_eq!(handle_nan(&[f64::NAN, 1.0], NanStrategy::Remove), vec![1.0]);
    }
}
