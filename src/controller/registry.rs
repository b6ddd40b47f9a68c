//! What the scheduler knows of each live rollout, so a slot's queries go out at the slot
//! instant instead of after a round-trip to every actor.
//!
//! At 3,000 rollouts most actors answered their slot after the collect window (still saving the
//! previous tick through the group commit, or queued behind thousands of other tasks on two
//! cores), and were gathered in late waves whose extra queries missed the deadline (45.9 % of
//! ticks without data, BENCHMARKS.md "Scale"). A tick's queries depend only on the rule and the
//! rollout's id and version, which never change for a task; *whether* the rollout wants analysis
//! depends on its state, which the actor publishes here ([`Wanted`]) each time round its loop.
//! The scheduler plans the slot from that, gathers it at once, and hands each actor its answer
//! with the state it was planned for; the actor judges it only if it is still in that state,
//! and otherwise asks as before (its tick is then gathered in a late wave).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::gather_memo::RolloutRule;
use crate::rollout::{Phase, Rollout};

/// A rollout in a state that wants analysis, from `from` on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Wanted {
    phase: Phase,
    step: usize,
    step_started_at: DateTime<Utc>,
    /// The step's start plus warmup: no analysis before.
    from: DateTime<Utc>,
}

impl Wanted {
    /// `Some` when `r` analyses in its state once `warmup` has passed since its step started:
    /// watching, no hook in flight, its step's weight confirmed.
    pub(super) fn of(r: &Rollout, warmup: Duration) -> Option<Wanted> {
        if !r.phase.is_watching() || r.pending.is_some() {
            return None;
        }
        let started = r.step_started_at?;
        Some(Wanted {
            phase: r.phase,
            step: r.step,
            step_started_at: started,
            from: crate::rollout::plan::after(started, warmup),
        })
    }

    /// Analysis is due at `now`.
    pub(super) fn due(&self, now: DateTime<Utc>) -> bool {
        now >= self.from
    }
}

/// The cell an actor publishes its [`Wanted`] in and the scheduler reads at each slot, with
/// the state it was published for: the queries read its id and version. The state is the
/// actor's own `Arc` (shared, not copied), and only while it wants analysis; a lean copy per
/// rollout held for the task's life was ~650 bytes a rollout (heaptrack at 2,000).
#[derive(Clone, Default)]
pub(super) struct Published(Arc<Mutex<Option<WantedFor>>>);

/// A wish for analysis and the state it was published for.
pub(super) type WantedFor = (Wanted, Arc<Rollout>);

impl Published {
    pub(super) fn set(&self, wanted: Option<Wanted>, state: &Arc<Rollout>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = wanted.map(|w| (w, state.clone()));
    }

    pub(super) fn get(&self) -> Option<WantedFor> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// What the scheduler gathers for a rollout without asking it: fixed for a task's life.
#[derive(Clone)]
pub(super) struct Member {
    /// The rule snapshot, with the memo of the rollout's queries its ticks share.
    pub(super) rule: RolloutRule,
    /// The tick's deadline ([`super::deadline::tick_deadline`]).
    pub(super) deadline: Duration,
}

impl Member {
    pub(super) fn new(rule: impl Into<RolloutRule>, deadline: Duration) -> Member {
        Member {
            rule: rule.into(),
            deadline,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::Action;

    fn watching() -> Rollout {
        let mut r = Rollout::new("r".into(), "api".into(), "v2".into(), Utc::now());
        r.phase = Phase::Progressing;
        r.step = 1;
        r.step_started_at = Some(Utc::now() - chrono::TimeDelta::seconds(60));
        r
    }

    #[test]
    fn a_rollout_wants_analysis_only_while_watching_without_a_hook_after_warmup() {
        let r = watching();
        let now = Utc::now();
        assert!(Wanted::of(&r, Duration::from_secs(30)).is_some_and(|w| w.due(now)));
        assert!(Wanted::of(&r, Duration::from_secs(120)).is_some_and(|w| !w.due(now)));
        let mut hook = r.clone();
        hook.pending = Some(Action::SetWeight {
            step: 2,
            weight: 20,
        });
        assert_eq!(Wanted::of(&hook, Duration::ZERO), None);
        let mut unconfirmed = r.clone();
        unconfirmed.step_started_at = None;
        assert_eq!(Wanted::of(&unconfirmed, Duration::ZERO), None);
        let mut verifying = r.clone();
        verifying.phase = Phase::Verifying;
        assert_eq!(Wanted::of(&verifying, Duration::ZERO), None);
        // The next step is another state: a slot planned for step 1 is not judged at step 2.
        let mut next = r.clone();
        next.step = 2;
        assert_ne!(
            Wanted::of(&next, Duration::ZERO),
            Wanted::of(&r, Duration::ZERO)
        );
    }
}
