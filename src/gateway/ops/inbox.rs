//! The durable inbox, for every door: keeping messages for receivers who are not online,
//! pushing stored messages to a user's sessions (at login, and when a message is stored
//! while they log in), fetching and acknowledging them.
//!
//! A stored message stays until the user acknowledges it (`ack` up to a sequence number)
//! or it ages out, so a session that drops between push and ack gets it again at its
//! next login: at-least-once; the message id lets clients drop the duplicate.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_nats::Client;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio_util::task::TaskTracker;

use super::{Caller, Ops};
use crate::gateway::route::Message;
use crate::gateway::session::{Handle, Sessions};
use crate::ident::{GatewayId, UserId};
use crate::protocol::client::{Frame, FrameError, Report};
use crate::protocol::code::{ErrorCode, Outcome};
use crate::protocol::inbox::{AckReply, FetchReply, InboxEntry, Offline, StoredMessage, MAX_FETCH};
use crate::protocol::nats::{encode, LookupReply, LookupRequest};
use crate::protocol::now_ms;
use crate::store::inbox::{InboxStore, Kept};
use crate::subject::{Subjects, DIR_LOOKUP};
use crate::telemetry::{self, InboxEvent};

/// What the inbox operations use.
pub(crate) struct Inbox {
    pub(crate) store: InboxStore,
    pub(crate) client: Client,
    pub(crate) subjects: Subjects,
    /// What a send that does not say gets (`--offline`).
    pub(crate) offline: Offline,
    /// Drains started by nudges run under it.
    pub(crate) tasks: TaskTracker,
    /// One permit per session reading its inbox ([`DRAINS`]).
    pub(crate) drains: tokio::sync::Semaphore,
}

/// `mrc.gw.<gateway>.inbox`: these users have new stored messages.
#[derive(Serialize, Deserialize)]
pub(crate) struct Nudge {
    pub(crate) users: Vec<String>,
}

impl Inbox {
    /// Keeps `message` for each receiver the report says is `offline`, and reports what
    /// became of it (`stored`, `inbox_full`, or `unavailable` when JetStream did not
    /// answer). Then receivers who came online meanwhile are told to drain.
    pub(crate) async fn store_offline(&self, ops: &Ops, message: &Message, report: &mut Report) {
        let offline: Vec<UserId> = report
            .status
            .iter()
            .filter(|(_, outcome)| **outcome == Outcome::Offline)
            .filter_map(|(user, _)| UserId::new(user).ok())
            .collect();
        self.store(ops, message, offline, report).await;
    }

    /// Acknowledged delivery: keeps `message` for every valid receiver, online or not,
    /// and tells the gateways of those online to push it. The report says `stored` (or
    /// why not) for each; invalid ids are `rejected`.
    pub(crate) async fn store_all(&self, ops: &Ops, message: &Message) -> Report {
        let (valid, rejected) = ops.router.receivers(&message.to);
        let mut report = Report::direct(message.id.as_str().into(), Default::default());
        for id in rejected {
            report.status.insert(id.into(), Outcome::Rejected);
        }
        if !report.status.is_empty() {
            telemetry::deliveries(Outcome::Rejected, report.status.len() as u64);
        }
        self.store(ops, message, valid, &mut report).await;
        report
    }

    /// Keeps `message` for each of `users` and records each one's outcome in `report`.
    async fn store(&self, ops: &Ops, message: &Message, users: Vec<UserId>, report: &mut Report) {
        if users.is_empty() {
            return;
        }
        let offline = users;
        let record = StoredMessage {
            id: message.id.as_str().into(),
            from: message.from.as_deref().map(Into::into),
            to: message.to.clone(),
            ts: now_ms(),
            body: &message.body,
        };
        let payload = Bytes::from(serde_json::to_vec(&record).expect("records serialize"));
        let keeps = offline.iter().map(|user| {
            let subject = self.subjects.inbox_messages(user);
            let msg_id = format!("{}/{}", message.id.as_str(), user.token());
            let payload = payload.clone();
            async move { self.store.keep(subject, &msg_id, payload).await }
        });
        let kept = futures::future::join_all(keeps).await;
        let mut stored = Vec::new();
        for (user, kept) in offline.into_iter().zip(kept) {
            let outcome = match kept {
                Ok(Kept::Stored(_) | Kept::Duplicate(_)) => Outcome::Stored,
                Ok(Kept::Full(reason)) => {
                    tracing::debug!(%user, reason, "inbox full");
                    Outcome::InboxFull
                }
                Err(e) => {
                    tracing::warn!(%user, error = %format!("{e:#}"), "storing failed");
                    Outcome::Unavailable
                }
            };
            match outcome {
                Outcome::Stored => telemetry::inbox(InboxEvent::Stored, 1),
                Outcome::InboxFull => telemetry::inbox(InboxEvent::Full, 1),
                _ => {}
            }
            report.status.insert(user.to_string(), outcome);
            if outcome == Outcome::Stored {
                stored.push(user);
            }
        }
        if !stored.is_empty() {
            let (centers, client) = (ops.centers.clone(), self.client.clone());
            let subjects = self.subjects.clone();
            self.tasks.spawn(nudge(centers, client, subjects, stored));
        }
    }

