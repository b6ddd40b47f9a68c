//! A rule's metric as users write it: one signal, its query and the lines it must not cross.
//! Split from `schema` (the rule file's shape) to keep each under the file budget; `schema`
//! re-exports everything here, so `rules::schema::MetricSpec` stays the path.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

use super::schema::opt_duration;
use super::shared::Text;
use crate::verdict::Direction;
use crate::verdict::{ClassifierConfig, EffectMeasure, NanStrategy, OutlierStrategy};

/// How a metric is compared with the baseline beyond fixed thresholds.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Compare {
    #[default]
    None,
    MannWhitney,
}

/// One signal: a PromQL template plus the lines it must not cross.
///
/// `PartialEq` is what lets rules share a metric (`rules::shared::Interner`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MetricSpec {
    pub name: String,
    /// PromQL template for a window metric. Sequential metrics give `events`/`requests` (or
    /// `histogram`/`slower_than`) instead.
    #[serde(default)]
    pub query: Option<Spanned<Text>>,
    /// `sequential`: the anytime-valid test on counts (see `judge::sequential`).
    #[serde(default)]
    pub test: Option<TestKind>,
    /// Counter expressions (per series, not aggregated) of bad events and of all requests.
    #[serde(default)]
    pub events: Option<Box<Spanned<Text>>>,
    #[serde(default)]
    pub requests: Option<Box<Spanned<Text>>>,
    /// A latency histogram's base name: requests slower than `slower_than` seconds are events.
    #[serde(default)]
    pub histogram: Option<Box<Spanned<Text>>>,
    #[serde(default)]
    pub slower_than: Option<f64>,
    /// Sequential test: tolerated excess ratio (null is canary <= (1 + margin) x baseline).
    #[serde(default)]
    pub margin: Option<f64>,
    /// Sequential test: chance of ever failing a healthy canary over the whole rollout.
    #[serde(default)]
    pub alpha: Option<f64>,
    /// Sequential test: alternative rate ratios mixed.
    #[serde(default)]
    pub grid: Option<Vec<f64>>,
    /// Sequential test: the most one tick may multiply the evidence by (bounds what a blip of
    /// seconds can do; see `judge::sequential::SequentialConfig::max_tick_factor`).
    #[serde(default)]
    pub max_tick_factor: Option<f64>,
    /// `test: sequential_histogram`: the latency-scale margin the null tightens to, and how
    /// long that takes (`judge::sequential_hist_scale`).
    #[serde(default)]
    pub settled_margin: Option<f64>,
    #[serde(default, with = "opt_duration")]
    pub settle: Option<Duration>,
    #[serde(default)]
    pub direction: Direction,
    #[serde(default)]
    pub rollback_above: Option<f64>,
    #[serde(default)]
    pub rollback_below: Option<f64>,
    #[serde(default)]
    pub warn_above: Option<f64>,
    #[serde(default)]
    pub warn_below: Option<f64>,
    #[serde(default)]
    pub max_ratio: Option<f64>,
    /// canary − baseline beyond this (in the worse direction) fails; for gauges.
    #[serde(default)]
    pub max_difference: Option<f64>,
    /// A rollback line or difference must be crossed this long before it counts, as
    /// Prometheus' `for:`; gauges are autocorrelated, so persistence replaces statistics.
    #[serde(default, rename = "for", with = "opt_duration")]
    pub hold_for: Option<Duration>,
    #[serde(default)]
    pub compare: Compare,
    #[serde(default)]
    pub critical: bool,
    /// Practical effect size for the statistical comparison (mean ratio). Defaults to 1.1 /
    /// 0.9 with `compare: mann_whitney`: canary and baseline differ by a few percent anyway,
    /// so significance alone must never fail a rollout.
    #[serde(default)]
    pub allowed_increase: Option<f64>,
    #[serde(default)]
    pub allowed_decrease: Option<f64>,
    /// An effect beyond these rolls back at once (Kayenta's critical effect sizes).
    #[serde(default)]
    pub critical_increase: Option<f64>,
    #[serde(default)]
    pub critical_decrease: Option<f64>,
    /// Kayenta classifier options (snake_case of Kayenta's names); see `judge::classifier`.
    #[serde(default)]
    pub nan_strategy: Option<NanStrategy>,
    #[serde(default)]
    pub outliers: Option<OutliersMode>,
    #[serde(default)]
    pub outlier_factor: Option<f64>,
    #[serde(default)]
    pub tolerance: Option<f64>,
    #[serde(default)]
    pub confidence: Option<f64>,
    #[serde(default)]
    pub effect_size: Option<EffectMeasure>,
    /// No data fails the metric (`nodata_fail`) instead of being `nodata`.
    #[serde(default)]
    pub must_have_data: bool,
    /// Judged and shown, but left out of the score and of every decision.
    #[serde(default)]
    pub muted: bool,
    /// Score group (Kayenta's metric groups); defaults to the metric's own name.
    #[serde(default)]
    pub group: Option<String>,
    /// Share of the score; Kayenta weights metrics equally unless told otherwise.
    #[serde(default = "one")]
    pub weight: f64,
    /// A metric template (`rules::catalog`) this metric is built on: its query and defaults,
    /// with every key set here overriding the template's. Kept after resolution, so metrics
    /// built on one template can be recognised as one query shape.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<Spanned<String>>,
    /// `name` as the checks judged of this metric carry it ([`MetricSpec::shared_name`]).
    #[serde(skip)]
    pub shared: SharedName,
}

/// A metric's name made once and shared by every check judged of it: each live rollout keeps
/// its last tick's checks, and a copy of the name in each was a string per metric per rollout.
/// A cache of `name`, so it takes no part in equality (rules still share equal metrics).
#[derive(Clone, Default)]
pub struct SharedName(OnceLock<Arc<str>>);

