//! The receiving side of the stepped load ([`super::load`]): the counters of each step,
//! which sender threads and connection readers update without locks, and the reader of
//! each connection, which classifies what arrives and, for durable sends, acknowledges
//! stored messages as a real client does.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{FutureExt as _, SinkExt as _, StreamExt as _};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::ack::Acks;
use super::conn::{self, Frame, Ws};
use super::stats::Sharded;
use mrc::protocol::code::Outcome;
use mrc::sync;

/// Marks a message number that was never sent (skipped when counting losses); far above
/// any count of deliveries (a group has at most 20,000 members).
pub(super) const NOT_SENT: u32 = 0xF000_0000;
/// Steps with more messages than this count losses from totals only (4 bytes each).
pub(super) const MAX_TRACKED: u64 = 20_000_000;

/// Counters of one step; readers and senders update them without locks.
#[derive(Default)]
pub(super) struct StepCounters {
    /// Receipts per message number (`n` in the body).
    pub(super) receipts: Box<[AtomicU32]>,
    pub(super) sent: AtomicU64,
    pub(super) unsent: AtomicU64,
    pub(super) send_failed: AtomicU64,
    pub(super) delivered: AtomicU64,
    /// Reports received, and the receivers they said were delivered (stored, for
    /// durable sends).
    pub(super) reports: AtomicU64,
    pub(super) reports_delivered: AtomicU64,
    pub(super) lag_max_us: AtomicU64,
    /// Acks the receivers sent, and the stored messages their results said they removed.
    pub(super) acks: AtomicU64,
    pub(super) removed: AtomicU64,
}

/// What senders and readers share.
pub(super) struct Shared {
    pub(super) epoch: Instant,
    pub(super) steps: Vec<StepCounters>,
    pub(super) current: AtomicUsize,
    /// From each message's intended send time (the bench's own lateness included).
    pub(super) latency: Sharded,
    /// From each message's actual send time: what the cluster and the sockets took.
    pub(super) transit: Sharded,
    /// From each message's actual send time to its report (`--chosen-ids`: the report's
    /// id says when its message left).
    pub(super) reported: Sharded,
    /// The outcome a report should give each receiver: `delivered`, or `stored` for
    /// durable sends.
    pub(super) success: Outcome,
    /// Rare events by name: non-delivered outcomes, error codes, bye reasons.
    pub(super) events: Mutex<BTreeMap<(usize, String), u64>>,
    pub(super) closed: AtomicU64,
    pub(super) foreign: AtomicU64,
}

impl Shared {
    fn event(&self, step: usize, name: String, n: u64) {
        let mut events = sync::lock(&self.events);
        *events.entry((step, name)).or_default() += n;
    }

    pub(super) fn events_of(&self, step: usize) -> BTreeMap<String, u64> {
        let events = sync::lock(&self.events);
        events
            .iter()
            .filter(|((s, _), _)| *s == step)
            .map(|((_, name), n)| (name.clone(), *n))
            .collect()
    }

    fn receipt(&self, shard: usize, text: &str) {
        let current = self.current.load(Relaxed);
        match conn::classify(text) {
            Frame::Msg {
                t_us,
                sent_us,
                step,
                seq,
            } => {
                let Some(counters) = self.steps.get(step) else {
                    self.foreign.fetch_add(1, Relaxed);
                    return;
                };
                if let Some(r) = counters.receipts.get(seq as usize) {
                    r.fetch_add(1, Relaxed);
                }
                let now_us = self.epoch.elapsed().as_micros() as u64;
                self.latency
                    .record(shard, step, now_us.saturating_sub(t_us));
                self.transit
                    .record(shard, step, now_us.saturating_sub(sent_us));
                counters.delivered.fetch_add(1, Relaxed);
            }
            Frame::Report(outcomes) => {
                let sent = conn::frame_id(text).and_then(conn::chosen_id_sent);
                if let Some((step, sent_us)) = sent.filter(|(step, _)| *step < self.steps.len()) {
                    let now_us = self.epoch.elapsed().as_micros() as u64;
                    self.reported
                        .record(shard, step, now_us.saturating_sub(sent_us));
                }
                let counters = &self.steps[current];
                counters.reports.fetch_add(1, Relaxed);
                for (outcome, n) in outcomes {
                    if outcome == self.success {
                        counters.reports_delivered.fetch_add(n, Relaxed);
                    } else {
                        self.event(current, format!("report:{}", outcome.as_str()), n);
                    }
                }
            }
            Frame::Acked { removed, .. } => {
                self.steps[current].removed.fetch_add(removed, Relaxed);
            }
            Frame::Error(code) => self.event(current, format!("error:{code}"), 1),
            Frame::Bye(reason) => self.event(current, format!("bye:{reason}"), 1),
            Frame::ForeignMsg | Frame::Welcome | Frame::Other => {
                self.foreign.fetch_add(1, Relaxed);
            }
        }
    }
}

/// One reader per connection, until the connection ends or `cancel` (then it closes the
/// connection). Senders write to the same socket directly ([`super::sender::Peer`]).
/// With `acks` it acknowledges stored messages, coalesced: when a burst ends (nothing
/// more to read at once) and every [`super::ack::ACK_EVERY`] messages.
pub(super) async fn read(
    mut ws: Ws,
    shared: Arc<Shared>,
    shard: usize,
    cancel: CancellationToken,
    mut acks: Option<Acks>,
) {
    loop {
        let ready = match acks {
            Some(_) => ws.next().now_or_never(),
            None => None,
        };
        let next = match ready {
            Some(next) => next,
            None => {
                if let Some(frame) = acks.as_mut().and_then(Acks::flush) {
                    if !send_ack(&mut ws, &shared, frame).await {
                        return;
                    }
                }
                tokio::select! {
                    () = cancel.cancelled() => {
                        let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
                        return;
                    }
                    next = ws.next() => next,
                }
            }
        };
        match next {
            Some(Ok(Message::Text(text))) => {
                shared.receipt(shard, text.as_str());
                let refused = text.as_str().starts_with(r#"{"op":"error""#);
                if let Some(acks) = acks.as_mut().filter(|_| refused) {
                    // A receiver sends nothing but acks: one was refused.
                    acks.refused();
                }
                let seq = conn::inbox_seq(text.as_str());
                let ack = acks.as_mut().zip(seq).and_then(|(a, seq)| a.pushed(seq));
                if let Some(frame) = ack {
                    if !send_ack(&mut ws, &shared, frame).await {
                        return;
                    }
                }
            }
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                shared.closed.fetch_add(1, Relaxed);
                return;
            }
            Some(Ok(_)) => {}
        }
    }
}

/// Sends an ack on a receiver's connection (only its reader writes to it); false when
/// the connection failed.
async fn send_ack(ws: &mut Ws, shared: &Shared, frame: String) -> bool {
    shared.steps[shared.current.load(Relaxed)]
        .acks
        .fetch_add(1, Relaxed);
    if ws.send(Message::text(frame)).await.is_err() {
        shared.closed.fetch_add(1, Relaxed);
        return false;
    }
    true
}
