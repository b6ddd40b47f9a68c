//! The deployment record of a rollout, as the runbooks' "Deployment Log": when, how long, which
//! version, each step with its times, rollback yes/no and why, per metric baseline → canary with
//! its thresholds, and every hook called.
//!
//! The controller keeps only the last tick on a rollout, so [`ReportBuilder`] accumulates what
//! the record needs from the update stream (step times, first and last values per metric, hook
//! outcomes). It is pure: it reads the rollout's own timestamps, never a clock. The subscriber
//! [`run`] writes Markdown and JSON into `reports_dir` when a rollout ends and keeps the reports
//! in a [`ReportBook`] for `GET /api/v1/rollouts/{id}/report`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::actions::templates::Templates;
use crate::controller::Update;
use crate::rollout::{Action, Rollout};
use crate::rules::Rule;
use crate::verdict::Verdict;

pub use super::report_book::{ReportBook, run};
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

/// Accumulates one rollout's report from its updates.
#[derive(Debug, Clone)]
pub struct ReportBuilder {
    report: Report,
    /// The hook in flight at the previous update (all the builder needs of it: a whole
    /// rollout per live rollout and subscriber was ~3 KB each at scale).
    last_pending: Option<Action>,
    last_tick_at: Option<DateTime<Utc>>,
}

impl ReportBuilder {
    /// `rule` gives the thresholds; a rule that was since removed leaves them empty.
    pub fn new(r: &Rollout, rule: Option<&Rule>) -> ReportBuilder {
        let metrics = rule
            .map(|rule| {
                rule.metrics()
                    .map(|m| MetricRecord {
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
                        ticks: 0,
                        baseline_first: None,
                        canary_first: None,
                        baseline_last: None,
                        canary_last: None,
                        last_verdict: None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        ReportBuilder {
            report: Report {
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
                steps: Vec::new(),
                metrics,
                hooks: Vec::new(),
                controls: r.controls.clone(),
                retry_of: r.retry_of.clone(),
                emergency: r.emergency,
                verify: r.verify.clone(),
            },
            last_pending: None,
            last_tick_at: None,
        }
    }

    pub fn report(&self) -> &Report {
        &self.report
    }

    /// Folds one update in.
    pub fn observe(&mut self, u: &Update) {
        let r = &u.rollout;
        let rep = &mut self.report;
        rep.phase = r.phase.as_str().into();
        // A hook finished when the action that was pending is no longer pending after a
        // hook event; its outcome is in the event's name.
        if let Some(prev) = self.last_pending.clone()
            && matches!(u.event, "hook_succeeded" | "hook_failed")
            && r.pending.as_ref() != Some(&prev)
        {
            let ok = u.event == "hook_succeeded";
            rep.hooks.push(HookRecord {
                hook: prev.hook().as_str().into(),
                outcome: if ok { "success" } else { "error" }.into(),
                at: r.updated_at,
                weight: match prev {
                    Action::SetWeight { weight, .. } => Some(weight),
                    _ => None,
                },
                error: if ok { None } else { r.reason.clone() },
            });
        }
        if let Some(started) = r.step_started_at
            && rep.steps.last().is_none_or(|s| s.started_at != started)
        {
            if let Some(prev) = rep.steps.last_mut() {
                prev.ended_at = Some(started);
            }
            rep.steps.push(StepRecord {
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
                let Some(m) = rep.metrics.iter_mut().find(|m| m.name == c.metric) else {
                    continue;
                };
                m.ticks += 1;
                m.last_verdict = Some(c.verdict);
                if c.baseline.is_some() {
                    m.baseline_first = m.baseline_first.or(c.baseline);
                    m.baseline_last = c.baseline;
                }
                if c.canary.is_some() {
                    m.canary_first = m.canary_first.or(c.canary);
                    m.canary_last = c.canary;
                }
            }
        }
        rep.controls = r.controls.clone();
        rep.verify = r.verify.clone();
        rep.rollback = RollbackRecord {
            required: r.rollback_decided,
            reason: r.rollback_decided.then(|| r.reason.clone()).flatten(),
            migration: r.migration_path.clone(),
        };
        if let Some(end) = r.finished_at {
            rep.finished_at = Some(end);
            if let Some(s) = rep.steps.last_mut() {
                s.ended_at.get_or_insert(end);
            }
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
        self.last_pending = r.pending.clone();
    }
}

/// `<YYYY-MM-DD>-<rule>-<rollout>`: sorted by day like the runbook's `reports/deploys/`, unique
/// per rollout.
pub fn file_stem(r: &Report) -> String {
    format!(
        "{}-{}-{}",
        r.started_at.format("%Y-%m-%d"),
        r.rule,
        r.rollout
    )
}

/// Renders the Markdown record.
pub fn render_markdown(
    t: &Templates,
    r: &Report,
) -> Result<String, crate::actions::templates::TemplateError> {
    let ctx = serde_json::to_value(r).unwrap_or_default();
    t.render("report.md.j2", &ctx)
}
