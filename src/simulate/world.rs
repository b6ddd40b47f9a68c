//! The simulated fleet: what a canary and a baseline deployment export to Prometheus, minute by
//! minute, with the noise production adds on top of sampling noise.
//!
//! Why this much: a policy that looks safe when the groups differ only by binomial noise rolls
//! back healthy canaries in production, where both groups wobble together (load, dependencies),
//! each wobbles on its own (hosts, caches), and the canary's hosts are a few percent better or
//! worse than the baseline's for the whole hold. Each of those is a parameter here so a report
//! can say which one a policy cannot stand.
//!
//! Per slot (the query step, a minute for the shipped rules) and group:
//! - requests ~ Poisson(total rate × diurnal load × the group's share of traffic), per pod;
//! - error probability p₀ · exp(shared AR(1) + group AR(1)) · (1 + static offset), times a shared
//!   incident's factor, a canary-only blip, and the regression under test;
//! - latency log-normal, its median moved by the same kinds of wobble, counted into the Go
//!   client's default histogram buckets (multinomial over the bucket masses);
//! - CPU seconds and DB pool gauges per pod; a pool leak grows the canary's connections in use;
//! - pods restart now and then, resetting their counters, as real ones do.
//!
//! Architecture Invariant: pure and seeded, like the rest of `simulate`.

use rand::Rng;
use rand::rngs::StdRng;
use rand_distr::{Binomial, Distribution, Normal, Poisson};
use serde::Serialize;
use statrs::function::erf::erfc;

/// The Go client's `prometheus.DefBuckets` upper bounds, seconds (+Inf implied).
pub const GO_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Buckets per histogram, +Inf included.
pub const BUCKETS: usize = GO_BUCKETS.len() + 1;
/// Connections per pod's DB pool.
pub const POOL_MAX: f64 = 50.0;

/// Slow wobble: an AR(1) process on the log scale, stationary with standard deviation `sd`,
/// forgetting with time constant `minutes`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Wobble {
    pub sd: f64,
    pub minutes: f64,
}

/// Everything production adds beyond sampling noise.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Noise {
    /// Both groups together (load, shared dependencies).
    pub shared: Wobble,
    /// Each group on its own (its hosts, caches, neighbours).
    pub group: Wobble,
    /// Standard deviation of a static relative offset per group, drawn once per rollout: the
    /// canary's hosts are a few percent better or worse than the baseline's for the whole hold.
    pub offset_sd: f64,
    /// Pod restarts (counter resets) per pod per day.
    pub restarts_per_day: f64,
}

impl Noise {
    /// Sampling noise only: identical groups on identical hosts.
    pub const NONE: Noise = Noise {
        shared: Wobble {
            sd: 0.0,
            minutes: 30.0,
        },
        group: Wobble {
            sd: 0.0,
            minutes: 60.0,
        },
        offset_sd: 0.0,
        restarts_per_day: 0.0,
    };
    /// A fleet as it is: 20 % shared wobble over half an hour, 5 % per group over an hour,
    /// hosts 3 % apart, a restart per pod every two days.
    pub const FLEET: Noise = Noise {
        shared: Wobble {
            sd: 0.2,
            minutes: 30.0,
        },
        group: Wobble {
            sd: 0.05,
            minutes: 60.0,
        },
        offset_sd: 0.03,
        restarts_per_day: 0.5,
    };
}

/// A time-limited change: `start` minutes after the rollout began, for `minutes`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Episode {
    pub start: f64,
    pub minutes: f64,
}

impl Episode {
    /// Share of the slot `[t, t + dt)` (minutes) the episode covers.
    fn cover(&self, t: f64, dt: f64) -> f64 {
        let (a, b) = (t.max(self.start), (t + dt).min(self.start + self.minutes));
        if b > a { (b - a) / dt } else { 0.0 }
    }
}

/// What is wrong with the canary, if anything, from the rollout's first minute.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Regression {
    /// Error probability × factor.
    Errors { factor: f64 },
    /// Every latency × factor (so every quantile moves by it).
    Latency { factor: f64 },
    /// Connections in use grow by `per_hour` of the pool every hour, never returned.
    PoolLeak { per_hour: f64 },
}

