//! One scheduler owns every live rollout's next tick: a single ordered set of (due, rollout)
//! and one loop, instead of a task per rollout sleeping on its own timer.
//!
//! Ticks due at the same moment are one *slot* ([`super::slots`] aligns each rollout to the
//! boundaries of its interval, so rollouts with equal intervals share slots). When a slot is
//! due, the scheduler plans it from what each rollout last published
//! ([`super::registry`]): every rollout that wants analysis is gathered at once, without asking
//! its actor first, and its [`Due`] carries the answer to come. A rollout that does not (yet)
//! want analysis is asked: its actor answers with a [`TickRequest`], or declines and handles the
//! moment itself (a hold's timer, a checkpoint after promotion). The slot's requests are
//! gathered together by one call ([`super::gather::answer_slot`]), each answered on its own
//! channel. Each actor then judges its answer with a turn from the scheduler's [`Pacer`]
//! ([`super::pacer`]), held until its decision is committed, so a slot is judged in waves.
//!
//! Control still preempts analysis: the actor keeps its command queue and, while its request is
//! out, answers commands first; one that changes the phase, step or pending action drops the
//! request's answer (cancels that rollout's tick). An actor busy (saving its last decision, a
//! slow hook) when its slot comes takes the slot's answer when it is free, if it is still in the
//! state the slot was planned for; else it asks and is gathered in a late wave. At most one slot
//! waits for it (no burst after a long hook).
//!
//! The loop is also every actor's stop signal: it watches shutdown and the leader term, and when
//! either ends it pokes each registered actor's command queue ([`super::commands::Poke`]); the
//! actor then sees the stop in its one control wait ([`super::commands::Receiver::control`]).
//! One watcher for the daemon instead of two `watch` waits in every rollout's resting future
//! and slot future.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot};

use super::due_cell::{DueReceiver, DueSender, Full};
use tokio::time::Instant;

use chrono::{DateTime, Utc};

use super::analysis::Gathered;
use super::commands::Poke;
use super::gather_memo::RolloutRule;
use super::pacer::Pacer;
use super::registry::{Member, Published, Wanted};
use super::slots::{first_slot, next_slot};
use super::stops::Change;
pub(super) use super::stops::Stops;
use crate::rollout::Rollout;
use crate::source::PrometheusSource;

/// A slot has come for a rollout: answer with what to gather, or `None` to handle it alone.
pub(super) struct Due {
    pub(super) answer: oneshot::Sender<Option<TickRequest>>,
    /// The slot is already gathering this rollout's tick, planned for the state it published.
    pub(super) planned: Option<Planned>,
}

/// A tick the scheduler gathers without being asked: valid for the state it was planned for.
pub(super) struct Planned {
    pub(super) wanted: Wanted,
    pub(super) answer: oneshot::Receiver<Result<Gathered, SystemTime>>,
}

/// One rollout's part of a slot: what to gather for it, and where its answer goes.
pub(super) struct TickRequest {
    /// The rollout's rule, with the memo of its queries ([`super::gather_memo`]).
    pub(super) rule: RolloutRule,
    /// Whose tick: its queries read the id and version (the actor judges its own state).
    pub(super) rollout: Arc<Rollout>,
    /// The tick's own deadline; the slot ends by the smallest of its rollouts'.
    pub(super) deadline: Duration,
    /// `Ok` with the raw answers, or `Err(end)` when the slot missed its deadline.
    pub(super) reply: oneshot::Sender<Result<Gathered, SystemTime>>,
}

enum Msg {
    Register {
        id: String,
        generation: u64,
        interval: Duration,
        now: bool,
        notify: DueSender,
        member: Member,
        published: Published,
        stop: Arc<dyn Poke>,
    },
    Remove {
        id: String,
        generation: u64,
    },
}

/// The handle rollouts register with. Cheap to clone; the loop ends on shutdown.
#[derive(Clone)]
pub(super) struct Scheduler {
    tx: mpsc::UnboundedSender<Msg>,
    generations: Arc<AtomicU64>,
    /// The turns every rollout takes to judge its slot's answer ([`super::pacer`]): one set for
    /// the daemon, shared by every slot and late wave.
    pacer: Pacer,
}

/// A rollout's place in the scheduler, for as long as it is held: dropping it (the task ended
/// or panicked) takes the rollout out.
pub(super) struct Registration {
    id: String,
    generation: u64,
    tx: mpsc::UnboundedSender<Msg>,
    /// Where the rollout's slots arrive; holds at most one, so a busy actor is not flooded.
    pub(super) due: DueReceiver,
    published: Published,
}

