//! `canaryd simulate`: rule files run as live rollouts over a simulated fleet. Answers "how
//! often would this rule roll back a healthy canary over a hold, and how fast does it catch a
//! regression", in seconds, as a table or JSON. `--counts` keeps the older benchmark of the bare
//! sequential test on counter increases.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use super::judge::{Format, load_one_rule};
use crate::simulate::{
    Contender, HIGH, LOW, Scenario, Traffic, benchmark, comparators, counts, policy, report,
    scenarios, table,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TrafficArg {
    /// 100 requests/s for the whole service (50 per group at the 50 % step).
    High,
    /// 1 request/s (0.5 per group at 50 %; 3 a minute reach a 5 % canary).
    Low,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScenarioSet {
    /// A healthy canary in a noisy fleet, and one with twice the baseline's errors.
    Quick,
    /// Every scenario: noise, incidents, blips, error, latency and pool regressions.
    All,
}

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Rule file to simulate (repeat for several; default: every rules/*.yaml).
    #[arg(long = "rule")]
    pub rules: Vec<PathBuf>,
    /// Simulated rollouts per scenario, traffic level and hold.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub runs: u64,
    /// Seed of the random streams; the same seed gives the same numbers.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Simulated holds, comma-separated: the rule's step holds are scaled to fill each.
    #[arg(long, value_delimiter = ',', default_value = "2h", value_parser = parse_hold)]
    pub hold: Vec<Duration>,
    #[arg(long, value_delimiter = ',', value_enum, default_value = "high,low")]
    pub traffic: Vec<TrafficArg>,
    #[arg(long, value_enum, default_value_t = ScenarioSet::Quick)]
    pub scenarios: ScenarioSet,
    /// Only the scenarios whose name contains this text (repeatable; overrides --scenarios).
    #[arg(long)]
    pub only: Vec<String>,
    /// Also run Flagger-, Argo- and Kayenta-style policies on the same rollouts.
    #[arg(long)]
    pub compare: bool,
    /// The older counts-only benchmark of the sequential test (ignores the other options but
    /// --runs, --seed and --format).
    #[arg(long)]
    pub counts: bool,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// A hold between a minute and a month: longer would only burn CPU.
fn parse_hold(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text.trim()).map_err(|e| format!("{text:?}: {e}"))?;
    if d < Duration::from_secs(60) || d > Duration::from_secs(31 * 86_400) {
        return Err(format!("{text:?}: a hold must be between 1m and 31d"));
    }
    Ok(d)
}

fn print_json(doc: &serde_json::Value) -> i32 {
    match serde_json::to_string_pretty(doc) {
        Ok(s) => {
            println!("{s}");
            0
        }
        Err(e) => {
            eprintln!("canaryd: cannot encode the report: {e}");
            1
        }
    }
}

fn run_counts(args: &SimulateArgs) -> i32 {
    let shape = counts::Shape::default();
    let scenarios = counts::scenarios();
    let rows = counts::benchmark(
        &shape,
        &scenarios,
        &policy::policies(),
        args.runs,
        args.seed,
    );
    match args.format {
        Format::Text => {
            print!("{}", report::table(&rows));
            0
        }
        Format::Json => print_json(&serde_json::json!({
            "runs": args.runs, "seed": args.seed, "shape": shape,
            "scenarios": scenarios, "rows": rows,
        })),
    }
}

/// Runs the simulation and prints it; returns the exit code (2 for a rule that does not load).
pub fn run(args: &SimulateArgs) -> i32 {
    if args.counts {
        return run_counts(args);
    }
    let paths: Vec<PathBuf> = if args.rules.is_empty() {
        match crate::rules::load::expand_paths(&["rules".to_string()]) {
            // Template files beside the rules are read by each rule that uses them.
            Ok(p) => p
                .into_iter()
                .filter(|p| !crate::rules::load::is_template_file(p))
                .collect(),
            Err(e) => {
                eprintln!("canaryd: {e}; name rule files with --rule");
                return 2;
            }
        }
    } else {
        args.rules.clone()
    };
    let mut contenders = Vec::new();
    for path in &paths {
        match load_one_rule(path) {
            Ok(rule) => contenders.push(Contender::new(rule.name().to_string(), &rule)),
            Err(e) => {
                eprintln!("canaryd: {e}");
                return 2;
            }
        }
    }
    if args.compare {
        contenders.extend(comparators());
    }
    let chosen: Vec<Scenario> = match args.scenarios {
        _ if !args.only.is_empty() => scenarios()
            .into_iter()
            .filter(|s| args.only.iter().any(|o| s.name.contains(o.as_str())))
            .collect(),
        ScenarioSet::All => scenarios(),
        ScenarioSet::Quick => scenarios()
            .into_iter()
            .filter(|s| s.name == "identical, fleet noise" || s.name == "errors x2")
            .collect(),
    };
    let traffic: Vec<Traffic> = args
        .traffic
        .iter()
        .map(|t| match t {
            TrafficArg::High => HIGH,
            TrafficArg::Low => LOW,
        })
        .collect();
    let rows = benchmark(
        &contenders,
        &chosen,
        &traffic,
        &args.hold,
        args.runs,
        args.seed,
    );
    let skipped: Vec<serde_json::Value> = contenders
        .iter()
        .filter(|c| !c.sim.skipped.is_empty())
        .map(|c| serde_json::json!({ "rule": c.name, "metrics": c.sim.skipped }))
        .collect();
    match args.format {
        Format::Text => {
            println!(
                "{} rollouts per line, seed {}; holds scaled to fill the hold, no promotion window; \
                 ticks are judged one-minute ticks past warmup",
                args.runs, args.seed
            );
            for c in contenders.iter().filter(|c| !c.sim.skipped.is_empty()) {
                println!(
                    "{}: not simulated (their queries name series the simulated fleet does not export): {}",
                    c.name,
                    c.sim.skipped.join(", ")
                );
            }
            println!();
            print!("{}", table::markdown(&rows));
            0
        }
        Format::Json => print_json(&serde_json::json!({
            "runs": args.runs,
            "seed": args.seed,
            "scenarios": chosen,
            "not_simulated": skipped,
            "rows": rows,
        })),
    }
}
