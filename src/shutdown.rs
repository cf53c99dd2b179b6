//! Shutdown as an argument: SIGTERM or SIGINT cancels one [`CancellationToken`] that every
//! loop selects on; a second signal exits at once.

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

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
