//! Gateway liveness and agreement: gateways publish `mrc.gw.<id>.hb` every second or so,
//! with the digest of the sessions they hold.
//!
//! - A gateway that holds sessions in the directory and has been silent for the heartbeat
//!   timeout is declared dead and all its sessions are removed. Every center watches every
//!   gateway; to avoid all of them doing the same work, each waits a random part of the
//!   timeout and skips a gateway another center already emptied; where they still race,
//!   the directory's compare-and-swap makes each removal (and its offline event) happen
//!   once. An eviction that fails partway is retried until done or the gateway speaks up,
//!   and `gateway-down` is published either way.
//! - A heartbeat whose digest differs from the mirror's digest of that gateway for
//!   [`DISAGREEMENTS_BEFORE_NUDGE`] beats in a row makes this center ask the gateway to
//!   reconcile (`mrc.gw.<id>.reconcile`): O(1) per heartbeat, a full comparison only then.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_nats::Client;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::presence::Announcer;
use crate::directory::Directory;
use crate::ident::{CenterId, GatewayId};
use crate::protocol::digest::Digest;
use crate::protocol::nats::{encode, GatewayDown, Heartbeat, ReconcileNudge};
use crate::retry::{self, Attempt};
use crate::subject::{Subjects, GATEWAY_DOWN};
use crate::sync::lock;

/// Heartbeats in a row whose digest disagrees with the mirror before the gateway is asked
/// to reconcile: a login or logout in flight makes one or two beats disagree.
pub(crate) const DISAGREEMENTS_BEFORE_NUDGE: u32 = 3;

/// What this center knows of one gateway.
struct Seen {
    at: Instant,
    /// Heartbeats in a row whose digest disagreed with the mirror.
    disagreements: u32,
}

/// When each gateway was last heard from, and whether its heartbeats agree.
pub(crate) struct Liveness {
    timeout: Duration,
    /// Every gateway counts as heard at least this late: this center's start, or the end
    /// of a stall of its own NATS connection (it heard nobody then, through no fault of
    /// theirs).
    fresh_since: Mutex<Instant>,
    /// When a round trip through the NATS server (the probe's echo) last completed.
    connected_at: Mutex<Instant>,
    seen: Mutex<HashMap<GatewayId, Seen>>,
    evicting: Mutex<HashSet<GatewayId>>,
}

impl Liveness {
    pub(crate) fn new(timeout: Duration) -> Self {
        Liveness {
            timeout,
            fresh_since: Mutex::new(Instant::now()),
            connected_at: Mutex::new(Instant::now()),
            seen: Mutex::default(),
            evicting: Mutex::default(),
        }
    }

