//! How long to wait for company: something that leaves (a deliver request, a pooled
//! reply) waits for others to go with it only while they come closer together than the
//! longest wait allowed, and only about as long as [`FULL`] of them take to come. A quiet
//! destination gets each at once, and near saturation the wait shrinks to a few hundred
//! microseconds (batches fill while the requests in flight are out anyway), so that
//! waiting costs no throughput there (docs/PERFORMANCE.md).

use std::time::{Duration, Instant};

/// The company a wait is for: about this many others, at the current pace.
const FULL: u32 = 16;

/// The mean gap between events, weighted towards the latest.
#[derive(Debug, Default)]
pub(crate) struct Pace {
    last: Option<Instant>,
    mean_gap: Duration,
}

impl Pace {
    /// Counts an event at `now`; how long something starting a gathering now should wait
    /// (at most `longest`), or `None` when events come further apart than that. Weighted
    /// 1/16 per event, so that bursts (a runtime tick's worth of calls, then a pause) do
    /// not flip it, and a gap counts as at most eight `longest`, so that it follows a
    /// rise in traffic within about a hundred events.
    pub(crate) fn wait(&mut self, now: Instant, longest: Duration) -> Option<Duration> {
        let cap = longest * 8;
        let gap = match self.last {
            Some(last) => now.saturating_duration_since(last).min(cap),
            None => {
                self.mean_gap = cap;
                cap
            }
        };
        self.last = Some(now);
        self.mean_gap = (self.mean_gap * 15 + gap) / 16;
        (self.mean_gap < longest).then(|| longest.min(self.mean_gap * FULL))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINGER: Duration = Duration::from_micros(1500);

    /// The waits a fresh pace gives to `gaps_us` in turn.
    fn waits(gaps_us: impl IntoIterator<Item = u64>) -> Vec<Option<Duration>> {
        let mut pace = Pace::default();
        let mut now = Instant::now();
        gaps_us
            .into_iter()
            .map(|gap| {
                now += Duration::from_micros(gap);
                pace.wait(now, LINGER)
            })
            .collect()
    }

    #[test]
    fn only_events_closer_together_than_the_longest_wait_wait() {
        let busy = waits(std::iter::once(0).chain([1000; 100]).chain([2_000_000]));
        assert_eq!(busy[0], None, "the first event goes at once");
        assert_eq!(busy[1], None, "one close event is not yet traffic");
        assert!(busy[100].is_some(), "a steady 1k/s is");
        assert_eq!(
            busy[101], None,
            "the first event after a silence goes at once"
        );
        assert!(
            waits([2000; 100]).iter().all(Option::is_none),
            "500/s never waits"
        );
    }

    #[test]
    fn a_wait_lasts_about_as_long_as_full_events_take_and_never_longer_than_allowed() {
        let fast = waits([25; 300]).pop().flatten().expect("40k/s waits");
        assert!(
            fast >= Duration::from_micros(350) && fast <= Duration::from_micros(450),
            "16 events at 25 µs take about 400 µs, waited {fast:?}"
        );
        assert_eq!(
            waits([500; 300]).pop().flatten(),
            Some(LINGER),
            "2k/s waits it all"
        );
    }
}
