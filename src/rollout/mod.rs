//! Rollouts, pure: the types, the state machine and the plan. The async shell that feeds them
//! is [`crate::controller`], the persistence seam [`crate::store`].
//!
//! Architecture Invariant: this room does no I/O and reads no clock; `now` is an argument.
//! Only the controller owns time and calls `actions`.

pub mod controls;
mod failures;
pub mod lifecycle;
pub mod machine;
pub mod plan;
pub mod verify;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::judge::Score;
use crate::judge::sequential::SequentialState;
use crate::verdict::Check;

pub use failures::Failures;
pub use machine::{Action, Event, HookKind, Transition, handle, keeps_tick};
pub use plan::{Plan, PlanStep};

/// Where a rollout is in its life. Names are the contract of design.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Pending,
    Progressing,
    WaitingWindow,
    WaitingApproval,
    Paused,
    Promoting,
    Succeeded,
    RollingBack,
    RolledBack,
    Failed,
    /// Promoted; checkpoints after promotion still to pass (`verify`).
    Verifying,
}

impl Phase {
    pub const ALL: [Phase; 11] = [
        Phase::Pending,
        Phase::Progressing,
        Phase::WaitingWindow,
        Phase::WaitingApproval,
        Phase::Paused,
        Phase::Promoting,
        Phase::Succeeded,
        Phase::RollingBack,
        Phase::RolledBack,
        Phase::Failed,
        Phase::Verifying,
    ];

    /// Ended for good: nothing will be called for it again.
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::RolledBack | Phase::Failed)
    }

    /// Analysing the canary: ticks are judged and may roll back.
    pub fn is_watching(self) -> bool {
        matches!(
            self,
            Phase::Progressing | Phase::WaitingWindow | Phase::WaitingApproval | Phase::Paused
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "pending",
            Phase::Progressing => "progressing",
            Phase::WaitingWindow => "waiting_window",
            Phase::WaitingApproval => "waiting_approval",
            Phase::Paused => "paused",
            Phase::Promoting => "promoting",
            Phase::Succeeded => "succeeded",
            Phase::RollingBack => "rolling_back",
            Phase::RolledBack => "rolled_back",
            Phase::Failed => "failed",
            Phase::Verifying => "verifying",
        }
    }

    /// Stable number for the `canaryd_rollout_phase` gauge (index in [`Phase::ALL`]).
    pub fn code(self) -> f64 {
        Phase::ALL.iter().position(|p| *p == self).unwrap_or(0) as f64
    }
}

/// Why a rollout paused: only a no-data pause lifts itself when data returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PauseReason {
    Manual,
    Nodata,
    Alert,
    /// The traffic provider refused a weight; the old weight still serves.
    Traffic,
    /// The weights on the server are not the ones canaryd set.
    Drift,
}

/// One judged analysis round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tick {
    pub at: DateTime<Utc>,
    pub step: usize,
    pub checks: Vec<Check>,
    pub score: Score,
    /// Sequential metrics' states after this tick; the machine keeps them when it counts it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sequential: BTreeMap<String, SequentialState>,
    /// The judge looked only at samples taken at or after this time (the step's weight
    /// confirmation plus warmup). The machine counts a tick toward advancing only when this is
    /// not before its own step start plus warmup: evidence from another weight never promotes.
    /// Absent on ticks stored by older versions, which therefore never advance a step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples_since: Option<DateTime<Utc>>,
    /// Sequential metrics whose counters moved at this tick, with its time; the machine keeps
    /// them when it counts the tick, so the next tick can tell how long counters stood still.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub counters_moved: BTreeMap<String, DateTime<Utc>>,
}

impl Tick {
    /// Every metric had data and none failed: the tick can count toward promotion.
    pub fn all_healthy(&self) -> bool {
        self.checks.iter().all(Check::is_healthy)
    }
}

