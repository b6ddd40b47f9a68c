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
//! - a zero baseline mean leaves the mean ratio undefined (`effect: None`), and an undefined
//!   effect counts as reaching `allowed_*` and any configured `critical_*`, as Kayenta ignores
//!   a NaN effect size: canary 10 against baseline 0 is `high`, not a pass at "ratio 1.0".
//! - zero-heavy samples can collapse the interval onto 0 while the test at shift 0 rejects;
//!   an open bound on the tolerance band counts as beyond it (see `stats::shift`).

mod preprocess;

use serde::{Deserialize, Serialize};

use crate::judge::stats::{ShiftInterval, SortedPair, mean};
use crate::verdict::{Classification, Direction};
use crate::verdict::{ClassifierConfig, EffectMeasure, OutlierStrategy};

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
    /// The effect size named by `effect_measure`; `None` when it is undefined (a mean ratio
    /// over a baseline mean of 0), which counts as reaching every configured threshold.
    pub effect: Option<f64>,
    pub effect_measure: EffectMeasure,
    /// `high`/`low` with the effect beyond `critical_*` (an undefined effect counts as
    /// beyond a configured one): Kayenta's critical effect size. It is not the metric being
    /// `critical`, which the caller holds; with the default thresholds of 1.0 every
    /// mean-ratio `high` qualifies, exactly as in Kayenta for a critical metric.
    pub critical_effect: bool,
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
        critical_effect: false,
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
    let ci = if pair.both_constant() {
        let diff = pair.canary()[0] - pair.baseline()[0];
        ShiftInterval {
            lower: diff,
            upper: diff,
            estimate: diff,
            confidence: cfg.confidence,
            lower_open: false,
            upper_open: false,
        }
    } else {
        match pair.shift_interval(cfg.confidence) {
            Some(ci) => ci,
            None => {
                out.reason = "the confidence interval could not be computed".into();
                return out;
            }
        }
    };
    let effect = match cfg.effect_size {
        EffectMeasure::MeanRatio => pair.mean_ratio(),
        EffectMeasure::Cles => Some(test.cles()),
    };
    let margin = cfg.tolerance * ci.estimate.abs();
    let may_rise = matches!(cfg.direction, Direction::Increase | Direction::Either);
    let may_fall = matches!(cfg.direction, Direction::Decrease | Direction::Either);
    // An open bound lying exactly on the band is beyond it: see `stats::shift`, "The value
    // *at* a jump" — the case of zero-heavy samples whose interval collapses onto 0.
    let above = ci.lower > margin || (ci.lower == margin && ci.lower_open);
    let below = ci.upper < -margin || (ci.upper == -margin && ci.upper_open);
    // With too few samples for the requested confidence, R (and so Kayenta) reports an end
    // of the range of pairwise differences as the bound ("requested conf.level not
    // achievable"): 3 canary samples all above 3 baseline ones give an "interval" above 0 at
    // 95 % while the test itself has p = 0.08. Such a bound is not a confidence bound, so a
    // verdict also needs the test at shift 0 to reject at the same level.
    let rejects = test.p_value < 1.0 - cfg.confidence;
    let high =
        may_rise && above && rejects && reaches(effect, cfg.allowed_increase, Bound::AtLeast);
    let low = may_fall && below && rejects && reaches(effect, cfg.allowed_decrease, Bound::AtMost);
    let words = Words {
        cfg,
        ci: &ci,
        margin,
        effect,
        canary_mean: mean(pair.canary()),
        baseline_mean: mean(pair.baseline()),
    };
    let (classification, critical_effect, reason) = if high {
        let critical = reaches(effect, cfg.critical_increase, Bound::AtLeast);
        let reason = format!(
            "canary is higher: {}, and {}",
            words.interval(Side::Above),
            words.effect(cfg.allowed_increase, "allowed increase"),
        );
        (Classification::High, critical, reason)
    } else if low {
        let critical = reaches(effect, cfg.critical_decrease, Bound::AtMost);
        let reason = format!(
            "canary is lower: {}, and {}",
            words.interval(Side::Below),
            words.effect(cfg.allowed_decrease, "allowed decrease"),
        );
        (Classification::Low, critical, reason)
    } else {
        let unreachable = if (above || below) && !rejects {
            format!(
                "{} canary and {} baseline samples cannot reach {}% confidence, so the \
                 interval is only the range of differences; ",
                pair.canary().len(),
                pair.baseline().len(),
                cfg.confidence * 100.0
            )
        } else {
            String::new()
        };
        let reason = format!(
            "no change beyond the limits: {unreachable}the {}% interval of the shift is \
             [{:.6e}, {:.6e}] (estimate {:.6e}, p = {:.4}) against a tolerance of \
             ±{margin:.6e}, {} (allowed increase {}, decrease {}, direction {})",
            cfg.confidence * 100.0,
            ci.lower,
            ci.upper,
            ci.estimate,
            test.p_value,
            words.effect_value(),
            cfg.allowed_increase,
            cfg.allowed_decrease,
            direction_word(cfg.direction)
        );
        (Classification::Pass, false, reason)
    };
    out.classification = classification;
    out.critical_effect = critical_effect;
    out.reason = reason;
    out.p_value = Some(test.p_value);
    out.interval = Some((ci.lower, ci.upper));
    out.estimate = Some(ci.estimate);
    out.effect = effect;
    out
}

