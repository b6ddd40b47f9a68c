//! The deployment record of a rollout, as the runbooks' "Deployment Log": when, how long, which
//! version, each step with its times, rollback yes/no and why, per metric baseline → canary with
//! its thresholds, and every hook called.
//!
//! The controller keeps only the last tick on a rollout, so [`ReportBuilder`] accumulates what
//! the record needs from the update stream (step times, first and last values per metric, hook
//! outcomes). It is pure: it reads the rollout's own timestamps, never a clock. The subscriber
//! [`run`] writes Markdown and JSON into `reports_dir` when a rollout ends and keeps the reports
//! in a [`ReportBook`] for `GET /api/v1/rollouts/{id}/report`.

use std::sync::Arc;

use super::report_seen::{BASELINE, CANARY, Seen};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::controller::Update;
use crate::rollout::{Action, HookKind, Rollout};
use crate::rules::{MetricSpec, Rule};
use crate::verdict::Verdict;

pub use super::report_book::{ReportBook, file_stem, render_markdown, run};
pub use super::report_thresholds::Thresholds;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub rollout: String,
    pub rule: String,
    pub version: String,
    /// `in_progress`, `promoted`, `rolled_back` or `failed`.
    pub outcome: String,
    pub phase: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub duration_seconds: Option<f64>,
    pub duration: Option<String>,
    pub rollback: RollbackRecord,
    pub steps: Vec<StepRecord>,
    pub metrics: Vec<MetricRecord>,
    pub hooks: Vec<HookRecord>,
    /// Every human control, with who and why (`rollout::controls`).
    #[serde(default)]
    pub controls: Vec<crate::rollout::controls::ControlRecord>,
    /// Set on a retry: the run it retries, and this run's number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_of: Option<String>,
    #[serde(default)]
    pub emergency: bool,
    /// Checkpoints after promotion, each with its before → after numbers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<crate::rollout::verify::Verification>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RollbackRecord {
    pub required: bool,
    pub reason: Option<String>,
    /// Which migration path a rollback took and why (`rollout::lifecycle`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub step: usize,
    pub weight: u32,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricRecord {
    pub name: String,
    /// The lines from the rule (`rollback_above`, `warn_above`, `max_ratio`, ...).
    pub thresholds: Thresholds,
    pub ticks: u32,
    pub baseline_first: Option<f64>,
    pub canary_first: Option<f64>,
    pub baseline_last: Option<f64>,
    pub canary_last: Option<f64>,
    pub last_verdict: Option<Verdict>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HookRecord {
    pub hook: String,
    pub outcome: String,
    pub at: DateTime<Utc>,
    pub weight: Option<u32>,
    pub error: Option<String>,
}

/// Accumulates one rollout's report from its updates, holding only what the updates do not
/// keep for it: every field the record reads off the rollout (phase, rollback, controls,
/// verification, times) comes from the last update's state, shared with the update stream and
/// [`super::latest`] rather than copied; metric names and thresholds come from the rule the
/// builder was made with, shared with the rule set. Per metric it keeps only its counts and
/// first/last values. The [`Report`] is rendered when asked for ([`ReportBuilder::report`]).
/// Holding a whole `Report` per live rollout (and per subscriber: the report book and the
/// notifier each keep a builder) was ~1.4 KB a rollout at scale (heaptrack at 2,000,
/// BENCHMARKS.md "Scale — resting controller memory").
#[derive(Debug, Clone)]
pub struct ReportBuilder {
    /// The state of the last update observed (before the first: the rollout it was made for).
    last: Arc<Rollout>,
    /// At least one update was observed: until then the record is the one of a rollout in
    /// progress, whatever `last` says.
    observed: bool,
    /// Gives the metrics' names and thresholds; a rule that was since removed leaves them empty.
    rule: Option<Arc<Rule>>,
    /// By position in the rule's metrics.
    metrics: Box<[Seen]>,
    steps: Vec<StepRecord>,
    hooks: Vec<HookSeen>,
    last_tick_at: Option<DateTime<Utc>>,
}

/// A finished hook: a [`HookRecord`] without its two names allocated.
#[derive(Debug, Clone)]
struct HookSeen {
    hook: HookKind,
    ok: bool,
    at: DateTime<Utc>,
    weight: Option<u32>,
    error: Option<String>,
}

impl ReportBuilder {
    /// `rule` gives the thresholds; a rule that was since removed leaves them empty.
    pub fn new(r: &Rollout, rule: Option<Arc<Rule>>) -> ReportBuilder {
        let n = rule.as_ref().map_or(0, |rule| rule.metrics().len());
        ReportBuilder {
            last: Arc::new(r.clone()),
            observed: false,
            rule,
            metrics: vec![Seen::default(); n].into_boxed_slice(),
            steps: Vec::new(),
            hooks: Vec::new(),
            last_tick_at: None,
        }
    }

    /// The number of steps recorded so far (what the notifier compares between updates).
    pub fn steps_len(&self) -> usize {
        self.steps.len()
    }

    /// The phase the record shows.
    pub fn phase(&self) -> &'static str {
        self.last.phase.as_str()
    }

    /// The record as of the last update.
    pub fn report(&self) -> Report {
        let r = &*self.last;
        let metrics = match &self.rule {
            Some(rule) => rule
                .metrics()
                .zip(self.metrics.iter())
                .map(|(m, seen)| metric_record(m, seen))
                .collect(),
            None => Vec::new(),
        };
        let mut rep = Report {
            rollout: r.id.clone(),
            rule: r.rule.clone(),
            version: r.version.clone(),
            outcome: "in_progress".into(),
            phase: r.phase.as_str().into(),
            started_at: r.created_at,
            finished_at: None,
            duration_seconds: None,
            duration: None,
            rollback: RollbackRecord {
                required: false,
                reason: None,
                migration: None,
            },
            steps: self.steps.clone(),
            metrics,
            hooks: self.hooks.iter().map(HookSeen::record).collect(),
            controls: r.controls.clone(),
            retry_of: r.retry_of.clone(),
            emergency: r.emergency,
            verify: r.verify.as_deref().cloned(),
        };
        if !self.observed {
            return rep;
        }
        rep.rollback = RollbackRecord {
            required: r.rollback_decided,
            reason: r.rollback_decided.then(|| r.reason.clone()).flatten(),
            migration: r.migration_path.clone(),
        };
        if let Some(end) = r.finished_at {
            // The last step's end is set by `observe`.
            rep.finished_at = Some(end);
            let secs = (end - rep.started_at).num_milliseconds().max(0) as f64 / 1000.0;
            rep.duration_seconds = Some(secs);
            rep.duration = Some(
                humantime::format_duration(std::time::Duration::from_secs(secs.round() as u64))
                    .to_string(),
            );
            rep.outcome = match r.phase {
                crate::rollout::Phase::Succeeded => "promoted",
                crate::rollout::Phase::RolledBack => "rolled_back",
                _ => "failed",
            }
            .into();
            if r.phase == crate::rollout::Phase::Failed {
                rep.rollback.reason = r.reason.clone();
            }
        }
        rep
    }

    /// Folds one update in.
    pub fn observe(&mut self, u: &Update) {
        let r = &u.rollout;
        // A hook finished when the action that was pending is no longer pending after a
        // hook event; its outcome is in the event's name.
        let prev = if self.observed {
            self.last.pending.as_ref()
        } else {
            None
        };
        if let Some(prev) = prev
            && matches!(u.event, "hook_succeeded" | "hook_failed")
            && r.pending.as_ref() != Some(prev)
        {
            let ok = u.event == "hook_succeeded";
            let seen = HookSeen {
                hook: prev.hook(),
                ok,
                at: r.updated_at,
                weight: match prev {
                    Action::SetWeight { weight, .. } => Some(*weight),
                    _ => None,
                },
                error: if ok { None } else { r.reason.clone() },
            };
            // A rollout has a handful of hooks and steps: room for exactly those.
            self.hooks.reserve_exact(1);
            self.hooks.push(seen);
        }
        if let Some(started) = r.step_started_at
            && self.steps.last().is_none_or(|s| s.started_at != started)
        {
            if let Some(prev) = self.steps.last_mut() {
                prev.ended_at = Some(started);
            }
            self.steps.reserve_exact(1);
            self.steps.push(StepRecord {
                step: r.step,
                weight: r.weight,
                started_at: started,
                ended_at: None,
            });
        }
        if let Some(t) = &r.last_tick
            && self.last_tick_at.is_none_or(|at| t.at > at)
        {
            self.last_tick_at = Some(t.at);
            for c in &t.checks {
                let Some(i) = self
                    .rule
                    .as_ref()
                    .and_then(|rule| rule.metrics().position(|m| *m.name == *c.metric))
                else {
                    continue;
                };
                let Some(seen) = self.metrics.get_mut(i) else {
                    continue;
                };
                seen.ticks += 1;
                seen.last_verdict = Some(c.verdict);
                if let Some(v) = c.baseline {
                    seen.see(BASELINE, v);
                }
                if let Some(v) = c.canary {
                    seen.see(CANARY, v);
                }
            }
        }
        if let Some(end) = r.finished_at
            && let Some(s) = self.steps.last_mut()
        {
            s.ended_at.get_or_insert(end);
        }
        self.last = r.clone();
        self.observed = true;
    }
}

