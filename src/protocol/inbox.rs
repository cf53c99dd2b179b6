//! The durable inbox on the wire: what a send asks for receivers who are not online, the
//! record kept in JetStream for each stored message, and the fetch and ack requests
//! (client ops, `mrc.inbox.fetch` / `mrc.inbox.ack`, and the HTTP routes).

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// What becomes of a message for a receiver who is not online.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Offline {
    /// Kept in the receiver's inbox (outcome `stored`).
    Store,
    /// Dropped (outcome `offline`).
    Drop,
}

/// One stored message as JetStream keeps it (the subject names the receiver): the `msg`
/// frame's fields, so pushing it again is one re-encoding.
#[derive(Debug, Serialize, Deserialize)]
pub struct StoredMessage<'a> {
    #[serde(borrow)]
    pub id: Cow<'a, str>,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub from: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<String>,
    pub ts: u64,
    #[serde(borrow)]
    pub body: &'a RawValue,
}

/// One entry of a fetched inbox: its sequence number, then the message.
#[derive(Debug, Serialize, Deserialize)]
pub struct InboxEntry<'a> {
    pub seq: u64,
    #[serde(flatten, borrow)]
    pub message: StoredMessage<'a>,
}

/// `fetch` (client op), `mrc.inbox.fetch`, `GET /v1/users/{id}/inbox`: stored messages
/// after `since`, oldest first, at most `limit`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FetchRequest {
    /// The inbox's owner: named by backends; a client's is its own.
    #[serde(default)]
    pub user: String,
    /// Only messages with a higher sequence number (0: from the first).
    #[serde(default)]
    pub since: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// The answer to a fetch: `messages` in order; `more` when the limit cut the page.
#[derive(Debug, Serialize, Deserialize)]
pub struct FetchReply<'a> {
    pub user: String,
    #[serde(borrow)]
    pub messages: Vec<InboxEntry<'a>>,
    pub more: bool,
}

/// `ack` (client op), `mrc.inbox.ack`, `POST /v1/users/{id}/inbox/ack`: every stored
/// message up to and including `seq` is done with and removed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AckRequest {
    #[serde(default)]
    pub user: String,
    pub seq: u64,
}

/// The answer to an ack: how many stored messages it removed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AckReply {
    pub user: String,
    pub acked: u64,
    pub removed: u64,
}

/// Most messages one fetch returns (and the default limit).
pub const MAX_FETCH: usize = 100;
