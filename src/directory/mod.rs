//! The user directory: which sessions of which user live on which gateway.
//!
//! The truth is a JetStream KV bucket ([`Bucket`]: user token → [`UserRecord`] of live
//! sessions); every center keeps a [`Mirror`] of
//! it, fed by a watch, and answers look-ups from memory. Writes are compare-and-swap
//! loops on one user's record, so concurrent centers never lose each other's updates and
//! every online/offline transition is observed by exactly one writer.
//!
//! Fencing: register and unregister name one session; an unregister or a gateway purge
//! removes only the sessions it names, never a newer login.

pub(crate) mod mirror;

use std::sync::Arc;

use anyhow::Context as _;
use futures::{StreamExt, TryStreamExt};
use tokio_util::sync::CancellationToken;

use crate::ident::{GatewayId, SessionId, UserId};
use crate::protocol::record::UserRecord;
use crate::store::{self, Bucket, Freshness, WriteError};
pub(crate) use mirror::{Mirror, Session};

/// Compare-and-swap attempts before a write gives up (each lost race means another
/// center wrote the same user in between).
const MAX_WRITE_ATTEMPTS: usize = 32;
/// Most users a look-up reads straight from the bucket when the mirror lags.
const MAX_DIRECT_READS: usize = 1000;
/// Concurrent writes while purging one gateway.
const PURGE_CONCURRENCY: usize = 64;

/// How many sessions a user may have at once (`--login-policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LoginPolicy {
    /// Any number of sessions.
    Allow,
    /// One: a new login replaces every older session.
    Single,
    /// One per device class: a new login replaces the older session of its class.
    Device,
}

/// One registration.
pub(crate) struct Login<'a> {
    pub(crate) user: &'a UserId,
    pub(crate) session: &'a SessionId,
    pub(crate) gateway: &'a GatewayId,
    pub(crate) since: u64,
    pub(crate) device: Option<&'a str>,
    pub(crate) policy: LoginPolicy,
    /// A gateway re-registering a session it holds (after a reconnect or an eviction).
    pub(crate) reassert: bool,
}

/// What one write did to a user: the sessions before and after.
#[derive(Debug, Clone)]
pub(crate) struct Transition {
    pub(crate) user: UserId,
    pub(crate) before: Vec<Session>,
    pub(crate) after: Vec<Session>,
}

impl Transition {
    pub(crate) fn came_online(&self) -> bool {
        self.before.is_empty() && !self.after.is_empty()
    }

    pub(crate) fn went_offline(&self) -> bool {
        !self.before.is_empty() && self.after.is_empty()
    }

    /// Whether the set of gateways that hold the user changed (cached routes are stale).
    pub(crate) fn gateways_changed(&self) -> bool {
        let (mut a, mut b) = (
            mirror::gateways(&self.before),
            mirror::gateways(&self.after),
        );
        a.sort();
        b.sort();
        a != b
    }

    pub(crate) fn changed(&self) -> bool {
        self.before != self.after
    }

    /// Sessions that were there before and are gone, other than `except`: the sessions
    /// a login replaced.
    pub(crate) fn replaced(&self, except: &str) -> Vec<&Session> {
        self.before
            .iter()
            .filter(|s| &*s.id != except && !self.after.iter().any(|a| a.id == s.id))
            .collect()
    }

    /// Whether the session `id` is registered after the write.
    pub(crate) fn holds(&self, id: &str) -> bool {
        self.after.iter().any(|s| &*s.id == id)
    }
}

/// What a purge of one gateway did.
#[derive(Default)]
pub(crate) struct Purge {
    /// The users whose sessions were removed.
    pub(crate) transitions: Vec<Transition>,
    /// Why some users could not be written, if any.
    pub(crate) failed: Option<anyhow::Error>,
}

impl Purge {
    /// Sessions removed.
    pub(crate) fn removed(&self) -> usize {
        self.transitions
            .iter()
            .map(|t| t.before.len() - t.after.len())
            .sum()
    }
}

/// The directory as a center uses it.
#[derive(Clone)]
pub(crate) struct Directory {
    store: Bucket,
    mirror: Arc<Mirror>,
    /// Asks the follower to reload the mirror (it fell behind).
    resync: Arc<tokio::sync::Notify>,
}

