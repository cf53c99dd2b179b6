//! The durable inbox in JetStream: one stream (file storage, the directory's replicas),
//! one subject per user. JetStream does the bookkeeping: per-user bounds with
//! `discard_new_per_subject` (a full inbox refuses the write, nothing is silently evicted),
//! the cluster's bytes and age bounds, and deduplication of retried sends by
//! `Nats-Msg-Id` within the duplicate window. Reads go to the stream leader (not
//! direct gets, which replicas may answer from behind), so a message acknowledged as
//! stored is seen by the next read.

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, stream};
use bytes::Bytes;

use super::OpenError;

/// How long an inbox request to JetStream may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The bounds of the inbox stream.
#[derive(Debug, Clone)]
pub(crate) struct InboxLimits {
    /// Stored messages per user; more are refused (`inbox_full`).
    pub(crate) per_user: i64,
    /// Stored messages are dropped after this long.
    pub(crate) max_age: Duration,
    /// Bytes in the whole stream; more are refused (`inbox_full`).
    pub(crate) max_bytes: i64,
    /// A retried send with the same message id is stored once within this window.
    pub(crate) duplicate_window: Duration,
}

/// What became of a message to keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kept {
    /// Stored under this sequence number.
    Stored(u64),
    /// Stored before, by a send with the same id (within the duplicate window).
    Duplicate(u64),
    /// Refused: the user's inbox or the stream is full (JetStream's reason).
    Full(String),
}

/// The inbox stream, as gateways use it.
#[derive(Clone)]
pub(crate) struct InboxStore {
    js: jetstream::Context,
    stream: stream::Stream<()>,
}

/// Creates the stream, or brings an existing one to `limits` (centers, at start).
pub(crate) async fn ensure(
    js: &jetstream::Context,
    name: &str,
    subjects: String,
    replicas: usize,
    limits: &InboxLimits,
) -> Result<(), OpenError> {
    let config = stream::Config {
        name: name.to_string(),
        description: Some("MRC: stored messages, one subject per user".to_string()),
        subjects: vec![subjects],
        storage: stream::StorageType::File,
        num_replicas: replicas,
        retention: stream::RetentionPolicy::Limits,
        discard: stream::DiscardPolicy::New,
        discard_new_per_subject: true,
        max_messages_per_subject: limits.per_user,
        max_bytes: limits.max_bytes,
        max_age: limits.max_age,
        duplicate_window: limits.duplicate_window,
        allow_direct: true,
        ..Default::default()
    };
    match js.create_or_update_stream(config).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == jetstream::context::CreateStreamErrorKind::InvalidStreamName => Err(
            OpenError::Config(anyhow::Error::from(e).context(format!("stream {name}"))),
        ),
        Err(e) => {
            let e = anyhow::Error::from(e);
            Err(OpenError::Unavailable(e.context(format!("stream {name}"))))
        }
    }
}

impl InboxStore {
    /// The stream `name`; nothing is asked of JetStream until it is used.
    /// Its requests get [`TIMEOUT`]: the connection's request timeout is for routing, and
    /// a purge or read that outlives it under load still happens (an ack answered
    /// `unavailable` had removed the messages).
    pub(crate) async fn attach(mut js: jetstream::Context, name: &str) -> anyhow::Result<Self> {
        js.set_timeout(TIMEOUT);
        let stream = js
            .get_stream_no_info(name)
            .await
            .with_context(|| format!("inbox stream {name}"))?;
        Ok(InboxStore { js, stream })
    }

    /// Keeps `payload` on `subject` (one user's inbox), once per `msg_id`.
    pub(crate) async fn keep(
        &self,
        subject: String,
        msg_id: &str,
        payload: Bytes,
    ) -> anyhow::Result<Kept> {
        let publish = jetstream::message::PublishMessage::build()
            .payload(payload)
            .message_id(msg_id);
        let acked = match self.js.send_publish(subject, publish).await {
            Ok(ack) => ack.await,
            Err(e) => Err(e),
        };
        match acked {
            Ok(ack) if ack.duplicate => Ok(Kept::Duplicate(ack.sequence)),
            Ok(ack) => Ok(Kept::Stored(ack.sequence)),
            Err(e) => {
                let reason = format!("{e}: {}", source_text(&e));
                if reason.contains("maximum") {
                    Ok(Kept::Full(reason))
                } else {
                    Err(anyhow::Error::from(e).context("storing in the inbox"))
                }
            }
        }
    }

    /// Up to `limit` messages on `subject` with a sequence above `since`, oldest first,
    /// and whether more follow.
    pub(crate) async fn read(
        &self,
        subject: &str,
        since: u64,
        limit: usize,
    ) -> anyhow::Result<(Vec<(u64, Bytes)>, bool)> {
        let mut messages = Vec::new();
        let mut after = since;
        while let Some((seq, payload)) = self.next(subject, after).await? {
            if messages.len() == limit {
                return Ok((messages, true));
            }
            after = seq;
            messages.push((seq, payload));
        }
        Ok((messages, false))
    }

    /// The first message on `subject` with a sequence above `after`, if any: one request
    /// to the stream leader.
    pub(crate) async fn next(
        &self,
        subject: &str,
        after: u64,
    ) -> anyhow::Result<Option<(u64, Bytes)>> {
        let got = self
            .stream
            .raw_message_builder()
            .sequence(after + 1)
            .next_by_subject(subject.to_string())
            .send()
            .await;
        match got {
            Ok(message) => Ok(Some((message.sequence, message.payload))),
            Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(anyhow::Error::from(e).context("reading the inbox")),
        }
    }

    /// Removes the messages on `subject` up to and including `upto`; how many.
    pub(crate) async fn remove(&self, subject: &str, upto: u64) -> anyhow::Result<u64> {
        let purged = self
            .stream
            .purge()
            .filter(subject)
            .sequence(upto.saturating_add(1))
            .await
            .context("removing from the inbox")?;
        Ok(purged.purged)
    }
}

/// The text of an error's source (JetStream's description), or nothing.
fn source_text(e: &dyn std::error::Error) -> String {
    e.source().map(ToString::to_string).unwrap_or_default()
}
