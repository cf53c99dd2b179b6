//! Group management for any caller: forwarded to the centers' `mrc.grp.*` endpoints,
//! whose replies go back as they are. The caller's user becomes the acting user (`by`),
//! whose rights the centers check against the group's policy.

use super::{Caller, Ops};
use crate::protocol::client::FrameError;
use crate::protocol::group::{GroupRequest, ListRequest};
use crate::protocol::nats::encode;
use crate::subject::{GRP_CREATE, GRP_DELETE, GRP_LIST};

/// One of `create`, `delete`, `join`, `leave`, `add`, `remove`, `members`. A user may
/// name only itself as the `user` (owner, joiner, leaver).
pub(crate) async fn manage_group(
    ops: &Ops,
    caller: &Caller,
    endpoint: &str,
    mut request: GroupRequest,
) -> Result<serde_json::Value, FrameError> {
    caller.acting_as(request.user.as_deref())?;
    if let Some(user) = caller.user() {
        request.by = Some(user.to_string());
    }
    let centers = &ops.centers;
    let subject = centers.subjects.group(endpoint);
    let payload = encode(&request);
    if endpoint == GRP_CREATE || endpoint == GRP_DELETE {
        // Not idempotent: a retry could report `group_exists` for our own creation.
        // Creating or deleting a big group writes many keys: give it time.
        let timeout = centers.timeout * 5;
        centers.ask_once("groups", subject, payload, timeout).await
    } else {
        centers.ask("groups", subject, payload).await
    }
}

/// The groups of `user` (a user may list only its own; the centers check).
pub(crate) async fn list_groups(
    ops: &Ops,
    caller: &Caller,
    user: String,
) -> Result<serde_json::Value, FrameError> {
    let by = caller.user().map(ToString::to_string);
    let request = ListRequest { user, by };
    let subject = ops.centers.subjects.group(GRP_LIST);
    ops.centers.ask("groups", subject, encode(&request)).await
}
