//! `keeps_tick` is the controller's promise about the machine: a tick it answers `true` for
//! becomes the rollout's `last_tick` (so its history row is saved from the rollout, with no copy
//! held while the slot's decisions wait for their commit), and a tick it answers `false` for
//! leaves the rollout as it was (so the controller saves that tick's own row). Checked over
//! every phase, a hook in flight or not, the tick's step, warmup, and verdicts that decide.

use canaryd::rollout::{Action, Event, Phase, Rollout, Tick, handle, keeps_tick};
use canaryd::verdict::Verdict;

use crate::machine_support::*;

fn states() -> Vec<Rollout> {
    let p = plan_of(&[10, 50], 60);
    let fresh = new_rollout();
    let watching = started(&p, new_rollout());
    let mut out = vec![fresh, watching.clone()];
    for phase in Phase::ALL {
        let mut r = watching.clone();
        r.phase = phase;
        out.push(r.clone());
        r.pending = Some(Action::SetWeight {
            step: 1,
            weight: 50,
        });
        out.push(r);
    }
    out
}

#[test]
fn the_machine_keeps_exactly_the_ticks_keeps_tick_names() {
    let p = plan_of(&[10, 50], 60);
    let mut kept = 0;
    let mut ignored = 0;
    for r in states() {
        // Warmup (the plan's is 2 s) or past it; this step or another; healthy, failing, no data.
        for secs in [1, 30, 90] {
            for verdict in [Verdict::Pass, Verdict::Fail, Verdict::Nodata] {
                for step_off in [0, 1] {
                    let Event::Tick(mut t) = tick(&r, secs, vec![check("error_rate", verdict)])
                    else {
                        unreachable!()
                    };
                    t.step += step_off;
                    let keeps = keeps_tick(&r, &p, &t);
                    let after = handle(&r, &p, Event::Tick(t.clone()), at(secs)).rollout;
                    if keeps {
                        kept += 1;
                        let stored = Tick {
                            sequential: Default::default(),
                            counters_moved: Default::default(),
                            ..t
                        };
                        assert_eq!(after.last_tick, Some(stored), "{:?} at {secs}", r.phase);
                    } else {
                        ignored += 1;
                        assert_eq!(
                            after, r,
                            "{:?} at {secs}: an ignored tick changed it",
                            r.phase
                        );
                    }
                }
            }
        }
    }
    // Both sides were exercised, or the check above proves nothing.
    assert!(kept > 10 && ignored > 10, "kept {kept}, ignored {ignored}");
}
