//! Closing sessions that a newer login replaced (login policies `single` and `device`):
//! one targeted request to each gateway that holds a replaced session, never a broadcast.
//! The directory already dropped them in the login's compare-and-swap; this only tells
//! their gateways to close the connections.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio_util::task::TaskTracker;

use crate::connection::{request, Nats};
use crate::directory::Session;
use crate::ident::{GatewayId, UserId};
use crate::protocol::nats::{encode, KickReply, KickRequest, REPLACED};
use crate::subject::Subjects;

#[derive(Clone)]
pub(crate) struct Kicker {
    pub(crate) client: Nats,
    pub(crate) subjects: Subjects,
    pub(crate) timeout: Duration,
    /// The center's tasks: a kick in flight is one of them.
    pub(crate) tasks: TaskTracker,
}

impl Kicker {
    /// Asks each gateway holding one of `sessions` to close them, in the background.
    pub(crate) fn kick(&self, user: &UserId, sessions: &[&Session]) {
        let mut by_gateway: BTreeMap<GatewayId, Vec<String>> = BTreeMap::new();
        for s in sessions {
            by_gateway
                .entry(s.gateway.clone())
                .or_default()
                .push(s.id.to_string());
        }
        for (gateway, sessions) in by_gateway {
            let kick = KickRequest {
                user: user.to_string(),
                sessions,
                reason: REPLACED.to_string(),
            };
            let (client, subject, timeout) = (
                self.client.clone(),
                self.subjects.kick(&gateway),
                self.timeout,
            );
            self.tasks.spawn(async move {
                let reply: Result<KickReply, _> =
                    request(&client, subject, encode(&kick), timeout).await;
                match reply {
                    Ok(reply) => {
                        tracing::debug!(%gateway, kicked = reply.kicked, "replaced sessions closed")
                    }
                    // Its sessions are out of the directory already; a dead gateway holds none.
                    Err(e) => tracing::warn!(%gateway, error = %e, "kick not answered"),
                }
            });
        }
    }
}