impl PartialEq for SharedName {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for SharedName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedName")
    }
}

/// Which test a metric runs beyond its lines.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TestKind {
    Sequential,
    /// The anytime-valid test over every bucket edge of `histogram` (`judge::sequential_hist`).
    SequentialHistogram,
}

/// What a metric measures, resolved from its keys.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MetricKind<'a> {
    /// A range query judged by lines, ratio and the classifier.
    Window(&'a str),
    /// Counters of events and requests, judged by the e-process.
    Counts { events: &'a str, requests: &'a str },
    /// A histogram: requests slower than `le` are the events.
    Slow { histogram: &'a str, le: f64 },
    /// A histogram tested at every finite bucket edge at once.
    Histogram { histogram: &'a str },
    /// Keys that do not make a metric; validation reports it.
    Invalid,
}

/// `outliers: keep | remove` (with `outlier_factor`, Kayenta's default 3.0).
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OutliersMode {
    Keep,
    Remove,
}

impl MetricSpec {
    /// The name, shared ([`SharedName`]). Checked against `name` on every call, so a name
    /// changed after it was first shared is never given under the old one.
    pub fn shared_name(&self) -> Arc<str> {
        let kept = self.shared.0.get_or_init(|| Arc::from(self.name.as_str()));
        if **kept == *self.name {
            kept.clone()
        } else {
            Arc::from(self.name.as_str())
        }
    }

    /// The classifier settings this metric asks for, with canaryd's defaults filled in.
    pub fn classifier_config(&self) -> ClassifierConfig {
        let d = ClassifierConfig::default();
        let outliers = match self.outliers {
            Some(OutliersMode::Keep) => OutlierStrategy::Keep,
            Some(OutliersMode::Remove) | None => match (self.outlier_factor, d.outliers) {
                (Some(factor), _) => OutlierStrategy::Remove { factor },
                (None, default) => default,
            },
        };
        ClassifierConfig {
            direction: self.direction,
            nan_strategy: self.nan_strategy.unwrap_or(d.nan_strategy),
            outliers,
            tolerance: self.tolerance.unwrap_or(d.tolerance),
            confidence: self.confidence.unwrap_or(d.confidence),
            effect_size: self.effect_size.unwrap_or(d.effect_size),
            allowed_increase: self.allowed_increase.unwrap_or(DEFAULT_ALLOWED_INCREASE),
            allowed_decrease: self.allowed_decrease.unwrap_or(DEFAULT_ALLOWED_DECREASE),
            critical_increase: self.critical_increase.unwrap_or(f64::INFINITY),
            critical_decrease: self.critical_decrease.unwrap_or(f64::NEG_INFINITY),
            must_have_data: self.must_have_data,
        }
    }

    pub fn kind(&self) -> MetricKind<'_> {
        fn text(s: Option<&Spanned<Text>>) -> Option<&str> {
            s.map(|s| &*s.value)
        }
        match (self.test, text(self.query.as_ref())) {
            (None, Some(q)) => MetricKind::Window(q),
            (Some(TestKind::Sequential), None) => match (
                text(self.events.as_deref()),
                text(self.requests.as_deref()),
                text(self.histogram.as_deref()),
                self.slower_than,
            ) {
                (Some(events), Some(requests), None, None) => {
                    MetricKind::Counts { events, requests }
                }
                (None, None, Some(histogram), Some(le)) => MetricKind::Slow { histogram, le },
                _ => MetricKind::Invalid,
            },
            (Some(TestKind::SequentialHistogram), None) => match (
                text(self.events.as_deref()),
                text(self.requests.as_deref()),
                text(self.histogram.as_deref()),
                self.slower_than,
            ) {
                (None, None, Some(histogram), None) => MetricKind::Histogram { histogram },
                _ => MetricKind::Invalid,
            },
            _ => MetricKind::Invalid,
        }
    }

    pub fn is_sequential(&self) -> bool {
        matches!(
            self.test,
            Some(TestKind::Sequential | TestKind::SequentialHistogram)
        )
    }

    /// The e-process settings; `metrics` is the rule's count of sequential metrics.
    pub fn sequential_config(&self, metrics: usize) -> crate::verdict::SequentialConfig {
        let d = crate::verdict::SequentialConfig::default();
        crate::verdict::SequentialConfig {
            margin: self.margin.unwrap_or(d.margin),
            alpha: self.alpha.unwrap_or(d.alpha),
            grid: self.grid.clone().unwrap_or(d.grid),
            metrics,
            max_tick_factor: self.max_tick_factor,
            settled_margin: self.settled_margin,
            settle_ticks: 0,
        }
    }

    /// [`MetricSpec::sequential_config`] for a rule judged every `interval`: `settle` counted
    /// in ticks.
    pub fn sequential_config_every(
        &self,
        metrics: usize,
        interval: Duration,
    ) -> crate::verdict::SequentialConfig {
        let ticks = match self.settle {
            Some(settle) if !interval.is_zero() => {
                (settle.as_secs_f64() / interval.as_secs_f64()).ceil() as u64
            }
            _ => 0,
        };
        crate::verdict::SequentialConfig {
            settle_ticks: ticks,
            ..self.sequential_config(metrics)
        }
    }

    pub fn group(&self) -> &str {
        self.group.as_deref().unwrap_or(&self.name)
    }
}

/// See [`MetricSpec::allowed_increase`].
pub const DEFAULT_ALLOWED_INCREASE: f64 = 1.1;
pub const DEFAULT_ALLOWED_DECREASE: f64 = 0.9;

fn one() -> f64 {
    1.0
}
