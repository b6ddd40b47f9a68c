//! `canaryd demo-service`: the simulated service of the demo as a standalone process, for
//! docker-compose.yml (one container per track) or for trying rule files by hand.

use std::net::SocketAddr;

use anyhow::Context;
use clap::{Args, ValueEnum};

use crate::demo::service::{DemoService, Track};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TrackArg {
    Baseline,
    Canary,
    Both,
}

#[derive(Debug, Args)]
pub struct DemoServiceArgs {
    /// Address to serve `/metrics`, `/{track}/health/ready` and `PUT /control/{track}` on.
    #[arg(long, env = "CANARYD_DEMO_LISTEN", default_value = "127.0.0.1:8000")]
    pub listen: SocketAddr,
    /// The `service` label of every series.
    #[arg(long, env = "CANARYD_DEMO_SERVICE", default_value = "demo-api")]
    pub service: String,
    /// Which track's series `/metrics` exports.
    #[arg(long, env = "CANARYD_DEMO_TRACK", value_enum, default_value = "both")]
    pub track: TrackArg,
    /// Seed of the noise and of the drawn counts (`counts: true` in a profile); random if unset.
    #[arg(long, env = "CANARYD_DEMO_SEED")]
    pub seed: Option<u64>,
}

pub async fn run(args: DemoServiceArgs) -> anyhow::Result<i32> {
    crate::telemetry::init_logging(crate::telemetry::LogFormat::Text);
    let seed = args.seed.unwrap_or_else(rand::random);
    let service = DemoService::start_with_seed(&args.service, args.listen, seed)
        .await
        .context("starting the demo service")?;
    match args.track {
        TrackArg::Baseline => service.export_only(Track::Baseline),
        TrackArg::Canary => service.export_only(Track::Canary),
        TrackArg::Both => {}
    }
    tracing::info!(listen = %service.addr(), service = %args.service, track = ?args.track, seed, "demo service running; degrade a track with PUT /control/{{track}}");
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    service.shutdown().await;
    Ok(0)
}
