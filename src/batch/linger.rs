//! Lingering: a batcher whose first call waits a while for others to go with it, at the
//! pace of the calls ([`Pace`]).

use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::oneshot;

use super::{send, Batcher, Call, RequestFailure};
use crate::pace::Pace;

/// Where a call goes in a batcher with a linger.
pub(super) enum Gathered {
    /// Calls are too far apart for others to join it: it goes at once.
    Now(Bytes),
    /// It is the first of a batch: it sleeps this long, then sends the batch.
    Lead(Duration, oneshot::Receiver<Result<Bytes, RequestFailure>>),
    /// It joined the batch forming.
    Follow(oneshot::Receiver<Result<Bytes, RequestFailure>>),
}

impl Batcher {
    /// Adds a call to the batch forming, or starts one when lingering pays ([`Pace`]) and
    /// the batcher is not saturated (then calls gather in its queue while every slot is
    /// busy anyway). A call never passes a forming batch, so calls leave in order.
    /// A call that would start a batch while the batcher is saturated goes at once.
    pub(super) fn gather(&self, payload: Bytes, linger: Duration) -> Gathered {
        let mut forming = crate::sync::lock(&self.target.forming);
        let wait = forming.pace.wait(Instant::now(), linger);
        let wait = match wait {
            Some(wait) if !self.saturated() => wait,
            _ if forming.calls.is_empty() => return Gathered::Now(payload),
            _ => Duration::ZERO,
        };
        let (answer, reply) = oneshot::channel();
        forming.calls.push(Call { payload, answer });
        if forming.calls.len() == 1 {
            Gathered::Lead(wait, reply)
        } else {
            Gathered::Follow(reply)
        }
    }

    /// Every slot is busy or calls wait in the queue.
    fn saturated(&self) -> bool {
        self.target.slots.available_permits() == 0
            || self.calls.capacity() < self.calls.max_capacity()
    }

    /// The first call of a batch sleeps its pause, then sends what gathered meanwhile.
    pub(super) async fn lead(&self, pause: Duration) {
        let mut leader = Leader {
            batcher: self,
            armed: true,
        };
        self.target.timer.sleep(pause).await;
        leader.armed = false;
        self.send_forming().await;
    }

    /// Sends the gathered calls: from this task when nothing is queued and a slot is
    /// free, else through the batcher's queue.
    async fn send_forming(&self) {
        let calls = std::mem::take(&mut crate::sync::lock(&self.target.forming).calls);
        let limits = &self.target.limits;
        let bytes: usize = calls.iter().map(|c| c.payload.len() + 1).sum();
        let fits = calls.len() <= limits.max_calls && bytes <= limits.max_bytes;
        if fits && self.calls.capacity() == self.calls.max_capacity() {
            if let Ok(slot) = self.target.slots.clone().try_acquire_owned() {
                send(&self.target, calls).await;
                drop(slot);
                return;
            }
        }
        for call in calls {
            if let Err(refused) = self.calls.send(call).await {
                let stopped = RequestFailure::Other("batcher stopped".into());
                let _ = refused.0.answer.send(Err(stopped));
            }
        }
    }
}

/// The batch a lingering batcher is gathering, and the pace of its calls.
#[derive(Default)]
pub(super) struct Forming {
    pub(super) calls: Vec<Call>,
    pace: Pace,
}

/// A leader dropped during its linger (its caller gave up) leaves the gathered calls to
/// a task of their own.
struct Leader<'a> {
    batcher: &'a Batcher,
    armed: bool,
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        if self.armed {
            let batcher = self.batcher.clone();
            tokio::spawn(async move { batcher.send_forming().await });
        }
    }
}
