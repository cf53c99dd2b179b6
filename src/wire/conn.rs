//! The connection's task: one future reads, hands messages over and writes, polled by
//! the runtime when the socket is ready or a publisher queued the first bytes; when the
//! connection is lost it opens another, for as long as the [`super::Wire`] is open.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::{Arc, Weak};
use std::task::{ready, Context, Poll, Wake, Waker};
use std::time::Duration;

use bytes::BytesMut;
use futures::task::AtomicWaker;
use tokio::io::AsyncWrite;
use tokio::time::MissedTickBehavior;

use super::handshake::{self, Connected, Io, Settings};
use super::proto::{self, Msg, ServerOp};
use super::{Delivery, Shared};
use crate::sync::lock;

/// A PING this often; a connection with two of them unanswered is dead (async-nats's
/// settings in `crate::connection`).
const PING_INTERVAL: Duration = Duration::from_secs(5);
const MAX_UNANSWERED_PINGS: u32 = 2;
/// Reads in one poll before the task lets others run (and writes what they queued).
const READS_PER_POLL: usize = 16;
const READ_CHUNK: usize = 16 * 1024;

/// Serves `connected`, and each connection after it, until the wire is closed.
pub(super) async fn run(shared: Arc<Shared>, settings: Arc<Settings>, mut connected: Connected) {
    tracing::info!(server = %connected.server, "deliver connection to NATS open");
    let mut next = connected.index;
    loop {
        let error = Serve::new(&shared, &settings, connected).await;
        shared.connected.store(false, Relaxed);
        lock(&shared.out).lost_connection();
        if shared.closed.load(Relaxed) {
            return;
        }
        tracing::warn!(error = %error, "deliver connection to NATS lost; reconnecting");
        let mut attempt = 0u32;
        connected = loop {
            if shared.closed.load(Relaxed) {
                return;
            }
            next = (next + 1) % settings.servers();
            match handshake::open(&settings, next, &shared).await {
                Ok(connected) => break connected,
                Err(e) => {
                    if attempt % 10 == 0 {
                        tracing::warn!(error = %format!("{e:#}"), "deliver connection: reconnect failed");
                    }
                    attempt += 1;
                    tokio::time::sleep(backoff(attempt)).await;
                }
            }
        };
        tracing::info!(server = %connected.server, "deliver connection to NATS open again");
    }
}

/// The pause before reconnect attempt `attempt` (from 1): growing by 100 ms up to 2 s, plus
/// up to 100 ms at random, so that the gateways of a cluster do not all come back at once.
fn backoff(attempt: u32) -> Duration {
    use std::hash::BuildHasher;
    let jitter = std::collections::hash_map::RandomState::new().hash_one(attempt) % 100;
    Duration::from_millis(100 * u64::from(attempt.min(20)) + jitter)
}

/// Tells the connection's task every [`PING_INTERVAL`] that a keep-alive PING is due,
/// until the wire is closed or dropped.
pub(super) async fn pinger(shared: Weak<Shared>) {
    let start = tokio::time::Instant::now() + PING_INTERVAL;
    let mut every = tokio::time::interval_at(start, PING_INTERVAL);
    every.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if shared.closed.load(Relaxed) {
            return;
        }
        shared.ping_due.store(true, Relaxed);
        shared.waker.wake();
    }
}

/// Runs the handler of `msg`'s subscription, if it still has one. A handler that panics
/// loses its one message, not the connection every other message needs.
pub(super) fn hand_over(shared: &Shared, msg: &Msg) {
    if let Some(handler) = shared.handler(msg.sid) {
        let handled = std::panic::catch_unwind(AssertUnwindSafe(|| handler(Delivery { msg })));
        if handled.is_err() {
            tracing::error!(
                subject = msg.subject(),
                "a deliver connection handler panicked"
            );
        }
    }
}

/// The waker the socket's reads register: it notes that the socket (or the runtime, for
/// it) asked for another read, then wakes the connection's task. A wake-up that only
/// publishers caused then skips the read, which found nothing (~0.24k instructions).
struct ReadWake {
    readable: AtomicBool,
    task: AtomicWaker,
}

impl Wake for ReadWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.readable.store(true, Release);
        self.task.wake();
    }
}

/// One open connection, served until it fails (its output: why) or the wire is closed.
struct Serve<'a> {
    shared: &'a Shared,
    settings: &'a Settings,
    io: Box<dyn Io>,
    read: BytesMut,
    /// Taken from the shared buffer; `written` of it are on the socket.
    writing: Vec<u8>,
    written: usize,
    /// Written since the last flush (TLS buffers inside the stream).
    unflushed: bool,
    /// Keep-alive PINGs sent on this connection since its last PONG.
    unanswered: u32,
    read_wake: Arc<ReadWake>,
    /// `read_wake` as a waker, made once.
    read_waker: Waker,
}

