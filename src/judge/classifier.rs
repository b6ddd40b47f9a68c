//! Kayenta's NetflixACAJudge metric classifier (the `MannWhitneyClassifier`), re-implemented:
//! is the canary's metric higher, lower, or indistinguishable from the baseline's?
//!
//! A metric is `high` only when three things hold, so that neither noise nor a trivially
//! small but "significant" shift fails a rollout:
//! 1. the whole confidence interval of the shift canary − baseline (R's `wilcox.test`, see
//!    `stats`) lies above `tolerance·|estimate|` — significant *and* not hugging zero;
//! 2. the effect size (mean ratio by default) reaches `allowed_increase`;
//! 3. the metric's `direction` says an increase is bad.
//!
//! `low` mirrors it. Edge cases, in the order they are checked, follow Kayenta:
//! - NaN samples are removed or replaced by 0.0 (`nan_strategy`); ±∞ samples mean a broken
//!   query and classify as `error` (Kayenta would fail inside its test; we say why).
//! - outliers are trimmed (`outliers`).
//! - an empty side is `nodata`, or `nodata_fail` with `must_have_data`. Deliberate deviation:
//!   Kayenta passes empty data under `replace`; canaryd's design says no-data is never healthy.
//! - the same multiset of values on both sides is `pass` ("identical").
//! - a single distinct value across both sides (all tied) is `pass`: nothing can differ.
//! - both sides constant but different: Kayenta adds Gaussian noise of 1e-5 of the value so
//!   the test can run; the noisy samples are then completely separated and the interval
//!   collapses onto the difference. We skip the randomness and use that limit directly: the
//!   interval and estimate are the difference itself, so a constant 10 against a constant 1
//!   is `high` (given the effect size allows it).
//! - a zero baseline mean makes the mean ratio 1.0 (Kayenta's "no measurable ratio").

mod preprocess;

pub use preprocess::{NanStrategy, OutlierStrategy};

use serde::{Deserialize, Serialize};

use crate::judge::stats::SortedPair;
use crate::judge::{Classification, Direction};

/// Which effect size gates `high`/`low` beyond significance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum EffectMeasure {
    /// Canary mean / baseline mean; 1.0 is no effect. Kayenta's default.
    #[default]
    MeanRatio,
    /// P(canary sample > baseline sample), ties one half; 0.5 is no effect. Bounded and
    /// defined for zero means; set `allowed_increase` below 1.0 (e.g. 0.7) when using it.
    Cles,
}

/// Per-metric settings; the field names are the rule-file keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClassifierConfig {
    /// Which way the metric gets worse; only that way can fail.
    pub direction: Direction,
    /// What to do with NaN samples.
    pub nan_strategy: NanStrategy,
    /// Whether to trim outliers first.
    pub outliers: OutlierStrategy,
    /// Fraction of |estimate| the interval must clear; Kayenta's 0.25.
    pub tolerance: f64,
    /// Confidence level of the interval; Kayenta's judge uses 0.98.
    pub confidence: f64,
    /// Effect size compared with the allowed/critical thresholds.
    pub effect_size: EffectMeasure,
    /// `high` needs effect ≥ this. 1.0 (Kayenta's default) adds no requirement for the mean
    /// ratio; the shipped rules use 1.1 and above because canary and baseline differ a little
    /// anyway.
    pub allowed_increase: f64,
    /// `low` needs effect ≤ this.
    pub allowed_decrease: f64,
    /// A `high` with effect ≥ this is flagged `critical`.
    pub critical_increase: f64,
    /// A `low` with effect ≤ this is flagged `critical`.
    pub critical_decrease: f64,
    /// Missing data fails the metric (`nodata_fail`) instead of being `nodata`.
    pub must_have_data: bool,
}

impl Default for ClassifierConfig {
    fn default() -> Self {
        Self {
            direction: Direction::default(),
            nan_strategy: NanStrategy::default(),
            outliers: OutlierStrategy::default(),
            tolerance: 0.25,
            confidence: 0.98,
            effect_size: EffectMeasure::default(),
            allowed_increase: 1.0,
            allowed_decrease: 1.0,
            critical_increase: 1.0,
            critical_decrease: 1.0,
            must_have_data: false,
        }
    }
}

/// The verdict on one metric, with the numbers behind it so it can be explained and replayed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Classified {
    pub classification: Classification,
    /// Two-sided p-value of the rank-sum test, when it ran.
    pub p_value: Option<f64>,
    /// Confidence interval of the shift canary − baseline.
    pub interval: Option<(f64, f64)>,
    /// Hodges–Lehmann estimate of that shift.
    pub estimate: Option<f64>,
    /// The effect size named by `effect_measure`.
    pub effect: Option<f64>,
    pub effect_measure: EffectMeasure,
    /// `high`/`low` with the effect beyond `critical_*`: Kayenta's critical flag. Whether it
    /// aborts the rollout is up to the metric's own `critical` setting, which the caller
    /// holds; with the default thresholds of 1.0 every mean-ratio `high` qualifies, exactly
    /// as in Kayenta for a critical metric.
    pub critical: bool,
    /// Samples used per side after NaN and outlier handling.
    pub canary_n: usize,
    pub baseline_n: usize,
    /// One sentence explaining the outcome with its numbers.
    pub reason: String,
}

