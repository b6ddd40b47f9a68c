//! `canaryd simulate`: the decision benchmark. Seeded simulated rollouts, the same data judged
//! by the sequential test, repeated Mann-Whitney and fixed thresholds; prints how often each
//! rolls back identical canaries and how fast it catches regressed ones.

use clap::Args;

use super::judge::Format;
use crate::simulate::{Shape, benchmark, policy::policies, report::table, scenarios};

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Simulated rollouts per scenario.
    #[arg(long, default_value_t = 1000)]
    pub runs: u64,
    /// Seed of the random streams; the same seed gives the same numbers.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Ticks per step (steps are 5, 25, 50 and 100 %).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub ticks_per_step: u64,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// Runs the benchmark and prints it; returns the exit code.
pub fn run(args: &SimulateArgs) -> i32 {
    let shape = Shape {
        ticks_per_step: args.ticks_per_step as usize,
        ..Shape::default()
    };
    let scenarios = scenarios();
    let rows = benchmark(&shape, &scenarios, &policies(), args.runs, args.seed);
    match args.format {
        Format::Text => {
            println!(
                "{} runs per scenario, seed {}, steps {:?} with {} ticks each\n",
                args.runs, args.seed, shape.weights, shape.ticks_per_step
            );
            print!("{}", table(&rows));
        }
        Format::Json => {
            let doc = serde_json::json!({
                "runs": args.runs,
                "seed": args.seed,
                "shape": shape,
                "scenarios": scenarios,
                "rows": rows,
            });
            match serde_json::to_string_pretty(&doc) {
                Ok(s) => println!("{s}"),
                Err(e) => {
                    eprintln!("canaryd: cannot encode the report: {e}");
                    return 1;
                }
            }
        }
    }
    0
}
