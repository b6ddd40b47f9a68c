//! The rollout state machine as a specification: every phase × event, then the scenarios the
//! runbooks care about. Pure: no servers, no clock, `now` is built by hand.

use crate::machine_support;

use std::time::Duration;

use canaryd::rollout::controls::Control;
use canaryd::rollout::verify::{CheckpointMetric, CheckpointResult};
use canaryd::rollout::{Action, Event, HookKind, Phase, Plan, Rollout, Tick, handle};
use canaryd::rules::window::{Window, Windows};
use canaryd::verdict::{Threshold, ThresholdKind, Verdict};
use machine_support::{at, at_first_step, check, new_rollout, ok, plan_of, step, tick};

/// 5, 25 and 50 % held 10 s each after a 2 s warmup, then 100 %.
fn plan() -> Plan {
    plan_of(&[5, 25, 50], 10)
}

fn healthy(r: &Rollout, secs: i64) -> Event {
    tick(
        r,
        secs,
        vec![
            check("error_rate", Verdict::Pass),
            check("p95_latency", Verdict::Pass),
        ],
    )
}

#[test]
fn start_asks_for_the_first_weight_and_waits_for_the_hook() {
    let p = plan();
    let (r, actions) = step(&new_rollout(), &p, Event::Start, 0);
    assert_eq!(actions, vec![Action::SetWeight { step: 0, weight: 5 }]);
    assert_eq!(r.phase, Phase::Progressing);
    assert_eq!(r.weight, 0, "weight counts only once the hook confirmed it");
    let (r, actions) = step(&r, &p, ok(HookKind::SetWeight), 1);
    assert!(actions.is_empty());
    assert_eq!((r.weight, r.step_started_at), (5, Some(at(1))));
}

#[test]
fn healthy_canary_goes_5_25_50_100_then_promotes() {
    let p = plan();
    let mut r = at_first_step(&p);
    let mut weights = vec![r.weight];
    let mut now = 0;
    let mut all_actions = Vec::new();
    while r.phase != Phase::Succeeded {
        now += 1;
        assert!(now < 200, "did not promote; stuck in {:?}", r.phase);
        let (next, mut actions) = step(&r, &p, healthy(&r, now), now);
        r = next;
        // The controller reports each hook's success; that report may ask for the next action.
        while let Some(a) = actions.pop() {
            let hook = a.hook();
            all_actions.push(a);
            let (next, more) = step(&r, &p, ok(hook), now);
            r = next;
            actions.extend(more);
            if hook == HookKind::SetWeight {
                weights.push(r.weight);
            }
        }
    }
    assert_eq!(weights, vec![5, 25, 50, 100]);
    assert_eq!(all_actions.last(), Some(&Action::Promote));
    assert!(
        !all_actions
            .iter()
            .any(|a| matches!(a, Action::Rollback { .. }))
    );
    // Each of the three held steps took at least its 10 s hold.
    assert!(now >= 30, "promoted after {now}s, before the holds elapsed");
}

#[test]
fn no_step_advances_before_its_hold() {
    let p = plan();
    let r = at_first_step(&p);
    let (r, actions) = step(&r, &p, healthy(&r, 9), 9);
    assert!(actions.is_empty());
    let (_, actions) = step(&r, &p, healthy(&r, 10), 10);
    assert_eq!(
        actions,
        vec![Action::SetWeight {
            step: 1,
            weight: 25
        }]
    );
}

#[test]
fn ticks_during_warmup_count_for_nothing() {
    let p = plan();
    let r = at_first_step(&p);
    let mut failing = check("error_rate", Verdict::Fail);
    failing.critical = true;
    let (r, actions) = step(&r, &p, tick(&r, 1, vec![failing]), 1);
    assert!(actions.is_empty(), "a warmup tick must not roll back");
    assert_eq!(r.phase, Phase::Progressing);
    // And a healthy warmup tick must not be what promotes the step.
    let (r, _) = step(&r, &p, healthy(&r, 1), 1);
    let (_, actions) = step(&r, &p, Event::Timer, 11);
    assert!(actions.is_empty(), "advanced on a tick taken during warmup");
}

#[test]
fn critical_metric_failure_rolls_back_at_once() {
    let p = plan();
    let r = at_first_step(&p);
    let mut c = check("error_rate", Verdict::Fail);
    c.critical = true;
    let (r, actions) = step(&r, &p, tick(&r, 3, vec![c]), 3);
    assert_eq!(r.phase, Phase::RollingBack);
    assert!(matches!(&actions[..], [Action::Rollback { reason }] if reason.contains("error_rate")));
    let (r, _) = step(&r, &p, ok(HookKind::Rollback), 4);
    assert_eq!((r.phase, r.weight), (Phase::RolledBack, 0));
}