impl HookSeen {
    fn record(&self) -> HookRecord {
        HookRecord {
            hook: self.hook.as_str().into(),
            outcome: if self.ok { "success" } else { "error" }.into(),
            at: self.at,
            weight: self.weight,
            error: self.error.clone(),
        }
    }
}

fn metric_record(m: &MetricSpec, seen: &Seen) -> MetricRecord {
    MetricRecord {
        name: m.name.clone(),
        thresholds: Thresholds::new(
            [
                ("rollback_above", m.rollback_above),
                ("rollback_below", m.rollback_below),
                ("warn_above", m.warn_above),
                ("warn_below", m.warn_below),
                ("max_ratio", m.max_ratio),
                ("allowed_increase", m.allowed_increase),
                ("allowed_decrease", m.allowed_decrease),
            ]
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v))),
        ),
        ticks: seen.ticks,
        baseline_first: seen.pair(BASELINE).map(|(first, _)| first),
        canary_first: seen.pair(CANARY).map(|(first, _)| first),
        baseline_last: seen.pair(BASELINE).map(|(_, last)| last),
        canary_last: seen.pair(CANARY).map(|(_, last)| last),
        last_verdict: seen.last_verdict,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::Phase;

    fn rule() -> Arc<Rule> {
        let yaml = "name: api\nselector:\n  canary: 'track=\"canary\"'\n  baseline: 'track=\"baseline\"'\n\
                    steps:\n  - { weight: 10, hold: 1m }\n  - { weight: 100 }\n\
                    analysis: { interval: 10s, window: 1m }\nmetrics:\n\
                    \x20 - { name: errors, query: 'sum(rate(e{ {{selector}} }[1m]))', rollback_above: 0.05, warn_above: 0.01 }\n\
                    hooks: {}\n";
        Arc::new(
            crate::rules::parse_rule(std::path::Path::new("api.yaml"), yaml)
                .unwrap_or_else(|e| panic!("{e:?}")),
        )
    }

    fn tick(at: DateTime<Utc>, baseline: f64, canary: f64, verdict: &str) -> crate::rollout::Tick {
        serde_json::from_value(serde_json::json!({
            "at": at, "step": 1,
            "checks": [{"metric": "errors", "verdict": verdict, "critical": false,
                        "canary": canary, "baseline": baseline, "threshold": null,
                        "canary_samples": 3, "baseline_samples": 3, "reason": ""}],
            "score": {"value": 100.0, "outcome": "pass", "reason": ""}
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn update(r: &Rollout, event: &'static str) -> Update {
        Update {
            rollout: Arc::new(r.clone()),
            event,
            actions: Vec::new(),
        }
    }

    /// Field by field what the builder folds in: first and last values per metric, ticks
    /// counted once each, hooks with their outcome, steps with their ends, and the end.
    #[test]
    fn a_record_keeps_first_and_last_values_hooks_steps_and_the_end() {
        let t0 = Utc::now();
        let at = |s: i64| t0 + chrono::TimeDelta::seconds(s);
        let mut r = Rollout::new("ro-1".into(), "api".into(), "v2".into(), t0);
        let mut b = ReportBuilder::new(&r, Some(rule()));
        assert_eq!(b.report().outcome, "in_progress");
        r.phase = Phase::Progressing;
        r.pending = Some(Action::SetWeight {
            step: 1,
            weight: 10,
        });
        b.observe(&update(&r, "start"));
        r.pending = None;
        r.step = 1;
        r.weight = 10;
        r.step_started_at = Some(at(1));
        r.updated_at = at(1);
        b.observe(&update(&r, "hook_succeeded"));
        r.last_tick = Some(tick(at(20), 0.001, 0.002, "pass"));
        b.observe(&update(&r, "tick"));
        b.observe(&update(&r, "tick")); // the same tick again is not counted twice
        r.last_tick = Some(tick(at(30), 0.003, 0.04, "warn"));
        b.observe(&update(&r, "tick"));
        r.phase = Phase::Succeeded;
        r.finished_at = Some(at(90));
        b.observe(&update(&r, "promote"));
        let rep = b.report();
        let m = &rep.metrics[0];
        assert_eq!((m.name.as_str(), m.ticks), ("errors", 2));
        assert_eq!(
            (m.baseline_first, m.baseline_last),
            (Some(0.001), Some(0.003))
        );
        assert_eq!((m.canary_first, m.canary_last), (Some(0.002), Some(0.04)));
        assert_eq!(m.last_verdict, Some(Verdict::Warn));
        assert_eq!(m.thresholds.get("rollback_above"), Some(0.05));
        assert_eq!(rep.hooks.len(), 1);
        assert_eq!(
            (
                rep.hooks[0].hook.as_str(),
                rep.hooks[0].outcome.as_str(),
                rep.hooks[0].weight
            ),
            ("set_weight", "success", Some(10))
        );
        assert_eq!(rep.steps.len(), 1);
        assert_eq!(rep.steps[0].ended_at, Some(at(90)));
        assert_eq!(rep.outcome, "promoted");
        assert_eq!(rep.duration_seconds, Some(90.0));
    }
}
