//! Backend ingress: `mrc.send` (JSON send requests, answered with the per-receiver report),
//! `mrc.to.<user>` (a raw body to one user), `mrc.grp.send` (a message to a group),
//! `mrc.broadcast` (a message to everyone online) and `mrc.inbox.fetch` / `mrc.inbox.ack`
//! (a user's stored messages). All
//! are queue subscriptions shared by every gateway, so plain `nats pub` / `nats req` reach
//! exactly one of them.

use std::sync::Arc;

use async_nats::{Message as NatsMessage, Subscriber};
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::ops::{self, Caller, Ops};
use crate::connection::Nats;
use crate::protocol::body_from_bytes;
use crate::protocol::client::FrameError;
use crate::protocol::code::ErrorCode;
use crate::protocol::group::GroupSendRequest;
use crate::protocol::inbox::{AckRequest, FetchRequest};
use crate::protocol::nats::{encode, BroadcastRequest, ErrorReply, SendRequest};
use crate::protocol::service_error;
use crate::subject::{Subjects, GATEWAY_QUEUE, INBOX_ACK, INBOX_FETCH};
use crate::telemetry;

/// What the NATS door uses.
pub(crate) struct Ingress {
    pub(crate) ops: Arc<Ops>,
    pub(crate) client: Nats,
    pub(crate) subjects: Subjects,
    /// Backend messages routed at once.
    pub(crate) in_flight: usize,
    pub(crate) shutdown: CancellationToken,
    /// Messages taken finish under it when the gateway stops.
    pub(crate) tracker: TaskTracker,
}

/// The door's subscriptions, known to nats-server before the gateway says it is ready
/// (a backend message sent on `ready` must not find nobody to answer it).
pub(crate) struct Subscribed {
    door: Ingress,
    sends: Subscriber,
    raw: Subscriber,
    groups: Subscriber,
    broadcasts: Subscriber,
    fetches: Subscriber,
    acks: Subscriber,
}

/// Subscribes to every backend subject, then waits until nats-server has the
/// subscriptions (a flush: its answer comes after theirs).
pub(crate) async fn subscribe(door: Ingress) -> anyhow::Result<Subscribed> {
    let (client, subjects) = (&door.client, &door.subjects);
    let subscribe = |subject: String| client.queue_subscribe(subject, GATEWAY_QUEUE.into());
    let sends = subscribe(subjects.send()).await?;
    let raw = subscribe(subjects.to_all()).await?;
    let groups = subscribe(subjects.group_send()).await?;
    let broadcasts = subscribe(subjects.broadcast()).await?;
    let fetches = subscribe(subjects.inbox(INBOX_FETCH)).await?;
    let acks = subscribe(subjects.inbox(INBOX_ACK)).await?;
    // The gateway says ready next: a backend that believes it must find these subscribed.
    let timeout = door.ops.centers.timeout;
    crate::connection::confirm_subscriptions(client, subjects, timeout, &door.shutdown).await;
    Ok(Subscribed {
        door,
        sends,
        raw,
        groups,
        broadcasts,
        fetches,
        acks,
    })
}

/// Takes backend messages until the gateway stops; messages already taken finish under
/// the gateway's task tracker.
pub(crate) async fn run(subscribed: Subscribed) -> anyhow::Result<()> {
    let Subscribed {
        door,
        mut sends,
        mut raw,
        mut groups,
        mut broadcasts,
        mut fetches,
        mut acks,
    } = subscribed;
    let (client, subjects) = (&door.client, &door.subjects);
    let in_flight = Arc::new(Semaphore::new(door.in_flight));
    let stop = crate::shutdown::Cancelled::new(&door.shutdown);
    tokio::pin!(stop);
    loop {
        let (msg, kind) = tokio::select! {
            () = &mut stop => break,
            msg = sends.next() => match msg { Some(m) => (m, Kind::Send), None => break },
            msg = raw.next() => match msg { Some(m) => (m, Kind::Raw), None => break },
            msg = groups.next() => match msg { Some(m) => (m, Kind::Group), None => break },
            msg = broadcasts.next() => match msg { Some(m) => (m, Kind::Broadcast), None => break },
            msg = fetches.next() => match msg { Some(m) => (m, Kind::Fetch), None => break },
            msg = acks.next() => match msg { Some(m) => (m, Kind::Ack), None => break },
        };
        let permit = in_flight
            .clone()
            .acquire_owned()
            .await
            .expect("the ingress semaphore is never closed");
        let (ops, client, subjects) = (door.ops.clone(), client.clone(), subjects.clone());
        door.tracker.spawn(async move {
            let reply = match kind {
                Kind::Send => on_send(&ops, &msg.payload).await,
                Kind::Raw => on_raw(&ops, &subjects, &msg).await,
                Kind::Group => on_group(&ops, &msg.payload).await,
                Kind::Broadcast => on_broadcast(&ops, &msg.payload).await,
                Kind::Fetch => on_fetch(&ops, &msg.payload).await,
                Kind::Ack => on_ack(&ops, &msg.payload).await,
            };
            if let Some(reply_to) = msg.reply {
                let sent = match reply {
                    Ok(reply) => client.publish(reply_to, reply).await,
                    Err(e) => {
                        let (headers, body) = error_reply(e);
                        client.publish_with_headers(reply_to, headers, body).await
                    }
                };
                if let Err(e) = sent {
                    tracing::debug!(error = %e, "ingress reply not sent");
                }
            } else if let Err(e) = reply {
                telemetry::error(e.code);
            }
            drop(permit);
        });
    }
    // Stop taking new messages; the other gateways' members of the queue group get them.
    let _ = sends.unsubscribe().await;
    let _ = raw.unsubscribe().await;
    let _ = groups.unsubscribe().await;
    let _ = broadcasts.unsubscribe().await;
    let _ = fetches.unsubscribe().await;
    let _ = acks.unsubscribe().await;
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
    Fetch,
    Ack,
}

