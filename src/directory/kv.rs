//! The only module that touches JetStream KV: the directory bucket, one key per online
//! user (the user's token), the value a [`UserRecord`] of that user's live sessions.
//!
//! Writes are compare-and-swap on the key's revision so concurrent centers never lose each
//! other's updates; the callers in `directory` decide what to write.

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, kv};
use futures::{Stream, StreamExt};

use crate::ident::UserId;
use crate::protocol::record::UserRecord;

/// The directory bucket.
#[derive(Clone)]
pub struct Store {
    kv: kv::Store,
}

/// One change seen by the watch, in stream order.
#[derive(Debug)]
pub struct Change {
    /// The stream sequence of the change (the key's new revision).
    pub revision: u64,
    /// How many changes the watch still has to deliver to be current (0 = caught up).
    pub pending: u64,
    pub kind: ChangeKind,
}

#[derive(Debug)]
pub enum ChangeKind {
    /// The user's sessions are now these.
    Put(UserId, UserRecord),
    /// The user has no sessions any more.
    Delete(UserId),
    /// An entry MRC did not write (bad key or value): skipped, but it still advances the
    /// sequence the mirror has applied.
    Foreign(String),
}

/// See [`Store::state`].
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

impl Store {
    /// Opens the bucket, creating it (history 1, file storage) when missing.
    pub async fn open(
        js: jetstream::Context,
        bucket: &str,
        replicas: usize,
    ) -> anyhow::Result<Self> {
        let kv = match js.get_key_value(bucket).await {
            Ok(kv) => kv,
            Err(_) => js
                .create_key_value(kv::Config {
                    bucket: bucket.to_string(),
                    description: "MRC user directory: user token -> live sessions".into(),
                    history: 1,
                    num_replicas: replicas,
                    storage: jetstream::stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .with_context(|| format!("creating KV bucket {bucket} (replicas {replicas})"))?,
        };
        Ok(Store { kv })
    }

    /// The user's current record and its revision, read from the bucket (not a mirror).
    pub async fn get(&self, user: &UserId) -> anyhow::Result<Option<(u64, UserRecord)>> {
        let entry = self
            .kv
            .entry(user.token())
            .await
            .with_context(|| format!("reading directory entry of {user:?}"))?;
        let Some(entry) = entry else { return Ok(None) };
        if !matches!(entry.operation, kv::Operation::Put) {
            return Ok(None);
        }
        let record = UserRecord::decode(&entry.value)
            .with_context(|| format!("decoding directory entry of {user:?}"))?;
        Ok(Some((entry.revision, record)))
    }

    /// Writes `record` if the key is still at `expected` (`None`: absent or deleted).
    pub async fn write(
        &self,
        user: &UserId,
        expected: Option<u64>,
        record: &UserRecord,
    ) -> Result<u64, WriteError> {
        let key = user.token();
        let result = match expected {
            None => self
                .kv
                .create(&key, record.encode())
                .await
                .map_err(anyhow::Error::from),
            Some(rev) => self
                .kv
                .update(&key, record.encode(), rev)
                .await
                .map_err(anyhow::Error::from),
        };
        self.classify(user, expected, result).await
    }

    /// Deletes the key if it is still at revision `expected`.
    pub async fn remove(&self, user: &UserId, expected: u64) -> Result<(), WriteError> {
        let result = self
            .kv
            .delete_expect_revision(user.token(), Some(expected))
            .await
            .map(|()| 0)
            .map_err(anyhow::Error::from);
        self.classify(user, Some(expected), result)
            .await
            .map(|_| ())
    }

    /// Tells a lost race from a real failure by reading the key back: if it moved away
    /// from `expected`, someone else wrote first.
    async fn classify(
        &self,
        user: &UserId,
        expected: Option<u64>,
        result: anyhow::Result<u64>,
    ) -> Result<u64, WriteError> {
        let err = match result {
            Ok(rev) => return Ok(rev),
            Err(err) => err,
        };
        match self.get(user).await {
            Ok(current) => {
                let now = current.map(|(rev, _)| rev);
                if now != expected {
                    Err(WriteError::Conflict(now))
                } else {
                    Err(WriteError::Other(
                        err.context(format!("writing directory entry of {user:?}")),
                    ))
                }
            }
            Err(read_err) => Err(WriteError::Other(read_err.context(err.to_string()))),
        }
    }

    /// How many entries the bucket holds and its last stream sequence: a mirror that has
    /// applied `last_revision` is current.
    pub async fn state(&self) -> anyhow::Result<BucketState> {
        let status = tokio::time::timeout(Duration::from_secs(5), self.kv.status())
            .await
            .context("timed out reading directory bucket status")?
            .context("reading directory bucket status")?;
        Ok(BucketState {
            entries: status.info.state.messages,
            last_revision: status.info.state.last_sequence,
        })
    }

    /// Every key's latest value, then every change, in stream order.
    pub async fn watch(&self) -> anyhow::Result<impl Stream<Item = anyhow::Result<Change>>> {
        let watch = self
            .kv
            .watch_with_history(">")
            .await
            .context("watching directory bucket")?;
        Ok(watch.map(|entry| {
            let entry = entry.context("directory watch failed")?;
            let kind = match (UserId::from_token(&entry.key), entry.operation) {
                (Err(e), _) => ChangeKind::Foreign(format!("key {:?}: {e}", entry.key)),
                (Ok(user), kv::Operation::Put) => match UserRecord::decode(&entry.value) {
                    Ok(record) => ChangeKind::Put(user, record),
                    Err(e) => ChangeKind::Foreign(format!("value of {:?}: {e}", entry.key)),
                },
                (Ok(user), kv::Operation::Delete | kv::Operation::Purge) => {
                    ChangeKind::Delete(user)
                }
            };
            Ok(Change {
                revision: entry.revision,
                pending: entry.delta,
                kind,
            })
        }))
    }
}