/// One simulated world's settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorldSpec {
    /// Requests per second of the whole service at mean load, canary and baseline together.
    pub rps: f64,
    /// Relative amplitude of the daily load cycle (0.5: from half to one and a half times).
    pub diurnal: f64,
    pub error_probability: f64,
    /// Median latency, seconds, and the log-normal's σ: 0.5 s and 0.6 give a p95 of 1.3 s, under
    /// the runbook's "baseline P95 < 3 s" (003:332).
    pub latency_median: f64,
    pub latency_sigma: f64,
    /// Mean share of each pool in use at mean load.
    pub pool_use: f64,
    pub noise: Noise,
    /// Both groups worse: error probability and latency multiplied.
    pub incident: Option<(Episode, f64, f64)>,
    /// The canary alone serves errors with this probability for the episode.
    pub blip: Option<(Episode, f64)>,
    pub regression: Option<Regression>,
    pub pods: usize,
}

impl WorldSpec {
    /// A service at `rps` with the runbook's baseline (0.1 % errors, 003:328) and a fleet's noise.
    pub fn fleet(rps: f64) -> WorldSpec {
        WorldSpec {
            rps,
            diurnal: 0.5,
            error_probability: 0.001,
            latency_median: 0.5,
            latency_sigma: 0.6,
            pool_use: 0.5,
            noise: Noise::FLEET,
            incident: None,
            blip: None,
            regression: None,
            pods: 2,
        }
    }
}

/// One group's exported series.
#[derive(Debug, Clone, Default)]
pub struct Pod {
    pub requests: f64,
    pub errors: f64,
    /// Cumulative bucket counters, `le` ascending, +Inf last (= the `_count`).
    pub buckets: [f64; BUCKETS],
    pub cpu_seconds: f64,
    pub pool_in_use: f64,
}

/// A group's increases over one slot, summed over its pods (what `sum(rate(..))` sees, restarts
/// handled as Prometheus' `rate` handles them), and its gauges at the slot's end.
#[derive(Debug, Clone, Copy, Default)]
pub struct SlotTotals {
    pub requests: f64,
    pub errors: f64,
    pub buckets: [f64; BUCKETS],
    pub cpu_seconds: f64,
    pub pool_in_use: f64,
    pub pool_max: f64,
    pub pods: usize,
}

/// Index 0 is the canary, 1 the baseline.
pub const CANARY: usize = 0;
pub const BASELINE: usize = 1;

/// The world as it runs: pods' counters now, and every slot's totals so far.
pub struct World {
    pub spec: WorldSpec,
    /// Slot length, seconds.
    pub slot_seconds: f64,
    pub pods: [Vec<Pod>; 2],
    pub history: Vec<[SlotTotals; 2]>,
    shared: [f64; 2],
    group: [[f64; 2]; 2],
    offset: [[f64; 2]; 2],
    phase: f64,
    rng: StdRng,
}

/// Standard normal CDF.
fn phi(z: f64) -> f64 {
    0.5 * erfc(-z / std::f64::consts::SQRT_2)
}

fn poisson(rng: &mut StdRng, mean: f64) -> f64 {
    if mean.is_finite() && mean > 0.0 {
        Poisson::new(mean).map(|d| d.sample(rng)).unwrap_or(0.0)
    } else {
        0.0
    }
}

fn binomial(rng: &mut StdRng, n: f64, p: f64) -> f64 {
    let p = if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) };
    Binomial::new(n.max(0.0) as u64, p)
        .map(|d| d.sample(rng) as f64)
        .unwrap_or(0.0)
}

fn normal(rng: &mut StdRng, sd: f64) -> f64 {
    Normal::new(0.0, sd.max(0.0))
        .map(|d| d.sample(rng))
        .unwrap_or(0.0)
}

