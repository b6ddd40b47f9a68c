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

use super::chunks::{Cursor, section};
use super::rollouts::{esc, num, small_entry};

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

#[derive(Debug, Default)]
pub(crate) struct Registry {
    /// By rule, then metric (sorted, [`small_entry`]): verdicts counted so far (a series shows
    /// once counted).
    verdicts: BTreeMap<String, Vec<(Box<str>, Counts)>>,
    /// By rule, then metric (sorted): the thresholds the last tick held the metric against.
    thresholds: BTreeMap<String, Vec<(Box<str>, Thresholds)>>,
    /// By rule: promotions and rollbacks, every known rule shown from 0 so a `rate()` or an
    /// alert on them works before the first incident.
    outcomes: BTreeMap<String, Outcomes>,
}

impl Registry {
    /// Counts one verdict (an index into [`VERDICTS`]) of `metric` under `rule`.
    pub(crate) fn count_verdict(&mut self, rule: &str, metric: &str, verdict: usize) {
        let by_metric = entry(&mut self.verdicts, rule);
        let counts = small_entry(by_metric, |m| (**m).cmp(metric), || Box::from(metric));
        if let Some(c) = counts.get_mut(verdict) {
            *c += 1;
        }
    }

    /// Sets the thresholds (by [`KINDS`]) of `metric` under `rule`; a kind without a value
    /// keeps the one set before, as the recorder's gauge did.
    pub(crate) fn set_thresholds(&mut self, rule: &str, metric: &str, values: Thresholds) {
        let by_metric = entry(&mut self.thresholds, rule);
        let kept = small_entry(by_metric, |m| (**m).cmp(metric), || Box::from(metric));
        for (k, v) in kept.iter_mut().zip(values) {
            if v.is_some() {
                *k = v;
            }
        }
    }

    /// Shows `rule`'s promotion and rollback counters, at 0 until counted.
    pub(crate) fn know_rule(&mut self, rule: &str) {
        entry(&mut self.outcomes, rule);
    }

    /// Counts a promotion of a rollout of `rule`.
    pub(crate) fn count_promotion(&mut self, rule: &str) {
        entry(&mut self.outcomes, rule)[0] += 1;
    }

    /// Counts a rollback of a rollout of `rule` for `reason` (one of [`ROLLBACK_REASONS`]).
    pub(crate) fn count_rollback(&mut self, rule: &str, reason: &str) {
        let Some(i) = ROLLBACK_REASONS.iter().position(|r| *r == reason) else {
            return;
        };
        if let Some(c) = entry(&mut self.outcomes, rule).get_mut(i + 1) {
            *c += 1;
        }
    }

    #[cfg(test)]
    pub(crate) fn render(&self, out: &mut String) {
        let mut cursor = Cursor::default();
        while !self.render_some(&mut cursor, out, usize::MAX) {}
    }

    /// Renders from `cursor` on until `out` holds `budget` bytes or every series is written;
    /// `true` when they are ([`super::chunks`]). Families in the order: promotions, rollbacks,
    /// verdicts, thresholds; each rule by rule in name order.
    pub(crate) fn render_some(&self, cursor: &mut Cursor, out: &mut String, budget: usize) -> bool {
        while cursor.family < 4 {
            let done = match cursor.family {
                0 => section(
                    &self.outcomes,
                    cursor,
                    out,
                    budget,
                    |out| {
                        if !self.outcomes.is_empty() {
                            head(
                                out,
                                "canaryd_promotions_total",
                                "Rollouts promoted",
                                "counter",
                            );
                        }
                    },
                    |out, rule, counts| {
                        let _ = writeln!(
                            out,
                            "canaryd_promotions_total{{rule=\"{}\"}} {}",
                            esc(rule),
                            counts[0]
                        );
                    },
                ),
                1 => section(
                    &self.outcomes,
                    cursor,
                    out,
                    budget,
                    |out| {
                        if !self.outcomes.is_empty() {
                            head(
                                out,
                                "canaryd_rollbacks_total",
                                "Rollbacks decided, by reason kind",
                                "counter",
                            );
                        }
                    },
                    |out, rule, counts| {
                        for (reason, n) in ROLLBACK_REASONS.iter().zip(&counts[1..]) {
                            let _ = writeln!(
                                out,
                                "canaryd_rollbacks_total{{rule=\"{}\",reason=\"{reason}\"}} {n}",
                                esc(rule),
                            );
                        }
                    },
                ),
                2 => section(
                    &self.verdicts,
                    cursor,
                    out,
                    budget,
                    |out| {
                        if !self.verdicts.is_empty() {
                            head(
                                out,
                                "canaryd_check_verdicts_total",
                                "Check verdicts by rule, metric and verdict",
                                "counter",
                            );
                        }
                    },
                    |out, rule, metrics| {
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
                    },
                ),
                _ => section(
                    &self.thresholds,
                    cursor,
                    out,
                    budget,
                    |out| {
                        if !self.thresholds.is_empty() {
                            head(
                                out,
                                "canaryd_metric_threshold",
                                "Threshold a metric is held against, by kind",
                                "gauge",
                            );
                        }
                    },
                    |out, rule, metrics| {
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
                    },
                ),
            };
            if !done {
                return false;
            }
        }
        true
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
            let (mut text, mut cursor, mut chunks) = (String::new(), Cursor::default(), 0);
            loop {
                let mut chunk = String::new();
                let done = r.render_some(&mut cursor, &mut chunk, budget);
                text.push_str(&chunk);
                chunks += 1;
                // Each chunk makes progress: a cursor that does not move fails here, not by
                // filling memory.
                assert!(
                    text.len() <= whole.len(),
                    "budget {budget}: past the whole text"
                );
                if done {
                    break;
                }
            }
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