    fn seen(&self) -> MutexGuard<'_, HashMap<GatewayId, Seen>> {
        lock(&self.seen)
    }

    fn evicting(&self) -> MutexGuard<'_, HashSet<GatewayId>> {
        lock(&self.evicting)
    }

    /// Notes a sign of life (a heartbeat, or a request from the gateway).
    pub(crate) fn touch(&self, gateway: &GatewayId) {
        let mut seen = self.seen();
        match seen.get_mut(gateway) {
            Some(s) => s.at = Instant::now(),
            None => {
                let s = Seen {
                    at: Instant::now(),
                    disagreements: 0,
                };
                seen.insert(gateway.clone(), s);
            }
        }
    }

    /// Notes whether a heartbeat's digest agreed with the mirror; true when the gateway
    /// should now be asked to reconcile (and the count starts again).
    fn compared(&self, gateway: &GatewayId, agree: bool) -> bool {
        let mut seen = self.seen();
        let Some(s) = seen.get_mut(gateway) else {
            return false;
        };
        s.disagreements = if agree { 0 } else { s.disagreements + 1 };
        let due = s.disagreements >= DISAGREEMENTS_BEFORE_NUDGE;
        if due {
            s.disagreements = 0;
        }
        due
    }

    fn last_seen(&self, gateway: &GatewayId) -> Instant {
        let fresh_since = *lock(&self.fresh_since);
        self.seen()
            .get(gateway)
            .map_or(fresh_since, |s| s.at.max(fresh_since))
    }

    /// A round trip to the NATS server completed. After a stall of this center's own
    /// connection longer than the timeout (its node paused, a partition), the heartbeats it
    /// missed say nothing about the gateways: every gateway counts as heard now.
    fn connected(&self) {
        let now = Instant::now();
        let stalled = now - std::mem::replace(&mut *lock(&self.connected_at), now);
        if stalled > self.timeout {
            tracing::warn!(
                ?stalled,
                "this center's NATS connection stalled: gateways count as heard now"
            );
            *lock(&self.fresh_since) = now;
        }
    }

    /// Whether this center can hear gateways at all: a round trip to the NATS server
    /// completed within half the timeout.
    fn hears(&self) -> bool {
        lock(&self.connected_at).elapsed() < self.timeout / 2
    }

    /// Gateways in the directory that have been silent too long and are not being evicted
    /// (none while this center's own connection is stalled).
    fn overdue(&self, directory: &Directory) -> Vec<GatewayId> {
        if !self.hears() {
            return Vec::new();
        }
        let now = Instant::now();
        let evicting = self.evicting();
        directory
            .mirror()
            .gateways()
            .into_iter()
            .filter(|gw| !evicting.contains(gw) && now - self.last_seen(gw) > self.timeout)
            .collect()
    }

    /// Forgets gateways silent for much longer than the timeout, keeping the map bounded.
    fn prune(&self) {
        let horizon = self.timeout * 10;
        self.seen().retain(|_, s| s.at.elapsed() < horizon);
    }
}

/// Everything eviction and nudging need.
#[derive(Clone)]
pub(crate) struct Evictor {
    pub(crate) client: Client,
    pub(crate) subjects: Subjects,
    pub(crate) center: CenterId,
    pub(crate) directory: Directory,
    pub(crate) announcer: Announcer,
    /// The center's tasks: evictions, nudges and the connection probe are among them.
    pub(crate) tasks: TaskTracker,
}

/// Follows heartbeats, evicts silent gateways and nudges disagreeing ones until
/// `shutdown`.
pub(crate) async fn run(
    liveness: Arc<Liveness>,
    evictor: Evictor,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut heartbeats = evictor
        .client
        .subscribe(evictor.subjects.heartbeat_all())
        .await?;
    let period = (liveness.timeout / 4).max(Duration::from_millis(25));
    let probing = probe(
        evictor.client.clone(),
        evictor.subjects.probe(),
        liveness.clone(),
        period,
        shutdown.clone(),
    );
    evictor.tasks.spawn(async move {
        if let Err(e) = probing.await {
            tracing::error!(error = %format!("{e:#}"), "connection probe failed");
        }
    });
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks = 0u64;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            msg = heartbeats.next() => match msg {
                Some(msg) => heard(&liveness, &evictor, &msg),
                None => return Ok(()),
            },
            _ = tick.tick() => {
                for gateway in liveness.overdue(&evictor.directory) {
                    liveness.evicting().insert(gateway.clone());
                    evictor.tasks.spawn(evict(liveness.clone(), evictor.clone(), gateway, shutdown.clone()));
                }
                ticks += 1;
                if ticks % 100 == 0 {
                    liveness.prune();
                }
            }
        }
    }
}

/// A round trip through the NATS server every `period`: a message to `inbox`, a
/// subscription of this center's own (a flush only writes to the socket), telling
/// `liveness` when one comes back.
async fn probe(
    client: Client,
    inbox: String,
    liveness: Arc<Liveness>,
    period: Duration,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut echoes = client.subscribe(inbox.clone()).await?;
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        if client
            .publish(inbox.clone(), bytes::Bytes::new())
            .await
            .is_err()
        {
            continue;
        }
        match tokio::time::timeout(period, echoes.next()).await {
            Ok(Some(_)) => liveness.connected(),
            Ok(None) => return Ok(()),
            Err(_) => {}
        }
    }
}

