//! Controls on the real path: `canaryd serve` with named tokens, a real Prometheus, hooks
//! received over HTTP. Promote (one step), promote to the end, retry as a linked new run,
//! emergency approval, and abort winning over a promote whose hook is in flight.

use crate::common;

use std::time::{Duration, Instant};

use common::{RuleOpts, Stack, calls_to, weights};
use serde_json::{Value, json};

const ALICE: &str = "alice-token-0123456789";
const CI: &str = "ci-token-abcdefghijklmn";

async fn stack(hold: &'static str) -> Stack {
    let dir = tempfile::tempdir().expect("tempdir");
    let tokens = dir.path().join("tokens");
    std::fs::write(
        &tokens,
        format!("# who may steer\nalice:{ALICE}\nci:{CI}\n"),
    )
    .expect("tokens");
    let path = tokens.display().to_string();
    let s = Stack::start_with(
        "controls",
        RuleOpts {
            hold,
            ..RuleOpts::default()
        },
        "",
        &[("CANARYD_API_TOKENS_FILE", path.as_str())],
    )
    .await;
    // The tokens file must outlive start-up only; keep the dir alive anyway for the log's sake.
    std::mem::forget(dir);
    s
}

async fn act(
    s: &mut Stack,
    token: Option<&str>,
    id: &str,
    action: &str,
    body: Option<Value>,
) -> (u16, Value) {
    s.daemon.token = token.map(String::from);
    s.daemon
        .post(&format!("/api/v1/rollouts/{id}/{action}"), body)
        .await
}

