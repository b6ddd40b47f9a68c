//! Secrets: webhooks are signed with the hook's `secret_file`, every mutating route needs the
//! API token, and no secret value appears in the log, the API or /metrics.

mod common;

use std::time::Duration;

use canaryd::actions::hooks::{SIGNATURE_HEADER, signature};
use canaryd::demo::receiver::HookReceiver;
use common::Daemon;
use serde_json::json;

const TOKEN: &str = "api-token-SECRET-0123456789";
const HOOK_SECRET: &str = "hook-key-SECRET-abcdef0123";
const PROM_TOKEN: &str = "prom-bearer-SECRET-987654";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_are_signed_routes_need_the_token_and_no_secret_leaks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = HookReceiver::start().await.expect("receiver");
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, format!("{text}\n")).expect("write");
        p
    };
    let token_file = write("api-token", TOKEN);
    let hook_secret = write("hook-secret", HOOK_SECRET);
    let prom_token = write("prom-token", PROM_TOKEN);
    let rule = write(
        "signed.yaml",
        &format!(
            "name: signed\nselector: {{ canary: 'track=\"canary\"', baseline: 'track=\"baseline\"' }}\n\
             steps: [{{ weight: 5, hold: 1h }}, {{ weight: 100 }}]\n\
             analysis: {{ interval: 1s, warmup: 0s, nodata_limit: 100 }}\n\
             metrics:\n  - {{ name: up, query: 'sum(up{{ {{{{selector}}}} }})', rollback_below: 1 }}\n\
             hooks:\n  set_weight: {{ url: \"{}\", secret_file: \"{}\" }}\n  rollback: {{ url: \"{}\", secret_file: \"{}\" }}\n",
            receiver.url("/weight"),
            hook_secret.display(),
            receiver.url("/rollback"),
            hook_secret.display()
        ),
    );
    // Prometheus on a closed port: every query fails, so error paths are logged too.
    let port = canaryd::demo::free_loopback_port().expect("port");
    let mut d = Daemon::start(
        &format!("http://127.0.0.1:{port}"),
        &[rule],
        dir.path(),
        &[
            "--api-token-file",
            &token_file.display().to_string(),
            "--prometheus-bearer-token-file",
            &prom_token.display().to_string(),
        ],
    )
    .await;

    // Every mutating route: no token and a wrong token are 401.
    let routes = [
        "/api/v1/rollouts",
        "/api/v1/rollouts/x/abort",
        "/api/v1/rollouts/x/pause",
        "/api/v1/rollouts/x/resume",
        "/api/v1/rollouts/x/promote",
        "/api/v1/rollouts/x/approve",
    ];
    for token in [None, Some("wrong-token-wrong-token-wrong")] {
        d.token = token.map(String::from);
        for route in routes {
            let (status, body) = d
                .post(route, Some(json!({"rule": "signed", "version": "v1"})))
                .await;
            assert_eq!(status, 401, "{route} with {token:?}: {body}");
            assert!(body["error"].is_string(), "{body}");
        }
    }
    d.token = Some(TOKEN.into());
    // Bodies are capped at 64 KiB: 413 with a JSON error, on both kinds of mutating route.
    let big = json!({"rule": "signed", "version": "x".repeat(70 * 1024)});
    assert_eq!(d.post("/api/v1/rollouts", Some(big.clone())).await.0, 413);
    let (status, body) = d.post("/api/v1/rollouts/x/abort", Some(big)).await;
    assert_eq!(status, 413, "{body}");
    assert!(
        body["error"].as_str().unwrap_or("").contains("larger"),
        "{body}"
    );

    let id = d.start_rollout("signed", "v1").await;
    assert!(
        receiver
            .wait_for(|c| !c.is_empty(), Duration::from_secs(10))
            .await,
        "no hook call"
    );
    d.post(&format!("/api/v1/rollouts/{id}/abort"), None).await;
    assert!(
        receiver
            .wait_for(|c| c.len() >= 2, Duration::from_secs(10))
            .await,
        "no rollback"
    );
    for call in receiver.calls() {
        let header = call
            .headers
            .iter()
            .find(|(k, _)| *k == SIGNATURE_HEADER.to_ascii_lowercase())
            .map(|(_, v)| v.clone())
            .expect("signature header");
        assert_eq!(
            header,
            signature(HOOK_SECRET.as_bytes(), &call.raw),
            "{}",
            call.path
        );
        assert!(!String::from_utf8_lossy(&call.raw).contains("SECRET"));
    }
    tokio::time::sleep(Duration::from_secs(2)).await; // a few failing Prometheus queries

    let mut outputs = vec![("log", d.log_text()), ("metrics", d.metrics().await)];
    let history = format!("/api/v1/rollouts/{id}/history");
    for path in [
        "/api/v1/rules",
        "/api/v1/rollouts",
        "/health/ready",
        history.as_str(),
    ] {
        outputs.push((path, d.get(path).await.1.to_string()));
    }
    for (what, text) in &outputs {
        for secret in [TOKEN, HOOK_SECRET, PROM_TOKEN] {
            assert!(!text.contains(secret), "{secret} leaked into {what}");
        }
    }
    assert!(
        outputs[2].1.contains("secret_file"),
        "the rule shows where the key lives, not the key"
    );
    d.kill_and_wait().await;
}
