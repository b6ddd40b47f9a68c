//! A rollout's slot, seen from its actor: judge the tick the scheduler planned for it, or ask
//! to be gathered, or measure a checkpoint, or let the machine see the time — while still
//! answering commands. A command that changes the phase, step or pending action cancels the
//! tick in flight, whose answer is then dropped unread; a slot that never answers is a missed
//! tick by its deadline ([`super::deadline`]).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chrono::Utc;
use tokio::sync::oneshot;

use super::analysis::{Gathered, judge_gathered};
use super::commands::Control;
use super::deadline::{missed, no_answer};
use super::pacer::{Pacer, Turn};
use super::perform::check_traffic;
use super::registry::Wanted;
use super::scheduler::{Due, TickRequest};
use super::task::RolloutTask;
use crate::rollout::{Event, Phase, Rollout};
use crate::traffic::TrafficProvider;

/// How long past its deadline a tick waits for a slot that never answers.
const ANSWER_MARGIN: Duration = Duration::from_secs(1);

/// Why a tick whose answer came but whose turn did not is missed.
const NO_TURN: &str = "the tick's answer came but no turn to judge it within its deadline \
    (decisions are not being committed: is the store stalled?)";

/// What a rollout's slot gave it: the answer (or its timeout) and its turn, or a traffic drift
/// found before waiting.
type Waited = Result<(Option<Result<Gathered, SystemTime>>, Option<Turn>), String>;

/// Checks the traffic weights (a drift is returned at once, as control), then waits for the
/// slot's answer and a turn to judge it. One timer for both waits. The slot answers by the
/// deadline; the margin only guards against a slot that never answers, which is then a missed
/// tick like any other. Turns come back as decisions are committed: one that does not come
/// within a deadline more means the store stopped committing, and the tick is missed.
///
/// A plain fn returning an `async move` block: as an `async fn` it kept each argument twice
/// (as given and as moved into its body), in every rollout's slot future.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn keeps its arguments twice"
)]
fn wait(
    traffic: Option<Arc<dyn TrafficProvider>>,
    before: Arc<Rollout>,
    answer: Answer,
    pacer: Pacer,
    deadline: Duration,
) -> impl Future<Output = Waited> + Send {
    async move {
        if let Some(t) = traffic
            && let Some(found) =
                Box::pin(check_traffic(t.as_ref(), &before.id, before.weight)).await
        {
            return Err(found);
        }
        drop(before);
        // Pinned where it is made: `tokio::pin!` on a `let` moves it into a second local, and
        // both sat in the future (the timer twice).
        let mut timer = std::pin::pin!(tokio::time::sleep(deadline + ANSWER_MARGIN));
        let answer = tokio::select! {
            answer = answer => answer.ok(),
            () = &mut timer => None,
        };
        timer.as_mut().reset(tokio::time::Instant::now() + deadline);
        let turn = tokio::select! {
            turn = pacer.turn() => turn,
            () = &mut timer => None,
        };
        Ok((answer, turn))
    }
}

/// What a rollout does with its slot.
enum Taken {
    /// Judge the slot's answer to come.
    Analyse(Answer),
    /// Measure the checkpoint after promotion that is due.
    Checkpoint,
    /// Let the machine see the time.
    Timer,
}

/// Where a slot's answer for one rollout arrives: `Err(end)` when the slot missed its deadline.
type Answer = oneshot::Receiver<Result<Gathered, SystemTime>>;

