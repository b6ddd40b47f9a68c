//! The state machine's edges that `cargo mutants` found no test for (BENCHMARKS.md, "Mutation
//! testing"): each test here pins one boundary or guard of `src/rollout/machine/` that a
//! surviving mutant changed without any other test noticing. Pure: no servers, `now` by hand.

use crate::machine_support;

use std::time::Duration;

use canaryd::judge::ScoreOutcome;
use canaryd::rollout::{Action, Event, HookKind, Phase, Plan, Rollout, handle};
use canaryd::rules::window::{Window, Windows};
use canaryd::verdict::Verdict;
use machine_support::{
    at, at_first_step, check, healthy_error_rate, new_rollout, ok, plan_of, step, tick,
};

/// 5 % and 25 % held 10 s each after a 2 s warmup, then 100 % with no hold.
fn plan() -> Plan {
    plan_of(&[5, 25], 10)
}

fn healthy(r: &Rollout, secs: i64) -> Event {
    healthy_error_rate(r, secs)
}

/// A critical metric failing: rolls back on the first tick that is judged at all.
fn critical_failure(r: &Rollout, secs: i64) -> Event {
    let mut c = check("error_rate", Verdict::Fail);
    c.critical = true;
    tick(r, secs, vec![c])
}

#[test]
fn approving_an_emergency_before_any_traffic_clears_its_waiting_reason() {
    let p = plan();
    let mut r = new_rollout();
    r.emergency = true;
    let (r, _) = step(&r, &p, Event::Start, 0);
    assert_eq!(r.phase, Phase::WaitingApproval);
    assert!(r.reason.is_some(), "the wait says why");
    let (r, actions) = step(&r, &p, Event::Approve, 1);
    assert_eq!(actions, vec![Action::SetWeight { step: 0, weight: 5 }]);
    assert_eq!(
        (r.phase, r.approved_step, r.reason),
        (Phase::Progressing, Some(0), None),
        "approved: progressing, and no stale 'waiting for approval' reason"
    );
}

/// `in_warmup` ends at `started + warmup` exactly: the tick taken at that instant is judged.
#[test]
fn a_tick_taken_exactly_when_warmup_ends_is_judged() {
    let p = plan();
    let r = at_first_step(&p);
    let warmup = p.warmup.as_secs() as i64;
    // One second earlier it is still warmup: nothing happens.
    let (early, actions) = step(&r, &p, critical_failure(&r, warmup - 1), warmup - 1);
    assert!(actions.is_empty() && !early.rollback_decided);
    let (r, actions) = step(&r, &p, critical_failure(&r, warmup), warmup);
    assert!(r.rollback_decided, "the tick at the end of warmup counted");
    assert!(matches!(actions.as_slice(), [Action::Rollback { .. }]));
}

/// Only a watching phase judges ticks: in any other live phase a tick, even a critical failure,
/// changes nothing (its decision, if any, is the checkpoint's or the hook's).
#[test]
fn a_tick_outside_the_watching_phases_changes_nothing() {
    let p = plan();
    for phase in Phase::ALL {
        if phase.is_watching() || phase.is_terminal() {
            continue;
        }
        let mut r = at_first_step(&p);
        r.phase = phase;
        let e = critical_failure(&r, 5);
        let t = handle(&r, &p, e, at(5));
        assert_eq!(t.rollout, r, "{phase:?}: a tick changed the rollout");
        assert!(t.actions.is_empty(), "{phase:?}: {:?}", t.actions);
    }
}

/// While a weight change is in flight the step's samples may be from either weight: a tick for
/// the step being entered is not judged, and neither is one for the step being left.
#[test]
fn a_tick_while_a_weight_change_is_in_flight_is_not_judged() {
    let p = plan();
    let r = at_first_step(&p);
    // The hold is over: a healthy tick asks for 25 %, not yet confirmed.
    let (r, actions) = step(&r, &p, healthy(&r, 10), 10);
    assert_eq!(
        actions,
        vec![Action::SetWeight {
            step: 1,
            weight: 25
        }]
    );
    assert_eq!(r.step, 1);
    for step_of_tick in [0, 1] {
        let mut at_step = r.clone();
        at_step.step = step_of_tick;
        let e = critical_failure(&at_step, 11);
        let t = handle(&r, &p, e, at(11));
        assert_eq!(
            t.rollout, r,
            "tick for step {step_of_tick} judged in flight"
        );
        assert!(t.actions.is_empty());
    }
}

