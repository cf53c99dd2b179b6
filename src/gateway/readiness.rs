//! Whether this gateway may take clients, and if not, why: `/readyz` reports it and every
//! client door (WebSocket, HTTP API, TCP) refuses new clients while it says not ready.
//!
//! Two things stand in the way:
//! - no center has answered yet: the gateway has not purged the sessions of an earlier run
//!   under its id, so it must not register new ones (start-up);
//! - directory writes are failing (a center answered with an error, e.g. JetStream lost its
//!   quorum): logins would fail `unavailable`.
//!
//! A write failure holds for [`WRITE_FAILURE_HOLD`] unless a write succeeds first. A
//! gateway with nothing to write cannot tell whether writes work again, so an old failure
//! ages out and the next write tells again (writes that must happen are retried more
//! often than that, so a lasting outage keeps the gateway not ready).
//!
//! This type does not ask anyone anything: it holds what others tell it
//! ([`center_answered`](Readiness::center_answered), [`write_failed`](Readiness::write_failed),
//! [`write_succeeded`](Readiness::write_succeeded)), and reading it is one atomic load
//! while nothing is wrong.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::sync;

/// How long a failed directory write keeps the gateway not ready when no write succeeds
/// after it: twice the longest pause between retries of a write (`retry::MAX_DELAY`), so
/// a write being retried through an outage keeps it not ready.
pub(crate) const WRITE_FAILURE_HOLD: Duration =
    Duration::from_secs(2 * crate::retry::MAX_DELAY.as_secs());

/// The reason given until a center has answered.
pub(crate) const NO_CENTER: &str = "waiting for a center to answer";

/// Why the gateway is not ready, if it is not. Shared by the doors, `/readyz`, the
/// start-up purge and the registrar.
#[derive(Debug)]
pub struct Readiness {
    /// True while nothing stands in the way: the fast path of every accept and request.
    /// Only set and cleared with `state` locked.
    clear: AtomicBool,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// A center answered the start-up purge.
    center_answered: bool,
    /// The error of the latest failed directory write, and when it failed.
    write_failure: Option<(String, Instant)>,
}

impl Default for Readiness {
    fn default() -> Self {
        Self::new()
    }
}

impl Readiness {
    /// Not ready: no center has answered yet.
    pub(crate) fn new() -> Self {
        Readiness {
            clear: AtomicBool::new(false),
            state: Mutex::new(State::default()),
        }
    }

    /// A center answered the start-up purge: this gateway may take clients.
    pub(crate) fn center_answered(&self) {
        self.update(|state| state.center_answered = true);
    }

    /// A directory write failed with `error`: not ready until a write succeeds or
    /// [`WRITE_FAILURE_HOLD`] passes without another failure.
    pub(crate) fn write_failed(&self, error: &str) {
        self.update(|state| state.write_failure = Some((error.to_string(), Instant::now())));
    }

    /// A directory write succeeded: writes work again.
    pub(crate) fn write_succeeded(&self) {
        if self.clear.load(Ordering::Acquire) {
            return;
        }
        self.update(|state| state.write_failure = None);
    }

    /// Why the gateway is not ready; `None` when it is.
    pub(crate) fn reason(&self) -> Option<String> {
        if self.clear.load(Ordering::Acquire) {
            return None;
        }
        let mut state = self.lock();
        let reason = state.reason();
        if reason.is_none() {
            self.clear.store(true, Ordering::Release);
        }
        reason
    }

    /// Why the doors take no new clients, if they do not: only until a center answered.
    /// Failing writes do not close them: a login then fails on its own, and the next one
    /// that succeeds is what shows writes work again.
    pub(crate) fn doors_closed_because(&self) -> Option<&'static str> {
        if self.clear.load(Ordering::Acquire) || self.lock().center_answered {
            return None;
        }
        Some(NO_CENTER)
    }

    /// True when the gateway may take clients.
    #[cfg(test)]
    pub(crate) fn is_ready(&self) -> bool {
        self.reason().is_none()
    }

    fn update(&self, change: impl FnOnce(&mut State)) {
        let mut state = self.lock();
        change(&mut state);
        let clear = state.reason().is_none();
        self.clear.store(clear, Ordering::Release);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        sync::lock(&self.state)
    }
}

impl State {
    /// The reason, forgetting a write failure older than the hold.
    fn reason(&mut self) -> Option<String> {
        if let Some((error, at)) = &self.write_failure {
            if at.elapsed() < WRITE_FAILURE_HOLD {
                return Some(format!("directory writes failing: {error}"));
            }
            self.write_failure = None;
        }
        (!self.center_answered).then(|| NO_CENTER.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_not_ready_waiting_for_a_center() {
        let readiness = Readiness::new();
        assert_eq!(readiness.reason().as_deref(), Some(NO_CENTER));
        assert!(!readiness.is_ready());
        // A write that succeeds before the start-up purge does not make it ready.
        readiness.write_succeeded();
        assert_eq!(readiness.reason().as_deref(), Some(NO_CENTER));
    }

    #[test]
    fn ready_once_a_center_answered() {
        let readiness = Readiness::new();
        readiness.center_answered();
        assert_eq!(readiness.reason(), None);
        assert!(readiness.is_ready());
        assert!(readiness.clear.load(Ordering::Acquire));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_write_makes_it_not_ready_until_a_write_succeeds() {
        let readiness = Readiness::new();
        readiness.center_answered();
        readiness.write_failed("unavailable: no quorum");
        assert_eq!(
            readiness.reason().as_deref(),
            Some("directory writes failing: unavailable: no quorum")
        );
        tokio::time::advance(WRITE_FAILURE_HOLD / 2).await;
        readiness.write_failed("timed out");
        tokio::time::advance(WRITE_FAILURE_HOLD / 2).await;
        // The latest failure counts, and its hold started when it happened.
        assert_eq!(
            readiness.reason().as_deref(),
            Some("directory writes failing: timed out")
        );
        readiness.write_succeeded();
        assert_eq!(readiness.reason(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_failure_ages_out_when_no_write_follows() {
        let readiness = Readiness::new();
        readiness.center_answered();
        readiness.write_failed("timed out");
        tokio::time::advance(WRITE_FAILURE_HOLD - Duration::from_millis(1)).await;
        assert!(!readiness.is_ready());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(readiness.reason(), None);
        // Failing again after the hold makes it not ready again.
        readiness.write_failed("timed out");
        assert!(!readiness.is_ready());
    }

    #[test]
    fn a_write_failure_before_any_center_answered_is_the_reason_given() {
        let readiness = Readiness::new();
        readiness.write_failed("unavailable: no quorum");
        assert_eq!(
            readiness.reason().as_deref(),
            Some("directory writes failing: unavailable: no quorum")
        );
        readiness.write_succeeded();
        assert_eq!(readiness.reason().as_deref(), Some(NO_CENTER));
        readiness.center_answered();
        assert!(readiness.is_ready());
    }
}