impl Registration {
    /// Tells the scheduler whether (and from when) this rollout wants analysis, so its next
    /// slot is gathered without asking. Called each time round the actor's loop.
    pub(super) fn publish(&self, wanted: Option<Wanted>, state: &Arc<Rollout>) {
        self.published.set(wanted, state);
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let _ = self.tx.send(Msg::Remove {
            id: std::mem::take(&mut self.id),
            generation: self.generation,
        });
    }
}

impl Scheduler {
    /// Starts the loop on the current runtime, with the daemon's [`super::pacer::WIDTH`] turns.
    /// `shutdown` and `lead` are what stops the actors: the loop pokes them when either ends.
    pub(super) fn start(source: PrometheusSource, stops: Stops) -> Scheduler {
        Scheduler::start_paced(source, stops, Pacer::default())
    }

    /// [`Scheduler::start`] with `pacer`'s turns: tests judge a slot in waves smaller than it.
    pub(super) fn start_paced(source: PrometheusSource, stops: Stops, pacer: Pacer) -> Scheduler {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(source, rx, stops));
        Scheduler {
            tx,
            generations: Arc::new(AtomicU64::new(0)),
            pacer,
        }
    }

    /// The turns a rollout takes to judge its slot's answer.
    pub(super) fn pacer(&self) -> Pacer {
        self.pacer.clone()
    }

    /// Schedules rollout `id` every `interval`: first at once when `now` (recovered, restarted),
    /// else at its first slot ([`first_slot`]). A new registration of the same id replaces the
    /// old one. `member` is what its ticks gather, once it publishes that it wants them; `stop`
    /// wakes its actor when shutdown or the end of the term should stop it.
    pub(super) fn register(
        &self,
        id: &str,
        interval: Duration,
        now: bool,
        member: Member,
        stop: Arc<dyn Poke>,
    ) -> Registration {
        let generation = self.generations.fetch_add(1, Ordering::Relaxed);
        let (notify, due) = super::due_cell::due_cell();
        let published = Published::default();
        let _ = self.tx.send(Msg::Register {
            id: id.to_string(),
            generation,
            interval,
            now,
            notify,
            member,
            published: published.clone(),
            stop,
        });
        Registration {
            id: id.to_string(),
            generation,
            tx: self.tx.clone(),
            due,
            published,
        }
    }
}

struct Entry {
    generation: u64,
    interval: Duration,
    /// Offset of the next slot from the scheduler's origin.
    due: Duration,
    notify: DueSender,
    member: Member,
    published: Published,
    /// Wakes the actor to look at its stop condition.
    stop: Arc<dyn Poke>,
}

/// Wakes every registered actor: something they stop on changed.
fn poke_all(entries: &HashMap<String, Entry>) {
    for entry in entries.values() {
        entry.stop.poke();
    }
}

/// One slot as fired: the ticks gathered without asking, and the answers of the rollouts asked.
pub(super) struct Slot {
    pub(super) planned: Vec<TickRequest>,
    /// Rollouts that published no wish for analysis: asked, within the collect window.
    pub(super) asked: Vec<oneshot::Receiver<Option<TickRequest>>>,
    /// Rollouts whose tick is planned: they ask only if their state moved on since.
    pub(super) unplanned: Vec<oneshot::Receiver<Option<TickRequest>>>,
    /// The shortest interval among the slot's rollouts.
    pub(super) shortest: Duration,
    /// The boundary the slot stands for (the latest due time of its rollouts), from the
    /// scheduler's start: its queries end there, not when the slot got to them.
    pub(super) due: Duration,
}

