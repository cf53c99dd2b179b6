//! A logged-in session on its connection ([`Live`]): the loop that writes its queued frames,
//! reads the client's and keeps the idle timer, until the client leaves or must be closed;
//! then its end (out of presence and the directory, a goodbye to the client).

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use governor::{DefaultDirectRateLimiter, RateLimiter};
use tokio::sync::Semaphore;

use super::Context;
use super::{finish, say_bye, too_large, Close, Conn, Door, Inbound, Reader, Writer};
use crate::gateway::session::{self, End};
use crate::ident::UserId;
use crate::protocol::client::{Frame, FrameError};
use crate::telemetry;

/// A logged-in session: what its connection keeps while it is served. (The gateway's
/// registry of sessions is `gateway::session::Sessions`; this is one connection's side.)
pub(super) struct Live {
    pub(super) cx: Arc<Context>,
    pub(super) user: UserId,
    pub(super) door: Door,
    /// This session's own queue, for reports, pongs and errors of routed sends.
    pub(super) reports: session::Handle,
    pub(super) outbox: session::Outbox,
    /// Bounds this connection's sends being routed; made at its first send.
    pub(super) sends: Option<Arc<Semaphore>>,
    pub(super) rate: DefaultDirectRateLimiter,
    pub(super) limited_in_a_row: u32,
    /// Users whose presence events this session receives.
    pub(super) watching: HashSet<UserId>,
}

impl Live {
    /// The session of `user` that [`login::start`](super::login::start) registered, with
    /// its queue (`reports`, `outbox`) and a full rate bucket.
    pub(super) fn new(
        cx: Arc<Context>,
        user: UserId,
        door: Door,
        reports: session::Handle,
        outbox: session::Outbox,
    ) -> Self {
        let rate = RateLimiter::direct_with_clock(cx.ops.limits.rate, shared_clock());
        Live {
            cx,
            user,
            door,
            reports,
            outbox,
            sends: None,
            rate,
            limited_in_a_row: 0,
            watching: HashSet::new(),
        }
    }

    /// The `welcome` frame that opens the session.
    pub(super) fn welcome(&self) -> Bytes {
        Frame::Welcome {
            user: self.user.as_str(),
            session: self.reports.id.as_str(),
            gateway: self.cx.id.as_str(),
        }
        .encode()
    }

    /// Ends the session: out of presence and the directory, then a goodbye to the client
    /// (the reason, or the end of the close the client started when `ended` is `None`).
    pub(super) async fn end<T: Reader + Writer>(
        mut self,
        ended: Option<Close>,
        conn: &mut Conn<T>,
    ) {
        // From here on only this task writes into the socket.
        self.outbox.take_writes();
        let cx = &self.cx;
        let id = &self.reports.id;
        for target in std::mem::take(&mut self.watching) {
            cx.presence.unwatch(&target, id);
        }
        cx.sessions.remove(&self.user, id);
        // The directory first: saying goodbye to a slow client can take a while. On
        // shutdown the gateway purges all its sessions in one request instead.
        if !cx.shutdown.is_cancelled() {
            cx.registrar.forget(&self.user, id);
        }
        if let Some(reason) = ended {
            if reason == Close::SlowConsumer {
                metrics::counter!(telemetry::GATEWAY_SLOW_CONSUMERS).increment(1);
            }
            // A stop closes every session: the gateway logs that once, not per session.
            if reason == Close::Shutdown {
                tracing::debug!(user = %self.user, session = %id, "closing session: shutdown");
            } else {
                tracing::info!(user = %self.user, session = %id, peer = %conn.peer,
                    door = self.door.label(), reason = reason.reason(), "closing session");
            }
            say_bye(&mut conn.io, reason).await;
        } else {
            finish(&mut conn.io).await;
        }
        tracing::debug!(user = %self.user, session = %id, "session ended");
    }

