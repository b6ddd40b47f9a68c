//! The arithmetic behind [`super::service::DemoService`]: what one track of the simulated API
//! does per tick, and how its counters are written in the Prometheus text format.
//!
//! Kept apart from the HTTP plumbing so it can be tested as plain functions. With `noise == 0`
//! every tick adds *expected* (fractional) counts, so a query's value is known in advance and
//! tests never flake; with noise the per-tick quantities jitter from a seeded RNG.

use std::fmt::Write as _;

use rand::Rng;
use serde::{Deserialize, Serialize};

/// The upper bounds of the latency histogram, in seconds (`+Inf` is implied).
pub(crate) const BUCKETS: [f64; 8] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// How one track of the simulated API behaves. Change it while the service runs to make the
/// canary worse (or better) than the baseline.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Profile {
    /// Requests per second.
    pub rps: f64,
    /// Fraction of requests answered `500`.
    pub error_rate: f64,
    /// Median latency in seconds.
    pub latency_p50_s: f64,
    /// Sigma of the lognormal latency distribution: 0 means every request takes the median.
    pub latency_spread: f64,
    /// Connections in use as a fraction of `db_pool_max`.
    pub db_pool_in_use: f64,
    /// Size of the database connection pool.
    pub db_pool_max: f64,
    /// CPU used, as a fraction of one core.
    pub cpu: f64,
    /// Whether `/{track}/health/ready` answers 200 (else 503).
    pub healthy: bool,
    /// Relative per-tick jitter of every quantity: 0 is deterministic, 0.1 is ±10 %.
    pub noise: f64,
    /// Requests and errors as whole counts drawn per tick from the seeded RNG — Poisson
    /// requests, binomial errors — as a real service's counters move. Without it the counters
    /// grow by their expected values and a statistical test can never be fooled by chance.
    pub counts: bool,
}

impl Default for Profile {
    /// A healthy service that passes every check of the example rule file in `design.md`.
    fn default() -> Self {
        Profile {
            rps: 50.0,
            error_rate: 0.0005,
            latency_p50_s: 0.12,
            latency_spread: 0.5,
            db_pool_in_use: 0.4,
            db_pool_max: 20.0,
            cpu: 0.35,
            healthy: true,
            noise: 0.0,
            counts: false,
        }
    }
}

impl Profile {
    /// Rejects profiles that would make counters decrease or produce NaN, so a typo sent to
    /// `PUT /control/{track}` fails loudly instead of corrupting every later scrape.
    pub fn validate(&self) -> Result<(), String> {
        let fields = [
            ("rps", self.rps),
            ("error_rate", self.error_rate),
            ("latency_p50_s", self.latency_p50_s),
            ("latency_spread", self.latency_spread),
            ("db_pool_in_use", self.db_pool_in_use),
            ("db_pool_max", self.db_pool_max),
            ("cpu", self.cpu),
            ("noise", self.noise),
        ];
        for (name, value) in fields {
            if !value.is_finite() || value < 0.0 {
                return Err(format!("{name} must be a finite number >= 0, got {value}"));
            }
        }
        if self.error_rate > 1.0 || self.db_pool_in_use > 1.0 {
            return Err("error_rate and db_pool_in_use are fractions in [0, 1]".to_owned());
        }
        if self.latency_p50_s == 0.0 {
            return Err("latency_p50_s must be > 0".to_owned());
        }
        Ok(())
    }
}

/// The cumulative state of one track: exactly what `/metrics` exposes.
#[derive(Clone, Debug, Default)]
pub(crate) struct Counters {
    ok: f64,
    errors: f64,
    /// Cumulative counts per bucket of [`BUCKETS`]; `+Inf` is `count`.
    buckets: [f64; BUCKETS.len()],
    latency_sum: f64,
    count: f64,
    cpu_seconds: f64,
    pool_in_use: f64,
    pool_max: f64,
}

