//! Presence subscriptions of clients: other users' online/offline events
//! (`presence_subscribe`, after a query through `ops::presence`, which applies the
//! presence policy).
//!
//! The [`Hub`] holds one NATS subscription to `mrc.presence.<user>` per watched user on
//! this gateway, however many local sessions watch that user, and fans each event out to
//! their queues; the subscription ends with its last watcher.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_nats::Client;
use futures::StreamExt;

use super::session::Handle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::ident::{SessionId, UserId};
use crate::protocol::client::Frame;
use crate::protocol::nats::Presence;
use crate::subject::Subjects;
use crate::sync;

/// Most users one session may watch.
pub(crate) const MAX_WATCHED: usize = 1000;

struct Watch {
    watchers: HashMap<SessionId, Handle>,
    task: tokio::task::AbortHandle,
}

/// This gateway's presence subscriptions.
pub(crate) struct Hub {
    client: Client,
    subjects: Subjects,
    /// Owns the task of each subscription; each ends at `shutdown` at the latest.
    tasks: TaskTracker,
    shutdown: CancellationToken,
    watches: Mutex<HashMap<UserId, Watch>>,
}

impl Hub {
    pub(crate) fn new(
        client: Client,
        subjects: Subjects,
        tasks: TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        Hub {
            client,
            subjects,
            tasks,
            shutdown,
            watches: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<UserId, Watch>> {
        sync::lock(&self.watches)
    }

    /// Sends `target`'s presence events to `watcher` from now on.
    pub(crate) async fn watch(
        self: &Arc<Self>,
        target: &UserId,
        watcher: Handle,
    ) -> anyhow::Result<()> {
        if let Some(watch) = self.lock().get_mut(target) {
            watch.watchers.insert(watcher.id.clone(), watcher);
            return Ok(());
        }
        let mut events = self
            .client
            .subscribe(self.subjects.presence(target))
            .await?;
        let mut watches = self.lock();
        if let Some(watch) = watches.get_mut(target) {
            // Another session subscribed meanwhile; ours is dropped (unsubscribed).
            watch.watchers.insert(watcher.id.clone(), watcher);
            return Ok(());
        }
        let (hub, user) = (Arc::downgrade(self), target.clone());
        let shutdown = self.shutdown.clone();
        let task = self.tasks.spawn(async move {
            while let Some(msg) = tokio::select! {
                () = shutdown.cancelled() => None,
                msg = events.next() => msg,
            } {
                let Some(hub) = hub.upgrade() else { return };
                let Ok(event) = serde_json::from_slice::<Presence>(&msg.payload) else {
                    continue;
                };
                let frame = Frame::Presence {
                    user: &event.user,
                    state: event.status,
                    ts: event.ts,
                }
                .encode();
                let watchers: Vec<Handle> = hub
                    .lock()
                    .get(&user)
                    .map(|w| w.watchers.values().cloned().collect())
                    .unwrap_or_default();
                for watcher in watchers {
                    watcher.push(frame.clone());
                }
            }
        });
        let mut watchers = HashMap::new();
        watchers.insert(watcher.id.clone(), watcher);
        watches.insert(
            target.clone(),
            Watch {
                watchers,
                task: task.abort_handle(),
            },
        );
        Ok(())
    }

    /// Stops sending `target`'s events to the session `watcher`.
    pub(crate) fn unwatch(&self, target: &UserId, watcher: &SessionId) {
        let mut watches = self.lock();
        let Some(watch) = watches.get_mut(target) else {
            return;
        };
        watch.watchers.remove(watcher);
        if watch.watchers.is_empty() {
            watch.task.abort();
            watches.remove(target);
        }
    }
}
