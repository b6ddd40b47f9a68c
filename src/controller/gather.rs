//! Gathering one scheduler slot: every due rollout's queries through ONE function,
//! [`gather_slot`], so the queries of a slot can be shared.
//!
//! [`gather_slot`] takes every due `(rule, rollout)` of the slot and the slot's end time, and
//! returns one [`Gathered`] per item, in order: batched through
//! [`super::gather_many::fetch_many`] (one query per metric shape for rollouts with equal
//! windows) unless `prometheus.batch_queries` is off, then [`analysis::fetch`] per rollout.
//! Judging stays per rollout ([`analysis::judge_gathered`], in the rollout's actor, with a turn
//! from [`super::pacer`]: a slot's answers are all sent at once, and judged in waves), so what
//! a gatherer returns is judged exactly as a single rollout's fetch is.
//!
//! The slot's deadline is the smallest of its rollouts' tick deadlines
//! ([`super::deadline::tick_deadline`]), counted from when the slot fired ([`SlotGathering`]). Each
//! query still running just before it is given up on its own: its members get that metric
//! failed (judged `error`, never healthy), while every metric that answered in time is judged
//! as usual — at 10,000 rollouts one slow shape used to cost every rollout all its metrics.
//! The whole gathering is still cut at the deadline itself, as a safety net: a rollout left
//! without an answer then gets the missed-deadline tick, never a late verdict.

use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::analysis::{self, Gathered, TickQuery};
use super::gather_many::Item;
use super::gather_memo::QueryMemo;
use super::scheduler::{Slot, TickRequest};
use crate::rollout::Rollout;
use crate::rules::Rule;
use crate::source::PrometheusSource;
use crate::source::batch::Limits;
use crate::source::tick_deadline::TickDeadline;
use crate::telemetry;

/// Rollouts fetched at once within one slot; each fetches up to 8 metrics at once itself.
const CONCURRENT_ROLLOUTS: usize = 32;

/// How long a slot waits for its rollouts to say what they want before gathering without the
/// ones still busy (they are gathered alone as soon as they answer). An idle actor answers in
/// microseconds; at most a quarter of the slot's shortest interval (which bounds its deadline),
/// so waiting for a busy one cannot eat the others' tick.
const COLLECT: Duration = Duration::from_millis(200);

/// How a slot is gathered: its batch limits (a late wave is gathered without wide queries), and
/// when it started and by when it must be done.
#[derive(Debug, Clone)]
pub struct SlotGathering {
    pub limits: Limits,
    pub started: Instant,
    pub deadline: Duration,
}

/// Gathers every item's tick ending at `end`: one [`Gathered`] per item, in order. With
/// batching on (the default), rollouts with the same window go through
/// [`super::gather_many::fetch_many_by`], whose window queries are asked once per metric shape;
/// off, each rollout is fetched alone.
///
/// Every query still running just before `started + deadline` is given up alone
/// ([`TickDeadline`]; its metric is judged `error`), and the whole gathering is cut at
/// `started + deadline` as a safety net. Fewer answers than items (only when the net fired)
/// leave the rest to the missed-deadline tick.
///
/// The rollouts come without their memos ([`super::gather_memo`]), so theirs are built for this
/// call; a live slot hands its rollouts' own ([`gather_known`]).
pub async fn gather_slot(
    source: &PrometheusSource,
    items: &[(&Rule, &Rollout)],
    end: SystemTime,
    how: &SlotGathering,
) -> Vec<Gathered> {
    let memos: Vec<QueryMemo> = items.iter().map(|_| QueryMemo::default()).collect();
    let items: Vec<Item<'_>> = items
        .iter()
        .zip(&memos)
        .map(|(&(rule, rollout), memo)| (rule, rollout, memo))
        .collect();
    gather_known(source, &items, end, how).await
}

