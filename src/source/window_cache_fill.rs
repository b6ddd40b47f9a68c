//! Whole-window queries in flight ("fills"), at most one per batch key.
//!
//! Why: the first whole window of a shape at 10,000 services took longer than a tick
//! (BENCHMARKS.md, "Scale"). Cut at the tick's Prometheus timeout it never filled the window
//! cache, so every later tick asked the whole window again and missed again. A fill therefore
//! gets its own, longer bound (`prometheus.fill_timeout`) and outlives the tick that launched
//! it; a later tick of the same batch that finds it still running waits for it (within its own
//! deadline) instead of sending the same heavy query again, then asks only the rest.
//!
//! Bounded: one fill per key, at most [`MAX_FILLS`] in all (beyond that a whole window is asked
//! with the tick's own timeout, as without fills), and each ends by `fill_timeout`. A Prometheus
//! that is down refuses at once, so its fills end at once and leave nothing behind.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

/// Fills in flight at once, all keys together: a few metric shapes (wide) or a few dozen regex
/// batches, with room to spare. More would let an overloaded Prometheus be sent a pile of the
/// heaviest queries it gets.
pub(super) const MAX_FILLS: usize = 32;

/// What a tick may do about a whole window it must ask.
#[derive(Debug)]
pub(super) enum Claim<K: Eq + Hash> {
    /// Ask it, with the fill's bound; the guard ends the claim when dropped.
    Fill(FillGuard<K>),
    /// Another tick's fill of this key is in flight: wait for it, then plan again.
    Wait(watch::Receiver<()>),
    /// Too many fills in flight: ask with the tick's own timeout, unclaimed.
    Busy,
}

/// The keys being filled, with a receiver that wakes when the fill ends.
#[derive(Debug)]
pub(super) struct Fills<K: Eq + Hash> {
    inflight: Arc<Mutex<HashMap<K, watch::Receiver<()>>>>,
}

impl<K: Eq + Hash + Clone> Fills<K> {
    pub(super) fn new() -> Self {
        Fills {
            inflight: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Claims `key` for a fill, unless one is in flight or too many are.
    pub(super) fn claim(&self, key: &K) -> Claim<K> {
        let mut inflight = lock(&self.inflight);
        if let Some(rx) = inflight.get(key) {
            return Claim::Wait(rx.clone());
        }
        if inflight.len() >= MAX_FILLS {
            return Claim::Busy;
        }
        let (tx, rx) = watch::channel(());
        inflight.insert(key.clone(), rx);
        Claim::Fill(FillGuard {
            inflight: Arc::clone(&self.inflight),
            key: Some(key.clone()),
            _done: tx,
        })
    }

    /// Fills in flight now.
    pub(super) fn in_flight(&self) -> usize {
        lock(&self.inflight).len()
    }
}

/// Held by the task that fills; dropping it (answered, failed, timed out or the task gone)
/// frees the key and wakes every waiter.
#[derive(Debug)]
pub(super) struct FillGuard<K: Eq + Hash> {
    inflight: Arc<Mutex<HashMap<K, watch::Receiver<()>>>>,
    key: Option<K>,
    /// Dropped after the key is freed: waiters see the sender closed and plan again.
    _done: watch::Sender<()>,
}

impl<K: Eq + Hash> Drop for FillGuard<K> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            lock(&self.inflight).remove(&key);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Entries are inserted and removed whole: a poisoned lock is still consistent.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Waits until the fill behind `rx` ends (its guard dropped).
pub(super) async fn ended(mut rx: watch::Receiver<()>) {
    while rx.changed().await.is_ok() {}
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn one_fill_per_key_and_waiters_wake_when_it_ends() {
        let fills: Fills<&str> = Fills::new();
        let Claim::Fill(guard) = fills.claim(&"a") else {
            panic!("first claim fills");
        };
        let Claim::Wait(rx) = fills.claim(&"a") else {
            panic!("a second tick waits for the fill in flight");
        };
        assert!(
            matches!(fills.claim(&"b"), Claim::Fill(_)),
            "other keys fill"
        );
        assert_eq!(fills.in_flight(), 1, "b's guard was dropped at once");
        let waiter = tokio::spawn(ended(rx));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "waits while the fill runs");
        drop(guard);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("woken when the fill ends")
            .expect("waiter");
        assert_eq!(fills.in_flight(), 0);
        assert!(matches!(fills.claim(&"a"), Claim::Fill(_)), "free again");
    }

    #[test]
    fn fills_in_flight_are_bounded_whatever_the_keys() {
        let fills: Fills<usize> = Fills::new();
        let guards: Vec<_> = (0..MAX_FILLS * 3).map(|k| fills.claim(&k)).collect();
        let filling = guards
            .iter()
            .filter(|c| matches!(c, Claim::Fill(_)))
            .count();
        assert_eq!(filling, MAX_FILLS);
        assert!(matches!(guards[MAX_FILLS], Claim::Busy));
        assert_eq!(fills.in_flight(), MAX_FILLS);
        drop(guards);
        assert_eq!(fills.in_flight(), 0, "every claim ends with its guard");
    }
}
