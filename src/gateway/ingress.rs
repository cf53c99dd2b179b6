//! Backend ingress: `mrc.send` (JSON send requests, answered with the per-receiver report),
//! `mrc.to.<user>` (a raw body to one user), `mrc.grp.send` (a message to a group) and
//! `mrc.broadcast` (a message to everyone online). All
//! are queue subscriptions shared by every gateway, so plain `nats pub` / `nats req` reach
//! exactly one of them.

use std::sync::Arc;

use async_nats::Message as NatsMessage;
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::Semaphore;

use super::{ops, Gateway};
use crate::protocol::body_from_bytes;
use crate::protocol::client::FrameError;
use crate::protocol::code::ErrorCode;
use crate::protocol::group::GroupSendRequest;
use crate::protocol::nats::{encode, BroadcastRequest, ErrorReply, SendRequest};
use crate::subject::GATEWAY_QUEUE;
use crate::telemetry;

/// Takes backend messages until the gateway stops; messages already taken finish under
/// the gateway's task tracker.
pub async fn run(gw: Arc<Gateway>) -> anyhow::Result<()> {
    let subscribe = |subject: String| gw.client.queue_subscribe(subject, GATEWAY_QUEUE.into());
    let mut sends = subscribe(gw.subjects.send()).await?;
    let mut raw = subscribe(gw.subjects.to_all()).await?;
    let mut groups = subscribe(gw.subjects.group_send()).await?;
    let mut broadcasts = subscribe(gw.subjects.broadcast()).await?;
    let in_flight = Arc::new(Semaphore::new(gw.ingress_in_flight));
    loop {
        let (msg, kind) = tokio::select! {
            () = gw.shutdown.cancelled() => break,
            msg = sends.next() => match msg { Some(m) => (m, Kind::Send), None => break },
            msg = raw.next() => match msg { Some(m) => (m, Kind::Raw), None => break },
            msg = groups.next() => match msg { Some(m) => (m, Kind::Group), None => break },
            msg = broadcasts.next() => match msg { Some(m) => (m, Kind::Broadcast), None => break },
        };
        let permit = in_flight
            .clone()
            .acquire_owned()
            .await
            .expect("the ingress semaphore is never closed");
        let gw2 = gw.clone();
        gw.tracker.spawn(async move {
            let reply = match kind {
                Kind::Send => on_send(&gw2, &msg.payload).await,
                Kind::Raw => on_raw(&gw2, &msg).await,
                Kind::Group => on_group(&gw2, &msg.payload).await,
                Kind::Broadcast => on_broadcast(&gw2, &msg.payload).await,
            };
            let reply = reply.unwrap_or_else(|e| error_reply(&e));
            if let Some(reply_to) = msg.reply {
                if let Err(e) = gw2.client.publish(reply_to, reply).await {
                    tracing::debug!(error = %e, "ingress reply not sent");
                }
            }
            drop(permit);
        });
    }
    // Stop taking new messages; the other gateways' members of the queue group get them.
    let _ = sends.unsubscribe().await;
    let _ = raw.unsubscribe().await;
    let _ = groups.unsubscribe().await;
    let _ = broadcasts.unsubscribe().await;
    Ok(())
}

/// The door messages from NATS are counted under.
const DOOR: &str = "nats";

/// Which ingress subject a message came from.
#[derive(Clone, Copy)]
enum Kind {
    Send,
    Raw,
    Group,
    Broadcast,
}

fn error_reply(e: &FrameError) -> Bytes {
    telemetry::error(e.code);
    encode(&ErrorReply::new(e.code, e.message.clone()))
}

/// `mrc.send`: `{"to":[...],"from":"...","id":"...","body":...}`.
async fn on_send(gw: &Gateway, payload: &[u8]) -> Result<Bytes, FrameError> {
    let request: SendRequest<'_> = crate::protocol::decode(payload)?;
    let (from, to, id) = (request.from, request.to, request.id);
    let send = ops::Send::check(&gw.limits, DOOR, from, to, id, request.body)?;
    Ok(encode(&send.run(&gw.router).await))
}

/// `mrc.to.<user>`: the payload is the body. JSON passes as it is; other UTF-8 text
/// becomes a JSON string; anything else is refused with `bad_body`.
async fn on_raw(gw: &Gateway, msg: &NatsMessage) -> Result<Bytes, FrameError> {
    let user = gw
        .subjects
        .to_user(&msg.subject)
        .map_err(|e| FrameError::new(ErrorCode::BadId, format!("receiver token: {e}")))?;
    let body = body_from_bytes(&msg.payload).ok_or_else(|| {
        FrameError::new(ErrorCode::BadBody, "body is neither JSON nor UTF-8 text")
    })?;
    let send = ops::Send::check(&gw.limits, DOOR, None, vec![user.to_string()], None, &body)?;
    Ok(encode(&send.run(&gw.router).await))
}

/// `mrc.grp.send`: `{"group":"...","from":"...","id":"...","body":...}`. Backends are
/// trusted: the group's send policy is not checked against `from`.
async fn on_group(gw: &Gateway, payload: &[u8]) -> Result<Bytes, FrameError> {
    let request: GroupSendRequest<'_> = crate::protocol::decode(payload)?;
    let (from, group, id) = (request.from, &request.group, request.id);
    let send = ops::GroupSend::check(&gw.limits, DOOR, from, group, id, request.body)?;
    Ok(encode(&send.run(&gw.router, None).await?))
}

/// `mrc.broadcast`: `{"body":...,"from"?,"id"?,"gateways"?:[...]}`.
async fn on_broadcast(gw: &Gateway, payload: &[u8]) -> Result<Bytes, FrameError> {
    let request: BroadcastRequest<'_> = crate::protocol::decode(payload)?;
    let (from, id, gateways) = (request.from, request.id, request.gateways);
    let broadcast = ops::Broadcast::check(&gw.limits, DOOR, from, id, request.body, gateways)?;
    Ok(encode(&broadcast.run(gw).await?))
}