#[derive(Clone, Copy)]
enum Bound {
    AtLeast,
    AtMost,
}

/// Whether the effect reaches a threshold. An undefined effect (a mean ratio over a baseline
/// mean of 0) reaches every configured threshold, as in Kayenta: the shift is significant and
/// beyond the tolerance, and "no ratio can be computed" is not evidence that it is small. An
/// infinite threshold is how the rule schema says "not configured" (`critical_increase` unset),
/// and nothing reaches it.
fn reaches(effect: Option<f64>, threshold: f64, bound: Bound) -> bool {
    match (effect, bound) {
        (None, _) => threshold.is_finite(),
        (Some(e), Bound::AtLeast) => e >= threshold,
        (Some(e), Bound::AtMost) => e <= threshold,
    }
}

#[derive(Clone, Copy)]
enum Side {
    Above,
    Below,
}

/// The numbers of one verdict, worded for its reason.
struct Words<'a> {
    cfg: &'a ClassifierConfig,
    ci: &'a ShiftInterval,
    margin: f64,
    effect: Option<f64>,
    canary_mean: Option<f64>,
    baseline_mean: Option<f64>,
}

impl Words<'_> {
    fn measure(&self) -> &'static str {
        match self.cfg.effect_size {
            EffectMeasure::MeanRatio => "mean ratio",
            EffectMeasure::Cles => "CLES",
        }
    }

    fn interval(&self, side: Side) -> String {
        let (pct, lo, hi, m) = (
            self.cfg.confidence * 100.0,
            self.ci.lower,
            self.ci.upper,
            self.margin,
        );
        let (word, sign, edge, open) = match side {
            Side::Above => ("above", "", lo, self.ci.lower_open && lo == m),
            Side::Below => ("below", "-", hi, self.ci.upper_open && hi == -m),
        };
        if open {
            format!(
                "the {pct}% interval of the shift [{lo:.6e}, {hi:.6e}] sits on the tolerance \
                 {sign}{m:.6e} but excludes {edge:.6e} itself, because the rank-sum test at that \
                 shift still rejects (the samples are heavily tied there, e.g. mostly zeros), so \
                 every plausible shift lies {word} it"
            )
        } else {
            format!(
                "the {pct}% interval of the shift [{lo:.6e}, {hi:.6e}] lies {word} the tolerance \
                 {sign}{m:.6e}"
            )
        }
    }

    fn effect(&self, threshold: f64, name: &str) -> String {
        match self.effect {
            Some(e) => format!(
                "the {} {e:.4} reaches the {name} {threshold}",
                self.measure()
            ),
            None => format!(
                "{}, which counts as reaching the {name} {threshold} (as in Kayenta)",
                self.effect_value()
            ),
        }
    }

    fn effect_value(&self) -> String {
        match (self.effect, self.canary_mean, self.baseline_mean) {
            (Some(e), _, _) => format!("{} {e:.4}", self.measure()),
            (None, Some(c), Some(b)) => {
                format!("the mean ratio is undefined (canary mean {c:.6e}, baseline mean {b:.6e})")
            }
            (None, _, _) => "the mean ratio is undefined".to_string(),
        }
    }
}

fn direction_word(d: Direction) -> &'static str {
    match d {
        Direction::Increase => "increase",
        Direction::Decrease => "decrease",
        Direction::Either => "either",
    }
}
