//! The HTTP listener, served from the moment the gateway has bound it, before NATS is
//! connected: `/healthz`, `/readyz` and `/metrics` answer at once. Every other route (the
//! WebSocket door at `/ws`, the HTTP API under `/v1`) goes through one gate, which answers
//! 503 `unavailable` until the gateway is attached ([`Front::open`]), while NATS is not
//! connected and while its [`Readiness`] says not ready ([`Gate`], which the TCP door
//! reads too). Clients already connected are not affected by the gate. With `--demo` it
//! also serves the demo page ([`super::demo`]), static files that need no gate.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use anyhow::Context as _;
use axum::extract::{Request, State};
use axum::response::Response;
use axum::routing::get;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::rustls::ServerConfig;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use super::http::error_response;
use super::serve;
use super::tls::TlsListener;
use super::Doors;
use crate::gateway::readiness::Readiness;
use crate::protocol::code::ErrorCode;
use crate::protocol::nats::{encode, LookupReply, LookupRequest};
use crate::subject::DIR_LOOKUP;
use crate::telemetry::http::{self as probe, CONNECTING};
use crate::telemetry::{self, Exporter};

/// The HTTP listener being served.
pub(crate) struct Front {
    shared: Arc<Shared>,
    addr: SocketAddr,
    /// Serving HTTPS / WSS.
    pub(crate) tls: bool,
    /// Whether the demo page is served at `/` (`--demo`).
    demo: bool,
    server: JoinHandle<std::io::Result<()>>,
}

/// What the handlers of the HTTP listener share.
struct Shared {
    readiness: Arc<Readiness>,
    /// Renders `/metrics`; `None` when no recorder is installed.
    metrics: Option<Exporter>,
    shutdown: CancellationToken,
    /// The gateway's doors and their routes (WebSocket and API), once NATS is connected.
    gateway: OnceLock<(Arc<Doors>, axum::Router)>,
}

impl Front {
    /// Starts serving `listener` (over TLS with `tls`) until `shutdown`, with the demo
    /// page when `demo`; the gateway is not ready yet.
    pub(crate) fn serve(
        listener: TcpListener,
        tls: Option<Arc<ServerConfig>>,
        metrics: Option<Exporter>,
        demo: bool,
        header_read_timeout: std::time::Duration,
        shutdown: CancellationToken,
    ) -> std::io::Result<Front> {
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            readiness: Arc::new(Readiness::new()),
            metrics,
            shutdown: shutdown.clone(),
            gateway: OnceLock::new(),
        });
        let mut app = axum::Router::new()
            .route("/healthz", get(probe::healthz))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics_text));
        if demo {
            app = app.merge(super::demo::routes());
        }
        let app = app.fallback(gate).with_state(shared.clone());
        let server = match tls.clone() {
            // Without TCP_NODELAY every frame written while an earlier one is
            // unacknowledged waits for the client's delayed ACK (40 ms): PERFORMANCE.md.
            None => serve::spawn(
                listener.tap_io(|tcp| {
                    let _ = tcp.set_nodelay(true);
                }),
                app,
                header_read_timeout,
                shutdown,
            ),
            Some(config) => serve::spawn(
                TlsListener::new(listener, config)?,
                app,
                header_read_timeout,
                shutdown,
            ),
        };
        Ok(Front {
            shared,
            addr,
            tls: tls.is_some(),
            demo,
            server,
        })
    }

    /// The address the listener is bound to.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether the demo page is served.
    pub(crate) fn demo(&self) -> bool {
        self.demo
    }

    /// The readiness `/readyz` and the gate read.
    pub(crate) fn readiness(&self) -> Arc<Readiness> {
        self.shared.readiness.clone()
    }

    /// Attaches the gateway: its routes are served from now on, behind the gate.
    pub(crate) fn open(&self, doors: Arc<Doors>) {
        let routes = super::routes(&doors);
        if self.shared.gateway.set((doors, routes)).is_err() {
            tracing::warn!("the HTTP listener was opened twice; keeping the first gateway");
        }
    }

    /// Waits until the server has stopped (after the shutdown token fired).
    pub(crate) async fn closed(self) -> anyhow::Result<()> {
        self.server
            .await
            .context("the HTTP server task panicked")??;
        Ok(())
    }
}

/// Every route but the probes: 503 `unavailable` (the reason in the message) while the
/// gateway is not ready, else the gateway's routes.
async fn gate(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let Some((doors, routes)) = shared.gateway.get() else {
        return not_ready(CONNECTING);
    };
    if let Some(reason) = doors.gate.closed_because() {
        return not_ready(&reason);
    }
    match routes.clone().oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// Whether the doors take new clients.
pub(crate) struct Gate {
    pub(crate) client: async_nats::Client,
    /// The deliver connection: without it this gateway neither sends nor receives.
    pub(crate) wire: crate::wire::Wire,
    pub(crate) readiness: Arc<Readiness>,
}

impl Gate {
    /// Why the doors take no new clients now, if they do not: NATS is not connected (either
    /// connection), or no center has answered yet. Cheap: read on every accept and every request.
    pub(crate) fn closed_because(&self) -> Option<String> {
        if let Some(reason) = probe::nats_unready(&self.client) {
            return Some(reason.to_string());
        }
        if !self.wire.connected() {
            return Some(crate::telemetry::http::NATS_DOWN.to_string());
        }
        self.readiness.doors_closed_because().map(str::to_string)
    }
}

/// The answer of a door while the gateway is not ready.
fn not_ready(reason: &str) -> Response {
    error_response(ErrorCode::Unavailable, &format!("not ready: {reason}"))
}

/// 200 `{"ready":true}`, or 503 `{"ready":false,"reason":...}`.
async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    probe::readyz(unready_reason(&shared).await)
}

/// Why the gateway is not ready, checked in this order: stopping, NATS, the readiness
/// (start-up purge, directory writes), then a look-up a center must answer now (only
/// here: the doors do not send a request per client).
async fn unready_reason(shared: &Shared) -> Option<String> {
    if shared.shutdown.is_cancelled() {
        return Some(probe::SHUTTING_DOWN.to_string());
    }
    let Some((doors, _)) = shared.gateway.get() else {
        return Some(CONNECTING.to_string());
    };
    let gate = &doors.gate;
    if let Some(reason) = gate.closed_because().or_else(|| gate.readiness.reason()) {
        return Some(reason);
    }
    let centers = &doors.conn.ops.centers;
    let (subject, lookup) = (
        centers.subjects.dir(DIR_LOOKUP),
        LookupRequest { users: vec![] },
    );
    let timeout = centers.timeout;
    let reply = centers.ask_once::<LookupReply>("directory", subject, encode(&lookup), timeout);
    reply
        .await
        .err()
        .map(|e| format!("no center answers look-ups: {}", e.message))
}

async fn metrics_text(State(shared): State<Arc<Shared>>) -> Response {
    if let Some((doors, _)) = shared.gateway.get() {
        metrics::gauge!(telemetry::GATEWAY_SESSIONS).set(doors.conn.sessions.len() as f64);
    }
    probe::metrics(shared.metrics.as_ref())
}
