//! Requests to one subject travel in batches when they pile up, and a service answers a
//! batch element by element.
//!
//! A [`Batcher`] owns one subject (a destination gateway's deliver subject, the centers'
//! register subject...) and a small task, with at most `in_flight` NATS requests out at
//! once. A request that finds a free slot and nothing queued goes out alone, at once,
//! from the caller's own task (no added latency or task hand-over at low load); those
//! that arrive while every slot is busy wait and leave together, as one JSON
//! array, in the next free slot, and the reply is an array of the same length and order.
//! Under load the writes, wake-ups and request overheads per call shrink with the batch
//! size (docs/PERFORMANCE.md). [`answer_each`] is the serving side.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::Subject;
use bytes::{BufMut, Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::connection::{request_raw, Nats, RequestFailure};
use crate::pooled::Pool;
use crate::protocol::nats::{decode_reply, encode, ErrorBody, ErrorReply};
use crate::replies::Replies;
use crate::timer::FineTimer;

mod linger;
use linger::{Forming, Gathered};

/// How a [`Batcher`] may batch.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// NATS requests out at once.
    pub in_flight: usize,
    /// Most calls in one batch.
    pub max_calls: usize,
    /// Most bytes in one batch (well below NATS `max_payload`; one call may exceed it alone).
    pub max_bytes: usize,
    /// Calls waiting before callers wait too.
    pub queue: usize,
}

type Answer = oneshot::Sender<Result<Bytes, RequestFailure>>;

/// One encoded request and who waits for its reply.
struct Call {
    payload: Bytes,
    answer: Answer,
}

/// The batching sender of one subject. Cheap to clone; the task ends with the last clone.
#[derive(Clone)]
pub struct Batcher {
    calls: mpsc::Sender<Call>,
    target: Arc<Target>,
}

/// Where a batcher sends, shared by its task and the callers that send themselves.
struct Target {
    client: Nats,
    subject: Subject,
    timeout: Duration,
    slots: Arc<Semaphore>,
    pooled: Option<Pooled>,
    limits: Limits,
    /// Batchers with a linger: the calls gathered by the first of them, which sleeps the
    /// linger before it sends them all.
    forming: std::sync::Mutex<Forming>,
    /// What the leader sleeps its linger on (tokio's timer would round it up to 1–2 ms).
    timer: FineTimer,
}

/// Requests to a process that also sends requests here: replies come back pooled
/// (`crate::pooled`), and the replies gathered for that process leave with each request.
pub struct Pooled {
    pub replies: Arc<Replies>,
    pub pool: Arc<Pool>,
    /// The pool of the process served by this batcher's subject.
    pub peer: String,
    /// How long the first call waits for others to go with it, when calls come closer
    /// together than this (zero: it never waits; calls gather only while every slot is
    /// busy). Longer means fewer, bigger requests at the price of that much latency.
    /// Yielding one scheduler tick instead cost more instructions per message and saved
    /// no measurable CPU (docs/PERFORMANCE.md).
    pub linger: Duration,
}

impl Target {
    /// The linger of a pooled batcher, when it has one.
    fn linger(&self) -> Option<Duration> {
        let linger = self.pooled.as_ref()?.linger;
        (!linger.is_zero()).then_some(linger)
    }

    /// One NATS request of `payload` (one call or a batch) and its reply.
    async fn call(&self, payload: Bytes) -> Result<Bytes, RequestFailure> {
        let subject = self.subject.clone();
        match &self.pooled {
            None => request_raw(&self.client, subject, payload, self.timeout).await,
            Some(pooled) => {
                pooled.pool.flush(&pooled.peer);
                let replies = &pooled.replies;
                replies.request(subject, payload, self.timeout).await
            }
        }
    }
}

impl Batcher {
    /// Starts the task that sends to `subject`, each NATS request bounded by `timeout`.
    pub fn start(client: Nats, subject: String, timeout: Duration, limits: Limits) -> Self {
        Self::launch(client, subject, timeout, limits, None)
    }

    /// [`Batcher::start`] with replies that come back pooled.
    pub fn start_pooled(
        client: Nats,
        subject: String,
        timeout: Duration,
        limits: Limits,
        pooled: Pooled,
    ) -> Self {
        Self::launch(client, subject, timeout, limits, Some(pooled))
    }

    fn launch(
        client: Nats,
        subject: String,
        timeout: Duration,
        limits: Limits,
        pooled: Option<Pooled>,
    ) -> Self {
        let (calls, rx) = mpsc::channel(limits.queue);
        let target = Arc::new(Target {
            client,
            subject: subject.into(),
            timeout,
            slots: Arc::new(Semaphore::new(limits.in_flight)),
            pooled,
            limits,
            forming: Default::default(),
            timer: FineTimer::default(),
        });
        tokio::spawn(run(target.clone(), rx));
        Batcher { calls, target }
    }

