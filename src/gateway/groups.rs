//! Group operations on behalf of clients and the HTTP API: forwarded to the centers'
//! `mrc.grp.*` endpoints, whose replies go back as they are.

use crate::connection::{self, request_idempotent, RequestFailure};
use crate::gateway::Gateway;
use crate::protocol::client::FrameError;
use crate::protocol::code::ErrorCode;
use crate::protocol::group::{GroupRequest, ListRequest};
use crate::protocol::nats::encode;
use crate::subject::{GRP_CREATE, GRP_DELETE, GRP_LIST};

fn refused(e: RequestFailure) -> FrameError {
    match e {
        RequestFailure::Remote(body) => FrameError::new(body.code, body.message),
        e => FrameError::new(ErrorCode::Unavailable, format!("groups: {e}")),
    }
}

/// One of `create`, `delete`, `join`, `leave`, `add`, `remove`, `members`.
pub async fn call(
    gw: &Gateway,
    endpoint: &str,
    request: &GroupRequest,
) -> Result<serde_json::Value, FrameError> {
    let subject = gw.subjects.group(endpoint);
    // Creating or deleting a big group writes many keys: give it time.
    let timeout = gw.request_timeout * 5;
    let payload = encode(request);
    let reply = if endpoint == GRP_CREATE || endpoint == GRP_DELETE {
        // Not idempotent: a retry could report `group_exists` for our own creation.
        connection::request(&gw.client, subject, payload, timeout).await
    } else {
        request_idempotent(&gw.client, subject, payload, timeout).await
    };
    reply.map_err(refused)
}

/// The groups of a user.
pub async fn list(gw: &Gateway, request: &ListRequest) -> Result<serde_json::Value, FrameError> {
    let subject = gw.subjects.group(GRP_LIST);
    request_idempotent(&gw.client, subject, encode(request), gw.request_timeout)
        .await
        .map_err(refused)
}
