//! Every tick the machine counts reaches the rollout's history. Its row is saved from the
//! rollout's own `last_tick` (no copy of the tick is held while a slot's decisions wait for their
//! group commit, `controller/group_commit.rs`), so a slip there would silently empty history.
//! (A tick the machine ignores gets its own row; the live loop asks none — no tick during warmup
//! or with a hook in flight — so that half is `group_commit`'s unit test.)

use std::sync::Arc;
use std::time::Duration;

use canaryd::demo::receiver::HookReceiver;
use canaryd::store::{MemoryStore, Store};

use crate::common::offline;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_counted_tick_is_in_history_once_in_order() {
    let receiver = HookReceiver::start().await.expect("receiver");
    // Prometheus refuses every query: each tick is judged `error`, which pauses (never rolls
    // back) and keeps the rollout watching, so ticks go on being counted after warmup.
    let rule = offline::up_rule(
        "history",
        "interval: 1s, warmup: 3s, nodata_limit: 1000, on_nodata: pause",
        &receiver,
    );
    let store = Arc::new(MemoryStore::default());
    let controller = offline::controller(vec![rule], store.clone(), Duration::from_secs(1));
    let r = controller.start("history", "v1").await.expect("created");

    // Until a tick two seconds past warmup is in history (warmup counts from the first weight).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let (rollout, history) = loop {
        let rollout = controller.get(&r.id).expect("rollout");
        let history = store.history(&r.id, 100).expect("history");
        let past = rollout
            .step_started_at
            .map(|s| s + chrono::Duration::seconds(5));
        if past.is_some_and(|p| history.iter().any(|t| t.at >= p)) {
            break (rollout, history);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no tick after warmup reached history: {history:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    controller.shutdown().await;

    let started = rollout.step_started_at.expect("weight confirmed");
    assert!(
        history.len() >= 3,
        "ticks missing from history: {history:?}"
    );
    assert!(
        history.iter().all(|t| t.step == 0 && t.at > started),
        "{history:?}"
    );
    // One row per tick, in order, each with its verdicts.
    assert!(history.windows(2).all(|w| w[0].at < w[1].at), "{history:?}");
    assert!(history.iter().all(|t| t.checks.len() == 1), "{history:?}");
    // A counted tick's row is the tick the rollout kept.
    let kept = rollout.last_tick.as_ref().expect("a counted tick");
    assert!(
        history.contains(kept),
        "last_tick {kept:?} not in {history:?}"
    );
}
