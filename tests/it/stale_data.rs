//! Stale data never promotes, against a real Prometheus (issue 16). The canary dies right after
//! a weight is confirmed, while the analysis window is still full of its healthy points: the
//! rollout must not advance, must pause after `nodata_limit` saying which metric is stale and
//! since when, and must resume by itself once the canary reports again.

use crate::common;

use std::time::{Duration, Instant};

use canaryd::demo::prometheus::{PrometheusOptions, PrometheusProcess};
use canaryd::demo::receiver::HookReceiver;
use canaryd::demo::service::{DemoService, Track};
use common::{Daemon, RuleOpts, Stack, calls_to, rule_yaml, weights};
use serde_json::Value;

/// Holds long enough that a canary dying at the start of a step is seen stale before the hold
/// ends (4 s rate window + 2 s max_staleness), so "advanced anyway" cannot be a timing fluke;
/// a window three holds long, so at the hold's end it is still full of the canary's healthy
/// points from before it died (what promoted a dead canary in issue 16).
fn opts() -> RuleOpts {
    RuleOpts {
        hold: "10s",
        window: "30s",
        warmup: "2s",
        nodata_limit: 3,
        ..RuleOpts::default()
    }
}

async fn wait_weight(daemon: &Daemon, id: &str, weight: u64, timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let r = daemon.rollout(id).await;
        if r["weight"].as_u64() == Some(weight) {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "weight {weight} never confirmed: {r}\nlog tail:\n{}",
            common::tail(&daemon.log_text(), 30)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Paused for no data, at 25 %, nothing promoted, and the reason names a stale canary metric
/// (`stale`, e.g. "(canary: ") and the time its data stopped (`since`, e.g. "taken at").
async fn assert_paused_stale(
    daemon: &Daemon,
    receiver: &HookReceiver,
    id: &str,
    stale: &str,
    since: &str,
) {
    let r = daemon
        .wait_phase(
            id,
            &["paused", "succeeded", "rolled_back", "failed"],
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(r["phase"], "paused", "{r}");
    assert_eq!(r["weight"], 25, "{r}");
    let reason = r["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("no data"), "{reason}");
    assert!(
        reason.contains(stale),
        "names the metric and group: {reason}"
    );
    assert!(reason.contains(since), "says since when: {reason}");
    let calls = receiver.calls();
    assert_eq!(weights(&calls), vec![5, 25], "advanced on stale data");
    assert!(calls_to(&calls, "/promote").is_empty());
    // Past the hold, still there: a no-data pause never advances.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let r = daemon.rollout(id).await;
    assert_eq!(
        (r["phase"].as_str(), r["weight"].as_u64()),
        (Some("paused"), Some(25)),
        "{r}"
    );
    assert_eq!(weights(&receiver.calls()), vec![5, 25]);
}

async fn assert_resumes_and_promotes(daemon: &Daemon, receiver: &HookReceiver, id: &str) {
    let r = daemon.wait_ended(id, Duration::from_secs(90)).await;
    assert_eq!(r["phase"], "succeeded", "{r}");
    assert_eq!(weights(&receiver.calls()), vec![5, 25, 50, 100]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_that_stops_exporting_after_a_weight_is_confirmed_never_advances_then_resumes() {
    let stack = Stack::start("stale-export-api", opts()).await;
    let id = stack.daemon.start_rollout("stale-export-api", "v2").await;
    wait_weight(&stack.daemon, &id, 25, Duration::from_secs(60)).await;
    // The canary's series vanish from /metrics (a crash-looping pod, a broken exporter).
    stack.service.export(&[Track::Baseline]);
    assert_paused_stale(
        &stack.daemon,
        &stack.receiver,
        &id,
        "(canary: ",
        " old, taken at ",
    )
    .await;
    stack.service.export(&[Track::Baseline, Track::Canary]);
    assert_resumes_and_promotes(&stack.daemon, &stack.receiver, &id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_target_going_down_mid_step_never_advances_then_resumes() {
    // Baseline and canary as separate scrape targets, so the canary's alone can go down; the
    // sequential tests on its counters are in the rule too.
    let name = "stale-target-api";
    let dir = tempfile::tempdir().expect("tempdir");
    let any = "127.0.0.1:0".parse().expect("addr");
    let baseline = DemoService::start(name, any).await.expect("baseline");
    baseline.export_only(Track::Baseline);
    let canary = DemoService::start(name, any).await.expect("canary");
    canary.export_only(Track::Canary);
    let prometheus = PrometheusProcess::start(PrometheusOptions {
        targets: vec![baseline.addr().to_string(), canary.addr().to_string()],
        ..PrometheusOptions::default()
    })
    .await
    .expect("prometheus");
    let receiver = HookReceiver::start().await.expect("receiver");
    let rule = dir.path().join(format!("{name}.yaml"));
    let o = RuleOpts {
        sequential: true,
        ..opts()
    };
    std::fs::write(&rule, rule_yaml(name, &receiver, &o)).expect("rule");
    for track in ["canary", "baseline"] {
        prometheus
            .wait_for_series(
                &format!(
                    r#"sum(rate(http_requests_total{{service="{name}", track="{track}"}}[4s]))"#
                ),
                Duration::from_secs(30),
            )
            .await
            .expect("series");
    }
    let daemon = Daemon::start(&prometheus.url(), &[rule], dir.path(), &[]).await;
    let id = daemon.start_rollout(name, "v2").await;
    wait_weight(&daemon, &id, 25, Duration::from_secs(60)).await;
    canary.fail_scrapes(true);
    assert_paused_stale(
        &daemon,
        &receiver,
        &id,
        "errors_vs_baseline (canary's request counters did not move",
        " old, taken at ",
    )
    .await;
    canary.fail_scrapes(false);
    assert_resumes_and_promotes(&daemon, &receiver, &id).await;
}