impl World {
    pub fn new(spec: WorldSpec, slot_seconds: f64, mut rng: StdRng) -> World {
        let n = &spec.noise;
        // Stationary starts: a rollout begins at a random point of every wobble.
        let shared = [normal(&mut rng, n.shared.sd), normal(&mut rng, n.shared.sd)];
        let group = [
            [normal(&mut rng, n.group.sd), normal(&mut rng, n.group.sd)],
            [normal(&mut rng, n.group.sd), normal(&mut rng, n.group.sd)],
        ];
        let offset = [
            [normal(&mut rng, n.offset_sd), normal(&mut rng, n.offset_sd)],
            [normal(&mut rng, n.offset_sd), normal(&mut rng, n.offset_sd)],
        ];
        let phase = rng.random::<f64>();
        let pods = spec.pods.max(1);
        World {
            spec,
            slot_seconds,
            pods: [vec![Pod::default(); pods], vec![Pod::default(); pods]],
            history: Vec::new(),
            shared,
            group,
            offset,
            phase,
            rng,
        }
    }

    /// Minutes since the rollout began at the start of slot `i`.
    pub fn minute(&self, slot: usize) -> f64 {
        slot as f64 * self.slot_seconds / 60.0
    }

    fn step_wobble(rng: &mut StdRng, x: &mut f64, w: Wobble, dt_minutes: f64) {
        if w.sd <= 0.0 {
            return;
        }
        let a = (-dt_minutes / w.minutes.max(1e-9)).exp();
        *x = a * *x + normal(rng, w.sd * (1.0 - a * a).sqrt());
    }

