//! A decision the store refuses is never acted on: nothing reaches the world until the decision
//! is on disk, and the task retries on its own once the store is back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use canaryd::demo::receiver::HookReceiver;
use canaryd::rollout::{Rollout, Tick};
use canaryd::store::StoreError;

use crate::common::hooked_store::{Hooked, SaveHook};
use crate::common::offline;

/// Refuses every save while `refuse` is set, as a full or broken disk would.
#[derive(Default)]
struct Refusing {
    refuse: AtomicBool,
    refused: AtomicU32,
}

impl SaveHook for Refusing {
    fn before_save(&self, _: &Rollout, _: Option<&Tick>) -> Result<(), StoreError> {
        if self.refuse.load(Ordering::SeqCst) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(StoreError::Unavailable("disk full (test)".into()));
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_the_store_refuses_is_never_acted_on_and_is_retried_when_it_recovers() {
    let receiver = HookReceiver::start().await.expect("receiver");
    let rule = offline::up_rule("refusal", "interval: 1h", &receiver);
    let store = Arc::new(Hooked::<Refusing>::default());
    store.hook.refuse.store(true, Ordering::SeqCst);
    // Prometheus is never asked: the interval is an hour and the test ends at the first step.
    let controller = offline::controller(vec![rule], store.clone(), Duration::from_secs(1));
    let r = controller.start("refusal", "v1").await.expect("created");

    // While the store refuses, the decision to shift traffic is dropped: no hook is called.
    // Until the task has retried the refused decision once (1 s backoff), not a guessed time.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store.hook.refused.load(Ordering::SeqCst) < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the task did not retry the refused decision"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        receiver.attempts(),
        0,
        "a decision that was not saved reached the world"
    );
    assert_eq!(controller.get(&r.id).expect("rollout").weight, 0);

    // The store is back: the task decides again, saves, and only then acts, exactly once.
    store.hook.refuse.store(false, Ordering::SeqCst);
    assert!(
        receiver
            .wait_for(|c| !c.is_empty(), Duration::from_secs(10))
            .await,
        "the retried start never shifted traffic"
    );
    let mut weight = 0;
    for _ in 0..100 {
        weight = controller.get(&r.id).expect("rollout").weight;
        if weight == 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(weight, 5);
    let calls = receiver.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].body["weight"], 5);
    controller.shutdown().await;
}