impl<'a> Serve<'a> {
    fn new(shared: &'a Shared, settings: &'a Settings, connected: Connected) -> Self {
        // Readable at first: nothing is registered for the socket yet.
        let read_wake = Arc::new(ReadWake {
            readable: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        Serve {
            shared,
            settings,
            io: connected.io,
            read: connected.read,
            writing: Vec::new(),
            written: 0,
            unflushed: false,
            unanswered: 0,
            read_wake: read_wake.clone(),
            read_waker: Waker::from(read_wake),
        }
    }

    /// Every whole operation read so far.
    fn handle_ops(&mut self) -> Result<(), proto::ProtoError> {
        while let Some(op) = proto::next(&mut self.read)? {
            match op {
                ServerOp::Msg(msg) => hand_over(self.shared, &msg),
                ServerOp::Ping => lock(&self.shared.out).buf.extend_from_slice(proto::PONG),
                ServerOp::Pong => {
                    self.unanswered = 0;
                    if let Some(Some(waiter)) = lock(&self.shared.out).pongs.pop_front() {
                        let _ = waiter.send(());
                    }
                }
                ServerOp::Err(e) => {
                    tracing::error!(error = %e, "NATS error on the deliver connection")
                }
                ServerOp::Info(info) => self.settings.learn(&info, self.shared),
                ServerOp::Ok => {}
            }
        }
        Ok(())
    }

    /// Queues a keep-alive PING if the pinger says one is due; a connection whose last
    /// ones went unanswered is stale. Checked after the task's waker is registered, so a
    /// flag set later also wakes it.
    fn ping_if_due(&mut self) -> Result<(), std::io::Error> {
        let due = &self.shared.ping_due;
        if !(due.load(Relaxed) && due.swap(false, Relaxed)) {
            return Ok(());
        }
        if self.unanswered >= MAX_UNANSWERED_PINGS {
            return Err(std::io::Error::other("no PONG to the last pings: stale"));
        }
        self.unanswered += 1;
        lock(&self.shared.out).ping(None);
        Ok(())
    }

    /// Reads and hands over until the socket has nothing more (or others should run).
    /// Reads only when the socket's waker was woken since the last read that waited.
    fn poll_reads(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        // What is already read first: what came with the handshake's PONG, or was left
        // by the last poll's fairness cap.
        self.handle_ops().map_err(std::io::Error::other)?;
        self.read_wake.task.register(cx.waker());
        if !self.read_wake.readable.swap(false, Acquire) {
            return Poll::Pending;
        }
        for _ in 0..READS_PER_POLL {
            if self.read.capacity() - self.read.len() < READ_CHUNK / 4 {
                self.read.reserve(READ_CHUNK);
            }
            let n = ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut self.io),
                &mut Context::from_waker(&self.read_waker),
                &mut self.read
            ))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::Error::other("the server closed it")));
            }
            self.handle_ops().map_err(std::io::Error::other)?;
        }
        // Others should run too: read on in the next poll.
        self.read_wake.readable.store(true, Release);
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Writes what is queued until it is all on the socket or the socket is full.
    fn poll_writes(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        loop {
            if self.written == self.writing.len() {
                self.writing.clear();
                self.written = 0;
                lock(&self.shared.out).take(&mut self.writing);
                if self.writing.is_empty() {
                    break;
                }
            }
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.writing[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
            self.unflushed = true;
        }
        if self.unflushed {
            ready!(Pin::new(&mut self.io).poll_flush(cx))?;
            self.unflushed = false;
        }
        Poll::Ready(Ok(()))
    }
}

impl Future for Serve<'_> {
    type Output = std::io::Error;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Error> {
        let this = self.get_mut();
        let mut polled = Poll::Pending;
        (this.shared.around_poll)(&mut || polled = this.poll_once(cx));
        polled
    }
}

impl Serve<'_> {
    /// Reads and hands over, then writes.
    fn poll_once(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Error> {
        // Publishes made by the handlers below are written further down in this same poll:
        // they need not wake the task again.
        drop(self.shared.waker.take());
        if let Poll::Ready(Err(e)) = self.poll_reads(cx) {
            return Poll::Ready(e);
        }
        self.shared.waker.register(cx.waker());
        // After the reads: a PONG among them counts.
        if let Err(e) = self.ping_if_due() {
            return Poll::Ready(e);
        }
        match self.poll_writes(cx) {
            Poll::Ready(Err(e)) => Poll::Ready(e),
            Poll::Ready(Ok(())) if self.shared.closed.load(Relaxed) => {
                Poll::Ready(std::io::Error::other("closed"))
            }
            _ => Poll::Pending,
        }
    }
}
