//! Group commit: one store transaction (one fsync) for every decision taken at about the same
//! moment — in practice the rollouts of one scheduler slot — instead of one per rollout.
//!
//! Each rollout still saves before it acts: [`GroupCommit::save`] returns only once the batch
//! holding its decision is committed, with that decision's own result (the store isolates a
//! decision that cannot be written, [`crate::store::Store::save_many`]), so the
//! decide → save → act order and "a refused decision is never acted on" hold per rollout.
//!
//! The writer is one thread (the stores are blocking): it takes the first request, then keeps
//! taking requests while they keep coming — each within [`GAP`] of the last, for at most
//! [`MAX_LINGER`] — so the decisions of a slot, which arrive within a few milliseconds of each
//! other once their shared queries are answered, meet in one commit. A lone decision (an abort)
//! waits at most [`GAP`] for company.

use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::rollout::{Rollout, Tick};
use crate::store::{Store, StoreError};
use crate::telemetry;

/// How long the writer waits for one more decision before committing what it holds.
pub(super) const GAP: Duration = Duration::from_millis(3);
/// The longest a decision waits for others to join its commit.
pub(super) const MAX_LINGER: Duration = Duration::from_millis(25);
/// Decisions per transaction at most: bounds the time the store's lock is held.
const MAX_BATCH: usize = 2048;

struct Request {
    rollout: Rollout,
    tick: Option<Tick>,
    reply: oneshot::Sender<Result<(), StoreError>>,
}

/// The handle every rollout saves through. Cheap to clone; the writer thread ends when the last
/// handle is dropped.
#[derive(Clone)]
pub(super) struct GroupCommit {
    tx: std_mpsc::Sender<Request>,
}

impl GroupCommit {
    pub(super) fn start(store: Arc<dyn Store>) -> GroupCommit {
        let (tx, rx) = std_mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("canaryd-commit".into())
            .spawn(move || writer(store.as_ref(), &rx));
        if let Err(e) = spawned {
            // Every save then fails (the channel is closed): decisions are refused, never
            // acted on unsaved, and /health/ready says why.
            tracing::error!(error = %e, "cannot start the store writer thread");
        }
        GroupCommit { tx }
    }

    /// Saves one decision in the next group commit and returns its own result once committed.
    pub(super) async fn save(
        &self,
        rollout: Rollout,
        tick: Option<Tick>,
    ) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        let stopped = || StoreError::Unavailable("the store writer has stopped".into());
        self.tx
            .send(Request {
                rollout,
                tick,
                reply,
            })
            .map_err(|_| stopped())?;
        answer.await.unwrap_or_else(|_| Err(stopped()))
    }
}

fn writer(store: &dyn Store, rx: &std_mpsc::Receiver<Request>) {
    while let Ok(first) = rx.recv() {
        let batch = gather(first, rx);
        let items: Vec<(&Rollout, Option<&Tick>)> = batch
            .iter()
            .map(|r| (&r.rollout, r.tick.as_ref()))
            .collect();
        // A store that panics fails this batch, not every later save.
        let saved =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| store.save_many(&items)));
        let (results, commits) = match saved {
            Ok(s) => (s.results, s.commits),
            Err(_) => (Vec::new(), 0),
        };
        telemetry::record_store_commits(commits, batch.len());
        let mut results = results.into_iter();
        for req in batch {
            let result = results.next().unwrap_or_else(|| {
                Err(StoreError::Unavailable(
                    "the store did not answer for this decision".into(),
                ))
            });
            let _ = req.reply.send(result);
        }
    }
}

