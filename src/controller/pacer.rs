//! Pacing a slot's decisions: at most [`WIDTH`] rollouts, daemon-wide, between "answer in hand"
//! and "decision committed".
//!
//! A slot answers all its rollouts at once. Unpaced, every one of them then judged its answer
//! (a new `Tick` with its checks and reasons), decided (a new state) and queued its save at
//! once, and the previous generation of each was freed only when the new one was committed: two
//! generations of every rollout's state at the peak (heaptrack at 5,000 rollouts: about a third
//! of the daemon's peak heap, BENCHMARKS.md "Scale"). With a turn to take first, a slot is
//! judged in waves of [`WIDTH`], each wave's states freed as it commits, so the second
//! generation is bounded by the wave, not by N.
//!
//! The turn is taken by the actor once its answer is in hand, not handed out with the answer:
//! an actor that is not listening (busy in a hook, backing off after a refused save) would hold
//! a turn it does not use, and [`WIDTH`] of them would stall every slot's judging. Only actors
//! that judge hold one, and give it back when `apply` returned (judged, decided, saved,
//! published). A tick cancelled by a command drops its wait, or its turn, at once. Turns are
//! granted first come, first served (tokio's semaphore is fair), across slots and late waves.
//!
//! A turn that does not come within its bound (turns come back only as decisions are
//! committed, so only a store that stopped committing withholds them) makes the tick a missed
//! one, as an answer that never came: never a pass, and never an unbounded wait.

use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Rollouts judged, decided and waiting for their commit at once, daemon-wide.
///
/// Twice the group commit's largest transaction (`group_commit::MAX_BATCH`, 512): while one
/// full batch is being committed the next is being judged, so the store's writer is never left
/// idle by the pacing and fsyncs stay one per 512 decisions at most, as without it. A wave is
/// ~10 % of a 10,000-rollout slot: its second generation of state is a few MB, not tens.
pub(super) const WIDTH: usize = 1024;

/// The daemon's turns. Cheap to clone; every clone shares the same [`WIDTH`] turns.
#[derive(Clone, Debug)]
pub(super) struct Pacer(Arc<Semaphore>);

/// One rollout's turn to judge, decide and save: given back when dropped.
#[derive(Debug)]
pub(super) struct Turn {
    _permit: OwnedSemaphorePermit,
}

impl Default for Pacer {
    fn default() -> Self {
        Pacer::new(WIDTH)
    }
}

impl Pacer {
    /// `width` turns (at least one, so a slot always moves).
    pub(super) fn new(width: usize) -> Pacer {
        Pacer(Arc::new(Semaphore::new(width.max(1))))
    }

    /// The next turn, first come first served. Unbounded: the caller bounds the wait with the
    /// timer it already holds (every rollout of a slot waits at once, so one timer each, not
    /// two).
    pub(super) async fn turn(self) -> Option<Turn> {
        // The semaphore is never closed; a closed one is no turn, never a panic.
        let permit = self.0.acquire_owned().await.ok()?;
        Some(Turn { _permit: permit })
    }

    /// Turns free now (for tests and diagnostics).
    #[cfg(test)]
    pub(super) fn free(&self) -> usize {
        self.0.available_permits()
    }
}

impl super::Controller {
    /// A controller whose slots are judged `width` rollouts at a time instead of [`WIDTH`], so
    /// a test sees waves with a handful of rollouts. Not a setting: [`WIDTH`] is chosen for the
    /// store's transaction size. Call inside the runtime, before the first rollout starts and
    /// after [`super::Controller::with_leadership`] (it starts the scheduler, which watches the
    /// term it finds); later it does nothing.
    #[doc(hidden)]
    pub fn with_pacing_width(self, width: usize) -> super::Controller {
        let inner = &self.inner;
        let _ = inner.scheduler.get_or_init(|| {
            super::scheduler::Scheduler::start_paced(
                inner.source.clone(),
                inner.stops(),
                Pacer::new(width),
            )
        });
        self
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Pacer;

    #[tokio::test]
    async fn the_turn_after_the_width_waits_until_one_is_given_back() {
        let pacer = Pacer::new(2);
        let a = pacer.clone().turn().await;
        let b = pacer.clone().turn().await;
        assert!(a.is_some() && b.is_some());
        let mut third = Box::pin(pacer.clone().turn());
        assert!(
            tokio::time::timeout(Duration::from_millis(50), &mut third)
                .await
                .is_err(),
            "a third turn while two are out"
        );
        drop(a);
        let third = tokio::time::timeout(Duration::from_secs(1), third).await;
        assert!(
            matches!(third, Ok(Some(_))),
            "the turn given back goes to the waiter"
        );
        assert_eq!(pacer.free(), 0);
    }

    #[tokio::test]
    async fn a_cancelled_wait_takes_no_turn_and_a_dropped_turn_is_free_at_once() {
        let pacer = Pacer::new(1);
        let held = pacer.clone().turn().await;
        // A tick cancelled by a command while waiting: its wait is dropped.
        let mut waiting = Box::pin(pacer.clone().turn());
        assert!(
            tokio::time::timeout(Duration::from_millis(20), &mut waiting)
                .await
                .is_err()
        );
        drop(waiting);
        drop(held);
        assert_eq!(pacer.free(), 1, "nothing kept by the cancelled wait");
        let next = tokio::time::timeout(Duration::from_millis(100), pacer.clone().turn()).await;
        assert!(matches!(next, Ok(Some(_))));
    }

    #[tokio::test]
    async fn turns_are_first_come_first_served() {
        let pacer = Pacer::new(1);
        let held = pacer.clone().turn().await;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for i in 0..5 {
            let (pacer, tx) = (pacer.clone(), tx.clone());
            tokio::spawn(async move {
                let turn = pacer.turn().await;
                let _ = tx.send(i);
                drop(turn);
            });
            // Each waiter queued before the next one asks.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(held);
        let mut order = Vec::new();
        for _ in 0..5 {
            order.extend(rx.recv().await);
        }
        assert_eq!(order, vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn a_width_of_zero_still_gives_one_turn() {
        assert_eq!(Pacer::new(0).free(), 1);
    }
}
