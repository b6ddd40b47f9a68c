//! Fixtures the pure state-machine test files share: one fixed clock, a plan built from the
//! weights a file needs, checks and ticks scored the way the judge scores them, and `step`,
//! which applies an event and fails the test if the machine refused it.
//!
//! Kept apart from `tests/it/common/` on purpose: these binaries start no server and are the ones
//! `cargo mutants` rebuilds for every mutant (`.cargo/mutants.toml`), so they must stay cheap.
#![allow(dead_code)] // each test file uses a different subset

use std::time::Duration;

use canaryd::judge::{Score, ScoreOutcome};
use canaryd::rollout::{Action, Event, HookKind, Plan, PlanStep, Rollout, Tick, handle};
use canaryd::rules::schema::OnNodata;
use canaryd::verdict::{Check, Verdict};
use chrono::{DateTime, TimeZone, Utc};

/// A Wednesday, 12:00 US Eastern: inside the runbooks' Tue–Thu 10:00–14:00 window, so a plan
/// with windows lets the machine act unless a test moves the clock out of them.
pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 18, 17, 0, 0).unwrap()
}

pub fn at(secs: i64) -> DateTime<Utc> {
    t0() + chrono::Duration::seconds(secs)
}

/// Steps at `weights`, each held `hold_secs` after a 2 s warmup, then 100 % with no hold;
/// three failures or two no-data ticks in a row decide, and no data pauses.
pub fn plan_of(weights: &[u32], hold_secs: u64) -> Plan {
    let step = |weight, hold| PlanStep {
        weight,
        hold: Duration::from_secs(hold),
        approval: false,
    };
    Plan {
        steps: weights
            .iter()
            .map(|w| step(*w, hold_secs))
            .chain([step(100, 0)])
            .collect(),
        warmup: Duration::from_secs(2),
        failure_limit: 3,
        nodata_limit: 2,
        on_nodata: OnNodata::Pause,
        windows: None,
        lifecycle: Default::default(),
    }
}

/// A check with ten samples a side at 0.1 %: enough data that only `verdict` decides.
pub fn check(metric: &str, verdict: Verdict) -> Check {
    Check {
        canary: Some(0.001),
        baseline: Some(0.001),
        canary_samples: 10,
        baseline_samples: 10,
        ..Check::named(metric, verdict, format!("{metric} {verdict:?}"))
    }
}

/// A tick at `secs` for the rollout's current step, scored from its checks: 100 and a pass
/// when every check is healthy, else 0 and a fail; no data when any check had none.
pub fn tick(r: &Rollout, secs: i64, checks: Vec<Check>) -> Event {
    let healthy = checks.iter().all(Check::is_healthy);
    let nodata = checks
        .iter()
        .any(|c| matches!(c.verdict, Verdict::Nodata | Verdict::Error));
    Event::Tick(Tick {
        at: at(secs),
        step: r.step,
        checks,
        score: Score {
            value: if healthy { 100.0 } else { 0.0 },
            outcome: if healthy {
                ScoreOutcome::Pass
            } else {
                ScoreOutcome::Fail
            },
            nodata,
            reason: String::new(),
        },
        sequential: Default::default(),
        samples_since: Some(at(secs)),
        counters_moved: Default::default(),
    })
}

/// A tick whose only check, `error_rate`, passes.
pub fn healthy_error_rate(r: &Rollout, secs: i64) -> Event {
    tick(r, secs, vec![check("error_rate", Verdict::Pass)])
}

pub fn new_rollout() -> Rollout {
    Rollout::new("ro-1".into(), "checkout-api".into(), "v2".into(), t0())
}

/// Applies an event at `secs` and asserts the machine accepted it.
pub fn step(r: &Rollout, p: &Plan, e: Event, secs: i64) -> (Rollout, Vec<Action>) {
    let t = handle(r, p, e.clone(), at(secs));
    assert_eq!(t.rejected, None, "event {e:?} rejected in {:?}", r.phase);
    (t.rollout, t.actions)
}

pub fn ok(hook: HookKind) -> Event {
    Event::HookSucceeded { hook }
}

pub fn failed(hook: HookKind, error: &str) -> Event {
    Event::HookFailed {
        hook,
        error: error.into(),
    }
}

/// `r` started, with its first weight confirmed at t=0.
pub fn started(p: &Plan, r: Rollout) -> Rollout {
    let (r, _) = step(&r, p, Event::Start, 0);
    step(&r, p, ok(HookKind::SetWeight), 0).0
}

/// A new rollout started and at its first step, weight confirmed at t=0.
pub fn at_first_step(p: &Plan) -> Rollout {
    started(p, new_rollout())
}