/// The loop: one timer, the earliest slot of every rollout.
async fn run(source: PrometheusSource, mut rx: mpsc::UnboundedReceiver<Msg>, stops: Stops) {
    let mut stops = stops;
    let mut epoch = stops.epoch();
    let origin = Instant::now();
    let wall_origin = SystemTime::now();
    let mut entries: HashMap<String, Entry> = HashMap::new();
    let mut timers: BTreeSet<(Duration, String)> = BTreeSet::new();
    loop {
        let next = timers.first().map(|(due, _)| origin + *due);
        tokio::select! {
            biased;
            change = stops.changed(&mut epoch) => {
                poke_all(&entries);
                if change == Change::Shutdown {
                    return;
                }
            }
            msg = rx.recv() => match msg {
                None => {
                    poke_all(&entries);
                    return;
                }
                Some(Msg::Register { id, generation, interval, now, notify, member, published, stop }) => {
                    let elapsed = origin.elapsed();
                    let due = if now { elapsed } else { first_slot(elapsed, interval) };
                    if let Some(old) = entries.remove(&id) {
                        timers.remove(&(old.due, id.clone()));
                    }
                    timers.insert((due, id.clone()));
                    // Woken once now it is in: a term that ended before this insert (and whose
                    // poke it missed) is seen by the actor as it looks again.
                    stop.poke();
                    entries.insert(id, Entry { generation, interval, due, notify, member, published, stop });
                }
                Some(Msg::Remove { id, generation }) => {
                    if entries.get(&id).is_some_and(|e| e.generation == generation)
                        && let Some(old) = entries.remove(&id)
                    {
                        timers.remove(&(old.due, id));
                    }
                }
            },
            _ = tokio::time::sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => {
                let fired = Instant::now();
                let slot = fire(&mut entries, &mut timers, fired.duration_since(origin), Utc::now());
                if !(slot.planned.is_empty() && slot.asked.is_empty() && slot.unplanned.is_empty()) {
                    let end = slot_end(wall_origin, slot.due);
                    tokio::spawn(super::gather::run_slot(source.clone(), slot, fired, end));
                }
            }
        }
    }
}

/// When the queries of a slot due `due` after the scheduler started (at `wall_origin`) end: the
/// slot's boundary on the wall clock, so successive slots' windows end exactly one interval
/// apart however late a loaded daemon got to them (the window cache reuses points only on the
/// same step grid, and ends read off the clock a second apart once in a while sent the whole
/// window again). Never after now: a clock stepped back since the start gives now.
pub(super) fn slot_end(wall_origin: SystemTime, due: Duration) -> SystemTime {
    let now = SystemTime::now();
    wall_origin.checked_add(due).map_or(now, |end| end.min(now))
}

