//! Connecting to NATS with the settings every MRC process shares: credentials, a short
//! ping interval (dead connections noticed in seconds, not a minute), endless reconnects,
//! and a counter of reconnects that gateways watch to re-assert their sessions. Requests
//! wait on a reply muxer of our own ([`Nats`]).

use std::ops::Deref;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::{Client, ConnectOptions, Event};
use tokio::sync::watch;

use crate::config;
use crate::replies::Replies;
use crate::sync::lock;

/// A connected client plus a counter that goes up on every reconnect.
pub struct Connection {
    pub client: Nats,
    pub reconnects: watch::Receiver<u64>,
}

/// A client and the reply muxer its requests wait on ([`crate::replies`]: a request that
/// times out leaves nothing behind). Everything else goes to the client it derefs to.
#[derive(Clone)]
pub struct Nats {
    client: Client,
    replies: Arc<Replies>,
}

impl Nats {
    /// Subscribes the muxer's inbox on `client`.
    pub async fn new(client: Client) -> anyhow::Result<Self> {
        let replies = Replies::plain(client.clone())
            .await
            .context("subscribing to the reply inbox")?;
        Ok(Nats { client, replies })
    }

    /// The client itself (for whoever keeps one without requests).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Requests waiting for their reply.
    pub fn waiting(&self) -> usize {
        self.replies.waiting()
    }
}

