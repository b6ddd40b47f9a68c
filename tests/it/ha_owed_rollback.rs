//! A rollback the leader decided but could not get delivered before it died: the new leader
//! delivers it, with the same Idempotency-Key, under its own epoch.

use crate::common;

use std::time::{Duration, Instant};

use common::pg::{HaStack, epoch_of, wait_leader, wait_role};
use common::{RuleOpts, calls_to};

fn key(c: &canaryd::demo::receiver::ReceivedCall) -> String {
    c.headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("idempotency-key"))
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owed_rollback_is_delivered_by_the_next_leader_with_the_same_key() {
    let s = HaStack::start("ha-owed", RuleOpts::default(), "2s", "500ms").await;
    let mut old = s.replica("a").await;
    let old_epoch = wait_leader(&old, Duration::from_secs(15)).await;
    let new = s.replica("b").await;
    wait_role(&new, "follower", Duration::from_secs(10)).await;
    let id = old.start_rollout(&s.rule, "v2").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while old.rollout(&id).await["weight"] != 5 {
        assert!(Instant::now() < deadline, "first weight never confirmed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The receiver now refuses every call: the leader decides the rollback, its attempts
    // fail, and it logs the failed delivery (with the key it used) in the shared store.
    s.receiver.fail_next(u32::MAX);
    s.service
        .update(canaryd::demo::service::Track::Canary, |p| {
            p.error_rate = 0.5
        });
    let deadline = Instant::now() + Duration::from_secs(40);
    let owed_key = loop {
        let (_, h) = new.get(&format!("/api/v1/rollouts/{id}/history")).await;
        let failed = h["hook_deliveries"].as_array().and_then(|ds| {
            ds.iter()
                .find(|d| d["hook"] == "rollback" && d["outcome"] == "failed")
                .and_then(|d| d["idempotency_key"].as_str().map(str::to_string))
        });
        if let Some(k) = failed {
            break k;
        }
        assert!(
            Instant::now() < deadline,
            "no failed rollback delivery: {}\n{}",
            old.rollout(&id).await,
            common::tail(&old.log_text(), 30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_ne!(
        old.rollout(&id).await["phase"],
        "rolled_back",
        "delivery must still be owed"
    );
    old.kill_and_wait().await;
    s.receiver.fail_next(0);

    let new_epoch = wait_leader(&new, Duration::from_secs(15)).await;
    let done = new
        // `failed` is where an owed rollback waits: only its delivery ends it, `rolled_back`.
        .wait_phase(&id, &["rolled_back", "succeeded"], Duration::from_secs(30))
        .await;
    assert_eq!(done["phase"], "rolled_back", "{done}");
    let calls = s.receiver.calls();
    let by_new: Vec<_> = calls_to(&calls, "/rollback")
        .into_iter()
        .filter(|c| epoch_of(c) == Some(new_epoch))
        .collect();
    assert!(
        !by_new.is_empty(),
        "the new leader never delivered the rollback"
    );
    let summary: Vec<(String, String, Option<u64>)> = calls
        .iter()
        .map(|c| (c.path.clone(), key(c), epoch_of(c)))
        .collect();
    assert!(
        by_new.iter().all(|c| key(c) == owed_key),
        "same Idempotency-Key across the failover: {summary:?}"
    );
    assert!(calls_to(&calls, "/promote").is_empty());
    assert!(
        calls
            .iter()
            .all(|c| epoch_of(c) != Some(old_epoch) || c.path == "/weight")
    );
}
