//! `analysis.on_nodata: rollback` against a real Prometheus that is killed mid-rollout: the
//! rollout rolls back instead of pausing, and readiness names Prometheus while it is down.
//! (The default, pause then resume with no promotion in between, is in rollout_prometheus.rs.)

use crate::common;

use std::time::Duration;

use common::{RuleOpts, Stack, calls_to, weights};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_down_with_on_nodata_rollback_rolls_back_and_never_promotes() {
    let mut stack = Stack::start(
        "blind-api",
        RuleOpts {
            hold: "6s",
            on_nodata: "rollback",
            ..RuleOpts::default()
        },
    )
    .await;
    let id = stack.start_at_first_step("v7").await;
    stack.prometheus.stop().await;
    let (status, ready) = stack.daemon.get("/health/ready").await;
    assert_eq!(status, 503);
    assert!(
        ready["failing"].to_string().contains("prometheus"),
        "{ready}"
    );
    let r = stack
        .daemon
        .wait_phase(
            &id,
            &["rolled_back", "succeeded", "paused", "failed"],
            Duration::from_secs(40),
        )
        .await;
    assert_eq!(r["phase"], "rolled_back", "{r}");
    assert!(
        r["reason"]
            .as_str()
            .unwrap_or("")
            .contains("on_nodata: rollback"),
        "{r}"
    );
    let calls = stack.receiver.calls();
    assert_eq!(weights(&calls), vec![5]);
    assert!(calls_to(&calls, "/promote").is_empty());
    assert_eq!(calls_to(&calls, "/rollback").len(), 1);
}
