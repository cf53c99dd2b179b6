//! A second, minimal NATS connection for the gateway-to-gateway hot path: deliver
//! requests, and the pooled replies to them. async-nats costs ~3.9k instructions per
//! message in or out (a task hand-over each way, a `write!` per `PUB` line, a channel per
//! subscription); here a publish appends to one buffer under a lock, and a message is
//! parsed in place and handed to its subscription's handler on the connection's own task,
//! with no channel in between (docs/PERFORMANCE.md). Everything else stays on async-nats.
//!
//! What it keeps from a full client: the same URLs, credentials and TLS as
//! [`crate::connection`], endless reconnects with subscriptions renewed, a ping every few
//! seconds (a dead connection is noticed like async-nats's), `max_payload` checked before
//! a publish, publishes buffered (bounded) across a reconnect.

mod conn;
mod handshake;
mod proto;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::task::AtomicWaker;
use tokio::sync::oneshot;

use crate::config;
use crate::sync::lock;

/// Bytes a publish may leave waiting to be written (a reconnect, a slow server) before
/// publishes fail: far above what a second of traffic writes. (The connection's own
/// buffer, being written, comes on top.)
const MAX_PENDING: usize = 32 * 1024 * 1024;

/// A message handed to a subscription's handler, on the connection's task: what the
/// handler does must not wait. Its subjects are read (and checked to be UTF-8) only if
/// asked for.
pub struct Delivery<'a> {
    msg: &'a proto::Msg,
}

impl Delivery<'_> {
    pub fn subject(&self) -> &str {
        self.msg.subject()
    }

    pub fn reply(&self) -> Option<&str> {
        self.msg.reply()
    }

    /// nats-server's answer to a request nobody serves (status 503).
    pub fn no_responders(&self) -> bool {
        self.msg.status == Some(503)
    }

    pub fn payload(&self) -> Bytes {
        self.msg.payload()
    }
}

/// What a subscription runs for each of its messages.
pub type Handler = Arc<dyn Fn(Delivery<'_>) + Send + Sync>;

/// Runs one poll of the connection's task (its handlers, then its writes), around which
/// the user may do more: the gateway writes the frames its handlers queued for idle
/// sessions after the poll's NATS writes (`gateway::session::write_through`).
pub type AroundPoll = fn(&mut dyn FnMut());

/// Why a publish was refused.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("payload of {size} bytes exceeds NATS max_payload {max}")]
    TooLarge { size: usize, max: usize },
    #[error("invalid subject {0:?}")]
    Subject(String),
    #[error("{MAX_PENDING} bytes wait to be written to NATS already")]
    Backlog,
    #[error("the connection is closed")]
    Closed,
}

/// The connection: cheap to clone, used from any task.
#[derive(Clone)]
pub struct Wire {
    shared: Arc<Shared>,
}

/// What publishers and the connection's task share.
struct Shared {
    out: Mutex<Out>,
    /// The connection's task, woken when `out` gets its first bytes.
    waker: AtomicWaker,
    subscriptions: Mutex<Vec<Option<Subscription>>>,
    max_payload: AtomicUsize,
    /// Between a handshake and the loss of its connection.
    connected: AtomicBool,
    closed: AtomicBool,
    /// Set by the connection's pinger when a keep-alive PING is due: the connection's
    /// task reads a flag instead of polling a timer on every wake-up.
    ping_due: AtomicBool,
    around_poll: AroundPoll,
}

/// Bytes to write, and who waits for the PONGs of the PINGs among them.
#[derive(Default)]
struct Out {
    buf: Vec<u8>,
    /// In the order of the PINGs written: `None` for a keep-alive ping.
    pongs: VecDeque<Option<oneshot::Sender<()>>>,
    /// PINGs in `buf` (not yet taken by the connection).
    pings_in_buf: usize,
}

impl Out {
    /// A PING, and who waits for its PONG.
    fn ping(&mut self, waiter: Option<oneshot::Sender<()>>) {
        self.buf.extend_from_slice(proto::PING);
        self.pongs.push_back(waiter);
        self.pings_in_buf += 1;
    }

    /// What the connection writes next, swapped into its own (empty) buffer: the two
    /// buffers take turns, and neither is allocated again once grown.
    fn take(&mut self, into: &mut Vec<u8>) {
        debug_assert!(into.is_empty());
        self.pings_in_buf = 0;
        std::mem::swap(&mut self.buf, into);
    }

    /// After a disconnect: the PINGs written are lost with their PONGs; those still in
    /// `buf` go out on the next connection.
    fn lost_connection(&mut self) {
        let lost = self.pongs.len().saturating_sub(self.pings_in_buf);
        self.pongs.drain(..lost);
    }
}

struct Subscription {
    subject: String,
    handler: Handler,
}

impl Wire {
    /// Connects to the first server of `cfg` that answers, retrying until the configured
    /// connect timeout, and keeps the connection up from then on.
    pub async fn connect(cfg: &config::Nats, name: &str) -> anyhow::Result<Wire> {
        Wire::connect_around(cfg, name, |poll| poll()).await
    }

