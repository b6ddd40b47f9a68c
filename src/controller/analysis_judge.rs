//! The pure half of a tick of analysis: which of the samples [`super::analysis::fetch`]
//! gathered belong to the current step and are fresh, judged into the [`Tick`] the state
//! machine consumes. The live rollout, `canaryd analyze` and the simulator all judge here, so a
//! replay or a simulation decides as the daemon would. The rules that keep stale data from
//! promoting are in [`super::analysis`]'s module documentation.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::analysis::{Fetched, Gathered};
use crate::judge::observation::Admission;
use crate::judge::sequential::{Counters, judge_counts};
use crate::judge::sequential_hist_tick::judge_histogram;
use crate::judge::{MetricInput, Observation, judge_tick};
use crate::rollout::{Rollout, Tick};
use crate::rules::Rule;
use crate::rules::schema::{MetricKind, MetricSpec};
use crate::verdict::{Check, Verdict};

/// Judges one gathered tick for `rollout` at its current step. Pure: the same rule, rollout and
/// data give the same tick, live, in a replay or in a simulation.
///
/// Window metrics see only points taken at or after the step's weight confirmation plus warmup,
/// and only if the newest is at most `max_staleness` old; sequential metrics must have moved
/// at this weight since the last tick. Everything else is `nodata` with a reason naming what is
/// stale and since when, so no tick judged on old or other-weight data can count toward
/// advancing.
pub fn judge_gathered(rule: &Rule, rollout: &Rollout, gathered: &Gathered) -> Tick {
    let a = &rule.spec.analysis;
    let warmup = chrono::Duration::from_std(a.warmup).unwrap_or(chrono::Duration::MAX);
    let since = rollout
        .step_started_at
        .and_then(|s| s.checked_add_signed(warmup));
    let admission = Admission {
        // Before any weight is confirmed nothing counts: every point is "earlier".
        since: since.unwrap_or(gathered.at),
        now: gathered.at,
        max_staleness: a.max_staleness(),
        min_samples: a.min_samples,
    };
    let sequential_metrics = rule.sequential_metrics();
    let mut inputs = Vec::new();
    let mut states = BTreeMap::new();
    let mut moved = BTreeMap::new();
    for m in rule.metrics() {
        let fetched = gathered.metrics.get(&m.name);
        let input = match (m.kind(), fetched) {
            (MetricKind::Invalid, _) => MetricInput::Judged(Box::new(invalid(m))),
            (MetricKind::Window(_), Some(Fetched::Window { canary, baseline })) => {
                MetricInput::Window(canary.admit(&admission), baseline.admit(&admission))
            }
            (
                kind @ (MetricKind::Counts { .. }
                | MetricKind::Slow { .. }
                | MetricKind::Histogram { .. }),
                Some(Fetched::Counters(now)),
            ) => {
                let cfg =
                    m.sequential_config_every(sequential_metrics, rule.spec.analysis.interval);
                let previous = rollout.sequential.get(&m.name);
                let judge = match kind {
                    MetricKind::Histogram { .. } => judge_histogram,
                    _ => judge_counts,
                };
                let (mut check, state) = judge(m, &cfg, previous, now.clone(), rollout.step);
                match not_moved(previous, now, rollout) {
                    None => {
                        if previous.is_some_and(|p| p.primed_step == Some(rollout.step)) {
                            moved.insert(m.name.clone(), gathered.at);
                        }
                    }
                    Some(why) if check.verdict == Verdict::Pass => {
                        let last = rollout.counters_moved.get(&m.name).copied();
                        if let Some(stale) = counters_stale(last, &admission, &why) {
                            check.verdict = Verdict::Nodata;
                            check.reason = format!("{stale} ({})", check.reason);
                        }
                    }
                    Some(_) => {}
                }
                if let Some(state) = state {
                    states.insert(m.name.clone(), state);
                }
                MetricInput::Judged(Box::new(check))
            }
            (_, found) => {
                let message = match found {
                    None => "nothing was fetched for this metric".to_string(),
                    Some(_) => "fetched data does not match the metric's kind".to_string(),
                };
                let failed = Observation::Failed { message };
                MetricInput::Window(failed.clone(), failed)
            }
        };
        inputs.push(input);
    }
    let (checks, score) = judge_tick(rule.metrics(), &inputs, a);
    Tick {
        at: gathered.at,
        step: rollout.step,
        checks,
        score,
        sequential: states,
        samples_since: since,
        counters_moved: moved,
    }
}

/// Counters that did not move at this tick still count while their last movement at this
/// weight is at most `max_staleness` old (a scrape may simply not have landed between two
/// ticks); otherwise the metric is `nodata`, naming since when they stood still.
fn counters_stale(last: Option<DateTime<Utc>>, a: &Admission, why: &str) -> Option<String> {
    let Some(last) = last.filter(|t| *t >= a.since) else {
        return Some(format!("{why}; they have not moved at this weight"));
    };
    let still = (a.now - last).to_std().unwrap_or_default();
    (still > a.max_staleness).then(|| {
        format!(
            "{why}; they last moved {} s ago, at {} (max_staleness {})",
            still.as_secs(),
            last.format("%H:%M:%S UTC"),
            humantime::format_duration(a.max_staleness)
        )
    })
}

/// Why a sequential metric's counters carry no evidence at this tick, if they do not: the
/// canary's requests did not increase since the last look at this step (it stopped serving or
/// its series froze), or the baseline's did not while it still takes traffic.
fn not_moved(
    previous: Option<&crate::judge::sequential::SequentialState>,
    now: &Result<Counters, String>,
    rollout: &Rollout,
) -> Option<String> {
    let (Some(previous), Ok(now)) = (previous, now) else {
        return None;
    };
    if previous.primed_step != Some(rollout.step) {
        return None;
    }
    let moved = now.since(&previous.last);
    if moved.canary_requests <= 0.0 {
        return Some(format!(
            "canary's request counters did not move since the last tick at weight {}%",
            rollout.weight
        ));
    }
    // At 100 % the baseline takes no traffic by design; below it, a frozen baseline leaves
    // nothing to compare with.
    if rollout.weight < 100 && moved.baseline_requests <= 0.0 {
        return Some(format!(
            "baseline's request counters did not move since the last tick at weight {}%",
            rollout.weight
        ));
    }
    None
}

fn invalid(m: &MetricSpec) -> Check {
    let mut c = Check::new(m, Verdict::Error, String::new());
    c.reason = "metric has neither a query nor sequential counters".into();
    c
}
