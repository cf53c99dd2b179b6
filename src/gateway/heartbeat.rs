//! Gateway liveness towards the centers: a heartbeat on `mrc.gw.<me>.hb` every period, and
//! re-asserting every live session when the directory may have lost them: after a NATS
//! reconnect, or when a center announces it evicted this gateway (e.g. after a pause).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::watch;

use super::Gateway;
use crate::center::peers::GATEWAY_DOWN;
use crate::protocol::nats::{encode, GatewayDown, Heartbeat};

/// Re-registrations sent at once.
const REASSERT_CONCURRENCY: usize = 64;

pub async fn run(
    gw: Arc<Gateway>,
    period: Duration,
    mut reconnects: watch::Receiver<u64>,
) -> anyhow::Result<()> {
    let mut down = gw
        .client
        .subscribe(gw.subjects.center(GATEWAY_DOWN))
        .await?;
    let subject = gw.subjects.heartbeat(&gw.id);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    reconnects.borrow_and_update();
    loop {
        tokio::select! {
            () = gw.shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {
                let beat = Heartbeat { gateway: gw.id.to_string(), sessions: gw.sessions.len() };
                if let Err(e) = gw.client.publish(subject.clone(), encode(&beat)).await {
                    tracing::warn!(error = %e, "heartbeat not published");
                }
            }
            changed = reconnects.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                tracing::info!("NATS reconnected: re-asserting sessions");
                reassert(&gw).await;
            }
            msg = down.next() => {
                let Some(msg) = msg else { return Ok(()) };
                let Ok(event) = serde_json::from_slice::<GatewayDown>(&msg.payload) else { continue };
                if event.gateway == gw.id.as_str() {
                    tracing::warn!(center = %event.center, "a center evicted this gateway: re-asserting sessions");
                    reassert(&gw).await;
                }
            }
        }
    }
}

/// Registers every live session again (register is idempotent per session). A session
/// that lost to a newer login meanwhile is closed instead.
pub async fn reassert(gw: &Gateway) {
    let sessions = gw.sessions.snapshot();
    let total = sessions.len();
    let outcomes: Vec<Reasserted> = futures::stream::iter(sessions)
        .map(|(user, handle)| async move {
            match gw
                .registrar
                .register(&user, &handle.id, handle.device.as_deref(), true)
                .await
            {
                Ok(reply) if reply.kicked => {
                    gw.sessions.kick(&user, std::slice::from_ref(&handle.id));
                    Reasserted::Kicked
                }
                Ok(_) => Reasserted::Kept,
                Err(_) => Reasserted::Failed,
            }
        })
        .buffer_unordered(REASSERT_CONCURRENCY)
        .collect()
        .await;
    let count = |o: Reasserted| outcomes.iter().filter(|x| **x == o).count();
    let (kicked, failed) = (count(Reasserted::Kicked), count(Reasserted::Failed));
    tracing::info!(total, kicked, failed, "sessions re-asserted");
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reasserted {
    Kept,
    Kicked,
    Failed,
}
