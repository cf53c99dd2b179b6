//! The gateway: holds client sessions and routes their messages.
//!
//! - [`listener`] holds the doors (WebSocket, TCP, HTTP); [`conn`] runs one client
//!   connection (login, frames, limits) over any transport; [`ingress`] is the NATS door.
//! - [`ops`]: what callers ask for (send, group send, broadcast, group management,
//!   presence), checked and carried out the same for every door; [`limits`] they enforce.
//! - [`session`]: live sessions and their bounded outbound queues; [`sweep`]: the sweeps
//!   that ping quiet clients, close silent ones, and close all in a stop's drain window.
//! - [`registrar`]: register/unregister/purge requests to the centers.
//! - [`resolve`]: cached, batched directory look-ups; [`route`]: one deliver request per
//!   destination gateway, retry of stale routes, the report; [`deliver`]: the receiving end.
//! - [`heartbeat`]: liveness towards the centers (with the digest of the sessions held);
//!   [`reconcile`]: repairs the directory's view of this gateway when it drifted.
//! - [`readiness`]: whether the gateway may take clients, and why not.

pub(crate) mod auth;
pub(crate) mod broadcast;
pub(crate) mod conn;
pub(crate) mod deliver;
pub(crate) mod destinations;
pub(crate) mod heartbeat;
pub(crate) mod ingress;
pub(crate) mod kick;
pub(crate) mod limits;
pub(crate) mod listener;
pub(crate) mod ops;
pub(crate) mod presence;
pub mod readiness;
pub(crate) mod recent;
pub mod reconcile;
pub mod registrar;
pub(crate) mod resolve;
pub(crate) mod route;
pub(crate) mod session;
pub(crate) mod sweep;
mod wiring;

use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config;
use crate::connection::{Connection, RequestFailure};
use crate::exit::BadConfig;
use crate::ident::GatewayId;
use crate::telemetry::Exporter;

/// The listeners a gateway serves, bound before it connects anywhere.
pub struct Listeners {
    /// WebSocket + HTTP API, already answering `/healthz` and `/readyz`.
    pub(crate) http: listener::Front,
    /// Newline-delimited JSON, when configured.
    pub(crate) tcp: Option<TcpListener>,
}

