//! Checkpoints after promotion on the real stack: a real Prometheus scraping the service, a real
//! Alertmanager, `canaryd serve`. A version that holds up is verified; one that regresses after
//! promotion raises `CanaryPostPromotionRegression` in Alertmanager and calls the `revert` hook
//! with the version before it.

use crate::common;

use std::time::Duration;

use canaryd::demo::alertmanager::{AlertmanagerOptions, AlertmanagerProcess};
use canaryd::demo::receiver::HookReceiver;
use canaryd::demo::service::Track;
use common::alerting::{named, wait_alerts};
use common::{RuleOpts, Stack, calls_to};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_after_promotion_alerts_and_reverts_to_the_previous_version() {
    let am = AlertmanagerProcess::start(AlertmanagerOptions::default())
        .await
        .expect("alertmanager");
    let reverts = HookReceiver::start().await.expect("receiver");
    // Appended right after the generated `hooks:` block, so `revert` is one of its hooks.
    let extra = format!(
        "  revert: {{ url: \"{}\", timeout: 2s, retries: 2 }}\nverify:\n  checkpoints: [8s]\n  revert_on_failure: true\n",
        reverts.url("/revert")
    );
    let am_url = am.url();
    let reports = tempfile::tempdir().expect("reports dir");
    let reports_dir = reports.path().display().to_string();
    let s = Stack::start_with(
        "verified",
        RuleOpts {
            hold: "60s",
            ..RuleOpts::default()
        },
        &extra,
        &[
            ("CANARYD_ALERTMANAGER_URLS", am_url.as_str()),
            ("CANARYD_REPORTS_DIR", reports_dir.as_str()),
        ],
    )
    .await;
    let d = &s.daemon;

    // The checkpoint compares with the window before the rollout started: wait until every
    // rate the rule's metrics take (its `rate` is 4 s) has had a value at each of the last five
    // seconds for the baseline. Its 5xx counter appears only with the first drawn error, and on a
    // loaded machine scrapes come irregularly, so "the series exists now" was not enough.
    for rate in [
        r#"rate(http_requests_total{service="verified", track="baseline", code=~"5.."}[4s])"#,
        r#"rate(http_request_duration_seconds_bucket{service="verified", track="baseline"}[4s])"#,
        r#"rate(process_cpu_seconds_total{service="verified", track="baseline"}[4s])"#,
    ] {
        s.prometheus
            .wait_for_series(
                &format!("count_over_time((sum({rate}))[5s:1s]) >= 5"),
                Duration::from_secs(60),
            )
            .await
            .unwrap_or_else(|e| panic!("baseline {rate} in prometheus: {e}"));
    }

    // v1 holds up after promotion: verifying, then succeeded at its checkpoint.
    let v1 = s.start_at_first_step("v1").await;
    let (status, _) = d
        .post(
            &format!("/api/v1/rollouts/{v1}/promote"),
            Some(json!({"full": true})),
        )
        .await;
    assert_eq!(status, 200);
    let r = d
        .wait_phase(&v1, &["verifying"], Duration::from_secs(20))
        .await;
    assert_eq!(r["weight"], 100);
    let r = d.wait_ended(&v1, Duration::from_secs(30)).await;
    assert_eq!(r["phase"], "succeeded", "{r}");
    let cp = &r["verify"]["checkpoints"][0]["result"];
    assert_eq!(cp["passed"], true, "{cp}");
    assert!(reverts.calls().is_empty());

    // v2 regresses once promoted: the stable service (baseline selector) now errs 30 %.
    let v2 = s.start_at_first_step("v2").await;
    let (status, _) = d
        .post(
            &format!("/api/v1/rollouts/{v2}/promote"),
            Some(json!({"full": true})),
        )
        .await;
    assert_eq!(status, 200);
    d.wait_phase(&v2, &["verifying"], Duration::from_secs(20))
        .await;
    s.service.update(Track::Baseline, |p| p.error_rate = 0.3);
    let r = d.wait_ended(&v2, Duration::from_secs(40)).await;
    assert_eq!(r["phase"], "rolled_back", "{r}");
    let reason = r["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("post-promotion regression of v2 at T+8s"),
        "{reason}"
    );

    // The checkpoint's before → after numbers, on the rollout and in its report.
    let result = &r["verify"]["checkpoints"][0]["result"];
    let err = result["metrics"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["name"] == "error_rate"))
        .cloned()
        .expect("error_rate at the checkpoint");
    assert_eq!(err["passed"], false, "{err}");
    let (before, after) = (
        err["before"].as_f64().unwrap(),
        err["after"].as_f64().unwrap(),
    );
    assert!(
        before < 0.05 && after > 0.05 && after > 2.0 * before,
        "{err}"
    );
    let (_, report) = d.get(&format!("/api/v1/rollouts/{v2}/report")).await;
    assert_eq!(
        report["verify"]["checkpoints"][0]["result"]["passed"], false,
        "{report}"
    );

    // The Markdown deployment record carries the checkpoint and the control that promoted.
    let md = wait_for_markdown(reports.path(), &v2).await;
    assert!(md.contains("## Verification after promotion"), "{md}");
    assert!(
        md.contains("| T+8s |") && md.contains("| FAILED | error_rate "),
        "{md}"
    );
    assert!(
        md.contains("| promote_full | anonymous | - | progressing → promoting |"),
        "{md}"
    );

    // The revert hook was called once, with the version to go back to.
    let calls = reverts.calls();
    let revert = calls_to(&calls, "/revert");
    assert_eq!(revert.len(), 1);
    assert_eq!(revert[0].body["event"], "revert");
    assert_eq!(revert[0].body["version"], "v1");
    assert_eq!(revert[0].body["rollout_id"], v2.as_str());
    // The promote hook was never undone by a rollback hook: after promotion, revert is the way.
    assert!(calls_to(&s.receiver.calls(), "/rollback").is_empty());

    // Alertmanager holds the regression alert, with the numbers in its summary.
    let alerts = wait_alerts(&am, &v2, Duration::from_secs(20), |a| {
        named(a, "CanaryPostPromotionRegression").is_some()
    })
    .await;
    let a = named(&alerts, "CanaryPostPromotionRegression").expect("alert");
    assert_eq!(a["labels"]["severity"], "critical");
    assert_eq!(a["labels"]["version"], "v2");
    let summary = a["annotations"]["summary"].as_str().unwrap_or("");
    assert!(
        summary.contains("regressed at T+8s") && summary.contains("error_rate"),
        "{summary}"
    );
    assert!(named(&alerts, "CanaryRollback").is_none(), "{alerts:#?}");
}

/// The Markdown record is written when the rollout ends, by a subscriber: awaited, not assumed.
async fn wait_for_markdown(dir: &std::path::Path, id: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let found = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.to_string_lossy().ends_with(&format!("{id}.md")));
        if let Some(p) = found {
            return std::fs::read_to_string(p).expect("read report");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no Markdown report for {id}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
