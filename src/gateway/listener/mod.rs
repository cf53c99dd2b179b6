//! The gateway's front doors. Each adapts its transport to `conn::{Reader, Writer}` (the
//! protocol itself lives in `conn`, once):
//! - [`ws`]: WebSocket at `/ws` on the HTTP listener;
//! - [`http`]: the HTTP API (`/v1/...`), health, readiness and metrics, same listener;
//!   [`groups`]: its group routes;
//! - [`tcp`]: newline-delimited JSON on its own listener.

pub mod groups;
pub mod http;
pub mod tcp;
pub mod ws;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;

use super::Gateway;

/// Serves the HTTP listener (WebSocket + API) until the gateway's shutdown token fires.
pub async fn serve_http(gw: Arc<Gateway>, listener: TcpListener) -> anyhow::Result<()> {
    let shutdown = gw.shutdown.clone();
    let app = ws::routes().merge(http::routes(&gw)).with_state(gw);
    // Without TCP_NODELAY every frame written while an earlier one is unacknowledged
    // waits for the client's delayed ACK (40 ms): docs/PERFORMANCE.md, "what limits".
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.cancelled_owned())
    .await?;
    Ok(())
}
