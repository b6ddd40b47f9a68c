//! canaryd's per-rule series (`canaryd_check_verdicts_total{rule,metric,verdict}`,
//! `canaryd_metric_threshold{rule,metric,kind}`, `canaryd_promotions_total{rule}` and
//! `canaryd_rollbacks_total{rule,reason}`), kept as one small entry per rule and metric
//! instead of one recorder series per label set.
//!
//! With a rule file per service (the scale bench's 3,000 rules, issue 14) these were ~20
//! recorder series per rule, each a key with owned label strings, a hash entry and a shared
//! atomic: heaptrack put 14.7 MB of canaryd's peak at ~2,100 live rollouts under
//! `telemetry::record_tick`, plus as much again each time `/metrics` was rendered, for numbers
//! that fit in a few words per metric. The promotion and rollback counters, six recorder series
//! per rule started at 0 (3.1 MB at 2,000 rules), are six numbers here. Same names, labels and
//! values as before; rendered after the recorder's text ([`render`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, MutexGuard, OnceLock};

use super::chunks::{Cursor, head, section};
use super::rollouts::{Names, esc, num};

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

/// The rollback reason label values, in the order of [`Outcomes`] after the promotions.
pub(crate) const ROLLBACK_REASONS: [&str; 5] = ["metric", "abort", "alert", "health", "hook"];

type Counts = [u64; 5];
/// Promotions, then rollbacks by [`ROLLBACK_REASONS`].
type Outcomes = [u64; 6];
type Thresholds = [Option<f64>; 5];

/// One metric of one rule: its verdict counts and its thresholds in one entry, its name an
/// index into [`Registry::names`]. Verdicts and thresholds were two sorted `Vec`s per rule keyed
/// by an owned name each (56 and 96 bytes an entry, plus two names: ~0.8 KB a rule of four
/// metrics, heaptrack at 10,000 rules); one entry is 88 bytes.
#[derive(Debug, Default, Clone, Copy)]
struct MetricSeries {
    name: u32,
    /// Which `thresholds` were ever set, bit `i` for `KINDS[i]`: a threshold shows once set.
    set: u8,
    counts: Counts,
    thresholds: [f64; 5],
}

/// Everything kept for one rule, under one key (three maps each owned a copy of the name).
#[derive(Debug, Default)]
struct RuleSeries {
    /// Promotions and rollbacks, once the rule is known or one is counted: a rule only ticked
    /// (a snapshot's rule no longer in the files) shows no outcome series, as before.
    outcomes: Option<Outcomes>,
    /// Sorted by metric name: verdicts show once counted, thresholds once set.
    metrics: Vec<MetricSeries>,
}

#[derive(Debug, Default)]
pub(crate) struct Registry {
    rules: BTreeMap<String, RuleSeries>,
    /// Metric names, once each.
    names: Names,
    /// Whether any rule has outcomes, verdicts or thresholds: the family's head shows then.
    any_outcomes: bool,
    any_verdicts: bool,
    any_thresholds: bool,
}

impl Registry {
    /// Counts one verdict (an index into [`VERDICTS`]) of `metric` under `rule`.
    pub(crate) fn count_verdict(&mut self, rule: &str, metric: &str, verdict: usize) {
        self.any_verdicts = true;
        if let Some(c) = self.metric(rule, metric).counts.get_mut(verdict) {
            *c += 1;
        }
    }

    /// Sets the thresholds (by [`KINDS`]) of `metric` under `rule`; a kind without a value
    /// keeps the one set before, as the recorder's gauge did.
    pub(crate) fn set_thresholds(&mut self, rule: &str, metric: &str, values: Thresholds) {
        self.any_thresholds = true;
        let kept = self.metric(rule, metric);
        for (i, v) in values.into_iter().enumerate() {
            if let (Some(v), Some(k)) = (v, kept.thresholds.get_mut(i)) {
                *k = v;
                kept.set |= 1 << i;
            }
        }
    }

