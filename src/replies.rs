//! Our own reply muxer: one subscription `<prefix>.*` for the replies to every request a
//! process sends, each request numbered `<prefix>.<n>`, and its entry dropped however its
//! wait ends (reply, timeout, caller gone). async-nats's muxer keeps the entry of a request
//! that never got an answer for as long as the client lives (nats-io/nats.rs#1617).
//!
//! Replies come in one of two forms: plain (one message per reply, from any responder:
//! a center, `nats reply`), on async-nats, or pooled (`crate::pooled`: one message carries
//! the numbered replies of one answering gateway), on the gateway's deliver connection
//! ([`crate::wire`]), handed over on its task. A request to a subject nobody serves fails
//! at once: nats-server answers `<prefix>.<n>` with a no-responders status.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::{Client, StatusCode, Subject, Subscriber};
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::oneshot;

use crate::connection::RequestFailure;
use crate::pooled::{numbered, POOL_SUFFIX};
use crate::sync::lock;
use crate::wire::{Delivery, Wire};

type Answer = oneshot::Sender<Result<Bytes, RequestFailure>>;

/// What requests are published on, and their replies heard, in one of two forms.
enum Transport {
    /// async-nats: one message per reply.
    Client(Client),
    /// The deliver connection: `[[n,len,reply],...]`, several replies in one message.
    Wire(Wire),
}

/// The requesting side: one subscription for the replies to every request it sends.
pub struct Replies {
    transport: Transport,
    prefix: String,
    /// Counts up from a random start, so that a second process on the same pool subject
    /// (a gateway restarted under its id while the old one drains) takes no reply of this
    /// one's.
    next: AtomicU64,
    /// Keyed by numbers this process counts up: a fast hash is enough (SipHash was ~280
    /// instructions per request).
    waiting: Mutex<foldhash::HashMap<u64, Answer>>,
}

impl Replies {
    /// Replies pooled by the answering gateways, on `<pool>.*` (`pool` ends with
    /// [`POOL_SUFFIX`]), handed to their requests on `wire`'s task.
    pub fn start(wire: Wire, pool: String) -> anyhow::Result<Arc<Self>> {
        debug_assert!(pool.ends_with(POOL_SUFFIX));
        let subject = format!("{pool}.*");
        let replies = Arc::new(Self::new(Transport::Wire(wire.clone()), pool));
        let heard = Arc::downgrade(&replies);
        wire.subscribe(
            &subject,
            Arc::new(move |msg: Delivery<'_>| {
                if let Some(replies) = heard.upgrade() {
                    let no_responders = msg.no_responders();
                    replies.hear(|| msg.subject(), no_responders, msg.payload());
                }
            }),
        )?;
        Ok(replies)
    }

    /// Plain replies, on a fresh inbox of `client` (`_INBOX.<unique>.*`, which every role
    /// in nats-config/auth.conf may subscribe to).
    pub async fn plain(client: Client) -> anyhow::Result<Arc<Self>> {
        let prefix = client.new_inbox();
        let subscription = client.subscribe(format!("{prefix}.*")).await?;
        let replies = Arc::new(Self::new(Transport::Client(client), prefix));
        tokio::spawn(dispatch(replies.clone(), subscription));
        Ok(replies)
    }

    fn new(transport: Transport, prefix: String) -> Self {
        Replies {
            transport,
            prefix,
            next: AtomicU64::new(random_start()),
            waiting: Mutex::default(),
        }
    }

    /// Publishes `payload` to `subject` and waits up to `timeout` for its reply (the
    /// publish included: async-nats may wait for a reconnect; the wire only queues).
    pub async fn request(
        &self,
        subject: Subject,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, RequestFailure> {
        let n = self.next.fetch_add(1, Relaxed);
        let (answer, reply) = oneshot::channel();
        lock(&self.waiting).insert(n, answer);
        // Whatever ends the wait (reply, timeout, the caller giving up), n is forgotten.
        let _forget = Forget { replies: self, n };
        let kind = crate::telemetry::metric_kind(&subject);
        let started = Instant::now();
        let mut reply_to = String::with_capacity(self.prefix.len() + 21);
        reply_to.push_str(&self.prefix);
        reply_to.push('.');
        reply_to.push_str(itoa::Buffer::new().format(n));
        let exchange = async {
            match &self.transport {
                Transport::Client(client) => client
                    .publish_with_reply(subject, reply_to, payload)
                    .await
                    .map_err(|e| RequestFailure::Other(e.to_string()))?,
                Transport::Wire(wire) => wire
                    .publish(&subject, Some(&reply_to), &payload)
                    .map_err(|e| RequestFailure::Other(e.to_string()))?,
            }
            reply
                .await
                .unwrap_or_else(|_| Err(RequestFailure::Other("reply dropped".into())))
        };
        let result = tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or(Err(RequestFailure::TimedOut));
        crate::telemetry::nats_request(kind, started.elapsed());
        result
    }

    /// Requests waiting for their reply.
    pub fn waiting(&self) -> usize {
        lock(&self.waiting).len()
    }

    /// One message on the reply subscription: its replies go to their requests; a
    /// no-responders status fails its one request.
    fn hear<'a>(&self, subject: impl Fn() -> &'a str, no_responders: bool, payload: Bytes) {
        // Pooled replies carry their numbers: the subject's is read only when needed.
        if no_responders {
            if let Some(n) = number(subject()) {
                self.answer(n, Err(RequestFailure::NoResponders));
            }
            return;
        }
        match self.transport {
            Transport::Client(_) => {
                if let Some(n) = number(subject()) {
                    self.answer(n, Ok(payload));
                }
            }
            Transport::Wire(_) => match numbered(&payload) {
                Ok(pooled) => {
                    for (n, reply) in pooled {
                        self.answer(n, Ok(payload.slice(reply)));
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, subject = subject(), "malformed pooled replies")
                }
            },
        }
    }

    fn answer(&self, n: u64, result: Result<Bytes, RequestFailure>) {
        if let Some(answer) = lock(&self.waiting).remove(&n) {
            let _ = answer.send(result);
        }
    }
}

/// Removes a request's entry when its wait ends, however it ends.
struct Forget<'a> {
    replies: &'a Replies,
    n: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        lock(&self.replies.waiting).remove(&self.n);
    }
}

/// Hands each reply on `subscription` to its request.
async fn dispatch(replies: Arc<Replies>, mut subscription: Subscriber) {
    while let Some(msg) = subscription.next().await {
        let no_responders = msg.status == Some(StatusCode::NO_RESPONDERS);
        replies.hear(|| &msg.subject, no_responders, msg.payload);
    }
    // The connection drained: nothing will answer what still waits (a later request
    // fails at its publish).
    let waiting = std::mem::take(&mut *lock(&replies.waiting));
    for (_, answer) in waiting {
        let _ = answer.send(Err(RequestFailure::Other(
            "the reply subscription ended".into(),
        )));
    }
}

/// A random first request number (below 2^53: any JSON reader reads it exactly).
fn random_start() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(0u8) >> 11
}

/// The request number `n` of a reply subject `<prefix>.<n>`.
fn number(subject: &str) -> Option<u64> {
    subject.rsplit_once('.')?.1.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_subject_names_its_request() {
        assert_eq!(number("mrc.gw.a.replies.7"), Some(7));
        assert_eq!(number("_INBOX.abc.12"), Some(12));
        assert_eq!(number("_INBOX.abc.x"), None);
        assert_eq!(number("seven"), None);
    }
}
