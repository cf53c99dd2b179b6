//! The HTTP listener, served from the moment the gateway has bound it, before NATS is
//! connected: `/healthz`, `/readyz` and `/metrics` answer at once. Every other route (the
//! WebSocket door at `/ws`, the HTTP API under `/v1`) goes through one gate, which answers
//! 503 `unavailable` until the gateway is attached ([`Front::open`]), while NATS is not
//! connected and while its [`Readiness`] says not ready ([`closed_because`], which the TCP
//! door reads too). Clients already connected are not affected by the gate.

use std::future::IntoFuture as _;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use anyhow::Context as _;
use axum::extract::{Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use axum::Json;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use super::http::{error_response, lookup};
use super::ws;
use crate::gateway::readiness::Readiness;
use crate::gateway::Gateway;
use crate::protocol::code::ErrorCode;
use crate::telemetry;

/// The reason given before NATS is connected.
pub const CONNECTING: &str = "connecting to NATS";
/// The reason given while the NATS connection is lost.
pub const NATS_DOWN: &str = "NATS is not connected";

/// The HTTP listener being served.
pub struct Front {
    shared: Arc<Shared>,
    addr: SocketAddr,
    server: JoinHandle<std::io::Result<()>>,
}

/// What the handlers of the HTTP listener share.
struct Shared {
    readiness: Arc<Readiness>,
    /// Renders `/metrics`; `None` when no recorder is installed.
    metrics: Option<PrometheusHandle>,
    shutdown: CancellationToken,
    /// The gateway and its routes (WebSocket and API), once NATS is connected.
    gateway: OnceLock<(Arc<Gateway>, axum::Router)>,
}

impl Front {
    /// Starts serving `listener` until `shutdown`; the gateway is not ready yet.
    pub fn serve(
        listener: TcpListener,
        metrics: Option<PrometheusHandle>,
        shutdown: CancellationToken,
    ) -> std::io::Result<Front> {
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            readiness: Arc::new(Readiness::new()),
            metrics,
            shutdown: shutdown.clone(),
            gateway: OnceLock::new(),
        });
        let app = axum::Router::new()
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics_text))
            .fallback(gate)
            .with_state(shared.clone());
        // Without TCP_NODELAY every frame written while an earlier one is unacknowledged
        // waits for the client's delayed ACK (40 ms): docs/PERFORMANCE.md, "what limits".
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let server = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown.cancelled_owned());
        let server = tokio::spawn(server.into_future());
        Ok(Front {
            shared,
            addr,
            server,
        })
    }

    /// The address the listener is bound to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The readiness `/readyz` and the gate read.
    pub fn readiness(&self) -> Arc<Readiness> {
        self.shared.readiness.clone()
    }

    /// Attaches the gateway: its routes are served from now on, behind the gate.
    pub(crate) fn open(&self, gw: Arc<Gateway>) {
        let routes = ws::routes().merge(super::api(&gw)).with_state(gw.clone());
        if self.shared.gateway.set((gw, routes)).is_err() {
            tracing::warn!("the HTTP listener was opened twice; keeping the first gateway");
        }
    }

    /// Waits until the server has stopped (after the shutdown token fired).
    pub async fn closed(self) -> anyhow::Result<()> {
        self.server
            .await
            .context("the HTTP server task panicked")??;
        Ok(())
    }
}

/// Every route but the probes: 503 `unavailable` (the reason in the message) while the
/// gateway is not ready, else the gateway's routes.
async fn gate(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let Some((gw, routes)) = shared.gateway.get() else {
        return not_ready(CONNECTING);
    };
    if let Some(reason) = closed_because(gw) {
        return not_ready(&reason);
    }
    match routes.clone().oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// Why the doors take no new clients now, if they do not: NATS is not connected, or no
/// center has answered yet. Cheap: read on every accept and every request.
pub(crate) fn closed_because(gw: &Gateway) -> Option<String> {
    if gw.client.connection_state() != async_nats::connection::State::Connected {
        return Some(NATS_DOWN.to_string());
    }
    gw.readiness.doors_closed_because().map(str::to_string)
}

/// The answer of a door while the gateway is not ready.
fn not_ready(reason: &str) -> Response {
    error_response(ErrorCode::Unavailable, &format!("not ready: {reason}"))
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// 200 `{"ready":true}`, or 503 `{"ready":false,"reason":...}`.
async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    match unready_reason(&shared).await {
        None => (StatusCode::OK, Json(serde_json::json!({"ready": true}))).into_response(),
        Some(reason) => {
            let body = serde_json::json!({"ready": false, "reason": reason});
            (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
        }
    }
}

/// Why the gateway is not ready, checked in this order: stopping, NATS, the readiness
/// (start-up purge, directory writes), then a look-up a center must answer now (only
/// here: the doors do not send a request per client).
async fn unready_reason(shared: &Shared) -> Option<String> {
    if shared.shutdown.is_cancelled() {
        return Some("shutting down".to_string());
    }
    let Some((gw, _)) = shared.gateway.get() else {
        return Some(CONNECTING.to_string());
    };
    if let Some(reason) = closed_because(gw).or_else(|| gw.readiness.reason()) {
        return Some(reason);
    }
    lookup(gw, Vec::new())
        .await
        .err()
        .map(|e| format!("no center answers look-ups: {e}"))
}

async fn metrics_text(State(shared): State<Arc<Shared>>) -> Response {
    if let Some((gw, _)) = shared.gateway.get() {
        metrics::gauge!(telemetry::GATEWAY_SESSIONS).set(gw.sessions.len() as f64);
    }
    let text = shared
        .metrics
        .as_ref()
        .map(|m| m.render())
        .unwrap_or_default();
    ([(CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