/// Takes every rollout due at `now` (`wall` on the clock) as one slot: plans the tick of each
/// that published a wish for analysis due by `wall`, tells each it is due, and schedules its
/// next slot.
fn fire(
    entries: &mut HashMap<String, Entry>,
    timers: &mut BTreeSet<(Duration, String)>,
    now: Duration,
    wall: DateTime<Utc>,
) -> Slot {
    let mut slot = Slot {
        planned: Vec::new(),
        asked: Vec::new(),
        unplanned: Vec::new(),
        shortest: Duration::MAX,
        due: Duration::ZERO,
    };
    while let Some((due, id)) = timers.first().cloned().filter(|(due, _)| *due <= now) {
        timers.remove(&(due, id.clone()));
        let Some(entry) = entries.get_mut(&id) else {
            continue;
        };
        let (answer, asked) = oneshot::channel();
        let (planned, request) = match entry.published.get().filter(|(w, _)| w.due(wall)) {
            Some((wanted, rollout)) => {
                let (reply, answer) = oneshot::channel();
                let request = TickRequest {
                    rule: entry.member.rule.clone(),
                    rollout,
                    deadline: entry.member.deadline,
                    reply,
                };
                (Some(Planned { wanted, answer }), Some(request))
            }
            None => (None, None),
        };
        match entry.notify.try_send(Due { answer, planned }) {
            Ok(()) => {
                match request {
                    Some(request) => {
                        slot.planned.push(request);
                        slot.unplanned.push(asked);
                    }
                    None => slot.asked.push(asked),
                }
                slot.shortest = slot.shortest.min(entry.interval);
                slot.due = slot.due.max(due);
            }
            // Still busy with an earlier slot it has not answered: that one stands for this one.
            Err(Full::Busy) => {}
            Err(Full::Closed) => {
                entries.remove(&id);
                continue;
            }
        }
        entry.due = next_slot(due, now, entry.interval);
        timers.insert((entry.due, id));
    }
    slot
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::watch;

    fn scheduler() -> (Scheduler, watch::Sender<bool>) {
        let (tx, rx) = watch::channel(false);
        (
            Scheduler::start(slot_tests::down_source(), slot_tests::stops(rx)),
            tx,
        )
    }

    /// Waits for the next slot of `r`, declines it, and says when it came.
    async fn next_due(r: &mut Registration) -> Instant {
        let due = tokio::time::timeout(Duration::from_secs(5), r.due.recv())
            .await
            .unwrap_or_else(|_| panic!("no slot within 5 s"))
            .unwrap_or_else(|| panic!("scheduler gone"));
        let _ = due.answer.send(None);
        Instant::now()
    }

    #[test]
    fn a_slot_ends_at_its_boundary_and_never_after_now() {
        let ten = Duration::from_secs(10);
        let origin = SystemTime::now() - 3 * ten;
        assert_eq!(slot_end(origin, 2 * ten), origin + 2 * ten);
        let before = SystemTime::now();
        let future = slot_end(origin, 100 * ten);
        assert!(future >= before && future <= SystemTime::now());
        // No overflow, whatever the due time.
        assert!(slot_end(origin, Duration::MAX) <= SystemTime::now());
    }

    #[tokio::test]
    async fn rollouts_registered_apart_share_slots_and_never_tick_before_one_interval() {
        let (s, _shutdown) = scheduler();
        let interval = Duration::from_millis(300);
        let t_a = Instant::now();
        let m = || slot_tests::member("a", interval).0;
        let mut a = s.register("a", interval, false, m(), slot_tests::poke());
        tokio::time::sleep(Duration::from_millis(40)).await;
        let t_b = Instant::now();
        let mut b = s.register("b", interval, false, m(), slot_tests::poke());
        for round in 0..3 {
            let (da, db) = tokio::join!(next_due(&mut a), next_due(&mut b));
            if round == 0 {
                assert!(da >= t_a + interval, "a ticked before one interval");
                assert!(db >= t_b + interval, "b ticked before one interval");
            }
            let apart = if da > db { da - db } else { db - da };
            assert!(
                apart < Duration::from_millis(30),
                "round {round}: {apart:?} apart"
            );
        }
    }

    /// An actor waiting in its control wait (for its answer, its turn, a hook) that only the
    /// scheduler's poke can wake: its command queue's sender stays alive, as in the controller.
    fn waiting_actor(
        s: &Scheduler,
        id: &str,
        stopped: impl Fn() -> bool + Send + Sync + 'static,
    ) -> (
        tokio::task::JoinHandle<()>,
        super::super::commands::Sender<u8>,
    ) {
        let (tx, mut rx) = super::super::commands::queue::<u8>();
        let m = slot_tests::member(id, Duration::from_secs(3600)).0;
        let registration = s.register(id, Duration::from_secs(3600), false, m, rx.poker());
        let actor = tokio::spawn(async move {
            let _registration = registration;
            while rx.control(&stopped).await != super::super::commands::Control::Stop {}
        });
        (actor, tx)
    }

    #[tokio::test]
    async fn shutdown_pokes_every_registered_actor_to_its_stop() {
        let (s, shutdown) = scheduler();
        let flag = shutdown.subscribe();
        let (actor, _tx) = waiting_actor(&s, "a", move || *flag.borrow());
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!actor.is_finished());
        shutdown.send_replace(true);
        let stopped = tokio::time::timeout(Duration::from_secs(2), actor).await;
        assert!(stopped.is_ok(), "the actor did not hear the shutdown");
    }

    #[tokio::test]
    async fn the_end_of_the_term_pokes_every_actor_and_a_renewal_stops_none() {
        use crate::store::leadership::Leadership;
        let (_shutdown_tx, shutdown) = watch::channel(false);
        let leadership = Leadership::replica();
        let until = || Instant::now() + Duration::from_secs(600);
        leadership.grant(7, until());
        let stops = Stops {
            shutdown,
            lead: leadership.subscribe(),
        };
        let s = Scheduler::start(slot_tests::down_source(), stops);
        let term = leadership.clone();
        let (actor, _tx) = waiting_actor(&s, "a", move || term.epoch() != Some(7));
        tokio::time::sleep(Duration::from_millis(50)).await;
        leadership.grant(7, until());
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!actor.is_finished(), "a renewal stopped the actor");
        leadership.step_down(7);
        let stopped = tokio::time::timeout(Duration::from_secs(2), actor).await;
        assert!(
            stopped.is_ok(),
            "the actor did not hear that the term ended"
        );
    }

    #[tokio::test]
    async fn a_recovered_rollout_ticks_at_once_and_a_replaced_registration_hears_no_more() {
        let (s, _shutdown) = scheduler();
        let t0 = Instant::now();
        let m = || slot_tests::member("r", Duration::from_secs(1)).0;
        let mut r = s.register(
            "r",
            Duration::from_secs(3600),
            true,
            m(),
            slot_tests::poke(),
        );
        assert!(next_due(&mut r).await - t0 < Duration::from_secs(1));
        // Replaced by a new registration of the same id: only the new one hears its slots.
        let mut again = s.register(
            "r",
            Duration::from_millis(50),
            false,
            m(),
            slot_tests::poke(),
        );
        let _ = next_due(&mut again).await;
        assert!(
            r.due.try_recv().is_none(),
            "the replaced registration still got slots"
        );
    }
}

#[cfg(test)]
#[path = "slot_tests.rs"]
mod slot_tests;