/// [`gather_slot`] for rollouts with their memos.
async fn gather_known(
    source: &PrometheusSource,
    items: &[Item<'_>],
    end: SystemTime,
    how: &SlotGathering,
) -> Vec<Gathered> {
    let by = TickDeadline {
        at: how.started + how.deadline.saturating_sub(net_margin(how.deadline)),
        of: how.deadline,
    };
    let gathering = async {
        if source.batching() && items.len() > 1 {
            gather_batched(source, items, end, &how.limits, by).await
        } else {
            gather_alone(source, items, end, by).await
        }
    };
    tokio::time::timeout_at(how.started + how.deadline, gathering)
        .await
        .unwrap_or_default()
}

/// How long before the deadline queries are given up: enough for the answers that did come to
/// be put together before the safety net fires, small next to any deadline.
fn net_margin(deadline: Duration) -> Duration {
    (deadline / 10).min(Duration::from_millis(250))
}

/// One [`super::gather_many::fetch_many`] per window length (a batch needs equal ranges), all
/// at once (one slow window length must not leave the others no time), the answers put back
/// in the items' order.
async fn gather_batched(
    source: &PrometheusSource,
    items: &[Item<'_>],
    end: SystemTime,
    limits: &Limits,
    by: TickDeadline,
) -> Vec<Gathered> {
    let mut by_window: std::collections::BTreeMap<Duration, Vec<usize>> = Default::default();
    for (i, (rule, _, _)) in items.iter().enumerate() {
        by_window
            .entry(rule.spec.analysis.window)
            .or_default()
            .push(i);
    }
    let mut out: Vec<Option<Gathered>> = vec![None; items.len()];
    type Group<'a> = (Duration, Vec<usize>, Vec<Item<'a>>);
    let groups: Vec<Group<'_>> = by_window
        .into_iter()
        .map(|(window, indices)| {
            let group = indices.iter().map(|&i| items[i]).collect();
            (window, indices, group)
        })
        .collect();
    let fetches = groups.iter().map(|(window, _, group)| {
        super::gather_many::fetch_known(source, group, end, *window, limits, Some(by))
    });
    let answers = futures_util::future::join_all(fetches).await;
    for ((_, indices, _), gathered) in groups.iter().zip(answers) {
        for (&i, g) in indices.iter().zip(gathered) {
            out[i] = Some(g);
        }
    }
    // A rollout fetch_many left without an answer stays out: `answer_slot` then gives it the
    // missed-deadline tick, never a pass. So the answers must stay in order up to the first gap.
    out.into_iter().map_while(|g| g).collect()
}

async fn gather_alone(
    source: &PrometheusSource,
    items: &[Item<'_>],
    end: SystemTime,
    by: TickDeadline,
) -> Vec<Gathered> {
    // Collected first: a lazy `map` inside the stream trips `Send` inference (see `fetch`).
    let fetches: Vec<_> = items
        .iter()
        .map(|(rule, rollout, _)| {
            let query = TickQuery {
                end,
                window: rule.spec.analysis.window,
                by: Some(by),
            };
            analysis::fetch(source, rule, rollout, query)
        })
        .collect();
    futures_util::stream::iter(fetches)
        .buffered(CONCURRENT_ROLLOUTS)
        .collect()
        .await
}

/// Runs one slot that fired at `fired` and whose queries end at `end` (its boundary,
/// [`super::scheduler::slot_end`]): gathers its planned ticks together with those of the
/// rollouts asked that answered within the collect window, and answers each. The rest (asked
/// and late, or planned for a state their actor has left) are gathered in late waves.
pub(super) async fn run_slot(
    source: PrometheusSource,
    slot: Slot,
    fired: Instant,
    end: SystemTime,
) {
    let Slot {
        planned,
        asked,
        unplanned,
        shortest,
        due: _,
    } = slot;
    let collect = COLLECT.min(shortest / 4);
    let cutoff = fired + collect;
    let mut requests = planned;
    telemetry::record_slot_ticks("planned", requests.len());
    let mut late = unplanned;
    let mut on_time = 0;
    for mut answer in asked {
        match tokio::time::timeout_at(cutoff, &mut answer).await {
            Ok(Ok(Some(request))) => {
                requests.push(request);
                on_time += 1;
            }
            // Declined (nothing to analyse) or the rollout's task is gone.
            Ok(_) => {}
            Err(_) => late.push(answer),
        }
    }
    telemetry::record_slot_ticks("asked", on_time);
    if !late.is_empty() {
        tokio::spawn(answer_late(source.clone(), late, collect));
    }
    answer_slot(&source, requests, fired, end, &Limits::default()).await;
}

/// Late waves are not asked wide: a wide query costs Prometheus the whole fleet whatever the
/// wave's size, and at 10,000 rollouts (starting, or busy actors) a slot had many waves of a few
/// hundred — each four full-fleet queries, which timed out together (BENCHMARKS.md, "Scale").
/// Asked as regex batches, a wave costs what its members do.
fn late_limits() -> Limits {
    Limits {
        wide: false,
        ..Limits::default()
    }
}

/// The rollouts that answered after the cutoff, gathered as they come — but together: those
/// that answer within `collect` of the first share one gathering (and its batched queries), so
/// a slot whose actors were busy costs a few batches, not one set of queries per rollout (which
/// at thousands of rollouts made Prometheus connections, and canaryd's memory, grow with N).
async fn answer_late(
    source: PrometheusSource,
    late: Vec<oneshot::Receiver<Option<TickRequest>>>,
    collect: Duration,
) {
    in_waves(late, collect, |requests, started| {
        telemetry::record_slot_ticks("late", requests.len());
        let source = source.clone();
        // A late wave ends when it is gathered: its slot's boundary is already a wave ago.
        let end = SystemTime::now();
        tokio::spawn(
            async move { answer_slot(&source, requests, started, end, &late_limits()).await },
        );
    })
    .await;
}

/// Hands `wave` every answer that came within `collect` of the first of its wave, with the
/// instant that first one came (declined and dropped answers left out, empty waves skipped).
async fn in_waves<T>(
    answers: Vec<oneshot::Receiver<Option<T>>>,
    collect: Duration,
    mut wave: impl FnMut(Vec<T>, Instant),
) {
    let mut pending: futures_util::stream::FuturesUnordered<_> = answers.into_iter().collect();
    while let Some(first) = pending.next().await {
        let started = Instant::now();
        let mut got: Vec<T> = first.ok().flatten().into_iter().collect();
        let cutoff = started + collect;
        while let Ok(Some(next)) = tokio::time::timeout_at(cutoff, pending.next()).await {
            got.extend(next.ok().flatten());
        }
        if !got.is_empty() {
            wave(got, started);
        }
    }
}

/// Gathers `requests` as one slot started at `started`, by the smallest of their deadlines,
/// and sends each its answer. Requests whose rollout cancelled its tick are left out.
pub(super) async fn answer_slot(
    source: &PrometheusSource,
    requests: Vec<TickRequest>,
    started: Instant,
    end: SystemTime,
    limits: &Limits,
) {
    let requests: Vec<TickRequest> = requests
        .into_iter()
        .filter(|r| !r.reply.is_closed())
        .collect();
    let Some(deadline) = requests.iter().map(|r| r.deadline).min() else {
        return;
    };
    let items: Vec<Item<'_>> = requests
        .iter()
        .map(|r| (&*r.rule, &*r.rollout, r.rule.queries()))
        .collect();
    let how = SlotGathering {
        limits: *limits,
        started,
        deadline,
    };
    let gathered = gather_known(source, &items, end, &how).await;
    let mut gathered = gathered.into_iter();
    for request in requests {
        // A gatherer that returned too few answers leaves the rest missed, never passed.
        let _ = request.reply.send(gathered.next().ok_or(end));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::oneshot;

    use super::{in_waves, late_limits};
    use crate::source::batch::{Job, Limits, RangeRequest, plan};

    #[test]
    fn a_late_wave_is_asked_in_regex_batches_never_wide() {
        // 600 services' canary and baseline: more than one regex batch.
        let requests: Vec<RangeRequest> = (0..600)
            .flat_map(|i| {
                ["canary", "baseline"].map(|t| RangeRequest {
                    query: format!("sum(rate(x{{service=\"s{i}\", track=\"{t}\"}}[1m]))"),
                    end: std::time::SystemTime::UNIX_EPOCH,
                    window: Duration::from_secs(60),
                    step: Duration::from_secs(10),
                })
            })
            .collect();
        let wide = |jobs: &[Job]| jobs.iter().any(|j| matches!(j, Job::Wide { .. }));
        assert!(wide(&plan(&requests, &Limits::default())));
        let late = plan(&requests, &late_limits());
        assert!(!wide(&late), "{late:?}");
        assert!(late.iter().all(|j| matches!(j, Job::Batch { .. })));
    }

    #[tokio::test]
    async fn late_answers_close_together_are_gathered_as_one_wave() {
        let mut senders = Vec::new();
        let mut answers = Vec::new();
        for _ in 0..5 {
            let (tx, rx) = oneshot::channel::<Option<u32>>();
            senders.push(tx);
            answers.push(rx);
        }
        let Ok([a, b, c, d, e]) = <[_; 5]>::try_from(senders) else {
            panic!("five senders");
        };
        tokio::spawn(async move {
            let _ = a.send(Some(1));
            tokio::time::sleep(Duration::from_millis(50)).await;
            let _ = b.send(Some(2));
            let _ = c.send(None); // declined: not gathered
            tokio::time::sleep(Duration::from_millis(500)).await;
            let _ = d.send(Some(4));
            drop(e); // the actor went away
        });
        let mut waves = Vec::new();
        in_waves(answers, Duration::from_millis(200), |mut got, _| {
            got.sort();
            waves.push(got)
        })
        .await;
        assert_eq!(waves, vec![vec![1, 2], vec![4]]);
    }
}
