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

use std::collections::VecDeque;
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
/// Decisions per transaction at most: bounds the time the store's lock is held, and how long a
/// control decision waits behind tick saves already being committed.
const MAX_BATCH: usize = 512;

/// The history row a decision saves with its rollout, if any.
#[derive(Debug)]
pub(super) enum TickRow {
    /// Not a tick: only the rollout's row.
    None,
    /// A tick the machine kept: the row is the saved rollout's own `last_tick`, so a slot's
    /// waiting decisions hold no second copy of their checks.
    Last,
    /// A tick the machine did not count (warmup, a hook in flight, another step).
    Own(Tick),
}

/// One decision waiting for its commit. Small on purpose: a slot's thousands of decisions sit
/// in the writer's queue at once, and the state is the actor's own `Arc`, not a copy.
struct Request {
    rollout: Arc<Rollout>,
    tick: TickRow,
    reply: oneshot::Sender<Result<(), StoreError>>,
}

impl Request {
    fn is_tick(&self) -> bool {
        !matches!(self.tick, TickRow::None)
    }

    /// What the store saves: the rollout and its history row.
    fn item(&self) -> (&Rollout, Option<&Tick>) {
        let tick = match &self.tick {
            TickRow::None => None,
            TickRow::Last => self.rollout.last_tick.as_ref(),
            TickRow::Own(t) => Some(t),
        };
        (&self.rollout, tick)
    }
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
    ///
    /// Queued now, at the call; the future only waits for the answer. Not an `async fn`: its
    /// state would hold the request until the first poll, and a slot's thousands of decisions
    /// wait here at once, each inside its actor's future (an async `save` made every waiting
    /// decision ~1.2 KB, see `decide.rs`).
    pub(super) fn save(
        &self,
        rollout: Arc<Rollout>,
        tick: TickRow,
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send + use<> {
        let (reply, answer) = oneshot::channel();
        let sent = self
            .tx
            .send(Request {
                rollout,
                tick,
                reply,
            })
            .is_ok();
        async move {
            let stopped = || StoreError::Unavailable("the store writer has stopped".into());
            if !sent {
                return Err(stopped());
            }
            answer.await.unwrap_or_else(|_| Err(stopped()))
        }
    }
}

fn writer(store: &dyn Store, rx: &std_mpsc::Receiver<Request>) {
    let mut queue = Queue::default();
    loop {
        if queue.is_empty() {
            let Ok(first) = rx.recv() else {
                return;
            };
            linger(first, rx, &mut queue);
        }
        // Everything waiting, so a control decision behind a slot's tick saves goes next.
        while let Ok(r) = rx.try_recv() {
            queue.push(r);
        }
        commit(store, queue.next_batch());
    }
}

fn commit(store: &dyn Store, batch: Vec<Request>) {
    let items: Vec<(&Rollout, Option<&Tick>)> = batch.iter().map(Request::item).collect();
    // A store that panics fails this batch, not every later save.
    let saved = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| store.save_many(&items)));
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

/// Saves waiting for the writer: control decisions (no tick) ahead of ticks.
#[derive(Default)]
struct Queue {
    control: VecDeque<Request>,
    ticks: VecDeque<Request>,
}

impl Queue {
    fn push(&mut self, r: Request) {
        if r.is_tick() {
            self.ticks.push_back(r);
        } else {
            self.control.push_back(r);
        }
    }

    fn is_empty(&self) -> bool {
        self.control.is_empty() && self.ticks.is_empty()
    }

    fn len(&self) -> usize {
        self.control.len() + self.ticks.len()
    }

    /// The control decisions waiting, else the oldest tick saves; at most [`MAX_BATCH`].
    fn next_batch(&mut self) -> Vec<Request> {
        let from = if self.control.is_empty() {
            &mut self.ticks
        } else {
            &mut self.control
        };
        let n = from.len().min(MAX_BATCH);
        from.drain(..n).collect()
    }
}

