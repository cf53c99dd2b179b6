//! Retrying what must eventually happen: directory writes a gateway needs, a center's
//! first read of its buckets, an eviction. Nothing of that kind is ever only logged: it is
//! tried again with exponential backoff and jitter until it succeeds, becomes moot, or the
//! process stops.

use std::future::Future;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// First delay between attempts.
pub(crate) const FIRST_DELAY: Duration = Duration::from_millis(100);
/// Longest delay between attempts.
pub(crate) const MAX_DELAY: Duration = Duration::from_secs(5);

/// Endless delays from `first`, doubling up to `max`, each with up to as much again of
/// random jitter so that many retriers never move in step.
pub(crate) fn delays(first: Duration, max: Duration) -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(first)
        .with_max_delay(max)
        .with_jitter()
        .without_max_times()
        .build()
}

/// What one attempt says.
pub(crate) enum Attempt<T, E> {
    Done(T),
    /// Nothing left to do: the write is no longer needed.
    Moot,
    Failed(E),
}

/// Runs `attempt` until it is done or moot (`Some(Done)`/`None`), or `shutdown` is
/// cancelled (`None`). Failures are logged as `what` on the first attempt and then every
/// tenth, so a long outage does not flood the log.
pub(crate) async fn until_done<T, E, F, Fut>(
    what: &str,
    shutdown: &CancellationToken,
    attempt: F,
) -> Option<T>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Attempt<T, E>>,
{
    until_done_or_woken(what, shutdown, None, attempt).await
}

/// [`until_done`], where a notification on `wake` cuts the wait before the next attempt
/// short: news that it may succeed now (a center is back) need not wait out the backoff.
pub(crate) async fn until_done_or_woken<T, E, F, Fut>(
    what: &str,
    shutdown: &CancellationToken,
    wake: Option<&Notify>,
    mut attempt: F,
) -> Option<T>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Attempt<T, E>>,
{
    let mut delays = delays(FIRST_DELAY, MAX_DELAY);
    for failures in 0u64.. {
        match attempt().await {
            Attempt::Done(value) => {
                if failures > 0 {
                    tracing::info!(what, failures, "succeeded after retrying");
                }
                return Some(value);
            }
            Attempt::Moot => return None,
            Attempt::Failed(e) => {
                if failures % 10 == 0 {
                    tracing::warn!(what, failures = failures + 1, error = %e, "failed; retrying");
                }
            }
        }
        let delay = delays.next().unwrap_or(MAX_DELAY);
        let woken = async {
            match wake {
                Some(wake) => wake.notified().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => return None,
            () = tokio::time::sleep(delay) => {}
            () = woken => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn delays_grow_up_to_the_cap_with_jitter() {
        let first = Duration::from_millis(10);
        let max = Duration::from_millis(80);
        let seen: Vec<Duration> = delays(first, max).take(12).collect();
        assert_eq!(seen.len(), 12);
        assert!(seen.iter().all(|d| *d >= first && *d <= max * 2));
        assert!(seen[11] >= max, "later delays reach the cap: {seen:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn retries_until_the_attempt_succeeds() {
        let tries = AtomicU32::new(0);
        let shutdown = CancellationToken::new();
        let got = until_done("test", &shutdown, || async {
            match tries.fetch_add(1, Ordering::SeqCst) {
                0..=2 => Attempt::Failed("not yet"),
                n => Attempt::Done(n),
            }
        })
        .await;
        assert_eq!(got, Some(3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_wake_cuts_the_backoff_short() {
        let tries = AtomicU32::new(0);
        let (shutdown, wake) = (CancellationToken::new(), Notify::new());
        // Three failures back off for at least 0.7 s in all; each wake retries at once.
        let retries = until_done_or_woken("test", &shutdown, Some(&wake), || async {
            match tries.fetch_add(1, Ordering::SeqCst) {
                0..=2 => Attempt::Failed("not yet"),
                n => Attempt::Done(n),
            }
        });
        let waking = async {
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_millis(5)).await;
                wake.notify_one();
            }
        };
        let started = tokio::time::Instant::now();
        let (got, ()) = tokio::join!(retries, waking);
        assert_eq!(got, Some(3));
        assert!(started.elapsed() < FIRST_DELAY, "{:?}", started.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn stops_when_moot_or_cancelled() {
        let shutdown = CancellationToken::new();
        let moot: Option<()> =
            until_done("test", &shutdown, || async { Attempt::<(), &str>::Moot }).await;
        assert_eq!(moot, None);
        shutdown.cancel();
        let cancelled: Option<()> = until_done("test", &shutdown, || async {
            Attempt::<(), &str>::Failed("down")
        })
        .await;
        assert_eq!(cancelled, None);
    }
}
