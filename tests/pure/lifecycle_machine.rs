//! The release lifecycle and the traffic provider's findings as machine tables: `pre_rollout`
//! before any traffic, `readiness` before each increase, the two migration paths after a
//! rollback, drift and refused weights. Pure: no servers, no clock.

use crate::machine_support;

use std::time::Duration;

use canaryd::actions::canary_alerts::{AlertContext, alerts_for};
use canaryd::rollout::lifecycle::{LifecycleHooks, Migration};
use canaryd::rollout::{Action, Event, HookKind, PauseReason, Phase, Plan, Rollout};
use machine_support::{
    at, failed, healthy_error_rate as healthy, new_rollout, ok, plan_of, started, step,
};

/// 5, 25 and 50 % held 10 s each, then 100 %, with the given lifecycle hooks.
fn plan(lifecycle: LifecycleHooks) -> Plan {
    Plan {
        lifecycle,
        ..plan_of(&[5, 25, 50], 10)
    }
}

fn at_first_step(p: &Plan, migration: Option<Migration>) -> Rollout {
    let mut r = new_rollout();
    r.migration = migration.map(Box::new);
    started(p, r)
}

const PRE: LifecycleHooks = LifecycleHooks {
    pre_rollout: true,
    readiness: false,
    migrate_down: false,
};
const READY: LifecycleHooks = LifecycleHooks {
    pre_rollout: false,
    readiness: true,
    migrate_down: false,
};
const DOWN: LifecycleHooks = LifecycleHooks {
    pre_rollout: false,
    readiness: false,
    migrate_down: true,
};

#[test]
fn a_failing_pre_rollout_ends_the_rollout_before_any_traffic_moves() {
    let p = plan(PRE);
    let (r, actions) = step(&new_rollout(), &p, Event::Start, 0);
    assert_eq!(actions, vec![Action::PreRollout]);
    let (r, actions) = step(&r, &p, failed(HookKind::PreRollout, "exit 1"), 1);
    assert!(
        actions.is_empty(),
        "nothing after a failed pre_rollout: {actions:?}"
    );
    assert_eq!((r.phase, r.weight), (Phase::Failed, 0));
    assert!(
        r.reason
            .as_deref()
            .unwrap_or("")
            .contains("no traffic was moved")
    );
    assert!(
        !r.rollback_decided,
        "nothing to roll back: no traffic moved"
    );
}

#[test]
fn a_passing_pre_rollout_asks_for_the_first_weight() {
    let p = plan(PRE);
    let (r, _) = step(&new_rollout(), &p, Event::Start, 0);
    let (_, actions) = step(&r, &p, ok(HookKind::PreRollout), 1);
    assert_eq!(actions, vec![Action::SetWeight { step: 0, weight: 5 }]);
}

#[test]
fn readiness_gates_every_weight_increase_and_a_failure_holds_the_step() {
    let p = plan(READY);
    let (r, actions) = step(&new_rollout(), &p, Event::Start, 0);
    assert_eq!(actions, vec![Action::CheckReadiness { step: 0, weight: 5 }]);
    // 503 before the first step: still at 0 %, asked again on the next timer.
    let (r, actions) = step(&r, &p, failed(HookKind::Readiness, "HTTP 503"), 1);
    assert!(actions.is_empty());
    assert_eq!((r.weight, r.phase), (0, Phase::Progressing));
    assert!(r.reason.as_deref().unwrap_or("").contains("HTTP 503"));
    let (r, actions) = step(&r, &p, Event::Timer, 2);
    assert_eq!(actions, vec![Action::CheckReadiness { step: 0, weight: 5 }]);
    let (r, actions) = step(&r, &p, ok(HookKind::Readiness), 3);
    assert_eq!(actions, vec![Action::SetWeight { step: 0, weight: 5 }]);
    let (r, _) = step(&r, &p, ok(HookKind::SetWeight), 3);
    // Hold elapsed, healthy: readiness first, then the weight.
    let (r, actions) = step(&r, &p, healthy(&r, 14), 14);
    assert_eq!(
        actions,
        vec![Action::CheckReadiness {
            step: 1,
            weight: 25
        }]
    );
    let mut r = r;
    for t in [15, 16, 17] {
        let (next, actions) = step(&r, &p, failed(HookKind::Readiness, "HTTP 503"), t);
        assert!(actions.is_empty());
        assert_eq!((next.step, next.weight), (0, 5), "a 503 never advances");
        let (next, actions) = step(&next, &p, healthy(&next, t), t);
        assert_eq!(
            actions,
            vec![Action::CheckReadiness {
                step: 1,
                weight: 25
            }]
        );
        r = next;
    }
    let (r, actions) = step(&r, &p, ok(HookKind::Readiness), 18);
    assert_eq!(
        actions,
        vec![Action::SetWeight {
            step: 1,
            weight: 25
        }]
    );
    let (r, _) = step(&r, &p, ok(HookKind::SetWeight), 18);
    assert_eq!((r.step, r.weight), (1, 25));
}