impl Deref for Nats {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

/// Connects as `name` (shown in the server's `/connz`), retrying until the configured
/// connect timeout runs out.
pub async fn connect(cfg: &config::Nats, name: &str) -> anyhow::Result<Connection> {
    let (tx, reconnects) = watch::channel(0u64);
    let deadline = Instant::now() + Duration::from_millis(cfg.connect_timeout_ms);
    let mut attempt = 0u32;
    let dropped = Arc::new(Dropped::default());
    loop {
        let (tx, dropped) = (tx.clone(), dropped.clone());
        let options = options(cfg, name).await?.event_callback(move |event| {
            let (tx, dropped) = (tx.clone(), dropped.clone());
            async move { on_event(event, &tx, &dropped) }
        });
        match options.connect(cfg.urls.clone()).await {
            Ok(client) => {
                let client = Nats::new(client).await?;
                return Ok(Connection { client, reconnects });
            }
            Err(e) if Instant::now() < deadline => {
                attempt += 1;
                if attempt == 1 || attempt % 10 == 0 {
                    tracing::warn!(urls = ?cfg.urls, error = %e, "NATS not reachable yet, retrying");
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => {
                return Err(e).with_context(|| format!("connecting to NATS at {:?}", cfg.urls))
            }
        }
    }
}

async fn options(cfg: &config::Nats, name: &str) -> anyhow::Result<ConnectOptions> {
    let mut options = match &cfg.creds {
        Some(path) => ConnectOptions::with_credentials_file(path)
            .await
            .with_context(|| format!("reading NATS credentials {}", path.display()))?,
        None => ConnectOptions::new(),
    };
    if let (Some(user), Some(password)) = (&cfg.user, &cfg.password) {
        options = options.user_and_password(user.clone(), password.clone());
    }
    if let Some(token) = &cfg.token {
        options = options.token(token.clone());
    }
    if let Some(ca) = &cfg.tls_ca {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    Ok(options
        .name(name)
        .ping_interval(Duration::from_secs(5))
        .connection_timeout(Duration::from_secs(3))
        .request_timeout(Some(cfg.request_timeout()))
        .max_reconnects(None))
}

fn on_event(event: Event, reconnects: &watch::Sender<u64>, dropped: &Dropped) {
    match event {
        Event::Connected => {
            tracing::info!("NATS connected");
            reconnects.send_modify(|n| *n += 1);
        }
        Event::Disconnected => tracing::warn!("NATS disconnected"),
        Event::ServerError(e) => tracing::error!(error = %e, "NATS server error (permissions?)"),
        Event::ClientError(e) => tracing::error!(error = %e, "NATS client error"),
        Event::SlowConsumer(sid) => {
            if let Some(dropped) = dropped.note(Instant::now()) {
                tracing::warn!(sid, dropped, "NATS slow consumer: messages dropped");
            }
        }
        other => tracing::info!(event = %other, "NATS event"),
    }
}

/// async-nats reports a slow consumer once per message it dropped: thousands of lines a
/// second in a burst. They are logged at most once a second, with how many there were.
#[derive(Default)]
struct Dropped(Mutex<Drops>);

#[derive(Default)]
struct Drops {
    /// Since the last line logged.
    count: u64,
    logged: Option<Instant>,
}

impl Dropped {
    /// One more dropped message at `now`; `Some(count)` when a line is due.
    fn note(&self, now: Instant) -> Option<u64> {
        let mut drops = lock(&self.0);
        drops.count += 1;
        let recent = |at: Instant| now.duration_since(at) < Duration::from_secs(1);
        if drops.logged.is_some_and(recent) {
            return None;
        }
        drops.logged = Some(now);
        Some(std::mem::take(&mut drops.count))
    }
}

/// Why a request got no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum RequestFailure {
    /// Nobody subscribes to the subject (a dead gateway, no center running).
    #[error("no responders")]
    NoResponders,
    /// Somebody subscribes but did not answer in time.
    #[error("timed out")]
    TimedOut,
    /// The peer answered with an error reply.
    #[error(transparent)]
    Remote(crate::protocol::nats::ErrorBody),
    /// The answer could not be decoded.
    #[error("malformed reply: {0}")]
    Malformed(serde_json::Error),
    #[error("request failed: {0}")]
    Other(String),
}

impl RequestFailure {
    /// The same failure, for each request of a batch that failed as a whole.
    pub(crate) fn same(&self) -> Self {
        match self {
            RequestFailure::NoResponders => RequestFailure::NoResponders,
            RequestFailure::TimedOut => RequestFailure::TimedOut,
            RequestFailure::Remote(body) => RequestFailure::Remote(body.clone()),
            other => RequestFailure::Other(other.to_string()),
        }
    }
}

impl From<crate::protocol::nats::ReplyError> for RequestFailure {
    fn from(e: crate::protocol::nats::ReplyError) -> Self {
        use crate::protocol::nats::ReplyError;
        match e {
            ReplyError::Remote(body) => RequestFailure::Remote(body),
            ReplyError::Malformed(e) => RequestFailure::Malformed(e),
        }
    }
}

/// Sends one JSON request and decodes the JSON reply (or error reply). The whole exchange,
/// including enqueueing during a reconnect, is bounded by `timeout`.
pub async fn request<T: serde::de::DeserializeOwned>(
    nats: &Nats,
    subject: String,
    payload: bytes::Bytes,
    timeout: Duration,
) -> Result<T, RequestFailure> {
    let reply = request_raw(nats, subject.into(), payload, timeout).await?;
    Ok(crate::protocol::nats::decode_reply(&reply)?)
}

/// [`request`] without decoding: the reply's payload as it came. A [`Subject`] is
/// shared, not copied, by the requests of a [`Batcher`](crate::batch::Batcher).
///
/// [`Subject`]: async_nats::Subject
pub(crate) async fn request_raw(
    nats: &Nats,
    subject: async_nats::Subject,
    payload: bytes::Bytes,
    timeout: Duration,
) -> Result<bytes::Bytes, RequestFailure> {
    nats.replies.request(subject, payload, timeout).await
}

/// [`request`] for idempotent requests (look-ups, register, unregister, purge): one more
/// try when nobody answered, which rides over a center that died with the request in
/// hand or is restarting.
pub(crate) async fn request_idempotent<T: serde::de::DeserializeOwned>(
    nats: &Nats,
    subject: String,
    payload: bytes::Bytes,
    timeout: Duration,
) -> Result<T, RequestFailure> {
    retry_once(|| request(nats, subject.clone(), payload.clone(), timeout)).await
}

/// Runs `attempt` once more, after a short pause, when nobody answered the first one.
pub(crate) async fn retry_once<T, F, Fut>(attempt: F) -> Result<T, RequestFailure>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, RequestFailure>>,
{
    match attempt().await {
        Err(RequestFailure::NoResponders | RequestFailure::TimedOut) => {
            tokio::time::sleep(Duration::from_millis(50)).await;
            attempt().await
        }
        other => other,
    }
}

/// Answers every request on `requests` with `answer(payload)`, published by `via`, until
/// `shutdown` or the end of the subscription. A message without a reply subject is
/// handled, not answered.
pub(crate) async fn answer(
    via: &Client,
    mut requests: async_nats::Subscriber,
    shutdown: &tokio_util::sync::CancellationToken,
    mut answer: impl FnMut(&[u8]) -> bytes::Bytes,
) -> anyhow::Result<()> {
    use futures::StreamExt;
    let stop = crate::shutdown::Cancelled::new(shutdown);
    tokio::pin!(stop);
    loop {
        let msg = tokio::select! {
            () = &mut stop => return Ok(()),
            msg = requests.next() => match msg { Some(msg) => msg, None => return Ok(()) },
        };
        let reply = answer(&msg.payload);
        if let Some(reply_to) = msg.reply {
            if let Err(e) = via.publish(reply_to, reply).await {
                tracing::debug!(error = %e, "reply not sent");
            }
        }
    }
}

/// Returns once nats-server has processed everything `client` sent before (a server
/// handles one connection's operations in order): a message to `probe`, a subject this
/// client subscribes to just for it, comes back. A flush is no such barrier: async-nats
/// only writes to the socket, and another connection's message may still find a
/// subscription missing.
async fn round_trip(client: &Client, probe: String, timeout: Duration) -> anyhow::Result<()> {
    use futures::StreamExt;
    let mut echo = client.subscribe(probe.clone()).await?;
    client.publish(probe, bytes::Bytes::new()).await?;
    tokio::time::timeout(timeout, echo.next())
        .await
        .context("no round trip through NATS in time")?
        .context("the round-trip subscription ended")?;
    Ok(())
}

/// [`round_trip`], retried until it works or `shutdown`: before a process says it is ready,
/// so that whoever believes it finds its subscriptions in place.
pub(crate) async fn confirm_subscriptions(
    client: &Client,
    subjects: &crate::subject::Subjects,
    timeout: Duration,
    shutdown: &tokio_util::sync::CancellationToken,
) {
    until_confirmed(shutdown, || round_trip(client, subjects.probe(), timeout)).await
}

/// Runs `round_trip` until it works or `shutdown`, a short pause between tries: for the
/// main connection's probe and for the deliver connection's PING alike.
pub(crate) async fn until_confirmed<F, Fut>(
    shutdown: &tokio_util::sync::CancellationToken,
    round_trip: F,
) where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    while let Err(e) = round_trip().await {
        if shutdown.is_cancelled() {
            return;
        }
        tracing::warn!(error = %e, "NATS has not confirmed the subscriptions yet");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Leaves NATS at the end of a process. First one round trip: the unsubscribes of what the
/// process stopped serving (a center's endpoints, a gateway's ingress) were only written,
/// and until nats-server has read them it still routes requests here, to be lost with the
/// process. Then a drain (flushes what is buffered, ends the other subscriptions), bounded
/// in time: with NATS unreachable a drain would wait for a reconnect forever.
pub async fn drain(client: &Client, cfg: &config::Nats) {
    if let Ok(subjects) = cfg.subjects() {
        if let Err(e) = round_trip(client, subjects.probe(), cfg.request_timeout()).await {
            tracing::warn!(error = %format!("{e:#}"), "leaving NATS without a last round trip");
        }
    }
    match tokio::time::timeout(Duration::from_secs(5), client.drain()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "draining the NATS connection failed"),
        Err(_) => tracing::warn!("NATS connection not drained within 5 s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_dropped_messages_is_one_line_a_second_with_its_count() {
        let dropped = Dropped::default();
        let start = Instant::now();
        assert_eq!(dropped.note(start), Some(1), "the first is told at once");
        for ms in 1..1000 {
            assert_eq!(dropped.note(start + Duration::from_millis(ms)), None);
        }
        let later = start + Duration::from_millis(1000);
        assert_eq!(
            dropped.note(later),
            Some(1000),
            "999 held back, and this one"
        );
        assert_eq!(dropped.note(later + Duration::from_secs(5)), Some(1));
    }
}
