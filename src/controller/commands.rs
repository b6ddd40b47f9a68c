//! A live rollout's command queue (abort, pause, an alert, a failing probe): many senders (the
//! API, the alert and probe subscribers), one actor taking them in order.
//!
//! It was a tokio channel of 32 behind a mutex the supervisor shared with each restarted task;
//! tokio allocates a channel's block of 32 slots up front, about 0.8 KB per live rollout for a
//! queue that is nearly always empty (heaptrack at 2,000 rollouts, BENCHMARKS.md "Scale"). This
//! one allocates only while commands wait. The receiving side is cloned from the supervisor to
//! each task it starts, so commands sent while a task panicked are answered by the next one;
//! once the last receiver is gone, waiting commands are dropped (their senders hear no answer)
//! and new ones are refused.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::task::AtomicWaker;
use tokio::sync::Notify;

/// Commands a rollout may have waiting before a sender waits for room: a burst of controls is
/// taken in order, a flood cannot grow without bound.
pub(super) const DEPTH: usize = 32;

struct Shared<T> {
    queue: Mutex<VecDeque<T>>,
    /// A command arrived, or the last sender left: wakes the one actor taking commands. A
    /// waker, not a `Notify`: a wait on a `Notify` is an 88-byte future inside every resting
    /// rollout's task cell, a wait on this is a reference.
    ready: AtomicWaker,
    /// Room freed, or the last receiver left.
    room: Notify,
    senders: AtomicUsize,
    receivers: AtomicUsize,
    closed: AtomicBool,
}

impl<T> Shared<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<T>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub(super) struct Sender<T>(Arc<Shared<T>>);

pub(super) struct Receiver<T>(Arc<Shared<T>>);

pub(super) fn queue<T>() -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        queue: Mutex::new(VecDeque::new()),
        ready: AtomicWaker::new(),
        room: Notify::new(),
        senders: AtomicUsize::new(1),
        receivers: AtomicUsize::new(1),
        closed: AtomicBool::new(false),
    });
    (Sender(shared.clone()), Receiver(shared))
}

impl<T> Sender<T> {
    /// Queues `item`, waiting while [`DEPTH`] are queued; `Err(item)` once no receiver is left.
    pub(super) async fn send(&self, item: T) -> Result<(), T> {
        loop {
            // Registered before looking, so room freed in between is not missed.
            let room = self.0.room.notified();
            if self.0.closed.load(Ordering::Acquire) {
                return Err(item);
            }
            {
                let mut q = self.0.lock();
                if q.len() < DEPTH {
                    q.push_back(item);
                    drop(q);
                    self.0.ready.wake();
                    return Ok(());
                }
            }
            room.await;
        }
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.0.senders.fetch_add(1, Ordering::AcqRel);
        Sender(self.0.clone())
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        if self.0.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.ready.wake();
        }
    }
}

impl<T> Receiver<T> {
    /// The next command; `None` once every sender is gone and nothing waits. Cancel-safe: a
    /// command stays queued until a call returns it.
    pub(super) fn recv(&mut self) -> impl std::future::Future<Output = Option<T>> + '_ {
        std::future::poll_fn(move |cx| self.poll_recv(cx))
    }

    /// Takes the next command, or registers to be woken (and looks once more, so a command
    /// sent between the look and the registration is not missed).
    fn poll_recv(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Option<T>> {
        for registered in [false, true] {
            if let Some(item) = self.0.lock().pop_front() {
                self.0.room.notify_one();
                return std::task::Poll::Ready(Some(item));
            }
            if self.0.senders.load(Ordering::Acquire) == 0 {
                return std::task::Poll::Ready(None);
            }
            if !registered {
                self.0.ready.register(cx.waker());
            }
        }
        std::task::Poll::Pending
    }
}

impl<T> Clone for Receiver<T> {
    fn clone(&self) -> Self {
        self.0.receivers.fetch_add(1, Ordering::AcqRel);
        Receiver(self.0.clone())
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        if self.0.receivers.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.closed.store(true, Ordering::Release);
            let waiting = std::mem::take(&mut *self.0.lock());
            drop(waiting);
            self.0.room.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn within<F: std::future::Future>(f: F) -> tokio::time::Timeout<F> {
        tokio::time::timeout(Duration::from_secs(5), f)
    }

    #[tokio::test]
    async fn commands_arrive_in_order_and_a_restarted_receiver_takes_what_waited() {
        let (tx, rx) = queue::<u32>();
        let mut first = rx.clone();
        for i in 0..3 {
            assert_eq!(tx.send(i).await, Ok(()));
        }
        assert_eq!(within(first.recv()).await, Ok(Some(0)));
        // The task that held `first` panicked: the next one takes what is still queued.
        drop(first);
        let mut next = rx.clone();
        assert_eq!(within(next.recv()).await, Ok(Some(1)));
        assert_eq!(within(next.recv()).await, Ok(Some(2)));
        // A waiting receiver is woken by a later send.
        let waiting = tokio::spawn(async move { next.recv().await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(tx.send(7).await, Ok(()));
        let got = within(waiting).await.map(|r| r.ok());
        assert_eq!(got, Ok(Some(Some(7))));
    }

    #[tokio::test]
    async fn a_full_queue_makes_the_sender_wait_for_room() {
        let (tx, mut rx) = queue::<usize>();
        for i in 0..DEPTH {
            assert_eq!(tx.send(i).await, Ok(()));
        }
        let sender = tx.clone();
        let blocked = tokio::spawn(async move { sender.send(DEPTH).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!blocked.is_finished(), "sent past the depth");
        assert_eq!(within(rx.recv()).await, Ok(Some(0)));
        let sent = within(blocked).await.map(|r| r.ok());
        assert_eq!(sent, Ok(Some(Ok(()))));
    }

    #[tokio::test]
    async fn with_no_receiver_left_commands_are_refused_and_waiting_ones_dropped() {
        let (tx, rx) = queue::<Arc<()>>();
        let waiting = Arc::new(());
        assert!(tx.send(waiting.clone()).await.is_ok());
        drop(rx);
        // The waiting command was dropped (its reply channel closes: the sender hears no answer).
        assert_eq!(Arc::strong_count(&waiting), 1);
        assert!(tx.send(Arc::new(())).await.is_err());
    }

    #[tokio::test]
    async fn the_receiver_hears_when_every_sender_is_gone() {
        let (tx, mut rx) = queue::<u8>();
        let other = tx.clone();
        assert_eq!(tx.send(1).await, Ok(()));
        drop(tx);
        drop(other);
        assert_eq!(within(rx.recv()).await, Ok(Some(1)));
        assert_eq!(within(rx.recv()).await, Ok(None));
    }
}
