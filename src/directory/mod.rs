//! The user directory: which sessions of which user live on which gateway.
//!
//! The truth is a JetStream KV bucket ([`kv::Store`]); every center keeps a [`Mirror`] of
//! it, fed by a watch, and answers look-ups from memory. Writes are compare-and-swap
//! loops on one user's record, so concurrent centers never lose each other's updates and
//! every online/offline transition is observed by exactly one writer.
//!
//! Fencing: register and unregister name one session; an unregister or a gateway purge
//! removes only the sessions it names, never a newer login.

pub mod kv;
pub mod mirror;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::{StreamExt, TryStreamExt};
use tokio_util::sync::CancellationToken;

use crate::ident::{GatewayId, SessionId, UserId};
use kv::{Store, WriteError};
pub use mirror::{Mirror, Session};

/// Compare-and-swap attempts before a write gives up (each lost race means another
/// center wrote the same user in between).
const MAX_WRITE_ATTEMPTS: usize = 32;
/// How long a look-up waits for the mirror to catch up with the bucket.
const BARRIER_TIMEOUT: Duration = Duration::from_secs(2);
/// Concurrent writes while purging one gateway.
const PURGE_CONCURRENCY: usize = 64;

/// What one write did to a user: the sessions before and after.
#[derive(Debug, Clone)]
pub struct Transition {
    pub user: UserId,
    pub before: Vec<Session>,
    pub after: Vec<Session>,
}

impl Transition {
    pub fn came_online(&self) -> bool {
        self.before.is_empty() && !self.after.is_empty()
    }

    pub fn went_offline(&self) -> bool {
        !self.before.is_empty() && self.after.is_empty()
    }

    /// Whether the set of gateways that hold the user changed (cached routes are stale).
    pub fn gateways_changed(&self) -> bool {
        let (mut a, mut b) = (
            mirror::gateways(&self.before),
            mirror::gateways(&self.after),
        );
        a.sort();
        b.sort();
        a != b
    }

    pub fn changed(&self) -> bool {
        self.before != self.after
    }
}

/// The directory as a center uses it.
#[derive(Clone)]
pub struct Directory {
    store: Store,
    mirror: Arc<Mirror>,
}

impl Directory {
    pub fn new(store: Store) -> Self {
        Directory {
            store,
            mirror: Arc::new(Mirror::default()),
        }
    }

    pub fn mirror(&self) -> &Arc<Mirror> {
        &self.mirror
    }

    /// Loads the whole bucket into the mirror, then keeps following it in a task until
    /// `shutdown`. Returns once the initial load is complete.
    pub async fn follow(
        &self,
        shutdown: CancellationToken,
    ) -> anyhow::Result<tokio::task::JoinHandle<()>> {
        let (state, applied, changes) = load(&self.store).await?;
        self.mirror.replace(state, applied);
        let (store, mirror) = (self.store.clone(), self.mirror.clone());
        Ok(tokio::spawn(async move {
            follow(store, mirror, changes, shutdown).await
        }))
    }

    /// Adds (or refreshes) one session of `user` on `gateway`.
    pub async fn register(
        &self,
        user: &UserId,
        session: &SessionId,
        gateway: &GatewayId,
        since: u64,
    ) -> anyhow::Result<Transition> {
        let new = Session {
            id: Arc::from(session.as_str()),
            gateway: gateway.clone(),
            since,
        };
        self.update(user, |sessions| {
            sessions.retain(|s| *s.id != *session.as_str());
            sessions.push(new.clone());
        })
        .await
    }

    /// Removes exactly one session of `user`; other sessions are untouched.
    pub async fn unregister(
        &self,
        user: &UserId,
        session: &SessionId,
    ) -> anyhow::Result<Transition> {
        self.update(user, |sessions| {
            sessions.retain(|s| *s.id != *session.as_str())
        })
        .await
    }

