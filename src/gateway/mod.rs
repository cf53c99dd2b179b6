//! The gateway: holds client sessions and routes their messages.
//!
//! - [`conn`] runs one client connection (login, frames, limits) over any transport;
//!   [`listener`] holds the transports (WebSocket).
//! - [`session`]: live sessions and their bounded outbound queues.
//! - [`registrar`]: register/unregister/purge requests to the centers.
//! - [`resolve`]: cached, batched directory look-ups; [`route`]: one deliver request per
//!   destination gateway, retry of stale routes, the report; [`deliver`]: the receiving end.
//! - [`ops`]: send, group send and broadcast, checked and carried out the same for every
//!   door; [`ingress`]: backend messages from `mrc.send`, `mrc.to.*`, `mrc.grp.send`,
//!   `mrc.broadcast`.
//! - [`heartbeat`]: liveness towards the centers (with the digest of the sessions held);
//!   [`reconcile`]: repairs the directory's view of this gateway when it drifted.
//! - [`readiness`]: whether the gateway may take clients, and why not.

pub(crate) mod auth;
pub(crate) mod batch;
pub(crate) mod broadcast;
pub(crate) mod conn;
pub(crate) mod deliver;
pub(crate) mod groups;
pub(crate) mod heartbeat;
pub(crate) mod ingress;
pub(crate) mod kick;
pub mod listener;
pub(crate) mod ops;
pub(crate) mod presence;
pub(crate) mod readiness;
pub mod reconcile;
pub mod registrar;
pub(crate) mod resolve;
pub(crate) mod route;
pub(crate) mod session;

use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;
use async_nats::Client;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config;
use crate::connection::{Connection, RequestFailure};
use crate::exit::BadConfig;
use crate::ident::GatewayId;
use crate::subject::Subjects;

/// What every part of a gateway shares.
pub struct Gateway {
    pub id: GatewayId,
    pub client: Client,
    pub subjects: Subjects,
    pub sessions: Arc<session::Sessions>,
    pub registrar: Arc<registrar::Registrar>,
    pub router: route::Router,
    pub auth: auth::Auth,
    pub limits: conn::Limits,
    /// One permit per client send being routed, all connections together.
    pub routing: Arc<Semaphore>,
    /// One permit per open client connection (`--max-connections`).
    pub connections: Arc<Semaphore>,
    pub request_timeout: Duration,
    /// Backend messages routed at once.
    pub ingress_in_flight: usize,
    /// Broadcasts waiting to be pushed to this gateway's sessions.
    pub broadcasts: broadcast::Queue,
    /// Presence subscriptions of this gateway's sessions.
    pub presence: Arc<presence::Hub>,
    /// Whether the doors take clients; the registrar reports directory writes to it.
    pub readiness: Arc<readiness::Readiness>,
    /// Cancelled when the gateway starts to stop.
    pub shutdown: CancellationToken,
    /// Every connection and in-flight send; the stop waits for them.
    pub tracker: TaskTracker,
}

/// The listeners a gateway serves, bound before it connects anywhere.
pub struct Listeners {
    /// WebSocket + HTTP API, already answering `/healthz` and `/readyz`.
    pub http: listener::Front,
    /// Newline-delimited JSON, when configured.
    pub tcp: Option<TcpListener>,
}

