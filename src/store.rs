//! The only module that touches JetStream KV. A [`Bucket`] is one KV bucket with
//! compare-and-swap writes; [`follow`] keeps a [`Replica`] (an in-memory mirror) equal to
//! a bucket: it loads every key, then applies every change in stream order, and reloads
//! from scratch when the watch fails or the bucket's sequence goes backwards.
//!
//! The directory (`mrc_dir`: user → sessions) and the groups (`mrc_groups`) are buckets;
//! what their keys and values mean is their own modules' business.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::sync;

/// One KV bucket.
#[derive(Clone)]
pub struct Bucket {
    kv: kv::Store,
    name: String,
    /// Callers waiting for the bucket's state (see [`Bucket::state`]).
    state_reads: Arc<std::sync::Mutex<StateReads>>,
}

type StateAnswer = tokio::sync::oneshot::Sender<Result<BucketState, String>>;

/// Callers of [`Bucket::state`] that wait for the next read, and whether a task reads.
#[derive(Default)]
struct StateReads {
    waiting: Vec<StateAnswer>,
    reading: bool,
}

/// One entry seen by a watch, in stream order.
#[derive(Debug, Clone)]
pub struct Entry {
    pub key: String,
    /// The stream sequence of the change (the key's new revision).
    pub revision: u64,
    /// How many changes the watch still has to deliver to be current (0 = caught up).
    pub pending: u64,
    /// The new value, or `None` when the key was deleted or purged.
    pub value: Option<Bytes>,
}

/// See [`Bucket::state`].
#[derive(Debug, Clone, Copy)]
pub struct BucketState {
    pub entries: u64,
    pub last_revision: u64,
}

/// A write lost a compare-and-swap race, or failed outright.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("key changed since revision {0:?}")]
    Conflict(Option<u64>),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// Why a bucket could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The bucket cannot exist as configured (an invalid name, more replicas than a
    /// single server has): trying again will not help.
    #[error("{0:#}")]
    Config(anyhow::Error),
    /// JetStream did not serve the bucket now (no quorum, a paused stream leader, a
    /// timeout): try again.
    #[error("{0:#}")]
    Unavailable(anyhow::Error),
}