    /// Removes every session on `gateway`; returns the users that changed.
    pub async fn purge_gateway(&self, gateway: &GatewayId) -> anyhow::Result<Vec<Transition>> {
        self.barrier().await;
        let users = self.mirror.users_on(gateway);
        futures::stream::iter(users)
            .map(|user| async move {
                self.update(&user, |sessions| sessions.retain(|s| s.gateway != *gateway))
                    .await
            })
            .buffer_unordered(PURGE_CONCURRENCY)
            .try_filter(|t| futures::future::ready(t.changed()))
            .try_collect()
            .await
    }

    /// The sessions of each user, in the order asked; empty means offline. A user the
    /// mirror does not know is checked again after the mirror has caught up with the
    /// bucket, so a look-up right after a login sees that login.
    pub async fn lookup(&self, users: &[UserId]) -> Vec<Vec<Session>> {
        let mut found = self.mirror.sessions(users);
        let misses: Vec<usize> = (0..users.len()).filter(|&i| found[i].is_empty()).collect();
        if misses.is_empty() || !self.barrier().await {
            return found;
        }
        let again: Vec<UserId> = misses.iter().map(|&i| users[i].clone()).collect();
        for (i, sessions) in misses.into_iter().zip(self.mirror.sessions(&again)) {
            found[i] = sessions;
        }
        found
    }

    /// Waits until the mirror holds everything the bucket held when called. False when the
    /// bucket could not be read or the mirror did not catch up in time.
    pub async fn barrier(&self) -> bool {
        match self.store.state().await {
            Ok(state) => {
                self.mirror
                    .wait_applied(state.last_revision, BARRIER_TIMEOUT)
                    .await
            }
            Err(e) => {
                tracing::warn!(error = %e, "directory barrier skipped");
                false
            }
        }
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
                (Some(rev), true) => self.store.remove(user, rev).await.map(|()| 0),
                (None, true) => unreachable!("an absent user with no sessions is unchanged"),
                (rev, false) => {
                    self.store
                        .write(user, rev, &mirror::record_of(&after))
                        .await
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
        let Some((rev, record)) = self.store.get(user).await? else {
            return Ok(None);
        };
        let sessions = mirror::State::default().sessions_of(&record);
        Ok(Some((rev, sessions)))
    }
}

type Changes = std::pin::Pin<Box<dyn futures::Stream<Item = anyhow::Result<kv::Change>> + Send>>;

/// Reads the whole bucket into a fresh state; returns it with the watch positioned after it.
async fn load(store: &Store) -> anyhow::Result<(mirror::State, u64, Changes)> {
    let mut changes: Changes = Box::pin(store.watch().await?);
    let bucket = store.state().await?;
    let mut state = mirror::State::default();
    let mut applied = 0;
    if bucket.entries > 0 {
        let started = std::time::Instant::now();
        while let Some(change) = changes.next().await {
            let change = change.context("loading directory")?;
            let done = change.pending == 0;
            applied = applied.max(change.revision);
            state.apply(change);
            if done {
                break;
            }
        }
        tracing::info!(
            entries = bucket.entries,
            revision = applied,
            took_ms = started.elapsed().as_millis() as u64,
            "directory loaded"
        );
    }
    Ok((state, applied, changes))
}

/// Applies live changes; reloads from scratch when the watch fails or the bucket's
/// sequence goes backwards (stream recreated).
async fn follow(
    store: Store,
    mirror: Arc<Mirror>,
    mut changes: Changes,
    shutdown: CancellationToken,
) {
    loop {
        let reason = loop {
            let next = tokio::select! {
                () = shutdown.cancelled() => return,
                next = changes.next() => next,
            };
            match next {
                Some(Ok(change)) if change.revision <= mirror.applied() && mirror.applied() > 0 => {
                    break format!("bucket went backwards to revision {}", change.revision);
                }
                Some(Ok(change)) => mirror.apply(change),
                Some(Err(e)) => break format!("{e:#}"),
                None => break "watch ended".to_string(),
            }
        };
        tracing::warn!(%reason, "reloading directory mirror");
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
            match load(&store).await {
                Ok((state, applied, fresh)) => {
                    mirror.replace(state, applied);
                    changes = fresh;
                    break;
                }
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "directory reload failed"),
            }
        }
    }
}