    /// The entry of `metric` under `rule`, added (sorted by name) when new.
    fn metric(&mut self, rule: &str, metric: &str) -> &mut MetricSeries {
        let name = self.names.id(metric);
        let names = &self.names;
        let metrics = &mut entry(&mut self.rules, rule).metrics;
        let i = match metrics.binary_search_by(|m| names.get(m.name).cmp(metric)) {
            Ok(i) => i,
            Err(i) => {
                let new = MetricSeries {
                    name,
                    ..MetricSeries::default()
                };
                metrics.insert(i, new);
                i
            }
        };
        &mut metrics[i]
    }

    /// The outcome counters of `rule`, shown from 0 from now on.
    fn outcomes(&mut self, rule: &str) -> &mut Outcomes {
        self.any_outcomes = true;
        entry(&mut self.rules, rule)
            .outcomes
            .get_or_insert_default()
    }

    /// Shows `rule`'s promotion and rollback counters, at 0 until counted.
    pub(crate) fn know_rule(&mut self, rule: &str) {
        self.outcomes(rule);
    }

    /// Counts a promotion of a rollout of `rule`.
    pub(crate) fn count_promotion(&mut self, rule: &str) {
        self.outcomes(rule)[0] += 1;
    }

    /// Counts a rollback of a rollout of `rule` for `reason` (one of [`ROLLBACK_REASONS`]).
    pub(crate) fn count_rollback(&mut self, rule: &str, reason: &str) {
        let Some(i) = ROLLBACK_REASONS.iter().position(|r| *r == reason) else {
            return;
        };
        if let Some(c) = self.outcomes(rule).get_mut(i + 1) {
            *c += 1;
        }
    }

    #[cfg(test)]
    pub(crate) fn render(&self, out: &mut String) {
        let mut cursor = Cursor::default();
        while !self.render_some(&mut cursor, out, usize::MAX) {}
    }

    /// Renders from `cursor` on until `out` holds `budget` bytes or every series is written;
    /// `true` when they are ([`super::chunks`]). Families in [`FAMILIES`]' order; each rule by
    /// rule in name order.
    pub(crate) fn render_some(&self, cursor: &mut Cursor, out: &mut String, budget: usize) -> bool {
        while let Some(f) = FAMILIES.get(cursor.family) {
            let done = section(
                &self.rules,
                cursor,
                out,
                budget,
                |out| {
                    if (f.shown)(self) {
                        head(out, f.name, f.help, f.kind);
                    }
                },
                |out, rule, series| (f.lines)(out, f.name, rule, series, &self.names),
            );
            if !done {
                return false;
            }
        }
        true
    }
}

/// One family of this registry: its head, whether the head shows, and a rule's lines.
struct Family {
    name: &'static str,
    help: &'static str,
    kind: &'static str,
    shown: fn(&Registry) -> bool,
    /// Writes the lines of one rule (`name` is the family's).
    lines: fn(&mut String, &str, &str, &RuleSeries, &Names),
}

