//! Gateway liveness towards the centers: a heartbeat on `mrc.gw.<me>.hb` every period,
//! carrying the digest of the sessions held here, and the calls for reconciliation: after
//! a NATS reconnect, when a center announces it evicted this gateway (e.g. after a
//! pause), or when a center saw the digests disagree for several beats
//! (`mrc.gw.<me>.reconcile`).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{watch, Notify};

use async_nats::Client;
use tokio_util::sync::CancellationToken;

use super::session::Sessions;
use crate::ident::GatewayId;
use crate::protocol::nats::{encode, GatewayDown, Heartbeat, ReconcileNudge};
use crate::subject::{Subjects, GATEWAY_DOWN};

/// What heartbeats need of the gateway: who it is, what it holds, and NATS.
pub(crate) struct Beat {
    pub(crate) id: GatewayId,
    pub(crate) client: Client,
    pub(crate) subjects: Subjects,
    pub(crate) sessions: Arc<Sessions>,
    pub(crate) shutdown: CancellationToken,
}

/// Heartbeats until shutdown; notifies `reconcile` whenever the directory may have
/// drifted from the sessions held here.
pub(crate) async fn run(
    gw: Beat,
    period: Duration,
    mut reconnects: watch::Receiver<u64>,
    reconcile: Arc<Notify>,
) -> anyhow::Result<()> {
    let mut down = gw
        .client
        .subscribe(gw.subjects.center(GATEWAY_DOWN))
        .await?;
    let mut nudges = gw.client.subscribe(gw.subjects.reconcile(&gw.id)).await?;
    let subject = gw.subjects.heartbeat(&gw.id);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    reconnects.borrow_and_update();
    loop {
        tokio::select! {
            () = gw.shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {
                let digest = gw.sessions.summary();
                let beat = Heartbeat {
                    gateway: gw.id.to_string(),
                    sessions: digest.sessions as usize,
                    digest: Some(digest),
                };
                if let Err(e) = gw.client.publish(subject.clone(), encode(&beat)).await {
                    tracing::warn!(error = %e, "heartbeat not published");
                }
            }
            changed = reconnects.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                tracing::info!("NATS reconnected: reconciling the directory");
                reconcile.notify_one();
            }
            msg = down.next() => {
                let Some(msg) = msg else { return Ok(()) };
                let Ok(event) = serde_json::from_slice::<GatewayDown>(&msg.payload) else { continue };
                if event.gateway == gw.id.as_str() {
                    tracing::warn!(center = %event.center, "a center evicted this gateway: reconciling the directory");
                    reconcile.notify_one();
                }
            }
            msg = nudges.next() => {
                let Some(msg) = msg else { return Ok(()) };
                if let Ok(nudge) = serde_json::from_slice::<ReconcileNudge>(&msg.payload) {
                    tracing::info!(center = %nudge.center, directory = nudge.directory.sessions,
                        here = gw.sessions.len(), "the directory disagrees: reconciling");
                }
                reconcile.notify_one();
            }
        }
    }
}