#[test]
fn rolls_back_at_once_when_an_absolute_rollback_line_is_crossed() {
    let p = plan();
    let r = at_first_step(&p);
    let mut c = check("cpu_utilization", Verdict::Fail);
    c.threshold = Some(Threshold {
        kind: ThresholdKind::RollbackAbove,
        value: 0.9,
    });
    let (r, actions) = step(&r, &p, tick(&r, 3, vec![c]), 3);
    assert_eq!(r.phase, Phase::RollingBack);
    assert_eq!(actions.len(), 1);
}

#[test]
fn non_critical_failure_rolls_back_after_failure_limit_consecutive_ticks() {
    let p = plan();
    let mut r = at_first_step(&p);
    let ratio_fail = || {
        let mut c = check("p95_latency", Verdict::Fail);
        c.threshold = Some(Threshold {
            kind: ThresholdKind::MaxRatio,
            value: 2.0,
        });
        c
    };
    for s in 3..5 {
        let (next, actions) = step(&r, &p, tick(&r, s, vec![ratio_fail()]), s);
        assert!(actions.is_empty());
        r = next;
    }
    let (r, actions) = step(&r, &p, tick(&r, 5, vec![ratio_fail()]), 5);
    assert_eq!(r.phase, Phase::RollingBack);
    assert!(
        matches!(&actions[..], [Action::Rollback { reason }] if reason.contains("3 ticks in a row"))
    );
}

#[test]
fn a_passing_tick_resets_the_failure_count() {
    let p = plan();
    let mut r = at_first_step(&p);
    let fail = || tick_fail_ratio();
    for (s, e) in [(3, true), (4, true), (5, false), (6, true), (7, true)] {
        let ev = if e { fail()(&r, s) } else { healthy(&r, s) };
        let (next, actions) = step(&r, &p, ev, s);
        assert!(
            actions
                .iter()
                .all(|a| !matches!(a, Action::Rollback { .. })),
            "rolled back at {s}"
        );
        r = next;
    }
    assert_eq!(r.failures.get("p95_latency"), Some(&2));
    assert_eq!(
        r.failures.get(canaryd::rollout::machine::SCORE_KEY),
        Some(&2)
    );
}

fn tick_fail_ratio() -> impl Fn(&Rollout, i64) -> Event {
    |r, s| {
        let mut c = check("p95_latency", Verdict::Fail);
        c.threshold = Some(Threshold {
            kind: ThresholdKind::MaxRatio,
            value: 2.0,
        });
        tick(r, s, vec![c])
    }
}

#[test]
fn nodata_pauses_after_nodata_limit_and_never_promotes() {
    let p = plan();
    let r = at_first_step(&p);
    let nodata = |r: &Rollout, s| tick(r, s, vec![check("error_rate", Verdict::Nodata)]);
    let (r, _) = step(&r, &p, nodata(&r, 3), 3);
    assert_eq!(r.phase, Phase::Progressing);
    let (r, _) = step(&r, &p, nodata(&r, 4), 4);
    assert_eq!(r.phase, Phase::Paused);
    assert!(r.reason.as_deref().unwrap_or("").contains("no data"));
    // Long past the hold, still no data: nothing advances, nothing promotes.
    let mut r = r;
    for s in 5..100 {
        let (next, actions) = step(&r, &p, nodata(&r, s), s);
        assert!(actions.is_empty(), "acted on no data at {s}: {actions:?}");
        r = next;
    }
    assert_eq!((r.phase, r.weight), (Phase::Paused, 5));
}

#[test]
fn a_nodata_pause_lifts_itself_when_data_returns() {
    let p = plan();
    let r = at_first_step(&p);
    let err = |r: &Rollout, s| tick(r, s, vec![check("error_rate", Verdict::Error)]);
    let (r, _) = step(&r, &p, err(&r, 3), 3);
    let (r, _) = step(&r, &p, err(&r, 4), 4);
    assert_eq!(r.phase, Phase::Paused);
    let (r, actions) = step(&r, &p, healthy(&r, 20), 20);
    assert_eq!(r.phase, Phase::Progressing);
    assert_eq!(
        actions,
        vec![Action::SetWeight {
            step: 1,
            weight: 25
        }]
    );
}

