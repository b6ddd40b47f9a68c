//! Hook delivery against a real receiver and real commands.

use std::time::Duration;

use canaryd::actions::{HookPayload, HookRunner};
use canaryd::demo::receiver::HookReceiver;
use canaryd::rollout::HookKind;
use canaryd::rules::schema::HookSpec;

fn payload() -> HookPayload {
    HookPayload {
        event: HookKind::Rollback,
        rollout_id: "ro-abc".into(),
        rule: "checkout-api".into(),
        version: "v9".into(),
        step: 1,
        weight: 0,
        phase: "rolling_back".into(),
        reason: Some("error_rate: canary 0.2 is above rollback_above 0.05".into()),
        checks: vec![],
        time: chrono::Utc::now(),
    }
}

fn runner() -> HookRunner {
    let mut r = HookRunner::new().expect("runner");
    r.min_backoff = Duration::from_millis(20);
    r
}

fn http(url: String, retries: u32, timeout: Duration) -> HookSpec {
    HookSpec {
        url: Some(url),
        command: None,
        timeout,
        retries,
        secret_file: None,
    }
}

fn command(argv: &[&str], timeout: Duration) -> HookSpec {
    HookSpec {
        url: None,
        command: Some(argv.iter().map(|s| s.to_string()).collect()),
        timeout,
        retries: 0,
        secret_file: None,
    }
}

#[tokio::test]
async fn http_hook_posts_the_design_payload_with_an_idempotency_key() {
    let rx = HookReceiver::start().await.expect("receiver");
    let n = runner()
        .call(
            Some(&http(rx.url("/rollback"), 3, Duration::from_secs(2))),
            &payload(),
        )
        .await
        .expect("delivered");
    assert_eq!(n, 1);
    let calls = rx.calls();
    let body = &calls[0].body;
    for key in [
        "event",
        "rollout_id",
        "rule",
        "version",
        "step",
        "weight",
        "phase",
        "reason",
        "checks",
        "time",
    ] {
        assert!(body.get(key).is_some(), "payload lacks {key}: {body}");
    }
    assert_eq!(body["event"], "rollback");
    let key = calls[0]
        .headers
        .iter()
        .find(|(k, _)| k == "idempotency-key")
        .map(|(_, v)| v.as_str());
    assert_eq!(key, Some("ro-abc:rollback:1:0"));
}

#[tokio::test]
async fn http_hook_gives_up_after_its_retries_with_the_status_in_the_error() {
    let rx = HookReceiver::start().await.expect("receiver");
    rx.fail_next(10);
    let err = runner()
        .call(
            Some(&http(rx.url("/rollback"), 2, Duration::from_secs(2))),
            &payload(),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("500"), "{err}");
    assert_eq!(rx.attempts(), 3, "one try and two retries");
}

#[tokio::test]
async fn slow_http_hook_times_out_and_is_retried() {
    let rx = HookReceiver::start().await.expect("receiver");
    rx.set_delay(Duration::from_millis(800));
    let err = runner()
        .call(
            Some(&http(rx.url("/w"), 1, Duration::from_millis(200))),
            &payload(),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no answer within"), "{err}");
    assert_eq!(rx.attempts(), 2, "one timed-out try and one retry");
}

#[tokio::test]
async fn command_hook_gets_templated_argv_and_canaryd_environment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out.txt");
    let script = format!(
        "echo \"$1 $CANARYD_EVENT $CANARYD_ROLLOUT $CANARYD_VERSION $CANARYD_WEIGHT $CANARYD_REASON\" > {}",
        out.display()
    );
    let spec = command(
        &["sh", "-c", &script, "sh", "{{version}}"],
        Duration::from_secs(5),
    );
    runner()
        .call(Some(&spec), &payload())
        .await
        .expect("command ran");
    let text = std::fs::read_to_string(&out).expect("output");
    assert_eq!(
        text.trim(),
        "v9 rollback ro-abc v9 0 error_rate: canary 0.2 is above rollback_above 0.05"
    );
}

#[tokio::test]
async fn command_hook_that_hangs_is_killed_at_its_timeout() {
    let started = std::time::Instant::now();
    let err = runner()
        .call(
            Some(&command(&["sleep", "30"], Duration::from_millis(300))),
            &payload(),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("killed"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn command_hook_exit_code_and_stderr_explain_the_failure() {
    let err = runner()
        .call(
            Some(&command(
                &["sh", "-c", "echo deploy refused >&2; exit 3"],
                Duration::from_secs(5),
            )),
            &payload(),
        )
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("Some(3)") && text.contains("deploy refused"),
        "{text}"
    );
}

#[tokio::test]
async fn missing_hook_is_a_no_op_success() {
    assert_eq!(runner().call(None, &payload()).await.expect("ok"), 0);
}