    /// Pushes `user`'s stored messages to the session `handle`, in order, as far as its
    /// window allows; another call while one runs makes that one read again.
    /// Each message is pushed as soon as it is read. At most [`DRAINS`] sessions read at
    /// once per gateway, so that in a login storm each drain finishes quickly instead of
    /// all of them advancing one read per round and timing out together. A read that
    /// fails (JetStream electing a stream leader, say) is retried from where it stopped,
    /// with backoff, while the session lives: what is stored reaches it by itself.
    pub(crate) async fn drain(self: Arc<Self>, user: UserId, handle: Handle) {
        let subject = self.subjects.inbox_messages(&user);
        let mut next = handle.begin_drain();
        let mut backoff = READ_RETRY_FIRST;
        while let Some((mut after, mut room)) = next {
            let Ok(permit) = self.drains.acquire().await else {
                return;
            };
            let failed = loop {
                if room == 0 {
                    break None;
                }
                match self.store.next(&subject, after).await {
                    Ok(Some((seq, payload))) => {
                        if !push(&handle, seq, &payload) {
                            return;
                        }
                        (after, room, backoff) = (seq, room - 1, READ_RETRY_FIRST);
                    }
                    Ok(None) => break None,
                    Err(e) => break Some(e),
                }
            };
            drop(permit);
            if let Some(e) = failed {
                telemetry::inbox(InboxEvent::ReadFailed, 1);
                tracing::warn!(%user, error = %format!("{e:#}"), "inbox not read; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(READ_RETRY_MAX);
                if handle.is_closed() {
                    return;
                }
                next = Some((after, room));
                continue;
            }
            next = handle.end_drain();
        }
    }

    /// Drains the inbox of each of `users` held here.
    pub(crate) fn drain_each(self: &Arc<Self>, sessions: &Sessions, users: &[String]) {
        for user in users.iter().filter_map(|u| UserId::new(u).ok()) {
            for handle in sessions.handles_of(&user) {
                self.tasks.spawn(self.clone().drain(user.clone(), handle));
            }
        }
    }

    /// Answers nudges (`mrc.gw.<me>.inbox`) until the subscription ends or `shutdown`.
    pub(crate) async fn serve_nudges(
        self: Arc<Self>,
        sessions: Arc<Sessions>,
        mut nudges: async_nats::Subscriber,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> anyhow::Result<()> {
        use futures::StreamExt as _;
        while let Some(msg) = tokio::select! {
            () = shutdown.cancelled() => None,
            msg = nudges.next() => msg,
        } {
            if let Ok(nudge) = serde_json::from_slice::<Nudge>(&msg.payload) {
                self.drain_each(&sessions, &nudge.users);
            }
        }
        Ok(())
    }

    /// Up to `limit` stored messages of `user` after `since`.
    pub(crate) async fn fetch(
        &self,
        caller: &Caller,
        user: &str,
        since: u64,
        limit: Option<usize>,
    ) -> Result<serde_json::Value, FrameError> {
        let user = owner(caller, user)?;
        let limit = limit.unwrap_or(MAX_FETCH).clamp(1, MAX_FETCH);
        let subject = self.subjects.inbox_messages(&user);
        let (messages, more) = self
            .store
            .read(&subject, since, limit)
            .await
            .map_err(unavailable)?;
        let mut entries = Vec::with_capacity(messages.len());
        for (seq, payload) in &messages {
            if let Ok(message) = serde_json::from_slice::<StoredMessage<'_>>(payload) {
                entries.push(InboxEntry { seq: *seq, message });
            }
        }
        let reply = FetchReply {
            user: user.to_string(),
            messages: entries,
            more,
        };
        Ok(serde_json::to_value(&reply).expect("replies serialize"))
    }

    /// Removes the stored messages of `user` up to and including `seq`.
    pub(crate) async fn ack(
        &self,
        caller: &Caller,
        user: &str,
        seq: u64,
    ) -> Result<AckReply, FrameError> {
        let user = owner(caller, user)?;
        let subject = self.subjects.inbox_messages(&user);
        let removed = self
            .store
            .remove(&subject, seq)
            .await
            .map_err(unavailable)?;
        telemetry::inbox(InboxEvent::Acked, removed);
        Ok(AckReply {
            user: user.to_string(),
            acked: seq,
            removed,
        })
    }

    /// What a send gets for receivers not online: what it asked, else the default.
    pub(crate) fn offline(&self, asked: Option<Offline>) -> Offline {
        asked.unwrap_or(self.offline)
    }
}

/// Tells the gateways holding `users` to push their new stored messages. A receiver
/// who logged in between the route's look-up and the store would otherwise wait for its
/// next login, and a durable send's online receivers get it this way: so the look-up is
/// a fresh directory read, after the store, tried again with backoff when no center
/// answers.
async fn nudge(centers: super::Centers, client: Client, subjects: Subjects, users: Vec<UserId>) {
    let request = encode(&LookupRequest {
        users: users.iter().map(ToString::to_string).collect(),
    });
    let mut backoff = READ_RETRY_FIRST;
    let reply = loop {
        let subject = subjects.dir(DIR_LOOKUP);
        match centers
            .ask::<LookupReply>("directory", subject, request.clone())
            .await
        {
            Ok(reply) => break reply,
            Err(e) if backoff > READ_RETRY_MAX => {
                tracing::warn!(error = %e.message, "stored; receivers not told (next login pushes)");
                return;
            }
            Err(_) => tokio::time::sleep(backoff).await,
        }
        backoff *= 2;
    };
    let mut by_gateway: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (user, locations) in reply.users {
        for location in locations {
            by_gateway
                .entry(location.gateway)
                .or_default()
                .push(user.clone());
        }
    }
    for (gateway, users) in by_gateway {
        let Ok(gateway) = GatewayId::new(&gateway) else {
            continue;
        };
        let nudge = encode(&Nudge { users });
        if let Err(e) = client
            .publish(subjects.gateway_inbox(&gateway), nudge)
            .await
        {
            tracing::debug!(error = %e, "inbox nudge not sent");
        }
    }
}

/// The first wait before a failed inbox read is tried again, and the longest.
const READ_RETRY_FIRST: std::time::Duration = std::time::Duration::from_millis(100);
const READ_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(2);

/// Queues stored message `seq` on a session; false when the session is gone.
fn push(handle: &Handle, seq: u64, payload: &[u8]) -> bool {
    let Ok(stored) = serde_json::from_slice::<StoredMessage<'_>>(payload) else {
        tracing::warn!(seq, "unreadable stored message skipped");
        return true;
    };
    let frame = Frame::Msg {
        id: &stored.id,
        from: stored.from.as_deref(),
        to: &stored.to,
        group: None,
        broadcast: false,
        ts: stored.ts,
        body: stored.body,
        seq: Some(seq),
    }
    .encode();
    if !handle.push_stored(seq, frame) {
        return false;
    }
    telemetry::inbox(InboxEvent::Pushed, 1);
    true
}

/// Sessions of one gateway reading their inbox at once.
pub(crate) const DRAINS: usize = 32;

/// The inbox a caller may read: a user only its own; a backend any it names.
fn owner(caller: &Caller, named: &str) -> Result<UserId, FrameError> {
    let user =
        UserId::new(named).map_err(|e| FrameError::new(ErrorCode::BadId, format!("user: {e}")))?;
    if caller.user().is_some_and(|me| *me != user) {
        let message = "a user reads and acknowledges only its own inbox";
        return Err(FrameError::new(ErrorCode::Forbidden, message));
    }
    Ok(user)
}

fn unavailable(e: anyhow::Error) -> FrameError {
    FrameError::new(ErrorCode::Unavailable, format!("inbox: {e:#}"))
}
