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

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::sync::{Mutex, MutexGuard, OnceLock};

/// Ended rollouts whose series are still shown.
pub const ENDED_KEPT: usize = 256;

#[derive(Debug, Default, Clone, PartialEq)]
struct Series {
    rule: String,
    phase: Option<f64>,
    weight: Option<f64>,
    score: Option<f64>,
    /// By (metric, group), sorted ([`small_entry`]).
    values: Vec<((Box<str>, &'static str), f64)>,
    evidence: Vec<(Box<str>, f64)>,
}

#[derive(Debug, Default)]
pub(crate) struct Registry {
    live: BTreeMap<String, Series>,
    ended: VecDeque<String>,
}

impl Registry {
    fn entry(&mut self, rollout: &str, rule: &str) -> &mut Series {
        let s = self.live.entry(rollout.to_string()).or_default();
        if s.rule != rule {
            s.rule = rule.to_string();
        }
        s
    }

    pub(crate) fn set_state(&mut self, rollout: &str, rule: &str, phase: f64, weight: f64) {
        let s = self.entry(rollout, rule);
        s.phase = Some(phase);
        s.weight = Some(weight);
    }

    pub(crate) fn set_tick(
        &mut self,
        rollout: &str,
        rule: &str,
        score: f64,
        values: impl IntoIterator<Item = (String, &'static str, f64)>,
        evidence: impl IntoIterator<Item = (String, f64)>,
    ) {
        let s = self.entry(rollout, rule);
        s.score = Some(score);
        for (metric, group, v) in values {
            *small_entry(
                &mut s.values,
                |(m, g)| (&**m, *g).cmp(&(metric.as_str(), group)),
                || (Box::from(metric.as_str()), group),
            ) = v;
        }
        for (metric, e) in evidence {
            *small_entry(
                &mut s.evidence,
                |m| (**m).cmp(metric.as_str()),
                || Box::from(metric.as_str()),
            ) = e;
        }
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

    pub(crate) fn render(&self, out: &mut String) {
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
        for (name, help, pick) in simple {
            head(out, name, help);
            for (id, s) in &self.live {
                if let Some(v) = pick(s) {
                    let _ = writeln!(
                        out,
                        "{name}{{rollout=\"{}\",rule=\"{}\"}} {}",
                        esc(id),
                        esc(&s.rule),
                        num(v)
                    );
                }
            }
        }
        head(
            out,
            "canaryd_metric_value",
            "Latest value of a metric per group (canary, baseline)",
        );
        for (id, s) in &self.live {
            for ((metric, group), v) in &s.values {
                let _ = writeln!(
                    out,
                    "canaryd_metric_value{{rollout=\"{}\",rule=\"{}\",metric=\"{}\",group=\"{group}\"}} {}",
                    esc(id),
                    esc(&s.rule),
                    esc(metric),
                    num(*v)
                );
            }
        }
        head(
            out,
            "canaryd_metric_evidence",
            "The sequential test's evidence E for the canary being worse",
        );
        for (id, s) in &self.live {
            for (metric, e) in &s.evidence {
                let _ = writeln!(
                    out,
                    "canaryd_metric_evidence{{rollout=\"{}\",rule=\"{}\",metric=\"{}\"}} {}",
                    esc(id),
                    esc(&s.rule),
                    esc(metric),
                    num(*e)
                );
            }
        }
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

fn head(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
}

/// A label value in the exposition format: backslash, quote and newline escaped.
pub(super) fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub(super) fn num(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        v.to_string()
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

/// Appends every kept rollout's series to `out` (the recorder's exposition).
pub fn render(out: &mut String) {
    registry().render(out);
}

#[cfg(test)]
mod tests {
    use super::*;

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