impl Directory {
    pub(crate) fn new(store: Bucket) -> Self {
        Directory {
            store,
            mirror: Arc::new(Mirror::default()),
            resync: Arc::default(),
        }
    }

    pub(crate) fn mirror(&self) -> &Arc<Mirror> {
        &self.mirror
    }

    /// Loads the whole bucket into the mirror, then keeps following it in a task until
    /// `shutdown`. Returns once the initial load is complete.
    pub(crate) async fn follow(
        &self,
        shutdown: CancellationToken,
    ) -> anyhow::Result<tokio::task::JoinHandle<()>> {
        let (store, mirror) = (self.store.clone(), self.mirror.clone());
        store::follow(store, mirror, self.resync.clone(), shutdown).await
    }

    /// Adds (or refreshes) one session of `user` on `gateway`.
    ///
    /// The login policy decides which older sessions the new one replaces, in the same
    /// compare-and-swap, so two concurrent logins end with exactly one winner. A
    /// `reassert` (a gateway re-registering a live session) never replaces anyone: if it
    /// conflicts it loses, and the returned transition does not contain it.
    pub(crate) async fn register(&self, login: &Login<'_>) -> anyhow::Result<Transition> {
        let new = Session {
            id: Arc::from(login.session.as_str()),
            gateway: login.gateway.clone(),
            since: login.since,
            device: login.device.map(Arc::from),
        };
        let policy = login.policy;
        self.update(login.user, |sessions| {
            if login.reassert && sessions.iter().any(|s| s.id == new.id) {
                return; // already there: a re-assert changes nothing, not even `since`
            }
            sessions.retain(|s| s.id != new.id);
            let conflicts = |s: &Session| match policy {
                LoginPolicy::Allow => false,
                LoginPolicy::Single => true,
                LoginPolicy::Device => s.device == new.device,
            };
            if login.reassert && sessions.iter().any(conflicts) {
                return;
            }
            sessions.retain(|s| !conflicts(s));
            sessions.push(new.clone());
        })
        .await
    }

    /// Removes exactly one session of `user`; other sessions are untouched.
    pub(crate) async fn unregister(
        &self,
        user: &UserId,
        session: &SessionId,
    ) -> anyhow::Result<Transition> {
        self.update(user, |sessions| {
            sessions.retain(|s| *s.id != *session.as_str())
        })
        .await
    }

    /// Removes every session on `gateway`. Each user is a write of its own: the result
    /// holds the users that changed, and the first failure if some writes failed (the
    /// caller announces what changed and tries again for the rest).
    pub(crate) async fn purge_gateway(&self, gateway: &GatewayId) -> Purge {
        self.barrier().await;
        let users = self.mirror.users_on(gateway);
        let results: Vec<anyhow::Result<Transition>> = futures::stream::iter(users)
            .map(|user| async move {
                self.update(&user, |sessions| sessions.retain(|s| s.gateway != *gateway))
                    .await
            })
            .buffer_unordered(PURGE_CONCURRENCY)
            .collect()
            .await;
        let mut purge = Purge::default();
        for result in results {
            match result {
                Ok(t) if t.changed() => purge.transitions.push(t),
                Ok(_) => {}
                Err(e) => {
                    purge.failed.get_or_insert(e);
                }
            }
        }
        purge
    }

    /// The sessions of each user, in the order asked; empty means offline. Answered from
    /// the mirror after it caught up with the bucket (a read barrier), so a look-up sees
    /// every write acknowledged before it, whichever center wrote it: a login a moment
    /// ago, or a logout. When the mirror cannot catch up, the users it does not know are
    /// read from the bucket directly; if such a read fails the look-up fails (an unknown
    /// user is not an offline one).
    pub(crate) async fn lookup(&self, users: &[UserId]) -> anyhow::Result<Vec<Vec<Session>>> {
        let freshness = self.catch_up().await;
        let mut found = self.mirror.sessions(users);
        match freshness {
            Freshness::Current => return Ok(found),
            Freshness::Behind => {
                // Its watch may be stalled after a NATS node failure: have it reloaded,
                // and ask the bucket itself meanwhile.
                tracing::warn!("directory mirror lags the bucket: reading directly, reloading");
                self.resync.notify_one();
            }
            // The bucket's state is unreadable (e.g. the JetStream meta leader is being
            // re-elected); direct reads still work.
            Freshness::Unknown => {}
        }
        let misses: Vec<usize> = (0..users.len()).filter(|&i| found[i].is_empty()).collect();
        let again: Vec<UserId> = misses.iter().map(|&i| users[i].clone()).collect();
        let fresh = self.read_many(&again).await?;
        for (i, sessions) in misses.into_iter().zip(fresh) {
            found[i] = sessions;
        }
        Ok(found)
    }

