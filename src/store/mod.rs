//! The only module that touches JetStream KV. A [`Bucket`] is one KV bucket with
//! compare-and-swap writes; [`follow`] keeps a [`Replica`] (an in-memory mirror) equal to
//! a bucket: it loads every key, then applies every change in stream order, and reloads
//! from scratch when the watch fails or the bucket's sequence goes backwards.
//!
//! The directory (`mrc_dir`: user → sessions) and the groups (`mrc_groups`) are buckets;
//! what their keys and values mean is their own modules' business. [`replica`] holds the
//! mirrors' side: following, read barriers.

pub(crate) mod inbox;
mod replica;

pub(crate) use replica::{catch_up, follow, Applied, Freshness, Replica};

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use futures::{Stream, StreamExt};

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
pub(crate) struct Entry {
    pub(crate) key: String,
    /// The stream sequence of the change (the key's new revision).
    pub(crate) revision: u64,
    /// How many changes the watch still has to deliver to be current (0 = caught up).
    pub(crate) pending: u64,
    /// The new value, or `None` when the key was deleted or purged.
    pub(crate) value: Option<Bytes>,
}

/// See [`Bucket::state`].
#[derive(Debug, Clone, Copy)]
pub struct BucketState {
    pub entries: u64,
    pub last_revision: u64,
}

/// A write lost a compare-and-swap race, or failed outright.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WriteError {
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

    /// A key's current value and revision, read from the bucket (not a mirror). A direct
    /// get that finds no responder (a stream just created or re-elected, whose direct-get
    /// interest has not reached this server yet) is asked of the stream leader instead.
    pub(crate) async fn get(&self, key: &str) -> anyhow::Result<Option<(u64, Bytes)>> {
        let entry = match self.kv.entry(key).await {
            Ok(entry) => entry,
            Err(e) if no_direct_responder(&e) => return self.get_from_leader(key).await,
            Err(e) => {
                let e = anyhow::Error::from(e);
                return Err(e.context(format!("reading {key:?} from bucket {}", self.name)));
            }
        };
        Ok(entry
            .filter(|e| matches!(e.operation, kv::Operation::Put))
            .map(|e| (e.revision, e.value)))
    }

    /// [`Bucket::get`] through the JetStream API (the stream leader answers).
    async fn get_from_leader(&self, key: &str) -> anyhow::Result<Option<(u64, Bytes)>> {
        use jetstream::stream::LastRawMessageErrorKind;
        let subject = format!("{}{key}", self.kv.prefix);
        match self
            .kv
            .stream
            .get_last_raw_message_by_subject(&subject)
            .await
        {
            Ok(message) => {
                let operation = message.headers.get("KV-Operation").map(|v| v.as_str());
                let put = !matches!(operation, Some("DEL" | "PURGE"));
                Ok(put.then_some((message.sequence, message.payload)))
            }
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(anyhow::Error::from(e).context(format!(
                "reading {key:?} from bucket {} (leader)",
                self.name
            ))),
        }
    }

    /// Writes `value` if the key is still at `expected` (`None`: absent or deleted).
    pub(crate) async fn write(
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
    pub(crate) async fn remove(&self, key: &str, expected: u64) -> Result<(), WriteError> {
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
    pub(crate) async fn delete(&self, key: &str) -> anyhow::Result<()> {
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

/// Whether a KV read failed because no server answered its direct get (async-nats turns
/// that into a 503 status in the entry error's source).
fn no_direct_responder(e: &kv::EntryError) -> bool {
    use jetstream::stream::{DirectGetError, DirectGetErrorKind};
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(error) = cause {
        if let Some(get) = error.downcast_ref::<DirectGetError>() {
            return matches!(get.kind(), DirectGetErrorKind::ErrorResponse(status, _)
                if status == async_nats::StatusCode::NO_RESPONDERS);
        }
        cause = error.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_nats::jetstream::stream::{DirectGetError, DirectGetErrorKind};

    #[test]
    fn a_direct_get_without_responder_is_told_apart_from_other_failures() {
        let no_responder = DirectGetErrorKind::ErrorResponse(
            async_nats::StatusCode::NO_RESPONDERS,
            "no responders".into(),
        );
        let entry = |kind| {
            kv::EntryError::with_source(kv::EntryErrorKind::Other, DirectGetError::new(kind))
        };
        assert!(no_direct_responder(&entry(no_responder)));
        assert!(!no_direct_responder(&entry(DirectGetErrorKind::TimedOut)));
    }
}
