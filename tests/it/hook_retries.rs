//! Which answers a hook retries, and that every attempt of one delivery — the failed ones too —
//! carries the same Idempotency-Key, so a receiver that half-applied a failed attempt can tell
//! the retry is the same action. Against a real receiver that logs every attempt it answered.

use std::time::Duration;

use canaryd::actions::{HookPayload, HookRunner};
use canaryd::demo::receiver::HookReceiver;
use canaryd::rollout::HookKind;
use canaryd::rules::schema::HookSpec;

fn payload() -> HookPayload {
    HookPayload {
        event: HookKind::Rollback,
        rollout_id: "ro-retry".into(),
        rule: "checkout-api".into(),
        version: "v9".into(),
        step: 2,
        weight: 0,
        phase: "rolling_back".into(),
        reason: Some("error_rate above rollback_above".into()),
        checks: vec![],
        time: chrono::Utc::now(),
    }
}

fn runner() -> HookRunner {
    let mut r = HookRunner::new().expect("runner");
    r.min_backoff = Duration::from_millis(10);
    r
}

fn http(url: String, retries: u32) -> HookSpec {
    HookSpec {
        url: Some(url),
        command: None,
        timeout: Duration::from_secs(2),
        retries,
        secret_file: None,
    }
}

#[tokio::test]
async fn timeouts_429_and_5xx_are_retried_with_the_same_idempotency_key_every_attempt() {
    for status in [408u16, 429, 500, 502, 503] {
        let rx = HookReceiver::start().await.expect("receiver");
        rx.fail_next_with(2, status).expect("status");
        let n = runner()
            .call(Some(&http(rx.url("/rollback"), 3)), &payload())
            .await
            .unwrap_or_else(|e| panic!("HTTP {status} was not retried to success: {e}"));
        assert_eq!(n, 3, "HTTP {status}: two failures, then delivered");
        let log = rx.attempt_log();
        let statuses: Vec<u16> = log.iter().map(|a| a.status).collect();
        assert_eq!(statuses, vec![status, status, 200]);
        let keys: Vec<Option<&str>> = log.iter().map(|a| a.idempotency_key.as_deref()).collect();
        assert_eq!(
            keys,
            vec![Some("ro-retry:rollback:2:0"); 3],
            "HTTP {status}"
        );
    }
}

#[tokio::test]
async fn other_4xx_answers_are_not_retried() {
    for status in [400u16, 401, 403, 404, 409, 410, 413, 422] {
        let rx = HookReceiver::start().await.expect("receiver");
        rx.fail_next_with(5, status).expect("status");
        let err = runner()
            .call(Some(&http(rx.url("/rollback"), 3)), &payload())
            .await
            .expect_err("a 4xx is not delivered");
        assert!(err.to_string().contains(&status.to_string()), "{err}");
        let log = rx.attempt_log();
        assert_eq!(log.len(), 1, "HTTP {status} retried: {log:?}");
        assert_eq!(
            log[0].idempotency_key.as_deref(),
            Some("ro-retry:rollback:2:0")
        );
    }
}
