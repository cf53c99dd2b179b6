//! Sweeps over every session that end some of them, instead of a timer and a shutdown
//! future in every session's loop (each was ~100 bytes of every connection's task and a
//! poll on each of its wake-ups):
//! - [`idle`]: each third of the idle timeout, a session that sent nothing since the last
//!   sweep is asked for a sign of life (a WebSocket ping, which a live client answers);
//!   one silent for three sweeps in a row, the idle timeout, is closed with `idle`;
//! - [`drain`]: in a stop, every session is closed with `shutdown` at its turn, spread
//!   over the drain window by its id.
//!
//! Sessions learn it through their outbox ([`super::session`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::session::Sessions;
use crate::ident::SessionId;

/// Sweeps in a row without a word from the client that close its session.
const SWEEPS: u8 = 3;

/// Sweeps `sessions` for idle clients until `stopped`.
pub(crate) async fn idle(
    sessions: Arc<Sessions>,
    idle_timeout: Duration,
    stopped: CancellationToken,
) -> anyhow::Result<()> {
    let period = (idle_timeout / u32::from(SWEEPS)).max(Duration::from_millis(10));
    let mut every = tokio::time::interval_at(Instant::now() + period, period);
    every.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stopped.cancelled() => return Ok(()),
            _ = every.tick() => {}
        }
        sessions.each(|handle| handle.sweep(SWEEPS));
    }
}

/// Once `shutdown` is cancelled, ends each session at its turn within `window`. A session
/// that starts after this looked checks `shutdown` itself.
pub(crate) async fn drain(
    sessions: Arc<Sessions>,
    window: Duration,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    shutdown.cancelled().await;
    let start = Instant::now();
    let mut turns: Vec<_> = sessions
        .handles()
        .into_iter()
        .map(|handle| (turn(&handle.id, window), handle))
        .collect();
    turns.sort_by_key(|(turn, _)| *turn);
    for (turn, handle) in turns {
        if start + turn > Instant::now() {
            tokio::time::sleep_until(start + turn).await;
        }
        handle.shut_down();
    }
    Ok(())
}

/// Where in `window` session `id` closes: ids are random, so turns spread evenly.
fn turn(id: &SessionId, window: Duration) -> Duration {
    let point = xxhash_rust::xxh3::xxh3_64(id.as_str().as_bytes()) % 1_000_000;
    window.mul_f64(point as f64 / 1e6)
}

#[cfg(test)]
mod tests {
    use futures::FutureExt as _;

    use super::*;
    use crate::gateway::session::{channel, End};
    use crate::ident::UserId;

    #[tokio::test(start_paused = true)]
    async fn a_silent_session_is_pinged_then_closed_a_talking_one_stays() {
        let sessions = Arc::new(Sessions::default());
        let (silent, silent_out) = channel(SessionId::generate(), None, 4);
        let (talking, talking_out) = channel(SessionId::generate(), None, 4);
        sessions.insert(UserId::new("silent").unwrap(), silent);
        sessions.insert(UserId::new("talking").unwrap(), talking);
        let stopped = CancellationToken::new();
        tokio::spawn(idle(sessions, Duration::from_secs(3), stopped.clone()));
        let start = Instant::now();
        let at = |s| start + Duration::from_millis(s);
        // Sweeps at 1, 2, 3, 4 s: the first clears what login counted as heard. The
        // talking client says something between every two.
        tokio::time::sleep_until(at(1500)).await;
        assert_eq!(silent_out.ready().now_or_never(), None);
        talking_out.heard();
        for second in [2, 3] {
            tokio::time::sleep_until(at(second * 1000 + 500)).await;
            assert!(silent_out.take_ping(), "pinged after {second} s");
            talking_out.heard();
        }
        tokio::time::sleep_until(at(4500)).await;
        assert_eq!(silent_out.ready().now_or_never(), Some(Err(End::Idle)));
        assert_eq!(talking_out.ready().now_or_never(), None);
        stopped.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_ends_every_session_at_its_turn_in_the_window() {
        let sessions = Arc::new(Sessions::default());
        let mut outboxes = Vec::new();
        for i in 0..20 {
            let (handle, outbox) = channel(SessionId::generate(), None, 4);
            sessions.insert(UserId::new(&format!("u{i}")).unwrap(), handle.clone());
            outboxes.push((turn(&handle.id, Duration::from_secs(10)), outbox));
        }
        let shutdown = CancellationToken::new();
        let window = Duration::from_secs(10);
        tokio::spawn(drain(sessions, window, shutdown.clone()));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(outboxes
            .iter()
            .all(|(_, o)| o.ready().now_or_never().is_none()));
        shutdown.cancel();
        let start = Instant::now();
        // Looked at just after each second: the timer rounds a turn up to its next
        // millisecond, and the drain and this test wake at the same instant in no set
        // order, so turns within a few milliseconds of a look are not judged.
        let margin = Duration::from_millis(3);
        for step in 1..=10 {
            let now = Duration::from_secs(step);
            tokio::time::sleep_until(start + now + margin / 2).await;
            for (turn, outbox) in &outboxes {
                let ended = outbox.ready().now_or_never() == Some(Err(End::Shutdown));
                // Turns fall within the window, each session's when it comes.
                if *turn < now {
                    assert!(ended, "turn {turn:?} not ended at {now:?}");
                } else if *turn > now + margin {
                    assert!(!ended, "turn {turn:?} ended at {now:?}");
                }
            }
        }
    }
}