impl RolloutTask {
    /// This rollout's slot has come: it judges the tick the slot planned for its state, asks
    /// the scheduler to gather one, measures a checkpoint after promotion itself, or lets the
    /// machine see the time (a hold, a window).
    ///
    /// Which of these is decided at the call, not in the future (an `async fn` keeps its
    /// arguments, the `Due`, for its whole life), and only the analysis is awaited inline:
    /// every rollout of a slot holds this future while the slot is gathered, so it is the wait
    /// for an answer and little else (the rare arms are boxed).
    pub(super) fn slot(
        &mut self,
        due: Due,
        deadline: Duration,
    ) -> impl Future<Output = ()> + Send + '_ {
        let taken = self.take(due, deadline);
        async move {
            match taken {
                Taken::Analyse(answer) => self.analyse(answer, deadline).await,
                Taken::Checkpoint => Box::pin(self.checkpoint()).await,
                Taken::Timer => {
                    let _ = Box::pin(self.apply(Event::Timer)).await;
                }
            }
        }
    }

    /// Answers the slot and says what this rollout does with it.
    fn take(&self, due: Due, deadline: Duration) -> Taken {
        let wanted = Wanted::of(&self.state, self.warmup()).filter(|w| w.due(Utc::now()));
        if self.state.phase == Phase::Verifying {
            let _ = due.answer.send(None);
            Taken::Checkpoint
        } else if let Some(planned) = due.planned.filter(|p| wanted == Some(p.wanted)) {
            let _ = due.answer.send(None);
            Taken::Analyse(planned.answer)
        } else if wanted.is_some() {
            let (reply, answer) = oneshot::channel();
            let request = TickRequest {
                rule: self.rule.clone(),
                rollout: self.state.clone(),
                deadline,
                reply,
            };
            // A slot that is gone (shutting down) drops the request: the tick is then missed.
            let _ = due.answer.send(Some(request));
            Taken::Analyse(answer)
        } else {
            let _ = due.answer.send(None);
            Taken::Timer
        }
    }

    /// Waits for this rollout's part of its slot and decides it, while still answering
    /// commands. A command that changes the phase, the step or the pending action makes the
    /// tick moot: it is cancelled (its answer dropped, and its wait for a turn with it) and the
    /// loop acts on the command's decision at once.
    ///
    /// With its answer in hand the rollout takes a turn ([`super::pacer`]) and holds it until
    /// its decision is committed and published: at most `pacer::WIDTH` rollouts daemon-wide are
    /// between judging and their commit, so a slot's second generation of states is bounded by
    /// the wave, not by the slot.
    ///
    /// Every rollout of a slot waits here at once, so the wait holds handles, not copies: the
    /// state's `Arc` (what the command check compares, and the traffic check's id and weight),
    /// the answer's receiver and the turn's wait (`slot_future_is_small` bounds it).
    ///
    /// A plain fn returning an `async move` block, the wait built at the call: an `async fn`
    /// kept its arguments, and the wait's, twice.
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn keeps its arguments twice"
    )]
    pub(super) fn analyse(
        &mut self,
        answer: Answer,
        deadline: Duration,
    ) -> impl Future<Output = ()> + Send + '_ {
        // The answer is judged after it arrives, against the state then (the one the machine
        // decides from).
        async move {
            // In a block, so the wait's result, the event and the state before are not held
            // beside the commit's wait: only the turn is.
            let (committing, turn) = {
                let before = self.state.clone();
                let waited = {
                    // Pinned where it is made: built outside the block or pinned with `tokio::pin!`
                    // on a `let`, the wait was moved into a second local and held twice.
                    let mut gather = std::pin::pin!(wait(
                        self.traffic.clone(),
                        before.clone(),
                        answer,
                        self.inner.scheduler().pacer(),
                        deadline,
                    ));
                    loop {
                        tokio::select! {
                            biased;
                            control = self.control() => {
                                let Control::Command(cmd) = control else { return };
                                self.command_boxed(cmd).await;
                                let moved = self.state.phase != before.phase
                                    || self.state.step != before.step
                                    || self.state.pending != before.pending;
                                if moved {
                                    tracing::info!(event = "tick.cancelled", rollout = %self.state.id,
                                        phase = self.state.phase.as_str(), "analysis in flight cancelled by a newer decision");
                                    return;
                                }
                            }
                            waited = &mut gather => break waited,
                        }
                    }
                };
                drop(before);
                // The answer is judged and dropped here; only the turn is held across the commit.
                let (event, turn) = self.judged(waited, deadline);
                crate::faults::stop_at("mid_tick", "gathered");
                (Box::pin(self.apply(event)), turn)
            };
            let _ = committing.await;
            // Given back only now: the decision is committed (or refused) and published.
            drop(turn);
        }
    }

    /// The event a slot's answer makes, and the turn it was judged in (none for a traffic
    /// drift, which is control, or when no turn came).
    fn judged(&self, waited: Waited, deadline: Duration) -> (Event, Option<Turn>) {
        let (rule, state) = (self.rule.as_ref(), self.state.as_ref());
        let (answer, turn) = match waited {
            Err(found) => return (Event::TrafficDrift { found }, None),
            Ok(waited) => waited,
        };
        let tick = match (answer, &turn) {
            (_, None) => missed(rule, state, SystemTime::now(), NO_TURN),
            (Some(Ok(gathered)), Some(_)) => judge_gathered(rule, state, &gathered),
            (Some(Err(end)), Some(_)) => missed(rule, state, end, &no_answer(deadline)),
            (None, Some(_)) => missed(rule, state, SystemTime::now(), &no_answer(deadline)),
        };
        (Event::Tick(tick), turn)
    }

    /// Measures the checkpoint after promotion that is due, if any, still answering commands:
    /// an abort while its queries run wins, and the measurement is dropped.
    async fn checkpoint(&mut self) {
        let now = Utc::now();
        let Some(index) = self.state.verify.as_ref().and_then(|v| v.due(now)) else {
            return;
        };
        let (inner, rule, state) = (self.inner.clone(), self.rule.clone(), self.state.clone());
        // Boxed: a checkpoint's queries are rare next to ticks, and inline they made every
        // rollout's slot future as large as they are.
        let mut measure =
            Box::pin(
                async move { super::checkpoint::measure(&inner.source, &rule, &state, now).await },
            );
        loop {
            tokio::select! {
                biased;
                control = self.control() => {
                    let Control::Command(cmd) = control else { return };
                    self.command_boxed(cmd).await;
                    if self.state.phase != Phase::Verifying {
                        return;
                    }
                }
                result = &mut measure => {
                    let _ = Box::pin(self.apply(Event::Checkpoint { index, result })).await;
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::oneshot;
    use tokio::time::Instant;

    use super::super::pacer::Pacer;

    const DEADLINE: Duration = Duration::from_millis(150);

    fn method_future_size<A, B, C, R>(_: impl FnOnce(A, B, C) -> R) -> usize {
        std::mem::size_of::<R>()
    }

    fn rollout() -> crate::rollout::Rollout {
        crate::rollout::Rollout::new("r".into(), "api".into(), "v2".into(), chrono::Utc::now())
    }

    fn gathered() -> super::Gathered {
        super::Gathered {
            at: chrono::Utc::now(),
            metrics: Default::default(),
        }
    }

    #[tokio::test]
    async fn an_answer_without_a_turn_within_a_deadline_ends_the_wait_without_one() {
        let pacer = Pacer::new(1);
        let _held = pacer.clone().turn().await;
        let (tx, answer) = oneshot::channel();
        let _ = tx.send(Ok(gathered()));
        let started = Instant::now();
        let r = rollout();
        let waited = super::wait(None, r.into(), answer, pacer.clone(), DEADLINE);
        let waited = tokio::time::timeout(Duration::from_secs(5), waited).await;
        let Ok(Ok((Some(Ok(_)), None))) = waited else {
            panic!("the answer, and no turn: {waited:?}");
        };
        assert!(started.elapsed() >= DEADLINE);
        assert!(started.elapsed() < DEADLINE + Duration::from_secs(1));
    }

    #[tokio::test]
    async fn an_answer_and_a_free_turn_are_taken_at_once() {
        let pacer = Pacer::new(1);
        let (tx, answer) = oneshot::channel();
        let _ = tx.send(Ok(gathered()));
        let waited = tokio::time::timeout(
            Duration::from_secs(1),
            super::wait(
                None,
                rollout().into(),
                answer,
                pacer.clone(),
                Duration::from_secs(30),
            ),
        )
        .await;
        let Ok(Ok((Some(Ok(_)), Some(_turn)))) = waited else {
            panic!("the answer with a turn: {waited:?}");
        };
        assert_eq!(pacer.free(), 0, "the turn is held by the waiter");
    }

    #[tokio::test]
    async fn a_slot_that_never_answers_ends_the_wait_past_the_deadline() {
        let (_tx, answer) = oneshot::channel::<Result<super::Gathered, std::time::SystemTime>>();
        let started = Instant::now();
        let r = rollout();
        let waited = super::wait(None, r.into(), answer, Pacer::new(1), DEADLINE);
        let waited = tokio::time::timeout(Duration::from_secs(5), waited).await;
        let Ok(Ok((None, Some(_)))) = waited else {
            panic!("no answer: {waited:?}");
        };
        assert!(started.elapsed() >= DEADLINE + super::ANSWER_MARGIN);
    }

    /// Every rollout of a slot holds its slot future (boxed by the actor's loop) from the slot
    /// to its commit, all at once. It is the wait for the answer and a turn (one timer for
    /// both, 112 bytes; the receiver; the semaphore's wait, 104), the control wait (32: commands
    /// and the stop signal in one), and the state's `Arc`; the `Due` is answered at the call,
    /// not held, and the rare arms (a checkpoint, a timer) are boxed. It was 864 bytes in this
    /// build (944 in release): the shutdown and leadership watches (120 bytes each) beside the
    /// command wait, and the wait and its timer each held twice (moved into a second local by
    /// `tokio::pin!` and by `async fn` arguments). Structural, not a measurement: holding the
    /// `Due`, a copy of the pending action, a second timer, a watch wait or a doubled wait again
    /// breaks it.
    #[test]
    fn slot_future_is_small() {
        let slot = method_future_size(super::RolloutTask::slot);
        assert!(slot <= 600, "a rollout's slot future is {slot} bytes");
    }
}

#[cfg(test)]
#[path = "turn_tests.rs"]
mod turn_tests;