#[test]
fn failures_still_roll_back_while_paused() {
    let p = plan();
    let r = at_first_step(&p);
    let (r, _) = step(&r, &p, Event::Pause, 3);
    let mut c = check("error_rate", Verdict::Fail);
    c.critical = true;
    let (r, actions) = step(&r, &p, tick(&r, 4, vec![c]), 4);
    assert_eq!(r.phase, Phase::RollingBack);
    assert_eq!(actions.len(), 1);
}

#[test]
fn manual_pause_holds_the_step_until_resume() {
    let p = plan();
    let r = at_first_step(&p);
    let (r, _) = step(&r, &p, Event::Pause, 3);
    let (r, actions) = step(&r, &p, healthy(&r, 30), 30);
    assert!(actions.is_empty());
    assert_eq!(
        r.phase,
        Phase::Paused,
        "a manual pause does not lift on data"
    );
    let (r, actions) = step(&r, &p, Event::Resume, 31);
    assert_eq!(r.phase, Phase::Progressing);
    assert_eq!(
        actions,
        vec![Action::SetWeight {
            step: 1,
            weight: 25
        }]
    );
}

#[test]
fn failed_set_weight_hook_rolls_back() {
    let p = plan();
    let (r, _) = step(&new_rollout(), &p, Event::Start, 0);
    let (r, actions) = step(
        &r,
        &p,
        Event::HookFailed {
            hook: HookKind::SetWeight,
            error: "HTTP 500".into(),
        },
        1,
    );
    assert_eq!(r.phase, Phase::RollingBack);
    assert!(
        matches!(&actions[..], [Action::Rollback { reason }] if reason.contains("set_weight hook failed"))
    );
}

#[test]
fn failed_rollback_hook_ends_failed_with_both_reasons() {
    let p = plan();
    let r = at_first_step(&p);
    let (r, _) = step(
        &r,
        &p,
        Event::Abort {
            reason: "bad deploy".into(),
        },
        3,
    );
    let (r, actions) = step(
        &r,
        &p,
        Event::HookFailed {
            hook: HookKind::Rollback,
            error: "timeout".into(),
        },
        4,
    );
    assert!(actions.is_empty());
    assert_eq!(r.phase, Phase::Failed);
    let reason = r.reason.unwrap_or_default();
    assert!(
        reason.contains("timeout") && reason.contains("bad deploy"),
        "{reason}"
    );
}

#[test]
fn failed_promote_hook_ends_failed_not_succeeded() {
    let p = plan();
    let r = at_first_step(&p);
    let (r, actions) = step(&r, &p, Event::Promote, 3);
    assert_eq!(
        (r.phase, actions),
        (Phase::Promoting, vec![Action::Promote])
    );
    let (r, _) = step(
        &r,
        &p,
        Event::HookFailed {
            hook: HookKind::Promote,
            error: "exit 1".into(),
        },
        4,
    );
    assert_eq!(r.phase, Phase::Failed);
}

#[test]
fn abort_while_set_weight_is_in_flight_replaces_it_with_rollback() {
    let p = plan();
    let r = at_first_step(&p);
    let (r, actions) = step(&r, &p, healthy(&r, 10), 10);
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
        Event::Abort {
            reason: "pager".into(),
        },
        11,
    );
    assert!(matches!(r.pending, Some(Action::Rollback { .. })));
    assert!(matches!(&actions[..], [Action::Rollback { .. }]));
    // A late success of the cancelled set_weight is not accepted as progress.
    let t = handle(&r, &p, ok(HookKind::SetWeight), at(12));
    assert!(t.rejected.is_some());
    assert_eq!(t.rollout.weight, 5);
}

#[test]
fn a_rollback_decision_is_final() {
    let p = plan();
    let r = at_first_step(&p);
    let (r, _) = step(
        &r,
        &p,
        Event::AlertFired {
            alert: "APIDown".into(),
        },
        3,
    );
    for e in [
        Event::Promote,
        Event::Resume,
        Event::Approve,
        Event::Timer,
        Event::Start,
    ] {
        let t = handle(&r, &p, e.clone(), at(50));
        assert!(
            t.actions
                .iter()
                .all(|a| matches!(a, Action::Rollback { .. })),
            "{e:?} produced {:?} after a rollback decision",
            t.actions
        );
        assert!(t.rollout.rollback_decided);
    }
    let t = handle(&r, &p, healthy(&r, 60), at(60));
    assert!(t.actions.is_empty());
}

