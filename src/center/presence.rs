//! Events a center publishes after a directory write changed a user: presence
//! (`mrc.presence.<user>`, first session up / last session gone) and route changes
//! (`mrc.dir.changed.<user>`, the user's set of gateways changed, so gateways drop their
//! cached route). Only the center whose compare-and-swap made the change publishes, so
//! each transition is announced exactly once.

use async_nats::Client;

use crate::directory::Transition;
use crate::ident::GatewayId;
use crate::protocol::nats::{encode, Presence, PresenceStatus};
use crate::protocol::now_ms;
use crate::subject::Subjects;

#[derive(Clone)]
pub(crate) struct Announcer {
    client: Client,
    subjects: Subjects,
}

impl Announcer {
    pub(crate) fn new(client: Client, subjects: Subjects) -> Self {
        Announcer { client, subjects }
    }

    /// Publishes what `transition` means; `gateway` is the gateway whose session changed.
    pub(crate) async fn announce(&self, transition: &Transition, gateway: &GatewayId) {
        let status = if transition.came_online() {
            Some(PresenceStatus::Online)
        } else if transition.went_offline() {
            Some(PresenceStatus::Offline)
        } else {
            None
        };
        if let Some(status) = status {
            let event = Presence {
                user: transition.user.to_string(),
                status,
                gateway: gateway.to_string(),
                ts: now_ms(),
            };
            let subject = self.subjects.presence(&transition.user);
            if let Err(e) = self.client.publish(subject, encode(&event)).await {
                tracing::warn!(user = ?transition.user, error = %e, "presence event not published");
            }
        }
        if transition.gateways_changed() {
            let subject = self.subjects.dir_changed(&transition.user);
            if let Err(e) = self.client.publish(subject, bytes::Bytes::new()).await {
                tracing::warn!(user = ?transition.user, error = %e, "route change not published");
            }
        }
    }
}
