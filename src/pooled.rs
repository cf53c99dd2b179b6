//! Requests whose replies travel pooled, between processes that talk to each other a lot
//! (gateway to gateway deliveries).
//!
//! With NATS request-reply every request costs two messages and, below saturation, a
//! wake-up of nats-server and of the requester for each of them (docs/PERFORMANCE.md).
//! Here the requester ([`crate::replies::Replies`]) publishes with a reply subject of its
//! own, `<pool>.<n>`, all served by one subscription `<pool>.*`; the answerer ([`Pool`])
//! gathers its replies to one requester for up to a window and sends them as one message
//! `[[n,len,reply],...]`, or sooner, just before its own next request to that requester, so
//! that both leave in one write and arrive in one read. Replies gather only while traffic
//! to that requester (replies and requests) comes closer together than the window, and
//! for about as long as 16 of them take ([`crate::pace`]): a quiet pair of gateways
//! replies at once, with no timer. A request to a subject nobody serves fails at once:
//! nats-server answers `<pool>.<n>` with a no-responders status.
//!
//! A reply subject that is not a pool's (`nats req`, say) is answered at once, alone.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use foldhash::HashMap;
use serde_json::value::RawValue;
use tokio::sync::Notify;

use crate::pace::Pace;
use crate::sync::lock;
use crate::timer::FineTimer;
use crate::wire::Wire;

/// The last token of every pool subject (`mrc.gw.<gateway>.replies`).
pub const POOL_SUFFIX: &str = ".replies";

/// A pool's replies, once gathered, leave at once past this size.
const MAX_POOLED_BYTES: usize = 64 * 1024;

/// The numbered replies of a pooled payload, as byte ranges of it. What [`encode`] writes
/// is split by slicing at the lengths it carries (each reply is decoded by its requester
/// anyway; serde_json checking every reply here as well cost ~1.7k instructions per
/// message). Anything else, spaced JSON say, goes through serde_json.
pub(crate) fn numbered(payload: &[u8]) -> Result<Vec<(u64, Range<usize>)>, serde_json::Error> {
    if let Some(split) = split_encoded(payload) {
        return Ok(split);
    }
    let pooled: Vec<(u64, usize, &RawValue)> = serde_json::from_slice(payload)?;
    let start = |raw: &RawValue| raw.get().as_ptr() as usize - payload.as_ptr() as usize;
    Ok(pooled
        .into_iter()
        .map(|(n, _, raw)| (n, start(raw)..start(raw) + raw.get().len()))
        .collect())
}