    /// [`Wire::connect`], each poll of the connection's task run inside `around_poll`.
    pub async fn connect_around(
        cfg: &config::Nats,
        name: &str,
        around_poll: AroundPoll,
    ) -> anyhow::Result<Wire> {
        let settings = Arc::new(handshake::Settings::new(cfg, name).await?);
        let shared = Arc::new(Shared {
            out: Mutex::default(),
            waker: AtomicWaker::new(),
            subscriptions: Mutex::default(),
            max_payload: AtomicUsize::new(0),
            connected: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            ping_due: AtomicBool::new(false),
            around_poll,
        });
        let deadline = std::time::Instant::now() + Duration::from_millis(cfg.connect_timeout_ms);
        let first = handshake::first(&settings, &shared, deadline).await?;
        tokio::spawn(conn::run(shared.clone(), settings, first));
        tokio::spawn(conn::pinger(Arc::downgrade(&shared)));
        Ok(Wire { shared })
    }

    /// Whether a connection is open now (publishes wait in the buffer while none is).
    pub fn connected(&self) -> bool {
        self.shared.connected.load(Relaxed)
    }

    /// Queues `payload` for `subject`, with a reply subject if given. It is written by the
    /// connection's task with whatever else is queued by then.
    pub fn publish(
        &self,
        subject: &str,
        reply: Option<&str>,
        payload: &[u8],
    ) -> Result<(), PublishError> {
        self.publish_parts(subject, reply, &[payload])
    }

    /// [`Wire::publish`] of the concatenation of `parts`, copied once, into the buffer.
    pub fn publish_parts(
        &self,
        subject: &str,
        reply: Option<&str>,
        parts: &[&[u8]],
    ) -> Result<(), PublishError> {
        let size = parts.iter().map(|p| p.len()).sum();
        let max = self.shared.max_payload.load(Relaxed);
        if size > max {
            return Err(PublishError::TooLarge { size, max });
        }
        for s in std::iter::once(subject).chain(reply) {
            if !proto::valid_subject(s) {
                return Err(PublishError::Subject(s.to_owned()));
            }
        }
        self.write(|out| proto::write_pub(&mut out.buf, subject, reply, size, parts))
    }

    /// Runs `handler` for every message on `subject` from now on, until
    /// [`Wire::unsubscribe`]: renewed on every reconnect.
    pub fn subscribe(&self, subject: &str, handler: Handler) -> anyhow::Result<u64> {
        anyhow::ensure!(proto::valid_subject(subject), "invalid subject {subject:?}");
        let sid = {
            let mut subscriptions = lock(&self.shared.subscriptions);
            subscriptions.push(Some(Subscription {
                subject: subject.to_owned(),
                handler,
            }));
            subscriptions.len() as u64
        };
        if let Err(e) = self.write(|out| proto::write_sub(&mut out.buf, subject, sid)) {
            self.forget(sid);
            return Err(e.into());
        }
        Ok(sid)
    }

    /// Ends a subscription: its handler runs no more, whatever is still on its way.
    pub fn unsubscribe(&self, sid: u64) {
        self.forget(sid);
        let _ = self.write(|out| proto::write_unsub(&mut out.buf, sid));
    }

    fn forget(&self, sid: u64) {
        let index = usize::try_from(sid).ok().and_then(|sid| sid.checked_sub(1));
        let mut subscriptions = lock(&self.shared.subscriptions);
        if let Some(slot) = index.and_then(|i| subscriptions.get_mut(i)) {
            *slot = None;
        }
    }

    /// Returns once nats-server has processed everything written before (it handles one
    /// connection's operations in order): a PING's PONG came back within `timeout`.
    pub async fn round_trip(&self, timeout: Duration) -> anyhow::Result<()> {
        let (tx, rx) = oneshot::channel();
        self.write(|out| out.ping(Some(tx)))?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => anyhow::bail!("the connection to NATS was lost before its PONG"),
            Err(_) => anyhow::bail!("no PONG from NATS within {timeout:?}"),
        }
    }

    /// Stops serving: every subscription ends, what is queued is written, one round trip
    /// confirms it (bounded by `timeout`); then the connection's task closes the socket
    /// and ends, and publishes fail.
    pub async fn close(&self, timeout: Duration) {
        let sids: Vec<u64> = {
            let subscriptions = lock(&self.shared.subscriptions);
            (1..=subscriptions.len() as u64)
                .filter(|sid| subscriptions[*sid as usize - 1].is_some())
                .collect()
        };
        for sid in sids {
            self.unsubscribe(sid);
        }
        if let Err(e) = self.round_trip(timeout).await {
            tracing::warn!(error = %e, "closing the deliver connection without a last round trip");
        }
        self.shared.closed.store(true, Relaxed);
        self.shared.waker.wake();
    }

    /// Appends to the outgoing buffer and wakes the connection's task if it was empty.
    fn write(&self, op: impl FnOnce(&mut Out)) -> Result<(), PublishError> {
        if self.shared.closed.load(Relaxed) {
            return Err(PublishError::Closed);
        }
        let was_empty = {
            let mut out = lock(&self.shared.out);
            if out.buf.len() > MAX_PENDING {
                return Err(PublishError::Backlog);
            }
            let was_empty = out.buf.is_empty();
            op(&mut out);
            was_empty
        };
        if was_empty {
            self.shared.waker.wake();
        }
        Ok(())
    }
}

impl Shared {
    /// The handler of subscription `sid`, if it is still subscribed.
    fn handler(&self, sid: u64) -> Option<Handler> {
        let subscriptions = lock(&self.subscriptions);
        let slot = subscriptions.get(usize::try_from(sid).ok()?.checked_sub(1)?)?;
        slot.as_ref().map(|s| s.handler.clone())
    }
}
