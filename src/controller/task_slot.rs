//! A rollout's slot, seen from its actor: judge the tick the scheduler planned for it, or ask
//! to be gathered, or measure a checkpoint, or let the machine see the time — while still
//! answering commands. A command that changes the phase, step or pending action cancels the
//! tick in flight, whose answer is then dropped unread; a slot that never answers is a missed
//! tick by its deadline ([`super::deadline`]).

use std::time::{Duration, SystemTime};

use chrono::Utc;
use tokio::sync::oneshot;

use super::analysis::{Gathered, judge_gathered};
use super::deadline::missed;
use super::perform::check_traffic;
use super::registry::Wanted;
use super::scheduler::{Due, TickRequest};
use super::task::RolloutTask;
use crate::rollout::{Event, Phase};

/// How long past its deadline a tick waits for a slot that never answers.
const ANSWER_MARGIN: Duration = Duration::from_secs(1);

impl RolloutTask {
    /// This rollout's slot has come: it judges the tick the slot planned for its state, asks
    /// the scheduler to gather one, measures a checkpoint after promotion itself, or lets the
    /// machine see the time (a hold, a window).
    pub(super) async fn slot(&mut self, due: Due, deadline: Duration) {
        let wanted = Wanted::of(&self.state, self.plan.warmup).filter(|w| w.due(Utc::now()));
        if self.state.phase == Phase::Verifying {
            let _ = due.answer.send(None);
            self.checkpoint().await;
        } else if let Some(planned) = due.planned.filter(|p| wanted == Some(p.wanted)) {
            let _ = due.answer.send(None);
            self.analyse(planned.answer, deadline).await;
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
            self.analyse(answer, deadline).await;
        } else {
            let _ = due.answer.send(None);
            let _ = Box::pin(self.apply(Event::Timer)).await;
        }
    }

    /// Waits for this rollout's part of its slot and decides it, while still answering
    /// commands. A command that changes the phase, the step or the pending action makes the
    /// tick moot: it is cancelled (its answer dropped) and the loop acts on the command's
    /// decision at once.
    pub(super) async fn analyse(
        &mut self,
        answer: oneshot::Receiver<Result<Gathered, SystemTime>>,
        deadline: Duration,
    ) {
        let before = (
            self.state.phase,
            self.state.step,
            self.state.pending.clone(),
        );
        // The answer is judged after it arrives, against the state then (the one the machine
        // decides from): the wait holds no copy of the rollout, at the moment every rollout of
        // a slot is waiting at once.
        let traffic = self.traffic.clone();
        let (id, weight) = (self.state.id.clone(), self.state.weight);
        let gather = async move {
            if let Some(t) = traffic
                && let Some(found) = Box::pin(check_traffic(t.as_ref(), &id, weight)).await
            {
                return Err(found);
            }
            // The slot answers by the deadline; the margin only guards against a slot that
            // never answers, which is then a missed tick like any other.
            Ok(tokio::time::timeout(deadline + ANSWER_MARGIN, answer).await)
        };
        tokio::pin!(gather);
        loop {
            tokio::select! {
                biased;
                Some(cmd) = self.rx.recv() => {
                    self.command_boxed(cmd).await;
                    let now = (self.state.phase, self.state.step, self.state.pending.clone());
                    if now != before {
                        tracing::info!(event = "tick.cancelled", rollout = %self.state.id,
                            phase = self.state.phase.as_str(), "analysis in flight cancelled by a newer decision");
                        return;
                    }
                }
                _ = self.shutdown.changed() => return,
                Ok(()) = self.lead.changed() => if !self.leading() { return },
                answer = &mut gather => {
                    let (rule, state) = (self.rule.as_ref(), self.state.as_ref());
                    let event = match answer {
                        Err(found) => Event::TrafficDrift { found },
                        Ok(Ok(Ok(Ok(gathered)))) => Event::Tick(judge_gathered(rule, state, &gathered)),
                        Ok(Ok(Ok(Err(end)))) => Event::Tick(missed(rule, state, end, deadline)),
                        Ok(_) => Event::Tick(missed(rule, state, SystemTime::now(), deadline)),
                    };
                    crate::faults::stop_at("mid_tick", "gathered");
                    let _ = Box::pin(self.apply(event)).await;
                    return;
                }
            }
        }
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
                Some(cmd) = self.rx.recv() => {
                    self.command_boxed(cmd).await;
                    if self.state.phase != Phase::Verifying {
                        return;
                    }
                }
                _ = self.shutdown.changed() => return,
                result = &mut measure => {
                    let _ = Box::pin(self.apply(Event::Checkpoint { index, result })).await;
                    return;
                }
            }
        }
    }
}
