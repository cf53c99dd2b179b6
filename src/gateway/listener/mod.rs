//! The gateway's front doors. Each adapts its transport to `conn::{Reader, Writer}` (the
//! protocol itself lives in `conn`, once) or, for HTTP, its requests to `ops`:
//! - [`ws`]: WebSocket at `/ws` on the HTTP listener;
//! - [`front`]: the HTTP listener itself, served from the start: health, readiness,
//!   metrics, and the gate that keeps clients out while the gateway is not ready;
//! - [`http`]: the HTTP API (`/v1/...`), same listener; [`http_groups`]: its group routes;
//! - [`tcp`]: newline-delimited JSON on its own listener;
//! - [`demo`]: the demo page at `/` with `--demo`, static, on the HTTP listener.

pub(crate) mod demo;
pub(crate) mod front;
pub(crate) mod http;
pub(crate) mod http_groups;
pub(crate) mod origin;
mod serve;
pub(crate) mod shared_tcp;
pub(crate) mod tcp;
pub(crate) mod tls;
pub(crate) mod ws;

pub(crate) use front::Front;

/// The refusal of a connection beyond `--max-pending-logins`.
pub(crate) const TOO_MANY_PENDING: &str = "too many connections waiting to log in";

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use tokio::sync::Semaphore;

use crate::gateway::conn;

/// What the doors share: the client connections' context, the cap on open connections,
/// and the gate that says whether they take clients.
pub(crate) struct Doors {
    pub(crate) conn: Arc<conn::Context>,
    /// One permit per open client connection (`--max-connections`).
    pub(crate) connections: Arc<Semaphore>,
    /// One permit per connection that has not logged in yet (`--max-pending-logins`).
    pub(crate) logging_in: Arc<Semaphore>,
    pub(crate) gate: front::Gate,
    /// Pages of which origins may open `/ws` (`--allowed-origins`).
    pub(crate) origins: origin::Origins,
    /// CORS of the HTTP API (`--cors-origins`; `None`: no CORS headers).
    pub(crate) cors: Option<tower_http::cors::CorsLayer>,
}

/// The routes behind the gate: the WebSocket door and the whole HTTP API ([`http`]'s
/// routes and [`http_groups`]'s) under one body limit. Bodies a little over the frame limit
/// still get a JSON `too_large`; far over, axum's 413.
fn routes(doors: &Arc<Doors>) -> axum::Router {
    let cx = &doors.conn;
    let api = Arc::new(http::Api {
        ops: cx.ops.clone(),
        auth: cx.auth.clone(),
    });
    let body_limit = cx.ops.limits.max_frame_bytes.saturating_mul(2);
    let mut api = http::routes()
        .merge(http_groups::routes())
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(api);
    if let Some(cors) = &doors.cors {
        api = api.layer(cors.clone());
    }
    ws::routes().with_state(doors.clone()).merge(api)
}
