//! The operations a gateway carries out for its callers, the same for every door
//! (WebSocket, TCP, HTTP, NATS). A door decodes its input, names the [`Caller`] and
//! encodes what the operation returns; validation, rights, limits and the per-door
//! message count happen here, once. The data path reads one way:
//! door → operation → route → deliver.
//!
//! - [`message`]: a send to users, a send to a group, a broadcast: checked first (so a
//!   door can answer a refusal at once), then run;
//! - [`groups`]: group management, forwarded to the centers' `mrc.grp.*`;
//! - [`presence`]: presence queries and a user's online status;
//! - [`inbox`]: the durable inbox: storing for receivers not online, pushing stored
//!   messages to sessions, fetch and ack.

mod groups;
pub(crate) mod inbox;
mod message;
mod presence;

pub(crate) use groups::{list_groups, manage_group};
pub(crate) use message::{Broadcast, GroupSend, Send};
pub(crate) use presence::{presence, user_status};

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::de::DeserializeOwned;

use super::broadcast;
use super::limits::Limits;
use super::route::Router;
use crate::connection::{self, Nats, RequestFailure};
use crate::ident::UserId;
use crate::protocol::client::FrameError;
use crate::protocol::code::ErrorCode;
use crate::subject::Subjects;

/// What the operations use: the limits, the router, the centers, this gateway's
/// broadcast queue, the inbox.
pub(crate) struct Ops {
    pub(crate) limits: Limits,
    pub(crate) router: Router,
    pub(crate) centers: Centers,
    pub(crate) broadcasts: broadcast::Local,
    pub(crate) inbox: Arc<inbox::Inbox>,
}

/// Who asks for an operation.
#[derive(Debug, Clone)]
pub(crate) enum Caller {
    /// A trusted backend (NATS ingress, the HTTP API key): names any user as `from` or
    /// acting user, and group policies are not checked against it.
    Backend,
    /// A user (a logged-in client, an HTTP token): acts only as itself.
    User(UserId),
}

impl Caller {
    /// The user whose rights apply (`None`: a backend).
    pub(crate) fn user(&self) -> Option<&UserId> {
        match self {
            Caller::Backend => None,
            Caller::User(user) => Some(user),
        }
    }

    /// Who a message is from: whatever a backend names; a user, always itself.
    fn sender(&self, from: Option<String>) -> Result<Option<String>, FrameError> {
        match self {
            Caller::Backend => Ok(from),
            Caller::User(user) => {
                if from.is_some_and(|from| from != user.as_str()) {
                    let message = "a client can only send as itself";
                    return Err(FrameError::new(ErrorCode::Forbidden, message));
                }
                Ok(Some(user.as_str().to_owned()))
            }
        }
    }

    /// The acting user a request names, checked: a user acts only as itself.
    fn acting_as(&self, named: Option<&str>) -> Result<(), FrameError> {
        match (self, named) {
            (Caller::User(user), Some(named)) if named != user.as_str() => Err(FrameError::new(
                ErrorCode::Forbidden,
                "a token acts only as its subject",
            )),
            _ => Ok(()),
        }
    }
}

/// Request-reply to the centers' endpoints, with the gateway's timeout.
#[derive(Clone)]
pub(crate) struct Centers {
    pub(crate) client: Nats,
    pub(crate) subjects: Subjects,
    pub(crate) timeout: Duration,
}

impl Centers {
    /// Asks once more on a timeout or no responders: for requests that change nothing.
    pub(crate) async fn ask<T: DeserializeOwned>(
        &self,
        what: &str,
        subject: String,
        payload: Bytes,
    ) -> Result<T, FrameError> {
        connection::request_idempotent(&self.client, subject, payload, self.timeout)
            .await
            .map_err(|e| refused(what, e))
    }

    /// Asks exactly once, allowing `timeout`: for writes a retry could misreport.
    pub(crate) async fn ask_once<T: DeserializeOwned>(
        &self,
        what: &str,
        subject: String,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<T, FrameError> {
        connection::request(&self.client, subject, payload, timeout)
            .await
            .map_err(|e| refused(what, e))
    }
}

/// A center's refusal as it came; anything else (no answer) is `unavailable`.
fn refused(what: &str, e: RequestFailure) -> FrameError {
    match e {
        RequestFailure::Remote(body) => FrameError::new(body.code, body.message),
        e => FrameError::new(ErrorCode::Unavailable, format!("{what}: {e}")),
    }
}
