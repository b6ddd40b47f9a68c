//! Hooks at least once, against a real Prometheus and a real receiver: a receiver that is down
//! for a while gets every delivery, in order; a rollback that fails past its retries leaves the
//! rollout `failed`, is counted, and is delivered later — also across a kill -9 of canaryd.

use crate::common;

use std::time::Duration;

use common::{Daemon, RuleOpts, Stack, calls_to, weights};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_down_for_a_while_gets_every_delivery_in_order() {
    let stack = Stack::start(
        "down-receiver-api",
        RuleOpts {
            hold: "3s",
            ..RuleOpts::default()
        },
    )
    .await;
    // Retries are 4: three failures in a row are ridden out, at the first call and again later.
    stack.receiver.fail_next(3);
    let id = stack.daemon.start_rollout("down-receiver-api", "v5").await;
    assert!(
        stack
            .receiver
            .wait_for(|c| weights(c).contains(&25), Duration::from_secs(60))
            .await
    );
    stack.receiver.fail_next(3);
    let r = stack.daemon.wait_ended(&id, Duration::from_secs(90)).await;
    assert_eq!(r["phase"], "succeeded", "{r}");
    let calls = stack.receiver.calls();
    assert_eq!(weights(&calls), vec![5, 25, 50, 100]);
    assert_eq!(calls.last().map(|c| c.path.as_str()), Some("/promote"));
    assert_eq!(stack.receiver.attempts(), calls.len() + 6);
    // Every attempt, the six answered 500 included, carries the key of the delivery it was for.
    let delivered: std::collections::BTreeSet<&str> = calls
        .iter()
        .filter_map(|c| {
            c.headers
                .iter()
                .find(|(n, _)| n == "idempotency-key")
                .map(|(_, v)| v.as_str())
        })
        .collect();
    assert_eq!(delivered.len(), calls.len(), "one key per delivery");
    let log = stack.receiver.attempt_log();
    assert_eq!(log.iter().filter(|a| a.status == 500).count(), 6);
    for a in &log {
        let key = a.idempotency_key.as_deref().unwrap_or_default();
        assert!(
            delivered.contains(key),
            "attempt {a:?} has no delivered key"
        );
    }
    let (_, h) = stack
        .daemon
        .get(&format!("/api/v1/rollouts/{id}/history"))
        .await;
    let log = h["hook_deliveries"].as_array().cloned().unwrap_or_default();
    assert_eq!(log.len(), 5, "{h}");
    assert!(log.iter().all(|d| d["outcome"] == "delivered"), "{h}");
    assert!(log.iter().any(|d| d["attempts"].as_u64() == Some(4)), "{h}");
    assert!(
        h["ticks"].as_array().is_some_and(|t| !t.is_empty()),
        "ticks recorded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undelivered_rollback_is_failed_then_delivered_even_across_a_kill_9() {
    let mut stack = Stack::start(
        "lost-rollback-api",
        RuleOpts {
            hold: "30s",
            ..RuleOpts::default()
        },
    )
    .await;
    let id = stack.start_at_first_step("v6").await;
    // Two full deliveries (1 + 4 retries each) fail: past the hook's limit.
    stack.receiver.fail_next(10);
    let (status, body) = stack
        .daemon
        .post(&format!("/api/v1/rollouts/{id}/abort"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    let r = stack
        .daemon
        .wait_phase(&id, &["failed", "rolled_back"], Duration::from_secs(30))
        .await;
    assert_eq!(r["phase"], "failed", "{r}");
    assert!(
        r["reason"]
            .as_str()
            .unwrap_or("")
            .contains("rollback hook failed"),
        "{r}"
    );
    let m = stack.daemon.metrics().await;
    assert!(
        m.lines().any(|l| l.starts_with("canaryd_hook_calls_total")
            && l.contains(r#"hook="rollback""#)
            && l.contains(r#"outcome="error""#)
            && !l.ends_with(" 0")),
        "{m}"
    );
    assert!(
        stack
            .daemon
            .log_text()
            .contains("rollout.rollback_undelivered")
    );
    // Crash while the rollback is owed; the restarted daemon still owes it.
    stack.daemon.kill_and_wait().await;
    let rule = stack.dir.path().join("lost-rollback-api.yaml");
    stack.daemon = Daemon::start(&stack.prometheus.url(), &[rule], stack.dir.path(), &[]).await;
    let r = stack
        .daemon
        .wait_phase(&id, &["rolled_back"], Duration::from_secs(40))
        .await;
    assert_eq!(r["weight"], 0);
    let calls = stack.receiver.calls();
    assert_eq!(
        calls_to(&calls, "/rollback").len(),
        1,
        "delivered once it could be"
    );
    assert!(calls_to(&calls, "/promote").is_empty());
    assert_eq!(weights(&calls), vec![5]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_whose_rollback_is_still_owed_takes_no_new_rollout() {
    let stack = Stack::start(
        "owed-rollback-api",
        RuleOpts {
            hold: "30s",
            ..RuleOpts::default()
        },
    )
    .await;
    let id = stack.start_at_first_step("v9").await;
    stack.receiver.fail_next(1000);
    let (status, body) = stack
        .daemon
        .post(&format!("/api/v1/rollouts/{id}/abort"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    let r = stack
        .daemon
        .wait_phase(&id, &["failed", "rolled_back"], Duration::from_secs(30))
        .await;
    assert_eq!(r["phase"], "failed", "{r}");
    // The old canary is still being taken out: a new one must not get traffic meanwhile.
    let (status, body) = stack
        .daemon
        .post(
            "/api/v1/rollouts",
            Some(serde_json::json!({"rule": "owed-rollback-api", "version": "v10"})),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or("")
            .contains("rollback not yet delivered"),
        "{body}"
    );
    assert_eq!(
        weights(&stack.receiver.calls()),
        vec![5],
        "no new set_weight"
    );
}
