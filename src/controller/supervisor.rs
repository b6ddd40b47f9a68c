//! A rollout's task cannot wedge its rollout by panicking.
//!
//! The supervisor runs the task as its own tokio task and watches its `JoinHandle`. When the
//! task panics — a bug, whatever its cause — the supervisor re-reads the rollout from the store
//! and starts a new task that first decides `TaskFailed` with the panic's reason through the
//! usual decide → save → act path (the rollout becomes `failed`; traffic the canary may hold is
//! rolled back), then goes on as a recovered task: a rollback decided before or because of the
//! panic is delivered, commands are answered, and once nothing is owed the rollout leaves the
//! live set, so its rule takes new rollouts. The command queue outlives each task, so a command
//! sent meanwhile is answered by the next one.
//!
//! The task runs inside the supervisor's own future and its panic is caught there
//! (`catch_unwind`), not in a second tokio task: one task cell per live rollout instead of two
//! (each cell holds its whole future; heaptrack at 2,000 rollouts, BENCHMARKS.md "Scale").

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt;

use super::shell::Inner;
use super::task::{Commands, RolloutTask, retry_delay};
use crate::rollout::Rollout;
use crate::rules::Rule;

/// Runs the task of `rollout` until it ends, restarting it after each panic. The rollout comes
/// boxed: the future keeps its arguments for its whole life, and it lives as long as the
/// rollout. A plain fn returning an `async move` block, not an `async fn`, which would keep
/// each argument twice (as given and as moved into its body: `-Zprint-type-sizes`).
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn keeps its arguments twice"
)]
pub(super) fn supervise(
    inner: Arc<Inner>,
    rule: Arc<Rule>,
    rollout: Box<Rollout>,
    rx: Commands,
    recovered: bool,
) -> impl std::future::Future<Output = ()> + Send {
    async move {
        let id = rollout.id.clone();
        let mut task = RolloutTask::new(
            inner.clone(),
            rule.clone(),
            unbox(rollout),
            rx.clone(),
            recovered,
        );
        let mut panics = 0u32;
        loop {
            // The task (and the command queue's guard it holds) is dropped before the next one
            // locks the queue.
            let reason = match AssertUnwindSafe(task.run()).catch_unwind().await {
                Ok(()) => return,
                Err(payload) => panic_reason(payload),
            };
            panics = panics.saturating_add(1);
            tracing::error!(event = "rollout.task_panicked", rollout = %id, reason = %reason, panics,
                "rollout task panicked; restarting it from the stored state");
            // Boxed: the restart path is rare, and inline it would grow every rollout's future.
            let Some(state) = Box::pin(stored(&inner, &id)).await else {
                return;
            };
            task = RolloutTask::new(inner.clone(), rule.clone(), state, rx.clone(), true)
                .after_panic(reason, panics);
        }
    }
}

/// Moves the rollout out of its box and frees the box now: `*rollout` in the body would keep
/// the emptied allocation until the rollout's future ends.
fn unbox(rollout: Box<Rollout>) -> Rollout {
    *rollout
}

/// The rollout as last saved: the truth a restarted task starts from. Retries a store that
/// cannot be read; `None` when the rollout is gone or the controller shuts down.
async fn stored(inner: &Inner, id: &str) -> Option<Rollout> {
    let mut shutdown = inner.shutdown.subscribe();
    let mut round = 0u32;
    loop {
        match inner.store.get(id) {
            Ok(Some(r)) => return Some(r),
            Ok(None) => {
                tracing::error!(rollout = %id, "rollout vanished from the store after its task panicked");
                inner.forget(id);
                return None;
            }
            Err(e) => {
                round = round.saturating_add(1);
                tracing::error!(rollout = %id, error = %e, round,
                    "cannot re-read a rollout whose task panicked; retrying");
                inner.set_store_error(Some(e.to_string()));
            }
        }
        if *shutdown.borrow() {
            return None;
        }
        tokio::select! {
            _ = tokio::time::sleep(retry_delay(round)) => {}
            _ = shutdown.changed() => return None,
        }
    }
}

/// A panic payload as text: `panic!` gives a `&str` or a `String`; anything else is unnamed.
fn panic_reason(payload: Box<dyn std::any::Any + Send>) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic with a non-text payload".to_string());
    format!("panicked: {text}")
}

/// The environment variable of the test-only fault injection.
const FAULT_ENV: &str = "CANARYD_TEST_PANIC_AT";

/// Test-only fault injection: with `CANARYD_TEST_PANIC_AT=<point>` the first rollout task to
/// reach `point` (`tick`: deciding a judged tick; `rollback`: about to deliver a rollback) panics,
/// once per process. Compiled into debug builds only, so a release binary never reads the
/// variable; the integration tests run the debug binary.
#[cfg(debug_assertions)]
pub(super) fn inject_fault(point: &str) {
    use std::sync::atomic::{AtomicBool, Ordering};
    static FIRED: AtomicBool = AtomicBool::new(false);
    if std::env::var(FAULT_ENV).is_ok_and(|p| p == point) && !FIRED.swap(true, Ordering::SeqCst) {
        panic!("fault injected at {point} by {FAULT_ENV}");
    }
}

#[cfg(not(debug_assertions))]
const _: &str = FAULT_ENV;

#[cfg(not(debug_assertions))]
pub(super) fn inject_fault(_point: &str) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_payloads_of_both_kinds_become_the_reason() {
        assert_eq!(panic_reason(Box::new("boom")), "panicked: boom");
        assert_eq!(
            panic_reason(Box::new(format!("overflow at {}", 3))),
            "panicked: overflow at 3"
        );
        assert_eq!(
            panic_reason(Box::new(42u8)),
            "panicked: panic with a non-text payload"
        );
    }
}
