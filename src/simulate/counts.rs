//! The counts-only benchmark: the e-process beside repeated tests on bare counter increases.
//!
//! Why: "repeating a fixed-horizon test every tick rolls back healthy canaries far more often
//! than its α" is the reason canaryd has a sequential test at all. This room turns that claim
//! into numbers anyone can reproduce: seeded rollouts with known truth (identical or regressed
//! canaries), the same simulated data handed to every policy, and per policy how often it rolls
//! back, with an interval, and how fast.
//!
//! The model, per tick: `requests_per_tick` requests, each sent to the canary with the step's
//! weight (binomial, so the split jitters as a real router's does; a `split_error` scales the
//! weight the router actually uses away from the configured one); each request is an event
//! (an error, or a request slower than a latency threshold) with probability `p` on the
//! baseline and `p × factor` on the canary, drawn independently (binomial counts). Shared
//! spikes multiply both groups' `p` for a few ticks at random times. Requests are routed
//! independently of their outcome, the assumption the sequential test states.
//!
//! Architecture Invariant: pure and seeded. No clock, no file, no socket; the same seed gives
//! the same numbers (for this version of `rand`), and every (scenario, run) has its own stream,
//! so a scenario's numbers do not depend on which other scenarios ran.

use rand::Rng;
use rand::rngs::StdRng;
use rand_distr::{Binomial, Distribution};
use serde::Serialize;

pub use super::policy::Policy;
pub use super::report::Row;
use crate::judge::sequential::TickCounts;

/// The steps of a rollout: canary weights, each held for the same number of ticks.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Shape {
    /// Configured canary share of traffic per step; the baseline gets the rest.
    pub weights: Vec<f64>,
    /// Ticks per step (60 one-minute ticks = a one-hour step).
    pub ticks_per_step: usize,
}

impl Default for Shape {
    fn default() -> Self {
        Shape {
            weights: vec![0.05, 0.25, 0.5, 1.0],
            ticks_per_step: 60,
        }
    }
}

impl Shape {
    pub fn ticks(&self) -> usize {
        self.weights.len() * self.ticks_per_step
    }
}

/// Both groups' event probability multiplied for a few ticks: a shared dependency failing,
/// which a good policy must not blame on the canary.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spikes {
    pub count: usize,
    pub length: usize,
    pub factor: f64,
}

/// One simulated situation with a known truth.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scenario {
    pub name: &'static str,
    /// What the events are, for the report ("errors", "slow requests").
    pub events: &'static str,
    /// All requests per tick, canary and baseline together.
    pub requests_per_tick: u64,
    /// The baseline's event probability.
    pub probability: f64,
    /// Canary event probability / baseline's: 1 is an identical canary.
    pub factor: f64,
    /// The router's actual weight is `configured × (1 + split_error)` (capped at 1).
    pub split_error: f64,
    pub spikes: Option<Spikes>,
}

/// Traffic of a busy service: 20,000 requests a minute.
pub const HIGH_TRAFFIC: u64 = 20_000;
/// Traffic of a quiet one: 200 requests a minute, 10 of them on a 5 % canary.
pub const LOW_TRAFFIC: u64 = 200;
/// Baseline error probability.
pub const ERROR_PROBABILITY: f64 = 0.005;
/// Baseline probability of a request slower than the latency threshold.
pub const SLOW_PROBABILITY: f64 = 0.01;

impl Scenario {
    /// Identical canary: any rollback is a false rollback.
    pub fn identical(name: &'static str, requests_per_tick: u64) -> Scenario {
        Scenario {
            name,
            events: "errors",
            requests_per_tick,
            probability: ERROR_PROBABILITY,
            factor: 1.0,
            split_error: 0.0,
            spikes: None,
        }
    }

    /// Canary whose errors are `factor` times the baseline's.
    pub fn regressed(name: &'static str, requests_per_tick: u64, factor: f64) -> Scenario {
        Scenario {
            factor,
            ..Scenario::identical(name, requests_per_tick)
        }
    }

    /// Whether the canary is as good as the baseline, so that a rollback is false.
    pub fn healthy(&self) -> bool {
        self.factor <= 1.0
    }
}

