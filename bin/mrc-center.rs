//! `mrc-center`: one directory center. Flags → config → telemetry → `center::run`.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use mrc::{center, config, connection, exit, shutdown, telemetry};

/// Many threads allocating small, short-lived objects: glibc malloc was ~23% of the
/// gateway's CPU under load (docs/PERFORMANCE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    match config.validate() {
        Ok(id) => exit::finished("mrc-center", run(config, id).await),
        Err(e) => exit::bad_config("mrc-center", &e),
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
