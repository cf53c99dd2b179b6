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

use super::broadcast;
use super::route::Message;
use super::Gateway;
use crate::ident::GroupId;
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

/// Routes a checked message and encodes the report, or the reason it was refused.
async fn route(gw: &Gateway, message: Result<Message, FrameError>) -> Bytes {
    match message {
        Ok(message) => {
            telemetry::message_in("nats");
            encode(&gw.router.route(&message).await)
        }
        Err(e) => error_reply(&e),
    }
}

/// `mrc.send`: `{"to":[...],"from":"...","id":"...","body":...}`.
async fn on_send(gw: &Gateway, payload: &[u8]) -> Bytes {
    let request: SendRequest<'_> = match crate::protocol::decode(payload) {
        Ok(request) => request,
        Err(e) => return error_reply(&e),
    };
    route(
        gw,
        gw.limits
            .message(request.from, request.to, request.id, request.body),
    )
    .await
}

/// `mrc.to.<user>`: the payload is the body. JSON passes as it is; other UTF-8 text
/// becomes a JSON string; anything else is refused with `bad_body`.
async fn on_raw(gw: &Gateway, msg: &NatsMessage) -> Bytes {
    let user = match gw.subjects.to_user(&msg.subject) {
        Ok(user) => user,
        Err(e) => {
            return error_reply(&FrameError::new(
                ErrorCode::BadId,
                format!("receiver token: {e}"),
            ))
        }
    };
    let Some(body) = body_from_bytes(&msg.payload) else {
        return error_reply(&FrameError::new(
            ErrorCode::BadBody,
            "body is neither JSON nor UTF-8 text",
        ));
    };
    route(
        gw,
        gw.limits.message(None, vec![user.to_string()], None, &body),
    )
    .await
}

/// `mrc.grp.send`: `{"group":"...","from":"...","id":"...","body":...}`. Backends are
/// trusted: the group's send policy is not checked against `from`.
async fn on_group(gw: &Gateway, payload: &[u8]) -> Bytes {
    let request: GroupSendRequest<'_> = match crate::protocol::decode(payload) {
        Ok(request) => request,
        Err(e) => return error_reply(&e),
    };
    let group = match GroupId::new(&request.group) {
        Ok(group) => group,
        Err(e) => return error_reply(&FrameError::new(ErrorCode::BadId, format!("group: {e}"))),
    };
    let message = match gw
        .limits
        .group_message(request.from, request.id, request.body)
    {
        Ok(message) => message,
        Err(e) => return error_reply(&e),
    };
    telemetry::message_in("nats");
    match gw.router.route_group(&message, &group, None).await {
        Ok(report) => encode(&report),
        Err(e) => error_reply(&e),
    }
}

/// `mrc.broadcast`: `{"body":...,"from"?,"id"?,"gateways"?:[...]}`.
async fn on_broadcast(gw: &Gateway, payload: &[u8]) -> Bytes {
    let request: BroadcastRequest<'_> = match crate::protocol::decode(payload) {
        Ok(request) => request,
        Err(e) => return error_reply(&e),
    };
    let message = match gw
        .limits
        .group_message(request.from, request.id, request.body)
    {
        Ok(message) => message,
        Err(e) => return error_reply(&e),
    };
    telemetry::message_in("nats");
    match broadcast::fan_out(gw, &message, request.gateways.as_deref()).await {
        Ok(report) => encode(&report),
        Err(e) => error_reply(&e),
    }
}