/// `[[n,len,reply],...]` exactly as [`encode`] writes it, or `None`.
fn split_encoded(payload: &[u8]) -> Option<Vec<(u64, Range<usize>)>> {
    let mut at = 0;
    let expect = |at: &mut usize, byte: u8| {
        let found = payload.get(*at) == Some(&byte);
        *at += 1;
        found.then_some(())
    };
    let number = |at: &mut usize| -> Option<u64> {
        let digits = payload[*at..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        let n = crate::protocol::decimal(&payload[*at..*at + digits])?;
        *at += digits;
        Some(n)
    };
    expect(&mut at, b'[')?;
    let mut split = Vec::with_capacity(1);
    if payload.get(at) == Some(&b']') {
        return (payload.len() == 2).then_some(split);
    }
    loop {
        expect(&mut at, b'[')?;
        let n = number(&mut at)?;
        expect(&mut at, b',')?;
        let len = usize::try_from(number(&mut at)?).ok()?;
        expect(&mut at, b',')?;
        let end = at.checked_add(len).filter(|&end| end <= payload.len())?;
        split.push((n, at..end));
        at = end;
        expect(&mut at, b']')?;
        match payload.get(at) {
            Some(b',') => at += 1,
            Some(b']') if at + 1 == payload.len() => return Some(split),
            _ => return None,
        }
    }
}

/// The pool and request number of a reply subject, when it is a pool's.
pub fn pooled(reply: &str) -> Option<(&str, u64)> {
    let (pool, n) = reply.rsplit_once('.')?;
    if !pool.ends_with(POOL_SUFFIX) {
        return None;
    }
    Some((pool, n.parse().ok()?))
}

/// The answering side: replies gathered per requester's pool, sent on the deliver
/// connection ([`crate::wire`]: a publish only queues, nothing here waits).
pub struct Pool {
    wire: Wire,
    window: Duration,
    /// One entry per requester ever answered (a few: the other gateways), emptied by
    /// each flush. Looked up for every reply and request: a fast hash (SipHash was ~230
    /// instructions a look-up).
    gathered: Mutex<HashMap<String, Gathered>>,
    /// Told when a pool gets its first reply; the flusher sends it after `pause`.
    due: Arc<Notify>,
    /// How long the flusher waits, in microseconds: the shortest wait of the gatherings
    /// started since it last woke (`u64::MAX`: none), so that no requester's replies
    /// wait longer than their own pace asks.
    pause: AtomicU64,
}

/// Replies to one pool not sent yet.
#[derive(Default)]
struct Gathered {
    /// The reply subject of the first of them (any `<pool>.<n>` reaches the pool).
    subject: Option<String>,
    replies: Vec<(u64, Bytes)>,
    bytes: usize,
    /// Of everything that leaves for this requester: replies, and requests.
    pace: Pace,
}

impl Pool {
    /// Replies wait at most `window` for others to the same requester (zero: none wait).
    pub fn new(wire: Wire, window: Duration) -> Arc<Self> {
        let due = Arc::new(Notify::new());
        let pool = Arc::new(Pool {
            wire,
            window,
            gathered: Mutex::default(),
            due: due.clone(),
            pause: AtomicU64::new(u64::MAX),
        });
        if !window.is_zero() {
            tokio::spawn(flusher(Arc::downgrade(&pool), due, window));
        }
        pool
    }

    /// Answers a request whose reply subject is `reply_to`: pooled when it is a pool's.
    pub fn reply(&self, reply_to: &str, reply: Bytes) {
        let Some((pool, n)) = pooled(reply_to) else {
            return self.send(reply_to, &[&reply]);
        };
        if !self.window.is_zero() {
            let mut gathered = lock(&self.gathered);
            let entry = entry(&mut gathered, pool);
            let wait = entry.pace.wait(Instant::now(), self.window);
            let fits = entry.bytes + reply.len() + 24 < MAX_POOLED_BYTES;
            match wait {
                Some(wait) if fits => {
                    let first = entry.gather(reply_to, n, reply);
                    drop(gathered);
                    if first {
                        let micros = wait.as_micros().try_into().unwrap_or(u64::MAX);
                        self.pause.fetch_min(micros, Relaxed);
                        self.due.notify_one();
                    }
                    return;
                }
                _ if !entry.replies.is_empty() => {
                    entry.gather(reply_to, n, reply);
                    let taken = take(entry);
                    drop(gathered);
                    if let Some((subject, replies)) = taken {
                        self.send(&subject, &[&encode(&replies)]);
                    }
                    return;
                }
                _ => {}
            }
        }
        // Alone: written straight into the connection's buffer.
        alone(n, &reply, |parts| self.send(reply_to, parts));
    }

    /// Sends what is gathered for `pool` now: before a request to the same process, so
    /// that both travel together (which counts towards the pace there too).
    pub fn flush(&self, pool: &str) {
        let taken = {
            let mut gathered = lock(&self.gathered);
            let entry = entry(&mut gathered, pool);
            entry.pace.wait(Instant::now(), self.window);
            take(entry)
        };
        if let Some((subject, replies)) = taken {
            self.send(&subject, &[&encode(&replies)]);
        }
    }

    /// Sends what is gathered for every pool.
    fn flush_all(&self) {
        let taken: Vec<_> = lock(&self.gathered).values_mut().filter_map(take).collect();
        for (subject, replies) in taken {
            self.send(&subject, &[&encode(&replies)]);
        }
    }

    /// Publishes the concatenation of `payload`.
    fn send(&self, subject: &str, payload: &[&[u8]]) {
        if let Err(e) = self.wire.publish_parts(subject, None, payload) {
            tracing::debug!(error = %e, "replies not sent");
        }
    }
}

impl Drop for Pool {
    /// Wakes the flusher, which then finds the pool gone and ends.
    fn drop(&mut self) {
        self.due.notify_one();
    }
}

impl Gathered {
    /// Adds a reply; true if it is the first since the last flush.
    fn gather(&mut self, reply_to: &str, n: u64, reply: Bytes) -> bool {
        if self.subject.is_none() {
            self.subject = Some(reply_to.to_owned());
        }
        self.bytes += reply.len() + 24;
        self.replies.push((n, reply));
        self.replies.len() == 1
    }
}

/// The replies gathered for `pool`, made on first use (one per requester).
fn entry<'a>(gathered: &'a mut HashMap<String, Gathered>, pool: &str) -> &'a mut Gathered {
    if !gathered.contains_key(pool) {
        gathered.insert(pool.to_owned(), Gathered::default());
    }
    gathered.get_mut(pool).expect("inserted above")
}

/// What one pool has gathered, leaving it empty.
fn take(gathered: &mut Gathered) -> Option<(String, Vec<(u64, Bytes)>)> {
    let subject = gathered.subject.take()?;
    gathered.bytes = 0;
    Some((subject, std::mem::take(&mut gathered.replies)))
}

