//! Persistence for gauges (CPU, DB pool): a breach counts only once it has held for `for:`.
//!
//! Why not a statistical test: gauge samples a step apart are strongly autocorrelated (a pool
//! that is 93 % used now is 93 % used fifteen seconds later), so no test that assumes
//! independent samples is valid on them, and no anytime-valid test exists for them either.
//! What works is what Prometheus alerting does: a line plus a duration the breach must hold.

use std::time::Duration;

/// Trailing samples a `for:` duration spans at this query resolution (at least one).
pub fn samples_for(hold: Option<Duration>, step: Duration) -> usize {
    match hold {
        None => 1,
        Some(h) if step.is_zero() => usize::from(!h.is_zero()).max(1),
        Some(h) => (h.as_secs_f64() / step.as_secs_f64()).ceil().max(1.0) as usize,
    }
}

/// How many of the last `n` values satisfy `breach`, counting back from the latest until the
/// first that does not.
pub fn run_length(values: &[f64], n: usize, breach: impl Fn(f64) -> bool) -> usize {
    values
        .iter()
        .rev()
        .take(n)
        .take_while(|v| breach(**v))
        .count()
}

/// canary − baseline, point by point, aligned at the latest point of each.
pub fn differences(canary: &[f64], baseline: &[f64]) -> Vec<f64> {
    let n = canary.len().min(baseline.len());
    canary[canary.len() - n..]
        .iter()
        .zip(&baseline[baseline.len() - n..])
        .map(|(c, b)| c - b)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_minutes_at_fifteen_seconds_is_twelve_samples() {
        assert_eq!(
            samples_for(Some(Duration::from_secs(180)), Duration::from_secs(15)),
            12
        );
        assert_eq!(samples_for(None, Duration::from_secs(15)), 1);
        assert_eq!(
            samples_for(Some(Duration::from_secs(20)), Duration::from_secs(15)),
            2
        );
    }

    #[test]
    fn run_length_counts_back_from_the_latest() {
        let v = [0.99, 0.5, 0.97, 0.98];
        assert_eq!(run_length(&v, 4, |x| x > 0.95), 2);
        assert_eq!(run_length(&v, 1, |x| x > 0.95), 1);
    }

    #[test]
    fn differences_align_the_latest_points() {
        assert_eq!(differences(&[1.0, 2.0, 3.0], &[0.5, 1.0]), vec![1.5, 2.0]);
    }
}
