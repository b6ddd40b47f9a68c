//! Simulated rollouts: rule files judged by the daemon's own code over a simulated fleet.
//!
//! Why: canaryd's claim is "fewer false rollbacks, faster detection". A claim about a policy is
//! only as good as the world it was measured on, so the world here has what production has
//! (`world`: diurnal load, shared and per-group wobble, static host offsets, shared incidents,
//! canary-only blips, latency histograms, counter resets, weight steps), and the policy is the
//! rule file itself, run through `judge_tick`, `judge_counts` and `rollout::handle` (`replay`).
//! Flagger-, Argo- and Kayenta-style policies are rule files too (`policies/`), run on the very
//! same simulated rollouts.
//!
//! Architecture Invariant: pure and seeded. No clock, no file, no socket; every (scenario,
//! traffic, horizon, run) has its own random stream, so a number does not depend on which other
//! scenarios or rules ran, and every rule sees the same worlds.

pub mod bounds;
pub mod counts;
pub mod policy;
pub mod promql;
pub mod replay;
pub mod report;
pub mod table;
pub mod world;

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

pub use replay::{Outcome, Simulated, replay};
pub use table::Summary;
pub use world::{Episode, Noise, Regression, WorldSpec};

use crate::rules::{Rule, parse_rule};

/// Requests per second of the whole service: 100 is 50 per group at the 50 % step.
pub const HIGH_RPS: f64 = 100.0;
/// 0.5 per group at the 50 % step; 3 requests a minute reach a 5 % canary.
pub const LOW_RPS: f64 = 1.0;

/// A simulated situation with a known truth.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scenario {
    pub name: &'static str,
    /// Noise of the fleet.
    pub noise: Noise,
    /// A shared incident of this many minutes (errors × 10, latency × 2) at a random time.
    pub incident_minutes: Option<f64>,
    /// A canary-only blip of this many seconds serving 5 % errors, at a random time.
    pub blip_seconds: Option<f64>,
    pub regression: Option<Regression>,
}

impl Scenario {
    const fn healthy(name: &'static str, noise: Noise) -> Scenario {
        Scenario {
            name,
            noise,
            incident_minutes: None,
            blip_seconds: None,
            regression: None,
        }
    }

    const fn regressed(name: &'static str, regression: Regression) -> Scenario {
        Scenario {
            regression: Some(regression),
            ..Scenario::healthy(name, Noise::FLEET)
        }
    }

    /// No regression: every rollback is a false one.
    pub fn is_healthy(&self) -> bool {
        self.regression.is_none()
    }

    /// The world of one run: random episode times are drawn from the run's stream first.
    pub fn world(&self, rps: f64, horizon: Duration, rng: &mut StdRng) -> WorldSpec {
        let minutes = horizon.as_secs_f64() / 60.0;
        let mut at = |length: f64| Episode {
            start: rng.random::<f64>() * (minutes - length).max(0.0),
            minutes: length,
        };
        let incident = self.incident_minutes.map(|m| (at(m), 10.0, 2.0));
        let blip = self.blip_seconds.map(|s| (at(s / 60.0), 0.05));
        WorldSpec {
            noise: self.noise,
            incident,
            blip,
            regression: self.regression,
            ..WorldSpec::fleet(rps)
        }
    }
}

/// The scenarios: healthy canaries in the situations that fool a policy, then
/// regressions of increasing size.
pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario::healthy("identical, sampling noise only", Noise::NONE),
        Scenario::healthy("identical, fleet noise", Noise::FLEET),
        Scenario {
            incident_minutes: Some(5.0),
            ..Scenario::healthy("shared 5-minute incident", Noise::FLEET)
        },
        Scenario {
            blip_seconds: Some(30.0),
            ..Scenario::healthy("30-second canary blip", Noise::FLEET)
        },
        Scenario::regressed("errors x2", Regression::Errors { factor: 2.0 }),
        Scenario::regressed("errors x5", Regression::Errors { factor: 5.0 }),
        Scenario::regressed("errors x20", Regression::Errors { factor: 20.0 }),
        Scenario::regressed("latency +10 %", Regression::Latency { factor: 1.1 }),
        Scenario::regressed("latency +30 %", Regression::Latency { factor: 1.3 }),
        Scenario::regressed("latency +100 %", Regression::Latency { factor: 2.0 }),
        Scenario::regressed("pool leak 10 %/h", Regression::PoolLeak { per_hour: 0.1 }),
    ]
}

/// The one scenario named `name`.
pub fn scenario(name: &str) -> Option<Scenario> {
    scenarios().into_iter().find(|s| s.name == name)
}

/// A traffic level of the report.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Traffic {
    pub name: &'static str,
    pub rps: f64,
}

pub const HIGH: Traffic = Traffic {
    name: "high",
    rps: HIGH_RPS,
};
pub const LOW: Traffic = Traffic {
    name: "low",
    rps: LOW_RPS,
};

/// The stream of one run: seed, scenario, traffic and horizon mixed (FNV-1a over the names,
/// stable across builds), so every rule sees the same worlds.
pub fn run_rng(
    seed: u64,
    scenario: &Scenario,
    traffic: Traffic,
    horizon: Duration,
    run: u64,
) -> StdRng {
    let name = scenario
        .name
        .bytes()
        .chain(traffic.name.bytes())
        .chain(horizon.as_secs().to_le_bytes());
    seeded(seed, name, run)
}

