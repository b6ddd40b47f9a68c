//! Where the scheduler hands a rollout its slot: a cell that holds at most one [`Due`].
//!
//! It was a bounded channel of one; tokio allocates a channel's slots in blocks of 32, so each
//! live rollout carried about 2.4 KB for a queue that never holds more than one (heaptrack at
//! 2,000 rollouts, BENCHMARKS.md "Scale"). The cell is the one slot and a wake-up.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::task::AtomicWaker;

use super::scheduler::Due;

struct Shared {
    due: Mutex<Option<Due>>,
    /// Wakes the actor: a waker rather than a `Notify`, whose wait is an 88-byte future in
    /// every resting rollout's task cell (a wait on this is a reference).
    ready: AtomicWaker,
    /// The scheduler dropped its side (the rollout was replaced or the scheduler ended).
    sender_gone: AtomicBool,
    /// The actor dropped its side (its task ended or panicked).
    receiver_gone: AtomicBool,
}

/// Why a slot was not handed over.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Full {
    /// The rollout has not taken its previous slot yet: that one stands for this one.
    Busy,
    /// Nobody takes slots any more.
    Closed,
}

/// The scheduler's side.
pub(super) struct DueSender(Arc<Shared>);

/// The actor's side.
pub(super) struct DueReceiver(Arc<Shared>);

pub(super) fn due_cell() -> (DueSender, DueReceiver) {
    let shared = Arc::new(Shared {
        due: Mutex::new(None),
        ready: AtomicWaker::new(),
        sender_gone: AtomicBool::new(false),
        receiver_gone: AtomicBool::new(false),
    });
    (DueSender(shared.clone()), DueReceiver(shared))
}

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, Option<Due>> {
    s.due.lock().unwrap_or_else(|p| p.into_inner())
}

impl DueSender {
    /// Hands `due` over unless the cell still holds one or the actor is gone; never waits.
    pub(super) fn try_send(&self, due: Due) -> Result<(), Full> {
        if self.0.receiver_gone.load(Ordering::Acquire) {
            return Err(Full::Closed);
        }
        let mut cell = lock(&self.0);
        if cell.is_some() {
            return Err(Full::Busy);
        }
        *cell = Some(due);
        drop(cell);
        // An actor not yet waiting finds the slot when it looks ([`DueReceiver::poll_recv`]).
        self.0.ready.wake();
        Ok(())
    }
}

impl Drop for DueSender {
    fn drop(&mut self) {
        self.0.sender_gone.store(true, Ordering::Release);
        self.0.ready.wake();
    }
}

impl DueReceiver {
    /// The next slot; `None` once the scheduler dropped its side and no slot is left.
    /// Cancel-safe: the slot stays in the cell until a call returns it.
    pub(super) fn recv(&mut self) -> impl std::future::Future<Output = Option<Due>> + '_ {
        std::future::poll_fn(move |cx| self.poll_recv(cx))
    }

    /// Takes the slot, or registers to be woken (and looks once more, so a slot handed over
    /// between the look and the registration is not missed).
    fn poll_recv(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Option<Due>> {
        for registered in [false, true] {
            if let Some(due) = self.try_recv() {
                return std::task::Poll::Ready(Some(due));
            }
            if self.0.sender_gone.load(Ordering::Acquire) {
                return std::task::Poll::Ready(None);
            }
            if !registered {
                self.0.ready.register(cx.waker());
            }
        }
        std::task::Poll::Pending
    }

    pub(super) fn try_recv(&mut self) -> Option<Due> {
        lock(&self.0).take()
    }
}

impl Drop for DueReceiver {
    fn drop(&mut self) {
        self.0.receiver_gone.store(true, Ordering::Release);
        // A slot handed over but never taken: its answer is dropped, so the slot does not wait
        // for this rollout.
        lock(&self.0).take();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::oneshot;

    use super::*;

    fn due() -> (
        Due,
        oneshot::Receiver<Option<super::super::scheduler::TickRequest>>,
    ) {
        let (answer, asked) = oneshot::channel();
        (
            Due {
                answer,
                planned: None,
            },
            asked,
        )
    }

    #[tokio::test]
    async fn holds_one_slot_wakes_a_waiting_actor_and_tells_the_scheduler_when_the_actor_is_gone() {
        let (tx, mut rx) = due_cell();
        let waiting = tokio::spawn(async move {
            let got = rx.recv().await.is_some();
            (got, rx)
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(tx.try_send(due().0), Ok(()));
        let (got, mut rx) = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .unwrap_or_else(|_| panic!("the waiting actor was not woken"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(got);
        // One at a time: a second slot before the first is taken is refused, not queued.
        assert_eq!(tx.try_send(due().0), Ok(()));
        assert_eq!(tx.try_send(due().0), Err(Full::Busy));
        assert!(rx.try_recv().is_some());
        assert!(rx.try_recv().is_none());
        // An actor that is gone drops the slot it never took (its answer closes).
        let (d, mut asked) = due();
        assert_eq!(tx.try_send(d), Ok(()));
        drop(rx);
        assert!(matches!(
            asked.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        ));
        assert_eq!(tx.try_send(due().0), Err(Full::Closed));
    }

    #[tokio::test]
    async fn the_actor_hears_that_the_scheduler_is_gone() {
        let (tx, mut rx) = due_cell();
        drop(tx);
        let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("recv waited on a gone scheduler"));
        assert!(got.is_none());
    }
}