    /// Sends one encoded request (maybe batched with others) and decodes its own reply.
    pub async fn request<T: DeserializeOwned>(&self, payload: Bytes) -> Result<T, RequestFailure> {
        self.request_with(payload, decode).await
    }

    /// [`Batcher::request`] with a decoder of its own for the reply.
    pub(crate) async fn request_with<T>(
        &self,
        payload: Bytes,
        decode: fn(&[u8]) -> Result<T, RequestFailure>,
    ) -> Result<T, RequestFailure> {
        let payload = match self.target.linger() {
            None => payload,
            Some(linger) => match self.gather(payload, linger) {
                Gathered::Now(payload) => payload,
                Gathered::Lead(pause, reply) => {
                    self.lead(pause).await;
                    return wait(reply, decode).await;
                }
                Gathered::Follow(reply) => return wait(reply, decode).await,
            },
        };
        // Nothing queued and a slot free (below saturation, nearly always): send from this
        // task, without handing the call to the batcher's task and back.
        if self.calls.capacity() == self.calls.max_capacity() {
            if let Ok(slot) = self.target.slots.clone().try_acquire_owned() {
                let reply = self.target.call(payload).await;
                drop(slot);
                return decode(&reply?);
            }
        }
        let (answer, reply) = oneshot::channel();
        if self.calls.send(Call { payload, answer }).await.is_err() {
            return Err(RequestFailure::Other("batcher stopped".into()));
        }
        wait(reply, decode).await
    }
}

/// A call's reply, decoded.
async fn wait<T>(
    reply: oneshot::Receiver<Result<Bytes, RequestFailure>>,
    decode: fn(&[u8]) -> Result<T, RequestFailure>,
) -> Result<T, RequestFailure> {
    let reply = reply
        .await
        .unwrap_or_else(|_| Err(RequestFailure::Other("batch dropped".into())))?;
    decode(&reply)
}

/// The task of one subject: takes a free slot, then everything queued meanwhile.
async fn run(target: Arc<Target>, mut rx: mpsc::Receiver<Call>) {
    let limits = target.limits;
    while let Some(first) = rx.recv().await {
        let slot = target
            .slots
            .clone()
            .acquire_owned()
            .await
            .expect("the slots semaphore is never closed");
        let mut calls = vec![first];
        let mut bytes = calls[0].payload.len();
        while calls.len() < limits.max_calls && bytes < limits.max_bytes {
            match rx.try_recv() {
                Ok(call) => {
                    bytes += call.payload.len() + 1;
                    calls.push(call);
                }
                Err(_) => break,
            }
        }
        let target = target.clone();
        tokio::spawn(async move {
            send(&target, calls).await;
            drop(slot);
        });
    }
}

/// One NATS request for `calls`: a single request as it is, several as an array (or a
/// compact batch, when they are compact deliver requests: `protocol::compact`).
async fn send(target: &Target, calls: Vec<Call>) {
    if calls.len() == 1 {
        let call = calls.into_iter().next().expect("one call");
        let _ = call.answer.send(target.call(call.payload).await);
        return;
    }
    let kind = crate::telemetry::metric_kind(&target.subject);
    metrics::counter!(crate::telemetry::BATCHES, "kind" => kind).increment(1);
    let payloads = calls.iter().map(|c| &c.payload[..]);
    let payload = if crate::protocol::compact::is_compact(&calls[0].payload) {
        crate::protocol::compact::join(payloads)
    } else {
        json_array(payloads)
    };
    let replies = target
        .call(payload)
        .await
        .and_then(|reply| split(&reply, calls.len()));
    match replies {
        Ok(replies) => {
            for (call, reply) in calls.into_iter().zip(replies) {
                let _ = call.answer.send(Ok(reply));
            }
        }
        Err(e) => {
            for call in calls {
                let _ = call.answer.send(Err(e.same()));
            }
        }
    }
}

/// The elements of a batch reply, as slices of it. A reply that is not an array of
/// `expected` elements (an error reply to the whole batch, say) fails every call.
fn split(reply: &Bytes, expected: usize) -> Result<Vec<Bytes>, RequestFailure> {
    let elements: Vec<&RawValue> = match serde_json::from_slice(reply) {
        Ok(elements) => elements,
        // An error reply to the whole batch says why; anything else is malformed.
        Err(_) => {
            return Err(match decode::<serde::de::IgnoredAny>(reply) {
                Err(e) => e,
                Ok(_) => RequestFailure::Other("a batch reply that is not an array".into()),
            })
        }
    };
    if elements.len() != expected {
        let why = format!("{} replies to a batch of {expected}", elements.len());
        return Err(RequestFailure::Other(why));
    }
    Ok(elements
        .into_iter()
        .map(|raw| reply.slice_ref(raw.get().as_bytes()))
        .collect())
}

