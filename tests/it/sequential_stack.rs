//! The sequential test on the real stack: a canary with twice the baseline's error rate, far
//! below the 5 % line and never past the warn line, is rolled back by its evidence; an
//! identical canary promotes.

use crate::common;

use std::time::Duration;

use canaryd::demo::service::Track;
use common::{RuleOpts, Stack, calls_to, weights};

fn sequential_rule(hold: &'static str) -> RuleOpts {
    RuleOpts {
        hold,
        sequential: true,
        ..RuleOpts::default()
    }
}

/// Busy tracks, so evidence arrives in seconds: 1,000 requests a second each.
fn traffic(stack: &Stack, baseline_errors: f64, canary_errors: f64) {
    stack.service.update(Track::Baseline, |p| {
        p.rps = 1000.0;
        p.error_rate = baseline_errors;
    });
    stack.service.update(Track::Canary, |p| {
        p.rps = 1000.0;
        p.error_rate = canary_errors;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_with_twice_the_baseline_error_rate_is_rolled_back_by_its_evidence() {
    let stack = Stack::start("twice-the-errors", sequential_rule("60s")).await;
    traffic(&stack, 0.004, 0.008);
    let id = stack.daemon.start_rollout("twice-the-errors", "v7").await;
    let r = stack.daemon.wait_ended(&id, Duration::from_secs(90)).await;
    assert_eq!(r["phase"], "rolled_back", "{r}");
    let reason = r["reason"].as_str().unwrap_or("");
    assert!(
        reason.starts_with("errors_vs_baseline: evidence"),
        "{reason}"
    );
    let check = common::check_of(&r, "errors_vs_baseline").expect("sequential check in status");
    assert_eq!(check["verdict"], "fail");
    let ev = &check["evidence"];
    let threshold = ev["threshold"].as_f64().unwrap_or(0.0);
    assert_eq!(
        threshold, 40.0,
        "two sequential metrics at alpha 0.05: M/alpha = 40"
    );
    assert!(ev["e_value"].as_f64().unwrap_or(0.0) >= threshold, "{ev}");
    assert!(ev["p_value"].as_f64().unwrap_or(1.0) <= 0.025, "{ev}");
    let (c, b) = (
        ev["canary_rate"].as_f64().unwrap_or(0.0),
        ev["baseline_rate"].as_f64().unwrap_or(1.0),
    );
    assert!((c / b - 2.0).abs() < 0.3, "canary {c} vs baseline {b}");
    // The absolute line never fired: the canary stayed far under 5 %.
    let error_rate = common::check_of(&r, "error_rate");
    assert!(error_rate.is_some_and(|e| e["verdict"] != "fail"));
    assert!(calls_to(&stack.receiver.calls(), "/promote").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_canary_promotes_under_the_sequential_tests() {
    let stack = Stack::start("identical-errors", sequential_rule("5s")).await;
    traffic(&stack, 0.004, 0.004);
    let id = stack.daemon.start_rollout("identical-errors", "v8").await;
    let r = stack.daemon.wait_ended(&id, Duration::from_secs(120)).await;
    assert_eq!(r["phase"], "succeeded", "{r}");
    assert_eq!(weights(&stack.receiver.calls()), vec![5, 25, 50, 100]);
    let (_, history) = stack
        .daemon
        .get(&format!("/api/v1/rollouts/{id}/history"))
        .await;
    let judged_slow = history["ticks"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|t| t["checks"].as_array().cloned().unwrap_or_default())
        .any(|c| c["metric"] == "slow_requests" && c["verdict"] == "pass");
    assert!(
        judged_slow,
        "the slow-request test found its 0.5 s bucket and judged: {history}"
    );
}