/// One heartbeat: a sign of life, and a digest to compare with the mirror's.
fn heard(liveness: &Liveness, evictor: &Evictor, msg: &async_nats::Message) {
    let Some(gateway) = evictor.subjects.heartbeat_gateway(&msg.subject) else {
        return;
    };
    liveness.touch(&gateway);
    let Ok(Heartbeat {
        digest: Some(digest),
        ..
    }) = serde_json::from_slice(&msg.payload)
    else {
        return;
    };
    let agree = evictor.directory.mirror().digest_of(&gateway) == digest;
    if liveness.compared(&gateway, agree) {
        evictor.tasks.spawn(nudge(evictor.clone(), gateway, digest));
    }
}

/// Asks `gateway` to reconcile, unless the disagreement was only this mirror lagging.
async fn nudge(evictor: Evictor, gateway: GatewayId, heard: Digest) {
    evictor.directory.barrier().await;
    let directory = evictor.directory.mirror().digest_of(&gateway);
    if directory == heard {
        return;
    }
    tracing::info!(%gateway, directory = directory.sessions, gateway_holds = heard.sessions,
        "directory disagrees with the gateway's heartbeats: asking it to reconcile");
    let nudge = ReconcileNudge {
        center: evictor.center.to_string(),
        directory,
    };
    let subject = evictor.subjects.reconcile(&gateway);
    if let Err(e) = evictor.client.publish(subject, encode(&nudge)).await {
        tracing::warn!(error = %e, "reconcile nudge not published");
    }
}

/// Waits a random part of the timeout, then removes the gateway's sessions unless it
/// spoke up or another center got there first; retries until every session is gone or
/// the gateway speaks up.
async fn evict(
    liveness: Arc<Liveness>,
    evictor: Evictor,
    gateway: GatewayId,
    shutdown: CancellationToken,
) {
    let detected = liveness.last_seen(&gateway);
    let jitter = random_below(liveness.timeout / 4);
    tokio::select! {
        () = shutdown.cancelled() => return,
        () = tokio::time::sleep(jitter) => {}
    }
    let silent = || liveness.hears() && liveness.last_seen(&gateway) <= detected;
    let attempts = std::sync::atomic::AtomicU32::new(0);
    retry::until_done("evicting a silent gateway", &shutdown, || async {
        if !silent() || evictor.directory.mirror().users_on(&gateway).is_empty() {
            return Attempt::Moot;
        }
        let purge = evictor.directory.purge_gateway(&gateway).await;
        for t in &purge.transitions {
            evictor.announcer.announce(t, &gateway).await;
        }
        let removed = purge.removed();
        if removed > 0 {
            metrics::counter!(crate::telemetry::CENTER_EVICTIONS).increment(1);
            tracing::warn!(%gateway, users = purge.transitions.len(), sessions = removed, "gateway silent: sessions removed");
        }
        // The gateway hears of it even when some writes failed (it may only be paused).
        if attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed) == 0 || purge.failed.is_none() {
            announce_down(&evictor, &gateway, removed).await;
        }
        match purge.failed {
            None => Attempt::Done(removed),
            Some(e) => Attempt::Failed(format!("{e:#}")),
        }
    })
    .await;
    // Whatever happened, wait a whole timeout before looking at this gateway again.
    if silent() {
        liveness.touch(&gateway);
    }
    liveness.evicting().remove(&gateway);
}

async fn announce_down(evictor: &Evictor, gateway: &GatewayId, removed: usize) {
    let down = GatewayDown {
        gateway: gateway.to_string(),
        removed,
        center: evictor.center.to_string(),
    };
    let subject = evictor.subjects.center(GATEWAY_DOWN);
    if let Err(e) = evictor.client.publish(subject, encode(&down)).await {
        tracing::warn!(error = %e, "gateway-down not published");
    }
}

/// A random duration in `0..max`.
fn random_below(max: Duration) -> Duration {
    let nanos = max.as_nanos() as u64;
    if nanos == 0 {
        return Duration::ZERO;
    }
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    Duration::from_nanos(random % nanos)
}
