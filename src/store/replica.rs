//! The mirrors' side of a bucket: [`follow`] loads a [`Replica`] and keeps it current,
//! [`catch_up`] is the read barrier that waits until it holds what the bucket holds.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use super::{Bucket, Changes, Entry};

/// The highest revision a replica has applied, which readers wait on to read their own
/// writes.
pub(crate) struct Applied(watch::Sender<u64>);

impl Default for Applied {
    fn default() -> Self {
        Applied(watch::channel(0).0)
    }
}

impl Applied {
    pub(crate) fn get(&self) -> u64 {
        *self.0.borrow()
    }

    /// After a reload: the revision may go down (a recreated bucket).
    pub(crate) fn reset(&self, revision: u64) {
        self.0.send_replace(revision);
    }

    /// After applying one change.
    pub(crate) fn advance(&self, revision: u64) {
        self.0.send_if_modified(|applied| {
            let newer = revision > *applied;
            if newer {
                *applied = revision;
            }
            newer
        });
    }

    /// Waits until `revision` is applied; false if `timeout` ran out first.
    pub(crate) async fn wait(&self, revision: u64, timeout: Duration) -> bool {
        let mut rx = self.0.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|applied| *applied >= revision))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

/// Whether a replica holds everything its bucket holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Freshness {
    Current,
    /// It did not catch up in time: its watch may be stalled.
    Behind,
    /// The bucket's state could not be read (e.g. the JetStream meta leader is being
    /// re-elected); direct reads may still work.
    Unknown,
}

/// How long a barrier waits for the bucket's state. Stream info needs the JetStream meta
/// leader, which a cluster may be re-electing; direct reads do not, so give up early.
const STATE_TIMEOUT: Duration = Duration::from_millis(300);
/// How long a barrier waits for the replica to catch up.
const CATCH_UP_TIMEOUT: Duration = Duration::from_millis(700);

/// A read barrier: waits until `applied` reaches what `bucket` holds now.
pub(crate) async fn catch_up(bucket: &Bucket, applied: &Applied) -> Freshness {
    let state = match tokio::time::timeout(STATE_TIMEOUT, bucket.state()).await {
        Ok(Ok(state)) => state,
        Ok(Err(e)) => {
            tracing::warn!(error = %format!("{e:#}"), "bucket state unreadable");
            return Freshness::Unknown;
        }
        Err(_) => {
            tracing::warn!(bucket = %bucket.name, "bucket state not read within {STATE_TIMEOUT:?}");
            return Freshness::Unknown;
        }
    };
    match applied.wait(state.last_revision, CATCH_UP_TIMEOUT).await {
        true => Freshness::Current,
        false => Freshness::Behind,
    }
}

/// An in-memory mirror of a bucket, kept current by [`follow`].
pub(crate) trait Replica: Send + Sync + 'static {
    /// The mirrored data, also built on the side while (re)loading.
    type State: Default + Send + 'static;
    /// Applies one entry to a state being loaded.
    fn load(state: &mut Self::State, entry: Entry);
    /// Swaps in a freshly loaded state that has applied everything up to `applied`.
    fn replace(&self, state: Self::State, applied: u64);
    /// Applies one live entry.
    fn apply(&self, entry: Entry);
    /// The highest revision applied.
    fn applied(&self) -> u64;
}

/// Loads the whole bucket into `replica`, then keeps following it in a task until
/// `shutdown`. Returns once the initial load is complete. Notifying `resync` makes the
/// task reload the bucket (for a replica seen to lag).
pub(crate) async fn follow<R: Replica>(
    bucket: Bucket,
    replica: Arc<R>,
    resync: Arc<Notify>,
    shutdown: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let (state, applied, changes) = load::<R>(&bucket).await?;
    replica.replace(state, applied);
    let follower = Follower {
        bucket,
        replica,
        resync,
        shutdown,
    };
    Ok(tokio::spawn(follower.run(changes)))
}

/// Reads the whole bucket into a fresh state; returns it with the watch positioned after it.
async fn load<R: Replica>(bucket: &Bucket) -> anyhow::Result<(R::State, u64, Changes)> {
    // Watch first, then read the state: entries written in between arrive on the watch.
    let mut changes = bucket.watch().await?;
    let status = bucket.state().await?;
    let mut state = R::State::default();
    let mut applied = 0;
    if status.entries > 0 {
        let started = std::time::Instant::now();
        loop {
            // A stalled or ended watch fails the load (it is tried again): a mirror is
            // never taken for loaded before it holds everything.
            let next = tokio::time::timeout(LOAD_STALL, changes.next())
                .await
                .with_context(|| format!("loading bucket {}: stalled", bucket.name))?;
            let Some(entry) = next else {
                anyhow::bail!("loading bucket {}: the watch ended", bucket.name);
            };
            let entry = entry.with_context(|| format!("loading bucket {}", bucket.name))?;
            let done = entry.pending == 0;
            applied = applied.max(entry.revision);
            R::load(&mut state, entry);
            if done {
                break;
            }
        }
        let took_ms = started.elapsed().as_millis() as u64;
        tracing::info!(bucket = %bucket.name, entries = status.entries, revision = applied, took_ms, "bucket loaded");
    }
    Ok((state, applied, changes))
}

/// How long a load waits for the next entry of the bucket before it gives up.
const LOAD_STALL: Duration = Duration::from_secs(10);

/// The task behind [`follow`].
struct Follower<R> {
    bucket: Bucket,
    replica: Arc<R>,
    resync: Arc<Notify>,
    shutdown: CancellationToken,
}

impl<R: Replica> Follower<R> {
    /// Applies live changes; reloads from scratch when the watch fails, the bucket's
    /// sequence goes backwards (stream recreated), or a resync is asked for.
    async fn run(self, mut changes: Changes) {
        loop {
            let Some(reason) = self.follow(&mut changes).await else {
                return;
            };
            tracing::warn!(bucket = %self.bucket.name, %reason, "reloading mirror");
            loop {
                tokio::select! {
                    () = self.shutdown.cancelled() => return,
                    () = tokio::time::sleep(RELOAD_PAUSE) => {}
                }
                match load::<R>(&self.bucket).await {
                    Ok((state, applied, fresh)) => {
                        self.replica.replace(state, applied);
                        changes = fresh;
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(bucket = %self.bucket.name, error = %format!("{e:#}"), "reload failed")
                    }
                }
            }
        }
    }

    /// Applies changes until a reload is needed (`Some(reason)`) or shutdown (`None`).
    async fn follow(&self, changes: &mut Changes) -> Option<String> {
        let last_reload = std::time::Instant::now();
        let stop = crate::shutdown::Cancelled::new(&self.shutdown);
        tokio::pin!(stop);
        loop {
            let next = tokio::select! {
                () = &mut stop => return None,
                // Reloads asked for in a burst collapse into one.
                () = self.resync.notified(), if last_reload.elapsed() > RELOAD_PAUSE => {
                    return Some("a reader saw the mirror lag".to_string());
                }
                next = changes.next() => next,
            };
            let applied = self.replica.applied();
            match next {
                Some(Ok(entry)) if entry.revision <= applied && applied > 0 => {
                    return Some(format!(
                        "bucket went backwards to revision {}",
                        entry.revision
                    ));
                }
                Some(Ok(entry)) => self.replica.apply(entry),
                Some(Err(e)) => return Some(format!("{e:#}")),
                None => return Some("watch ended".to_string()),
            }
        }
    }
}

/// Pause before a reload, and the least time between two reloads asked for by readers.
const RELOAD_PAUSE: Duration = Duration::from_millis(500);
