//! Shutdown as an argument: SIGTERM or SIGINT cancels one [`CancellationToken`] that every
//! loop selects on; a second signal exits at once.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// A token cancelled by the first SIGTERM/SIGINT.
pub fn on_signal() -> std::io::Result<CancellationToken> {
    let token = CancellationToken::new();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let cancel = token.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: stopping"),
            _ = int.recv() => tracing::info!("SIGINT: stopping"),
        }
        cancel.cancel();
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::warn!("second signal: exiting now");
        std::process::exit(130);
    });
    Ok(token)
}

/// SIGHUP, which must never kill a server (its default action would): created at start,
/// it keeps the signal handled for the process's lifetime; whoever can reload something
/// waits on it.
pub struct Hangups(tokio::signal::unix::Signal);

/// Handles SIGHUP from now on.
pub fn hangups() -> std::io::Result<Hangups> {
    Ok(Hangups(signal(SignalKind::hangup())?))
}

impl Hangups {
    /// Calls `reload` on every SIGHUP until `shutdown`.
    pub async fn serve(mut self, shutdown: CancellationToken, reload: impl Fn()) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                got = self.0.recv() => match got {
                    Some(()) => reload(),
                    None => return,
                },
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// `token.cancelled()` for a loop that polls it on every turn: once its waker is
    /// registered, a poll only asks the token whether it is cancelled (an uncontended
    /// lock), where tokio-util's future also polls its `Notified` again (together ~160
    /// instructions), and a service loop polls it once per request it reads.
    pub(crate) struct Cancelled {
        token: CancellationToken,
        #[pin]
        wait: WaitForCancellationFutureOwned,
        // The waker the inner future holds, once it has been polled.
        registered: Option<Waker>,
    }
}

impl Cancelled {
    pub(crate) fn new(token: &CancellationToken) -> Self {
        Cancelled {
            token: token.clone(),
            wait: token.clone().cancelled_owned(),
            registered: None,
        }
    }
}

impl Future for Cancelled {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        let same = this
            .registered
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()));
        // Cancelling wakes the registered waker, and then the token says so.
        if same && !this.token.is_cancelled() {
            return Poll::Pending;
        }
        let polled = this.wait.poll(cx);
        if polled.is_pending() && !same {
            *this.registered = Some(cx.waker().clone());
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_cancelled_future_polled_many_times_ends_when_the_token_is_cancelled() {
        let token = CancellationToken::new();
        let mut cancelled = Box::pin(Cancelled::new(&token));
        for _ in 0..3 {
            let poll = futures::poll!(cancelled.as_mut());
            assert!(poll.is_pending(), "the token stands");
        }
        let canceller = token.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            canceller.cancel();
        });
        tokio::time::timeout(Duration::from_secs(5), cancelled)
            .await
            .expect("woken by the cancel");
        let already = Cancelled::new(&token);
        assert!(futures::poll!(Box::pin(already)).is_ready());
    }
}
