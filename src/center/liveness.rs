//! Gateway liveness: gateways publish `mrc.gw.<id>.hb` every second or so; a gateway that
//! holds sessions in the directory and has been silent for the heartbeat timeout is
//! declared dead and all its sessions are removed.
//!
//! Every center watches every gateway. To avoid all of them doing the same work, each waits
//! a random part of the timeout before evicting and skips a gateway that another center
//! has already emptied; where they still race, the directory's compare-and-swap makes the
//! removal (and its offline events) happen once.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::Client;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::peers::GATEWAY_DOWN;
use super::presence::Announcer;
use crate::directory::Directory;
use crate::ident::{CenterId, GatewayId};
use crate::protocol::nats::{encode, GatewayDown};
use crate::subject::Subjects;

/// When each gateway was last heard from.
pub struct Liveness {
    timeout: Duration,
    /// A gateway never heard from counts as heard at this center's start.
    started: Instant,
    seen: Mutex<HashMap<GatewayId, Instant>>,
    evicting: Mutex<HashSet<GatewayId>>,
}

impl Liveness {
    pub fn new(timeout: Duration) -> Self {
        Liveness {
            timeout,
            started: Instant::now(),
            seen: Mutex::default(),
            evicting: Mutex::default(),
        }
    }

    /// Notes a sign of life (a heartbeat, or a request from the gateway).
    pub fn touch(&self, gateway: &GatewayId) {
        let mut seen = self
            .seen
            .lock()
            .expect("liveness lock is never held across a panic");
        match seen.get_mut(gateway) {
            Some(at) => *at = Instant::now(),
            None => {
                seen.insert(gateway.clone(), Instant::now());
            }
        }
    }

    fn last_seen(&self, gateway: &GatewayId) -> Instant {
        let seen = self
            .seen
            .lock()
            .expect("liveness lock is never held across a panic");
        seen.get(gateway).copied().unwrap_or(self.started)
    }

    /// Gateways in the directory that have been silent too long and are not being evicted.
    fn overdue(&self, directory: &Directory) -> Vec<GatewayId> {
        let now = Instant::now();
        let evicting = self
            .evicting
            .lock()
            .expect("liveness lock is never held across a panic");
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
        let mut seen = self
            .seen
            .lock()
            .expect("liveness lock is never held across a panic");
        seen.retain(|_, at| at.elapsed() < horizon);
    }
}

/// Everything eviction needs.
#[derive(Clone)]
pub struct Evictor {
    pub client: Client,
    pub subjects: Subjects,
    pub center: CenterId,
    pub directory: Directory,
    pub announcer: Announcer,
}

/// Follows heartbeats and evicts silent gateways until `shutdown`.
pub async fn run(
    liveness: Arc<Liveness>,
    evictor: Evictor,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut heartbeats = evictor
        .client
        .subscribe(evictor.subjects.heartbeat_all())
        .await?;
    let period = (liveness.timeout / 4).max(Duration::from_millis(25));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks = 0u64;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            msg = heartbeats.next() => match msg {
                Some(msg) => {
                    if let Some(gw) = evictor.subjects.heartbeat_gateway(&msg.subject) {
                        liveness.touch(&gw);
                    }
                }
                None => return Ok(()),
            },
            _ = tick.tick() => {
                for gateway in liveness.overdue(&evictor.directory) {
                    liveness.evicting.lock().expect("liveness lock is never held across a panic").insert(gateway.clone());
                    tokio::spawn(evict(liveness.clone(), evictor.clone(), gateway, shutdown.clone()));
                }
                ticks += 1;
                if ticks % 100 == 0 {
                    liveness.prune();
                }
            }
        }
    }
}

/// Waits a random part of the timeout, then removes the gateway's sessions unless it
/// spoke up or another center got there first.
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
    let alive = liveness.last_seen(&gateway) > detected;
    if !alive && !evictor.directory.mirror().users_on(&gateway).is_empty() {
        match evictor.directory.purge_gateway(&gateway).await {
            Ok(transitions) => {
                let removed: usize = transitions
                    .iter()
                    .map(|t| t.before.len() - t.after.len())
                    .sum();
                for t in &transitions {
                    evictor.announcer.announce(t, &gateway).await;
                }
                tracing::warn!(%gateway, users = transitions.len(), sessions = removed, "gateway silent: sessions removed");
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
            Err(e) => {
                tracing::error!(%gateway, error = %format!("{e:#}"), "evicting gateway failed")
            }
        }
    }
    // Whatever happened, wait a whole timeout before looking at this gateway again.
    if !alive {
        liveness.touch(&gateway);
    }
    liveness
        .evicting
        .lock()
        .expect("liveness lock is never held across a panic")
        .remove(&gateway);
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
