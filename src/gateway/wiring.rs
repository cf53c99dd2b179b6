//! The parts of [`super::run`] that build and start what a gateway runs: its operations,
//! the subscriptions to its own subjects, and liveness (heartbeat, reconciliation, route
//! changes). Split out so `run` reads as the order of start-up.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use async_nats::jetstream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{
    auth, broadcast, conn, deliver, heartbeat, kick, limits, listener, log_failure, ops, presence,
    reconcile, registrar, resolve, route, session, sweep, QUIET_BEATS,
};
use crate::config;
use crate::ident::GatewayId;
use crate::store::inbox::InboxStore;
use crate::subject::Subjects;

/// What every part below shares.
pub(super) struct Base {
    pub(super) id: GatewayId,
    pub(super) client: crate::connection::Nats,
    pub(super) subjects: Subjects,
    pub(super) sessions: Arc<session::Sessions>,
    /// Long-lived tasks run under it.
    pub(super) background: TaskTracker,
    /// Deliver requests and the replies to them: a connection of their own.
    pub(super) wire: crate::wire::Wire,
    /// Replies to this gateway's deliver requests, and its own to others' (pooled).
    pub(super) replies: Arc<crate::replies::Replies>,
    pub(super) pool: Arc<crate::pooled::Pool>,
}

/// The operations every door calls.
pub(super) async fn ops(
    base: &Base,
    config: &config::Gateway,
    resolver: Arc<resolve::Resolver>,
    shutdown: CancellationToken,
) -> anyhow::Result<Arc<ops::Ops>> {
    let Base {
        id,
        client,
        subjects,
        sessions,
        background,
        replies,
        pool,
        ..
    } = base;
    let timeout = config.nats.request_timeout();
    Ok(Arc::new(ops::Ops {
        limits: limits::Limits::from_config(&config.limits),
        router: route::Router::new(
            id.clone(),
            client.clone(),
            subjects.clone(),
            resolver,
            sessions.clone(),
            (replies.clone(), pool.clone()),
            config,
        ),
        centers: ops::Centers {
            client: client.clone(),
            subjects: subjects.clone(),
            timeout,
        },
        broadcasts: broadcast::Local::start(
            id.clone(),
            sessions.clone(),
            config.broadcast_rate,
            background,
            shutdown,
        ),
        inbox: Arc::new(ops::inbox::Inbox {
            store: InboxStore::attach(
                jetstream::new(client.client().clone()),
                &config.inbox_stream,
            )
            .await?,
            client: client.client().clone(),
            subjects: subjects.clone(),
            offline: config.offline,
            tasks: background.clone(),
            drains: tokio::sync::Semaphore::new(ops::inbox::DRAINS),
        }),
    }))
}

/// Deliveries, broadcasts, inbox nudges and kicks addressed to this gateway, served until
/// `stopped`. Subscribed before the directory can point anywhere at this gateway: the
/// deliver connection's round trip confirms its subscription here (the ingress's confirms
/// the others, on the main connection, before the gateway says it is ready).
pub(super) async fn serve_own_subjects(
    base: &Base,
    ops: &Arc<ops::Ops>,
    timeout: Duration,
    stopped: &CancellationToken,
) -> anyhow::Result<()> {
    let Base {
        id,
        client,
        subjects,
        sessions,
        background,
        pool,
        wire,
        ..
    } = base;
    let deliver = deliver::serve(
        wire,
        &subjects.deliver(id),
        pool.clone(),
        sessions.clone(),
        stopped.clone(),
    )?;
    background.spawn(log_failure("deliver", deliver));
    crate::connection::until_confirmed(stopped, || wire.round_trip(timeout)).await;
    let broadcasts = client.subscribe(subjects.gateway_broadcast(id)).await?;
    let broadcast = broadcast::serve(client.clone(), ops.clone(), broadcasts, stopped.clone());
    background.spawn(log_failure("broadcast", broadcast));
    let nudges = client.subscribe(subjects.gateway_inbox(id)).await?;
    let nudged = ops
        .inbox
        .clone()
        .serve_nudges(sessions.clone(), nudges, stopped.clone());
    background.spawn(log_failure("inbox nudges", nudged));
    let kicks = client.subscribe(subjects.kick(id)).await?;
    let kick = kick::run(
        client.client().clone(),
        sessions.clone(),
        kicks,
        stopped.clone(),
    );
    background.spawn(log_failure("kick", kick));
    Ok(())
}

