//! `mrc-gateway`: one gateway. Flags → config → bind → telemetry → `gateway::run`.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use mrc::gateway::{self, Listeners};
use mrc::{config, connection, exit, shutdown, telemetry};
use tokio::net::TcpListener;

/// Many threads allocating small, short-lived objects: glibc malloc was ~23% of the
/// gateway's CPU under load (docs/PERFORMANCE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Gateway of an MRC cluster: holds client connections and routes their messages.
#[derive(Parser)]
#[command(name = "mrc-gateway", version, about, after_help = telemetry::LOG_HELP)]
struct Cli {
    #[command(flatten)]
    config: config::Gateway,
}

fn main() -> ExitCode {
    if let Err(e) = telemetry::init("info") {
        return exit::bad_config("mrc-gateway", &e);
    }
    let mut config = match exit::parse::<Cli>(config::Process::Gateway) {
        Ok(cli) => cli.config,
        Err(code) => return code,
    };
    let id = match config.validate() {
        Ok(id) => id,
        Err(e) => return exit::bad_config("mrc-gateway", &e),
    };
    if let Err(e) = config.runtime.apply_log(false) {
        return exit::bad_config("mrc-gateway", &e);
    }
    match config.runtime.build() {
        Ok(runtime) => exit::finished("mrc-gateway", runtime.block_on(run(config, id))),
        Err(e) => exit::finished("mrc-gateway", Err(e)),
    }
}

async fn run(config: config::Gateway, id: mrc::ident::GatewayId) -> anyhow::Result<()> {
    let shutdown = shutdown::on_signal().context("installing signal handlers")?;
    let hangups = shutdown::hangups().context("installing signal handlers")?;
    let metrics =
        telemetry::install_metrics("mrc-gateway").context("installing the metrics recorder")?;
    let http = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding the HTTP/WebSocket listener to {}", config.listen))?;
    let tcp = match config.tcp_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the TCP listener to {addr}"))?,
        ),
        None => None,
    };
    // `/healthz` and `/readyz` answer from here on, while NATS is still being connected.
    let listeners = Listeners::serve(&id, http, tcp, &config, Some(metrics), shutdown.clone())?;
    let name = format!("mrc-gateway {id}");
    let connecting = connection::connect(&config.nats, &name);
    let connection = tokio::select! {
        connection = connecting => connection?,
        () = shutdown.cancelled() => return Ok(()),
    };
    let client = connection.client.clone();
    let nats = config.nats.clone();
    gateway::run(config, id, connection, listeners, shutdown, hangups).await?;
    connection::drain(&client, &nats).await;
    Ok(())
}
