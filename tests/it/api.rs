//! The HTTP API's contract: status codes, JSON errors, the token on mutating routes.

use crate::common;

use std::time::Duration;

use common::Daemon;
use serde_json::json;

const TOKEN: &str = "test-token-0123456789abcdef";

fn minimal_rule(name: &str) -> String {
    format!(
        "name: {name}\nselector: {{ canary: 'track=\"canary\"', baseline: 'track=\"baseline\"' }}\n\
         steps: [{{ weight: 5, hold: 1h }}, {{ weight: 100 }}]\n\
         analysis: {{ interval: 1h }}\n\
         metrics:\n  - {{ name: up, query: 'sum(up{{ {{{{selector}}}} }})', rollback_below: 1 }}\n"
    )
}

/// A daemon with one rule and Prometheus pointed at a closed port: the API must still answer.
async fn daemon(token: bool) -> (Daemon, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let rule = dir.path().join("api-test.yaml");
    std::fs::write(&rule, minimal_rule("api-test")).expect("rule");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("token");
    // Port 9 (discard): privileged, never handed out as a free port, so nothing answers.
    let port = 9;
    let extra: Vec<String> = if token {
        vec!["--api-token-file".into(), token_file.display().to_string()]
    } else {
        vec![]
    };
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let d = Daemon::start(
        &format!("http://127.0.0.1:{port}"),
        &[rule],
        dir.path(),
        &extra,
    )
    .await;
    (d, dir)
}

#[tokio::test]
async fn starting_a_rollout_answers_201_and_a_second_for_the_same_rule_409() {
    let (d, _dir) = daemon(false).await;
    let (status, body) = d
        .post(
            "/api/v1/rollouts",
            Some(json!({"rule": "api-test", "version": "v1"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert!(body["id"].as_str().is_some_and(|id| !id.is_empty()));
    assert_eq!(body["rule"], "api-test");
    let (status, body) = d
        .post(
            "/api/v1/rollouts",
            Some(json!({"rule": "api-test", "version": "v2"})),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or("")
            .contains("live rollout")
    );
    let (status, list) = d.get("/api/v1/rollouts").await;
    assert_eq!(status, 200);
    assert_eq!(list["rollouts"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn bad_requests_get_json_errors_with_4xx() {
    let (d, _dir) = daemon(false).await;
    let resp = d
        .http
        .post(format!("{}/api/v1/rollouts", d.url))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status().as_u16(), 400);
    let body: serde_json::Value = resp.json().await.expect("json error");
    assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()));

    let (status, body) = d
        .post(
            "/api/v1/rollouts",
            Some(json!({"rule": "nope", "version": "v1"})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap_or("").contains("nope"));
    let (status, _) = d
        .post(
            "/api/v1/rollouts",
            Some(json!({"rule": "api-test", "version": "v1", "extra": 1})),
        )
        .await;
    assert_eq!(status, 400, "unknown fields are refused");
    let (status, body) = d.get("/api/v1/rollouts/ro-doesnotexist").await;
    assert_eq!(status, 404, "{body}");
    let (status, _) = d.post("/api/v1/rollouts/ro-doesnotexist/abort", None).await;
    assert_eq!(status, 404);
    let (status, _) = d.get("/api/v1/nothing-here").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn abort_ends_rolled_back_with_its_reason_and_later_commands_conflict() {
    let (d, _dir) = daemon(false).await;
    let id = d.start_rollout("api-test", "v1").await;
    let (status, body) = d
        .post(
            &format!("/api/v1/rollouts/{id}/abort"),
            Some(json!({"reason": "bad smell"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let r = d
        .wait_phase(&id, &["rolled_back"], Duration::from_secs(10))
        .await;
    assert!(r["reason"].as_str().unwrap_or("").contains("bad smell"));
    let (status, _) = d.post(&format!("/api/v1/rollouts/{id}/abort"), None).await;
    assert_eq!(status, 409);
    let (status, _) = d
        .post(&format!("/api/v1/rollouts/{id}/approve"), None)
        .await;
    assert_eq!(status, 409);
}

#[tokio::test]
async fn mutating_routes_need_the_token_and_reads_do_not() {
    let (mut d, _dir) = daemon(true).await;
    let (status, body) = d
        .post(
            "/api/v1/rollouts",
            Some(json!({"rule": "api-test", "version": "v1"})),
        )
        .await;
    assert_eq!(status, 401, "{body}");
    d.token = Some("wrong-token-wrong-token".into());
    let (status, _) = d
        .post(
            "/api/v1/rollouts",
            Some(json!({"rule": "api-test", "version": "v1"})),
        )
        .await;
    assert_eq!(status, 401);
    d.token = Some(TOKEN.into());
    let (status, body) = d
        .post(
            "/api/v1/rollouts",
            Some(json!({"rule": "api-test", "version": "v1"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, _) = d.get("/api/v1/rollouts").await;
    assert_eq!(status, 200);
    let rules = d
        .http
        .get(format!("{}/api/v1/rules", d.url))
        .send()
        .await
        .expect("rules")
        .text()
        .await
        .unwrap_or_default();
    assert!(
        !rules.contains(TOKEN),
        "the API token leaked into /api/v1/rules"
    );
    assert!(
        !d.log_text().contains(TOKEN),
        "the API token leaked into the log"
    );
}

#[tokio::test]
async fn readiness_names_the_failing_component_and_metrics_are_described() {
    let (d, _dir) = daemon(false).await;
    let (status, body) = d.get("/health/ready").await;
    assert_eq!(status, 503);
    assert!(body["failing"].to_string().contains("prometheus"), "{body}");
    assert_eq!(d.get("/health/live").await.0, 200);
    assert_eq!(d.get("/health").await.0, 200);
    let m = d.metrics().await;
    // Counters exist at 0 from the start, described, so alerts on them work before any incident.
    for name in [
        "canaryd_hook_calls_total",
        "canaryd_rules_reload_success",
        "canaryd_rollbacks_total",
        "canaryd_promotions_total",
        "canaryd_prometheus_errors_total",
    ] {
        assert!(
            m.contains(&format!("# HELP {name}")),
            "{name} not described in /metrics:\n{m}"
        );
    }
    assert!(
        m.contains(r#"canaryd_promotions_total{rule="api-test"} 0"#),
        "{m}"
    );
}

#[tokio::test]
async fn refuses_to_listen_beyond_loopback_without_a_token() {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_canaryd"))
        .args(["serve", "--listen", "0.0.0.0:0", "--rules", "/nonexistent"])
        .env_remove("CANARYD_API_TOKEN")
        .output()
        .await
        .expect("run canaryd");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("beyond loopback"), "{err}");
}