/// The stream of run `run` of the line named by `name`'s bytes (hashed with FNV-1a, stable
/// across builds) under `seed`: runs and lines draw independent streams, the same every time.
pub(crate) fn seeded(seed: u64, name: impl IntoIterator<Item = u8>, run: u64) -> StdRng {
    let name = name.into_iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let mixed = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(17)
        ^ name
        ^ run.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    StdRng::seed_from_u64(mixed)
}

/// What a set of runs is asked.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Setup {
    pub runs: u64,
    pub seed: u64,
    /// The steps' holds are scaled to fill this.
    pub horizon: Duration,
    pub traffic: Traffic,
}

/// `runs` rollouts of `scenario` under one rule, in run order whatever the number of cores.
pub fn outcomes(sim: &Simulated, scenario: &Scenario, setup: &Setup) -> Vec<Outcome> {
    // A rollout paused for want of data may never finish; a quarter over the hold is enough to
    // say so.
    let limit = setup.horizon + setup.horizon / 4 + Duration::from_secs(3600);
    each_run(setup.runs, |run| {
        let mut rng = run_rng(setup.seed, scenario, setup.traffic, setup.horizon, run);
        let spec = scenario.world(setup.traffic.rps, setup.horizon, &mut rng);
        replay(sim, spec, setup.horizon, limit, rng)
    })
}

/// `f(0), …, f(runs - 1)` in that order, computed on every core the process may use.
///
/// Why: a simulated rollout is pure CPU and shares nothing with the others (each run has its own
/// random stream), so the runs of one line are independent and the numbers cannot depend on
/// which core computed which run. A 24 h line of the report and the 1 % bounds of
/// `tests/it/simulation.rs` are hundreds of rollouts each; this is what makes them a wait of
/// seconds instead of minutes. Runs are handed out one at a time (an atomic counter), because
/// a rollout rolled back at its first look costs a hundredth of one that holds to the end.
pub fn each_run<T: Send>(runs: u64, f: impl Fn(u64) -> T + Sync) -> Vec<T> {
    let threads = std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .min(usize::try_from(runs).unwrap_or(usize::MAX));
    if threads <= 1 {
        return (0..runs).map(f).collect();
    }
    let next = std::sync::atomic::AtomicU64::new(0);
    let work = || {
        let mut done = Vec::new();
        loop {
            let run = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if run >= runs {
                return done;
            }
            done.push((run, f(run)));
        }
    };
    let mut all: Vec<(u64, T)> = std::thread::scope(|s| {
        let helpers: Vec<_> = (1..threads).map(|_| s.spawn(work)).collect();
        let mut all = work();
        for h in helpers {
            // A panicking run (a bug in the judge under test) fails the caller as it would
            // have on one thread.
            all.extend(h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)));
        }
        all
    });
    all.sort_unstable_by_key(|(run, _)| *run);
    all.into_iter().map(|(_, out)| out).collect()
}

/// A rule named for the report, with its source.
#[derive(Debug, Clone)]
pub struct Contender {
    pub name: String,
    pub sim: Simulated,
}

impl Contender {
    pub fn new(name: impl Into<String>, rule: &Rule) -> Contender {
        Contender {
            name: name.into(),
            sim: Simulated::new(rule),
        }
    }
}

/// The policies of other tools, written as canaryd rule files so they run on the same code and
/// the same worlds: see each file's comment for what it stands for.
pub fn comparators() -> Vec<Contender> {
    [
        ("flagger-style", include_str!("policies/flagger-style.yaml")),
        ("argo-style", include_str!("policies/argo-style.yaml")),
        ("kayenta-style", include_str!("policies/kayenta-style.yaml")),
    ]
    .into_iter()
    .filter_map(|(name, text)| {
        parse_rule(std::path::Path::new(name), text)
            .ok()
            .map(|rule| Contender::new(name, &rule))
    })
    .collect()
}

/// Every contender on every scenario × traffic × horizon.
pub fn benchmark(
    contenders: &[Contender],
    scenarios: &[Scenario],
    traffic: &[Traffic],
    horizons: &[Duration],
    runs: u64,
    seed: u64,
) -> Vec<Summary> {
    let mut rows = Vec::new();
    for horizon in horizons {
        for t in traffic {
            for s in scenarios {
                for c in contenders {
                    let setup = Setup {
                        runs,
                        seed,
                        horizon: *horizon,
                        traffic: *t,
                    };
                    let out = outcomes(&c.sim, s, &setup);
                    rows.push(Summary::new(&c.name, s, &setup, &out));
                }
            }
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_come_back_in_run_order_whatever_thread_computed_them() {
        // Uneven costs, so that threads finish out of order.
        let slow_then_fast = |run: u64| {
            let spin = if run.is_multiple_of(7) { 20_000 } else { 10 };
            (0..spin).fold(run, |acc, i| acc.wrapping_mul(31).wrapping_add(i)) % 1000 + run * 1000
        };
        let sequential: Vec<u64> = (0..300).map(slow_then_fast).collect();
        assert_eq!(each_run(300, slow_then_fast), sequential);
        assert!(each_run(0, slow_then_fast).is_empty());
    }
}