/// Heartbeats, reconciliation, the idle sweep and (with `--follow-route-changes`)
/// route-change following, until `stopped`.
pub(super) fn keep_live(
    base: &Base,
    config: &config::Gateway,
    reconnects: tokio::sync::watch::Receiver<u64>,
    registrar: &Arc<registrar::Registrar>,
    resolver: Arc<resolve::Resolver>,
    stopped: &CancellationToken,
) {
    let Base {
        id,
        client,
        subjects,
        sessions,
        background,
        ..
    } = base;
    let period = Duration::from_millis(config.heartbeat_ms);
    let reconcile = Arc::new(tokio::sync::Notify::new());
    let beat = heartbeat::Beat {
        id: id.clone(),
        client: client.client().clone(),
        subjects: subjects.clone(),
        sessions: sessions.clone(),
        shutdown: stopped.clone(),
    };
    let beating = heartbeat::run(beat, period, reconnects, reconcile.clone());
    background.spawn(log_failure("heartbeat", beating));
    let reconciler = reconcile::Reconciler {
        sessions: sessions.clone(),
        registrar: registrar.clone(),
        shutdown: stopped.clone(),
        quiet: period * QUIET_BEATS,
    };
    let reconciling = reconcile::run(reconciler, reconcile);
    background.spawn(log_failure("reconcile", reconciling));
    let idle_timeout = Duration::from_millis(config.limits.idle_timeout_ms);
    let sweeping = sweep::idle(sessions.clone(), idle_timeout, stopped.clone());
    background.spawn(log_failure("idle sweep", sweeping));
    if config.follow_route_changes {
        let changes =
            resolve::follow_changes(resolver, client.clone(), subjects.clone(), stopped.clone());
        background.spawn(log_failure("route changes", changes));
    }
}

/// The context every client connection shares, and the doors' own.
pub(super) fn doors(
    base: &Base,
    config: &config::Gateway,
    ops: &Arc<ops::Ops>,
    registrar: &Arc<registrar::Registrar>,
    readiness: &Arc<super::readiness::Readiness>,
    shutdown: &CancellationToken,
) -> anyhow::Result<(Arc<conn::Context>, Arc<listener::Doors>)> {
    let cx = Arc::new(conn::Context {
        id: base.id.clone(),
        ops: ops.clone(),
        auth: Arc::new(auth::Auth::from_config(
            &config.auth,
            config.limits.max_id_bytes,
        )?),
        sessions: base.sessions.clone(),
        registrar: registrar.clone(),
        presence: Arc::new(presence::Hub::new(
            base.client.client().clone(),
            base.subjects.clone(),
            base.background.clone(),
            shutdown.clone(),
        )),
        routing: Arc::new(Semaphore::new(config.limits.routing_in_flight)),
        shutdown: shutdown.clone(),
        drain_window: Duration::from_millis(config.drain_window_ms),
        tracker: TaskTracker::new(),
    });
    let doors = Arc::new(listener::Doors {
        conn: cx.clone(),
        connections: Arc::new(Semaphore::new(config.limits.max_connections)),
        logging_in: Arc::new(Semaphore::new(config.limits.max_pending_logins)),
        gate: listener::front::Gate {
            client: base.client.client().clone(),
            wire: base.wire.clone(),
            readiness: readiness.clone(),
        },
        origins: listener::origin::Origins::new(&config.web.allowed_origins),
        cors: listener::origin::cors(&config.web.cors_origins),
    });
    Ok((cx, doors))
}
