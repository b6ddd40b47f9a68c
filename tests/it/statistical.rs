//! The statistical judge end to end: on a real Prometheus, a canary 30 % slower than its
//! baseline but far under every absolute line is rolled back by the Mann-Whitney check, an
//! equal canary with ordinary noise promotes, and `canaryd analyze` replays the same rule.

use crate::common;

use std::time::Duration;

use canaryd::demo::service::Track;
use common::{RuleOpts, Stack, calls_to, weights};

/// Independent samples: 4 s steps, each a 4 s rate window (four 1 s scrapes), 40 s window.
fn statistical_rule(hold: &'static str) -> RuleOpts {
    RuleOpts {
        hold,
        step: "4s",
        window: "40s",
        statistical: true,
        ..RuleOpts::default()
    }
}

fn noisy(stack: &Stack, canary_latency_factor: f64) {
    for track in [Track::Baseline, Track::Canary] {
        stack.service.update(track, |p| p.noise = 0.05);
    }
    let base = stack.service.profile(Track::Baseline).latency_p50_s;
    stack.service.update(Track::Canary, |p| {
        p.latency_p50_s = base * canary_latency_factor
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_30_percent_slower_but_under_every_line_is_rolled_back_statistically() {
    // Only points taken at the current weight count (issue 16): four a side before judging.
    let opts = RuleOpts {
        min_samples: 4,
        ..statistical_rule("60s")
    };
    let stack = Stack::start("slow-canary", opts).await;
    noisy(&stack, 1.3);
    let id = stack.daemon.start_rollout("slow-canary", "v5").await;
    let r = stack.daemon.wait_ended(&id, Duration::from_secs(90)).await;
    assert_eq!(r["phase"], "rolled_back", "{r}");
    let reason = r["reason"].as_str().unwrap_or("");
    assert!(reason.contains("p95_latency"), "{reason}");
    let p95 = common::check_of(&r, "p95_latency").expect("p95 check");
    assert_eq!(p95["verdict"], "fail", "{p95}");
    assert_eq!(p95["classification"], "high", "{p95}");
    assert_eq!(p95["threshold"]["kind"], "allowed_increase");
    // Four points a side already separate completely: p is then 0.03 under the normal approximation.
    assert!(p95["p_value"].as_f64().is_some_and(|p| p < 0.05), "{p95}");
    assert!(p95["effect"].as_f64().is_some_and(|e| e >= 1.1), "{p95}");
    assert!(
        p95["interval"][0].as_f64().is_some_and(|lo| lo > 0.0),
        "{p95}"
    );
    assert!(
        p95["canary"].as_f64().is_some_and(|v| v < 5.0),
        "under the warn line: {p95}"
    );
    let calls = stack.receiver.calls();
    assert!(calls_to(&calls, "/promote").is_empty());
    assert_eq!(calls_to(&calls, "/rollback").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equal_canary_with_ordinary_noise_promotes() {
    let stack = Stack::start("noisy-twin", statistical_rule("5s")).await;
    noisy(&stack, 1.0);
    tokio::time::sleep(Duration::from_secs(6)).await;
    let id = stack.daemon.start_rollout("noisy-twin", "v6").await;
    let r = stack.daemon.wait_ended(&id, Duration::from_secs(120)).await;
    assert_eq!(r["phase"], "succeeded", "{r}");
    assert_eq!(weights(&stack.receiver.calls()), vec![5, 25, 50, 100]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analyze_replays_a_past_regression_and_says_when_it_would_roll_back() {
    let stack = Stack::start("replayed", statistical_rule("1h")).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    stack.degrade_canary_errors(0.2);
    tokio::time::sleep(Duration::from_secs(8)).await;
    let rule = stack.dir.path().join("replayed.yaml");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_canaryd"))
        .args(["analyze", "--rule"])
        .arg(&rule)
        .args([
            "--from",
            "now-14s",
            "--to",
            "now",
            "--interval",
            "1s",
            "--prometheus-url",
        ])
        .arg(stack.prometheus.url())
        .output()
        .await
        .expect("run analyze");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "exit 1 when it would roll back:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("would ROLL BACK: error_rate"), "{text}");
    assert!(text.contains("result: rolled_back"), "{text}");
    // Ticks before the regression passed (or lacked data during warmup); none rolled back early.
    let first_rollback = text
        .lines()
        .position(|l| l.contains("would ROLL BACK"))
        .unwrap_or(0);
    assert!(
        first_rollback > 3,
        "rolled back on the first ticks, before the regression:\n{text}"
    );
}
