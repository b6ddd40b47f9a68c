//! Secrets: webhooks are signed with the hook's `secret_file`, every mutating route needs the
//! API token, and no secret value appears in the log, the API or /metrics.

use crate::common;

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
    // /health/ready below asks the unreachable Prometheus, so its error path is shown too.
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

/// Every URL canaryd knows carries credentials here (userinfo and a query token): hooks, a
/// health probe, a notification target, Alertmanager and Prometheus. Deliveries fail on
/// purpose, so the URLs travel into errors, rollback reasons, delivery records and log lines;
/// none of them may carry `s3cret` or `t0ken` out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_url_credential_reaches_an_api_route_or_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = HookReceiver::start().await.expect("receiver");
    // Port 9 (discard) is privileged and never handed out as a free port: nothing listens
    // there, so this delivery fails whatever other tests bind meanwhile.
    let closed = 9;
    let with_secrets =
        |url: &str| url.replacen("http://", "http://user:s3cret@", 1) + "?token=t0ken";
    let rollback_url = with_secrets(&format!("http://127.0.0.1:{closed}/rollback"));
    // The receiver answers GET with 405: the probe fails, and the rollback is decided.
    let health_url = with_secrets(&receiver.url("/health"));
    let rule = dir.path().join("leaky.yaml");
    std::fs::write(
        &rule,
        format!(
            "name: leaky\nselector: {{ canary: 'track=\"canary\"', baseline: 'track=\"baseline\"' }}\n\
             steps: [{{ weight: 5, hold: 1h }}, {{ weight: 100 }}]\n\
             analysis: {{ interval: 1s, warmup: 0s, nodata_limit: 100 }}\n\
             metrics:\n  - {{ name: up, query: 'sum(up{{ {{{{selector}}}} }})', rollback_below: 1 }}\n\
             health:\n  - {{ url: \"{health_url}\", interval: 300ms, failure_limit: 3 }}\n\
             hooks:\n  set_weight: {{ url: \"{}\" }}\n  rollback: {{ url: \"{rollback_url}\", timeout: 1s, retries: 1 }}\n",
            with_secrets(&receiver.url("/weight")),
        ),
    )
    .expect("rule");
    let config = dir.path().join("canaryd.yaml");
    std::fs::write(
        &config,
        format!(
            "notifications:\n  - {{ kind: webhook, url: \"{}\" }}\n",
            with_secrets(&format!("http://127.0.0.1:{closed}/notify"))
        ),
    )
    .expect("config");
    let d = Daemon::start(
        &format!("http://prom:s3cret@127.0.0.1:{closed}"),
        &[rule],
        dir.path(),
        &[
            "--config",
            &config.display().to_string(),
            "--alertmanager-url",
            &format!("http://am:s3cret@127.0.0.1:{closed}"),
            "--alertmanager-resend-interval",
            "300ms",
        ],
    )
    .await;
    let id = d.start_rollout("leaky", "v1").await;
    let r = d
        .wait_phase(&id, &["failed"], Duration::from_secs(30))
        .await;
    let reason = r["reason"].as_str().unwrap_or_default();
    // The reason still says which hook and which probe, with the credentials masked.
    assert!(
        reason.contains(&format!("http://***@127.0.0.1:{closed}/rollback?***")),
        "{reason}"
    );
    assert!(
        reason.contains(&format!(
            "health check {}",
            canaryd::redact::url(&health_url)
        )),
        "{reason}"
    );
    // Wait until every kind of failing delivery has been logged.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    for line in [
        "notification not delivered",
        "cannot post alerts to Alertmanager",
        "hook not delivered",
        "health probe failed",
        "canaryd serving",
    ] {
        while !d.log_text().contains(line) {
            assert!(
                std::time::Instant::now() < deadline,
                "no {line:?} in the log:\n{}",
                d.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    let mut outputs = vec![
        ("log".to_string(), d.log_text()),
        ("metrics".to_string(), d.metrics().await),
    ];
    for path in [
        "/api/v1/rules".to_string(),
        "/api/v1/rollouts".to_string(),
        format!("/api/v1/rollouts/{id}"),
        format!("/api/v1/rollouts/{id}/history"),
        format!("/api/v1/rollouts/{id}/report"),
        "/health/ready".to_string(),
    ] {
        let (status, body) = d.get(&path).await;
        assert!(
            status == 200 || path == "/health/ready",
            "{path}: {status} {body}"
        );
        outputs.push((path, body.to_string()));
    }
    for (what, text) in &outputs {
        for secret in ["s3cret", "t0ken"] {
            assert!(
                !text.contains(secret),
                "{secret} leaked into {what}:\n{text}"
            );
        }
    }
    let rules = &outputs[2].1;
    assert!(
        rules.contains("127.0.0.1") && rules.contains("***@"),
        "{rules}"
    );
}
