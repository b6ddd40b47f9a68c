//! Human controls as tables on the pure machine: Argo's promote (one step) and promote --full,
//! abort beating a pending promote, pause/resume/approve with who and why, retry, emergency.

use crate::machine_support;

use canaryd::rollout::controls::{Control, can_retry};
use canaryd::rollout::{Action, Event, HookKind, Phase, Plan, Rollout, handle};
use canaryd::rules::window::{Blackout, Windows};
use machine_support::{at, healthy_error_rate as healthy, new_rollout, ok, plan_of, step};

/// 5, 25 and 50 % held ten minutes each (50 % waits for approval), then 100 %.
fn plan() -> Plan {
    let mut p = plan_of(&[5, 25, 50], 600);
    p.steps[2].approval = true;
    p
}

fn control(c: Control, reason: Option<&str>) -> Event {
    Event::Control {
        control: c,
        by: "alice".into(),
        reason: reason.map(String::from),
    }
}

/// Started at t=0 and, unless an emergency (which waits for approval), at its first weight.
fn started(p: &Plan, emergency: bool) -> Rollout {
    let mut r = new_rollout();
    r.emergency = emergency;
    let (r, _) = step(&r, p, Event::Start, 0);
    if emergency {
        return r;
    }
    step(&r, p, ok(HookKind::SetWeight), 0).0
}

#[test]
fn promote_leaves_the_current_step_now_and_records_who_and_why() {
    let p = plan();
    let r = started(&p, false);
    // 1 s into a 10-minute hold, no tick yet: promote moves to the next weight at once.
    let (r, actions) = step(&r, &p, control(Control::Promote, Some("looks fine")), 1);
    assert_eq!(
        actions,
        vec![Action::SetWeight {
            step: 1,
            weight: 25
        }]
    );
    assert_eq!(r.controls.len(), 1);
    let c = &r.controls[0];
    assert_eq!(
        (c.action.as_str(), c.by.as_str(), c.reason.as_deref()),
        ("promote", "alice", Some("looks fine"))
    );
    assert_eq!(
        (c.from, c.to, c.at),
        (Phase::Progressing, Phase::Progressing, at(1))
    );
    // While that weight is in flight a second promote is refused (409), and not recorded.
    let t = handle(&r, &p, control(Control::Promote, None), at(2));
    assert!(t.rejected.is_some() && t.actions.is_empty());
    assert_eq!(t.rollout.controls.len(), 1);
    // Confirmed at 25 %, promote again: passes the 50 % step's approval gate too, as a human
    // decision, then from the last step promote is the promotion.
    let (r, _) = step(&r, &p, ok(HookKind::SetWeight), 3);
    let (r, a) = step(&r, &p, control(Control::Promote, None), 4);
    assert_eq!(
        a,
        vec![Action::SetWeight {
            step: 2,
            weight: 50
        }]
    );
    let (r, _) = step(&r, &p, ok(HookKind::SetWeight), 5);
    let (r, a) = step(&r, &p, control(Control::Promote, None), 6);
    assert_eq!(
        a,
        vec![Action::SetWeight {
            step: 3,
            weight: 100
        }]
    );
    let (r, a) = step(&r, &p, ok(HookKind::SetWeight), 7);
    assert_eq!(a, vec![Action::Promote], "last step with no hold promotes");
    assert_eq!(r.phase, Phase::Promoting);
}

#[test]
fn promote_full_skips_every_remaining_step() {
    let p = plan();
    let r = started(&p, false);
    let (r, actions) = step(&r, &p, control(Control::PromoteFull, None), 1);
    assert_eq!(actions, vec![Action::Promote]);
    assert_eq!(r.phase, Phase::Promoting);
    assert_eq!(r.reason.as_deref(), Some("promoted by user"));
    assert_eq!(r.controls[0].action, "promote_full");
    let (r, _) = step(&r, &p, ok(HookKind::Promote), 2);
    assert_eq!(r.phase, Phase::Succeeded);
}

#[test]
fn abort_wins_over_a_pending_promote_and_no_promote_follows_a_rollback() {
    let p = plan();
    for promote in [Control::Promote, Control::PromoteFull] {
        let mut r = started(&p, false);
        // Get to the last step so both kinds of promote put a Promote hook in flight.
        for s in 1..=3 {
            r = step(&r, &p, control(Control::Promote, None), s).0;
            if r.pending
                .as_ref()
                .is_some_and(|a| a.hook() == HookKind::SetWeight)
            {
                r = step(&r, &p, ok(HookKind::SetWeight), s).0;
            }
        }
        if r.phase != Phase::Promoting {
            r = step(&r, &p, control(promote, None), 10).0;
        }
        assert_eq!(r.pending, Some(Action::Promote), "{promote:?}");
        let (r, actions) = step(&r, &p, control(Control::Abort, Some("bad dashboards")), 11);
        assert_eq!(r.phase, Phase::RollingBack);
        assert_eq!(
            actions,
            vec![Action::Rollback {
                reason: "aborted: bad dashboards".into()
            }]
        );
        // The promote's late success is not for what is in flight any more: ignored.
        let t = handle(&r, &p, ok(HookKind::Promote), at(12));
        assert!(t.rejected.is_some());
        assert_eq!(t.rollout.phase, Phase::RollingBack);
        // And no control can promote after the rollback decision.
        for c in [
            Control::Promote,
            Control::PromoteFull,
            Control::Resume,
            Control::Approve,
        ] {
            let t = handle(&r, &p, control(c, None), at(13));
            assert!(t.rejected.is_some(), "{c:?} accepted after rollback");
            assert!(t.actions.is_empty());
        }
    }
}