/// One run of a rule for one version. Everything the machine needs to decide is in here, so a
/// rollout can be persisted and resumed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    pub id: String,
    pub rule: String,
    pub version: String,
    pub phase: Phase,
    /// Index of the current step in the plan.
    pub step: usize,
    /// Weight confirmed by the last successful `set_weight` hook (0 before the first).
    pub weight: u32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// When the current step's weight was confirmed: hold and warmup count from here.
    pub step_started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Consecutive failing ticks per non-critical metric.
    pub failures: Failures,
    /// Consecutive ticks with a metric in no-data or error.
    pub nodata_ticks: u32,
    pub pause_reason: Option<PauseReason>,
    /// The hook in flight, so its result can be matched to what was asked.
    pub pending: Option<Action>,
    /// Steps a human approved (gates).
    pub approved_step: Option<usize>,
    /// Set once; a rollout that decided to roll back never promotes.
    pub rollback_decided: bool,
    /// Why the rollout is where it is (rollback cause, pause cause, hook failure).
    pub reason: Option<String>,
    pub last_tick: Option<Tick>,
    /// Running sequential tests by metric: their evidence carries over every step.
    #[serde(default)]
    pub sequential: BTreeMap<String, SequentialState>,
    /// When each sequential metric's counters last moved (a tick saw their requests increase):
    /// counters that stood still longer than `max_staleness` carry no evidence.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub counters_moved: BTreeMap<String, DateTime<Utc>>,
    /// Every control a human (or pipeline) applied, with who and why: the audit trail.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub controls: Vec<controls::ControlRecord>,
    /// Started with `"emergency": true`: deploy windows do not hold it, a human approves its
    /// first step, and verification after promotion is extended.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub emergency: bool,
    /// The rollout this one retries (`retry` starts a new run under a new id, linked back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_of: Option<String>,
    /// 1 for a first run, n + 1 for a retry of run n.
    #[serde(default = "controls::first_run")]
    pub run: u32,
    /// Checkpoints after promotion and their results (`verify`). Boxed, as `migration`: few
    /// rollouts have them, and every live rollout's state is kept (80 bytes each inline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<Box<verify::Verification>>,
    /// The database migration this release brings, as the start request declared it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration: Option<Box<lifecycle::Migration>>,
    /// After a rollback: which migration path was taken and why (the report shows it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration_path: Option<String>,
    /// A rolled-back release whose migration cannot be undone: a human chooses downgrade or
    /// restore (`CanaryRestoreDecisionNeeded`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub restore_decision_needed: bool,
    /// Since when the next step has been held because the canary's readiness endpoint said
    /// no (cleared once it answers): a hold is a wait like the others, so it raises
    /// `CanaryStalled` past the stall time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_held_since: Option<DateTime<Utc>>,
}

impl Rollout {
    /// A rollback was decided, its hook failed past its retries, and it is still owed: the
    /// rollout shows `failed` but the controller keeps delivering the rollback.
    pub fn rollback_undelivered(&self) -> bool {
        self.phase == Phase::Failed && matches!(self.pending, Some(Action::Rollback { .. }))
    }

    /// Still needs a task: not ended, or ended `failed` with a rollback still owed.
    pub fn is_live(&self) -> bool {
        !self.phase.is_terminal() || self.rollback_undelivered()
    }

    pub fn new(id: String, rule: String, version: String, now: DateTime<Utc>) -> Rollout {
        Rollout {
            id,
            rule,
            version,
            phase: Phase::Pending,
            step: 0,
            weight: 0,
            created_at: now,
            updated_at: now,
            step_started_at: None,
            finished_at: None,
            failures: Failures::default(),
            nodata_ticks: 0,
            pause_reason: None,
            pending: None,
            approved_step: None,
            rollback_decided: false,
            reason: None,
            last_tick: None,
            sequential: BTreeMap::new(),
            counters_moved: BTreeMap::new(),
            controls: Vec::new(),
            emergency: false,
            retry_of: None,
            run: 1,
            verify: None,
            migration: None,
            migration_path: None,
            restore_decision_needed: false,
            readiness_held_since: None,
        }
    }
}

#[cfg(test)]
mod tests {
    /// Every live rollout's state and last tick are kept (and a slot's ticks hold the old state
    /// beside the new until their commit): these sizes are memory at scale.
    #[test]
    fn a_rollout_and_its_tick_stay_small() {
        let (rollout, tick) = (
            std::mem::size_of::<super::Rollout>(),
            std::mem::size_of::<super::Tick>(),
        );
        assert!(rollout <= 552, "Rollout is {rollout} bytes");
        assert!(tick <= 144, "Tick is {tick} bytes");
    }
}
