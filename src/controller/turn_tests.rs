//! A command preempts a tick whose answer is in hand but whose turn to be judged has not come
//! (`pacer`): the command is decided at once, the tick is dropped with its wait for a turn, and
//! no turn stays taken. A unit test: the only turn is held by the test itself, which no real
//! setup can do; the slot's Prometheus refuses connections, so every answer comes at once.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::super::Controller;
use crate::actions::HookRunner;
use crate::rollout::{Event, Phase};
use crate::rules::parse_rule;
use crate::source::{PrometheusConfig, PrometheusSource};
use crate::store::MemoryStore;

const RULE: &str = r#"name: turns
selector:
  canary: 'track="canary"'
  baseline: 'track="baseline"'
steps:
  - { weight: 10, hold: 1h }
  - { weight: 100 }
analysis:
  interval: 10s
  warmup: 0s
metrics:
  - name: error_rate
    query: sum(rate(errors{ {{selector}} }[1m]))
    rollback_above: 0.05
hooks: {}
"#;

/// A Prometheus that refuses every connection: a slot still answers, every metric failed.
fn down_source() -> PrometheusSource {
    PrometheusSource::new(&PrometheusConfig {
        url: "http://127.0.0.1:9".into(),
        timeout: Duration::from_secs(10),
        bearer_token: None,
        basic_auth: None,
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

/// A controller on `store` whose slots are judged one rollout at a time.
fn controller(store: Arc<MemoryStore>) -> Controller {
    let rule = parse_rule(Path::new("turns.yaml"), RULE).unwrap_or_else(|e| panic!("{e:?}"));
    let rules = [("turns".to_string(), Arc::new(rule))]
        .into_iter()
        .collect();
    let hooks = HookRunner::new().unwrap_or_else(|e| panic!("{e}"));
    Controller::new(rules, store, down_source(), hooks).with_pacing_width(1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_preempts_a_tick_waiting_for_its_turn_and_no_turn_stays_taken() {
    // Started, then resumed by a second controller: a recovered rollout ticks at once, and its
    // tick's deadline (10 s) bounds the wait for a turn far beyond the command's second.
    let store = Arc::new(MemoryStore::default());
    let first = controller(store.clone());
    let started = first
        .start("turns", "v2")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    first.shutdown().await;
    let c = controller(store);
    let pacer = c.inner.scheduler().pacer();
    let held = pacer.clone().turn().await;
    assert!(
        held.is_some() && pacer.free() == 0,
        "the test holds the only turn"
    );
    c.recover().unwrap_or_else(|e| panic!("{e}"));
    // The tick's answer comes at once (the connection is refused) and waits for a turn.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let waiting = c.get(&started.id).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(waiting.phase, Phase::Progressing);
    assert!(
        waiting.last_tick.is_none(),
        "a tick was judged without a turn: {:?}",
        waiting.last_tick
    );
    let sent = Instant::now();
    let paused = tokio::time::timeout(Duration::from_secs(1), c.send(&started.id, Event::Pause))
        .await
        .unwrap_or_else(|_| panic!("the pause waited behind the tick's wait for a turn"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(paused.phase, Phase::Paused);
    assert!(sent.elapsed() < Duration::from_secs(1));
    // The cancelled tick took no turn: given back, the test's turn is the only one out.
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(pacer.free(), 1, "a cancelled tick kept a turn");
    let after = c.get(&started.id).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(after.phase, Phase::Paused);
    assert!(
        after.last_tick.is_none(),
        "the dropped tick was judged later"
    );
    c.shutdown().await;
}
