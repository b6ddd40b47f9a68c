//! The `canaryd` binary: parses the command line and hands over to `canaryd::cli`.

use clap::Parser;

use canaryd::cli::{self, Cli, Command};

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Check(args) => cli::check::run(&args),
        Command::Judge(args) => cli::judge::run(&args),
        Command::Analyze(args) => report(cli::analyze::run(args).await),
        Command::Serve(args) => report(cli::serve::run(*args).await.map(|()| 0)),
        Command::Rollout(args) => report(cli::client::run(args).await),
        Command::Demo(args) => report(cli::demo::run(args).await),
        Command::DemoService(args) => report(cli::demo_service::run(args).await),
        Command::Simulate(args) => cli::simulate::run(&args),
    };
    std::process::exit(code);
}

fn report(result: anyhow::Result<i32>) -> i32 {
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("canaryd: {e:#}");
            1
        }
    }
}
