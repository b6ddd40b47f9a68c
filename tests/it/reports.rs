//! Deployment records and notifications for one promoted and one rolled-back rollout, checked
//! field by field against the real stack.

use crate::common;

use std::time::Duration;

use canaryd::demo::receiver::HookReceiver;
use chrono::{DateTime, Utc};
use common::{Daemon, RuleOpts, Stack};
use serde_json::Value;

fn time(v: &Value) -> DateTime<Utc> {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a time: {v}"))
}

fn texts(calls: &[canaryd::demo::receiver::ReceivedCall], path: &str) -> Vec<String> {
    common::calls_to(calls, path)
        .iter()
        .map(|c| c.body["text"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Every step record is closed, in order, and each starts where the previous ended.
fn check_steps(report: &Value, weights: &[u64]) {
    let steps = report["steps"].as_array().expect("steps");
    let got: Vec<u64> = steps
        .iter()
        .map(|s| s["weight"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(got, weights, "{report}");
    for (i, s) in steps.iter().enumerate() {
        assert_eq!(s["step"].as_u64(), Some(i as u64));
        assert!(time(&s["started_at"]) <= time(&s["ended_at"]), "{s}");
        if let Some(next) = steps.get(i + 1) {
            assert_eq!(s["ended_at"], next["started_at"]);
        }
    }
    assert_eq!(
        steps.last().expect("a step")["ended_at"],
        report["finished_at"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_a_promoted_and_a_rolled_back_rollout_field_by_field() {
    let opts = RuleOpts {
        hold: "2s",
        warmup: "1s",
        ..RuleOpts::default()
    };
    let mut stack = Stack::start("report-api", opts).await;
    // Restart canaryd with a reports folder and notifications to the receiver.
    let notify = HookReceiver::start().await.expect("receiver");
    let reports = stack.dir.path().join("reports");
    let config = stack.dir.path().join("canaryd.yaml");
    std::fs::write(
        &config,
        format!(
            "reports_dir: {}\nnotifications:\n  - {{ kind: slack, url: \"{}\" }}\n  - {{ kind: webhook, url: \"{}\", events: [rollback, complete] }}\n",
            reports.display(),
            notify.url("/slack"),
            notify.url("/webhook"),
        ),
    )
    .expect("config");
    stack.daemon.kill();
    let rule_path = stack.dir.path().join("report-api.yaml");
    let daemon = Daemon::start(
        &stack.prometheus.url(),
        &[rule_path],
        stack.dir.path(),
        &["--config", config.to_str().expect("utf-8")],
    )
    .await;

    // 1. Promoted.
    let good = daemon.start_rollout("report-api", "v1.1.0").await;
    daemon
        .wait_phase(&good, &["succeeded"], Duration::from_secs(60))
        .await;
    let (status, r) = daemon.get(&format!("/api/v1/rollouts/{good}/report")).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["rollout"], good.as_str());
    assert_eq!(r["rule"], "report-api");
    assert_eq!(r["version"], "v1.1.0");
    assert_eq!(r["outcome"], "promoted");
    assert_eq!(r["phase"], "succeeded");
    assert_eq!(r["rollback"]["required"], false);
    assert_eq!(r["rollback"]["reason"], Value::Null);
    let secs =
        (time(&r["finished_at"]) - time(&r["started_at"])).num_milliseconds() as f64 / 1000.0;
    assert!((r["duration_seconds"].as_f64().expect("duration") - secs).abs() < 0.01);
    assert!(secs >= 6.0, "three 2 s holds took {secs} s");
    check_steps(&r, &[5, 25, 50, 100]);
    let names: Vec<&str> = r["metrics"]
        .as_array()
        .expect("metrics")
        .iter()
        .filter_map(|m| m["name"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "error_rate",
            "p95_latency",
            "db_pool_utilization",
            "cpu_utilization"
        ]
    );
    let err = &r["metrics"][0];
    assert_eq!(
        err["thresholds"],
        serde_json::json!({"rollback_above": 0.05, "warn_above": 0.01, "max_ratio": 2.0})
    );
    assert_eq!(err["last_verdict"], "pass");
    assert!(err["ticks"].as_u64().unwrap_or(0) >= 3, "{err}");
    for key in [
        "baseline_first",
        "canary_first",
        "baseline_last",
        "canary_last",
    ] {
        let v = err[key].as_f64().unwrap_or(-1.0);
        // The simulated service fails 0.05 % of requests on both tracks.
        assert!((0.0003..0.0008).contains(&v), "{key} = {v}");
    }
    let db = &r["metrics"][2];
    assert!(
        (db["canary_last"].as_f64().unwrap_or(0.0) - 0.4).abs() < 0.01,
        "{db}"
    );
    let hooks: Vec<(String, String, Value)> = r["hooks"]
        .as_array()
        .expect("hooks")
        .iter()
        .map(|h| {
            (
                h["hook"].as_str().unwrap_or("").to_string(),
                h["outcome"].as_str().unwrap_or("").to_string(),
                h["weight"].clone(),
            )
        })
        .collect();
    let expected: Vec<(String, String, Value)> = [
        (5, "set_weight"),
        (25, "set_weight"),
        (50, "set_weight"),
        (100, "set_weight"),
    ]
    .iter()
    .map(|(w, h)| (h.to_string(), "success".to_string(), serde_json::json!(w)))
    .chain([("promote".to_string(), "success".to_string(), Value::Null)])
    .collect();
    assert_eq!(hooks, expected);

    // 2. Rolled back.
    let bad = daemon.start_rollout("report-api", "v1.2.0").await;
    daemon
        .wait_phase(&bad, &["progressing"], Duration::from_secs(10))
        .await;
    stack.degrade_canary_errors(0.2);
    daemon
        .wait_phase(&bad, &["rolled_back"], Duration::from_secs(30))
        .await;
    let (_, r) = daemon.get(&format!("/api/v1/rollouts/{bad}/report")).await;
    assert_eq!(r["outcome"], "rolled_back");
    assert_eq!(r["rollback"]["required"], true);
    let reason = r["rollback"]["reason"].as_str().unwrap_or_default();
    assert!(reason.starts_with("error_rate: "), "{reason}");
    let err = &r["metrics"][0];
    assert_eq!(err["last_verdict"], "fail");
    // Depending on how much of the rate window saw the new error rate, the critical error_rate
    // crossed max_ratio (2 x baseline) or rollback_above (5 %) first: either is a failure.
    let (canary, baseline) = (
        err["canary_last"].as_f64().unwrap_or(0.0),
        err["baseline_last"].as_f64().unwrap_or(1.0),
    );
    assert!(baseline < 0.001 && canary > 2.0 * baseline, "{err}");
    let last_hook = r["hooks"].as_array().and_then(|h| h.last()).expect("hooks");
    assert_eq!(last_hook["hook"], "rollback");
    assert_eq!(last_hook["outcome"], "success");
    let steps = r["steps"].as_array().expect("steps");
    assert!(!steps.is_empty() && steps[0]["weight"] == 5, "{r}");
    assert_eq!(steps.last().expect("step")["ended_at"], r["finished_at"]);

    // 3. The Markdown records, named by day, rule and rollout.
    for (id, outcome, required) in [(&good, "promoted", "No"), (&bad, "rolled_back", "Yes")] {
        let (_, rep) = daemon.get(&format!("/api/v1/rollouts/{id}/report")).await;
        let day = &rep["started_at"].as_str().unwrap_or_default()[..10];
        // The records are written by a feed subscriber after the save, so they may lag the
        // phase the API already shows: wait for both files.
        let (md_path, json_path) = (
            reports.join(format!("{day}-report-api-{id}.md")),
            reports.join(format!("{day}-report-api-{id}.json")),
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while !(md_path.exists() && json_path.exists()) {
            assert!(
                std::time::Instant::now() < deadline,
                "no records for {id} in {}",
                reports.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let md =
            std::fs::read_to_string(&md_path).unwrap_or_else(|e| panic!("markdown for {id}: {e}"));
        assert!(md.contains(&format!("**Outcome**: {outcome}")), "{md}");
        assert!(md.contains(&format!("- Required: {required}")), "{md}");
        assert!(md.contains("| error_rate | "), "{md}");
        assert!(md.contains("rollback_above 0.05"), "{md}");
        assert!(
            md.contains(&format!(
                "**Duration**: {}",
                rep["duration"].as_str().unwrap_or("?")
            )),
            "{md}"
        );
        let json: Value =
            serde_json::from_slice(&std::fs::read(&json_path).expect("json record")).expect("json");
        assert_eq!(json, rep);
    }

    // 4. Notifications: every event to Slack, only rollback and complete to the webhook. They
    // are sent one after another behind the phase change: wait for the last of them.
    notify
        .wait_for(
            |c| {
                common::calls_to(c, "/webhook").len() >= 3
                    && texts(c, "/slack")
                        .iter()
                        .any(|t| t.contains("Status: Rolled back"))
            },
            Duration::from_secs(20),
        )
        .await;
    let calls = notify.calls();
    let slack = texts(&calls, "/slack");
    assert_eq!(
        slack
            .iter()
            .filter(|t| t.starts_with("📢 Production Deploy Scheduled"))
            .count(),
        2,
        "{slack:#?}"
    );
    assert!(
        slack
            .iter()
            .any(|t| t.contains("step 4 of 4, canary at 100 %")),
        "{slack:#?}"
    );
    assert!(
        slack
            .iter()
            .any(|t| t.contains("Status: Success") && t.contains("- error_rate: 0.0005 → 0.0005")),
        "{slack:#?}"
    );
    assert!(
        slack
            .iter()
            .any(|t| t.starts_with("🚨 PRODUCTION ROLLBACK - report-api v1.2.0: error_rate")),
        "{slack:#?}"
    );
    assert!(
        slack.iter().any(|t| t.contains("Status: Rolled back")),
        "{slack:#?}"
    );
    let hooks: Vec<&str> = common::calls_to(&calls, "/webhook")
        .iter()
        .filter_map(|c| c.body["event"].as_str())
        .collect();
    assert_eq!(hooks, ["complete", "rollback", "complete"]);
    drop(stack);
}
