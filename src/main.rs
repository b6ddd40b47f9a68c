//! The `canaryd` binary: parses the command line and hands over to `canaryd::cli`.

use clap::Parser;

use canaryd::cli::{self, Cli, Command};

fn main() {
    // Before the runtime starts its threads: glibc's arena limit applies to threads made later.
    cli::allocator::tune();
    let cli = Cli::parse();
    let code = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(run(cli)),
        Err(e) => {
            eprintln!("canaryd: cannot start the async runtime: {e}");
            1
        }
    };
    std::process::exit(code);
}

async fn run(cli: Cli) -> i32 {
    match cli.command {
        Command::Check(args) => cli::check::run(&args),
        Command::Judge(args) => cli::judge::run(&args),
        Command::Analyze(args) => report(cli::analyze::run(args).await),
        Command::Serve(args) => report(cli::serve::run(*args).await.map(|()| 0)),
        Command::Rollout(args) => report(cli::client::run(args).await),
        Command::Demo(args) => report(cli::demo::run(args).await),
        Command::DemoService(args) => report(cli::demo_service::run(args).await),
        Command::Simulate(args) => cli::simulate::run(&args),
    }
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
