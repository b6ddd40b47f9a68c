//! `test: sequential_histogram` on the real stack: the live daemon reads every bucket of the
//! latency histogram from a real Prometheus each tick. A canary whose latencies grew 30 %
//! (P95 under every absolute line) is rolled back by the histogram's evidence; an identical
//! canary promotes with the test judging `pass`.

use crate::common;

use std::time::Duration;

use canaryd::demo::service::Track;
use common::{RuleOpts, Stack, calls_to, weights};

/// The shipped latency test's settings (rules/hotrodan.yaml, `latency_vs_baseline`).
const HISTOGRAM_TEST: &str = r#"  - name: latency_vs_baseline
    test: sequential_histogram
    histogram: http_request_duration_seconds
    alpha: 0.01
    margin: 0.25
"#;

fn rule(hold: &'static str) -> RuleOpts {
    RuleOpts {
        hold,
        extra_metrics: HISTOGRAM_TEST,
        ..RuleOpts::default()
    }
}

/// Busy tracks with no errors (only latency differs); the canary's latencies scaled by `factor`.
fn traffic(stack: &Stack, factor: f64) {
    for (track, f) in [(Track::Baseline, 1.0), (Track::Canary, factor)] {
        stack.service.update(track, |p| {
            p.rps = 1000.0;
            p.error_rate = 0.0;
            p.latency_p50_s = 0.12 * f;
            p.latency_spread = 0.5;
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_thirty_percent_slower_is_rolled_back_by_the_histogram_test() {
    let stack = Stack::start("slower-canary", rule("60s")).await;
    traffic(&stack, 1.3);
    let id = stack.daemon.start_rollout("slower-canary", "v9").await;
    // Evidence for a 30 % slowdown builds over about 90 s (BENCHMARKS.md); the deadline is the
    // bound on a loaded runner, not the expected time.
    let r = stack.daemon.wait_ended(&id, Duration::from_secs(240)).await;
    assert_eq!(r["phase"], "rolled_back", "{r}");
    let reason = r["reason"].as_str().unwrap_or("");
    assert!(
        reason.starts_with("latency_vs_baseline: evidence"),
        "{reason}"
    );
    let check = common::check_of(&r, "latency_vs_baseline").expect("histogram check in status");
    assert_eq!(check["verdict"], "fail");
    let ev = &check["evidence"];
    let threshold = ev["threshold"].as_f64().unwrap_or(0.0);
    assert_eq!(threshold, 100.0, "one sequential metric at alpha 0.01");
    assert!(ev["e_value"].as_f64().unwrap_or(0.0) >= threshold, "{ev}");
    // The reason names the edge with most evidence and the canary's heavier tail there.
    let (c, b) = (
        ev["canary_rate"].as_f64().unwrap_or(0.0),
        ev["baseline_rate"].as_f64().unwrap_or(1.0),
    );
    assert!(c > b, "canary slower share {c} vs baseline {b}");
    assert!(reason.contains("slower than"), "{reason}");
    // No absolute line fired: the P95 stayed far under 10 s.
    let p95 = common::check_of(&r, "p95_latency");
    assert!(p95.is_some_and(|p| p["verdict"] != "fail"));
    assert!(calls_to(&stack.receiver.calls(), "/promote").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_canary_promotes_under_the_histogram_test() {
    let stack = Stack::start("same-latency", rule("5s")).await;
    traffic(&stack, 1.0);
    let id = stack.daemon.start_rollout("same-latency", "v10").await;
    let r = stack.daemon.wait_ended(&id, Duration::from_secs(120)).await;
    assert_eq!(r["phase"], "succeeded", "{r}");
    assert_eq!(weights(&stack.receiver.calls()), vec![5, 25, 50, 100]);
    let (_, history) = stack
        .daemon
        .get(&format!("/api/v1/rollouts/{id}/history"))
        .await;
    let judged = history["ticks"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|t| t["checks"].as_array().cloned().unwrap_or_default())
        .filter(|c| c["metric"] == "latency_vs_baseline" && c["verdict"] == "pass")
        .count();
    assert!(
        judged >= 3,
        "the histogram test read its buckets and judged at several ticks: {history}"
    );
}