impl Counters {
    /// Advances the counters by `dt` seconds of `profile`, jittered by `rng` when
    /// `profile.noise > 0` (the RNG is not touched otherwise, keeping runs reproducible).
    pub(crate) fn advance(&mut self, profile: &Profile, dt: f64, rng: &mut impl Rng) {
        let mut jitter = || {
            if profile.noise > 0.0 {
                (1.0 + profile.noise * rng.random_range(-1.0..=1.0)).max(0.0)
            } else {
                1.0
            }
        };
        let requests = profile.rps.max(0.0) * dt * jitter();
        let error_rate = (profile.error_rate * jitter()).clamp(0.0, 1.0);
        let p50 = profile.latency_p50_s.max(f64::MIN_POSITIVE) * jitter();
        // Drawn in the order they always were, so a seed replays the same noise.
        let (cpu_jitter, pool_jitter) = (jitter(), jitter());
        let sigma = profile.latency_spread.max(0.0);
        let (requests, errors) = if profile.counts {
            draw_counts(requests, error_rate, rng)
        } else {
            (requests, requests * error_rate)
        };
        self.ok += requests - errors;
        self.errors += errors;
        for (bucket, le) in self.buckets.iter_mut().zip(BUCKETS) {
            *bucket += requests * lognormal_cdf(le, p50, sigma);
        }
        // The mean of a lognormal is exp(mu + sigma^2 / 2) with mu = ln(median).
        self.latency_sum += requests * p50 * (sigma * sigma / 2.0).exp();
        self.count += requests;
        self.cpu_seconds += profile.cpu.max(0.0) * dt * cpu_jitter;
        self.pool_max = profile.db_pool_max;
        self.pool_in_use =
            (profile.db_pool_in_use * pool_jitter).clamp(0.0, 1.0) * profile.db_pool_max;
    }
}

/// Whole requests ~ Poisson(`mean`) and errors ~ Binomial(requests, `error_rate`). A mean or
/// rate the distributions refuse (0, or out of range after jitter) draws nothing of that kind.
fn draw_counts(mean: f64, error_rate: f64, rng: &mut impl Rng) -> (f64, f64) {
    use rand_distr::{Binomial, Distribution, Poisson};
    let requests: f64 = Poisson::new(mean).map_or(0.0, |d| d.sample(rng));
    // A tick's requests are far below u64::MAX; the cast saturates if a caller passes more.
    let n = requests as u64;
    let errors = Binomial::new(n, error_rate).map_or(0, |d| d.sample(rng));
    (n as f64, errors as f64)
}

/// P(X <= x) for a lognormal with median `median` and shape `sigma`.
fn lognormal_cdf(x: f64, median: f64, sigma: f64) -> f64 {
    if sigma == 0.0 {
        return if x >= median { 1.0 } else { 0.0 };
    }
    let z = (x.ln() - median.ln()) / (sigma * std::f64::consts::SQRT_2);
    0.5 * (1.0 + statrs::function::erf::erf(z))
}

/// A family with one sample per track: name, type, help, and how to read its value.
type SimpleFamily = (
    &'static str,
    &'static str,
    &'static str,
    fn(&Counters) -> f64,
);

/// Writes the exposition of both tracks in the Prometheus text format (version 0.0.4).
pub(crate) fn render(service: &str, tracks: &[(&str, &Counters)]) -> String {
    let mut out = String::new();
    let service = escape(service);
    let mut family = |name: &str, kind: &str, help: &str, samples: &dyn Fn(&mut String)| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        samples(&mut out);
    };
    family(
        "http_requests_total",
        "counter",
        "Requests served, by status code.",
        &|out| {
            for (track, c) in tracks {
                for (code, value) in [("200", c.ok), ("500", c.errors)] {
                    let _ = writeln!(
                        out,
                        "http_requests_total{{service=\"{service}\",track=\"{track}\",code=\"{code}\"}} {value}"
                    );
                }
            }
        },
    );
    family(
        "http_request_duration_seconds",
        "histogram",
        "Request latency.",
        &|out| {
            for (track, c) in tracks {
                let labels = format!("service=\"{service}\",track=\"{track}\"");
                for (le, value) in BUCKETS.iter().zip(c.buckets) {
                    let _ = writeln!(
                        out,
                        "http_request_duration_seconds_bucket{{{labels},le=\"{le}\"}} {value}"
                    );
                }
                let _ = writeln!(
                    out,
                    "http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}\n\
                     http_request_duration_seconds_sum{{{labels}}} {}\n\
                     http_request_duration_seconds_count{{{labels}}} {}",
                    c.count, c.latency_sum, c.count
                );
            }
        },
    );
    let simple: [SimpleFamily; 3] = [
        (
            "db_pool_connections_in_use",
            "gauge",
            "Database connections in use.",
            |c| c.pool_in_use,
        ),
        (
            "db_pool_connections_max",
            "gauge",
            "Size of the database connection pool.",
            |c| c.pool_max,
        ),
        (
            "process_cpu_seconds_total",
            "counter",
            "CPU time used, in seconds.",
            |c| c.cpu_seconds,
        ),
    ];
    for (name, kind, help, value) in simple {
        family(name, kind, help, &|out| {
            for (track, c) in tracks {
                let _ = writeln!(
                    out,
                    "{name}{{service=\"{service}\",track=\"{track}\"}} {}",
                    value(c)
                );
            }
        });
    }
    out
}

