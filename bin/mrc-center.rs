//! `mrc-center`: one directory center. Flags → config → telemetry → `center::run`.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use mrc::{center, config, connection, shutdown, telemetry};

/// Directory center of an MRC cluster (run several; they share the work).
#[derive(Parser)]
#[command(name = "mrc-center", version, about)]
struct Cli {
    #[command(flatten)]
    config: config::Center,
}

#[tokio::main]
async fn main() -> ExitCode {
    telemetry::init();
    let mut config = Cli::parse().config;
    let id = match config.validate() {
        Ok(id) => id,
        Err(e) => {
            eprintln!("mrc-center: bad configuration: {e:#}");
            return ExitCode::from(config::EXIT_CONFIG as u8);
        }
    };
    match run(config, id).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "mrc-center failed");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: config::Center, id: mrc::ident::CenterId) -> anyhow::Result<()> {
    let shutdown = shutdown::on_signal().context("installing signal handlers")?;
    let connection = connection::connect(&config.nats, &format!("mrc-center {id}")).await?;
    let client = connection.client.clone();
    center::run(config, id, client.clone(), shutdown).await?;
    connection::drain(&client).await;
    Ok(())
}
