//! The live path's duplicate filter. A backend that retries a send with the id it chose
//! must not make a receiver see the message twice: the gateway holding the receiver
//! remembers each (message id, receiver) it pushed for a window and answers a repeat as
//! delivered without pushing it again. Only sender-chosen ids are remembered (a generated
//! id is never sent twice), so plain sends cost nothing here.

use std::time::Duration;

use moka::sync::Cache;

/// (message id, receiver) pairs pushed within the window.
pub(crate) struct Recent {
    /// `None`: the window is 0, nothing is remembered.
    pushed: Option<Cache<Box<str>, ()>>,
}

/// Most pairs remembered: a burst of retried sends beyond it is filtered less long.
const CAPACITY: u64 = 1 << 20;

impl Recent {
    pub(crate) fn new(window: Duration) -> Self {
        let pushed = (!window.is_zero()).then(|| {
            Cache::builder()
                .max_capacity(CAPACITY)
                .time_to_live(window)
                .build()
        });
        Recent { pushed }
    }

    /// True the first time `(id, user)` is claimed within the window. Claiming is atomic,
    /// so of two deliveries racing with the same id only one pushes.
    pub(crate) fn claim(&self, id: &str, user: &str) -> bool {
        match &self.pushed {
            Some(pushed) => pushed.entry(key(id, user)).or_insert(()).is_fresh(),
            None => true,
        }
    }

    /// Forgets a claim whose push did not happen (the receiver was not here), so a retry
    /// through a fresh route still pushes.
    pub(crate) fn release(&self, id: &str, user: &str) {
        if let Some(pushed) = &self.pushed {
            pushed.invalidate(&key(id, user));
        }
    }
}

impl Default for Recent {
    fn default() -> Self {
        Recent::new(Duration::from_secs(DEFAULT_WINDOW_S))
    }
}

/// The window when none is configured: the inbox stream's duplicate window.
pub(crate) const DEFAULT_WINDOW_S: u64 = 120;

/// A message id cannot hold a control character, so a NUL separates the two unambiguously.
fn key(id: &str, user: &str) -> Box<str> {
    let mut key = String::with_capacity(id.len() + 1 + user.len());
    key.push_str(id);
    key.push('\0');
    key.push_str(user);
    key.into_boxed_str()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pair_is_claimed_once_until_released() {
        let recent = Recent::new(Duration::from_secs(60));
        assert!(recent.claim("m1", "bob"));
        assert!(!recent.claim("m1", "bob"));
        assert!(
            recent.claim("m1", "carol"),
            "another receiver is another pair"
        );
        assert!(recent.claim("m2", "bob"));
        recent.release("m1", "bob");
        assert!(recent.claim("m1", "bob"));
    }

    #[test]
    fn a_zero_window_remembers_nothing() {
        let recent = Recent::new(Duration::ZERO);
        assert!(recent.claim("m1", "bob"));
        assert!(recent.claim("m1", "bob"));
    }
}