/// The batch that starts with `first`: every request that follows within [`GAP`] of the one
/// before, for at most [`MAX_LINGER`].
fn gather(first: Request, rx: &std_mpsc::Receiver<Request>) -> Vec<Request> {
    let started = Instant::now();
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        let left = MAX_LINGER.saturating_sub(started.elapsed());
        if left.is_zero() {
            break;
        }
        match rx.recv_timeout(GAP.min(left)) {
            Ok(r) => batch.push(r),
            Err(_) => break,
        }
    }
    batch
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Delivery, MemoryStore, SavedBatch};
    use std::sync::Mutex;

    /// Counts commits and refuses the rollout named `bad`, as a store with one unwritable row.
    #[derive(Default)]
    struct Counting {
        inner: MemoryStore,
        batches: Mutex<Vec<usize>>,
    }

    impl Store for Counting {
        fn create(&self, r: &Rollout, s: &str) -> Result<(), StoreError> {
            self.inner.create(r, s)
        }
        fn save(&self, r: &Rollout, t: Option<&Tick>) -> Result<(), StoreError> {
            self.inner.save(r, t)
        }
        fn save_many(&self, batch: &[(&Rollout, Option<&Tick>)]) -> SavedBatch {
            self.batches
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(batch.len());
            SavedBatch {
                results: batch
                    .iter()
                    .map(|(r, t)| {
                        if r.id == "bad" {
                            Err(StoreError::Unavailable("unwritable (test)".into()))
                        } else {
                            self.inner.save(r, *t)
                        }
                    })
                    .collect(),
                commits: 1,
            }
        }
        fn get(&self, id: &str) -> Result<Option<Rollout>, StoreError> {
            self.inner.get(id)
        }
        fn list(&self) -> Result<Vec<Rollout>, StoreError> {
            self.inner.list()
        }
        fn rule_source(&self, id: &str) -> Result<Option<String>, StoreError> {
            self.inner.rule_source(id)
        }
        fn history(&self, id: &str, limit: usize) -> Result<Vec<Tick>, StoreError> {
            self.inner.history(id, limit)
        }
        fn record_delivery(&self, d: &Delivery) -> Result<(), StoreError> {
            self.inner.record_delivery(d)
        }
        fn deliveries(&self, id: &str) -> Result<Vec<Delivery>, StoreError> {
            self.inner.deliveries(id)
        }
        fn ping(&self) -> Result<(), StoreError> {
            Ok(())
        }
    }

    fn rollout(id: &str) -> Rollout {
        Rollout::new(id.into(), "api".into(), "v2".into(), chrono::Utc::now())
    }

    #[tokio::test]
    async fn decisions_saved_together_share_one_commit_and_keep_their_own_results() {
        let store = Arc::new(Counting::default());
        let commit = GroupCommit::start(store.clone());
        let ids = ["a", "b", "bad", "c", "d"];
        let saves = ids.iter().map(|id| commit.save(rollout(id), None));
        let results = futures_util::future::join_all(saves).await;
        for (id, r) in ids.iter().zip(&results) {
            assert_eq!(r.is_ok(), *id != "bad", "{id}: {r:?}");
        }
        let batches = store
            .batches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        assert_eq!(batches.iter().sum::<usize>(), ids.len(), "{batches:?}");
        assert!(
            batches.len() < ids.len(),
            "decisions queued together must share commits: {batches:?}"
        );
        // Saved means readable: the decision is in the store when its save returns.
        assert!(store.get("a").ok().flatten().is_some());
        assert!(store.get("bad").ok().flatten().is_none());
    }

    #[test]
    fn sqlite_saves_a_batch_in_one_commit_and_isolates_an_unwritable_decision() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = crate::store::sqlite::SqliteStore::open_file(&dir.path().join("t.db"), true)
            .unwrap_or_else(|e| panic!("{e}"));
        let (a, b, never) = (rollout("a"), rollout("b"), rollout("never-created"));
        store.create(&a, "rule").unwrap_or_else(|e| panic!("{e}"));
        store.create(&b, "rule").unwrap_or_else(|e| panic!("{e}"));
        let (mut a2, mut b2) = (a.clone(), b.clone());
        a2.step = 2;
        b2.step = 3;
        let saved = store.save_many(&[(&a2, None), (&never, None), (&b2, None)]);
        assert_eq!(saved.commits, 1);
        assert!(
            saved.results[0].is_ok() && saved.results[2].is_ok(),
            "{saved:?}"
        );
        assert!(saved.results[1].is_err(), "{saved:?}");
        let step = |id: &str| store.get(id).ok().flatten().map(|r| r.step);
        assert_eq!((step("a"), step("b")), (Some(2), Some(3)));
        assert_eq!(step("never-created"), None);
    }
}