impl Listeners {
    /// Starts serving `http` at once (probes and, with `--demo`, the demo page answer;
    /// doors say not ready) and prints the `mrc-gateway listening` line naming every
    /// address. A certificate or key that cannot be loaded is a bad configuration (exit 64).
    pub fn serve(
        id: &GatewayId,
        http: TcpListener,
        tcp: Option<TcpListener>,
        config: &config::Gateway,
        metrics: Option<Exporter>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Listeners> {
        let web = &config.web;
        let tls = match (&web.tls_cert, &web.tls_key) {
            (Some(cert), Some(key)) => {
                Some(listener::tls::server_config(cert, key).map_err(BadConfig)?)
            }
            _ => None,
        };
        let header_read = Duration::from_millis(config.limits.header_read_timeout_ms);
        let http = listener::Front::serve(http, tls, metrics, config.demo, header_read, shutdown)?;
        let listeners = Listeners { http, tcp };
        let line = format!("mrc-gateway listening: {}", listeners.describe(id)?);
        tracing::info!(gateway = %id, "{line}");
        println!("{line}");
        Ok(listeners)
    }

    /// `id=... http=http://... ws=ws://.../ws [tcp=...] [demo=http://.../]`
    fn describe(&self, id: &GatewayId) -> std::io::Result<String> {
        let http = self.http.addr();
        let (h, w) = if self.http.tls {
            ("https", "wss")
        } else {
            ("http", "ws")
        };
        let mut text = format!("id={id} http={h}://{http} ws={w}://{http}/ws");
        if let Some(tcp) = &self.tcp {
            text.push_str(&format!(" tcp={}", tcp.local_addr()?));
        }
        if self.http.demo() {
            text.push_str(&format!(" demo={h}://{http}/"));
        }
        Ok(text)
    }
}

/// Heartbeats a reconciliation call waits after a pass that found nothing to repair.
const QUIET_BEATS: u32 = 5;

/// Runs one gateway until `shutdown`, then stops gracefully: stop accepting, tell every
/// client `bye`, remove all its sessions from the directory. Its doors refuse clients
/// until a center has answered the purge of an earlier run (see [`readiness`]).
pub async fn run(
    config: config::Gateway,
    id: GatewayId,
    connection: Connection,
    listeners: Listeners,
    shutdown: CancellationToken,
    hangups: crate::shutdown::Hangups,
) -> anyhow::Result<()> {
    let subjects = config.nats.subjects()?;
    let client = connection.client.clone();
    let max_payload = client.server_info().max_payload;
    if config.max_deliver_payload() > max_payload {
        let e = anyhow!(
            "limits allow deliver requests of {} bytes but NATS max_payload is {max_payload}: lower --max-body-bytes, --max-receivers or --max-id-bytes",
            config.max_deliver_payload()
        );
        return Err(BadConfig(e).into());
    }
    let timeout = config.nats.request_timeout();
    let background = TaskTracker::new();
    let dedupe_window = Duration::from_secs(config.dedupe_window_s);
    let sessions = Arc::new(session::Sessions::new(dedupe_window));
    let resolver = Arc::new(resolve::Resolver::new(
        client.clone(),
        &subjects,
        config.cache_capacity,
        Duration::from_millis(config.cache_ttl_ms),
        timeout,
    ));
    // The frames its deliver requests push go into idle sessions' sockets after each
    // poll's NATS writes, from the connection's task (`session::write_through`).
    let wire = crate::wire::Wire::connect_around(
        &config.nats,
        &format!("mrc-gateway {id} deliveries"),
        |poll| session::write_through(poll),
    )
    .await?;
    let base = wiring::Base {
        id: id.clone(),
        client: client.clone(),
        subjects: subjects.clone(),
        sessions: sessions.clone(),
        background: background.clone(),
        replies: crate::replies::Replies::start(wire.clone(), subjects.replies(&id))?,
        pool: crate::pooled::Pool::new(wire.clone(), config.reply_window()),
        wire: wire.clone(),
    };
    let ops = wiring::ops(&base, &config, resolver.clone(), shutdown.clone()).await?;
    let readiness = listeners.http.readiness();
    let registrar = Arc::new(registrar::Registrar::new(
        client.clone(),
        subjects.clone(),
        id.clone(),
        timeout,
        readiness.clone(),
        shutdown.clone(),
    ));
    let (cx, doors) = wiring::doors(&base, &config, &ops, &registrar, &readiness, &shutdown)?;
    let draining = sweep::drain(sessions.clone(), cx.drain_window, shutdown.clone());
    background.spawn(log_failure("drain", draining));
    listeners.http.open(doors.clone());

    // What serves the sessions lives on through a stop's drain window, until the last
    // session closed (`stopped`); what takes new work (listeners, ingress) ends at once.
    let stopped = CancellationToken::new();
    wiring::serve_own_subjects(&base, &ops, timeout, &stopped).await?;
    let reconnects = connection.reconnects.clone();
    wiring::keep_live(&base, &config, reconnects, &registrar, resolver, &stopped);
    background.spawn(hangups.serve(stopped.clone(), reload(cx.auth.clone())));
    let ready = format!("mrc-gateway ready: {}", listeners.describe(&id)?);
    // The TCP door answers at once too: `unavailable` until the gateway is ready.
    if let Some(tcp) = listeners.tcp {
        let serve = listener::tcp::serve(doors.clone(), tcp);
        background.spawn(log_failure("tcp listener", serve));
    }
    // Sessions of an earlier run under this id are gone: drop them before taking new ones.
    let started = purge_previous_run(&registrar, &readiness, &shutdown).await;
    if started {
        let ingress = ingress::Ingress {
            ops: ops.clone(),
            client: client.clone(),
            subjects: subjects.clone(),
            in_flight: config.ingress_in_flight,
            shutdown: shutdown.clone(),
            tracker: cx.tracker.clone(),
        };
        let subscribed = ingress::subscribe(ingress).await?;
        background.spawn(log_failure("ingress", ingress::run(subscribed)));
        tracing::info!(gateway = %id, "{ready}");
        println!("{ready}");
    }
    listeners.http.closed().await?;

    // Stopped before a center answered: no session was taken, none to remove.
    if started {
        let grace = cx.drain_window + Duration::from_millis(config.shutdown_grace_ms);
        stop(&cx, grace).await;
    }
    stopped.cancel();
    background.close();
    background.wait().await;
    wire.close(timeout).await;
    Ok(())
}

/// Purges this gateway id at the centers, waiting for one to answer; then the gateway is
/// ready. False on shutdown.
async fn purge_previous_run(
    registrar: &registrar::Registrar,
    readiness: &readiness::Readiness,
    shutdown: &CancellationToken,
) -> bool {
    let mut waited = 0u32;
    loop {
        match registrar.purge().await {
            Ok(removed) => {
                readiness.write_succeeded();
                readiness.center_answered();
                if removed > 0 {
                    tracing::info!(
                        removed,
                        "removed sessions of an earlier run of this gateway"
                    );
                }
                return true;
            }
            Err(e @ (RequestFailure::NoResponders | RequestFailure::TimedOut)) => {
                if waited % 20 == 0 {
                    tracing::warn!(error = %e, "no center answers yet; waiting before accepting clients");
                }
                waited += 1;
            }
            Err(e) => {
                if let RequestFailure::Remote(body) = &e {
                    // A center answered but could not write the directory.
                    readiness.write_failed(&body.to_string());
                }
                if waited % 20 == 0 {
                    tracing::warn!(error = %e, "purge failed; retrying");
                }
                waited += 1;
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return false,
            () = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
}

/// The graceful part of a stop: connections say `bye` and close (they watch the shutdown
/// token), in-flight sends finish, then one purge removes every session of this gateway.
async fn stop(cx: &conn::Context, grace: Duration) {
    let (sessions, window) = (cx.sessions.len(), cx.drain_window);
    tracing::info!(
        sessions,
        window_ms = window.as_millis() as u64,
        "stopping: closing sessions"
    );
    cx.tracker.close();
    if tokio::time::timeout(grace, cx.tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            left = cx.tracker.len(),
            "grace period over: connections still open"
        );
    }
    // NATS may be gone too: the purge gets the same grace, then centers evict instead.
    let purge = tokio::time::timeout(grace, cx.registrar.purge())
        .await
        .unwrap_or(Err(RequestFailure::TimedOut));
    match purge {
        Ok(removed) => tracing::info!(removed, "sessions removed from the directory"),
        Err(e) => {
            tracing::warn!(error = %e, "purge at stop failed; centers will evict this gateway")
        }
    }
}

/// What SIGHUP does: the configuration is read again and what can change while the
/// gateway runs is applied (the JWT keys, the API key, the log filter); a configuration
/// that no longer validates is refused and the running one kept.
fn reload(auth: Arc<auth::Auth>) -> impl Fn() {
    move || {
        let reread = config::file::reread::<config::Gateway>(config::Process::Gateway);
        let applied = reread.and_then(|mut config| {
            config.validate()?;
            auth.reload(&config.auth)?;
            config.runtime.apply_log(true)
        });
        match applied {
            Ok(()) => tracing::info!("SIGHUP: configuration reloaded (JWT keys, API key, log)"),
            Err(e) => tracing::warn!(
                error = %format!("{e:#}"),
                "SIGHUP: configuration not reloaded; the running one stays"
            ),
        }
    }
}

async fn log_failure(
    task: &'static str,
    future: impl std::future::Future<Output = anyhow::Result<()>>,
) {
    if let Err(e) = future.await {
        tracing::error!(task, error = %format!("{e:#}"), "gateway task failed");
    }
}
