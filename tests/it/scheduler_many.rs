//! One scheduler for many rollouts, on the real path: 20 services scraped by one real
//! Prometheus, 20 generated rule files with equal intervals, one `canaryd serve`. Every healthy
//! rollout promotes, the one whose canary starts failing rolls back while the others keep
//! ticking, and the group commit saves the decisions of a slot together: the daemon's own
//! `canaryd_store_commits_total` stays well under the decisions it saved.
//!
//! `CANARYD_TEST_SCHEDULER_ROLLOUTS=<n>` raises the number of rollouts (a longer local soak).

use crate::common;

use std::time::{Duration, Instant};

use canaryd::demo::prometheus::{PrometheusOptions, PrometheusProcess};
use canaryd::demo::receiver::HookReceiver;
use canaryd::demo::service::{DemoService, Track};
use common::{Daemon, RuleOpts, calls_to, metric_sum, rule_yaml};

fn rollouts() -> usize {
    std::env::var("CANARYD_TEST_SCHEDULER_ROLLOUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
        .max(2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_rollouts_progress_in_shared_slots_with_one_commit_per_slot() {
    let n = rollouts();
    let dir = tempfile::tempdir().expect("tempdir");
    let names: Vec<String> = (0..n).map(|i| format!("svc{i:02}")).collect();
    let mut services = Vec::new();
    for name in &names {
        services.push(
            DemoService::start(name, "127.0.0.1:0".parse().expect("addr"))
                .await
                .expect("demo service"),
        );
    }
    let prometheus = PrometheusProcess::start(PrometheusOptions {
        targets: services.iter().map(|s| s.addr().to_string()).collect(),
        ..PrometheusOptions::default()
    })
    .await
    .expect("prometheus");
    let receiver = HookReceiver::start().await.expect("receiver");
    let opts = RuleOpts::default();
    let mut paths = Vec::new();
    for name in &names {
        let path = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, rule_yaml(name, &receiver, &opts)).expect("write rule");
        paths.push(path);
    }
    for name in &names {
        common::wait_for_canary_rate(&prometheus, name, Duration::from_secs(30)).await;
    }
    let daemon = Daemon::start_on_free_port(&prometheus.url(), &paths, dir.path(), &[], &[]).await;

    let mut ids = Vec::new();
    for name in &names {
        ids.push(daemon.start_rollout(name, "v2").await);
    }
    // The first service's canary starts failing: its rollout must roll back on its own.
    services[0].update(Track::Canary, |p| p.error_rate = 0.5);

    let bad = daemon.wait_ended(&ids[0], Duration::from_secs(40)).await;
    assert_eq!(bad["phase"], "rolled_back", "{bad}");
    let rolled_back_at = Instant::now();
    // The others were still going when it rolled back, and go on to promote.
    let mut promoted_after = 0;
    for id in &ids[1..] {
        let r = daemon.wait_ended(id, Duration::from_secs(60)).await;
        assert_eq!(
            r["phase"],
            "succeeded",
            "{r}\n{}",
            common::tail(&daemon.log_text(), 40)
        );
        if Instant::now() > rolled_back_at {
            promoted_after += 1;
        }
    }
    assert!(
        promoted_after > 0,
        "the healthy rollouts ended before the failing one rolled back: nothing kept ticking"
    );
    let calls = receiver.calls();
    let rollbacks = calls_to(&calls, "/rollback");
    assert_eq!(rollbacks.len(), 1, "{rollbacks:?}");
    assert_eq!(rollbacks[0].body["rollout_id"], ids[0].as_str());
    assert_eq!(calls_to(&calls, "/promote").len(), n - 1);

    // Group commit: the decisions of a slot share a transaction.
    let exposition = daemon.metrics().await;
    let commits = metric_sum(&exposition, "canaryd_store_commits_total");
    let saves = metric_sum(&exposition, "canaryd_store_saves_total");
    // Every judged tick is a saved decision: one verdict per metric (4) per tick.
    let ticks = metric_sum(&exposition, "canaryd_check_verdicts_total") / 4.0;
    println!("{n} rollouts: {ticks} ticks, {saves} decisions saved in {commits} commits");
    assert!(ticks >= (n * 3) as f64, "too few ticks judged: {ticks}");
    assert!(saves >= ticks, "saves {saves} < ticks {ticks}");
    assert!(
        commits > 0.0 && commits * 2.0 < saves,
        "decisions were not committed together: {commits} commits for {saves} decisions"
    );
}
