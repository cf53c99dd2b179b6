//! Broadcasts: one message to every online user. A backend's `mrc.broadcast` reaches one
//! gateway (queue group), which asks the centers which gateways hold sessions and sends
//! ONE `mrc.gw.<id>.broadcast` request to each (or to those named). Each gateway queues
//! the message and a single worker pushes it to its sessions at `--broadcast-rate`
//! sessions per second, so a broadcast never starves direct messages.

use std::sync::Arc;
use std::time::Duration;

use async_nats::Subscriber;
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::ops::{Centers, Ops};
use super::route::Message;
use super::session::Sessions;
use crate::connection::{request, Nats};
use crate::ident::GatewayId;
use crate::protocol::client::{Frame, FrameError};
use crate::protocol::code::ErrorCode;
use crate::protocol::nats::{
    encode, BroadcastAccepted, BroadcastReport, ErrorReply, GatewayBroadcast, GatewaysReply,
};
use crate::protocol::now_ms;
use crate::subject::DIR_GATEWAYS;

/// Broadcasts a gateway holds before it refuses more.
const QUEUED_BROADCASTS: usize = 64;
/// Most sessions pushed between two pauses.
const CHUNK: usize = 500;

/// This gateway's side of broadcasts: the queue its worker pushes to its sessions from.
pub(crate) struct Local {
    id: GatewayId,
    sessions: Arc<Sessions>,
    tx: mpsc::Sender<Bytes>,
}

impl Local {
    /// The queue of gateway `id`, and its worker (under `tasks`, until `shutdown`)
    /// pushing to `sessions` at `rate` sessions per second.
    pub(crate) fn start(
        id: GatewayId,
        sessions: Arc<Sessions>,
        rate: u32,
        tasks: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        let (tx, rx) = mpsc::channel(QUEUED_BROADCASTS);
        tasks.spawn(push(sessions.clone(), rate.max(1), rx, shutdown));
        Local { id, sessions, tx }
    }

    /// Queues one message for every session here; how many sessions it will reach.
    pub(crate) fn accept(&self, message: &GatewayBroadcast<'_>) -> Result<usize, FrameError> {
        let frame = Frame::Msg {
            id: &message.id,
            from: message.from.as_deref(),
            to: &[],
            group: None,
            broadcast: true,
            ts: message.ts,
            body: message.body,
            seq: None,
        }
        .encode();
        self.tx.try_send(frame).map_err(|_| {
            FrameError::new(
                ErrorCode::RateLimited,
                "too many broadcasts queued on this gateway",
            )
        })?;
        Ok(self.sessions.len())
    }
}

/// The worker: one broadcast at a time, a chunk of sessions at a time (about 20 chunks a
/// second), paced to `rate` sessions per second.
async fn push(
    sessions: Arc<Sessions>,
    rate: u32,
    mut rx: mpsc::Receiver<Bytes>,
    shutdown: CancellationToken,
) {
    let chunk = (rate as usize / 20).clamp(1, CHUNK);
    let pause = Duration::from_secs_f64(chunk as f64 / f64::from(rate));
    while let Some(frame) = tokio::select! {
        () = shutdown.cancelled() => None,
        frame = rx.recv() => frame,
    } {
        let handles = sessions.handles();
        for (i, part) in handles.chunks(chunk).enumerate() {
            if i > 0 {
                tokio::time::sleep(pause).await;
            }
            for handle in part {
                handle.push(frame.clone());
            }
        }
    }
}

/// Answers `mrc.gw.<me>.broadcast` until `shutdown`.
pub(crate) async fn serve(
    client: Nats,
    ops: Arc<Ops>,
    requests: Subscriber,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    crate::connection::answer(&client, requests, &shutdown, |payload| {
        let accepted = crate::protocol::decode::<GatewayBroadcast<'_>>(payload)
            .and_then(|message| ops.broadcasts.accept(&message));
        match accepted {
            Ok(sessions) => encode(&BroadcastAccepted { sessions }),
            Err(e) => encode(&ErrorReply::new(e.code, e.message)),
        }
    })
    .await
}

/// Sends `message` to every gateway holding sessions (or to `only` of them) and sums
/// what they queued.
pub(crate) async fn fan_out(
    centers: &Centers,
    local: &Local,
    message: &Message,
    only: Option<&[String]>,
) -> Result<BroadcastReport, FrameError> {
    let subject = centers.subjects.dir(DIR_GATEWAYS);
    let known: GatewaysReply = centers
        .ask("directory", subject, Bytes::from_static(b"{}"))
        .await?;
    let targets: Vec<GatewayId> = known
        .gateways
        .iter()
        .filter(|g| only.is_none_or(|only| only.contains(g)))
        .filter_map(|g| GatewayId::new(g).ok())
        .collect();
    let broadcast = GatewayBroadcast {
        id: message.id.as_str().to_string(),
        from: message.from.clone(),
        ts: now_ms(),
        body: &message.body,
    };
    let payload = encode(&broadcast);
    let sends = targets.iter().map(|target| {
        let payload = payload.clone();
        let broadcast = &broadcast;
        async move {
            let queued = if *target == local.id {
                local.accept(broadcast).ok()
            } else {
                let subject = centers.subjects.gateway_broadcast(target);
                let reply: Option<BroadcastAccepted> =
                    request(&centers.client, subject, payload, centers.timeout)
                        .await
                        .ok();
                reply.map(|r| r.sessions)
            };
            (target, queued)
        }
    });
    let mut report = BroadcastReport {
        id: message.id.as_str().to_string(),
        ..Default::default()
    };
    for (target, queued) in futures::future::join_all(sends).await {
        match queued {
            Some(sessions) => {
                report.gateways += 1;
                report.sessions += sessions;
            }
            None => report.unavailable.push(target.to_string()),
        }
    }
    Ok(report)
}