impl Listeners {
    /// Starts serving `http` at once (probes answer, doors say not ready) and prints the
    /// `mrc-gateway listening` line naming every address.
    pub fn serve(
        id: &GatewayId,
        http: TcpListener,
        tcp: Option<TcpListener>,
        metrics: Option<PrometheusHandle>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Listeners> {
        let http = listener::Front::serve(http, metrics, shutdown)?;
        let listeners = Listeners { http, tcp };
        let line = format!("mrc-gateway listening: {}", listeners.describe(id)?);
        tracing::info!(gateway = %id, "{line}");
        println!("{line}");
        Ok(listeners)
    }

    /// `id=... http=http://... ws=ws://.../ws [tcp=...]`
    fn describe(&self, id: &GatewayId) -> std::io::Result<String> {
        let http = self.http.addr();
        let mut text = format!("id={id} http=http://{http} ws=ws://{http}/ws");
        if let Some(tcp) = &self.tcp {
            text.push_str(&format!(" tcp={}", tcp.local_addr()?));
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
    let sessions = Arc::new(session::Sessions::default());
    let resolver = Arc::new(resolve::Resolver::new(
        client.clone(),
        &subjects,
        config.cache_capacity,
        Duration::from_millis(config.cache_ttl_ms),
        timeout,
    ));
    let router = route::Router::new(
        id.clone(),
        client.clone(),
        subjects.clone(),
        resolver.clone(),
        sessions.clone(),
        &config,
    );
    let readiness = listeners.http.readiness();
    let gw = Arc::new(Gateway {
        id: id.clone(),
        client: client.clone(),
        subjects: subjects.clone(),
        sessions: sessions.clone(),
        registrar: Arc::new(registrar::Registrar::new(
            client.clone(),
            subjects.clone(),
            id.clone(),
            timeout,
            readiness.clone(),
            shutdown.clone(),
        )),
        router,
        auth: auth::Auth::from_config(&config.auth, config.limits.max_id_bytes)?,
        limits: conn::Limits::from_config(&config.limits),
        connections: Arc::new(Semaphore::new(config.limits.max_connections)),
        routing: Arc::new(Semaphore::new(config.limits.routing_in_flight)),
        request_timeout: timeout,
        ingress_in_flight: config.ingress_in_flight,
        presence: Arc::new(presence::Hub::new(client.clone(), subjects.clone())),
        broadcasts: broadcast::Queue::start(
            sessions.clone(),
            config.broadcast_rate,
            shutdown.clone(),
        ),
        readiness,
        shutdown: shutdown.clone(),
        tracker: TaskTracker::new(),
    });
    listeners.http.open(gw.clone());

    // Deliveries must reach us before the directory points anywhere at us.
    let deliveries = client.subscribe(subjects.deliver(&id)).await?;
    let background = TaskTracker::new();
    let deliver = deliver::run(
        client.clone(),
        gw.sessions.clone(),
        deliveries,
        shutdown.clone(),
    );
    background.spawn(log_failure("deliver", deliver));
    let broadcasts = client.subscribe(subjects.gateway_broadcast(&id)).await?;
    background.spawn(log_failure(
        "broadcast",
        broadcast::serve(gw.clone(), broadcasts),
    ));
    let kicks = client.subscribe(subjects.kick(&id)).await?;
    let kick = kick::run(client.clone(), gw.sessions.clone(), kicks, shutdown.clone());
    background.spawn(log_failure("kick", kick));
    let period = Duration::from_millis(config.heartbeat_ms);
    let reconcile = Arc::new(tokio::sync::Notify::new());
    let beat = heartbeat::Beat {
        id: id.clone(),
        client: client.clone(),
        subjects: subjects.clone(),
        sessions: sessions.clone(),
        shutdown: shutdown.clone(),
    };
    let reconnects = connection.reconnects.clone();
    let beating = heartbeat::run(beat, period, reconnects, reconcile.clone());
    background.spawn(log_failure("heartbeat", beating));
    let reconciler = reconcile::Reconciler {
        sessions: sessions.clone(),
        registrar: gw.registrar.clone(),
        shutdown: shutdown.clone(),
        quiet: period * QUIET_BEATS,
    };
    let reconciling = reconcile::run(reconciler, reconcile);
    background.spawn(log_failure("reconcile", reconciling));
    if config.follow_route_changes {
        let changes =
            resolve::follow_changes(resolver, client.clone(), subjects.clone(), shutdown.clone());
        background.spawn(log_failure("route changes", changes));
    }
    let ready = format!("mrc-gateway ready: {}", listeners.describe(&id)?);
    // The TCP door answers at once too: `unavailable` until the gateway is ready.
    if let Some(tcp) = listeners.tcp {
        let serve = listener::tcp::serve(gw.clone(), tcp);
        background.spawn(log_failure("tcp listener", serve));
    }
    // Sessions of an earlier run under this id are gone: drop them before taking new ones.
    let started = purge_previous_run(&gw).await;
    if started {
        background.spawn(log_failure("ingress", ingress::run(gw.clone())));
        tracing::info!(gateway = %id, "{ready}");
        println!("{ready}");
    }
    listeners.http.closed().await?;

    // Stopped before a center answered: no session was taken, none to remove.
    if started {
        stop(&gw, Duration::from_millis(config.shutdown_grace_ms)).await;
    }
    background.close();
    background.wait().await;
    Ok(())
}

/// Purges this gateway id at the centers, waiting for one to answer; then the gateway is
/// ready. False on shutdown.
async fn purge_previous_run(gw: &Gateway) -> bool {
    let mut waited = 0u32;
    loop {
        match gw.registrar.purge().await {
            Ok(removed) => {
                gw.readiness.write_succeeded();
                gw.readiness.center_answered();
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
                    gw.readiness.write_failed(&body.to_string());
                }
                if waited % 20 == 0 {
                    tracing::warn!(error = %e, "purge failed; retrying");
                }
                waited += 1;
            }
        }
        tokio::select! {
            () = gw.shutdown.cancelled() => return false,
            () = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
}

/// The graceful part of a stop: connections say `bye` and close (they watch the shutdown
/// token), in-flight sends finish, then one purge removes every session of this gateway.
async fn stop(gw: &Gateway, grace: Duration) {
    tracing::info!(sessions = gw.sessions.len(), "stopping: closing sessions");
    gw.tracker.close();
    if tokio::time::timeout(grace, gw.tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            left = gw.tracker.len(),
            "grace period over: connections still open"
        );
    }
    // NATS may be gone too: the purge gets the same grace, then centers evict instead.
    let purge = tokio::time::timeout(grace, gw.registrar.purge())
        .await
        .unwrap_or(Err(RequestFailure::TimedOut));
    match purge {
        Ok(removed) => tracing::info!(removed, "sessions removed from the directory"),
        Err(e) => {
            tracing::warn!(error = %e, "purge at stop failed; centers will evict this gateway")
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
