//! kill -9 exactly inside each window where a crash could lose a rollback, repeat or skip a
//! step, or let a promote slip through — not at random moments hoping to land there. The daemon
//! (a debug build) runs with `CANARYD_TEST_STOP_AT=<point>` (`src/faults.rs`): it stops dead at
//! that point, the test kills it, restarts it on the same state directory without the variable,
//! and checks what the receiver got against a real Prometheus judging a real service.
//!
//! - `before_hook`: a decision is saved, its hook not yet called;
//! - `after_hook`: the hook answered 2xx, its outcome not yet saved;
//! - `mid_tick`: a tick's queries are answered, nothing decided;
//! - `mid_reload`: a changed rule file is parsed, not yet swapped in.

use crate::common;

use std::time::Duration;

use canaryd::demo::receiver::ReceivedCall;
use common::{RuleOpts, Stack, calls_to, weights};

const STOP_ENV: &str = canaryd::faults::STOP_ENV;

fn key(call: &ReceivedCall) -> Option<&str> {
    call.headers
        .iter()
        .find(|(n, _)| n == "idempotency-key")
        .map(|(_, v)| v.as_str())
}

/// Weights only go up, one plan step at a time, each step once (a re-delivery of the same step
/// is allowed: at least once), and every step's hold was honoured between two set_weight calls.
fn assert_steps_in_order(calls: &[ReceivedCall], plan: &[u64], hold: Duration) {
    let sets = calls_to(calls, "/weight");
    let mut seen: Vec<(u64, std::time::SystemTime)> = Vec::new();
    for c in sets {
        let w = c.body["weight"].as_u64().unwrap_or_default();
        if seen.last().is_some_and(|(last, _)| *last == w) {
            continue;
        }
        seen.push((w, c.at));
    }
    let ws: Vec<u64> = seen.iter().map(|(w, _)| *w).collect();
    assert_eq!(ws, plan, "steps skipped, repeated or out of order");
    for pair in seen.windows(2) {
        let held = pair[1].1.duration_since(pair[0].1).unwrap_or_default();
        assert!(
            held >= hold,
            "step at {}% held {held:?} < {hold:?}",
            pair[0].0
        );
    }
}

fn bad_canary_opts() -> RuleOpts {
    RuleOpts {
        hold: "10m",
        failure_limit: 1,
        ..RuleOpts::default()
    }
}

