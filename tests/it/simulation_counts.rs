//! Simulation tests: the sequential test's guarantee and the benchmark's story, on seeded
//! simulated rollouts (the data `canaryd simulate --seed 1` uses).

use canaryd::simulate::counts::{
    Policy, Row, Scenario, Shape, decisions, run_rng, scenarios, simulate_rollout,
};
use canaryd::verdict::SequentialConfig;

const SEED: u64 = 1;
const RUNS: u64 = 1000;

fn scenario(name: &str) -> Scenario {
    scenarios()
        .into_iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no scenario named {name:?}"))
}

/// Runs `policy` on `runs` rollouts of the named scenario and prints the summary line.
fn row(name: &str, policy: Policy, runs: u64) -> Row {
    let s = scenario(name);
    let decided = decisions(
        &Shape::default(),
        &s,
        std::slice::from_ref(&policy),
        runs,
        SEED,
    );
    let row = Row::summarise(&s, &policy, &decided[0]);
    println!(
        "{:<35} {:<28} {:>4}/{} = {:.2} % (95 % interval {:.2} – {:.2} %)",
        row.scenario,
        row.policy,
        row.rates.rollbacks,
        row.rates.runs,
        row.rates.rate * 100.0,
        row.rates.interval.0 * 100.0,
        row.rates.interval.1 * 100.0
    );
    row
}

#[test]
fn sequential_rolls_back_at_most_alpha_of_identical_canaries() {
    let alpha = SequentialConfig::default().alpha;
    for name in [
        "identical, high traffic",
        "identical, low traffic",
        "identical, split 10 % off",
        "identical, shared spikes x5",
        "identical, low, split off, spikes",
    ] {
        let r = row(name, Policy::Sequential, RUNS);
        assert!(
            r.rates.rate <= alpha,
            "{name}: {} of {} identical canaries rolled back, more than α = {alpha}",
            r.rates.rollbacks,
            r.rates.runs
        );
    }
}

#[test]
fn sequential_catches_five_fold_errors_in_99_percent_of_rollouts() {
    for name in ["errors x5", "errors x5, low traffic"] {
        let r = row(name, Policy::Sequential, RUNS);
        assert!(
            r.rates.rate >= 0.99,
            "{name}: caught only {} of {}",
            r.rates.rollbacks,
            r.rates.runs
        );
    }
}

/// The motivating claim: Kayenta's classifier repeated every tick on a sliding window rolls
/// back identical canaries far more often than α, where the sequential test stays below it on
/// the very same rollouts.
#[test]
fn repeated_mann_whitney_rolls_back_far_more_identical_canaries_than_alpha() {
    let alpha = SequentialConfig::default().alpha;
    let mw = row(
        "identical, high traffic",
        Policy::MannWhitney {
            allowed_increase: 1.0,
        },
        RUNS,
    );
    assert!(
        mw.rates.rate > 2.0 * alpha,
        "repeated Mann-Whitney rolled back {} of {}",
        mw.rates.rollbacks,
        mw.rates.runs
    );
    // Not a fluke of the seed: the whole interval lies above α.
    assert!(
        mw.rates.interval.0 > alpha,
        "interval {:?}",
        mw.rates.interval
    );
    let seq = row("identical, high traffic", Policy::Sequential, RUNS);
    assert!(mw.rates.rollbacks >= 5 * seq.rates.rollbacks.max(1));
}

#[test]
fn simulated_traffic_follows_the_scenario() {
    // Over many ticks the measured split and error rates must match what the scenario says,
    // or every number of the benchmark is about some other rollout.
    let s = Scenario {
        split_error: 0.1,
        ..Scenario::regressed("check", 20_000, 2.0)
    };
    let shape = Shape::default();
    let ticks = simulate_rollout(&shape, &s, &mut run_rng(SEED, &s, 0));
    assert_eq!(ticks.len(), shape.ticks());
    let first_step = &ticks[..shape.ticks_per_step];
    let sum = |f: fn(&canaryd::judge::sequential::TickCounts) -> f64| -> f64 {
        first_step.iter().map(f).sum()
    };
    let share =
        sum(|t| t.canary_requests) / (sum(|t| t.canary_requests) + sum(|t| t.baseline_requests));
    assert!((share - 0.055).abs() < 0.002, "canary share {share}");
    let canary = sum(|t| t.canary_events) / sum(|t| t.canary_requests);
    let baseline = sum(|t| t.baseline_events) / sum(|t| t.baseline_requests);
    assert!((canary - 0.01).abs() < 0.0015, "canary error rate {canary}");
    assert!(
        (baseline - 0.005).abs() < 0.0003,
        "baseline error rate {baseline}"
    );
    // At 100 % the baseline serves nothing.
    assert!(ticks.last().is_some_and(|t| t.baseline_requests == 0.0));
}

#[test]
fn the_same_seed_gives_the_same_decisions() {
    let s = scenario("errors x1.5");
    let policies = canaryd::simulate::policy::policies();
    let a = decisions(&Shape::default(), &s, &policies, 20, 7);
    let b = decisions(&Shape::default(), &s, &policies, 20, 7);
    let c = decisions(&Shape::default(), &s, &policies, 20, 8);
    assert_eq!(a, b);
    assert_ne!(a, c);
}
