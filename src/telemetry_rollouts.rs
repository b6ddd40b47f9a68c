//! canaryd's per-rollout series (`canaryd_rollout_phase`, `canaryd_rollout_weight`,
//! `canaryd_analysis_score`, `canaryd_metric_value`, `canaryd_metric_evidence`), kept here
//! rather than in the `metrics` recorder because that recorder forgets a series only by time
//! (`PrometheusBuilder::idle_timeout`), not when its rollout ends: every rollout that ever ran
//! would stay in `/metrics` until the daemon restarts (10 series per rollout of four metrics:
//! 100,000 at 10,000 rollouts, growing with every deploy), and an idle timeout could also drop
//! a live rollout whose gauges sit unchanged (paused, waiting for approval). Live rollouts keep
//! theirs; ended ones keep theirs until [`ENDED_KEPT`] newer ones have ended, so a dashboard or
//! an alert still sees how a rollout finished.
//!
//! Rendered after the recorder's own text ([`render`]), in the same exposition format.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::{Mutex, MutexGuard, OnceLock};

use super::chunks::{Cursor, section};

/// Ended rollouts whose series are still shown.
pub const ENDED_KEPT: usize = 256;

/// The `group` label values, sorted (the order `/metrics` shows them in).
const GROUPS: [&str; 2] = ["baseline", "canary"];

#[derive(Debug, Default, Clone, PartialEq)]
struct Series {
    rule: String,
    phase: Option<f64>,
    weight: Option<f64>,
    score: Option<f64>,
    /// By (metric, group), sorted by the metric's name ([`small_entry`]); the metric is its
    /// index in [`Registry::names`], the group in [`GROUPS`]: 16 bytes a value instead of a
    /// name allocated per rollout and value (1.4 MB at 2,000 rollouts, heaptrack).
    values: Vec<((u32, u8), f64)>,
    evidence: Vec<(u32, f64)>,
}

#[derive(Debug, Default)]
pub(crate) struct Registry {
    live: BTreeMap<String, Series>,
    ended: VecDeque<String>,
    /// Every metric name seen, once: a few per template, shared by every rollout.
    names: Names,
}

impl Registry {
    fn entry(&mut self, rollout: &str, rule: &str) -> &mut Series {
        let s = self.live.entry(rollout.to_string()).or_default();
        if s.rule != rule {
            s.rule = rule.to_string();
        }
        s
    }

    /// The index of `metric` in [`Registry::names`], added when new.
    fn name(&mut self, metric: &str) -> u32 {
        self.names.id(metric)
    }

    fn name_of(&self, i: u32) -> &str {
        self.names.get(i)
    }

    pub(crate) fn set_state(&mut self, rollout: &str, rule: &str, phase: f64, weight: f64) {
        let s = self.entry(rollout, rule);
        s.phase = Some(phase);
        s.weight = Some(weight);
    }