/// An error reply: the JSON body, and the `Nats-Service-Error*` headers NATS tooling reads.
fn error_reply(e: FrameError) -> (async_nats::HeaderMap, Bytes) {
    telemetry::error(e.code);
    let reply = ErrorReply::new(e.code, e.message);
    (service_error::headers(&reply.error), encode(&reply))
}

/// `mrc.send`: `{"to":[...],"from":"...","id":"...","body":...}`.
async fn on_send(ops: &Ops, payload: &[u8]) -> Result<Bytes, FrameError> {
    let request: SendRequest<'_> = crate::protocol::decode(payload)?;
    let send = ops::Send::check(ops, DOOR, &Caller::Backend, request)?;
    Ok(encode(&send.run(ops).await))
}

/// `mrc.to.<user>`: the payload is the body. JSON passes as it is; other UTF-8 text
/// becomes a JSON string; anything else is refused with `bad_body`.
async fn on_raw(ops: &Ops, subjects: &Subjects, msg: &NatsMessage) -> Result<Bytes, FrameError> {
    let user = subjects
        .to_user(&msg.subject)
        .map_err(|e| FrameError::new(ErrorCode::BadId, format!("receiver token: {e}")))?;
    let body = body_from_bytes(&msg.payload).ok_or_else(|| {
        FrameError::new(ErrorCode::BadBody, "body is neither JSON nor UTF-8 text")
    })?;
    let request = SendRequest {
        to: vec![user.to_string()],
        from: None,
        id: None,
        body: &body,
        offline: None,
        durable: false,
    };
    let send = ops::Send::check(ops, DOOR, &Caller::Backend, request)?;
    Ok(encode(&send.run(ops).await))
}

/// `mrc.grp.send`: `{"group":"...","from":"...","id":"...","body":...}`. Backends are
/// trusted: the group's send policy is not checked against `from`.
async fn on_group(ops: &Ops, payload: &[u8]) -> Result<Bytes, FrameError> {
    let request: GroupSendRequest<'_> = crate::protocol::decode(payload)?;
    let (from, group, id) = (request.from, &request.group, request.id);
    let caller = &Caller::Backend;
    let send = ops::GroupSend::check(ops, DOOR, caller, from, group, id, request.body)?;
    Ok(encode(&send.run(ops).await?))
}

/// `mrc.broadcast`: `{"body":...,"from"?,"id"?,"gateways"?:[...]}`.
async fn on_broadcast(ops: &Ops, payload: &[u8]) -> Result<Bytes, FrameError> {
    let request: BroadcastRequest<'_> = crate::protocol::decode(payload)?;
    let (from, id, gateways) = (request.from, request.id, request.gateways);
    let (caller, body) = (&Caller::Backend, request.body);
    let broadcast = ops::Broadcast::check(ops, DOOR, caller, from, id, body, gateways)?;
    Ok(encode(&broadcast.run(ops).await?))
}

/// `mrc.inbox.fetch`: `{"user","since"?,"limit"?}`, a user's stored messages.
async fn on_fetch(ops: &Ops, payload: &[u8]) -> Result<Bytes, FrameError> {
    let request: FetchRequest = crate::protocol::decode(payload)?;
    let (user, since, limit) = (&request.user, request.since, request.limit);
    let reply = ops
        .inbox
        .fetch(&Caller::Backend, user, since, limit)
        .await?;
    Ok(encode(&reply))
}

/// `mrc.inbox.ack`: `{"user","seq"}`, removes a user's stored messages up to `seq`.
async fn on_ack(ops: &Ops, payload: &[u8]) -> Result<Bytes, FrameError> {
    let request: AckRequest = crate::protocol::decode(payload)?;
    let reply = ops
        .inbox
        .ack(&Caller::Backend, &request.user, request.seq)
        .await?;
    Ok(encode(&reply))
}