fn alert_names(r: &Rollout, now: i64, stall_after_secs: u64) -> Vec<String> {
    let cx = AlertContext {
        now: at(now),
        phase_since: at(0),
        stall_after: Duration::from_secs(stall_after_secs),
        rollback_keep_firing_for: Duration::from_secs(300),
        external_url: "http://canaryd",
    };
    alerts_for(r, &cx)
        .iter()
        .map(|a| a.name().to_string())
        .collect()
}

/// A readiness hold is a wait: the state says since when, and past the stall time it raises
/// `CanaryStalled` as a pause or a closed window does; an answer of 200 clears it.
#[test]
fn a_readiness_hold_records_since_when_and_stalls_after_the_stall_time() {
    let p = plan(READY);
    let (r, _) = step(&new_rollout(), &p, Event::Start, 0);
    let (r, _) = step(&r, &p, ok(HookKind::Readiness), 3);
    let (r, _) = step(&r, &p, ok(HookKind::SetWeight), 3);
    let (r, actions) = step(&r, &p, healthy(&r, 14), 14);
    assert_eq!(
        actions,
        vec![Action::CheckReadiness {
            step: 1,
            weight: 25
        }]
    );
    let (mut r, _) = step(&r, &p, failed(HookKind::Readiness, "HTTP 503"), 15);
    assert_eq!(r.readiness_held_since, Some(at(15)));
    for t in [16, 20, 40] {
        let (next, _) = step(&r, &p, healthy(&r, t), t);
        let (next, _) = step(&next, &p, failed(HookKind::Readiness, "HTTP 503"), t);
        assert_eq!(
            next.readiness_held_since,
            Some(at(15)),
            "since the first 503"
        );
        r = next;
    }
    assert_eq!(r.phase, Phase::Progressing);
    assert!(!alert_names(&r, 40, 30).contains(&"CanaryStalled".to_string()));
    let names = alert_names(&r, 45, 30);
    assert!(names.contains(&"CanaryStalled".to_string()), "{names:?}");
    let (r, _) = step(&r, &p, healthy(&r, 46), 46);
    let (r, _) = step(&r, &p, ok(HookKind::Readiness), 46);
    assert_eq!(r.readiness_held_since, None);
    assert!(!alert_names(&r, 100, 30).contains(&"CanaryStalled".to_string()));
}

/// A human `promote` (leave this step now) is a weight increase like any other: readiness is
/// asked first, and a 503 holds the step.
#[test]
fn a_promote_control_asks_readiness_before_the_next_weight() {
    let p = plan(READY);
    let (r, _) = step(&new_rollout(), &p, Event::Start, 0);
    let (r, _) = step(&r, &p, ok(HookKind::Readiness), 1);
    let (r, _) = step(&r, &p, ok(HookKind::SetWeight), 1);
    let promote = Event::Control {
        control: canaryd::rollout::controls::Control::Promote,
        by: "alice".into(),
        reason: None,
    };
    let (r, actions) = step(&r, &p, promote, 2);
    assert_eq!(
        actions,
        vec![Action::CheckReadiness {
            step: 1,
            weight: 25
        }]
    );
    let (r, actions) = step(&r, &p, failed(HookKind::Readiness, "HTTP 503"), 3);
    assert!(actions.is_empty());
    assert_eq!((r.step, r.weight), (0, 5), "a 503 never advances");
}

fn rolled_back(p: &Plan, migration: Option<Migration>) -> (Rollout, Vec<Action>) {
    let r = at_first_step(p, migration);
    let (r, actions) = step(
        &r,
        p,
        Event::Abort {
            reason: "bad".into(),
        },
        5,
    );
    assert!(matches!(actions[..], [Action::Rollback { .. }]));
    step(&r, p, ok(HookKind::Rollback), 6)
}

#[test]
fn a_reversible_migration_migrates_down_after_traffic_is_back_on_the_baseline() {
    let p = plan(DOWN);
    let m = Migration {
        reversible: true,
        id: "0042_add_column".into(),
    };
    let (r, actions) = rolled_back(&p, Some(m));
    assert_eq!(
        actions,
        vec![Action::MigrateDown],
        "migrate_down only after the rollback arrived"
    );
    assert_eq!((r.phase, r.weight), (Phase::RollingBack, 0));
    let (r, actions) = step(&r, &p, ok(HookKind::MigrateDown), 7);
    assert!(actions.is_empty());
    assert_eq!(r.phase, Phase::RolledBack);
    assert!(!r.restore_decision_needed);
    assert!(
        r.migration_path
            .as_deref()
            .unwrap_or("")
            .contains("migrate_down ran")
    );
}

