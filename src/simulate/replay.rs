//! A rule file run as a live rollout, against the simulated world instead of Prometheus.
//!
//! The loop is the rollout task's (`controller/task.rs`) with the clock and the hooks made up:
//! every `interval` a judged tick when the task would analyse (watching, nothing in flight,
//! past warmup), a timer event otherwise; hooks succeed at once. Every decision is made by the
//! shipped code: window metrics by `judge_tick`, sequential ones by `judge_counts` on the pods'
//! counter snapshots (resets included), the rollout by `rollout::handle`. So what this measures
//! is what the daemon would do, not what a re-implementation of its policy would.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use serde::Serialize;

use super::promql::{self, Signal};
use super::world::{BASELINE, CANARY, Pod, World, WorldSpec};
use crate::controller::analysis::{Fetched, Gathered, judge_gathered, slow_counters};
use crate::judge::observation::{Point, Series};
use crate::judge::sequential::{CounterSnapshot, Counters};
use crate::judge::sequential_hist_tick::bucket_counters;
use crate::rollout::{Action, Event, HookKind, Phase, Plan, Rollout, Tick, handle};
use crate::rules::schema::MetricKind;
use crate::rules::{Group, QueryContext, Rule};
use crate::source::prometheus::LabeledValue;

/// How the world feeds one metric of the rule.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Feed {
    Window {
        canary: Signal,
        baseline: Signal,
    },
    /// `events`/`requests` over `http_requests_total`: 5xx and all requests.
    Errors,
    /// `histogram: http_request_duration_seconds` with `slower_than: le`.
    Slow {
        le: f64,
    },
    /// `test: sequential_histogram` on `http_request_duration_seconds`: every edge.
    Histogram,
}

/// A rule prepared for simulation: the metrics the world can feed, and the names it cannot.
#[derive(Debug, Clone)]
pub struct Simulated {
    pub rule: Rule,
    feeds: Vec<Feed>,
    /// Metrics left out because their queries name series the world does not export.
    pub skipped: Vec<String>,
}

const HISTOGRAM: &str = "http_request_duration_seconds";

fn feed(rule: &Rule, m: &crate::rules::MetricSpec) -> Option<Feed> {
    let ctx = QueryContext {
        rollout: "sim",
        version: "sim",
    };
    match m.kind() {
        MetricKind::Window(q) => {
            let canary = promql::recognise(&rule.render(q, Group::Canary, &ctx).ok()?)?;
            let baseline = promql::recognise(&rule.render(q, Group::Baseline, &ctx).ok()?)?;
            Some(Feed::Window { canary, baseline })
        }
        MetricKind::Counts { events, requests } => {
            let names_requests = |s: &str| s.contains("http_requests_total");
            (names_requests(events) && events.contains("5..") && names_requests(requests))
                .then_some(Feed::Errors)
        }
        MetricKind::Slow { histogram, le } => (histogram == HISTOGRAM).then_some(Feed::Slow { le }),
        MetricKind::Histogram { histogram } => (histogram == HISTOGRAM).then_some(Feed::Histogram),
        MetricKind::Invalid => None,
    }
}

impl Simulated {
    pub fn new(rule: &Rule) -> Simulated {
        let mut rule = rule.clone();
        let mut feeds = Vec::new();
        let mut skipped = Vec::new();
        let all = std::mem::take(&mut rule.spec.metrics.value);
        for m in all {
            match feed(&rule, &m.value) {
                Some(f) => {
                    feeds.push(f);
                    rule.spec.metrics.value.push(m);
                }
                None => skipped.push(m.value.name.clone()),
            }
        }
        Simulated {
            rule,
            feeds,
            skipped,
        }
    }

    /// Slot length: the largest whole second dividing both the query step and the interval.
    fn slot_seconds(&self) -> u64 {
        let a = &self.rule.spec.analysis;
        let (mut x, mut y) = (a.step.as_secs().max(1), a.interval.as_secs().max(1));
        while y != 0 {
            (x, y) = (y, x % y);
        }
        x.max(1)
    }
}

/// How one simulated rollout ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    /// Judged ticks (past warmup) until the rollback, and its reason; None if it never rolled
    /// back.
    pub rollback: Option<(usize, String)>,
    pub promoted: bool,
    /// Minutes the rollout ran.
    pub minutes: f64,
}

