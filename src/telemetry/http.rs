//! What the HTTP listeners of gateways and centers answer operators, the same on both:
//! `/healthz` (the process runs), `/readyz` (200, or 503 and why not: each process decides
//! its reasons) and `/metrics` (Prometheus text). Kept apart from either process so the
//! probes read alike wherever they are pointed.

use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::Exporter;

/// The reason given before NATS is connected.
pub(crate) const CONNECTING: &str = "connecting to NATS";
/// The reason given while the NATS connection is lost.
pub(crate) const NATS_DOWN: &str = "NATS is not connected";
/// The reason given once the process got SIGTERM/SIGINT.
pub(crate) const SHUTTING_DOWN: &str = "shutting down";

/// `GET /healthz`: 200 `ok` for as long as the process serves HTTP.
pub(crate) async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /readyz`: 200 `{"ready":true}` without a reason, else 503
/// `{"ready":false,"reason":...}`.
pub(crate) fn readyz(unready_because: Option<String>) -> Response {
    match unready_because {
        None => (StatusCode::OK, Json(serde_json::json!({"ready": true}))).into_response(),
        Some(reason) => {
            let body = serde_json::json!({"ready": false, "reason": reason});
            (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
        }
    }
}

/// Why a process with this NATS client is not ready as far as NATS goes, if it is not.
pub(crate) fn nats_unready(client: &async_nats::Client) -> Option<&'static str> {
    (client.connection_state() != async_nats::connection::State::Connected).then_some(NATS_DOWN)
}

/// `GET /metrics`: the Prometheus text of `exporter` (empty without a recorder).
pub(crate) fn metrics(exporter: Option<&Exporter>) -> Response {
    let text = exporter.map(Exporter::render).unwrap_or_default();
    ([(CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
