//! canaryd's per-rule series (`canaryd_check_verdicts_total{rule,metric,verdict}` and
//! `canaryd_metric_threshold{rule,metric,kind}`), kept as one small entry per rule and metric
//! instead of one recorder series per label set.
//!
//! With a rule file per service (the scale bench's 3,000 rules, issue 14) these were ~20
//! recorder series per rule, each a key with owned label strings, a hash entry and a shared
//! atomic: heaptrack put 14.7 MB of canaryd's peak at ~2,100 live rollouts under
//! `telemetry::record_tick`, plus as much again each time `/metrics` was rendered, for numbers
//! that fit in a few words per metric. Same names, labels and values as before; rendered after
//! the recorder's text ([`render`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, MutexGuard, OnceLock};

use super::rollouts::{esc, num};

/// The verdict label values, in the order of [`Counts`].
pub(crate) const VERDICTS: [&str; 5] = ["pass", "warn", "fail", "nodata", "error"];

/// The threshold kinds, in the order of [`Thresholds`].
pub(crate) const KINDS: [&str; 5] = [
    "rollback_above",
    "rollback_below",
    "warn_above",
    "warn_below",
    "max_ratio",
];

type Counts = [u64; 5];
type Thresholds = [Option<f64>; 5];

#[derive(Debug, Default)]
pub(crate) struct Registry {
    /// By rule, then metric: verdicts counted so far (a series shows once counted).
    verdicts: BTreeMap<String, BTreeMap<String, Counts>>,
    /// By rule, then metric: the thresholds the last tick held the metric against.
    thresholds: BTreeMap<String, BTreeMap<String, Thresholds>>,
}

impl Registry {
    /// Counts one verdict (an index into [`VERDICTS`]) of `metric` under `rule`.
    pub(crate) fn count_verdict(&mut self, rule: &str, metric: &str, verdict: usize) {
        let by_metric = entry(&mut self.verdicts, rule);
        let counts = entry(by_metric, metric);
        if let Some(c) = counts.get_mut(verdict) {
            *c += 1;
        }
    }

    /// Sets the thresholds (by [`KINDS`]) of `metric` under `rule`; a kind without a value
    /// keeps the one set before, as the recorder's gauge did.
    pub(crate) fn set_thresholds(&mut self, rule: &str, metric: &str, values: Thresholds) {
        let by_metric = entry(&mut self.thresholds, rule);
        let kept = entry(by_metric, metric);
        for (k, v) in kept.iter_mut().zip(values) {
            if v.is_some() {
                *k = v;
            }
        }
    }

    pub(crate) fn render(&self, out: &mut String) {
        if !self.verdicts.is_empty() {
            head(
                out,
                "canaryd_check_verdicts_total",
                "Check verdicts by rule, metric and verdict",
                "counter",
            );
        }
        for (rule, metrics) in &self.verdicts {
            for (metric, counts) in metrics {
                for (verdict, n) in VERDICTS.iter().zip(counts) {
                    if *n > 0 {
                        let _ = writeln!(
                            out,
                            "canaryd_check_verdicts_total{{rule=\"{}\",metric=\"{}\",verdict=\"{verdict}\"}} {n}",
                            esc(rule),
                            esc(metric),
                        );
                    }
                }
            }
        }
        if !self.thresholds.is_empty() {
            head(
                out,
                "canaryd_metric_threshold",
                "Threshold a metric is held against, by kind",
                "gauge",
            );
        }
        for (rule, metrics) in &self.thresholds {
            for (metric, values) in metrics {
                for (kind, v) in KINDS.iter().zip(values) {
                    if let Some(v) = v {
                        let _ = writeln!(
                            out,
                            "canaryd_metric_threshold{{rule=\"{}\",metric=\"{}\",kind=\"{kind}\"}} {}",
                            esc(rule),
                            esc(metric),
                            num(*v)
                        );
                    }
                }
            }
        }
    }
}

fn head(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// The entry for `key`, allocating its name only the first time.
fn entry<'m, V: Default>(map: &'m mut BTreeMap<String, V>, key: &str) -> &'m mut V {
    if !map.contains_key(key) {
        map.insert(key.to_string(), V::default());
    }
    map.get_mut(key).expect("inserted above")
}

pub(crate) fn registry() -> MutexGuard<'static, Registry> {
    static REGISTRY: OnceLock<Mutex<Registry>> = OnceLock::new();
    REGISTRY
        .get_or_init(Mutex::default)
        .lock()
        // A panic while holding it left plain numbers behind, still fine to show.
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_count_per_rule_metric_and_verdict_and_show_once_counted() {
        let mut r = Registry::default();
        let mut text = String::new();
        r.render(&mut text);
        assert_eq!(text, "", "nothing before the first tick");
        r.count_verdict("api", "errors", 0);
        r.count_verdict("api", "errors", 0);
        r.count_verdict("api", "errors", 4);
        r.count_verdict("web\"1", "lat\n", 3);
        r.render(&mut text);
        for line in [
            "# TYPE canaryd_check_verdicts_total counter",
            r#"canaryd_check_verdicts_total{rule="api",metric="errors",verdict="pass"} 2"#,
            r#"canaryd_check_verdicts_total{rule="api",metric="errors",verdict="error"} 1"#,
            r#"canaryd_check_verdicts_total{rule="web\"1",metric="lat\n",verdict="nodata"} 1"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in:\n{text}");
        }
        assert!(!text.contains(r#"verdict="warn""#), "{text}");
        assert!(!text.contains("canaryd_metric_threshold"), "{text}");
    }

    #[test]
    fn thresholds_show_the_kinds_set_and_keep_earlier_ones() {
        let mut r = Registry::default();
        r.set_thresholds("api", "errors", [Some(0.05), None, Some(0.01), None, None]);
        r.set_thresholds("api", "errors", [None, None, Some(0.02), None, Some(2.0)]);
        let mut text = String::new();
        r.render(&mut text);
        for line in [
            "# TYPE canaryd_metric_threshold gauge",
            r#"canaryd_metric_threshold{rule="api",metric="errors",kind="rollback_above"} 0.05"#,
            r#"canaryd_metric_threshold{rule="api",metric="errors",kind="warn_above"} 0.02"#,
            r#"canaryd_metric_threshold{rule="api",metric="errors",kind="max_ratio"} 2"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in:\n{text}");
        }
        assert!(!text.contains("rollback_below"), "{text}");
    }
}