/// A rollback after `failure_limit` failing ticks explains itself with the failing metric's own
/// reason, not with a healthy neighbour's.
#[test]
fn a_failure_limit_rollback_quotes_the_failing_metrics_reason() {
    let p = plan();
    let mut r = at_first_step(&p);
    let mut actions = vec![];
    for secs in 3..3 + i64::from(p.failure_limit) {
        let checks = vec![
            check("p95_latency", Verdict::Pass),
            check("error_rate", Verdict::Fail),
        ];
        let mut e = tick(&r, secs, checks);
        // Nineteen healthy metrics of twenty would score 95: the score passes, the metric fails.
        if let Event::Tick(t) = &mut e {
            t.score.value = 95.0;
            t.score.outcome = ScoreOutcome::Pass;
        }
        (r, actions) = step(&r, &p, e, secs);
    }
    assert!(matches!(actions.as_slice(), [Action::Rollback { .. }]));
    let reason = r.reason.unwrap_or_default();
    assert!(
        reason
            .starts_with("error_rate: failed 3 ticks in a row (failure_limit 3): error_rate Fail"),
        "{reason}"
    );
    assert!(!reason.contains("p95_latency"), "{reason}");
}

/// Nothing asks for a weight while one is in flight: a timer (or a resume) during the first
/// step's `set_weight` does not send it again.
#[test]
fn no_second_weight_request_while_one_is_in_flight() {
    let p = plan();
    let (r, actions) = step(&new_rollout(), &p, Event::Start, 0);
    assert_eq!(actions, vec![Action::SetWeight { step: 0, weight: 5 }]);
    let (after, actions) = step(&r, &p, Event::Timer, 30);
    assert!(actions.is_empty(), "asked again: {actions:?}");
    assert_eq!(after, r);
}

/// Only reaching 100 % with no hold promotes without a tick. A step with no hold below 100 %,
/// or a last step with a hold, still waits for one counted, healthy tick.
#[test]
fn a_step_without_a_hold_still_needs_a_counted_tick_unless_it_is_the_last() {
    let mut p = plan();
    p.steps[0].hold = Duration::ZERO;
    let (r, _) = step(&new_rollout(), &p, Event::Start, 0);
    let (r, actions) = step(&r, &p, ok(HookKind::SetWeight), 0);
    assert!(
        actions.is_empty(),
        "5 % with no hold left at once: {actions:?}"
    );
    let (r, actions) = step(&r, &p, Event::Timer, 30);
    assert!(actions.is_empty(), "left on a timer: {actions:?}");
    let (_, actions) = step(&r, &p, healthy(&r, 30), 30);
    assert_eq!(
        actions,
        vec![Action::SetWeight {
            step: 1,
            weight: 25
        }]
    );

    let mut p = plan();
    let last = p.steps.len() - 1;
    p.steps[last].hold = Duration::from_secs(10);
    let mut r = at_first_step(&p);
    r.step = last;
    r.weight = 100;
    let (r, actions) = step(&r, &p, Event::Timer, 30);
    assert!(actions.is_empty(), "promoted with no tick: {actions:?}");
    let (_, actions) = step(&r, &p, healthy(&r, 30), 30);
    assert_eq!(actions, vec![Action::Promote]);
}

/// When the deploy window reopens and the step advances, the "outside the deploy windows"
/// reason goes with the wait.
#[test]
fn leaving_a_closed_window_clears_its_reason() {
    let mut p = plan();
    p.windows = Some(Windows {
        timezone: Windows::parse_timezone("America/New_York").unwrap(),
        allow: vec![Window::parse("Wed 12:01-13:00").unwrap()],
        deny: vec![],
    });
    let r = at_first_step(&p);
    let (r, _) = step(&r, &p, healthy(&r, 10), 10);
    assert_eq!(r.phase, Phase::WaitingWindow);
    assert!(
        r.reason
            .as_deref()
            .is_some_and(|s| s.contains("outside the deploy windows"))
    );
    let (r, actions) = step(&r, &p, Event::Timer, 61);
    assert_eq!(actions.len(), 1);
    assert_eq!((r.phase, r.reason), (Phase::Progressing, None));
}
