//! α on the daemon's own path: identical canary and baseline whose request and error counts are
//! random draws (Poisson requests, binomial errors, seeded), scraped by a real Prometheus and
//! judged by `canaryd serve`'s sequential test through to promotion. A healthy canary may be
//! rolled back by chance at most α of the time; with noise-free counters it never could be, so
//! this is the test that can fail for statistical reasons. A canary with three times the errors
//! under the same noise is the control: it must be rolled back, or the runs prove nothing.
//! (Twice the errors was too weak a control for three 4 s holds: about 60 against 120 errors
//! leave ln E ≈ 8 ± 4.4 against the threshold ln 40 ≈ 3.7, so about one run in seven missed it;
//! three times gives ln E ≈ 29 ± 7.4.)
//!
//! `CANARYD_ALPHA_RUNS` (default 10) sets the healthy rollouts, all at once in one daemon; the
//! longer run in BENCHMARKS.md ("α on the live path") raises it. `CANARYD_ALPHA_SEED` fixes the
//! seeds (default 1; printed).

use crate::common;

use std::time::{Duration, Instant};

use canaryd::demo::prometheus::{PrometheusOptions, PrometheusProcess};
use canaryd::demo::receiver::HookReceiver;
use canaryd::demo::service::{DemoService, Track};
use common::{Daemon, RuleOpts, rule_yaml};
use statrs::distribution::{Binomial, DiscreteCDF};

const ALPHA: f64 = 0.05;
const ERROR_RATE: f64 = 0.01;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// The largest number of false rollbacks out of `n` that a rate of exactly α makes likelier
/// than one in a hundred: more than this and the daemon's path fails healthy canaries beyond α.
/// (The e-process is conservative, so a correct daemon exceeds it far less often than that.)
fn allowed_false_rollbacks(n: u64) -> u64 {
    let b = Binomial::new(ALPHA, n).expect("binomial");
    (0..=n).find(|k| 1.0 - b.cdf(*k) < 1e-2).unwrap_or(n)
}

async fn counted_service(name: &str, seed: u64, canary_errors: f64) -> DemoService {
    let s = DemoService::start_with_seed(name, "127.0.0.1:0".parse().expect("addr"), seed)
        .await
        .expect("demo service");
    for (track, errors) in [
        (Track::Baseline, ERROR_RATE),
        (Track::Canary, canary_errors),
    ] {
        s.update(track, |p| {
            p.rps = 1000.0;
            p.error_rate = errors;
            p.counts = true;
        });
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_canaries_with_binomial_noise_are_rolled_back_at_most_alpha_of_the_time() {
    let runs = env_or("CANARYD_ALPHA_RUNS", 10).max(1);
    let seed = env_or("CANARYD_ALPHA_SEED", 1);
    println!("alpha run: {runs} healthy rollouts + 1 control, seed {seed} (CANARYD_ALPHA_SEED)");
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = HookReceiver::start().await.expect("receiver");
    let opts = RuleOpts {
        hold: "4s",
        sequential: true,
        ..RuleOpts::default()
    };
    let mut names: Vec<String> = (0..runs).map(|i| format!("alpha-{i}")).collect();
    names.push("alpha-control".into());
    let mut services = Vec::new();
    let mut rules = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let canary_errors = if name == "alpha-control" {
            3.0 * ERROR_RATE
        } else {
            ERROR_RATE
        };
        services.push(counted_service(name, seed.wrapping_add(i as u64), canary_errors).await);
        let path = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, rule_yaml(name, &receiver, &opts)).expect("rule");
        rules.push(path);
    }
    let prometheus = PrometheusProcess::start(PrometheusOptions {
        targets: services.iter().map(|s| s.addr().to_string()).collect(),
        ..PrometheusOptions::default()
    })
    .await
    .expect("prometheus");
    for name in &names {
        common::wait_for_canary_rate(&prometheus, name, Duration::from_secs(30)).await;
    }
    let daemon = Daemon::start(&prometheus.url(), &rules, dir.path(), &[]).await;
    let mut ids = Vec::new();
    for name in &names {
        ids.push((name.clone(), daemon.start_rollout(name, "v1").await));
    }
    // Three holds of 4 s each; more rollouts at once on a shared machine take longer.
    let deadline = Instant::now() + Duration::from_secs(90 + 6 * (runs + 1));
    let mut ended = Vec::new();
    for (name, id) in &ids {
        let left = deadline.saturating_duration_since(Instant::now());
        let r = daemon.wait_ended(id, left).await;
        ended.push((name.clone(), r));
    }
    let (control, healthy) = ended.split_last().expect("control run");
    assert_eq!(
        control.1["phase"], "rolled_back",
        "control not caught: {}",
        control.1
    );
    assert!(
        control.1["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("errors_vs_baseline"),
        "control rolled back for another reason: {}",
        control.1
    );
    let mut false_rollbacks = 0;
    for (name, r) in healthy {
        assert_ne!(r["phase"], "failed", "{name}: {r}");
        // Judged by the sequential test on counts, not promoted for want of evidence.
        assert!(
            r["sequential"].as_object().is_some_and(|s| !s.is_empty()),
            "{name}: no sequential state: {r}"
        );
        if r["phase"] == "rolled_back" {
            false_rollbacks += 1;
            println!("false rollback of {name}: {}", r["reason"]);
        }
    }
    let allowed = allowed_false_rollbacks(runs);
    println!("false rollbacks: {false_rollbacks} of {runs} (allowed at alpha {ALPHA}: {allowed})");
    assert!(
        false_rollbacks <= allowed,
        "{false_rollbacks} of {runs} healthy canaries rolled back (seed {seed})"
    );
}
