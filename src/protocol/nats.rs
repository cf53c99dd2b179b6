//! Payloads on NATS subjects. All are JSON that `nats pub` / `nats req` can type by hand.
//! Subjects themselves are built in `crate::subject`.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::code::ErrorCode;
use super::digest::Digest;

/// `mrc.dir.register`: session `session` of `user` lives on `gateway`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisterRequest {
    pub user: String,
    pub session: String,
    pub gateway: String,
    /// The device class the client declared, for the `device` login policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// A gateway re-registering a session it holds: it never replaces another session.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reassert: bool,
}

/// `mrc.dir.unregister`: remove exactly this session (fencing: never another one).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UnregisterRequest {
    pub user: String,
    pub session: String,
}

/// Reply to register/unregister: how many sessions the user has now.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionsReply {
    pub sessions: usize,
    /// A reasserted session lost to a newer login: the gateway must close it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub kicked: bool,
}

/// `mrc.dir.presence`: are these users online? `by` is the asking user, whose right to
/// see each one is checked by the presence policy (`None`: a trusted backend).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PresenceRequest {
    pub users: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// Every allowed user appears in `users`; the others (and invalid ids) in `refused`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceReply {
    pub users: BTreeMap<String, UserPresence>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserPresence {
    pub online: bool,
    pub sessions: usize,
    /// When the oldest live session registered, ms since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<u64>,
}

/// `mrc.broadcast`: a message to every online user, or to those on some gateways.
#[derive(Debug, Deserialize)]
pub(crate) struct BroadcastRequest<'a> {
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub id: Option<String>,
    /// Only the sessions on these gateways (default: all).
    #[serde(default)]
    pub gateways: Option<Vec<String>>,
    #[serde(borrow)]
    pub body: &'a RawValue,
}

/// `mrc.gw.<gateway>.broadcast`: push this message to every session of that gateway.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct GatewayBroadcast<'a> {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    pub ts: u64,
    #[serde(borrow)]
    pub body: &'a RawValue,
}

/// A gateway queued a broadcast for this many sessions.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct BroadcastAccepted {
    pub sessions: usize,
}

/// The reply to `mrc.broadcast` (and `POST /v1/broadcast`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BroadcastReport {
    pub id: String,
    /// Gateways that queued the message.
    pub gateways: usize,
    /// Sessions it is queued for.
    pub sessions: usize,
    /// Gateways that did not answer or refused (e.g. too many broadcasts queued).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unavailable: Vec<String>,
}

/// `mrc.dir.gateways`: the gateways that hold sessions.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct GatewaysReply {
    pub gateways: Vec<String>,
}

/// `mrc.gw.<gateway>.kick`: close these sessions of `user` (a newer login replaced them).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct KickRequest {
    pub user: String,
    pub sessions: Vec<String>,
    pub reason: String,
}

/// The `reason` of a `KickRequest` for sessions a newer login replaced; the gateway closes
/// them with it.
pub(crate) const REPLACED: &str = "replaced";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct KickReply {
    pub kicked: usize,
}

/// `mrc.dir.purge`: remove every session of a gateway (it restarted or is stopping).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PurgeRequest {
    pub gateway: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PurgeReply {
    /// Sessions removed.
    pub removed: usize,
}

/// `mrc.dir.lookup`: where are these users? Many users in one request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LookupRequest {
    pub users: Vec<String>,
}

/// Most users in one look-up (and in one `mrc.dir.presence` request): centers refuse more,
/// gateways split larger look-ups into chunks of this size.
pub(crate) const MAX_LOOKUP_USERS: usize = 10_000;

/// Every requested user appears; an empty list means offline.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LookupReply {
    pub users: BTreeMap<String, Vec<Location>>,
}

/// One live session of a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    pub gateway: String,
    pub session: String,
    /// When the session registered, ms since the epoch.
    pub since: u64,
}

