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

/// A decoded client frame.
#[derive(Debug)]
pub enum Request<'a> {
    /// Bind this connection to a user: `{"op":"login","token":"<jwt>"}`, or
    /// `{"op":"login","user":"alice"}` on a gateway in insecure dev-auth mode.
    Login {
        user: Option<String>,
        token: Option<String>,
    },
    /// Send `body` to `to` (`{"op":"send","to":["bob"],"body":"hi","id":"m1"}`).
    Send {
        to: Vec<String>,
        id: Option<String>,
        body: &'a RawValue,
    },
    /// Liveness check, answered by `pong` with the same `id`.
    Ping { id: Option<String> },
}

/// Why a frame was refused; sent back as an `error` frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    pub code: ErrorCode,
    pub message: String,
    /// The frame's `id`, when it had one, so the client can match the error.
    pub id: Option<String>,
}

impl FrameError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
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
    to: Option<Vec<String>>,
    id: Option<String>,
    #[serde(borrow)]
    body: Option<&'a RawValue>,
}

/// Decodes one inbound frame. Unknown fields are ignored so clients can be newer than us.
pub fn parse(frame: &str) -> Result<Request<'_>, FrameError> {
    let flat: Flat<'_> = serde_json::from_str(frame).map_err(|e| {
        let code = if e.is_data() {
            ErrorCode::BadFrame
        } else {
            ErrorCode::BadJson
        };
        FrameError::new(code, e.to_string())
    })?;
    let missing = |field: &str, id: &Option<String>| FrameError {
        code: ErrorCode::BadFrame,
        message: format!("missing field `{field}`"),
        id: id.clone(),
    };
    match flat.op.as_deref() {
        Some("login") => match (flat.user, flat.token) {
            (None, None) => Err(missing("token", &flat.id)),
            (user, token) => Ok(Request::Login { user, token }),
        },
        Some("send") => {
            let to = flat.to.ok_or_else(|| missing("to", &flat.id))?;
            let body = flat.body.ok_or_else(|| missing("body", &flat.id))?;
            Ok(Request::Send {
                to,
                id: flat.id,
                body,
            })
        }
        Some("ping") => Ok(Request::Ping { id: flat.id }),
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
pub struct TokenClaims {
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
    /// Receiver id → outcome; each distinct receiver appears once.
    pub status: BTreeMap<String, Outcome>,
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
        to: &'a [String],
        ts: u64,
        body: &'a RawValue,
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
}

impl Frame<'_> {
    /// The frame as the bytes of one WebSocket text message (always valid UTF-8).
    pub fn encode(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).expect("frames contain only serializable data"))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_op() {
        match parse(r#"{"op":"login","user":"alice"}"#).unwrap() {
            Request::Login { user, token } => {
                assert_eq!((user.unwrap().as_str(), token), ("alice", None))
            }
            other => panic!("{other:?}"),
        }
        match parse(r#"{"op":"login","token":"t"}"#).unwrap() {
            Request::Login { user, token } => {
                assert_eq!((user, token.unwrap().as_str()), (None, "t"))
            }
            other => panic!("{other:?}"),
        }
        match parse(r#"{"op":"send","to":["a","b"],"id":"m1","body":{"x":[1, 2]}}"#).unwrap() {
            Request::Send { to, id, body } => {
                assert_eq!(to, ["a", "b"]);
                assert_eq!(id.as_deref(), Some("m1"));
                // The body is the sender's bytes, spacing included.
                assert_eq!(body.get(), r#"{"x":[1, 2]}"#);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(r#"{"op":"ping"}"#).unwrap(),
            Request::Ping { id: None }
        ));
    }

    #[test]
    fn escaped_op_still_parses() {
        assert!(matches!(
            parse(r#"{"op":"p\u0069ng"}"#).unwrap(),
            Request::Ping { .. }
        ));
    }

    #[test]
    fn mistakes_map_to_stable_codes() {
        let code = |f: &str| parse(f).unwrap_err().code;
        assert_eq!(code("not json"), ErrorCode::BadJson);
        assert_eq!(code(r#"{"op":"login""#), ErrorCode::BadJson);
        assert_eq!(code("[1,2]"), ErrorCode::BadFrame);
        assert_eq!(code(r#"{"op":"dance"}"#), ErrorCode::UnknownOp);
        assert_eq!(code(r#"{"user":"a"}"#), ErrorCode::BadFrame);
        assert_eq!(code(r#"{"op":"login"}"#), ErrorCode::BadFrame);
        assert_eq!(code(r#"{"op":"send","to":["a"]}"#), ErrorCode::BadFrame);
        assert_eq!(
            code(r#"{"op":"send","to":"a","body":1}"#),
            ErrorCode::BadFrame
        );
        assert_eq!(code(r#"{"op":1}"#), ErrorCode::BadFrame);
    }

    #[test]
    fn errors_carry_the_frame_id() {
        let e = parse(r#"{"op":"send","id":"m7","to":["a"]}"#).unwrap_err();
        assert_eq!(e.id.as_deref(), Some("m7"));
    }

    #[test]
    fn frames_encode_with_op_and_raw_body() {
        let body = RawValue::from_string(r#"{"k": "v"}"#.to_string()).unwrap();
        let to = vec!["bob".to_string()];
        let msg = Frame::Msg {
            id: "m1",
            from: Some("alice"),
            to: &to,
            ts: 5,
            body: &body,
        };
        let text = String::from_utf8(msg.encode().to_vec()).unwrap();
        assert_eq!(
            text,
            r#"{"op":"msg","id":"m1","from":"alice","to":["bob"],"ts":5,"body":{"k": "v"}}"#
        );
        let report = Report {
            id: "m1".into(),
            status: [("bob".to_string(), Outcome::Delivered)].into(),
        };
        let text = Frame::Report { report: &report }.encode();
        assert_eq!(
            &text[..],
            br#"{"op":"report","id":"m1","status":{"bob":"delivered"}}"#
        );
        let incoming: Incoming = serde_json::from_slice(&text).unwrap();
        assert_eq!(incoming.status.unwrap()["bob"], Outcome::Delivered);
    }
}