/// Escapes a label value as the text format requires.
pub(super) fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn deterministic_profile_adds_expected_counts() {
        let mut counters = Counters::default();
        let profile = Profile {
            error_rate: 0.2,
            ..Profile::default()
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for _ in 0..10 {
            counters.advance(&profile, 0.1, &mut rng);
        }
        assert!((counters.count - 50.0).abs() < 1e-9);
        assert!((counters.errors - 10.0).abs() < 1e-9);
        assert!((counters.cpu_seconds - 0.35).abs() < 1e-9);
        assert!((counters.pool_in_use - 8.0).abs() < 1e-9);
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_centered_on_the_median() {
        let mut counters = Counters::default();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        counters.advance(&Profile::default(), 1.0, &mut rng);
        assert!(counters.buckets.windows(2).all(|w| w[0] <= w[1]));
        assert!(counters.buckets[BUCKETS.len() - 1] <= counters.count);
        // The median 0.12 s lies between the 0.1 and 0.25 buckets.
        assert!(counters.buckets[1] < 25.0 && counters.buckets[2] > 25.0);
    }

    #[test]
    fn exposition_names_every_family_with_labels() {
        let counters = Counters::default();
        let text = render("checkout-api", &[("canary", &counters)]);
        for line in [
            "http_requests_total{service=\"checkout-api\",track=\"canary\",code=\"500\"} 0",
            "http_request_duration_seconds_bucket{service=\"checkout-api\",track=\"canary\",le=\"+Inf\"} 0",
            "http_request_duration_seconds_bucket{service=\"checkout-api\",track=\"canary\",le=\"2.5\"} 0",
            "db_pool_connections_max{service=\"checkout-api\",track=\"canary\"} 0",
            "# TYPE process_cpu_seconds_total counter",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }

    #[test]
    fn noise_jitters_reproducibly_from_the_seed() {
        let noisy = Profile {
            noise: 0.2,
            ..Profile::default()
        };
        let run = |seed| {
            let mut counters = Counters::default();
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            for _ in 0..10 {
                counters.advance(&noisy, 0.1, &mut rng);
            }
            counters.count
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
        assert!((run(7) - 50.0).abs() <= 10.0 + 1e-9);
    }

    #[test]
    fn counts_are_whole_seeded_draws_with_binomial_spread() {
        let counted = Profile {
            rps: 50.0,
            error_rate: 0.1,
            counts: true,
            ..Profile::default()
        };
        let run = |seed| {
            let mut counters = Counters::default();
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut per_tick = Vec::new();
            for _ in 0..2000 {
                let before = counters.errors;
                counters.advance(&counted, 0.1, &mut rng);
                per_tick.push(counters.errors - before);
            }
            (counters.count, counters.errors, per_tick)
        };
        let (count, errors, per_tick) = run(11);
        assert_eq!(run(11).1, errors, "same seed, same draws");
        assert_ne!(run(12).1, errors);
        assert!(per_tick.iter().all(|e| e.fract() == 0.0), "whole errors");
        assert_eq!(count.fract(), 0.0);
        // 10,000 requests expected; errors within 5 sigma of 10 % of what was drawn.
        assert!((count - 10_000.0).abs() < 5.0 * 100.0, "{count}");
        let sigma = (count * 0.1 * 0.9).sqrt();
        assert!(
            (errors - 0.1 * count).abs() < 5.0 * sigma,
            "{errors} of {count}"
        );
        // Not the expected value every tick: the per-tick errors vary as a binomial's do.
        let mean = per_tick.iter().sum::<f64>() / per_tick.len() as f64;
        let var = per_tick.iter().map(|e| (e - mean).powi(2)).sum::<f64>() / per_tick.len() as f64;
        assert!(
            (0.3..0.8).contains(&var),
            "per-tick variance {var}, mean {mean}"
        );
    }

    #[test]
    fn validate_rejects_negative_and_out_of_range_values() {
        let bad = Profile {
            error_rate: 1.5,
            ..Profile::default()
        };
        assert!(bad.validate().is_err());
        assert!(Profile::default().validate().is_ok());
    }
}