/// `mrc.gw.<gateway>.deliver`: one message for the receivers (`rcpt`) on that gateway.
/// Gateways send it in the compact form (`super::compact`); this JSON form is for hand
/// use. Fields borrow: the sending gateway encodes one per destination from the message
/// it routes without copying any id; the receiving one borrows `id`, `from`, `group` and
/// `members` (when unescaped) from the NATS payload.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct DeliverRequest<'a> {
    #[serde(borrow)]
    pub id: Cow<'a, str>,
    #[serde(
        borrow,
        default,
        deserialize_with = "borrowed_str",
        skip_serializing_if = "Option::is_none"
    )]
    pub from: Option<Cow<'a, str>>,
    /// Every receiver of a direct message, as the clients see it.
    #[serde(default)]
    pub to: Cow<'a, [String]>,
    /// The receivers this gateway should push to, as indexes into `to`.
    #[serde(default, skip_serializing_if = "<[usize]>::is_empty")]
    pub rcpt: Cow<'a, [usize]>,
    /// The group of a group message (then `to` is empty).
    #[serde(
        borrow,
        default,
        deserialize_with = "borrowed_str",
        skip_serializing_if = "Option::is_none"
    )]
    pub group: Option<Cow<'a, str>>,
    /// Group messages: the members this gateway should push to.
    #[serde(borrow, default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<Cow<'a, str>>,
    pub ts: u64,
    #[serde(borrow)]
    pub body: &'a RawValue,
    /// The sender chose the id: a receiver already pushed this id within the window is
    /// answered delivered and not pushed again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dedupe: bool,
}

/// An optional string borrowed from the payload when it has no escapes (serde borrows a
/// `Cow<str>` field, but not one inside an `Option`).
fn borrowed_str<'de: 'a, 'a, D>(deserializer: D) -> Result<Option<Cow<'a, str>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    struct Borrowed<'a>(#[serde(borrow)] Cow<'a, str>);
    Ok(Option::<Borrowed<'a>>::deserialize(deserializer)?.map(|b| b.0))
}

mod deliver_reply;
pub(crate) use deliver_reply::DeliverReply;

/// `mrc.send`: a backend's message. `id` and `from` are optional.
#[derive(Debug, Deserialize)]
pub(crate) struct SendRequest<'a> {
    pub to: Vec<String>,
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(borrow)]
    pub body: &'a RawValue,
    /// For receivers not online: `store` or `drop` (default: the gateway's `--offline`).
    #[serde(default)]
    pub offline: Option<super::inbox::Offline>,
    /// Acknowledged delivery: stored for every receiver, online or not, pushed from the
    /// inbox and kept until the receiver acks it.
    #[serde(default)]
    pub durable: bool,
}

/// Outbound form of [`SendRequest`], for the CLI and tests.
#[derive(Debug, Serialize)]
pub struct SendRequestOut<'a> {
    pub to: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a str>,
    pub body: &'a RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offline: Option<super::inbox::Offline>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub durable: bool,
}

/// `mrc.gw.<gateway>.hb`: the gateway is alive, and holds the sessions `digest` sums up.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Heartbeat {
    pub gateway: String,
    pub sessions: usize,
    /// Absent from gateways that do not reconcile: centers then compare nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<Digest>,
}

/// `mrc.gw.<gateway>.reconcile`: a center saw the directory disagree with the gateway's
/// heartbeats for several beats in a row; the gateway compares and repairs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ReconcileNudge {
    pub center: String,
    /// The directory's view of the gateway, as that center's mirror holds it.
    pub directory: Digest,
}

/// `mrc.dir.digests`: the directory's per-bucket digests of one gateway's sessions.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct DigestsRequest {
    pub gateway: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct DigestsReply {
    /// One per bucket, [`super::digest::BUCKETS`] of them.
    pub buckets: Vec<Digest>,
}

/// `mrc.dir.sessions`: the directory's sessions of one gateway in some buckets.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct GatewaySessionsRequest {
    pub gateway: String,
    pub buckets: Vec<usize>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct GatewaySessionsReply {
    pub sessions: Vec<HeldSession>,
}

/// One session as the directory holds it for a gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldSession {
    pub user: String,
    pub session: String,
}

/// `mrc.center.hello` / `here` / `bye`: a center starts, answers a hello, or stops.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CenterAnnounce {
    pub center: String,
    pub version: String,
}

/// `mrc.center.gateway-down`: a center removed a gateway's sessions.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct GatewayDown {
    pub gateway: String,
    pub removed: usize,
    pub center: String,
}

/// Online or offline, in a presence event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceStatus {
    Online,
    Offline,
}

/// `mrc.presence.<user>`: first session came up or last session went away.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Presence {
    pub user: String,
    pub status: PresenceStatus,
    /// The gateway whose session caused the change.
    pub gateway: String,
    pub ts: u64,
}

/// The error form of any reply: `{"error":{"code":"bad_id","message":"..."}}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorReply {
    pub error: ErrorBody,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
}

