//! The center's HTTP listener for operators (`--http-listen`, off unless set): `/healthz`,
//! `/readyz` and `/metrics`, answered like a gateway's (`telemetry::http`). Served from the
//! moment it is bound, before NATS is connected, so a probe tells a center that is
//! starting (503 and why) from one that is gone (no answer).
//!
//! It only reads: the center tells it when NATS is connected ([`Http::connected`]) and when
//! its service answers from loaded mirrors ([`Http::serving`]); nothing here touches the
//! directory or the service.

use std::future::IntoFuture as _;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context as _;
use async_nats::Client;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::directory::mirror::Mirror as DirectoryMirror;
use crate::groups::mirror::Mirror as GroupsMirror;
use crate::telemetry::http::{self as probe, CONNECTING, SHUTTING_DOWN};
use crate::telemetry::{self, Exporter};

/// The reason given while the buckets are opened and the mirrors loaded.
pub(crate) const LOADING: &str = "loading the directory and groups";

/// The HTTP listener being served.
pub struct Http {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: JoinHandle<std::io::Result<()>>,
}

/// What the handlers share.
struct Shared {
    /// Renders `/metrics`; `None` when no recorder is installed.
    exporter: Option<Exporter>,
    /// How long `/readyz` waits for the service's own ping.
    timeout: Duration,
    shutdown: CancellationToken,
    /// Set once NATS is connected.
    client: OnceLock<Client>,
    /// Set once the service answers from loaded mirrors.
    serving: OnceLock<Serving>,
}

/// A center whose service answers, as the probes see it.
pub(crate) struct Serving {
    pub(crate) directory: Arc<DirectoryMirror>,
    pub(crate) groups: Arc<GroupsMirror>,
    /// `$SRV.PING.mrc-center.<id>` of this very instance: `/readyz` asks it, so a service
    /// whose framework stopped answering is not ready, whatever the other centers do.
    pub(crate) ping: String,
}

impl Http {
    /// Starts serving `listener` until `shutdown`; not ready until NATS is connected and the
    /// service answers. `timeout` bounds the self-ping of `/readyz`.
    pub fn serve(
        listener: TcpListener,
        exporter: Option<Exporter>,
        timeout: Duration,
        shutdown: CancellationToken,
    ) -> std::io::Result<Http> {
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            exporter,
            timeout,
            shutdown: shutdown.clone(),
            client: OnceLock::new(),
            serving: OnceLock::new(),
        });
        let app = axum::Router::new()
            .route("/healthz", get(probe::healthz))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics_text))
            .with_state(shared.clone());
        let server = axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned());
        let server = tokio::spawn(server.into_future());
        Ok(Http {
            addr,
            shared,
            server,
        })
    }

    /// The address the listener is bound to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// NATS is connected: `/readyz` follows this client's connection from now on.
    pub fn connected(&self, client: Client) {
        let _ = self.shared.client.set(client);
    }

    /// The service answers from loaded mirrors: ready while NATS stays connected.
    pub(crate) fn serving(&self, serving: Serving) {
        if self.shared.serving.set(serving).is_err() {
            tracing::warn!("the center's HTTP listener was told twice that it serves");
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

/// 200 `{"ready":true}`, or 503 `{"ready":false,"reason":...}`.
async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    probe::readyz(unready_reason(&shared).await)
}

/// Why the center is not ready, checked in this order: stopping, NATS, loading, then its
/// own service's ping.
async fn unready_reason(shared: &Shared) -> Option<String> {
    if shared.shutdown.is_cancelled() {
        return Some(SHUTTING_DOWN.to_string());
    }
    let Some(client) = shared.client.get() else {
        return Some(CONNECTING.to_string());
    };
    if let Some(reason) = probe::nats_unready(client) {
        return Some(reason.to_string());
    }
    let Some(serving) = shared.serving.get() else {
        return Some(LOADING.to_string());
    };
    // Directly, not through `connection::request`: that one counts gateway metrics.
    let ping = client.request(serving.ping.clone(), bytes::Bytes::new());
    match tokio::time::timeout(shared.timeout, ping).await {
        Ok(Ok(_)) => None,
        Ok(Err(e)) => Some(format!("the service does not answer its ping: {e}")),
        Err(_) => Some("the service does not answer its ping: timed out".to_string()),
    }
}

/// The mirrors' sizes as gauges, then the Prometheus text.
async fn metrics_text(State(shared): State<Arc<Shared>>) -> Response {
    if let Some(serving) = shared.serving.get() {
        let (users, gateways) = serving.directory.counts();
        metrics::gauge!(telemetry::CENTER_USERS).set(users as f64);
        metrics::gauge!(telemetry::CENTER_GATEWAYS).set(gateways as f64);
        metrics::gauge!(telemetry::CENTER_GROUPS).set(serving.groups.count() as f64);
        let revision = serving.directory.applied() as f64;
        metrics::gauge!(telemetry::CENTER_DIRECTORY_REVISION).set(revision);
    }
    probe::metrics(shared.exporter.as_ref())
}
