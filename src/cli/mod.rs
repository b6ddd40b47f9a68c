//! Command-line interface: the daemon, the offline tools and the API client.

pub mod allocator;
pub mod analyze;
pub mod check;
pub mod client;
pub mod demo;
pub mod demo_service;
pub mod judge;
pub mod serve;
pub mod simulate;
pub mod watch;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "canaryd",
    version,
    about = "Progressive delivery with statistics: shift traffic in steps, judge the canary against the baseline in Prometheus, promote or roll back."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon.
    Serve(Box<serve::ServeArgs>),
    /// Validate rule files and folders; exit 0 when valid, 1 when not.
    Check(check::CheckArgs),
    /// Judge recorded samples offline with a rule; exit 0 pass, 1 fail, 2 bad input.
    Judge(judge::JudgeArgs),
    /// Replay a rule over a past time range against Prometheus.
    Analyze(analyze::AnalyzeArgs),
    /// Talk to a running daemon.
    Rollout(client::RolloutArgs),
    /// The showcase: a real Prometheus, a simulated service, one rollout promoted, one rolled back.
    Demo(demo::DemoArgs),
    /// Run the demo's simulated service (baseline and/or canary track) on its own.
    DemoService(demo_service::DemoServiceArgs),
    /// The decision benchmark: simulated rollouts judged by the sequential test, repeated
    /// Mann-Whitney and fixed thresholds.
    Simulate(simulate::SimulateArgs),
}