impl Outcome {
    /// The metric that decided the rollback: the reason's first word, as the machine writes it.
    pub fn decided_by(&self) -> Option<&str> {
        self.rollback
            .as_ref()
            .map(|(_, why)| why.split(':').next().unwrap_or(why).trim())
    }
}

/// The rule's plan with its holds scaled so that they fill `horizon` in proportion, and no
/// promotion window: windows only delay promotion, and a simulated hold is about the data.
pub fn plan_for(rule: &Rule, horizon: Duration) -> Plan {
    let mut plan = Plan::from_rule(rule);
    plan.windows = None;
    let total: f64 = plan.steps.iter().map(|s| s.hold.as_secs_f64()).sum();
    if total > 0.0 {
        for s in &mut plan.steps {
            s.hold = Duration::from_secs_f64(horizon.as_secs_f64() * s.hold.as_secs_f64() / total);
        }
    }
    plan
}

/// The series a rollout's pods export, named once: Prometheus hands the daemon the same labels
/// every tick, so only the values change from one tick to the next.
///
/// Why: building ~50 label maps and pod names per tick and metric was a tenth of a simulated
/// rollout's time in a debug build (the `tests/it/simulation.rs` bounds replay 1,800 rollouts).
struct Exported {
    /// Per group: each pod's series key for the count test.
    pods: [Vec<String>; 2],
    /// Per group: the histogram's bucket series (pod × edge) and count series (pod), as an
    /// instant query returns them; values are overwritten before each use.
    buckets: [Vec<LabeledValue>; 2],
    counts: [Vec<LabeledValue>; 2],
}

impl Exported {
    fn new(world: &World) -> Exported {
        let group = |g: usize| {
            let mut buckets = Vec::new();
            let mut counts = Vec::new();
            for i in 0..world.pods[g].len() {
                let pod: BTreeMap<String, String> =
                    [("pod".to_string(), format!("{g}-{i}"))].into();
                // The finite edges only, as before: +Inf is the count series.
                for le in super::world::GO_BUCKETS {
                    let mut l = pod.clone();
                    l.insert("le".into(), le.to_string());
                    buckets.push((l, 0.0));
                }
                counts.push((pod, 0.0));
            }
            let pods = (0..world.pods[g].len())
                .map(|i| format!("pod={g}-{i}"))
                .collect();
            (pods, buckets, counts)
        };
        let (c, b) = (group(CANARY), group(BASELINE));
        Exported {
            pods: [c.0, b.0],
            buckets: [c.1, b.1],
            counts: [c.2, b.2],
        }
    }

    fn pods(&self, world: &World, group: usize, f: fn(&Pod) -> f64) -> CounterSnapshot {
        self.pods[group]
            .iter()
            .zip(&world.pods[group])
            .map(|(name, p)| (name.clone(), f(p)))
            .collect()
    }

    /// The histogram's series of one group as an instant query returns them now.
    fn histogram(&mut self, world: &World, group: usize) -> (&[LabeledValue], &[LabeledValue]) {
        let edges = super::world::GO_BUCKETS.len();
        for (i, p) in world.pods[group].iter().enumerate() {
            for (slot, v) in self.buckets[group][i * edges..(i + 1) * edges]
                .iter_mut()
                .zip(p.buckets)
            {
                slot.1 = v;
            }
            self.counts[group][i].1 = p.buckets[super::world::BUCKETS - 1];
        }
        (&self.buckets[group], &self.counts[group])
    }
}

fn counters(world: &World, names: &mut Exported, feed: Feed) -> Result<Counters, String> {
    let mut out = Counters::default();
    for group in [CANARY, BASELINE] {
        let (events, requests) = match feed {
            Feed::Errors => (
                names.pods(world, group, |p| p.errors),
                names.pods(world, group, |p| p.requests),
            ),
            Feed::Slow { le } => {
                let (b, c) = names.histogram(world, group);
                slow_counters(HISTOGRAM, le, b, c)?
            }
            Feed::Histogram => {
                let (b, c) = names.histogram(world, group);
                bucket_counters(HISTOGRAM, b, c)?
            }
            Feed::Window { .. } => return Err("not a sequential metric".into()),
        };
        if group == CANARY {
            (out.canary_events, out.canary_requests) = (events, requests);
        } else {
            (out.baseline_events, out.baseline_requests) = (events, requests);
        }
    }
    Ok(out)
}

