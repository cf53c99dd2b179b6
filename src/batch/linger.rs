//! Lingering: a batcher whose first call waits a while for others to go with it, but
//! only while calls come closer together than that wait.

use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::oneshot;

use super::{send, Batcher, Call, RequestFailure};

/// Where a call goes in a batcher with a linger.
pub(super) enum Gathered {
    /// Calls are too far apart for others to join it: it goes at once.
    Now(Bytes),
    /// It is the first of a batch: it sleeps the linger, then sends the batch.
    Lead(oneshot::Receiver<Result<Bytes, RequestFailure>>),
    /// It joined the batch forming.
    Follow(oneshot::Receiver<Result<Bytes, RequestFailure>>),
}

impl Batcher {
    /// Adds a call to the batch forming, or starts one when lingering pays ([`Pace`]) and
    /// the batcher is not saturated (then calls gather in its queue while every slot is
    /// busy anyway). A call never passes a forming batch, so calls leave in order.
    pub(super) fn gather(&self, payload: Bytes, linger: Duration) -> Gathered {
        let mut forming = crate::sync::lock(&self.target.forming);
        let pays = forming.pace.lingering_pays(Instant::now(), linger);
        if forming.calls.is_empty() && (!pays || self.saturated()) {
            return Gathered::Now(payload);
        }
        let (answer, reply) = oneshot::channel();
        forming.calls.push(Call { payload, answer });
        if forming.calls.len() == 1 {
            Gathered::Lead(reply)
        } else {
            Gathered::Follow(reply)
        }
    }

    /// Every slot is busy or calls wait in the queue.
    fn saturated(&self) -> bool {
        self.target.slots.available_permits() == 0
            || self.calls.capacity() < self.calls.max_capacity()
    }

    /// The first call of a batch sleeps the linger, then sends what gathered meanwhile.
    pub(super) async fn lead(&self, linger: Duration) {
        let mut leader = Leader {
            batcher: self,
            armed: true,
        };
        self.target.timer.sleep(linger).await;
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

/// The mean gap between calls, weighted towards the latest. A call lingers only when
/// calls come closer together than the linger, but not [`FULL`] times closer: a quiet
/// destination gets each message at once, and near saturation batches fill while the
/// requests in flight are out, as they do without a linger; lingering there only cost
/// throughput (docs/PERFORMANCE.md).
#[derive(Debug, Default)]
struct Pace {
    last: Option<Instant>,
    mean_gap: Duration,
}

/// Calls per linger from which lingering no longer pays.
const FULL: u32 = 16;

impl Pace {
    /// Counts a call at `now`; whether between one and [`FULL`] calls now come within a
    /// linger. Weighted 1/16 per call, so that bursts (a runtime tick's worth of calls,
    /// then a pause) do not flip it, and a gap counts as at most eight lingers, so that
    /// it follows a rise in traffic within about a hundred calls.
    fn lingering_pays(&mut self, now: Instant, linger: Duration) -> bool {
        let longest = linger * 8;
        let gap = match self.last {
            Some(last) => now.saturating_duration_since(last).min(longest),
            None => {
                self.mean_gap = longest;
                longest
            }
        };
        self.last = Some(now);
        self.mean_gap = (self.mean_gap * 15 + gap) / 16;
        self.mean_gap < linger && self.mean_gap * FULL >= linger
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_linger_only_while_they_come_closer_together_than_the_linger() {
        let linger = Duration::from_micros(1500);
        let mut pace = Pace::default();
        let mut now = Instant::now();
        let mut step = |pace: &mut Pace, gap_us: u64| {
            now += Duration::from_micros(gap_us);
            pace.lingering_pays(now, linger)
        };
        assert!(!step(&mut pace, 0), "the first call goes at once");
        let busy: Vec<bool> = (0..100).map(|_| step(&mut pace, 1000)).collect();
        assert!(!busy[0], "one close call is not yet traffic");
        assert!(busy[99], "a steady 1k/s is");
        assert!(
            !step(&mut pace, 2_000_000),
            "the first call after a silence goes at once"
        );
        let mut slow = Pace::default();
        assert!(
            (0..100).all(|_| !step(&mut slow, 2000)),
            "500/s never lingers"
        );
    }
}