/// Queues `first` and every request that follows within [`GAP`] of the one before, for at
/// most [`MAX_LINGER`].
fn linger(first: Request, rx: &std_mpsc::Receiver<Request>, queue: &mut Queue) {
    let started = Instant::now();
    queue.push(first);
    while queue.len() < MAX_BATCH {
        let left = MAX_LINGER.saturating_sub(started.elapsed());
        if left.is_zero() {
            break;
        }
        match rx.recv_timeout(GAP.min(left)) {
            Ok(r) => queue.push(r),
            Err(_) => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Delivery, MemoryStore, SavedBatch};
    use std::sync::Mutex;

    /// Records each commit's ids and refuses the rollout named `bad`, as a store with one
    /// unwritable row. The first commit waits for `gate` to be opened (when one is set), as an
    /// fsync of many rows keeps the writer busy: a test then decides what is queued meanwhile.
    #[derive(Default)]
    struct Counting {
        inner: MemoryStore,
        batches: Mutex<Vec<Vec<String>>>,
        gate: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
    }

    impl Counting {
        fn batches(&self) -> Vec<Vec<String>> {
            self.batches
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
        }
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
                .push(batch.iter().map(|(r, _)| r.id.clone()).collect());
            let gate = self.gate.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(gate) = gate {
                let _ = gate.recv();
            }
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
        let saves = ids
            .iter()
            .map(|id| commit.save(Arc::new(rollout(id)), TickRow::None));
        let results = futures_util::future::join_all(saves).await;
        for (id, r) in ids.iter().zip(&results) {
            assert_eq!(r.is_ok(), *id != "bad", "{id}: {r:?}");
        }
        let batches = store.batches();
        assert_eq!(
            batches.iter().map(Vec::len).sum::<usize>(),
            ids.len(),
            "{batches:?}"
        );
        assert!(
            batches.len() < ids.len(),
            "decisions queued together must share commits: {batches:?}"
        );
        // Saved means readable: the decision is in the store when its save returns.
        assert!(store.get("a").ok().flatten().is_some());
        assert!(store.get("bad").ok().flatten().is_none());
    }

    /// `save` polled once, so its request is in the writer's queue when this returns.
    fn queued<F: Future + Unpin>(mut save: F) -> F {
        let mut cx = std::task::Context::from_waker(futures_util::task::noop_waker_ref());
        assert!(std::pin::Pin::new(&mut save).poll(&mut cx).is_pending());
        save
    }

    fn tick() -> Tick {
        serde_json::from_value(serde_json::json!({
            "at": "2026-11-30T23:00:00Z", "step": 0, "checks": [],
            "score": {"value": 1.0, "outcome": "pass", "reason": "test"}
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[tokio::test]
    async fn a_start_is_committed_ahead_of_a_slot_of_tick_saves_already_queued() {
        // The writer's first commit is held until the start is queued: on a loaded machine
        // the writer could otherwise get through the whole slot before the test sends it (a
        // delay per commit made that only unlikely).
        let (open, gate) = std::sync::mpsc::channel();
        let store = Arc::new(Counting {
            gate: Mutex::new(Some(gate)),
            ..Counting::default()
        });
        let commit = GroupCommit::start(store.clone());
        // A slot of 5,000 tick saves, each polled once so it is queued, then a start.
        let ticks: Vec<_> = (0..5_000)
            .map(|i| {
                queued(Box::pin(commit.save(
                    Arc::new(rollout(&format!("t{i}"))),
                    TickRow::Own(tick()),
                )))
            })
            .collect();
        let start = queued(Box::pin(
            commit.save(Arc::new(rollout("start")), TickRow::None),
        ));
        let seen_at_send: usize = store.batches().iter().map(Vec::len).sum();
        assert!(
            seen_at_send <= MAX_BATCH,
            "the writer is held in its first commit ({seen_at_send})"
        );
        let _ = open.send(());
        start.await.unwrap_or_else(|e| panic!("{e}"));
        let batches = store.batches();
        let at = batches
            .iter()
            .position(|b| b.contains(&"start".to_string()))
            .unwrap_or_else(|| panic!("start not committed: {batches:?}"));
        assert_eq!(batches[at], vec!["start".to_string()], "its own commit");
        let ahead: usize = batches[..at].iter().map(Vec::len).sum();
        assert!(
            ahead <= seen_at_send + MAX_BATCH,
            "{ahead} tick saves committed before the start ({seen_at_send} begun when it came), \
             more than the one chunk in progress: {:?}",
            batches.iter().map(Vec::len).collect::<Vec<_>>()
        );
        let saved = futures_util::future::join_all(ticks).await;
        assert!(saved.iter().all(Result::is_ok));
        assert_eq!(store.batches().iter().map(Vec::len).sum::<usize>(), 5_001);
    }

    #[tokio::test]
    async fn a_kept_tick_is_saved_to_history_from_the_rollouts_last_tick() {
        let store = Arc::new(Counting::default());
        let commit = GroupCommit::start(store.clone());
        let mut kept = rollout("kept");
        kept.last_tick = Some(tick());
        let mut ignored = rollout("ignored");
        ignored.last_tick = Some(tick());
        let mut own = tick();
        own.step = 7;
        let saves = [
            commit.save(Arc::new(kept), TickRow::Last),
            commit.save(Arc::new(ignored), TickRow::Own(own.clone())),
            commit.save(Arc::new(rollout("control")), TickRow::None),
        ];
        for r in futures_util::future::join_all(saves).await {
            r.unwrap_or_else(|e| panic!("{e}"));
        }
        let history = |id: &str| store.history(id, 10).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(history("kept"), vec![tick()]);
        assert_eq!(
            history("ignored"),
            vec![own],
            "its own row, not its last_tick"
        );
        assert_eq!(history("control"), Vec::<Tick>::new());
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
