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
//!
//! The same wait is the actor's stop signal ([`Receiver::control`]): shutdown and the end of the
//! leader term are checked each time the actor is woken, and whoever ends them pokes every
//! actor's queue ([`Poke`], from the scheduler's loop). One wait for commands and stops, not a
//! command wait plus two `watch` waits (120 bytes each) in every resting rollout's task cell and
//! again in every slot future.

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
    /// A command arrived, the last sender left, or a [`Poke`]: wakes the one actor taking
    /// commands. A
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

/// What the actor's control wait gives: a command, or the order to stop (shutdown, or the
/// leader term ended).
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Control<T> {
    Command(T),
    Stop,
}

/// Wakes a queue's actor without sending it anything, so it looks at its stop condition again.
/// Type-erased, so the scheduler holds one per rollout without naming the command type.
pub(super) trait Poke: Send + Sync {
    fn poke(&self);
}

impl<T: Send> Poke for Shared<T> {
    fn poke(&self) {
        self.ready.wake();
    }
}

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
    /// The last sender leaving wakes the actor: the controller drops its senders as it shuts
    /// down or stands down, after setting what the actor's stop check reads.
    fn drop(&mut self) {
        if self.0.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.ready.wake();
        }
    }
}

impl<T> Receiver<T> {
    /// The next command, or [`Control::Stop`] once `stopped()` says so (commands already
    /// queued come first: an abort sent before a shutdown is still answered). Woken by a
    /// command, or by a [`Poke`] after whatever `stopped` reads changed. A queue whose senders
    /// are all gone gives no more commands but does not stop the actor: only `stopped` does.
    /// Cancel-safe: a command stays queued until a call returns it.
    pub(super) fn control<'a>(
        &'a mut self,
        stopped: impl Fn() -> bool + 'a,
    ) -> impl std::future::Future<Output = Control<T>> + 'a {
        std::future::poll_fn(move |cx| {
            // Registered before the second look, so a command sent or a stop poked in between
            // is not missed.
            for registered in [false, true] {
                if let Some(item) = self.take() {
                    return std::task::Poll::Ready(Control::Command(item));
                }
                if stopped() {
                    return std::task::Poll::Ready(Control::Stop);
                }
                if !registered {
                    self.0.ready.register(cx.waker());
                }
            }
            std::task::Poll::Pending
        })
    }

    /// The handle that wakes this queue's actor ([`Poke`]).
    pub(super) fn poker(&self) -> Arc<dyn Poke>
    where
        T: Send + 'static,
    {
        self.0.clone()
    }

    fn take(&self) -> Option<T> {
        let item = self.0.lock().pop_front()?;
        self.0.room.notify_one();
        Some(item)
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

    /// The next command of an actor that is never told to stop.
    async fn recv<T>(rx: &mut Receiver<T>) -> Option<T> {
        match rx.control(|| false).await {
            Control::Command(c) => Some(c),
            Control::Stop => None,
        }
    }

    #[tokio::test]
    async fn commands_arrive_in_order_and_a_restarted_receiver_takes_what_waited() {
        let (tx, rx) = queue::<u32>();
        let mut first = rx.clone();
        for i in 0..3 {
            assert_eq!(tx.send(i).await, Ok(()));
        }
        assert_eq!(within(recv(&mut first)).await, Ok(Some(0)));
        // The task that held `first` panicked: the next one takes what is still queued.
        drop(first);
        let mut next = rx.clone();
        assert_eq!(within(recv(&mut next)).await, Ok(Some(1)));
        assert_eq!(within(recv(&mut next)).await, Ok(Some(2)));
        // A waiting receiver is woken by a later send.
        let waiting = tokio::spawn(async move { recv(&mut next).await });
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
        assert_eq!(within(recv(&mut rx)).await, Ok(Some(0)));
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
    async fn control_gives_queued_commands_first_then_stops_once_poked_with_the_stop_set() {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, mut rx) = queue::<u8>();
        let poke = rx.poker();
        let flag = stop.clone();
        let waiting = tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                match rx.control(|| flag.load(Ordering::SeqCst)).await {
                    Control::Command(c) => got.push(c),
                    Control::Stop => return got,
                }
            }
        });
        assert_eq!(tx.send(1).await, Ok(()));
        // A poke with nothing to stop for wakes the actor, which waits on.
        poke.poke();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "stopped without a stop");
        // The stop is set but nobody pokes: the actor sleeps on (nothing else wakes it).
        stop.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "woken by nothing");
        poke.poke();
        let got = within(waiting).await.map(|r| r.ok());
        assert_eq!(got, Ok(Some(vec![1])));
    }

    #[tokio::test]
    async fn a_command_queued_before_the_stop_is_still_taken_first() {
        let (tx, mut rx) = queue::<u8>();
        assert_eq!(tx.send(9).await, Ok(()));
        assert_eq!(within(rx.control(|| true)).await, Ok(Control::Command(9)));
        assert_eq!(within(rx.control(|| true)).await, Ok(Control::Stop));
        // With every sender gone and no stop, the actor waits (for a stop), not spins.
        drop(tx);
        let waited = tokio::time::timeout(Duration::from_millis(20), rx.control(|| false)).await;
        assert!(waited.is_err(), "a closed queue stopped the actor");
    }
}
