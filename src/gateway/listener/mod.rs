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