    /// Metric names are borrowed (the checks' own): the registry keeps an index, so a tick
    /// copies no name.
    pub(crate) fn set_tick<M: AsRef<str>>(
        &mut self,
        rollout: &str,
        rule: &str,
        score: f64,
        values: impl IntoIterator<Item = (M, &'static str, f64)>,
        evidence: impl IntoIterator<Item = (M, f64)>,
    ) {
        let values: Vec<(u32, u8, f64)> = values
            .into_iter()
            .filter_map(|(metric, group, v)| {
                let g = GROUPS.iter().position(|g| *g == group)?;
                Some((self.name(metric.as_ref()), g as u8, v))
            })
            .collect();
        let evidence: Vec<(u32, f64)> = evidence
            .into_iter()
            .map(|(metric, e)| (self.name(metric.as_ref()), e))
            .collect();
        // Taken out for the comparisons while the rollout's entry is borrowed; put back below.
        let names = std::mem::take(&mut self.names);
        let by_name = |a: u32, b: u32| {
            let name = |i: u32| names.get(i);
            name(a).cmp(name(b))
        };
        let s = self.entry(rollout, rule);
        s.score = Some(score);
        for (metric, group, v) in values {
            *small_entry(
                &mut s.values,
                |(m, g)| by_name(*m, metric).then(g.cmp(&group)),
                || (metric, group),
            ) = v;
        }
        for (metric, e) in evidence {
            *small_entry(&mut s.evidence, |m| by_name(*m, metric), || metric) = e;
        }
        self.names = names;
    }

    /// The rollout ended: its series stay until [`ENDED_KEPT`] later rollouts have ended.
    pub(crate) fn ended(&mut self, rollout: &str) {
        if self.ended.iter().any(|r| r == rollout) {
            return;
        }
        self.ended.push_back(rollout.to_string());
        while self.ended.len() > ENDED_KEPT {
            if let Some(old) = self.ended.pop_front() {
                self.live.remove(&old);
            }
        }
    }

    #[cfg(test)]
    fn series_count(&self) -> usize {
        self.live
            .values()
            .map(|s| {
                [s.phase, s.weight, s.score].iter().flatten().count()
                    + s.values.len()
                    + s.evidence.len()
            })
            .sum()
    }

    #[cfg(test)]
    pub(crate) fn render(&self, out: &mut String) {
        let mut cursor = Cursor::default();
        while !self.render_some(&mut cursor, out, usize::MAX) {}
    }

    /// Renders from `cursor` on until `out` holds `budget` bytes or the series are all written;
    /// `true` when they are. One family after another, each rollout by rollout in id order:
    /// `/metrics` streams the text a piece at a time instead of building all of it (29 MB at
    /// 10,000 rollouts).
    pub(crate) fn render_some(&self, cursor: &mut Cursor, out: &mut String, budget: usize) -> bool {
        type Pick = fn(&Series) -> Option<f64>;
        let simple: [(&str, &str, Pick); 3] = [
            (
                "canaryd_rollout_phase",
                "Phase of each rollout as an index: 0 pending, 1 progressing, 2 waiting_window, 3 waiting_approval, 4 paused, 5 promoting, 6 succeeded, 7 rolling_back, 8 rolled_back, 9 failed",
                |s| s.phase,
            ),
            (
                "canaryd_rollout_weight",
                "Traffic weight confirmed for the canary (percent)",
                |s| s.weight,
            ),
            (
                "canaryd_analysis_score",
                "Score of the last analysis tick (0-100)",
                |s| s.score,
            ),
        ];
        while cursor.family < simple.len() + 2 {
            let done = match simple.get(cursor.family) {
                Some(&(name, help, pick)) => section(
                    &self.live,
                    cursor,
                    out,
                    budget,
                    |out| head(out, name, help),
                    |out, id, s| {
                        if let Some(v) = pick(s) {
                            let _ = writeln!(
                                out,
                                "{name}{{rollout=\"{}\",rule=\"{}\"}} {}",
                                esc(id),
                                esc(&s.rule),
                                num(v)
                            );
                        }
                    },
                ),
                None if cursor.family == simple.len() => section(
                    &self.live,
                    cursor,
                    out,
                    budget,
                    |out| {
                        head(
                            out,
                            "canaryd_metric_value",
                            "Latest value of a metric per group (canary, baseline)",
                        )
                    },
                    |out, id, s| {
                        for ((metric, group), v) in &s.values {
                            let group = GROUPS.get(usize::from(*group)).copied().unwrap_or("");
                            let _ = writeln!(
                                out,
                                "canaryd_metric_value{{rollout=\"{}\",rule=\"{}\",metric=\"{}\",group=\"{group}\"}} {}",
                                esc(id),
                                esc(&s.rule),
                                esc(self.name_of(*metric)),
                                num(*v)
                            );
                        }
                    },
                ),
                None => section(
                    &self.live,
                    cursor,
                    out,
                    budget,
                    |out| {
                        head(
                            out,
                            "canaryd_metric_evidence",
                            "The sequential test's evidence E for the canary being worse",
                        )
                    },
                    |out, id, s| {
                        for (metric, e) in &s.evidence {
                            let _ = writeln!(
                                out,
                                "canaryd_metric_evidence{{rollout=\"{}\",rule=\"{}\",metric=\"{}\"}} {}",
                                esc(id),
                                esc(&s.rule),
                                esc(self.name_of(*metric)),
                                num(*e)
                            );
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

/// The value kept for the key `cmp` finds in `v`, sorted by key, inserting `make()` with a
/// default value when there is none: a few entries per rollout or rule kept in a `Vec`, where a
/// `BTreeMap` node reserves room for 11 whatever its length (0.5–1 KB for a rollout's 8 metric
/// values or a rule's 4 metrics; heaptrack at 2,000 rollouts put ~2 KB per rollout in these
/// maps). Iterating the `Vec` gives the `BTreeMap`'s order, so `/metrics` reads the same.
pub(super) fn small_entry<K, V: Default>(
    v: &mut Vec<(K, V)>,
    cmp: impl Fn(&K) -> std::cmp::Ordering,
    make: impl FnOnce() -> K,
) -> &mut V {
    let i = match v.binary_search_by(|(k, _)| cmp(k)) {
        Ok(i) => i,
        Err(i) => {
            v.insert(i, (make(), V::default()));
            i
        }
    };
    &mut v[i].1
}

/// Metric names, each kept once and known by its index: per-rollout and per-rule series hold
/// a `u32` instead of a name of their own (a few distinct names per template, shared by every
/// rollout and rule built on it). Found by hash, so many distinct names cost no linear scan.
#[derive(Debug, Default)]
pub(super) struct Names {
    list: Vec<Box<str>>,
    index: HashMap<Box<str>, u32>,
}

impl Names {
    /// The index of `name`, added when new.
    pub(super) fn id(&mut self, name: &str) -> u32 {
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        let i = u32::try_from(self.list.len()).unwrap_or(u32::MAX);
        self.list.push(Box::from(name));
        self.index.insert(Box::from(name), i);
        i
    }

    /// The name of index `i` ("" for an index never given out).
    pub(super) fn get(&self, i: u32) -> &str {
        self.list.get(i as usize).map_or("", |n| n)
    }
}

/// Every per-rollout family is a gauge.
fn head(out: &mut String, name: &str, help: &str) {
    super::chunks::head(out, name, help, "gauge");
}

/// A label value in the exposition format: backslash, quote and newline escaped (borrowed
/// when there is nothing to escape, as nearly always: no allocation per label and line).
pub(super) fn esc(v: &str) -> std::borrow::Cow<'_, str> {
    if !v.contains(['\\', '"', '\n']) {
        return std::borrow::Cow::Borrowed(v);
    }
    std::borrow::Cow::Owned(
        v.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n"),
    )
}

/// A sample value in the exposition format, written in place (no string per line).
pub(super) fn num(v: f64) -> Num {
    Num(v)
}

pub(super) struct Num(f64);

impl std::fmt::Display for Num {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v = self.0;
        if v.is_nan() {
            f.write_str("NaN")
        } else if v.is_infinite() {
            f.write_str(if v > 0.0 { "+Inf" } else { "-Inf" })
        } else {
            write!(f, "{v}")
        }
    }
}

pub(crate) fn registry() -> MutexGuard<'static, Registry> {
    static REGISTRY: OnceLock<Mutex<Registry>> = OnceLock::new();
    REGISTRY
        .get_or_init(Mutex::default)
        .lock()
        // A panic while holding it left plain data behind, still consistent enough to show.
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rendered whole and in chunks of any size, the text is the same, byte for byte: a chunk
    /// boundary neither repeats nor drops a line, and each family's head is written once.
    #[test]
    fn chunks_of_any_size_concatenate_to_the_whole_exposition() {
        let mut r = Registry::default();
        for i in 0..300 {
            let id = format!("ro-{i:03}");
            r.set_state(&id, "api", 1.0, 5.0);
            if i % 3 != 0 {
                r.set_tick(
                    &id,
                    "api",
                    f64::from(i),
                    [
                        ("p95".to_string(), "canary", 0.2),
                        ("errors".to_string(), "baseline", 0.01),
                    ],
                    [("seq".to_string(), 1.5)],
                );
            }
        }
        let mut whole = String::new();
        r.render(&mut whole);
        for budget in [1, 100, 4096, super::super::chunks::CHUNK] {
            let (text, chunks) =
                super::super::chunks::render_in_chunks(&whole, budget, |c, out, b| {
                    r.render_some(c, out, b)
                });
            assert_eq!(text, whole, "budget {budget}");
            assert!(budget > whole.len() || chunks > 1, "budget {budget}");
        }
    }

    /// A name seen again gets its first index: series of many rollouts share one entry each.
    #[test]
    fn names_are_kept_once_and_found_by_index() {
        let mut n = Names::default();
        let (p95, errors) = (n.id("p95"), n.id("errors"));
        assert_ne!(p95, errors);
        assert_eq!(n.id("p95"), p95);
        assert_eq!(n.list.len(), 2);
        assert_eq!((n.get(p95), n.get(errors), n.get(7)), ("p95", "errors", ""));
    }

    /// The exposition of two rollouts, exactly as the text built whole before chunking was.
    #[test]
    fn the_exposition_reads_as_before() {
        let mut r = Registry::default();
        r.set_state("b", "web", 1.0, 25.0);
        r.set_state("a", "api", 3.0, 5.0);
        r.set_tick(
            "a",
            "api",
            75.0,
            [
                ("p95".to_string(), "canary", 0.25),
                ("errors".to_string(), "canary", f64::NAN),
                ("errors".to_string(), "baseline", 0.5),
            ],
            [("errors".to_string(), 2.0)],
        );
        let mut text = String::new();
        r.render(&mut text);
        let want = "\
# HELP canaryd_rollout_phase Phase of each rollout as an index: 0 pending, 1 progressing, 2 waiting_window, 3 waiting_approval, 4 paused, 5 promoting, 6 succeeded, 7 rolling_back, 8 rolled_back, 9 failed
# TYPE canaryd_rollout_phase gauge
canaryd_rollout_phase{rollout=\"a\",rule=\"api\"} 3
canaryd_rollout_phase{rollout=\"b\",rule=\"web\"} 1
# HELP canaryd_rollout_weight Traffic weight confirmed for the canary (percent)
# TYPE canaryd_rollout_weight gauge
canaryd_rollout_weight{rollout=\"a\",rule=\"api\"} 5
canaryd_rollout_weight{rollout=\"b\",rule=\"web\"} 25
# HELP canaryd_analysis_score Score of the last analysis tick (0-100)
# TYPE canaryd_analysis_score gauge
canaryd_analysis_score{rollout=\"a\",rule=\"api\"} 75
# HELP canaryd_metric_value Latest value of a metric per group (canary, baseline)
# TYPE canaryd_metric_value gauge
canaryd_metric_value{rollout=\"a\",rule=\"api\",metric=\"errors\",group=\"baseline\"} 0.5
canaryd_metric_value{rollout=\"a\",rule=\"api\",metric=\"errors\",group=\"canary\"} NaN
canaryd_metric_value{rollout=\"a\",rule=\"api\",metric=\"p95\",group=\"canary\"} 0.25
# HELP canaryd_metric_evidence The sequential test's evidence E for the canary being worse
# TYPE canaryd_metric_evidence gauge
canaryd_metric_evidence{rollout=\"a\",rule=\"api\",metric=\"errors\"} 2
";
        assert_eq!(text, want);
    }

    #[test]
    fn ended_rollouts_series_are_dropped_beyond_the_kept_number() {
        let mut r = Registry::default();
        for i in 0..(ENDED_KEPT + 10) {
            let id = format!("r{i}");
            r.set_state(&id, "api", 1.0, 5.0);
            r.set_tick(
                &id,
                "api",
                90.0,
                [("errors".to_string(), "canary", 0.01)],
                [],
            );
        }
        assert_eq!(r.series_count(), (ENDED_KEPT + 10) * 4);
        for i in 0..(ENDED_KEPT + 10) {
            r.ended(&format!("r{i}"));
        }
        // The oldest ten ended rollouts are gone; the newest ENDED_KEPT still show.
        assert_eq!(r.series_count(), ENDED_KEPT * 4);
        let mut text = String::new();
        r.render(&mut text);
        assert!(!text.contains("rollout=\"r9\""), "{text}");
        assert!(text.contains("rollout=\"r10\""), "{text}");
        // Live rollouts are never dropped, however many end.
        r.set_state("live", "api", 1.0, 5.0);
        for i in 0..(ENDED_KEPT * 2) {
            r.set_state(&format!("e{i}"), "api", 6.0, 100.0);
            r.ended(&format!("e{i}"));
        }
        assert!(r.live.contains_key("live"));
        assert_eq!(r.live.len(), ENDED_KEPT + 1);
    }

    #[test]
    fn series_render_in_the_exposition_format_with_escaped_labels() {
        let mut r = Registry::default();
        r.set_state("a\"b", "r\\1", 4.0, 25.0);
        r.set_tick(
            "a\"b",
            "r\\1",
            50.5,
            [("m\n".to_string(), "baseline", f64::INFINITY)],
            [("seq".to_string(), 3.5)],
        );
        let mut text = String::new();
        r.render(&mut text);
        for line in [
            r#"canaryd_rollout_phase{rollout="a\"b",rule="r\\1"} 4"#,
            r#"canaryd_rollout_weight{rollout="a\"b",rule="r\\1"} 25"#,
            r#"canaryd_analysis_score{rollout="a\"b",rule="r\\1"} 50.5"#,
            r#"canaryd_metric_value{rollout="a\"b",rule="r\\1",metric="m\n",group="baseline"} +Inf"#,
            r#"canaryd_metric_evidence{rollout="a\"b",rule="r\\1",metric="seq"} 3.5"#,
            "# TYPE canaryd_rollout_phase gauge",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in:\n{text}");
        }
    }

    #[test]
    fn metric_values_render_sorted_and_a_later_tick_replaces_its_value() {
        let mut r = Registry::default();
        let tick = |r: &mut Registry, v: f64| {
            r.set_tick(
                "x",
                "api",
                100.0,
                [
                    ("p95".to_string(), "canary", v),
                    ("errors".to_string(), "canary", v),
                    ("errors".to_string(), "baseline", v),
                    ("cpu".to_string(), "canary", v),
                ],
                [("seq_b".to_string(), v), ("seq_a".to_string(), v)],
            )
        };
        tick(&mut r, 1.0);
        tick(&mut r, 2.0);
        let mut text = String::new();
        r.render(&mut text);
        let values: Vec<&str> = text
            .lines()
            .filter(|l| {
                l.starts_with("canaryd_metric_value{") || l.starts_with("canaryd_metric_evidence{")
            })
            .collect();
        let want = [
            r#"canaryd_metric_value{rollout="x",rule="api",metric="cpu",group="canary"} 2"#,
            r#"canaryd_metric_value{rollout="x",rule="api",metric="errors",group="baseline"} 2"#,
            r#"canaryd_metric_value{rollout="x",rule="api",metric="errors",group="canary"} 2"#,
            r#"canaryd_metric_value{rollout="x",rule="api",metric="p95",group="canary"} 2"#,
            r#"canaryd_metric_evidence{rollout="x",rule="api",metric="seq_a"} 2"#,
            r#"canaryd_metric_evidence{rollout="x",rule="api",metric="seq_b"} 2"#,
        ];
        assert_eq!(values, want);
    }
}
