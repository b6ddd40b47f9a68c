//! The guards that matter after the first step, on the real path (a real Prometheus judging a
//! real service, hooks to a real receiver): a `set_weight` or `promote` still in flight when the
//! rollout is aborted is cancelled and nothing is sent after the rollback; and no data at step 2,
//! past its hold, never advances the rollout but pauses it after `nodata_limit` ticks.

use crate::common;

use std::time::{Duration, Instant, SystemTime};

use canaryd::demo::service::Track;
use common::{RuleOpts, Stack, calls_to, weights};
use serde_json::json;

/// Polls `f` until it holds; panics with `what` after `timeout`.
async fn until(what: &str, timeout: Duration, f: impl Fn() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "{what} within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Aborts while a hook to `slow_path` is in flight (the receiver holds it 3 s, past the hook's
/// 2 s timeout) and checks the abort is answered at once, the rollback arrives within a second,
/// and no request of any other hook arrives after it — the in-flight hook's retries included.
async fn abort_cancels_a_hook_in_flight(stack: &Stack, id: &str, slow_path: &str) {
    let in_flight = stack.receiver.arrived(slow_path);
    let t0 = Instant::now();
    let (status, body) = stack
        .daemon
        .post(
            &format!("/api/v1/rollouts/{id}/abort"),
            Some(json!({"reason": "in flight"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "abort waited for the hook in flight"
    );
    until("rollback delivered", Duration::from_secs(2), || {
        stack.receiver.arrived("/rollback") > 0
    })
    .await;
    let r = stack
        .daemon
        .wait_phase(id, &["rolled_back", "failed"], Duration::from_secs(10))
        .await;
    assert_eq!(r["phase"], "rolled_back", "{r}");
    // Long enough for the cancelled hook's timeout (2 s) and its first retry to have come.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let log = stack.receiver.attempt_log();
    let rollback_at: SystemTime = log
        .iter()
        .find(|a| a.path == "/rollback")
        .map(|a| a.arrived)
        .expect("rollback attempt logged");
    let late: Vec<_> = log
        .iter()
        .filter(|a| a.path != "/rollback" && a.arrived >= rollback_at)
        .collect();
    assert!(late.is_empty(), "sent after the rollback: {late:?}");
    assert_eq!(
        stack.receiver.arrived(slow_path),
        in_flight,
        "the cancelled hook was retried"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_cancels_a_set_weight_in_flight_and_nothing_is_sent_after_the_rollback() {
    let opts = RuleOpts {
        hold: "3s",
        ..RuleOpts::default()
    };
    let stack = Stack::start("inflight-weight", opts).await;
    let id = stack.start_at_first_step("v1").await;
    stack
        .receiver
        .set_path_delay("/weight", Duration::from_secs(3));
    // Step 1's set_weight arrives and is held by the receiver.
    until("step 1's set_weight sent", Duration::from_secs(30), || {
        stack.receiver.arrived("/weight") >= 2
    })
    .await;
    abort_cancels_a_hook_in_flight(&stack, &id, "/weight").await;
    let r = stack.daemon.rollout(&id).await;
    assert_eq!(r["weight"], 0, "{r}");
    assert!(calls_to(&stack.receiver.calls(), "/promote").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_cancels_a_promote_in_flight_and_nothing_is_sent_after_the_rollback() {
    let opts = RuleOpts {
        hold: "2s",
        ..RuleOpts::default()
    };
    let stack = Stack::start("inflight-promote", opts).await;
    stack
        .receiver
        .set_path_delay("/promote", Duration::from_secs(3));
    let id = stack.start_at_first_step("v1").await;
    until("promote sent", Duration::from_secs(40), || {
        stack.receiver.arrived("/promote") >= 1
    })
    .await;
    abort_cancels_a_hook_in_flight(&stack, &id, "/promote").await;
    let r = stack.daemon.rollout(&id).await;
    assert_ne!(r["phase"], "succeeded", "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_data_at_step_2_past_its_hold_never_advances_and_pauses_after_nodata_limit() {
    let opts = RuleOpts {
        hold: "2s",
        nodata_limit: 4,
        ..RuleOpts::default()
    };
    let stack = Stack::start("nodata-step2", opts).await;
    let id = stack.start_at_first_step("v1").await;
    assert!(
        stack
            .receiver
            .wait_for(|c| weights(c).contains(&50), Duration::from_secs(40))
            .await,
        "step 2 never reached"
    );
    // The canary's series vanish the moment step 2 starts: every tick of step 2 has no data.
    stack.service.export(&[Track::Baseline]);
    let r = stack
        .daemon
        .wait_phase(
            &id,
            &["paused", "succeeded", "rolled_back", "failed"],
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(r["phase"], "paused", "{r}");
    assert!(
        r["reason"].as_str().unwrap_or_default().contains("no data"),
        "{r}"
    );
    assert_eq!(r["step"], 2, "{r}");
    assert!(r["nodata_ticks"].as_u64().unwrap_or_default() >= 4, "{r}");
    let calls = stack.receiver.calls();
    assert_eq!(weights(&calls), vec![5, 25, 50], "advanced on no data");
    assert!(calls_to(&calls, "/promote").is_empty());
}
