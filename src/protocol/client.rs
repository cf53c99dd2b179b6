//! Frames between a client and its gateway: one JSON object per WebSocket text message.
//! docs/PROTOCOL.md is the reader's version of this file.
//!
//! Inbound frames are decoded by [`parse`] into a [`Request`] in two steps (a flat struct,
//! then a check per `op`) so every mistake maps to a stable [`ErrorCode`] and the body
//! stays a borrowed `&RawValue` (serde's tagged enums cannot hold one).

use std::borrow::Cow;
use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::code::{ErrorCode, Outcome};
use super::group::{Counts, GroupRequest, Policy};
use super::inbox::Offline;
use crate::subject::{
    GRP_ADD, GRP_CREATE, GRP_DELETE, GRP_JOIN, GRP_LEAVE, GRP_MEMBERS, GRP_REMOVE,
};

/// A decoded client frame.
#[derive(Debug)]
pub enum Request<'a> {
    /// Bind this connection to a user: `{"op":"login","token":"<jwt>"}`, or
    /// `{"op":"login","user":"alice"}` on a gateway in insecure dev-auth mode.
    Login {
        user: Option<String>,
        token: Option<String>,
        /// The device class (`mobile`, `desktop`, `web`...), for the `device` login policy.
        device: Option<String>,
    },
    /// Send `body` to `to` (`{"op":"send","to":["bob"],"body":"hi","id":"m1"}`);
    /// `offline` says what becomes of it for receivers who are not online; `durable`
    /// asks for acknowledged delivery (stored for every receiver until acked).
    Send {
        to: Vec<String>,
        id: Option<String>,
        body: &'a RawValue,
        offline: Option<Offline>,
        durable: bool,
    },
    /// `fetch`: this user's stored messages after `since`, answered by a `result`.
    Fetch {
        id: Option<String>,
        since: u64,
        limit: Option<usize>,
    },
    /// `ack`: this user's stored messages up to `seq` are done with (removed).
    Ack { id: Option<String>, seq: u64 },
    /// Liveness check, answered by `pong` with the same `id`.
    Ping { id: Option<String> },
    /// A group operation, answered by a `result` frame: `group_create`, `group_delete`,
    /// `group_join`, `group_leave`, `group_add`, `group_remove`, `group_members`.
    /// `endpoint` is the centers' endpoint (`create`...).
    Group {
        endpoint: &'static str,
        id: Option<String>,
        request: GroupRequest,
    },
    /// `group_list`: the groups of this user, answered by a `result` frame.
    GroupList { id: Option<String> },
    /// `presence`: the online status of `users`, answered by a `result` frame.
    Presence {
        id: Option<String>,
        users: Vec<String>,
    },
    /// `presence_subscribe`: presence events of `users` from now on (`result` says which
    /// were allowed); `presence_unsubscribe` stops them.
    PresenceSubscribe {
        id: Option<String>,
        users: Vec<String>,
        subscribe: bool,
    },
    /// `group_send`: `body` to every other member of `group`, answered by a `report`.
    GroupSend {
        group: String,
        id: Option<String>,
        body: &'a RawValue,
    },
}

/// Client ops on groups and the centers' endpoints they map to.
const GROUP_OPS: [(&str, &str); 7] = [
    ("group_create", GRP_CREATE),
    ("group_delete", GRP_DELETE),
    ("group_join", GRP_JOIN),
    ("group_leave", GRP_LEAVE),
    ("group_add", GRP_ADD),
    ("group_remove", GRP_REMOVE),
    ("group_members", GRP_MEMBERS),
];

/// Why a frame was refused; sent back as an `error` frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    pub code: ErrorCode,
    pub message: String,
    /// The frame's `id`, when it had one, so the client can match the error.
    pub id: Option<String>,
}

impl Request<'_> {
    /// The frame's `id`, if it had one.
    pub(crate) fn id(&self) -> Option<&str> {
        match self {
            Request::Login { .. } => None,
            Request::Send { id, .. }
            | Request::Fetch { id, .. }
            | Request::Ack { id, .. }
            | Request::Ping { id }
            | Request::Group { id, .. }
            | Request::GroupList { id }
            | Request::Presence { id, .. }
            | Request::PresenceSubscribe { id, .. }
            | Request::GroupSend { id, .. } => id.as_deref(),
        }
    }
}

impl From<serde_json::Error> for FrameError {
    fn from(e: serde_json::Error) -> Self {
        let code = if e.is_data() {
            ErrorCode::BadFrame
        } else {
            ErrorCode::BadJson
        };
        FrameError::new(code, e.to_string())
    }
}

impl FrameError {
    /// The same error, for the frame with `id`.
    pub(crate) fn with_id(mut self, id: Option<String>) -> Self {
        self.id = id;
        self
    }

    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        FrameError {
            code,
            message: message.into(),
            id: None,
        }
    }
}

