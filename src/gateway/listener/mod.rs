//! The gateway's front doors. Each adapts its transport to `conn::{Reader, Writer}` (the
//! protocol itself lives in `conn`, once):
//! - [`ws`]: WebSocket at `/ws` on the HTTP listener;
//! - [`front`]: the HTTP listener itself, served from the start: health, readiness,
//!   metrics, and the gate that keeps clients out while the gateway is not ready;
//! - [`http`]: the HTTP API (`/v1/...`), same listener; [`groups`]: its group routes;
//! - [`tcp`]: newline-delimited JSON on its own listener.

pub mod front;
pub mod groups;
pub mod http;
pub mod tcp;
pub mod ws;

pub use front::Front;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;

use crate::gateway::Gateway;

/// The whole HTTP API: [`http`]'s routes and [`groups`]'s, under one body limit. Bodies a
/// little over the frame limit still get a JSON `too_large`; far over, axum's 413.
fn api(gw: &Gateway) -> axum::Router<Arc<Gateway>> {
    http::routes()
        .merge(groups::routes())
        .layer(DefaultBodyLimit::max(
            gw.limits.max_frame_bytes.saturating_mul(2),
        ))
}
