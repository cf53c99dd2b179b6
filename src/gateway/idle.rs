//! Idle clients: one sweep over every session each third of the idle timeout, instead of
//! a timer in every session (a timer is 112 bytes of each connection's task and a poll
//! on each of its wake-ups). A session that sent nothing since the last sweep is asked
//! for a sign of life (a WebSocket ping, which a live client answers); one silent for
//! three sweeps in a row, the idle timeout, is closed with `idle`.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::session::Sessions;

/// Sweeps in a row without a word from the client that close its session.
const SWEEPS: u8 = 3;

/// Sweeps `sessions` until `stopped`.
pub(crate) async fn run(
    sessions: Arc<Sessions>,
    idle_timeout: Duration,
    stopped: CancellationToken,
) -> anyhow::Result<()> {
    let period = (idle_timeout / u32::from(SWEEPS)).max(Duration::from_millis(10));
    let mut every = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stopped.cancelled() => return Ok(()),
            _ = every.tick() => {}
        }
        for handle in sessions.handles() {
            handle.sweep(SWEEPS);
        }
    }
}