impl Bucket {
    /// Opens the bucket, creating it (history 1, file storage) when JetStream says it does
    /// not exist. Any other failure to read it is [`OpenError::Unavailable`]: a bucket that
    /// exists but does not answer now is never created again.
    pub async fn open(
        js: jetstream::Context,
        name: &str,
        replicas: usize,
        description: &str,
    ) -> Result<Self, OpenError> {
        let kv = match js.get_key_value(name).await {
            Ok(kv) => kv,
            Err(e) if e.kind() == jetstream::context::KeyValueErrorKind::InvalidStoreName => {
                let e = anyhow::Error::from(e);
                return Err(OpenError::Config(e.context(format!("KV bucket {name}"))));
            }
            Err(e) if !stream_not_found(&e) => {
                let e = anyhow::Error::from(e);
                return Err(OpenError::Unavailable(
                    e.context(format!("reading KV bucket {name}")),
                ));
            }
            Err(_) => js
                .create_key_value(kv::Config {
                    bucket: name.to_string(),
                    description: description.to_string(),
                    history: 1,
                    num_replicas: replicas,
                    storage: jetstream::stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .map_err(|e| creation_failed(e, name, replicas))?,
        };
        Ok(Bucket {
            kv,
            name: name.to_string(),
            state_reads: Arc::default(),
        })
    }

    /// A key's current value and revision, read from the bucket (not a mirror).
    pub async fn get(&self, key: &str) -> anyhow::Result<Option<(u64, Bytes)>> {
        let entry = self
            .kv
            .entry(key)
            .await
            .with_context(|| format!("reading {key:?} from bucket {}", self.name))?;
        Ok(entry
            .filter(|e| matches!(e.operation, kv::Operation::Put))
            .map(|e| (e.revision, e.value)))
    }

    /// Writes `value` if the key is still at `expected` (`None`: absent or deleted).
    pub async fn write(
        &self,
        key: &str,
        expected: Option<u64>,
        value: Bytes,
    ) -> Result<u64, WriteError> {
        let result = match expected {
            None => self
                .kv
                .create(key, value)
                .await
                .map_err(anyhow::Error::from),
            Some(rev) => self
                .kv
                .update(key, value, rev)
                .await
                .map_err(anyhow::Error::from),
        };
        self.classify(key, expected, result).await
    }

    /// Deletes the key if it is still at revision `expected`.
    pub async fn remove(&self, key: &str, expected: u64) -> Result<(), WriteError> {
        let result = self
            .kv
            .delete_expect_revision(key, Some(expected))
            .await
            .map(|()| 0)
            .map_err(anyhow::Error::from);
        self.classify(key, Some(expected), result).await.map(|_| ())
    }

    /// Writes `value` whatever the key holds.
    pub async fn put(&self, key: &str, value: Bytes) -> anyhow::Result<u64> {
        self.kv
            .put(key, value)
            .await
            .with_context(|| format!("writing {key:?} to bucket {}", self.name))
    }

    /// Deletes the key whatever it holds.
    pub async fn delete(&self, key: &str) -> anyhow::Result<()> {
        self.kv
            .delete(key)
            .await
            .with_context(|| format!("deleting {key:?} from bucket {}", self.name))
    }

    /// Tells a lost race from a real failure by reading the key back: if it moved away
    /// from `expected`, someone else wrote first.
    async fn classify(
        &self,
        key: &str,
        expected: Option<u64>,
        result: anyhow::Result<u64>,
    ) -> Result<u64, WriteError> {
        let err = match result {
            Ok(rev) => return Ok(rev),
            Err(err) => err,
        };
        match self.get(key).await {
            Ok(current) => {
                let now = current.map(|(rev, _)| rev);
                if now != expected {
                    Err(WriteError::Conflict(now))
                } else {
                    let context = format!("writing {key:?} to bucket {}", self.name);
                    Err(WriteError::Other(err.context(context)))
                }
            }
            Err(read_err) => Err(WriteError::Other(read_err.context(err.to_string()))),
        }
    }

    /// How many entries the bucket holds and its last stream sequence: a mirror that has
    /// applied `last_revision` is current.
    ///
    /// Concurrent callers share reads (one stream-info request each, a JetStream API call):
    /// a caller waits for the next read that *starts* after it asked, so the answer
    /// includes every write acknowledged before the call, as a read barrier needs.
    pub async fn state(&self) -> anyhow::Result<BucketState> {
        let (answer, reply) = tokio::sync::oneshot::channel();
        let lead = {
            let mut reads = sync::lock(&self.state_reads);
            reads.waiting.push(answer);
            !std::mem::replace(&mut reads.reading, true)
        };
        if lead {
            tokio::spawn(self.clone().read_states());
        }
        match reply.await {
            Ok(result) => result.map_err(anyhow::Error::msg),
            Err(_) => anyhow::bail!("reading the state of bucket {} stopped", self.name),
        }
    }

    /// Reads the state for everyone waiting, again while more callers queued meanwhile.
    async fn read_states(self) {
        loop {
            let waiting = {
                let mut reads = sync::lock(&self.state_reads);
                if reads.waiting.is_empty() {
                    reads.reading = false;
                    return;
                }
                std::mem::take(&mut reads.waiting)
            };
            let result = self.read_state().await.map_err(|e| format!("{e:#}"));
            for answer in waiting {
                let _ = answer.send(result.clone());
            }
        }
    }

    async fn read_state(&self) -> anyhow::Result<BucketState> {
        // Fresh from the server: `kv::Store::status` only returns the info cached at open.
        let info = tokio::time::timeout(Duration::from_secs(5), self.kv.stream.get_info())
            .await
            .with_context(|| format!("timed out reading the state of bucket {}", self.name))?
            .with_context(|| format!("reading the state of bucket {}", self.name))?;
        Ok(BucketState {
            entries: info.state.messages,
            last_revision: info.state.last_sequence,
        })
    }

    /// Every key's latest value, then every change, in stream order.
    async fn watch(&self) -> anyhow::Result<Changes> {
        let name = self.name.clone();
        let watch = self
            .kv
            .watch_with_history(">")
            .await
            .with_context(|| format!("watching bucket {name}"))?;
        Ok(Box::pin(watch.map(move |entry| {
            let entry = entry.with_context(|| format!("watch of bucket {name} failed"))?;
            let value = match entry.operation {
                kv::Operation::Put => Some(entry.value),
                kv::Operation::Delete | kv::Operation::Purge => None,
            };
            Ok(Entry {
                key: entry.key,
                revision: entry.revision,
                pending: entry.delta,
                value,
            })
        })))
    }
}

/// JetStream answered that the bucket's stream does not exist.
fn stream_not_found(e: &jetstream::context::KeyValueError) -> bool {
    use async_nats::jetstream::context::{GetStreamError, GetStreamErrorKind};
    use std::error::Error as _;
    let Some(source) = e.source().and_then(|s| s.downcast_ref::<GetStreamError>()) else {
        return false;
    };
    matches!(source.kind(), GetStreamErrorKind::JetStream(js)
        if js.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND)
}

/// Classifies a failed bucket creation: a name or replica count JetStream can never accept
/// is a configuration error; anything else (no quorum, a timeout, a race with another
/// center creating it) may pass.
fn creation_failed(
    e: jetstream::context::CreateKeyValueError,
    name: &str,
    replicas: usize,
) -> OpenError {
    use async_nats::jetstream::context::CreateStreamErrorKind;
    use async_nats::jetstream::context::{CreateKeyValueErrorKind, CreateStreamError};
    use std::error::Error as _;
    let refused = |code| {
        e.source()
            .and_then(|s| s.downcast_ref::<CreateStreamError>())
            .is_some_and(|s| matches!(s.kind(), CreateStreamErrorKind::JetStream(js) if js.error_code() == code))
    };
    let config = matches!(
        e.kind(),
        CreateKeyValueErrorKind::InvalidStoreName | CreateKeyValueErrorKind::TooLongHistory
    ) || refused(jetstream::ErrorCode::STREAM_REPLICAS_NOT_SUPPORTED);
    let e =
        anyhow::Error::from(e).context(format!("creating KV bucket {name} (replicas {replicas})"));
    match config {
        true => OpenError::Config(e),
        false => OpenError::Unavailable(e),
    }
}

type Changes = std::pin::Pin<Box<dyn Stream<Item = anyhow::Result<Entry>> + Send>>;

/// The highest revision a replica has applied, which readers wait on to read their own
/// writes.
pub struct Applied(watch::Sender<u64>);

impl Default for Applied {
    fn default() -> Self {
        Applied(watch::channel(0).0)
    }
}

impl Applied {
    pub fn get(&self) -> u64 {
        *self.0.borrow()
    }

    /// After a reload: the revision may go down (a recreated bucket).
    pub fn reset(&self, revision: u64) {
        self.0.send_replace(revision);
    }

    /// After applying one change.
    pub fn advance(&self, revision: u64) {
        self.0.send_if_modified(|applied| {
            let newer = revision > *applied;
            if newer {
                *applied = revision;
            }
            newer
        });
    }

    /// Waits until `revision` is applied; false if `timeout` ran out first.
    pub async fn wait(&self, revision: u64, timeout: Duration) -> bool {
        let mut rx = self.0.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|applied| *applied >= revision))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

/// Whether a replica holds everything its bucket holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
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
pub async fn catch_up(bucket: &Bucket, applied: &Applied) -> Freshness {
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
pub trait Replica: Send + Sync + 'static {
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
pub async fn follow<R: Replica>(
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
        loop {
            let next = tokio::select! {
                () = self.shutdown.cancelled() => return None,
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
