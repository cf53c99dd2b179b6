//! Stable codes: what went wrong ([`ErrorCode`]) and what happened to one receiver
//! ([`Outcome`]). Codes are snake_case on the wire and are never renamed once shipped.

use serde::{Deserialize, Serialize};

/// Why a frame, request or message was refused. Shipped in error frames and replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame or payload is not valid JSON (or not a JSON object).
    BadJson,
    /// The JSON is fine but a field is missing or has the wrong type.
    BadFrame,
    /// The `op` is not one this gateway knows.
    UnknownOp,
    /// An id (user, gateway, session, message) is not valid.
    BadId,
    /// The body cannot be carried (e.g. raw bytes that are not UTF-8).
    BadBody,
    /// The frame or body is larger than the configured limit.
    TooLarge,
    /// More receivers than the configured limit.
    TooManyReceivers,
    /// The op needs a logged-in session.
    NotLoggedIn,
    /// `login` on a connection that is already logged in.
    AlreadyLoggedIn,
    /// Missing, expired, not-yet-valid or forged token, or wrong API key.
    Unauthorized,
    /// Authenticated, but not allowed to do this (e.g. send as another user).
    Forbidden,
    /// More sends per second than the connection's rate allows; the message was dropped.
    RateLimited,
    /// The user already has the most sessions allowed.
    TooManySessions,
    /// No such group.
    NotFound,
    /// A group with that id exists already.
    GroupExists,
    /// The directory (no center answered) or another part of the cluster is unreachable.
    Unavailable,
    /// The process is shutting down.
    ShuttingDown,
    /// An unexpected internal failure; the message says more.
    Internal,
}

impl ErrorCode {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "bad_json",
            ErrorCode::BadFrame => "bad_frame",
            ErrorCode::UnknownOp => "unknown_op",
            ErrorCode::BadId => "bad_id",
            ErrorCode::BadBody => "bad_body",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::TooManyReceivers => "too_many_receivers",
            ErrorCode::NotLoggedIn => "not_logged_in",
            ErrorCode::AlreadyLoggedIn => "already_logged_in",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::TooManySessions => "too_many_sessions",
            ErrorCode::NotFound => "not_found",
            ErrorCode::GroupExists => "group_exists",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::Internal => "internal",
        }
    }
}

impl ErrorCode {
    /// The HTTP status that fits the code: the HTTP API answers with it, and every NATS
    /// error reply carries it as `Nats-Service-Error-Code` (400 bad input, 401, 403, 404,
    /// 409 conflict, 413, 429, 503 unavailable, 500 internal). The one mapping.
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::Unauthorized | ErrorCode::NotLoggedIn => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::AlreadyLoggedIn | ErrorCode::TooManySessions | ErrorCode::GroupExists => 409,
            ErrorCode::TooLarge => 413,
            ErrorCode::RateLimited => 429,
            ErrorCode::Internal => 500,
            ErrorCode::Unavailable | ErrorCode::ShuttingDown => 503,
            ErrorCode::BadJson
            | ErrorCode::BadFrame
            | ErrorCode::UnknownOp
            | ErrorCode::BadId
            | ErrorCode::BadBody
            | ErrorCode::TooManyReceivers => 400,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened to one receiver of a message, as the sender's report says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Pushed to at least one live session of the receiver.
    Delivered,
    /// The receiver has no live session (checked against the directory and, if it
    /// pointed somewhere, re-resolved once).
    Offline,
    /// The receiver id is invalid; nothing was attempted.
    Rejected,
    /// Routing failed: no center answered the look-up, or the receiver's gateway timed out.
    /// The message may or may not have arrived; resending with the same id is safe.
    Unavailable,
    /// Not online; kept in the receiver's inbox (JetStream acknowledged the write) until
    /// the receiver acknowledges it.
    Stored,
    /// Not online, and the receiver's inbox (or the cluster's) is full: not kept.
    InboxFull,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Offline => "offline",
            Outcome::Rejected => "rejected",
            Outcome::Unavailable => "unavailable",
            Outcome::Stored => "stored",
            Outcome::InboxFull => "inbox_full",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialize_as_their_stable_names() {
        for code in [
            ErrorCode::BadJson,
            ErrorCode::TooManyReceivers,
            ErrorCode::NotLoggedIn,
        ] {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
        let json = serde_json::to_string(&Outcome::Unavailable).unwrap();
        assert_eq!(json, "\"unavailable\"");
    }
}
