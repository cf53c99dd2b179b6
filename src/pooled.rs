//! Requests whose replies travel pooled, between processes that talk to each other a lot
//! (gateway to gateway deliveries).
//!
//! With NATS request-reply every request costs two messages and, below saturation, a
//! wake-up of nats-server and of the requester for each of them (docs/PERFORMANCE.md).
//! Here the requester ([`Replies`]) publishes with a reply subject of its own,
//! `<pool>.<n>`, all served by one subscription `<pool>.*`; the answerer ([`Pool`])
//! gathers its replies to one requester for up to a window and sends them as one message
//! `[[n,reply],...]`, or sooner, just before its own next request to that requester, so
//! that both leave in one write and arrive in one read. A request to a subject nobody
//! serves fails at once: nats-server answers `<pool>.<n>` with a no-responders status.
//!
//! A reply subject that is not a pool's (`nats req`, say) is answered at once, alone.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use async_nats::{Client, StatusCode, Subject, Subscriber};
use bytes::{BufMut, Bytes, BytesMut};
use futures::StreamExt;
use serde_json::value::RawValue;
use tokio::sync::{oneshot, Notify};

use crate::connection::{RequestFailure, Respond};
use crate::sync::lock;

/// The last token of every pool subject (`mrc.gw.<gateway>.replies`).
pub const POOL_SUFFIX: &str = ".replies";

/// A pool's replies, once gathered, leave at once past this size.
const MAX_POOLED_BYTES: usize = 64 * 1024;

type Answer = oneshot::Sender<Result<Bytes, RequestFailure>>;

/// The requesting side: one subscription for the replies to every request it sends.
pub struct Replies {
    client: Client,
    pool: String,
    next: AtomicU64,
    /// Keyed by numbers this process counts up: a fast hash is enough (SipHash was ~280
    /// instructions per request).
    waiting: Mutex<foldhash::HashMap<u64, Answer>>,
}

impl Replies {
    /// Subscribes to `<pool>.*` (`pool` ends with [`POOL_SUFFIX`]) and hands each reply
    /// to its request until the subscription ends (the connection drains).
    pub async fn start(client: Client, pool: String) -> anyhow::Result<Arc<Self>> {
        debug_assert!(pool.ends_with(POOL_SUFFIX));
        let subscription = client.subscribe(format!("{pool}.*")).await?;
        let replies = Arc::new(Replies {
            client,
            pool,
            next: AtomicU64::new(1),
            waiting: Mutex::default(),
        });
        tokio::spawn(dispatch(replies.clone(), subscription));
        Ok(replies)
    }