/// The families in the order `/metrics` shows them: promotions, rollbacks, verdicts,
/// thresholds. Each is written the same way (a head if any rule has one, then rule by rule),
/// so only what differs is said here.
const FAMILIES: [Family; 4] = [
    Family {
        name: "canaryd_promotions_total",
        help: "Rollouts promoted",
        kind: "counter",
        shown: |r| r.any_outcomes,
        lines: |out, name, rule, series, _| {
            if let Some(counts) = &series.outcomes {
                let _ = writeln!(out, "{name}{{rule=\"{}\"}} {}", esc(rule), counts[0]);
            }
        },
    },
    Family {
        name: "canaryd_rollbacks_total",
        help: "Rollbacks decided, by reason kind",
        kind: "counter",
        shown: |r| r.any_outcomes,
        lines: |out, name, rule, series, _| {
            let Some(counts) = &series.outcomes else {
                return;
            };
            for (reason, n) in ROLLBACK_REASONS.iter().zip(&counts[1..]) {
                let _ = writeln!(
                    out,
                    "{name}{{rule=\"{}\",reason=\"{reason}\"}} {n}",
                    esc(rule),
                );
            }
        },
    },
    Family {
        name: "canaryd_check_verdicts_total",
        help: "Check verdicts by rule, metric and verdict",
        kind: "counter",
        shown: |r| r.any_verdicts,
        lines: |out, name, rule, series, names| {
            for m in &series.metrics {
                for (verdict, n) in VERDICTS.iter().zip(&m.counts) {
                    if *n > 0 {
                        let _ = writeln!(
                            out,
                            "{name}{{rule=\"{}\",metric=\"{}\",verdict=\"{verdict}\"}} {n}",
                            esc(rule),
                            esc(names.get(m.name)),
                        );
                    }
                }
            }
        },
    },
    Family {
        name: "canaryd_metric_threshold",
        help: "Threshold a metric is held against, by kind",
        kind: "gauge",
        shown: |r| r.any_thresholds,
        lines: |out, name, rule, series, names| {
            for m in &series.metrics {
                for (i, (kind, v)) in KINDS.iter().zip(&m.thresholds).enumerate() {
                    if m.set & (1 << i) != 0 {
                        let _ = writeln!(
                            out,
                            "{name}{{rule=\"{}\",metric=\"{}\",kind=\"{kind}\"}} {}",
                            esc(rule),
                            esc(names.get(m.name)),
                            num(*v)
                        );
                    }
                }
            }
        },
    },
];

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

    /// Rendered whole and in chunks of any size, the text is the same, byte for byte.
    #[test]
    fn chunks_of_any_size_concatenate_to_the_whole_exposition() {
        let mut r = Registry::default();
        for i in 0..200 {
            let rule = format!("rule-{i:03}");
            r.know_rule(&rule);
            r.count_verdict(&rule, "errors", i % 5);
            r.count_verdict(&rule, "p95", 0);
            r.set_thresholds(&rule, "errors", [Some(0.05), None, Some(0.01), None, None]);
        }
        let mut whole = String::new();
        r.render(&mut whole);
        for budget in [1, 100, 4096] {
            let (text, chunks) =
                super::super::chunks::render_in_chunks(&whole, budget, |c, out, b| {
                    r.render_some(c, out, b)
                });
            assert_eq!(text, whole, "budget {budget}");
            assert!(chunks > 1, "budget {budget}");
        }
        for head in [
            "# TYPE canaryd_promotions_total counter",
            "# TYPE canaryd_rollbacks_total counter",
            "# TYPE canaryd_check_verdicts_total counter",
            "# TYPE canaryd_metric_threshold gauge",
        ] {
            assert_eq!(whole.matches(head).count(), 1, "{head}");
        }
    }

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

    /// Verdicts and thresholds share one entry per rule and metric, and names one table: the
    /// metrics still render sorted by name whatever order they came in, each family only with
    /// what it was given, and a rule only ticked shows no outcome series.
    #[test]
    fn one_entry_per_metric_renders_each_family_sorted_by_name() {
        let mut r = Registry::default();
        r.count_verdict("b", "p95", 2);
        r.count_verdict("b", "errors", 0);
        r.set_thresholds("a", "p95", [None, Some(f64::NAN), None, None, None]);
        r.set_thresholds("a", "cpu", [Some(1.5), None, None, None, None]);
        r.count_verdict("a", "cpu", 1);
        r.know_rule("c");
        let mut text = String::new();
        r.render(&mut text);
        let expected = [
            "# HELP canaryd_promotions_total Rollouts promoted",
            "# TYPE canaryd_promotions_total counter",
            r#"canaryd_promotions_total{rule="c"} 0"#,
            "# HELP canaryd_rollbacks_total Rollbacks decided, by reason kind",
            "# TYPE canaryd_rollbacks_total counter",
            r#"canaryd_rollbacks_total{rule="c",reason="metric"} 0"#,
            r#"canaryd_rollbacks_total{rule="c",reason="abort"} 0"#,
            r#"canaryd_rollbacks_total{rule="c",reason="alert"} 0"#,
            r#"canaryd_rollbacks_total{rule="c",reason="health"} 0"#,
            r#"canaryd_rollbacks_total{rule="c",reason="hook"} 0"#,
            "# HELP canaryd_check_verdicts_total Check verdicts by rule, metric and verdict",
            "# TYPE canaryd_check_verdicts_total counter",
            r#"canaryd_check_verdicts_total{rule="a",metric="cpu",verdict="warn"} 1"#,
            r#"canaryd_check_verdicts_total{rule="b",metric="errors",verdict="pass"} 1"#,
            r#"canaryd_check_verdicts_total{rule="b",metric="p95",verdict="fail"} 1"#,
            "# HELP canaryd_metric_threshold Threshold a metric is held against, by kind",
            "# TYPE canaryd_metric_threshold gauge",
            r#"canaryd_metric_threshold{rule="a",metric="cpu",kind="rollback_above"} 1.5"#,
            r#"canaryd_metric_threshold{rule="a",metric="p95",kind="rollback_below"} NaN"#,
        ];
        assert_eq!(text.lines().collect::<Vec<_>>(), expected);
    }

    /// The exposition the recorder gave these counters, line for line: every known rule at 0
    /// from the start, counted on their edges, label values escaped.
    #[test]
    fn promotions_and_rollbacks_show_every_known_rule_from_zero() {
        let mut r = Registry::default();
        let mut text = String::new();
        r.render(&mut text);
        assert_eq!(text, "", "nothing before the rules are known");
        r.know_rule("api");
        r.know_rule("web\"1");
        r.count_promotion("api");
        r.count_rollback("web\"1", "alert");
        r.count_rollback("web\"1", "alert");
        r.count_rollback("web\"1", "hook");
        r.count_rollback("late", "abort");
        r.render(&mut text);
        let expected = [
            "# HELP canaryd_promotions_total Rollouts promoted",
            "# TYPE canaryd_promotions_total counter",
            r#"canaryd_promotions_total{rule="api"} 1"#,
            r#"canaryd_promotions_total{rule="late"} 0"#,
            r#"canaryd_promotions_total{rule="web\"1"} 0"#,
            "# HELP canaryd_rollbacks_total Rollbacks decided, by reason kind",
            "# TYPE canaryd_rollbacks_total counter",
            r#"canaryd_rollbacks_total{rule="api",reason="metric"} 0"#,
            r#"canaryd_rollbacks_total{rule="api",reason="abort"} 0"#,
            r#"canaryd_rollbacks_total{rule="api",reason="alert"} 0"#,
            r#"canaryd_rollbacks_total{rule="api",reason="health"} 0"#,
            r#"canaryd_rollbacks_total{rule="api",reason="hook"} 0"#,
            r#"canaryd_rollbacks_total{rule="late",reason="metric"} 0"#,
            r#"canaryd_rollbacks_total{rule="late",reason="abort"} 1"#,
            r#"canaryd_rollbacks_total{rule="late",reason="alert"} 0"#,
            r#"canaryd_rollbacks_total{rule="late",reason="health"} 0"#,
            r#"canaryd_rollbacks_total{rule="late",reason="hook"} 0"#,
            r#"canaryd_rollbacks_total{rule="web\"1",reason="metric"} 0"#,
            r#"canaryd_rollbacks_total{rule="web\"1",reason="abort"} 0"#,
            r#"canaryd_rollbacks_total{rule="web\"1",reason="alert"} 2"#,
            r#"canaryd_rollbacks_total{rule="web\"1",reason="health"} 0"#,
            r#"canaryd_rollbacks_total{rule="web\"1",reason="hook"} 1"#,
        ];
        assert_eq!(text.lines().collect::<Vec<_>>(), expected);
    }
}