fn decode<T: DeserializeOwned>(reply: &[u8]) -> Result<T, RequestFailure> {
    decode_reply(reply).map_err(RequestFailure::from)
}

/// `[a,b,c]` from already encoded JSON values.
pub(crate) fn json_array<'a>(values: impl Iterator<Item = &'a [u8]> + Clone) -> Bytes {
    let len: usize = values.clone().map(|v| v.len() + 1).sum();
    let mut out = BytesMut::with_capacity(len + 2);
    out.put_u8(b'[');
    for (i, value) in values.enumerate() {
        if i > 0 {
            out.put_u8(b',');
        }
        out.put_slice(value);
    }
    out.put_u8(b']');
    out.freeze()
}

/// Whether a request payload is a batch (a JSON array) rather than one request.
pub(crate) fn is_batch(payload: &[u8]) -> bool {
    payload.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[')
}

/// Answers a request that may be a batch: one request is answered by `answer`, error or
/// not; an array is answered element by element, concurrently, as an array in the same
/// order whose failed elements are error replies (an array that does not parse is one
/// error).
pub async fn answer_each<'a, F, Fut>(payload: &'a [u8], answer: F) -> Result<Bytes, ErrorBody>
where
    F: Fn(&'a [u8]) -> Fut,
    Fut: Future<Output = Result<Bytes, ErrorBody>>,
{
    if !is_batch(payload) {
        return answer(payload).await;
    }
    let elements: Vec<&RawValue> = crate::protocol::decode(payload)?;
    let replies =
        futures::future::join_all(elements.iter().map(|raw| answer(raw.get().as_bytes()))).await;
    let replies: Vec<Bytes> = replies
        .into_iter()
        .map(|reply| reply.unwrap_or_else(|error| encode(&ErrorReply { error })))
        .collect();
    Ok(json_array(replies.iter().map(|r| &r[..])))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::code::ErrorCode;
    use crate::protocol::nats::SessionsReply;

    #[test]
    fn arrays_are_joined_and_split_without_copies() {
        let joined = json_array([&b"{\"a\":1}"[..], b"2", b"\"x\""].into_iter());
        assert_eq!(&joined[..], b"[{\"a\":1},2,\"x\"]");
        let parts = split(&joined, 3).unwrap();
        assert_eq!(parts[0], &b"{\"a\":1}"[..]);
        assert_eq!(parts[2], &b"\"x\""[..]);
        assert!(matches!(split(&joined, 2), Err(RequestFailure::Other(_))));
        assert_eq!(&json_array(std::iter::empty())[..], b"[]");
    }

    #[test]
    fn an_error_reply_to_a_whole_batch_fails_every_call() {
        let reply = encode(&ErrorReply::new(ErrorCode::BadJson, "no"));
        match split(&reply, 2) {
            Err(RequestFailure::Remote(body)) => assert_eq!(body.code, ErrorCode::BadJson),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_batch_is_answered_in_order_and_one_request_as_itself() {
        let echo = |p: &[u8]| {
            let n: u64 = serde_json::from_slice(p).unwrap_or(0);
            async move {
                if n == 0 {
                    return Err(ErrorReply::new(ErrorCode::BadFrame, "zero").error);
                }
                Ok(encode(&SessionsReply {
                    sessions: n as usize,
                    kicked: false,
                }))
            }
        };
        let one = answer_each(b"7", echo).await.unwrap();
        assert_eq!(decode::<SessionsReply>(&one).unwrap().sessions, 7);
        let refused = answer_each(b"0", echo).await.unwrap_err();
        assert_eq!(
            refused.code,
            ErrorCode::BadFrame,
            "one request fails as itself"
        );
        let many = answer_each(b" [3, 0,2]", echo).await.unwrap();
        let parts = split(&many, 3).unwrap();
        let sessions: Vec<Option<usize>> = parts
            .iter()
            .map(|p| decode::<SessionsReply>(p).ok().map(|r| r.sessions))
            .collect();
        assert_eq!(
            sessions,
            [Some(3), None, Some(2)],
            "a failed element in its place"
        );
        let bad = answer_each(b"[1,", echo).await.unwrap_err();
        assert_eq!(bad.code, ErrorCode::BadJson);
    }
}
