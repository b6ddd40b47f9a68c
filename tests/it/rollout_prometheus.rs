//! Rollouts against a real Prometheus: the core promises of canaryd, end to end.

use crate::common;

use std::time::Duration;

use common::{RuleOpts, Stack, calls_to, weights};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_canary_is_shifted_5_25_50_100_then_promoted() {
    let stack = Stack::start("healthy-api", RuleOpts::default()).await;
    let id = stack.daemon.start_rollout("healthy-api", "v2.0.0").await;
    let r = stack.daemon.wait_ended(&id, Duration::from_secs(90)).await;
    assert_eq!(r["phase"], "succeeded", "{r}");
    let calls = stack.receiver.calls();
    assert_eq!(weights(&calls), vec![5, 25, 50, 100]);
    assert_eq!(calls_to(&calls, "/promote").len(), 1);
    assert!(calls_to(&calls, "/rollback").is_empty());
    // Promotion is the last call, after the 100 % weight.
    assert_eq!(calls.last().map(|c| c.path.as_str()), Some("/promote"));
    let promote = &calls_to(&calls, "/promote")[0].body;
    assert_eq!(promote["event"], "promote");
    assert_eq!(promote["version"], "v2.0.0");
    assert_eq!(promote["rollout_id"], id.as_str());
    // Every check of the last tick carried its numbers.
    for c in r["checks"].as_array().expect("checks") {
        assert!(c["canary"].is_number() && c["baseline"].is_number(), "{c}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_error_rate_at_20_percent_during_step_2_is_rolled_back() {
    let stack = Stack::start(
        "degrading-api",
        RuleOpts {
            hold: "12s",
            ..RuleOpts::default()
        },
    )
    .await;
    let id = stack.daemon.start_rollout("degrading-api", "v2.0.1").await;
    assert!(
        stack
            .receiver
            .wait_for(
                |c| common::weights(c).contains(&25),
                Duration::from_secs(60)
            )
            .await,
        "never reached step 2"
    );
    stack.degrade_canary_errors(0.2);
    let r = stack.daemon.wait_ended(&id, Duration::from_secs(60)).await;
    assert_eq!(r["phase"], "rolled_back", "{r}");
    let calls = stack.receiver.calls();
    assert_eq!(
        weights(&calls),
        vec![5, 25],
        "no set_weight after the degradation"
    );
    assert!(calls_to(&calls, "/promote").is_empty());
    let rollbacks = calls_to(&calls, "/rollback");
    assert_eq!(rollbacks.len(), 1);
    let reason = r["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("error_rate") && reason.contains("0.05"),
        "reason must name metric and threshold: {reason}"
    );
    let failing = common::check_of(&r, "error_rate").expect("error_rate check in status");
    assert_eq!(failing["verdict"], "fail");
    assert!(
        failing["canary"].as_f64().unwrap_or(0.0) > 0.05,
        "{failing}"
    );
    assert_eq!(failing["threshold"]["value"], 0.05);
    assert_eq!(failing["threshold"]["kind"], "rollback_above");
    // The rollback hook carries the same explanation.
    assert_eq!(rollbacks[0].body["event"], "rollback");
    assert!(
        rollbacks[0].body["reason"]
            .as_str()
            .unwrap_or("")
            .contains("error_rate")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_outage_pauses_and_never_promotes() {
    let mut stack = Stack::start(
        "outage-api",
        RuleOpts {
            hold: "6s",
            ..RuleOpts::default()
        },
    )
    .await;
    let id = stack.start_at_first_step("v3").await;
    stack.prometheus.stop().await;
    let r = stack
        .daemon
        .wait_phase(
            &id,
            &["paused", "succeeded", "rolled_back"],
            Duration::from_secs(40),
        )
        .await;
    assert_eq!(r["phase"], "paused", "{r}");
    assert!(
        r["reason"].as_str().unwrap_or("").contains("no data"),
        "{r}"
    );
    // Well past every hold: still paused, no promotion, no further weight.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let r = stack.daemon.rollout(&id).await;
    assert_eq!(r["phase"], "paused");
    let calls = stack.receiver.calls();
    assert!(calls_to(&calls, "/promote").is_empty());
    assert_eq!(weights(&calls), vec![5]);
    // The counter is registered at start; what proves the outage was counted is its value.
    let errors = common::metric_sum(
        &stack.daemon.metrics().await,
        "canaryd_prometheus_errors_total",
    );
    assert!(errors > 0.0, "outage not counted: {errors}");
    // Data returns: the no-data pause lifts by itself.
    stack
        .prometheus
        .restart()
        .await
        .expect("restart prometheus");
    let r = stack
        .daemon
        .wait_phase(
            &id,
            &["progressing", "promoting", "succeeded"],
            Duration::from_secs(40),
        )
        .await;
    assert_ne!(r["phase"], "paused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hook_failing_twice_is_retried_delivered_once_and_counted() {
    let stack = Stack::start("flaky-hook-api", RuleOpts::default()).await;
    stack.receiver.fail_next(2);
    let id = stack.start_at_first_step("v4").await;
    let r = stack.daemon.rollout(&id).await;
    assert_eq!(r["weight"], 5, "{r}");
    let calls = stack.receiver.calls();
    assert_eq!(weights(&calls), vec![5], "delivered exactly once");
    assert_eq!(stack.receiver.attempts(), 3);
    let key = calls[0]
        .headers
        .iter()
        .find(|(k, _)| k == "idempotency-key")
        .map(|(_, v)| v.clone());
    assert!(
        key.is_some_and(|k| k.contains(&id)),
        "Idempotency-Key header missing"
    );
    let m = stack.daemon.metrics().await;
    let line = |outcome: &str| {
        m.lines()
            .find(|l| {
                l.starts_with("canaryd_hook_calls_total")
                    && l.contains("hook=\"set_weight\"")
                    && l.contains(&format!("outcome=\"{outcome}\""))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    assert_eq!(line("error"), Some(2.0), "metrics:\n{m}");
    assert!(line("success").unwrap_or(0.0) >= 1.0, "metrics:\n{m}");
}