/// One analysis round on the world as it stands: what `controller::analysis::fetch` would have
/// read from Prometheus (points with their times, counter snapshots), judged by the daemon's own
/// pure `judge_gathered` — so warmup, freshness and "samples at this weight" apply here exactly
/// as they do live.
fn tick(
    sim: &Simulated,
    world: &World,
    names: &mut Exported,
    rollout: &Rollout,
    at: DateTime<Utc>,
) -> Tick {
    let a = &sim.rule.spec.analysis;
    let end = world.history.len();
    let t0 = origin().timestamp() as f64;
    let slot = sim.slot_seconds() as f64;
    let series = |signal: Signal, group: usize| Series::Points {
        points: promql::range_points(world, signal, group, end, a.window, a.step)
            .into_iter()
            .map(|(i, value)| Point {
                at: t0 + i as f64 * slot,
                value,
            })
            .collect(),
    };
    let metrics = sim
        .rule
        .metrics()
        .zip(&sim.feeds)
        .map(|(m, f)| {
            let fetched = match *f {
                Feed::Window { canary, baseline } => Fetched::Window {
                    canary: series(canary, CANARY),
                    baseline: series(baseline, BASELINE),
                },
                feed => Fetched::Counters(counters(world, names, feed)),
            };
            (m.name.clone(), fetched)
        })
        .collect();
    judge_gathered(&sim.rule, rollout, &Gathered { at, metrics })
}

/// The made-up wall clock's origin (any instant works: the plan has no windows).
fn origin() -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(1_767_600_000, 0).unwrap_or_default()
}

/// Runs one rollout of `sim` over a world drawn from `spec` and `rng`, holds scaled to fill
/// `horizon`; gives up at `limit` (a rollout paused for no data may never finish).
pub fn replay(
    sim: &Simulated,
    spec: WorldSpec,
    horizon: Duration,
    limit: Duration,
    rng: StdRng,
) -> Outcome {
    let plan = plan_for(&sim.rule, horizon);
    let slot = sim.slot_seconds();
    let interval = sim.rule.spec.analysis.interval.max(Duration::from_secs(1));
    let mut world = World::new(spec, slot as f64, rng);
    let mut names = Exported::new(&world);
    let t0 = origin();
    let mut now = t0;
    let mut weight = 0;
    let mut judged = 0;
    let mut r = Rollout::new("sim".into(), sim.rule.name().into(), "sim".into(), t0);
    let mut queue = vec![Event::Start];
    let finish = |r: &Rollout, judged: usize, now: DateTime<Utc>| Outcome {
        rollback: r
            .rollback_decided
            .then(|| (judged, r.reason.clone().unwrap_or_default())),
        promoted: r.phase == Phase::Succeeded,
        minutes: (now - t0).num_seconds() as f64 / 60.0,
    };
    loop {
        // Deliver events, and the hooks they ask for, until nothing is in flight.
        while let Some(event) = queue.pop() {
            let t = handle(&r, &plan, event, now);
            r = t.rollout;
            for action in t.actions {
                match action {
                    Action::SetWeight { weight: w, .. } => {
                        weight = w;
                        queue.push(Event::HookSucceeded {
                            hook: HookKind::SetWeight,
                        });
                    }
                    Action::PreRollout | Action::CheckReadiness { .. } | Action::MigrateDown => {
                        queue.push(Event::HookSucceeded {
                            hook: action.hook(),
                        });
                    }
                    Action::Promote | Action::Rollback { .. } | Action::Revert { .. } => {
                        let outcome = finish(&r, judged, now);
                        return Outcome {
                            promoted: matches!(action, Action::Promote),
                            ..outcome
                        };
                    }
                }
            }
        }
        if now - t0 >= chrono::Duration::from_std(limit).unwrap_or(chrono::Duration::MAX) {
            return finish(&r, judged, now);
        }
        now += chrono::Duration::from_std(interval).unwrap_or_default();
        let elapsed = (now - t0).num_seconds().max(0) as u64;
        while (world.history.len() as u64) * slot < elapsed {
            world.advance(weight);
        }
        let analyse = r.phase.is_watching()
            && r.pending.is_none()
            && r.step_started_at
                .is_some_and(|s| now >= crate::rollout::plan::after(s, plan.warmup));
        queue.push(if analyse {
            judged += 1;
            Event::Tick(tick(sim, &world, &mut names, &r, now))
        } else {
            Event::Timer
        });
    }
}