async fn wait_until(s: &Stack, id: &str, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = s.daemon.rollout(id).await;
        if f(&r) {
            return r;
        }
        assert!(Instant::now() < deadline, "{what} never happened: {r}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_full_retry_and_emergency_record_who_and_why() {
    let mut s = stack("60s").await;
    s.daemon.token = Some(ALICE.into());
    let id = s.start_at_first_step("v2").await;

    // No token, or a wrong one: refused, nothing recorded.
    let (status, _) = act(&mut s, None, &id, "promote", None).await;
    assert_eq!(status, 401);
    let (status, _) = act(&mut s, Some("not-a-token-at-all-xx"), &id, "promote", None).await;
    assert_eq!(status, 401);

    // promote: leave the 60 s hold of 5 % now, to 25 %.
    let (status, body) = act(
        &mut s,
        Some(ALICE),
        &id,
        "promote",
        Some(json!({"reason": "dashboards green"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let r = wait_until(&s, &id, "weight 25", |r| r["weight"] == 25).await;
    assert_eq!(weights(&s.receiver.calls()), [5, 25]);
    assert_eq!(r["controls"][0]["action"], "promote");
    assert_eq!(r["controls"][0]["by"], "alice");
    assert_eq!(r["controls"][0]["reason"], "dashboards green");

    // Unknown fields and `full` on another action are refused with 400.
    let (status, _) = act(
        &mut s,
        Some(CI),
        &id,
        "promote",
        Some(json!({"fulll": true})),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = act(&mut s, Some(CI), &id, "pause", Some(json!({"full": true}))).await;
    assert_eq!(status, 400);

    // promote to the end, by the pipeline's token, with no reason.
    let (status, body) = act(
        &mut s,
        Some(CI),
        &id,
        "promote",
        Some(json!({"full": true})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let r = s
        .daemon
        .wait_phase(&id, &["succeeded"], Duration::from_secs(20))
        .await;
    assert_eq!(calls_to(&s.receiver.calls(), "/promote").len(), 1);
    assert_eq!(
        weights(&s.receiver.calls()),
        [5, 25],
        "no step after promote --full"
    );
    let c = &r["controls"][1];
    assert_eq!(
        (c["action"].as_str(), c["by"].as_str()),
        (Some("promote_full"), Some("ci"))
    );
    assert!(c.get("reason").is_none());

    // A succeeded rollout cannot be retried.
    let (status, body) = act(&mut s, Some(ALICE), &id, "retry", None).await;
    assert_eq!(status, 409, "{body}");

    // Abort a new one, then retry it: a new id linked to the old, from step 1.
    s.daemon.token = Some(ALICE.into());
    let id2 = s.start_at_first_step("v3").await;
    let (status, _) = act(
        &mut s,
        Some(CI),
        &id2,
        "abort",
        Some(json!({"reason": "wrong config"})),
    )
    .await;
    assert_eq!(status, 200);
    let old = s
        .daemon
        .wait_phase(&id2, &["rolled_back"], Duration::from_secs(20))
        .await;
    assert_eq!(old["reason"], "aborted: wrong config");
    assert_eq!(old["controls"][0]["by"], "ci");
    let (status, run2) = act(
        &mut s,
        Some(ALICE),
        &id2,
        "retry",
        Some(json!({"reason": "config fixed"})),
    )
    .await;
    assert_eq!(status, 201, "{run2}");
    let id3 = run2["id"].as_str().expect("id").to_string();
    assert_ne!(id3, id2);
    assert_eq!(
        (run2["retry_of"].as_str(), run2["run"].as_u64()),
        (Some(id2.as_str()), Some(2))
    );
    assert_eq!(run2["version"], "v3");
    assert_eq!(run2["controls"][0]["action"], "retry");
    assert_eq!(run2["controls"][0]["by"], "alice");
    wait_until(&s, &id3, "retry at 5 %", |r| r["weight"] == 5).await;
    // The old run keeps its history and phase; retrying it again while the new run lives: 409.
    assert_eq!(s.daemon.rollout(&id2).await["phase"], "rolled_back");
    let (status, _) = act(&mut s, Some(ALICE), &id2, "retry", None).await;
    assert_eq!(status, 409);
    let (status, _) = act(&mut s, Some(ALICE), &id3, "abort", None).await;
    assert_eq!(status, 200);
    s.daemon
        .wait_phase(&id3, &["rolled_back"], Duration::from_secs(20))
        .await;

    // Emergency: no traffic until approved.
    let before = s.receiver.calls().len();
    s.daemon.token = Some(CI.into());
    let (status, e) = s
        .daemon
        .post(
            "/api/v1/rollouts",
            Some(json!({"rule": "controls", "version": "v4", "emergency": true})),
        )
        .await;
    assert_eq!(status, 201, "{e}");
    let eid = e["id"].as_str().expect("id").to_string();
    let r = s
        .daemon
        .wait_phase(&eid, &["waiting_approval"], Duration::from_secs(10))
        .await;
    assert_eq!(r["emergency"], true);
    assert_eq!(
        s.receiver.calls().len(),
        before,
        "a hook was called before the approval"
    );
    let (status, _) = act(
        &mut s,
        Some(ALICE),
        &eid,
        "approve",
        Some(json!({"reason": "incident 42"})),
    )
    .await;
    assert_eq!(status, 200);
    let r = wait_until(&s, &eid, "emergency at 5 %", |r| r["weight"] == 5).await;
    assert_eq!(r["controls"][0]["by"], "alice");

    // History and reports carry the controls; no token ever reaches the log or the API.
    let (_, history) = s
        .daemon
        .get(&format!("/api/v1/rollouts/{id}/history"))
        .await;
    let by: Vec<&str> = history["controls"]
        .as_array()
        .expect("controls in history")
        .iter()
        .filter_map(|c| c["by"].as_str())
        .collect();
    assert_eq!(by, ["alice", "ci"]);
    let (_, report) = s
        .daemon
        .get(&format!("/api/v1/rollouts/{id2}/report"))
        .await;
    assert_eq!(report["controls"][0]["by"], "ci", "{report}");
    let log = s.daemon.log_text();
    for t in [ALICE, CI] {
        assert!(!log.contains(t), "a token reached the log");
        assert!(!report.to_string().contains(t));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_wins_over_a_promote_whose_hook_is_in_flight() {
    let mut s = stack("60s").await;
    s.daemon.token = Some(ALICE.into());
    let id = s.start_at_first_step("v2").await;
    // The promote hook will take 3 s to answer: abort arrives while it is in flight.
    s.receiver.set_delay(Duration::from_secs(3));
    let (status, r) = act(
        &mut s,
        Some(ALICE),
        &id,
        "promote",
        Some(json!({"full": true})),
    )
    .await;
    assert_eq!((status, r["phase"].as_str()), (200, Some("promoting")));
    let (status, r) = act(
        &mut s,
        Some(CI),
        &id,
        "abort",
        Some(json!({"reason": "pager went off"})),
    )
    .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["phase"], "rolling_back");
    s.receiver.set_delay(Duration::ZERO);
    let r = s.daemon.wait_ended(&id, Duration::from_secs(30)).await;
    assert_eq!(r["phase"], "rolled_back", "{r}");
    assert_eq!(r["rollback_decided"], true);
    let calls = s.receiver.calls();
    let rollbacks = calls_to(&calls, "/rollback");
    assert_eq!(rollbacks.len(), 1);
    assert!(
        rollbacks[0].body["reason"]
            .as_str()
            .unwrap_or("")
            .contains("aborted: pager went off")
    );
    // Whatever the slow promote did, the rollback came after it: the last word is the abort's.
    assert_eq!(calls.last().map(|c| c.path.as_str()), Some("/rollback"));
    let actions: Vec<&str> = r["controls"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["action"].as_str())
        .collect();
    assert_eq!(actions, ["promote_full", "abort"]);
}