/// One task per pool sends replies a pause after the first of them (those gathered
/// meanwhile go too); a pool told again while it slept flushes once more. One timer
/// serves every requester: a gathering started while it sleeps leaves with that flush,
/// so no reply waits longer than the window after it was gathered.
async fn flusher(pool: Weak<Pool>, due: Arc<Notify>, window: Duration) {
    let timer = FineTimer::default();
    loop {
        due.notified().await;
        let Some(pause) = pool.upgrade().map(|p| p.pause.swap(u64::MAX, Relaxed)) else {
            return;
        };
        timer.sleep(window.min(Duration::from_micros(pause))).await;
        let Some(pool) = pool.upgrade() else { return };
        pool.flush_all();
    }
}

/// What [`encode`] writes for one reply, `[[n,len,reply]]`, handed to `write` in parts
/// (not copied into a buffer of its own first).
fn alone(n: u64, reply: &[u8], write: impl FnOnce(&[&[u8]])) {
    let (mut number, mut len) = (itoa::Buffer::new(), itoa::Buffer::new());
    let (number, len) = (number.format(n), len.format(reply.len()));
    write(&[
        b"[[",
        number.as_bytes(),
        b",",
        len.as_bytes(),
        b",",
        reply,
        b"]]",
    ]);
}

/// `[[n,len,reply],...]` from already encoded replies (`len`: the reply's bytes).
fn encode(replies: &[(u64, Bytes)]) -> Bytes {
    let len: usize = replies.iter().map(|(_, r)| r.len() + 48).sum();
    let mut out = BytesMut::with_capacity(len + 2);
    out.put_u8(b'[');
    for (i, (n, reply)) in replies.iter().enumerate() {
        if i > 0 {
            out.put_u8(b',');
        }
        out.put_u8(b'[');
        out.put_slice(itoa::Buffer::new().format(*n).as_bytes());
        out.put_u8(b',');
        out.put_slice(itoa::Buffer::new().format(reply.len()).as_bytes());
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
    }

    #[test]
    fn replies_are_encoded_as_numbered_pairs_with_their_length() {
        let replies = [
            (3, Bytes::from_static(br#"{"delivered":["b"],"absent":[]}"#)),
            (4, Bytes::from_static(b"[1,2]")),
        ];
        let encoded = encode(&replies);
        assert_eq!(
            &encoded[..],
            &br#"[[3,31,{"delivered":["b"],"absent":[]}],[4,5,[1,2]]]"#[..]
        );
        let decoded: Vec<(u64, usize, &RawValue)> = serde_json::from_slice(&encoded).unwrap();
        assert_eq!((decoded[1].0, decoded[1].1), (4, 5));
        assert_eq!(decoded[1].2.get(), "[1,2]");
    }

    #[test]
    fn a_reply_sent_alone_is_what_encode_writes_for_it() {
        let reply = Bytes::from_static(br#"{"delivered":["b"],"absent":[]}"#);
        alone(12345, &reply, |parts| {
            assert_eq!(parts.concat(), &encode(&[(12345, reply.clone())])[..]);
        });
    }

    #[test]
    fn pooled_replies_are_split_at_their_lengths() {
        let replies: Vec<(u64, Bytes)> = [
            r#"{"delivered":["a]\"}","b"],"absent":[]}"#,
            r#"[{"delivered":[],"absent":["{"]},{"error":{"code":"x","message":"]"}}]"#,
            r#""a \"string\" reply""#,
            "12",
            "[]",
        ]
        .into_iter()
        .enumerate()
        .map(|(i, r)| (i as u64 * 1000, Bytes::from(r)))
        .collect();
        for k in 0..=replies.len() {
            let encoded = encode(&replies[..k]);
            let fast = split_encoded(&encoded).expect("what encode writes");
            let got: Vec<(u64, &[u8])> = fast.into_iter().map(|(n, r)| (n, &encoded[r])).collect();
            let want: Vec<(u64, &[u8])> = replies[..k].iter().map(|(n, r)| (*n, &r[..])).collect();
            assert_eq!(got, want);
            let serde: Vec<(u64, usize, &RawValue)> = serde_json::from_slice(&encoded).unwrap();
            assert_eq!(serde.len(), k, "and it is JSON");
        }
        // Spaced JSON is not what encode writes: serde_json splits it.
        let spaced = br#" [ [7, 0, {"delivered": ["x"]} ] ]"#;
        assert!(split_encoded(spaced).is_none());
        let split = numbered(spaced).unwrap();
        assert_eq!(split.len(), 1);
        assert_eq!(&spaced[split[0].1.clone()], br#"{"delivered": ["x"]}"#);
        let lengths_that_lie = [
            &b"[[1,9,2]]"[..],
            b"[[1,0,2]]",
            b"[[1,99999999999999999999,2]]",
        ];
        for bad in [
            &b"[[1,1,]]"[..],
            b"[[1,1,2]",
            b"[[x,1,2]]",
            b"[[1,1,2]]x",
            b"",
        ]
        .into_iter()
        .chain(lengths_that_lie)
        {
            assert!(split_encoded(bad).is_none(), "{bad:?}");
        }
        assert!(numbered(b"[[1,1,]]").is_err() && numbered(b"").is_err());
    }
}