    /// Runs one more slot with the canary at `weight` percent of traffic.
    pub fn advance(&mut self, weight: u32) {
        let slot = self.history.len();
        let t = self.minute(slot);
        let dt = self.slot_seconds / 60.0;
        let spec = self.spec.clone();
        let n = spec.noise;
        for k in 0..2 {
            Self::step_wobble(&mut self.rng, &mut self.shared[k], n.shared, dt);
            for g in 0..2 {
                Self::step_wobble(&mut self.rng, &mut self.group[g][k], n.group, dt);
            }
        }
        let load =
            1.0 + spec.diurnal * (2.0 * std::f64::consts::PI * (t / 1440.0 + self.phase)).sin();
        let share = f64::from(weight.min(100)) / 100.0;
        let incident = spec
            .incident
            .map(|(e, err, lat)| {
                let c = e.cover(t, dt);
                (1.0 + c * (err - 1.0), 1.0 + c * (lat - 1.0))
            })
            .unwrap_or((1.0, 1.0));
        let mut totals = [SlotTotals::default(); 2];
        for g in [CANARY, BASELINE] {
            let group_share = if g == CANARY { share } else { 1.0 - share };
            let (mut err_factor, mut lat_factor, mut leak) = (1.0, 1.0, 0.0);
            if g == CANARY {
                match spec.regression {
                    Some(Regression::Errors { factor }) => err_factor = factor,
                    Some(Regression::Latency { factor }) => lat_factor = factor,
                    Some(Regression::PoolLeak { per_hour }) => leak = per_hour * t / 60.0,
                    None => {}
                }
            }
            let p = spec.error_probability
                * (self.shared[0] + self.group[g][0]).exp()
                * (1.0 + self.offset[g][0]).max(0.0)
                * incident.0
                * err_factor;
            let blip = match (g, spec.blip) {
                (CANARY, Some((e, p))) => (e.cover(t, dt), p),
                _ => (0.0, 0.0),
            };
            let median = spec.latency_median
                * (self.shared[1] + self.group[g][1]).exp()
                * (1.0 + self.offset[g][1]).max(0.01)
                * incident.1
                * lat_factor;
            let mut masses = [0.0; BUCKETS];
            let mut below = 0.0;
            for (i, le) in GO_BUCKETS.iter().enumerate() {
                let c = phi((le / median).ln() / spec.latency_sigma.max(1e-9));
                masses[i] = (c - below).max(0.0);
                below = c;
            }
            masses[BUCKETS - 1] = (1.0 - below).max(0.0);
            let pods = self.pods[g].len();
            let restart_p = n.restarts_per_day * dt / 1440.0;
            let total = &mut totals[g];
            total.pods = pods;
            for pod in &mut self.pods[g] {
                if restart_p > 0.0 && self.rng.random::<f64>() < restart_p {
                    *pod = Pod {
                        pool_in_use: pod.pool_in_use,
                        ..Pod::default()
                    };
                }
                let requests = poisson(
                    &mut self.rng,
                    spec.rps * load * group_share * self.slot_seconds / pods as f64,
                );
                let blipped = binomial(&mut self.rng, requests, blip.0);
                let errors = binomial(&mut self.rng, requests - blipped, p)
                    + binomial(&mut self.rng, blipped, blip.1);
                // Multinomial over the bucket masses, one conditional binomial per bucket.
                let (mut left, mut mass_left) = (requests, 1.0);
                let mut cumulative = 0.0;
                for (i, m) in masses.iter().enumerate() {
                    let drawn = if i == BUCKETS - 1 {
                        left
                    } else if mass_left > 0.0 {
                        binomial(&mut self.rng, left, m / mass_left)
                    } else {
                        0.0
                    };
                    left -= drawn;
                    mass_left -= m;
                    cumulative += drawn;
                    pod.buckets[i] += cumulative;
                    total.buckets[i] += cumulative;
                }
                let cpu = self.slot_seconds
                    * (0.05 + 0.004 * requests / self.slot_seconds)
                    * (1.0 + normal(&mut self.rng, 0.05)).max(0.0);
                let in_use = (POOL_MAX
                    * (spec.pool_use * load.max(0.0) * (1.0 + self.offset[g][0]) + leak)
                    + normal(&mut self.rng, 2.0))
                .clamp(0.0, POOL_MAX);
                pod.requests += requests;
                pod.errors += errors;
                pod.cpu_seconds += cpu;
                pod.pool_in_use = in_use;
                total.requests += requests;
                total.errors += errors;
                total.cpu_seconds += cpu;
                total.pool_in_use += in_use;
                total.pool_max += POOL_MAX;
            }
        }
        self.history.push(totals);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn run(spec: WorldSpec, weight: u32, slots: usize) -> World {
        let mut w = World::new(spec, 60.0, StdRng::seed_from_u64(3));
        for _ in 0..slots {
            w.advance(weight);
        }
        w
    }

    #[test]
    fn traffic_errors_and_latency_follow_the_spec() {
        let spec = WorldSpec {
            diurnal: 0.0,
            noise: Noise::NONE,
            ..WorldSpec::fleet(100.0)
        };
        let w = run(spec, 25, 600);
        let sum = |g: usize, f: fn(&SlotTotals) -> f64| w.history.iter().map(|s| f(&s[g])).sum();
        let (cr, br): (f64, f64) = (sum(CANARY, |s| s.requests), sum(BASELINE, |s| s.requests));
        assert!(
            ((cr / (cr + br)) - 0.25).abs() < 0.005,
            "share {}",
            cr / (cr + br)
        );
        assert!(((cr + br) / (600.0 * 60.0) - 100.0).abs() < 1.0);
        let errors: f64 = sum(BASELINE, |s| s.errors);
        assert!(
            (errors / br - 0.001).abs() < 0.0002,
            "error rate {}",
            errors / br
        );
        // The median is 0.5 s, an edge: that bucket holds half the requests, and the 1 s bucket
        // Φ(ln 2 / 0.6) ≈ 87.6 %.
        let le = |i: usize| {
            w.history
                .iter()
                .map(|s| s[BASELINE].buckets[i])
                .sum::<f64>()
                / br
        };
        assert!((le(6) - 0.5).abs() < 0.01, "{}", le(6));
        assert!((le(7) - 0.876).abs() < 0.01, "{}", le(7));
        // The +Inf bucket is the count.
        assert_eq!(sum(BASELINE, |s| s.buckets[BUCKETS - 1]), br);
    }

    #[test]
    fn a_pool_leak_fills_the_canarys_pool_only() {
        let spec = WorldSpec {
            diurnal: 0.0,
            regression: Some(Regression::PoolLeak { per_hour: 0.1 }),
            ..WorldSpec::fleet(100.0)
        };
        let w = run(spec, 5, 360);
        let last = w.history.last().unwrap();
        assert!(last[CANARY].pool_in_use / last[CANARY].pool_max > 0.95);
        assert!(last[BASELINE].pool_in_use / last[BASELINE].pool_max < 0.7);
    }
}
