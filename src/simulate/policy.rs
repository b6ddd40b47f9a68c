//! The decision policies the benchmark compares, each reduced to "at which tick would it roll
//! back?". Every policy rolls back on its first failing tick (no `failure_limit`), which is how
//! a critical metric behaves and how the false-rollback guarantee of the sequential test is
//! stated.

use serde::Serialize;

use crate::judge::classifier::classify;
use crate::judge::{sequential::EProcess, sequential::TickCounts};
use crate::verdict::Classification;
use crate::verdict::ClassifierConfig;
use crate::verdict::SequentialConfig;

/// Ticks in the Mann-Whitney window: ten one-minute ratios per side, as a Kayenta analysis
/// of the last ten minutes at a one-minute step sees them.
pub const MANN_WHITNEY_WINDOW: usize = 10;
/// The runbooks' relative line: canary error ratio above twice the baseline's in the tick.
pub const THRESHOLD_RATIO: f64 = 2.0;
/// The runbooks' absolute line: canary error ratio above 5 %.
pub const THRESHOLD_ABSOLUTE: f64 = 0.05;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "policy", rename_all = "snake_case")]
pub enum Policy {
    /// canaryd's e-process with its default settings (α = 0.05, one metric): fails when E
    /// reaches 1/α. Its α is the chance of ever failing a healthy canary, over all ticks.
    Sequential,
    /// Kayenta's classifier on the last `MANN_WHITNEY_WINDOW` per-tick ratios of each side,
    /// repeated every tick once the window is full; fails on `high`. α = 0.02 per look.
    MannWhitney { allowed_increase: f64 },
    /// Fixed lines per tick: canary ratio > 2 × baseline's, or > 5 %.
    Threshold,
}

/// The policies of the benchmark: Kayenta's defaults (allowed increase 1.0) and canaryd's
/// shipped 1.1 for Mann-Whitney.
pub fn policies() -> Vec<Policy> {
    vec![
        Policy::Sequential,
        Policy::MannWhitney {
            allowed_increase: 1.0,
        },
        Policy::MannWhitney {
            allowed_increase: 1.1,
        },
        Policy::Threshold,
    ]
}

impl Policy {
    pub fn name(&self) -> String {
        match self {
            Policy::Sequential => "sequential".into(),
            Policy::MannWhitney { allowed_increase } => {
                format!("mann_whitney (allowed {allowed_increase})")
            }
            Policy::Threshold => "threshold (2x or 5 %)".into(),
        }
    }

    /// The 1-based tick at which this policy first rolls back, or None if it never does.
    pub fn first_rollback(&self, ticks: &[TickCounts]) -> Option<usize> {
        match self {
            Policy::Sequential => sequential(ticks),
            Policy::MannWhitney { allowed_increase } => mann_whitney(ticks, *allowed_increase),
            Policy::Threshold => threshold(ticks),
        }
    }
}

fn sequential(ticks: &[TickCounts]) -> Option<usize> {
    let cfg = SequentialConfig::default();
    let mut e = EProcess::new(&cfg);
    ticks
        .iter()
        .position(|t| {
            e.update(t, cfg.margin);
            e.rejects(&cfg)
        })
        .map(|i| i + 1)
}

/// Events / requests, NaN for a side without requests (the classifier drops NaN).
fn ratio(events: f64, requests: f64) -> f64 {
    if requests > 0.0 {
        events / requests
    } else {
        f64::NAN
    }
}

fn mann_whitney(ticks: &[TickCounts], allowed_increase: f64) -> Option<usize> {
    let cfg = ClassifierConfig {
        allowed_increase,
        ..ClassifierConfig::default()
    };
    let canary: Vec<f64> = ticks
        .iter()
        .map(|t| ratio(t.canary_events, t.canary_requests))
        .collect();
    let baseline: Vec<f64> = ticks
        .iter()
        .map(|t| ratio(t.baseline_events, t.baseline_requests))
        .collect();
    // Only full windows with traffic on both sides are judged: a shorter window would let one
    // tick against one tick "collapse" into a significant difference, and at the 100 % step
    // the baseline serves nothing, so no Kayenta analysis would compare there.
    (MANN_WHITNEY_WINDOW..=ticks.len()).find(|&end| {
        let (c, b) = (
            &canary[end - MANN_WHITNEY_WINDOW..end],
            &baseline[end - MANN_WHITNEY_WINDOW..end],
        );
        !c.iter().chain(b).any(|v| v.is_nan())
            && classify(c, b, &cfg).classification == Classification::High
    })
}

fn threshold(ticks: &[TickCounts]) -> Option<usize> {
    ticks
        .iter()
        .position(|t| {
            if t.canary_requests <= 0.0 {
                return false;
            }
            let c = t.canary_events / t.canary_requests;
            let relative = t.baseline_requests > 0.0
                && c > THRESHOLD_RATIO * t.baseline_events / t.baseline_requests;
            relative || c > THRESHOLD_ABSOLUTE
        })
        .map(|i| i + 1)
}
