//! `mrc-center`: one directory center. Flags → config → telemetry → (HTTP listener) →
//! `center::run`.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use mrc::center::{self, Http};
use mrc::{config, connection, exit, shutdown, telemetry};
use tokio::net::TcpListener;

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
    let mut config = match exit::parse::<Cli>(config::Process::Center) {
        Ok(cli) => cli.config,
        Err(code) => return code,
    };
    let id = match config.validate() {
        Ok(id) => id,
        Err(e) => return exit::bad_config("mrc-center", &e),
    };
    if let Err(e) = config.runtime.apply_log(false) {
        return exit::bad_config("mrc-center", &e);
    }
    match config.runtime.build() {
        Ok(runtime) => exit::finished("mrc-center", runtime.block_on(run(config, id))),
        Err(e) => exit::finished("mrc-center", Err(e)),
    }
}

async fn run(config: config::Center, id: mrc::ident::CenterId) -> anyhow::Result<()> {
    let shutdown = shutdown::on_signal().context("installing signal handlers")?;
    // SIGHUP never kills a center; it applies the log filter again.
    let hangups = shutdown::hangups().context("installing signal handlers")?;
    tokio::spawn(hangups.serve(shutdown.clone(), || {
        let reread = config::file::reread::<config::Center>(config::Process::Center);
        match reread.and_then(|mut config| {
            config.validate()?;
            config.runtime.apply_log(true)
        }) {
            Ok(()) => tracing::info!("SIGHUP: log filter reloaded"),
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "SIGHUP: nothing reloaded"),
        }
    }));
    // `/healthz` and `/readyz` answer from here on, while NATS is still being connected.
    let http = match config.observe.http_listen {
        Some(addr) => Some(serve_http(addr, &config, &id, shutdown.clone()).await?),
        None => None,
    };
    let name = format!("mrc-center {id}");
    let connection = tokio::select! {
        connection = connection::connect(&config.nats, &name) => connection?,
        () = shutdown.cancelled() => return Ok(()),
    };
    let client = connection.client.clone();
    let nats = config.nats.clone();
    if let Some(http) = &http {
        http.connected(client.client().clone());
    }
    center::run(config, id, client.clone(), http.as_ref(), shutdown).await?;
    connection::drain(&client, &nats).await;
    if let Some(http) = http {
        http.closed().await?;
    }
    Ok(())
}

/// Binds and serves the operators' listener, with the metrics recorder (installed only
/// here: without a listener nobody could read it), and prints `mrc-center listening`.
async fn serve_http(
    addr: std::net::SocketAddr,
    config: &config::Center,
    id: &mrc::ident::CenterId,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<Http> {
    let metrics =
        telemetry::install_metrics("mrc-center").context("installing the metrics recorder")?;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the HTTP listener to {addr}"))?;
    let timeout = config.nats.request_timeout();
    let http = Http::serve(listener, Some(metrics), timeout, shutdown)
        .context("serving the HTTP listener")?;
    let line = format!("mrc-center listening: id={id} http=http://{}", http.addr());
    tracing::info!(center = %id, "{line}");
    println!("{line}");
    Ok(http)
}
