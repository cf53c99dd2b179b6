//! The center broadcast on `mrc.center.>`: a starting center says `hello`, the others
//! answer `here`, a stopping center says `bye`, and `gateway-down` tells who evicted a
//! gateway. Each center keeps the ids it has heard, for its service stats and logs.

use std::collections::BTreeSet;
use std::sync::Mutex;

use async_nats::Client;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::ident::CenterId;
use crate::protocol::nats::{encode, CenterAnnounce, GatewayDown};
use crate::subject::{Subjects, GATEWAY_DOWN};
use crate::sync;

pub(crate) const HELLO: &str = "hello";
pub(crate) const HERE: &str = "here";
pub(crate) const BYE: &str = "bye";

/// Other centers this one has heard from and not heard leave.
#[derive(Default)]
pub(crate) struct Peers {
    known: Mutex<BTreeSet<String>>,
}

impl Peers {
    pub(crate) fn list(&self) -> Vec<String> {
        sync::lock(&self.known).iter().cloned().collect()
    }

    fn set(&self, center: &str, present: bool) -> bool {
        let mut known = sync::lock(&self.known);
        if present {
            known.insert(center.to_string())
        } else {
            known.remove(center)
        }
    }
}

/// Announces this center, then answers and records the others until `shutdown`, then
/// says `bye`.
pub(crate) async fn run(
    client: Client,
    subjects: Subjects,
    id: CenterId,
    peers: std::sync::Arc<Peers>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut sub = client.subscribe(subjects.center_all()).await?;
    let me = encode(&CenterAnnounce {
        center: id.to_string(),
        version: crate::VERSION.into(),
    });
    client.publish(subjects.center(HELLO), me.clone()).await?;
    loop {
        let msg = tokio::select! {
            () = shutdown.cancelled() => break,
            msg = sub.next() => match msg { Some(msg) => msg, None => break },
        };
        match subjects.center_event(&msg.subject) {
            Some(event @ (HELLO | HERE | BYE)) => {
                let Ok(peer) = serde_json::from_slice::<CenterAnnounce>(&msg.payload) else {
                    continue;
                };
                if peer.center == id.as_str() {
                    continue;
                }
                if peers.set(&peer.center, event != BYE) || event == BYE {
                    tracing::info!(peer = %peer.center, version = %peer.version, event, "center peer");
                }
                if event == HELLO {
                    client.publish(subjects.center(HERE), me.clone()).await?;
                }
            }
            Some(GATEWAY_DOWN) => {
                if let Ok(down) = serde_json::from_slice::<GatewayDown>(&msg.payload) {
                    tracing::debug!(gateway = %down.gateway, removed = down.removed, by = %down.center, "gateway down");
                }
            }
            _ => {}
        }
    }
    client.publish(subjects.center(BYE), me).await?;
    Ok(())
}
