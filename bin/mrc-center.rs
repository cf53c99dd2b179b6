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
#[command(name = "mrc-center", version, about, after_help = telemetry::LOG_HELP)]
struct Cli {
    #[command(flatten)]
    config: config::Center,
}

fn main() -> ExitCode {
    if let Err(e) = telemetry::init("info") {
        return exit::bad_config("mrc-center", &e);
    }
    let mut config = match exit::parse::<Cli>() {
        Ok(cli) => cli.config,
        Err(code) => return code,
    };
    let id = match config.validate() {
        Ok(id) => id,
        Err(e) => return exit::bad_config("mrc-center", &e),
    };
    match config.runtime.build() {
        Ok(runtime) => exit::finished("mrc-center", runtime.block_on(run(config, id))),
        Err(e) => exit::finished("mrc-center", Err(e)),
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