/// A rollout started on a daemon told to stop dead at `stop_at` (`point` or `point#n`, the n-th
/// time it gets there), once it has stopped there.
async fn stopped_at(
    rule: &str,
    opts: RuleOpts,
    stop_at: &str,
    before_stop: impl FnOnce(&Stack),
) -> (Stack, String) {
    let stack = Stack::start_with(rule, opts, "", &[(STOP_ENV, stop_at)]).await;
    let id = stack.start_at_first_step("v1").await;
    before_stop(&stack);
    let point = stop_at.split('#').next().unwrap_or(stop_at);
    stack
        .daemon
        .wait_stopped_at(point, Duration::from_secs(40))
        .await;
    (stack, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_a_rollback_is_saved_and_before_its_hook_the_restart_delivers_it() {
    let (mut stack, id) = stopped_at(
        "fault-before-rb",
        bad_canary_opts(),
        "before_hook:rollback",
        |s| s.degrade_canary_errors(0.5),
    )
    .await;
    stack.restart(&[]).await;
    let r = stack.daemon.wait_ended(&id, Duration::from_secs(40)).await;
    assert_eq!(r["phase"], "rolled_back", "{r}");
    let calls = stack.receiver.calls();
    let rollbacks = calls_to(&calls, "/rollback");
    assert_eq!(rollbacks.len(), 1, "the owed rollback, delivered once");
    assert_eq!(
        key(rollbacks[0]),
        Some(format!("{id}:rollback:0:0").as_str())
    );
    assert!(
        calls_to(&calls, "/promote").is_empty(),
        "promoted after a rollback"
    );
    assert_eq!(weights(&calls), vec![5], "traffic moved after the rollback");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_the_rollback_hook_answered_the_restart_delivers_it_again_same_key() {
    let (mut stack, id) = stopped_at(
        "fault-after-rb",
        bad_canary_opts(),
        "after_hook:rollback",
        |s| s.degrade_canary_errors(0.5),
    )
    .await;
    assert_eq!(calls_to(&stack.receiver.calls(), "/rollback").len(), 1);
    stack.restart(&[]).await;
    let r = stack.daemon.wait_ended(&id, Duration::from_secs(40)).await;
    assert_eq!(r["phase"], "rolled_back", "{r}");
    let calls = stack.receiver.calls();
    let rollbacks = calls_to(&calls, "/rollback");
    // The success was never saved, so the restart cannot know it arrived: at least once.
    assert_eq!(rollbacks.len(), 2, "delivered once more after the restart");
    assert_eq!(key(rollbacks[0]), key(rollbacks[1]), "same Idempotency-Key");
    assert!(key(rollbacks[0]).is_some());
    assert_eq!(rollbacks[0].body["step"], rollbacks[1].body["step"]);
    assert!(
        calls_to(&calls, "/promote").is_empty(),
        "promoted after a rollback"
    );
    assert_eq!(weights(&calls), vec![5], "traffic moved after the rollback");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_before_a_set_weight_hook_the_restart_delivers_that_step_and_skips_none() {
    // The second set_weight is step 1 (25 %).
    let opts = RuleOpts {
        hold: "3s",
        ..RuleOpts::default()
    };
    let (mut stack, id) =
        stopped_at("fault-before-sw", opts, "before_hook:set_weight#2", |_| ()).await;
    assert_eq!(weights(&stack.receiver.calls()), vec![5]);
    stack.restart(&[]).await;
    let r = stack.daemon.wait_ended(&id, Duration::from_secs(60)).await;
    assert_eq!(r["phase"], "succeeded", "{r}");
    let calls = stack.receiver.calls();
    assert_steps_in_order(&calls, &[5, 25, 50, 100], Duration::from_secs(3));
    assert_eq!(calls_to(&calls, "/promote").len(), 1);
    assert!(calls_to(&calls, "/rollback").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_tick_the_restart_resumes_the_same_step_and_never_shortens_a_hold() {
    // Tick 3 is inside step 0's hold (interval 1 s, warmup 2 s, hold 12 s), and the hold
    // outlasts a restart on a loaded machine, so the restarted daemon must still be at step 0.
    let opts = RuleOpts {
        hold: "12s",
        ..RuleOpts::default()
    };
    let (mut stack, id) = stopped_at("fault-mid-tick", opts, "mid_tick:gathered#3", |_| ()).await;
    stack.restart(&[]).await;
    let r = stack.daemon.rollout(&id).await;
    assert_eq!(
        (r["step"].as_u64(), r["weight"].as_u64()),
        (Some(0), Some(5)),
        "{r}"
    );
    let r = stack.daemon.wait_ended(&id, Duration::from_secs(60)).await;
    assert_eq!(r["phase"], "succeeded", "{r}");
    let calls = stack.receiver.calls();
    assert_steps_in_order(&calls, &[5, 25, 50, 100], Duration::from_secs(12));
    assert!(calls_to(&calls, "/rollback").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_reload_the_restart_keeps_the_running_rollout_on_its_own_rule() {
    let env = [(STOP_ENV, "mid_reload")];
    let opts = RuleOpts {
        hold: "3s",
        ..RuleOpts::default()
    };
    let mut stack = Stack::start_with("fault-mid-reload", opts, "", &env).await;
    let id = stack.start_at_first_step("v1").await;
    // New hook paths and new weights: if the running rollout took the new file, it would show.
    let path = stack.rule_path();
    let text = std::fs::read_to_string(&path).expect("rule file");
    let changed = text
        .replace("/weight\"", "/weight-new\"")
        .replace("weight: 25,", "weight: 30,");
    assert_ne!(changed, text);
    std::fs::write(&path, changed).expect("rewrite rule file");
    stack
        .daemon
        .wait_stopped_at("mid_reload:parsed", Duration::from_secs(20))
        .await;
    stack.restart(&[]).await;
    let r = stack.daemon.wait_ended(&id, Duration::from_secs(60)).await;
    assert_eq!(r["phase"], "succeeded", "{r}");
    let calls = stack.receiver.calls();
    assert!(
        calls_to(&calls, "/weight-new").is_empty(),
        "running rollout took the new rule"
    );
    assert_steps_in_order(&calls, &[5, 25, 50, 100], Duration::from_secs(3));
    // The restarted daemon serves the new file to new rollouts.
    let (_, rules) = stack.daemon.get("/api/v1/rules").await;
    assert!(rules.to_string().contains("/weight-new"), "{rules}");
}