#[test]
fn closed_window_holds_promotion_and_rollback_still_works() {
    let mut p = plan();
    p.windows = Some(Windows {
        timezone: Windows::parse_timezone("America/New_York").unwrap(),
        // 12:00–12:00:20 Eastern on Wednesdays: the first step's hold ends inside it, the second after.
        allow: vec![Window::parse("Wed 12:00-12:01").unwrap()],
        deny: vec![],
    });
    let r = at_first_step(&p);
    let (r, actions) = step(&r, &p, healthy(&r, 10), 10);
    assert_eq!(
        actions,
        vec![Action::SetWeight {
            step: 1,
            weight: 25
        }]
    );
    let (r, _) = step(&r, &p, ok(HookKind::SetWeight), 70);
    let (r, actions) = step(&r, &p, healthy(&r, 80), 80);
    assert!(actions.is_empty());
    assert_eq!(r.phase, Phase::WaitingWindow);
    let mut c = check("error_rate", Verdict::Fail);
    c.critical = true;
    let (r, actions) = step(&r, &p, tick(&r, 90, vec![c]), 90);
    assert_eq!(r.phase, Phase::RollingBack);
    assert_eq!(actions.len(), 1);
}

#[test]
fn window_reopening_lets_the_waiting_step_advance() {
    let mut p = plan();
    p.windows = Some(Windows {
        timezone: Windows::parse_timezone("America/New_York").unwrap(),
        allow: vec![Window::parse("Wed 12:01-13:00").unwrap()],
        deny: vec![],
    });
    let r = at_first_step(&p);
    let (r, _) = step(&r, &p, healthy(&r, 10), 10);
    assert_eq!(r.phase, Phase::WaitingWindow);
    let (r, actions) = step(&r, &p, Event::Timer, 61);
    assert_eq!(r.phase, Phase::Progressing);
    assert_eq!(
        actions,
        vec![Action::SetWeight {
            step: 1,
            weight: 25
        }]
    );
}

#[test]
fn approval_gate_waits_for_a_human() {
    let mut p = plan();
    p.steps[0].approval = true;
    let r = at_first_step(&p);
    let (r, actions) = step(&r, &p, healthy(&r, 10), 10);
    assert!(actions.is_empty());
    assert_eq!(r.phase, Phase::WaitingApproval);
    let (r, actions) = step(&r, &p, Event::Approve, 11);
    assert_eq!(r.phase, Phase::Progressing);
    assert_eq!(
        actions,
        vec![Action::SetWeight {
            step: 1,
            weight: 25
        }]
    );
}

/// One representative event of every kind.
fn all_events(r: &Rollout) -> Vec<Event> {
    let mut critical = check("error_rate", Verdict::Fail);
    critical.critical = true;
    let mut events = vec![
        Event::Start,
        healthy(r, 50),
        tick(r, 50, vec![critical]),
        tick(r, 50, vec![check("error_rate", Verdict::Nodata)]),
        Event::Timer,
        Event::Abort { reason: "x".into() },
        Event::Pause,
        Event::AlertPause {
            alert: "HighLatency".into(),
        },
        Event::Resume,
        Event::Promote,
        Event::Approve,
        Event::AlertFired {
            alert: "APIDown".into(),
        },
        Event::HealthFailed {
            url: "http://h".into(),
            error: "503".into(),
        },
        Event::TaskFailed {
            reason: "panicked: boom".into(),
        },
    ];
    for hook in [
        HookKind::SetWeight,
        HookKind::Promote,
        HookKind::Rollback,
        HookKind::Revert,
        HookKind::PreRollout,
        HookKind::Readiness,
        HookKind::MigrateDown,
    ] {
        events.push(Event::HookSucceeded { hook });
        events.push(Event::HookFailed {
            hook,
            error: "e".into(),
        });
    }
    for passed in [true, false] {
        events.push(Event::Checkpoint {
            index: 0,
            result: CheckpointResult {
                at: at(50),
                passed,
                metrics: vec![CheckpointMetric {
                    name: "error_rate".into(),
                    before: Some(0.01),
                    after: Some(if passed { 0.01 } else { 0.2 }),
                    passed,
                    reason: "x".into(),
                }],
            },
        });
    }
    for control in [
        Control::Promote,
        Control::PromoteFull,
        Control::Abort,
        Control::Pause,
        Control::Resume,
        Control::Approve,
    ] {
        events.push(Event::Control {
            control,
            by: "alice".into(),
            reason: Some("x".into()),
        });
    }
    events.push(Event::TrafficHeld {
        error: "refused".into(),
    });
    events.push(Event::TrafficDrift {
        found: "canary 40".into(),
    });
    events
}