/// Classifies one metric; never panics, whatever the samples hold.
pub fn classify(canary: &[f64], baseline: &[f64], cfg: &ClassifierConfig) -> Classified {
    let mut out = Classified {
        classification: Classification::Error,
        p_value: None,
        interval: None,
        estimate: None,
        effect: None,
        effect_measure: cfg.effect_size,
        critical: false,
        canary_n: 0,
        baseline_n: 0,
        reason: String::new(),
    };
    if let Some(problem) = config_problem(cfg) {
        out.reason = format!("invalid classifier configuration: {problem}");
        return out;
    }
    let (c, b) = (
        preprocess::handle_nan(canary, cfg.nan_strategy),
        preprocess::handle_nan(baseline, cfg.nan_strategy),
    );
    if c.iter().chain(b.iter()).any(|v| v.is_infinite()) {
        out.reason = "a sample is infinite, so the query is broken, not measuring".into();
        return out;
    }
    let c = preprocess::sort_and_trim(c, cfg.outliers);
    let b = preprocess::sort_and_trim(b, cfg.outliers);
    (out.canary_n, out.baseline_n) = (c.len(), b.len());
    if c.is_empty() || b.is_empty() {
        let side = if c.is_empty() { "canary" } else { "baseline" };
        out.classification = if cfg.must_have_data {
            Classification::NodataFail
        } else {
            Classification::Nodata
        };
        out.reason = format!(
            "no usable {side} samples ({} canary, {} baseline)",
            c.len(),
            b.len()
        );
        return out;
    }
    if c == b {
        out.classification = Classification::Pass;
        out.reason = format!(
            "canary and baseline data are identical ({} samples)",
            c.len()
        );
        return out;
    }
    if c.first() == b.last() && b.first() == c.last() {
        out.classification = Classification::Pass;
        out.reason = format!("every sample on both sides equals {}", c[0]);
        return out;
    }
    let Some(pair) = SortedPair::from_sorted_vecs(c, b) else {
        out.reason = "samples could not be compared".into();
        return out;
    };
    judge(pair, cfg, out)
}

fn config_problem(cfg: &ClassifierConfig) -> Option<String> {
    if !(cfg.confidence > 0.0 && cfg.confidence < 1.0) {
        return Some(format!(
            "confidence {} is not between 0 and 1",
            cfg.confidence
        ));
    }
    if !(cfg.tolerance >= 0.0 && cfg.tolerance.is_finite()) {
        return Some(format!(
            "tolerance {} is not a non-negative number",
            cfg.tolerance
        ));
    }
    if let OutlierStrategy::Remove { factor } = cfg.outliers
        && !(factor > 0.0 && factor.is_finite())
    {
        return Some(format!("outlier factor {factor} is not positive"));
    }
    None
}

/// The statistical part, on clean, sorted, non-degenerate samples.
fn judge(pair: SortedPair, cfg: &ClassifierConfig, mut out: Classified) -> Classified {
    let test = pair.rank_sum();
    let (lower, upper, estimate) = if pair.both_constant() {
        let diff = pair.canary()[0] - pair.baseline()[0];
        (diff, diff, diff)
    } else {
        match pair.shift_interval(cfg.confidence) {
            Some(ci) => (ci.lower, ci.upper, ci.estimate),
            None => {
                out.reason = "the confidence interval could not be computed".into();
                return out;
            }
        }
    };
    let effect = match cfg.effect_size {
        EffectMeasure::MeanRatio => pair.mean_ratio().unwrap_or(1.0),
        EffectMeasure::Cles => test.cles(),
    };
    let margin = cfg.tolerance * estimate.abs();
    let may_rise = matches!(cfg.direction, Direction::Increase | Direction::Either);
    let may_fall = matches!(cfg.direction, Direction::Decrease | Direction::Either);
    let high = may_rise && lower > margin && effect >= cfg.allowed_increase;
    let low = may_fall && upper < -margin && effect <= cfg.allowed_decrease;
    let pct = cfg.confidence * 100.0;
    let measure = match cfg.effect_size {
        EffectMeasure::MeanRatio => "mean ratio",
        EffectMeasure::Cles => "CLES",
    };
    let (classification, critical, reason) = if high {
        let critical = effect >= cfg.critical_increase;
        let reason = format!(
            "canary is higher: the {pct}% interval of the shift [{lower:.6e}, {upper:.6e}] \
             lies above the tolerance {margin:.6e}, and the {measure} {effect:.4} reaches \
             the allowed increase {}",
            cfg.allowed_increase
        );
        (Classification::High, critical, reason)
    } else if low {
        let critical = effect <= cfg.critical_decrease;
        let reason = format!(
            "canary is lower: the {pct}% interval of the shift [{lower:.6e}, {upper:.6e}] \
             lies below the tolerance -{margin:.6e}, and the {measure} {effect:.4} reaches \
             the allowed decrease {}",
            cfg.allowed_decrease
        );
        (Classification::Low, critical, reason)
    } else {
        let reason = format!(
            "no change beyond the limits: the {pct}% interval of the shift is \
             [{lower:.6e}, {upper:.6e}] (estimate {estimate:.6e}, p = {:.4}) against a \
             tolerance of ±{margin:.6e}, {measure} {effect:.4} (allowed increase {}, \
             decrease {}, direction {})",
            test.p_value,
            cfg.allowed_increase,
            cfg.allowed_decrease,
            direction_word(cfg.direction)
        );
        (Classification::Pass, false, reason)
    };
    out.classification = classification;
    out.critical = critical;
    out.reason = reason;
    out.p_value = Some(test.p_value);
    out.interval = Some((lower, upper));
    out.estimate = Some(estimate);
    out.effect = Some(effect);
    out
}

fn direction_word(d: Direction) -> &'static str {
    match d {
        Direction::Increase => "increase",
        Direction::Decrease => "decrease",
        Direction::Either => "either",
    }
}