    /// Publishes `payload` to `subject` and waits up to `timeout` for its reply.
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
        let mut reply_to = String::with_capacity(self.pool.len() + 21);
        reply_to.push_str(&self.pool);
        reply_to.push('.');
        reply_to.push_str(itoa::Buffer::new().format(n));
        let exchange = async {
            self.client
                .publish_with_reply(subject, reply_to, payload)
                .await
                .map_err(|e| RequestFailure::Other(e.to_string()))?;
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

/// Hands pooled replies to their requests; a no-responders status fails its one request.
async fn dispatch(replies: Arc<Replies>, mut subscription: Subscriber) {
    while let Some(msg) = subscription.next().await {
        if msg.status == Some(StatusCode::NO_RESPONDERS) {
            if let Some(n) = number(&msg.subject) {
                replies.answer(n, Err(RequestFailure::NoResponders));
            }
            continue;
        }
        match serde_json::from_slice::<Vec<(u64, &RawValue)>>(&msg.payload) {
            Ok(pooled) => {
                for (n, reply) in pooled {
                    let reply = msg.payload.slice_ref(reply.get().as_bytes());
                    replies.answer(n, Ok(reply));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, subject = %msg.subject, "malformed pooled replies")
            }
        }
    }
}

/// The request number `n` of a reply subject `<pool>.<n>`.
fn number(subject: &str) -> Option<u64> {
    subject.rsplit_once('.')?.1.parse().ok()
}

/// The pool and request number of a reply subject, when it is a pool's.
pub fn pooled(reply: &str) -> Option<(&str, u64)> {
    let (pool, n) = reply.rsplit_once('.')?;
    if !pool.ends_with(POOL_SUFFIX) {
        return None;
    }
    Some((pool, n.parse().ok()?))
}

/// The answering side: replies gathered per requester's pool.
pub struct Pool {
    client: Client,
    window: Duration,
    /// One entry per requester ever answered (a few: the other gateways), emptied by
    /// each flush.
    gathered: Mutex<HashMap<String, Gathered>>,
    /// Told when a pool gets its first reply; the flusher sends it after the window.
    due: Arc<Notify>,
}

/// Replies to one pool not sent yet.
#[derive(Default)]
struct Gathered {
    /// The reply subject of the first of them (any `<pool>.<n>` reaches the pool).
    subject: Option<Subject>,
    replies: Vec<(u64, Bytes)>,
    bytes: usize,
}

impl Pool {
    /// Replies wait at most `window` for others to the same requester (zero: none wait).
    pub fn new(client: Client, window: Duration) -> Arc<Self> {
        let due = Arc::new(Notify::new());
        let pool = Arc::new(Pool {
            client,
            window,
            gathered: Mutex::default(),
            due: due.clone(),
        });
        if !window.is_zero() {
            tokio::spawn(flusher(Arc::downgrade(&pool), due, window));
        }
        pool
    }

    /// Answers a request whose reply subject is `reply_to`: pooled when it is a pool's.
    pub async fn reply(&self, reply_to: Subject, reply: Bytes) {
        let Some((pool, n)) = pooled(&reply_to) else {
            return self.client.respond(reply_to, reply).await;
        };
        if self.window.is_zero() {
            return self.send(reply_to.clone(), encode(&[(n, reply)])).await;
        }
        let (first, full) = {
            let mut gathered = lock(&self.gathered);
            if !gathered.contains_key(pool) {
                gathered.insert(pool.to_owned(), Gathered::default());
            }
            let entry = gathered.get_mut(pool).expect("inserted above");
            if entry.subject.is_none() {
                entry.subject = Some(reply_to.clone());
            }
            entry.bytes += reply.len() + 24;
            entry.replies.push((n, reply));
            (entry.replies.len() == 1, entry.bytes >= MAX_POOLED_BYTES)
        };
        if full {
            self.flush(pool).await;
        } else if first {
            self.due.notify_one();
        }
    }

    /// Sends what is gathered for `pool` now (before a request to the same process, so
    /// both travel together).
    pub async fn flush(&self, pool: &str) {
        let taken = lock(&self.gathered).get_mut(pool).and_then(take);
        if let Some((subject, replies)) = taken {
            self.send(subject, encode(&replies)).await;
        }
    }

    /// Sends what is gathered for every pool.
    async fn flush_all(&self) {
        let taken: Vec<_> = lock(&self.gathered).values_mut().filter_map(take).collect();
        for (subject, replies) in taken {
            self.send(subject, encode(&replies)).await;
        }
    }

    async fn send(&self, subject: Subject, payload: Bytes) {
        if let Err(e) = self.client.publish(subject, payload).await {
            tracing::debug!(error = %e, "pooled replies not sent");
        }
    }
}

impl Drop for Pool {
    /// Wakes the flusher, which then finds the pool gone and ends.
    fn drop(&mut self) {
        self.due.notify_one();
    }
}

/// What one pool has gathered, leaving it empty.
fn take(gathered: &mut Gathered) -> Option<(Subject, Vec<(u64, Bytes)>)> {
    let subject = gathered.subject.take()?;
    gathered.bytes = 0;
    Some((subject, std::mem::take(&mut gathered.replies)))
}

/// One task per pool sends replies a window after the first of them (those gathered
/// meanwhile go too); a pool told again while it slept flushes once more.
async fn flusher(pool: Weak<Pool>, due: Arc<Notify>, window: Duration) {
    loop {
        due.notified().await;
        tokio::time::sleep(window).await;
        let Some(pool) = pool.upgrade() else { return };
        pool.flush_all().await;
    }
}

impl Respond for Pool {
    fn respond(
        &self,
        reply_to: Subject,
        reply: Bytes,
    ) -> impl std::future::Future<Output = ()> + Send {
        self.reply(reply_to, reply)
    }
}

/// `[[n,reply],...]` from already encoded replies.
fn encode(replies: &[(u64, Bytes)]) -> Bytes {
    let len: usize = replies.iter().map(|(_, r)| r.len() + 24).sum();
    let mut out = BytesMut::with_capacity(len + 2);
    out.put_u8(b'[');
    for (i, (n, reply)) in replies.iter().enumerate() {
        if i > 0 {
            out.put_u8(b',');
        }
        out.put_u8(b'[');
        out.put_slice(itoa::Buffer::new().format(*n).as_bytes());
        out.put_u8(b',');
        out.put_slice(reply);
        out.put_u8(b']');
    }
    out.put_u8(b']');
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_subjects_are_told_from_other_reply_subjects() {
        assert_eq!(
            pooled("mrc.gw.gw-1.replies.42"),
            Some(("mrc.gw.gw-1.replies", 42))
        );
        assert_eq!(pooled("_INBOX.abc.def"), None);
        assert_eq!(pooled("mrc.gw.gw-1.replies.x"), None);
        assert_eq!(pooled("replies"), None);
        assert_eq!(number("mrc.gw.a.replies.7"), Some(7));
    }

    #[test]
    fn replies_are_encoded_as_numbered_pairs() {
        let replies = [
            (
                3,
                Bytes::from_static(b"{\"delivered\":[\"b\"],\"absent\":[]}"),
            ),
            (4, Bytes::from_static(b"[1,2]")),
        ];
        let encoded = encode(&replies);
        assert_eq!(
            &encoded[..],
            &b"[[3,{\"delivered\":[\"b\"],\"absent\":[]}],[4,[1,2]]]"[..]
        );
        let decoded: Vec<(u64, &RawValue)> = serde_json::from_slice(&encoded).unwrap();
        assert_eq!(decoded[1].0, 4);
        assert_eq!(decoded[1].1.get(), "[1,2]");
    }
}