/// A rollout in each phase, reached the way the machine reaches it where possible.
fn in_phase(phase: Phase, p: &Plan) -> Rollout {
    let mut r = at_first_step(p);
    r.phase = phase;
    match phase {
        Phase::Pending => r = new_rollout(),
        Phase::Promoting => r.pending = Some(Action::Promote),
        Phase::RollingBack => {
            r.rollback_decided = true;
            r.pending = Some(Action::Rollback { reason: "x".into() });
        }
        Phase::RolledBack | Phase::Failed => r.rollback_decided = true,
        Phase::Paused => r.pause_reason = Some(canaryd::rollout::PauseReason::Manual),
        _ => {}
    }
    r
}

#[test]
fn every_phase_and_event_keeps_the_safety_invariants() {
    let p = plan();
    for phase in Phase::ALL {
        let r = in_phase(phase, &p);
        for e in all_events(&r) {
            let t = handle(&r, &p, e.clone(), at(50));
            let ctx = format!("{phase:?} + {e:?}");
            if phase.is_terminal() {
                assert_eq!(t.rollout, r, "{ctx}: a terminal rollout changed");
                assert!(t.actions.is_empty() && t.rejected.is_some(), "{ctx}");
                continue;
            }
            if r.rollback_decided {
                assert!(
                    t.rollout.rollback_decided,
                    "{ctx}: rollback decision cleared"
                );
                assert!(
                    !t.actions
                        .iter()
                        .any(|a| matches!(a, Action::Promote | Action::SetWeight { .. })),
                    "{ctx}: acted forward after a rollback decision"
                );
                assert_ne!(t.rollout.phase, Phase::Succeeded, "{ctx}");
            }
            assert!(
                t.rollout.weight >= r.weight || t.rollout.phase == Phase::RolledBack,
                "{ctx}: weight went down"
            );
            assert!(
                t.actions.len() <= 1,
                "{ctx}: several actions at once {:?}",
                t.actions
            );
            if let Some(a) = t.actions.first() {
                assert_eq!(
                    t.rollout.pending.as_ref(),
                    Some(a),
                    "{ctx}: action not recorded as pending"
                );
            }
            if t.rejected.is_some() {
                assert!(t.actions.is_empty(), "{ctx}: a rejected event acted");
            }
        }
    }
}

#[test]
fn expected_phase_after_each_user_event() {
    let p = plan();
    use Phase::*;
    // (phase, event, expected phase) — the table users read in the README.
    let table: Vec<(Phase, Event, Option<Phase>)> = vec![
        (Progressing, Event::Pause, Some(Paused)),
        (WaitingWindow, Event::Pause, Some(Paused)),
        (Paused, Event::Pause, None),
        (Paused, Event::Resume, Some(Progressing)),
        (Progressing, Event::Resume, None),
        (WaitingApproval, Event::Approve, Some(Progressing)),
        (Progressing, Event::Approve, None),
        (Progressing, Event::Promote, Some(Promoting)),
        (Paused, Event::Promote, Some(Promoting)),
        (Pending, Event::Promote, None),
        (
            Progressing,
            Event::Abort { reason: "x".into() },
            Some(RollingBack),
        ),
        (
            Promoting,
            Event::Abort { reason: "x".into() },
            Some(RollingBack),
        ),
        (
            Pending,
            Event::Abort { reason: "x".into() },
            Some(RollingBack),
        ),
        (RollingBack, Event::Abort { reason: "x".into() }, None),
        (Succeeded, Event::Abort { reason: "x".into() }, None),
        (RolledBack, Event::Resume, None),
    ];
    for (phase, event, expected) in table {
        let r = in_phase(phase, &p);
        let t = handle(&r, &p, event.clone(), at(50));
        match expected {
            Some(want) => {
                assert_eq!(t.rejected, None, "{phase:?} + {event:?}");
                assert_eq!(t.rollout.phase, want, "{phase:?} + {event:?}");
            }
            None => assert!(
                t.rejected.is_some(),
                "{phase:?} + {event:?} should be rejected"
            ),
        }
    }
}

