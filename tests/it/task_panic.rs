//! A panicking rollout task cannot wedge its rollout. The daemon (a debug build) is started with
//! `CANARYD_TEST_PANIC_AT=<point>`, which makes the first task reaching that point panic once.
//! The rollout then becomes `failed` with the panic as its reason, the canary's traffic goes
//! back to the baseline through the rollback hook, a rollback decided before the panic is still
//! delivered, the API keeps answering, and the rule takes a new rollout once nothing is owed.

use crate::common;

use std::time::{Duration, Instant};

use common::{RuleOpts, Stack, calls_to, weights};
use serde_json::{Value, json};

/// The common stack with a rule that holds its first step for ten minutes, and a daemon whose
/// first task to reach `panic_at` panics.
struct Setup(Stack);

impl std::ops::Deref for Setup {
    type Target = Stack;
    fn deref(&self) -> &Stack {
        &self.0
    }
}

impl Setup {
    async fn start(name: &str, panic_at: &str) -> Setup {
        let opts = RuleOpts {
            hold: "10m",
            ..RuleOpts::default()
        };
        Setup(Stack::start_with(name, opts, "", &[("CANARYD_TEST_PANIC_AT", panic_at)]).await)
    }

    async fn at_first_step(&self, version: &str) -> String {
        let id = self.daemon.start_rollout(&self.rule, version).await;
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.daemon.rollout(&id).await["weight"] != 5 {
            assert!(Instant::now() < deadline, "first weight never confirmed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        id
    }

    /// Polls the rollout until `pred` holds; panics with its state and the log after `timeout`.
    async fn wait_until(
        &self,
        id: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let r = self.daemon.rollout(id).await;
            if pred(&r) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "rollout never reached the expected state: {r}\nlog tail:\n{}",
                common::tail(&self.daemon.log_text(), 40)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn start_status(&self, version: &str) -> (u16, Value) {
        self.daemon
            .post(
                "/api/v1/rollouts",
                Some(json!({"rule": self.rule, "version": version})),
            )
            .await
    }
}

fn reason(r: &Value) -> &str {
    r["reason"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_panics_fails_the_rollout_rolls_the_canary_back_and_frees_the_rule() {
    let s = Setup::start("panic-tick", "tick").await;
    let id = s.at_first_step("v1").await;
    // The first delivery round of the rollback fails (1 attempt + 4 retries), so the owed
    // rollback can be watched before it arrives.
    s.receiver.fail_next(5);
    // The first judged tick panics the task (after the 2 s warmup).
    let r = s
        .wait_until(&id, Duration::from_secs(20), |r| r["phase"] == "failed")
        .await;
    assert!(
        reason(&r).starts_with("rollout task failed: panicked: fault injected at tick"),
        "{r}"
    );
    assert!(reason(&r).contains("rolling back to the baseline"), "{r}");
    assert_eq!(r["rollback_decided"], true, "{r}");
    // The API answers for it instead of 503, and the rule is still taken by its owed rollback.
    let (status, body) = s
        .daemon
        .post(&format!("/api/v1/rollouts/{id}/abort"), None)
        .await;
    assert_eq!(status, 409, "{body}");
    let (status, body) = s.start_status("v2").await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("rollback not yet delivered"),
        "{body}"
    );
    // The restarted task delivers the rollback; the rollout ends and keeps the panic as reason.
    let r = s
        .wait_until(&id, Duration::from_secs(30), |r| {
            r["phase"] == "rolled_back"
        })
        .await;
    assert!(reason(&r).contains("fault injected at tick"), "{r}");
    let calls = s.receiver.calls();
    let rollbacks = calls_to(&calls, "/rollback");
    assert_eq!(rollbacks.len(), 1, "{rollbacks:?}");
    assert!(
        rollbacks[0].body["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("fault injected at tick"),
        "{:?}",
        rollbacks[0].body
    );
    assert!(calls_to(&calls, "/promote").is_empty());
    assert_eq!(weights(&calls), vec![5]);
    let (status, body) = s
        .daemon
        .post(&format!("/api/v1/rollouts/{id}/abort"), None)
        .await;
    assert_eq!(status, 409, "{body}");
    // Nothing is owed any more: the rule takes a new rollout, which runs normally.
    let (status, body) = s.start_status("v2").await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_decided_before_the_task_panicked_is_still_delivered() {
    let s = Setup::start("panic-rollback", "rollback").await;
    let id = s.at_first_step("v1").await;
    // The abort is decided and saved; the task then panics just before calling the hook.
    let (status, body) = s
        .daemon
        .post(
            &format!("/api/v1/rollouts/{id}/abort"),
            Some(json!({"reason": "pager"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["phase"], "rolling_back", "{body}");
    let arrived = s
        .receiver
        .wait_for(
            |calls| calls.iter().any(|c| c.path == "/rollback"),
            Duration::from_secs(20),
        )
        .await;
    assert!(
        arrived,
        "the decided rollback was never delivered; log tail:\n{}",
        common::tail(&s.daemon.log_text(), 40)
    );
    let r = s
        .wait_until(&id, Duration::from_secs(10), |r| {
            r["phase"] == "rolled_back"
        })
        .await;
    assert!(
        reason(&r).starts_with("rollout task failed: panicked: fault injected at rollback"),
        "{r}"
    );
    assert!(
        reason(&r).contains("(rollback was decided because: aborted: pager)"),
        "{r}"
    );
    let calls = s.receiver.calls();
    let rollbacks = calls_to(&calls, "/rollback");
    assert_eq!(rollbacks.len(), 1, "{rollbacks:?}");
    // The hook hears the decision it was owed, not the panic that delayed it.
    assert_eq!(rollbacks[0].body["reason"], "aborted: pager");
    assert!(calls_to(&calls, "/promote").is_empty());
    let (status, body) = s.start_status("v2").await;
    assert_eq!(status, 201, "{body}");
}