    /// Sessions of `users` read from the bucket, for when the mirror cannot be trusted;
    /// at most [`MAX_DIRECT_READS`], the rest stay as the mirror says (empty).
    async fn read_many(&self, users: &[UserId]) -> anyhow::Result<Vec<Vec<Session>>> {
        let read = users.iter().take(MAX_DIRECT_READS).cloned().map(|user| {
            let directory = self.clone();
            async move {
                let entry = directory.read(&user).await?;
                anyhow::Ok(entry.map(|(_, sessions)| sessions).unwrap_or_default())
            }
        });
        let mut sessions: Vec<Vec<Session>> = futures::stream::iter(read)
            .buffered(32)
            .try_collect()
            .await?;
        sessions.resize(users.len(), Vec::new());
        Ok(sessions)
    }

    /// Waits until the mirror holds everything the bucket held when called. False when the
    /// bucket could not be read or the mirror did not catch up in time (a mirror found
    /// behind is reloaded).
    pub(crate) async fn barrier(&self) -> bool {
        match self.catch_up().await {
            Freshness::Current => true,
            Freshness::Behind => {
                self.resync.notify_one();
                false
            }
            Freshness::Unknown => false,
        }
    }

    /// Waits until the mirror holds everything the bucket held when called, and says
    /// whether it does.
    async fn catch_up(&self) -> Freshness {
        store::catch_up(&self.store, self.mirror.applied_watch()).await
    }

    /// One compare-and-swap loop: read (mirror first, bucket after a lost race), edit,
    /// write if the edit changed anything.
    async fn update(
        &self,
        user: &UserId,
        edit: impl Fn(&mut Vec<Session>),
    ) -> anyhow::Result<Transition> {
        let mut current = self.mirror.entry(user).map(|e| (e.revision, e.sessions));
        let mut confirmed = false;
        for _ in 0..MAX_WRITE_ATTEMPTS {
            let (revision, before) = match current.take() {
                Some((rev, sessions)) => (Some(rev), sessions),
                None => (None, Vec::new()),
            };
            let mut after = before.clone();
            edit(&mut after);
            if after == before {
                // The mirror may lag: only the bucket may say "nothing to do".
                if confirmed {
                    return Ok(Transition {
                        user: user.clone(),
                        before,
                        after,
                    });
                }
                current = self.read(user).await?;
                confirmed = true;
                continue;
            }
            let result = match (revision, after.is_empty()) {
                (Some(rev), true) => self.store.remove(&user.token(), rev).await.map(|()| 0),
                (None, true) => unreachable!("an absent user with no sessions is unchanged"),
                (rev, false) => {
                    let record = mirror::record_of(&after).encode();
                    self.store.write(&user.token(), rev, record).await
                }
            };
            match result {
                Ok(_) => {
                    return Ok(Transition {
                        user: user.clone(),
                        before,
                        after,
                    })
                }
                Err(WriteError::Conflict(_)) => {
                    current = self.read(user).await?;
                    confirmed = true;
                }
                Err(WriteError::Other(e)) => return Err(e),
            }
        }
        anyhow::bail!("directory entry of {user:?} kept changing: gave up after {MAX_WRITE_ATTEMPTS} attempts")
    }

    /// The user's entry straight from the bucket.
    async fn read(&self, user: &UserId) -> anyhow::Result<Option<(u64, Vec<Session>)>> {
        let Some((rev, value)) = self.store.get(&user.token()).await? else {
            return Ok(None);
        };
        let record = UserRecord::decode(&value)
            .with_context(|| format!("decoding the directory entry of {user:?}"))?;
        let sessions = mirror::State::default().sessions_of(&record);
        Ok(Some((rev, sessions)))
    }
}