#[test]
fn a_failing_score_counts_as_a_failing_tick() {
    let p = plan();
    let mut r = at_first_step(&p);
    // Two metrics, each failing on alternate ticks: no metric fails three times in a row, but
    // every tick scores below marginal.
    for s in 3..6 {
        let (a, b) = if s % 2 == 0 {
            (Verdict::Fail, Verdict::Pass)
        } else {
            (Verdict::Pass, Verdict::Fail)
        };
        let (next, actions) = step(
            &r,
            &p,
            tick(&r, s, vec![check("p50", a), check("p95", b)]),
            s,
        );
        r = next;
        if s < 5 {
            assert!(actions.is_empty(), "rolled back early at {s}");
        } else {
            assert!(
                matches!(&actions[..], [Action::Rollback { reason }] if reason.contains("(score)")),
                "{actions:?}"
            );
        }
    }
}

#[test]
fn muted_metrics_never_fail_or_pause_a_rollout() {
    let p = plan();
    let mut r = at_first_step(&p);
    for s in 3..8 {
        let mut failing = check("experimental", Verdict::Fail);
        failing.muted = true;
        failing.critical = true;
        let mut nodata = check("beta", Verdict::Nodata);
        nodata.muted = true;
        let (next, actions) = step(
            &r,
            &p,
            tick(
                &r,
                s,
                vec![check("error_rate", Verdict::Pass), failing, nodata],
            ),
            s,
        );
        assert!(
            actions
                .iter()
                .all(|a| !matches!(a, Action::Rollback { .. })),
            "muted metric rolled back"
        );
        r = next;
    }
    assert_eq!(r.phase, Phase::Progressing);
}

#[test]
fn an_alert_pause_says_which_alert_and_lifts_only_on_resume() {
    let p = plan();
    let r = at_first_step(&p);
    let (r, actions) = step(
        &r,
        &p,
        Event::AlertPause {
            alert: "HighLatency{service=checkout}".into(),
        },
        3,
    );
    assert!(actions.is_empty());
    assert_eq!(
        (r.phase, r.pause_reason),
        (Phase::Paused, Some(canaryd::rollout::PauseReason::Alert))
    );
    assert_eq!(
        r.reason.as_deref(),
        Some("paused by alert: HighLatency{service=checkout}")
    );
    let (r, _) = step(&r, &p, healthy(&r, 30), 30);
    assert_eq!(
        r.phase,
        Phase::Paused,
        "data returning does not lift an alert's pause"
    );
    let (r, _) = step(&r, &p, Event::Resume, 31);
    assert_eq!(r.phase, Phase::Progressing);
}

#[test]
fn a_counted_tick_moves_the_sequential_state_onto_the_rollout_once() {
    use canaryd::judge::{sequential::Counters, sequential::EProcess, sequential::SequentialState};
    use canaryd::verdict::SequentialConfig;
    let p = plan();
    let r = at_first_step(&p);
    let state = SequentialState {
        process: EProcess::new(&SequentialConfig::default()),
        last: Counters::default(),
        primed_step: Some(0),
        histogram: None,
    };
    let Event::Tick(mut t) = healthy(&r, 3) else {
        unreachable!()
    };
    t.sequential
        .insert("errors_vs_baseline".into(), state.clone());
    let (r, _) = step(&r, &p, Event::Tick(t.clone()), 3);
    assert_eq!(r.sequential.get("errors_vs_baseline"), Some(&state));
    assert!(
        r.last_tick
            .as_ref()
            .is_some_and(|t| t.sequential.is_empty()),
        "kept once, on the rollout"
    );
    // A warmup tick does not count, so its state is not taken either.
    let fresh = at_first_step(&p);
    let (fresh, _) = step(&fresh, &p, Event::Tick(Tick { at: at(1), ..t }), 1);
    assert!(fresh.sequential.is_empty());
}

fn task_failed() -> Event {
    Event::TaskFailed {
        reason: "panicked: boom".into(),
    }
}