#[test]
fn pause_resume_approve_are_recorded_only_when_accepted() {
    let p = plan();
    let r = started(&p, false);
    let (r, _) = step(&r, &p, control(Control::Pause, Some("lunch")), 1);
    assert_eq!(r.phase, Phase::Paused);
    assert_eq!(r.reason.as_deref(), Some("paused by user"));
    assert_eq!(r.controls[0].reason.as_deref(), Some("lunch"));
    let t = handle(&r, &p, control(Control::Pause, None), at(2));
    assert!(t.rejected.is_some());
    assert_eq!(t.rollout.controls.len(), 1);
    let t = handle(&r, &p, control(Control::Approve, None), at(2));
    assert!(t.rejected.is_some(), "nothing to approve");
    let (r, _) = step(&r, &p, control(Control::Resume, None), 3);
    assert_eq!(r.phase, Phase::Progressing);
    let actions: Vec<&str> = r.controls.iter().map(|c| c.action.as_str()).collect();
    assert_eq!(actions, ["pause", "resume"]);
}

#[test]
fn retry_only_from_rolled_back_or_failed_with_nothing_owed() {
    let p = plan();
    let r = started(&p, false);
    assert!(can_retry(&r).is_err(), "a live rollout is not retried");
    let (r, _) = step(&r, &p, control(Control::Abort, None), 1);
    assert!(can_retry(&r).is_err(), "rolling_back");
    let failed = step(
        &r,
        &p,
        Event::HookFailed {
            hook: HookKind::Rollback,
            error: "503".into(),
        },
        2,
    )
    .0;
    assert_eq!(failed.phase, Phase::Failed);
    assert!(
        can_retry(&failed)
            .unwrap_err()
            .contains("not been delivered")
    );
    let (done, _) = step(&r, &p, ok(HookKind::Rollback), 2);
    assert_eq!(done.phase, Phase::RolledBack);
    assert_eq!(can_retry(&done), Ok(()));
    let mut promoted = started(&p, false);
    promoted = step(&promoted, &p, control(Control::PromoteFull, None), 1).0;
    promoted = step(&promoted, &p, ok(HookKind::Promote), 2).0;
    assert!(can_retry(&promoted).is_err(), "succeeded is not retried");
}

#[test]
fn emergency_waits_for_approval_before_any_traffic_and_ignores_windows() {
    let mut p = plan();
    // A blackout covering today: a normal rollout waits, an emergency does not.
    p.windows = Some(Windows {
        timezone: Windows::parse_timezone("America/New_York").unwrap(),
        allow: vec![],
        deny: vec![Blackout::parse("2026-11-17/2026-11-19").unwrap()],
    });
    let r = started(&p, true);
    assert_eq!(r.phase, Phase::WaitingApproval);
    assert!(r.pending.is_none(), "no weight before the approval");
    for e in [Event::Timer, Event::Start] {
        let t = handle(&r, &p, e, at(1));
        assert!(t.actions.is_empty());
        assert_eq!(t.rollout.phase, Phase::WaitingApproval);
    }
    let (r, actions) = step(&r, &p, control(Control::Approve, Some("incident 42")), 2);
    assert_eq!(actions, vec![Action::SetWeight { step: 0, weight: 5 }]);
    assert_eq!(r.controls[0].from, Phase::WaitingApproval);
    let (r, _) = step(&r, &p, ok(HookKind::SetWeight), 3);
    // Hold passed, a promote at the step: the blackout does not stop an emergency.
    let (r, a) = step(&r, &p, control(Control::Promote, None), 700);
    assert_eq!(
        a,
        vec![Action::SetWeight {
            step: 1,
            weight: 25
        }]
    );
    let (_, a) = step(&r, &p, ok(HookKind::SetWeight), 701);
    assert!(a.is_empty());

    // The same plan without emergency: a healthy tick after the hold waits for the blackout.
    let normal = started(&p, false);
    let (normal, a) = step(&normal, &p, healthy(&normal, 700), 700);
    assert!(a.is_empty());
    assert_eq!(normal.phase, Phase::WaitingWindow);
    assert_eq!(
        normal.reason.as_deref(),
        Some("deploy blackout 2026-11-17/2026-11-19 (America/New_York)")
    );
}

#[test]
fn state_stored_before_controls_existed_still_loads() {
    // A rollout as older versions stored it: none of the fields controls, retries, emergencies
    // and checkpoints added. The store keeps the state as this JSON, so old state dirs load.
    let mut old = serde_json::to_value(Rollout::new(
        "ro-old".into(),
        "api".into(),
        "v1".into(),
        at(0),
    ))
    .expect("json");
    let obj = old.as_object_mut().expect("object");
    for k in ["controls", "emergency", "retry_of", "run", "verify"] {
        obj.remove(k);
    }
    let r: Rollout = serde_json::from_value(old).expect("old state loads");
    assert_eq!(
        (r.run, r.emergency, r.retry_of, r.controls.len()),
        (1, false, None, 0)
    );
    assert!(r.verify.is_none());
}