    /// Runs the session until the client leaves (`None`) or must be closed (`Some`). Idle
    /// clients and a stop's turns are found by the gateway's sweeps
    /// ([`crate::gateway::sweep`]), which tell the session through its outbox: no timer
    /// per session.
    pub(super) async fn serve<T: Reader + Writer>(&mut self, conn: &mut Conn<T>) -> Option<Close> {
        let io = &mut conn.io;
        // Started after the stop's sweep looked at the sessions.
        if self.cx.shutdown.is_cancelled() {
            return Some(Close::Shutdown);
        }
        loop {
            tokio::select! {
                biased;
                ready = self.outbox.ready() => {
                    if let Err(end) = ready {
                        return Some(closed(end));
                    }
                    if self.outbox.take_ping() {
                        io.ping().await.ok()?;
                    }
                    // A client that stops reading blocks this write; its queue then fills
                    // and the session must still end.
                    tokio::select! {
                        biased;
                        written = write_queued(io, &self.outbox) => written.ok()?,
                        end = self.outbox.slow() => return Some(closed(end)),
                    }
                }
                inbound = io.next() => {
                    self.outbox.heard();
                    match inbound {
                        // Boxed: handling a frame needs far more room than waiting.
                        Inbound::Text(text) => match Box::pin(self.on_frame(&text)).await {
                            Ok(()) => {}
                            Err(Some(reason)) => return Some(reason),
                            Err(None) => {}
                        },
                        Inbound::TooLarge(n) => self.error(too_large(n, self.cx.ops.limits.max_frame_bytes)),
                        Inbound::Other => {}
                        Inbound::Ping => self.outbox.flush_writer(),
                        Inbound::Closed => return None,
                    }
                }
            }
        }
    }

    /// Queues an error frame on this session.
    pub(super) fn error(&self, error: FrameError) {
        telemetry::error(error.code);
        self.reports.push(Frame::from(&error).encode());
    }
}

/// Frames written before one flush: what queued while earlier frames were being written
/// leaves together (one write for a burst), bounded so the client is read meanwhile.
const WRITE_BATCH: usize = 64;

/// Writes the frames queued (at most [`WRITE_BATCH`]), then flushes once: a burst of
/// frames to one client is one write, not one per frame.
async fn write_queued<W: Writer>(writer: &mut W, outbox: &session::Outbox) -> anyhow::Result<()> {
    if let Some(framed) = outbox.take_framed() {
        writer.feed_framed(&framed);
    }
    for _ in 0..WRITE_BATCH {
        let Some(frame) = outbox.try_next() else {
            break;
        };
        writer.feed(frame).await?;
    }
    writer.flush().await
}

/// One clock for every session's rate limiter: `RateLimiter::direct` creates a quanta
/// clock per session, which probes the CPU (CPUID) each time: ~10% of a gateway's CPU in a
/// login storm.
fn shared_clock() -> governor::clock::QuantaClock {
    static CLOCK: std::sync::OnceLock<governor::clock::QuantaClock> = std::sync::OnceLock::new();
    CLOCK.get_or_init(Default::default).clone()
}

/// Why the connection closes, for why its session ended.
fn closed(end: End) -> Close {
    match end {
        End::SlowConsumer => Close::SlowConsumer,
        End::Kicked => Close::Kicked,
        End::Idle => Close::Idle,
        End::Shutdown => Close::Shutdown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ident::SessionId;

    /// Records what the session loop asks of a transport.
    #[derive(Default)]
    struct Recorder {
        fed: Vec<Bytes>,
        flushes: usize,
    }

    impl Writer for Recorder {
        async fn feed(&mut self, frame: Bytes) -> anyhow::Result<()> {
            self.fed.push(frame);
            Ok(())
        }
        fn feed_framed(&mut self, framed: &[u8]) {
            self.fed.push(Bytes::copy_from_slice(framed));
        }
        async fn flush(&mut self) -> anyhow::Result<()> {
            self.flushes += 1;
            Ok(())
        }
        async fn ping(&mut self) -> anyhow::Result<()> {
            Ok(())
        }
        async fn close(&mut self, _reason: Close) {}
        async fn finish(&mut self) {}
    }

    #[tokio::test]
    async fn queued_frames_leave_together_with_one_flush_per_batch() {
        let (handle, outbox) = session::channel(SessionId::generate(), None, 1024);
        for i in 0..3 {
            assert!(handle.push(Bytes::from(format!("f{i}"))));
        }
        let mut writer = Recorder::default();
        write_queued(&mut writer, &outbox).await.unwrap();
        assert_eq!(writer.fed, ["f0", "f1", "f2"]);
        assert_eq!(writer.flushes, 1);

        // A long burst is cut into batches, so reading the client goes on meanwhile.
        for i in 0..WRITE_BATCH + 1 {
            assert!(handle.push(Bytes::from(format!("g{i}"))));
        }
        let mut writer = Recorder::default();
        write_queued(&mut writer, &outbox).await.unwrap();
        assert_eq!((writer.fed.len(), writer.flushes), (WRITE_BATCH, 1));
        write_queued(&mut writer, &outbox).await.unwrap();
        assert_eq!((writer.fed.len(), writer.flushes), (WRITE_BATCH + 1, 2));
        assert_eq!(writer.fed.last().unwrap(), &format!("g{WRITE_BATCH}"));
    }
}