#[test]
fn a_panicked_task_fails_the_rollout_and_rolls_back_traffic_the_canary_holds() {
    let p = plan();
    use Phase::*;
    // (phase, rollback owed afterwards) — a promotion in flight is left to a human, and a
    // rollout that never took traffic has nothing to undo.
    let table = [
        (Pending, false),
        (Progressing, true),
        (WaitingWindow, true),
        (WaitingApproval, true),
        (Paused, true),
        (Promoting, false),
        (RollingBack, true),
    ];
    for (phase, owed) in table {
        let mut r = in_phase(phase, &p);
        if r.rollback_decided {
            r.reason = Some("x".into());
        }
        let (after, actions) = step(&r, &p, task_failed(), 50);
        let ctx = format!("{phase:?}");
        assert_eq!(after.phase, Failed, "{ctx}");
        assert_eq!(after.finished_at, Some(at(50)), "{ctx}");
        let why = after.reason.clone().unwrap_or_default();
        assert!(
            why.starts_with("rollout task failed: panicked: boom"),
            "{ctx}: {why}"
        );
        assert_eq!(after.rollback_undelivered(), owed, "{ctx}: {after:?}");
        assert_eq!(after.is_live(), owed, "{ctx}");
        // A new rollback is asked for only when none was decided before.
        let fresh_rollback = owed && !r.rollback_decided;
        assert_eq!(
            actions.len(),
            usize::from(fresh_rollback),
            "{ctx}: {actions:?}"
        );
        if r.rollback_decided {
            assert_eq!(
                after.pending, r.pending,
                "{ctx}: the owed rollback is unchanged"
            );
            assert!(
                why.ends_with("(rollback was decided because: x)"),
                "{ctx}: {why}"
            );
        }
    }
}

#[test]
fn a_rollback_owed_after_a_panic_ends_rolled_back_once_delivered() {
    let p = plan();
    let r = at_first_step(&p);
    let (r, actions) = step(&r, &p, task_failed(), 3);
    assert!(
        matches!(&actions[..], [Action::Rollback { reason }] if reason.contains("panicked: boom"))
    );
    // Only the rollback's delivery is heard while it is owed.
    for e in [Event::Promote, Event::Resume, healthy(&r, 4), task_failed()] {
        let t = handle(&r, &p, e.clone(), at(4));
        assert!(t.rejected.is_some() && t.actions.is_empty(), "{e:?}");
    }
    let (r, _) = step(&r, &p, ok(HookKind::Rollback), 5);
    assert_eq!((r.phase, r.weight), (Phase::RolledBack, 0));
    assert!(!r.is_live());
}

#[test]
fn a_hold_too_long_for_the_calendar_never_ends_and_never_panics() {
    let mut p = plan();
    p.steps[0].hold = Duration::MAX;
    p.warmup = Duration::from_secs(u64::MAX / 2);
    let r = at_first_step(&p);
    let (r, actions) = step(&r, &p, healthy(&r, 10), 10);
    assert!(actions.is_empty());
    let (r, actions) = step(&r, &p, Event::Timer, 1_000_000);
    assert!(actions.is_empty());
    assert_eq!((r.phase, r.step), (Phase::Progressing, 0));
}

/// Drives healthy ticks (and confirms every hook) until the rollout stands at `target_step`.
fn at_step(p: &Plan, target_step: usize) -> (Rollout, i64) {
    let mut r = at_first_step(p);
    let mut now = 0;
    while r.step < target_step || r.pending.is_some() {
        now += 1;
        assert!(now < 200, "never reached step {target_step}");
        let (next, actions) = step(&r, p, healthy(&r, now), now);
        r = next;
        for a in actions {
            r = step(&r, p, ok(a.hook()), now).0;
        }
    }
    (r, now)
}

#[test]
fn nodata_ticks_past_the_hold_at_a_later_step_never_advance() {
    let p = plan();
    let (r, started) = at_step(&p, 2);
    assert_eq!((r.step, r.weight), (2, 50));
    let nodata = |r: &Rollout, s| {
        tick(
            r,
            s,
            vec![
                check("error_rate", Verdict::Pass),
                check("p95_latency", Verdict::Nodata),
            ],
        )
    };
    let mut r = r;
    // Far past the 10 s hold: not one weight change, not a promotion.
    for s in started + 3..started + 120 {
        let (next, actions) = step(&r, &p, nodata(&r, s), s);
        assert!(actions.is_empty(), "acted on no data at {s}: {actions:?}");
        r = next;
    }
    assert_eq!((r.phase, r.step, r.weight), (Phase::Paused, 2, 50));
    assert!(
        r.reason.as_deref().unwrap_or("").contains("p95_latency"),
        "{:?}",
        r.reason
    );
    // Data returns: the pause lifts and the step advances on that fresh tick.
    let (r, actions) = step(&r, &p, healthy(&r, started + 121), started + 121);
    assert_eq!(r.phase, Phase::Progressing);
    assert_eq!(
        actions,
        vec![Action::SetWeight {
            step: 3,
            weight: 100
        }]
    );
}