#[derive(Deserialize)]
struct Flat<'a> {
    #[serde(borrow)]
    op: Option<Cow<'a, str>>,
    user: Option<String>,
    token: Option<String>,
    device: Option<String>,
    to: Option<Vec<String>>,
    id: Option<String>,
    group: Option<String>,
    members: Option<Vec<String>>,
    users: Option<Vec<String>>,
    policy: Option<Policy>,
    offline: Option<Offline>,
    durable: Option<bool>,
    since: Option<u64>,
    limit: Option<usize>,
    seq: Option<u64>,
    /// Present (even `null`) or absent: `null` is a body like any other.
    #[serde(default, borrow, deserialize_with = "present")]
    body: Option<&'a RawValue>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// Decodes one inbound frame. Unknown fields are ignored so clients can be newer than us.
pub fn parse(frame: &str) -> Result<Request<'_>, FrameError> {
    let flat: Flat<'_> = serde_json::from_str(frame).map_err(FrameError::from)?;
    let missing = |field: &str, id: &Option<String>| FrameError {
        code: ErrorCode::BadFrame,
        message: format!("missing field `{field}`"),
        id: id.clone(),
    };
    match flat.op.as_deref() {
        Some("login") => match (flat.user, flat.token) {
            (None, None) => Err(missing("token", &flat.id)),
            (user, token) => Ok(Request::Login {
                user,
                token,
                device: flat.device,
            }),
        },
        Some("send") => {
            let to = flat.to.ok_or_else(|| missing("to", &flat.id))?;
            let body = flat.body.ok_or_else(|| missing("body", &flat.id))?;
            Ok(Request::Send {
                to,
                id: flat.id,
                body,
                offline: flat.offline,
                durable: flat.durable.unwrap_or(false),
            })
        }
        Some("fetch") => Ok(Request::Fetch {
            id: flat.id,
            since: flat.since.unwrap_or(0),
            limit: flat.limit,
        }),
        Some("ack") => {
            let seq = flat.seq.ok_or_else(|| missing("seq", &flat.id))?;
            Ok(Request::Ack { id: flat.id, seq })
        }
        Some("ping") => Ok(Request::Ping { id: flat.id }),
        Some("group_list") => Ok(Request::GroupList { id: flat.id }),
        Some(op @ ("presence" | "presence_subscribe" | "presence_unsubscribe")) => {
            let users = flat.users.ok_or_else(|| missing("users", &flat.id))?;
            Ok(match op {
                "presence" => Request::Presence { id: flat.id, users },
                _ => Request::PresenceSubscribe {
                    id: flat.id,
                    users,
                    subscribe: op == "presence_subscribe",
                },
            })
        }
        Some("group_send") => {
            let group = flat.group.ok_or_else(|| missing("group", &flat.id))?;
            let body = flat.body.ok_or_else(|| missing("body", &flat.id))?;
            Ok(Request::GroupSend {
                group,
                id: flat.id,
                body,
            })
        }
        Some(op) if GROUP_OPS.iter().any(|(name, _)| *name == op) => {
            let endpoint = GROUP_OPS
                .iter()
                .find(|(name, _)| *name == op)
                .map(|(_, e)| *e);
            let group = flat.group.ok_or_else(|| missing("group", &flat.id))?;
            let request = GroupRequest {
                group,
                members: flat.members.unwrap_or_default(),
                policy: flat.policy,
                ..GroupRequest::default()
            };
            Ok(Request::Group {
                endpoint: endpoint.expect("found above"),
                id: flat.id,
                request,
            })
        }
        Some(other) => Err(FrameError {
            code: ErrorCode::UnknownOp,
            message: format!("unknown op `{other}`"),
            id: flat.id,
        }),
        None => Err(missing("op", &flat.id)),
    }
}

/// The claims MRC reads from a client token (JWT). `exp` is required and, like `nbf`,
/// `iss` and `aud`, checked by the token library.
#[derive(Debug, Deserialize)]
pub(crate) struct TokenClaims {
    /// The user id.
    pub sub: String,
    /// Space-separated scopes; `mrc:send` allows the HTTP send API.
    #[serde(default)]
    pub scope: Option<String>,
}

/// The per-receiver result of one send: the `report` frame and the `mrc.send` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The message id (the client's, or the one the gateway generated).
    pub id: String,
    /// Receiver id → outcome; each distinct receiver appears once. For a group message,
    /// every member but the sender when the group is small, else empty (see `counts`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub status: BTreeMap<String, Outcome>,
    /// The group of a group message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Outcomes counted, for group messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counts: Option<Counts>,
}

impl Report {
    /// The report of a direct message.
    pub fn direct(id: String, status: BTreeMap<String, Outcome>) -> Self {
        Report {
            id,
            status,
            group: None,
            counts: None,
        }
    }
}