impl From<super::client::FrameError> for ErrorBody {
    fn from(e: super::client::FrameError) -> Self {
        ErrorReply::new(e.code, e.message).error
    }
}

impl ErrorReply {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorReply {
            error: ErrorBody {
                code,
                message: message.into(),
            },
        }
    }
}

/// Encodes any payload of this module.
pub fn encode<T: Serialize>(payload: &T) -> bytes::Bytes {
    super::to_json_bytes(payload, 128)
}

/// Why a reply could not be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReplyError {
    #[error("peer answered with an error: {0}")]
    Remote(ErrorBody),
    #[error("reply is not valid: {0}")]
    Malformed(#[from] serde_json::Error),
}

/// Decodes a reply that is either `T` or an [`ErrorReply`].
pub(crate) fn decode_reply<T: DeserializeOwned>(payload: &[u8]) -> Result<T, ReplyError> {
    // Fast path: what is not an error reply decodes straight into `T`, without the
    // buffering an untagged enum does (it was ~2% of a busy gateway's CPU).
    if !is_error_reply(payload) {
        if let Ok(value) = serde_json::from_slice(payload) {
            return Ok(value);
        }
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either<T> {
        Err(ErrorReply),
        Ok(T),
    }
    match serde_json::from_slice(payload)? {
        Either::Ok(v) => Ok(v),
        Either::Err(e) => Err(ReplyError::Remote(e.error)),
    }
}

/// Whether `payload` is an object whose first key is `error` (an [`ErrorReply`]).
fn is_error_reply(payload: &[u8]) -> bool {
    match payload.trim_ascii_start().split_first() {
        Some((b'{', rest)) => rest.trim_ascii_start().starts_with(b"\"error\""),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_replies_are_told_apart_by_their_first_key() {
        assert!(is_error_reply(
            br#"{"error":{"code":"bad_id","message":"x"}}"#
        ));
        assert!(is_error_reply(b" { \"error\" : {}}"));
        assert!(!is_error_reply(br#"{"delivered":[],"absent":[]}"#));
        assert!(!is_error_reply(b"[]"));
        assert!(!is_error_reply(b""));
        // An error reply never decodes as a value whose fields all have defaults.
        let err = decode_reply::<DeliverReply>(&encode(&ErrorReply::new(ErrorCode::BadId, "x")));
        assert!(matches!(err, Err(ReplyError::Remote(_))));
    }

    #[test]
    fn replies_decode_to_value_or_error() {
        let ok: SessionsReply = decode_reply(br#"{"sessions":2}"#).unwrap();
        assert!(!ok.kicked);
        assert_eq!(ok.sessions, 2);
        let err = decode_reply::<SessionsReply>(&encode(&ErrorReply::new(ErrorCode::BadId, "x")));
        match err {
            Err(ReplyError::Remote(body)) => assert_eq!(body.code, ErrorCode::BadId),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            decode_reply::<SessionsReply>(b"{}"),
            Err(ReplyError::Malformed(_))
        ));
    }

    #[test]
    fn send_request_is_what_nats_cli_users_type() {
        let req: SendRequest<'_> = serde_json::from_str(r#"{"to":["alice"],"body":"hi"}"#).unwrap();
        assert_eq!(req.to, ["alice"]);
        assert_eq!(req.body.get(), r#""hi""#);
        assert!(req.from.is_none() && req.id.is_none());
    }

    #[test]
    fn deliver_request_keeps_body_bytes() {
        let text = r#"{"id":"m","to":["a"],"rcpt":[0],"ts":1,"body":[1,  2]}"#;
        let req: DeliverRequest<'_> = serde_json::from_str(text).unwrap();
        assert_eq!(req.body.get(), "[1,  2]");
        let again = String::from_utf8(encode(&req).to_vec()).unwrap();
        assert_eq!(again, text);
    }

    #[test]
    fn deliver_request_ids_borrow_from_the_payload_unless_escaped() {
        let text = r#"{"id":"m","from":"alice","group":"t\u00e9am","ts":1,"body":1}"#;
        let req: DeliverRequest<'_> = serde_json::from_str(text).unwrap();
        assert!(matches!(req.id, Cow::Borrowed("m")));
        assert!(matches!(req.from, Some(Cow::Borrowed("alice"))));
        assert_eq!(req.group.as_deref(), Some("téam"));
        assert!(
            matches!(req.group, Some(Cow::Owned(_))),
            "escaped: decoded, so owned"
        );
    }
}