#[test]
fn a_tick_judged_on_samples_from_before_this_steps_weight_never_advances() {
    let p = plan();
    let (r, started) = at_step(&p, 1);
    let s = started + 20;
    let Event::Tick(fresh) = healthy(&r, s) else {
        unreachable!()
    };
    for since in [None, Some(at(started)), Some(at(started + 1))] {
        let old = Tick {
            samples_since: since,
            ..fresh.clone()
        };
        let (next, actions) = step(&r, &p, Event::Tick(old), s);
        assert!(actions.is_empty(), "advanced on samples since {since:?}");
        assert_eq!(next.step, 1);
    }
    // The same verdicts on samples taken after this step's warmup do advance.
    let (_, actions) = step(&r, &p, Event::Tick(fresh), s);
    assert_eq!(
        actions,
        vec![Action::SetWeight {
            step: 2,
            weight: 50
        }]
    );
}

#[test]
fn a_healthy_tick_from_before_the_hold_ended_does_not_advance_later_without_a_new_tick() {
    let p = plan();
    let r = at_first_step(&p);
    let (r, actions) = step(&r, &p, healthy(&r, 9), 9);
    assert!(actions.is_empty());
    // Time passes past the hold, but no tick looked at the canary after it.
    let (r, actions) = step(&r, &p, Event::Timer, 30);
    assert!(
        actions.is_empty(),
        "advanced on a tick from before the hold: {actions:?}"
    );
    let (_, actions) = step(&r, &p, healthy(&r, 31), 31);
    assert_eq!(
        actions,
        vec![Action::SetWeight {
            step: 1,
            weight: 25
        }]
    );
}

/// The walk above treats `failed` as terminal; a `failed` rollout whose rollback hook never
/// answered is not: it still owes the rollback and keeps a task. Reached the machine's way,
/// every event must keep it owing (or, on the rollback's success, settle it rolled back) and
/// never move traffic forward or promote.
#[test]
fn failed_with_a_rollback_still_owed_takes_every_event_without_acting_forward() {
    let p = plan();
    let r = at_first_step(&p);
    let (r, _) = step(
        &r,
        &p,
        Event::Abort {
            reason: "bad".into(),
        },
        3,
    );
    let (owed, _) = step(
        &r,
        &p,
        Event::HookFailed {
            hook: HookKind::Rollback,
            error: "timeout".into(),
        },
        4,
    );
    assert!(owed.rollback_undelivered(), "{owed:?}");
    assert!(owed.is_live());
    for e in all_events(&owed) {
        let t = handle(&owed, &p, e.clone(), at(50));
        let ctx = format!("failed, rollback owed + {e:?}");
        assert!(
            t.rollout.rollback_decided,
            "{ctx}: rollback decision cleared"
        );
        assert!(
            !t.actions
                .iter()
                .any(|a| matches!(a, Action::Promote | Action::SetWeight { .. })),
            "{ctx}: acted forward"
        );
        assert!(t.rollout.weight <= owed.weight, "{ctx}: weight went up");
        match e {
            Event::HookSucceeded {
                hook: HookKind::Rollback,
            } => {
                assert_eq!(t.rollout.phase, Phase::RolledBack, "{ctx}");
                assert_eq!(t.rollout.pending, None, "{ctx}");
                assert_eq!(t.rollout.weight, 0, "{ctx}");
                assert!(!t.rollout.is_live(), "{ctx}");
            }
            _ => {
                assert_eq!(t.rollout.phase, Phase::Failed, "{ctx}");
                assert!(
                    t.rollout.rollback_undelivered(),
                    "{ctx}: the owed rollback was dropped"
                );
                assert!(t.rollout.is_live(), "{ctx}");
            }
        }
    }
}

/// A hook's name is part of its Idempotency-Key and of the delivery log: it must be the
/// rule file's word, the same one serde writes.
#[test]
fn each_hook_is_named_as_the_rule_file_and_the_payload_name_it() {
    for (hook, name) in [
        (HookKind::SetWeight, "set_weight"),
        (HookKind::Promote, "promote"),
        (HookKind::Rollback, "rollback"),
    ] {
        assert_eq!(hook.as_str(), name);
        assert_eq!(
            serde_json::to_value(hook).ok(),
            Some(serde_json::json!(name))
        );
    }
    assert_eq!(
        Action::Rollback { reason: "x".into() }.hook(),
        HookKind::Rollback
    );
    assert_eq!(Action::Promote.hook(), HookKind::Promote);
    assert_eq!(
        Action::SetWeight {
            step: 1,
            weight: 25
        }
        .hook(),
        HookKind::SetWeight
    );
}
