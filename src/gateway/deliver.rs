//! Answers `mrc.gw.<me>.deliver`: one message for the listed receivers on this gateway.
//! The client frame is encoded once and shared by every session it goes to; the reply
//! says which receivers got it and which this gateway does not hold (a stale route).

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::session::Sessions;
use crate::pooled::Pool;
use crate::protocol::client::Frame;
use crate::protocol::compact::{self, Compact};
use crate::protocol::nats::{encode, DeliverReply, DeliverRequest, ErrorReply};
use crate::wire::{Delivery, Wire};

/// Pushes one message to the local sessions of its receivers.
pub(crate) fn deliver<'a>(
    sessions: &Sessions,
    request: &'a DeliverRequest<'_>,
) -> DeliverReply<'a> {
    let frame = Frame::Msg {
        id: &request.id,
        from: request.from.as_deref(),
        to: &request.to,
        group: request.group.as_deref(),
        broadcast: false,
        ts: request.ts,
        body: request.body,
        seq: None,
    }
    .encode();
    let mut reply = DeliverReply::default();
    let recent = &sessions.recent;
    let id = &*request.id;
    let indexed = request.rcpt.iter().filter_map(|&i| request.to.get(i));
    let receivers = indexed
        .map(String::as_str)
        .chain(request.members.iter().map(|m| &**m));
    // A repeat of a sender-chosen id was pushed already: delivered, not pushed again.
    let mut repeated = Vec::new();
    let fresh = receivers.filter(|rcpt| {
        let first = !request.dedupe || recent.claim(id, rcpt);
        if !first {
            repeated.push(Cow::Borrowed(*rcpt));
        }
        first
    });
    sessions.push_each(fresh, &frame, |rcpt, delivered| {
        if delivered {
            reply.delivered.push(rcpt.into());
        } else {
            if request.dedupe {
                recent.release(id, rcpt);
            }
            reply.absent.push(rcpt.into());
        }
    });
    reply.delivered.extend(repeated);
    reply
}

/// Serves deliver requests on `subject` until `stopped`, each answered as it is read, on
/// the deliver connection's task (pushing to sessions only queues): the replies go through
/// `pool` (pooled when the requester is a gateway). Subscribed when this returns Ok.
pub(crate) fn serve(
    wire: &Wire,
    subject: &str,
    pool: Arc<Pool>,
    sessions: Arc<Sessions>,
    stopped: CancellationToken,
) -> anyhow::Result<impl std::future::Future<Output = anyhow::Result<()>>> {
    let sid = wire.subscribe(
        subject,
        Arc::new(move |request: Delivery<'_>| {
            // Pushing to sessions only queues: the gateway's deliver connection writes the
            // frames into idle sessions' sockets after its poll (`Wire::connect_around`).
            let reply = answer(&sessions, &request.payload());
            if let Some(reply_to) = request.reply() {
                pool.reply(reply_to, reply);
            }
        }),
    )?;
    let wire = wire.clone();
    Ok(async move {
        stopped.cancelled().await;
        wire.unsubscribe(sid);
        Ok(())
    })
}

/// The reply to one deliver request, or to a batch of them (a JSON array, or a compact
/// batch, answered by a JSON array).
fn answer(sessions: &Sessions, payload: &[u8]) -> Bytes {
    let reply = if compact::is_compact(payload) {
        compact::decode(payload).map(|decoded| match decoded {
            Compact::One(request) => deliver(sessions, &request).encode(),
            Compact::Batch(requests) => answer_all(sessions, &requests),
        })
    } else if crate::batch::is_batch(payload) {
        crate::protocol::decode::<Vec<DeliverRequest<'_>>>(payload)
            .map(|requests| answer_all(sessions, &requests))
    } else {
        crate::protocol::decode::<DeliverRequest<'_>>(payload)
            .map(|r| deliver(sessions, &r).encode())
    };
    reply.unwrap_or_else(|e| encode(&ErrorReply::new(e.code, e.message)))
}

/// One reply per request, as a JSON array in their order, written into one buffer.
fn answer_all(sessions: &Sessions, requests: &[DeliverRequest<'_>]) -> Bytes {
    let mut out = Vec::with_capacity(2 + 48 * requests.len());
    out.push(b'[');
    for (i, request) in requests.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        deliver(sessions, request).write(&mut out);
    }
    out.push(b']');
    out.into()
}