/// `POST /v1/presence`: the users asked about.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct PresenceBody {
    pub users: Vec<String>,
}

/// `GET /v1/users/{id}`: is a user online, and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserStatus {
    pub user: String,
    pub online: bool,
    /// Live sessions across the cluster.
    pub sessions: usize,
    /// Sessions per gateway.
    pub gateways: BTreeMap<String, usize>,
}

/// Frames a gateway sends to a client.
#[derive(Debug, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Frame<'a> {
    /// Login succeeded.
    Welcome {
        user: &'a str,
        session: &'a str,
        gateway: &'a str,
    },
    /// A message for this user.
    Msg {
        id: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        from: Option<&'a str>,
        /// The receivers of a direct message (empty, and left out, for a group message).
        #[serde(skip_serializing_if = "<[String]>::is_empty")]
        to: &'a [String],
        #[serde(skip_serializing_if = "Option::is_none")]
        group: Option<&'a str>,
        /// A broadcast to every online user.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        broadcast: bool,
        ts: u64,
        body: &'a RawValue,
        /// A stored message's sequence number in the receiver's inbox: acknowledge it
        /// with `ack` (absent for messages that were not stored).
        #[serde(skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
    },
    /// The answer to a group operation: the centers' reply as it is.
    Result {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
        result: &'a serde_json::Value,
    },
    /// What happened to each receiver of a message this client sent.
    Report {
        #[serde(flatten)]
        report: &'a Report,
    },
    Pong {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
    },
    Error {
        code: ErrorCode,
        message: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
    },
    /// The gateway is closing this connection (shutdown, slow consumer...).
    Bye { reason: &'a str },
    /// A newer login of the same user replaced this session (login policy).
    Kicked { reason: &'a str },
    /// A watched user came online or went offline.
    Presence {
        user: &'a str,
        /// `online` or `offline` (named `state`: `status` is the report's map).
        state: super::nats::PresenceStatus,
        ts: u64,
    },
}

impl Frame<'_> {
    /// The frame as the bytes of one WebSocket text message (always valid UTF-8).
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(self.size_hint());
        if !write::routed(self, &mut out) {
            serde_json::to_writer(&mut out, self).expect("frames contain only serializable data");
        }
        super::into_bytes(out)
    }

    /// About the encoded size (field names, quotes and numbers in the constant), so that
    /// the buffer of a routed message's frame is allocated once.
    fn size_hint(&self) -> usize {
        let ids = |ids: &mut dyn Iterator<Item = &str>| ids.map(|s| s.len() + 3).sum::<usize>();
        let text = |s: Option<&str>| s.map_or(0, str::len);
        160 + match self {
            Frame::Msg {
                id,
                from,
                to,
                group,
                body,
                ..
            } => {
                id.len()
                    + text(*from)
                    + text(*group)
                    + ids(&mut to.iter().map(String::as_str))
                    + body.get().len()
            }
            Frame::Report { report } => {
                report.id.len()
                    + text(report.group.as_deref())
                    + ids(&mut report.status.keys().map(|k| k.as_str()))
                    + 16 * report.status.len()
            }
            _ => 64,
        }
    }
}

impl<'a> From<&'a FrameError> for Frame<'a> {
    fn from(e: &'a FrameError) -> Self {
        Frame::Error {
            code: e.code,
            message: &e.message,
            id: e.id.as_deref(),
        }
    }
}

/// Inbound-frame view used by clients of a gateway (the CLI, tests): any frame the gateway
/// sends, with the body kept raw.
#[derive(Debug, Deserialize)]
pub struct Incoming {
    pub op: String,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub to: Vec<String>,
    #[serde(default)]
    pub ts: Option<u64>,
    #[serde(default)]
    pub body: Option<Box<RawValue>>,
    #[serde(default)]
    pub status: Option<BTreeMap<String, Outcome>>,
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub counts: Option<Counts>,
    #[serde(default)]
    pub state: Option<super::nats::PresenceStatus>,
    #[serde(default)]
    pub broadcast: bool,
    #[serde(default)]
    pub result: Option<serde_json::Value>,
    #[serde(default)]
    pub code: Option<ErrorCode>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub session: Option<String>,
    #[serde(default)]
    pub gateway: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
    /// A stored message's sequence number in the inbox.
    #[serde(default)]
    pub seq: Option<u64>,
}

/// Outbound-frame view used by clients of a gateway: what they send.
#[derive(Debug, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Outgoing<'a> {
    Login {
        #[serde(skip_serializing_if = "Option::is_none")]
        user: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        token: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        device: Option<&'a str>,
    },
    Send {
        to: &'a [String],
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
        body: &'a RawValue,
    },
    Ping {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
    },
}

impl Outgoing<'_> {
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("frames contain only serializable data")
    }
}

mod write;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod properties;