/// The benchmark's scenarios: identical canaries in the situations that fool repeated tests,
/// then regressions of increasing size.
pub fn scenarios() -> Vec<Scenario> {
    let spikes = Some(Spikes {
        count: 3,
        length: 3,
        factor: 5.0,
    });
    vec![
        Scenario::identical("identical, high traffic", HIGH_TRAFFIC),
        Scenario::identical("identical, low traffic", LOW_TRAFFIC),
        Scenario {
            split_error: 0.1,
            ..Scenario::identical("identical, split 10 % off", HIGH_TRAFFIC)
        },
        Scenario {
            spikes,
            ..Scenario::identical("identical, shared spikes x5", HIGH_TRAFFIC)
        },
        Scenario {
            split_error: 0.1,
            spikes,
            ..Scenario::identical("identical, low, split off, spikes", LOW_TRAFFIC)
        },
        Scenario::regressed("errors x1.5", HIGH_TRAFFIC, 1.5),
        Scenario::regressed("errors x2", HIGH_TRAFFIC, 2.0),
        Scenario::regressed("errors x5", HIGH_TRAFFIC, 5.0),
        Scenario::regressed("errors x2, low traffic", LOW_TRAFFIC, 2.0),
        Scenario::regressed("errors x5, low traffic", LOW_TRAFFIC, 5.0),
        Scenario {
            events: "slow requests",
            probability: SLOW_PROBABILITY,
            ..Scenario::regressed("slow requests x2", HIGH_TRAFFIC, 2.0)
        },
    ]
}

/// The random stream of one run of one scenario: derived from the seed, the scenario's name
/// (FNV-1a, stable across builds) and the run number.
pub fn run_rng(seed: u64, scenario: &Scenario, run: u64) -> StdRng {
    super::seeded(seed, scenario.name.bytes(), run)
}

/// Binomial(n, p) with p clamped to [0, 1], so the draw always exists.
fn binomial(rng: &mut StdRng, n: u64, p: f64) -> u64 {
    let p = if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) };
    // With n ≥ 0 and p in [0, 1] construction cannot fail; 0 keeps the type total anyway.
    Binomial::new(n, p).map(|d| d.sample(rng)).unwrap_or(0)
}

/// One simulated rollout: the four counter increases of every tick, first tick first.
pub fn simulate_rollout(shape: &Shape, scenario: &Scenario, rng: &mut StdRng) -> Vec<TickCounts> {
    let total = shape.ticks();
    let mut spike = vec![1.0; total];
    if let Some(s) = scenario.spikes
        && s.length > 0
        && s.length <= total
    {
        for _ in 0..s.count {
            let start = rng.random_range(0..=total - s.length);
            for m in &mut spike[start..start + s.length] {
                *m = s.factor;
            }
        }
    }
    let mut ticks = Vec::with_capacity(total);
    for (i, multiplier) in spike.iter().enumerate() {
        let configured = shape.weights[i / shape.ticks_per_step.max(1)];
        let weight = (configured * (1.0 + scenario.split_error)).clamp(0.0, 1.0);
        let canary_requests = binomial(rng, scenario.requests_per_tick, weight);
        let baseline_requests = scenario.requests_per_tick - canary_requests;
        let p = scenario.probability * multiplier;
        ticks.push(TickCounts {
            canary_events: binomial(rng, canary_requests, p * scenario.factor) as f64,
            canary_requests: canary_requests as f64,
            baseline_events: binomial(rng, baseline_requests, p) as f64,
            baseline_requests: baseline_requests as f64,
        });
    }
    ticks
}

/// For each policy, the 1-based tick of its first rollback in each of `runs` rollouts (None:
/// it would have promoted). Every policy sees the same simulated data.
pub fn decisions(
    shape: &Shape,
    scenario: &Scenario,
    policies: &[Policy],
    runs: u64,
    seed: u64,
) -> Vec<Vec<Option<usize>>> {
    let per_run = super::each_run(runs, |run| {
        let mut rng = run_rng(seed, scenario, run);
        let ticks = simulate_rollout(shape, scenario, &mut rng);
        policies
            .iter()
            .map(|policy| policy.first_rollback(&ticks))
            .collect::<Vec<_>>()
    });
    let mut out = vec![Vec::with_capacity(per_run.len()); policies.len()];
    for run in per_run {
        for (decided, first) in out.iter_mut().zip(run) {
            decided.push(first);
        }
    }
    out
}

/// The whole benchmark: every scenario × policy, summarised.
pub fn benchmark(
    shape: &Shape,
    scenarios: &[Scenario],
    policies: &[Policy],
    runs: u64,
    seed: u64,
) -> Vec<Row> {
    let mut rows = Vec::new();
    for scenario in scenarios {
        let per_policy = decisions(shape, scenario, policies, runs, seed);
        for (policy, decided) in policies.iter().zip(per_policy) {
            rows.push(Row::summarise(scenario, policy, &decided));
        }
    }
    rows
}
