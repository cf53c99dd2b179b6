//! Who is online, for any caller: presence queries (through the centers'
//! `mrc.dir.presence`, which applies the presence policy to the caller) and a user's
//! status from the directory (sessions per gateway).

use std::collections::BTreeMap;

use super::{Caller, Ops};
use crate::ident::UserId;
use crate::protocol::client::{FrameError, UserStatus};
use crate::protocol::nats::{encode, LookupReply, LookupRequest, PresenceReply, PresenceRequest};
use crate::subject::{DIR_LOOKUP, DIR_PRESENCE};

/// The presence of `users` as the caller may see it.
pub(crate) async fn presence(
    ops: &Ops,
    caller: &Caller,
    users: Vec<String>,
) -> Result<PresenceReply, FrameError> {
    let by = caller.user().map(ToString::to_string);
    let subject = ops.centers.subjects.dir(DIR_PRESENCE);
    let request = encode(&PresenceRequest { users, by });
    ops.centers.ask("directory", subject, request).await
}

/// Whether `user` is online and where: asks the directory, never the cache.
pub(crate) async fn user_status(ops: &Ops, user: &UserId) -> Result<UserStatus, FrameError> {
    let subject = ops.centers.subjects.dir(DIR_LOOKUP);
    let request = encode(&LookupRequest {
        users: vec![user.to_string()],
    });
    let reply: LookupReply = ops.centers.ask("directory", subject, request).await?;
    let locations = reply.users.get(user.as_str()).cloned().unwrap_or_default();
    let mut gateways = BTreeMap::new();
    for location in &locations {
        *gateways.entry(location.gateway.clone()).or_insert(0) += 1;
    }
    Ok(UserStatus {
        user: user.to_string(),
        online: !locations.is_empty(),
        sessions: locations.len(),
        gateways,
    })
}
