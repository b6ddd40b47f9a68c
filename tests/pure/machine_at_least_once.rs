//! The machine's side of "never lose a rollback": an undelivered rollback stays owed, a recovered
//! state decides exactly as the original would, and `on_nodata: rollback` rolls back.

use crate::machine_support;

use canaryd::judge::{Score, ScoreOutcome};
use canaryd::rollout::{Action, Event, HookKind, Phase, Plan, Rollout, Tick, handle};
use canaryd::rules::schema::OnNodata;
use canaryd::verdict::{Check, Verdict};
use machine_support::{at, at_first_step, plan_of, step};

fn plan(on_nodata: OnNodata) -> Plan {
    Plan {
        on_nodata,
        ..plan_of(&[5, 25, 50], 10)
    }
}

fn nodata_tick(r: &Rollout, secs: i64) -> Event {
    let check = Check {
        critical: true,
        critical_effect: false,
        ..Check::named("error_rate", Verdict::Nodata, "empty result")
    };
    Event::Tick(Tick {
        at: at(secs),
        step: r.step,
        checks: vec![check],
        score: Score {
            value: 0.0,
            outcome: ScoreOutcome::Fail,
            reason: String::new(),
            nodata: true,
        },
        sequential: Default::default(),
        samples_since: None,
        counters_moved: Default::default(),
    })
}

#[test]
fn an_undelivered_rollback_stays_owed_until_it_arrives_then_ends_rolled_back() {
    let p = plan(OnNodata::Pause);
    let r = at_first_step(&p);
    let (r, _) = step(
        &r,
        &p,
        Event::Abort {
            reason: "bad".into(),
        },
        3,
    );
    let failed = |r: &Rollout, s| {
        step(
            r,
            &p,
            Event::HookFailed {
                hook: HookKind::Rollback,
                error: "connection refused".into(),
            },
            s,
        )
    };
    let (r, actions) = failed(&r, 4);
    assert_eq!(r.phase, Phase::Failed);
    assert!(actions.is_empty());
    assert!(r.rollback_undelivered() && r.is_live(), "{r:?}");
    // Further failures change nothing but keep it owed.
    let (r, _) = failed(&r, 30);
    assert!(r.rollback_undelivered());
    assert!(r.reason.as_deref().unwrap_or("").contains("bad"));
    // Nothing but the rollback's delivery is heard while it is owed.
    for e in [Event::Promote, Event::Resume, Event::Start] {
        let t = handle(&r, &p, e, at(31));
        assert!(t.rejected.is_some() && t.actions.is_empty());
    }
    let (r, _) = step(
        &r,
        &p,
        Event::HookSucceeded {
            hook: HookKind::Rollback,
        },
        90,
    );
    assert_eq!(
        (r.phase, r.weight, r.pending.clone()),
        (Phase::RolledBack, 0, None)
    );
    assert!(!r.is_live());
}

#[test]
fn a_state_round_tripped_through_json_decides_exactly_like_the_original() {
    let p = plan(OnNodata::Pause);
    let r = at_first_step(&p);
    let (r, _) = step(&r, &p, nodata_tick(&r, 3), 3);
    let restored: Rollout = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
    assert_eq!(restored, r);
    let a = handle(&r, &p, nodata_tick(&r, 4), at(4));
    let b = handle(&restored, &p, nodata_tick(&restored, 4), at(4));
    assert_eq!(a, b);
    assert_eq!(
        a.rollout.phase,
        Phase::Paused,
        "counter kept across the round trip"
    );
}

#[test]
fn on_nodata_rollback_rolls_back_after_nodata_limit_ticks() {
    let p = plan(OnNodata::Rollback);
    let r = at_first_step(&p);
    let (r, actions) = step(&r, &p, nodata_tick(&r, 3), 3);
    assert!(actions.is_empty());
    let (r, actions) = step(&r, &p, nodata_tick(&r, 4), 4);
    assert_eq!(r.phase, Phase::RollingBack);
    assert!(r.rollback_decided);
    assert!(
        matches!(&actions[..], [Action::Rollback { reason }] if reason.contains("on_nodata: rollback")),
        "{actions:?}"
    );
}

/// Not only JSON: the owed rollback saved in the SQLite store `serve` uses, the store dropped
/// (its directory lock released, as a kill releases it), reopened on the same directory, comes
/// back owed and decides exactly as the original would — including the rollback's success
/// settling it. (A real kill -9 between save and hook: `tests/it/fault_points.rs`.)
#[test]
fn an_owed_rollback_saved_in_sqlite_and_reopened_is_still_owed_and_decides_the_same() {
    use canaryd::store::Store;
    use canaryd::store::sqlite::{SqliteStore, StartMode};
    let p = plan(OnNodata::Pause);
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
    assert!(owed.rollback_undelivered());
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = SqliteStore::open(dir.path(), StartMode::Resume).expect("open");
        store.create(&owed, "name: api\n").expect("create");
        store.save(&owed, None).expect("save");
    }
    let store = SqliteStore::open(dir.path(), StartMode::Resume).expect("reopen");
    let live: Vec<Rollout> = store
        .list()
        .expect("list")
        .into_iter()
        .filter(Rollout::is_live)
        .collect();
    assert_eq!(
        live,
        vec![owed.clone()],
        "the owed rollout is what recovery resumes"
    );
    let delivered = Event::HookSucceeded {
        hook: HookKind::Rollback,
    };
    let a = handle(&owed, &p, delivered.clone(), at(5));
    let b = handle(&live[0], &p, delivered, at(5));
    assert_eq!(a, b);
    assert_eq!(a.rollout.phase, Phase::RolledBack);
}
