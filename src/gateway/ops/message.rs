//! The messaging operations: a send to users, a send to a group, a broadcast.
//!
//! Each is two steps. `check` validates the request against the caller's rights and the
//! limits (receivers, body size, ids), counts the message in for its door and returns an
//! owned operation, so a door can answer a refusal at once and carry the operation out
//! wherever it likes (a client's connection spawns it, HTTP and NATS await it). `run`
//! carries it out.

use std::time::Instant;

use serde_json::value::RawValue;

use super::{Caller, Ops};
use crate::gateway::broadcast;
use crate::gateway::limits::Limits;
use crate::gateway::route::Message;
use crate::ident::{GroupId, MessageId, UserId};
use crate::protocol::client::{FrameError, Report};
use crate::protocol::code::ErrorCode;
use crate::protocol::inbox::Offline;
use crate::protocol::nats::{BroadcastReport, SendRequest};
use crate::telemetry::{self, Routed};

/// A checked message to users, and what becomes of it for receivers not online.
pub(crate) struct Send {
    message: Message,
    offline: Offline,
    /// Acknowledged delivery: stored for every receiver, pushed from the inbox.
    durable: bool,
}

impl Send {
    /// `request.from` is what the request names (a user caller sends only as itself).
    pub(crate) fn check(
        ops: &Ops,
        door: &'static str,
        caller: &Caller,
        request: SendRequest<'_>,
    ) -> Result<Self, FrameError> {
        let SendRequest {
            to,
            from,
            id,
            body,
            offline,
            durable,
        } = request;
        let limits = &ops.limits;
        let error = |code, message: String| FrameError::new(code, message).with_id(id.clone());
        let from = caller.sender(from).map_err(|e| e.with_id(id.clone()))?;
        if to.is_empty() {
            return Err(error(ErrorCode::BadFrame, "`to` lists no receiver".into()));
        }
        if to.len() > limits.max_receivers {
            let message = format!("{} receivers, limit {}", to.len(), limits.max_receivers);
            return Err(error(ErrorCode::TooManyReceivers, message));
        }
        let message = message(limits, from, id, body)?;
        telemetry::message_in(door);
        let offline = ops.inbox.offline(offline);
        Ok(Send {
            message: Message { to, ..message },
            offline,
            durable,
        })
    }

    /// Routes it, then stores it for receivers not online when asked: the per-receiver
    /// report. A durable send is stored for every receiver instead, and the gateways of
    /// those online push it from the inbox.
    pub(crate) async fn run(self, ops: &Ops) -> Report {
        let started = Instant::now();
        if self.durable {
            let report = ops.inbox.store_all(ops, &self.message).await;
            telemetry::routed(Routed::Durable, started.elapsed());
            return report;
        }
        let mut report = ops.router.route(&self.message).await;
        if self.offline == Offline::Store {
            let inbox = &ops.inbox;
            inbox.store_offline(ops, &self.message, &mut report).await;
        }
        telemetry::routed(Routed::Direct, started.elapsed());
        report
    }
}

/// A checked message to a group.
pub(crate) struct GroupSend {
    group: GroupId,
    message: Message,
    /// The sending user, whose right to send the group's policy checks (`None`: a
    /// trusted backend).
    by: Option<UserId>,
}

impl GroupSend {
    pub(crate) fn check(
        ops: &Ops,
        door: &'static str,
        caller: &Caller,
        from: Option<String>,
        group: &str,
        id: Option<String>,
        body: &RawValue,
    ) -> Result<Self, FrameError> {
        let group = GroupId::new(group).map_err(|e| {
            FrameError::new(ErrorCode::BadId, format!("group: {e}")).with_id(id.clone())
        })?;
        let from = caller.sender(from).map_err(|e| e.with_id(id.clone()))?;
        let message = message(&ops.limits, from, id, body)?;
        telemetry::message_in(door);
        let by = caller.user().cloned();
        Ok(GroupSend { group, message, by })
    }

    /// Routes it to the group's online members.
    pub(crate) async fn run(self, ops: &Ops) -> Result<Report, FrameError> {
        let (started, by) = (Instant::now(), self.by.as_ref());
        let report = ops.router.route_group(&self.message, &self.group, by).await;
        telemetry::routed(Routed::Group, started.elapsed());
        report
    }
}

/// A checked message to every online session (backends only).
pub(crate) struct Broadcast {
    message: Message,
    gateways: Option<Vec<String>>,
}

impl Broadcast {
    /// Backends only: a user caller is refused.
    pub(crate) fn check(
        ops: &Ops,
        door: &'static str,
        caller: &Caller,
        from: Option<String>,
        id: Option<String>,
        body: &RawValue,
        gateways: Option<Vec<String>>,
    ) -> Result<Self, FrameError> {
        if let Caller::User(_) = caller {
            let message = "broadcasts need the API key";
            return Err(FrameError::new(ErrorCode::Forbidden, message));
        }
        let message = message(&ops.limits, from, id, body)?;
        telemetry::message_in(door);
        Ok(Broadcast { message, gateways })
    }

    /// Hands it to every gateway that holds sessions (or the ones named).
    pub(crate) async fn run(self, ops: &Ops) -> Result<BroadcastReport, FrameError> {
        let only = self.gateways.as_deref();
        broadcast::fan_out(&ops.centers, &ops.broadcasts, &self.message, only).await
    }
}

/// What every message shares: body size, the sender's id, the message id.
fn message(
    limits: &Limits,
    from: Option<String>,
    id: Option<String>,
    body: &RawValue,
) -> Result<Message, FrameError> {
    let error = |code, message: String| FrameError::new(code, message).with_id(id.clone());
    let size = body.get().len();
    if size > limits.max_body_bytes {
        let message = format!("body of {size} bytes, limit {}", limits.max_body_bytes);
        return Err(error(ErrorCode::TooLarge, message));
    }
    if let Some(from) = &from {
        if from.len() > limits.max_id_bytes || UserId::check(from).is_err() {
            return Err(error(
                ErrorCode::BadId,
                format!("from {from:?} is not a valid user id"),
            ));
        }
    }
    let message_id = match &id {
        Some(raw) => {
            MessageId::new(raw).map_err(|e| error(ErrorCode::BadId, format!("id: {e}")))?
        }
        None => MessageId::generate(),
    };
    Ok(Message {
        id: message_id,
        from,
        to: Vec::new(),
        body: body.to_owned(),
        dedupe: id.is_some(),
    })
}