#[test]
fn a_failed_migrate_down_leaves_a_restore_decision_to_a_human() {
    let p = plan(DOWN);
    let (r, _) = rolled_back(
        &p,
        Some(Migration {
            reversible: true,
            id: "m1".into(),
        }),
    );
    let (r, actions) = step(&r, &p, failed(HookKind::MigrateDown, "exit 3"), 7);
    assert!(actions.is_empty());
    assert_eq!(r.phase, Phase::Failed);
    assert!(r.restore_decision_needed);
}

#[test]
fn a_non_reversible_migration_never_migrates_down_and_asks_for_a_decision() {
    let p = plan(DOWN);
    let (r, actions) = rolled_back(
        &p,
        Some(Migration {
            reversible: false,
            id: "m2".into(),
        }),
    );
    assert!(actions.is_empty(), "never migrate_down: {actions:?}");
    assert_eq!((r.phase, r.weight), (Phase::RolledBack, 0));
    assert!(r.restore_decision_needed);
    let path = r.migration_path.clone().unwrap_or_default();
    assert!(
        path.contains("non-reversible") && path.contains("not run"),
        "{path}"
    );
    let cx = AlertContext {
        now: at(7),
        phase_since: at(6),
        stall_after: Duration::from_secs(600),
        rollback_keep_firing_for: Duration::from_secs(300),
        external_url: "http://canaryd",
    };
    let names: Vec<String> = alerts_for(&r, &cx)
        .iter()
        .map(|a| a.name().to_string())
        .collect();
    assert!(
        names.contains(&"CanaryRestoreDecisionNeeded".to_string()),
        "{names:?}"
    );
}

#[test]
fn without_a_migration_a_rollback_ends_as_before() {
    let (r, actions) = rolled_back(&plan(DOWN), None);
    assert!(actions.is_empty());
    assert_eq!(r.phase, Phase::RolledBack);
    assert_eq!(r.migration_path, None);
}

#[test]
fn drift_pauses_and_resume_sets_canaryds_weight_again() {
    let p = plan(LifecycleHooks::default());
    let r = at_first_step(&p, None);
    let (r, actions) = step(
        &r,
        &p,
        Event::TrafficDrift {
            found: "canary 60".into(),
        },
        3,
    );
    assert!(actions.is_empty());
    assert_eq!(
        (r.phase, r.pause_reason),
        (Phase::Paused, Some(PauseReason::Drift))
    );
    // Healthy ticks do not advance a rollout whose traffic is not where canaryd put it.
    let (r, actions) = step(&r, &p, healthy(&r, 20), 20);
    assert!(actions.is_empty());
    let cx = AlertContext {
        now: at(21),
        phase_since: at(3),
        stall_after: Duration::from_secs(600),
        rollback_keep_firing_for: Duration::from_secs(300),
        external_url: "http://canaryd",
    };
    assert!(
        alerts_for(&r, &cx)
            .iter()
            .any(|a| a.name() == "CanaryTrafficDrift")
    );
    let (r, actions) = step(&r, &p, Event::Resume, 22);
    assert_eq!(actions, vec![Action::SetWeight { step: 0, weight: 5 }]);
    let (r, _) = step(&r, &p, ok(HookKind::SetWeight), 22);
    assert_eq!(
        r.step_started_at,
        Some(at(22)),
        "the step's hold starts over"
    );
}

#[test]
fn a_refused_weight_pauses_at_the_old_weight_and_resume_asks_again() {
    let p = plan(LifecycleHooks::default());
    let r = at_first_step(&p, None);
    let (r, actions) = step(&r, &p, healthy(&r, 14), 14);
    assert_eq!(
        actions,
        vec![Action::SetWeight {
            step: 1,
            weight: 25
        }]
    );
    let (r, actions) = step(
        &r,
        &p,
        Event::TrafficHeld {
            error: "nginx -t failed".into(),
        },
        15,
    );
    assert!(actions.is_empty());
    assert_eq!(
        (r.phase, r.pause_reason),
        (Phase::Paused, Some(PauseReason::Traffic))
    );
    assert_eq!((r.step, r.weight), (0, 5), "still at the old step");
    assert!(!r.rollback_decided, "the old weight serves: no rollback");
    let (_, actions) = step(&r, &p, Event::Resume, 16);
    assert_eq!(
        actions,
        vec![Action::SetWeight {
            step: 1,
            weight: 25
        }]
    );
}
