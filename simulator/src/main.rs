//! `telemetry-simulator`: see `telemetry-simulator --help`.

use std::process::ExitCode;

use clap::Parser;
use simulator::cli::{self, Cli};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,rumqttd=off"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

    let stop = CancellationToken::new();
    cli::cancel_on_signal(stop.clone());
    match cli::run(cli, stop).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
