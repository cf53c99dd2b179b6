//! One client connection, whatever the transport: log in, then read frames, route sends,
//! and write queued frames until the client leaves, misbehaves, or the gateway stops.
//!
//! A transport gives a [`Reader`] of inbound text frames and a [`Writer`]; everything else
//! (the protocol, authentication, limits, registration) lives here once:
//! - this module: the transport traits, why a connection closes ([`Close`]), what
//!   connections share ([`Context`]), and [`serve`], a connection from start to end;
//! - [`login`]: waiting for a valid login, then registering the session;
//! - [`live`]: the logged-in session ([`Live`](live::Live)): its loop (outbound queue,
//!   inbound frames, idle timer) and its end;
//! - [`request`]: what a live session does with each client request (rate limit, routed
//!   sends in their own tasks, presence subscriptions).

mod live;
mod login;
mod request;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::auth::{Auth, Identity};
use super::ops::Ops;
use super::presence::Hub;
use super::registrar::Registrar;
use super::session::{Direct, Sessions};
use crate::ident::GatewayId;
use crate::protocol::client::{Frame, FrameError};
use crate::protocol::code::ErrorCode;
use crate::telemetry;

/// What a transport read.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// One text frame (a JSON object).
    Text(Text),
    /// A frame larger than the transport accepts (its size, as far as known).
    TooLarge(usize),
    /// Anything else (binary, pong): not a protocol frame, but a sign of life.
    Other,
    /// A ping: its pong is buffered in the writer, for the connection to flush (only the
    /// connection's task writes it: `Outbox::flush_writer`).
    Ping,
    /// The client closed or the transport failed.
    Closed,
}

/// A text frame where the transport left it: in the WebSocket's own buffer (not copied
/// out), or a line.
#[derive(Debug)]
pub(crate) enum Text {
    Ws(tokio_tungstenite::tungstenite::Utf8Bytes),
    Line(String),
}

impl std::ops::Deref for Text {
    type Target = str;

    fn deref(&self) -> &str {
        match self {
            Text::Ws(text) => text.as_str(),
            Text::Line(line) => line,
        }
    }
}

pub(crate) trait Reader: Send {
    /// The next inbound frame. Must be cancel-safe: it is raced against other events.
    fn next(&mut self) -> impl Future<Output = Inbound> + Send;
}

pub(crate) trait Writer: Send {
    /// Writes one frame, or buffers it until [`Writer::flush`]; an error means the
    /// connection is gone.
    fn feed(&mut self, frame: Bytes) -> impl Future<Output = anyhow::Result<()>> + Send;
    /// Buffers bytes framed already, for the next flush: the rest of a write another task
    /// began ([`Writer::direct`]).
    fn feed_framed(&mut self, framed: &[u8]);
    /// The socket, for other tasks to write frames into while this connection waits with
    /// nothing to write (`session::direct`); `None` when only the connection's task can.
    fn direct(&mut self) -> Option<Direct> {
        None
    }
    /// Writes out whatever `feed` buffered.
    fn flush(&mut self) -> impl Future<Output = anyhow::Result<()>> + Send;
    /// Writes one frame and flushes.
    fn send(&mut self, frame: Bytes) -> impl Future<Output = anyhow::Result<()>> + Send {
        async move {
            self.feed(frame).await?;
            self.flush().await
        }
    }
    /// Asks the client for a sign of life (a WebSocket ping; nothing on raw TCP).
    fn ping(&mut self) -> impl Future<Output = anyhow::Result<()>> + Send;
    /// Ends the connection with a reason (a WebSocket close frame, or just EOF).
    fn close(&mut self, reason: Close) -> impl Future<Output = ()> + Send;
    /// Ends a connection the client closed (completes a WebSocket closing handshake).
    fn finish(&mut self) -> impl Future<Output = ()> + Send;
}

/// Which door a connection came through (a metrics label).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Door {
    Ws,
    Tcp,
}

impl Door {
    fn label(self) -> &'static str {
        match self {
            Door::Ws => "ws",
            Door::Tcp => "tcp",
        }
    }
}

/// Why the gateway closes a connection; sent as the `bye` reason and close reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Close {
    /// The gateway is stopping (WebSocket 1001 "going away").
    Shutdown,
    /// The client did not read its frames fast enough.
    SlowConsumer,
    /// No login in time.
    LoginTimeout,
    /// The credentials were refused.
    Unauthorized,
    /// The user already has the most sessions allowed.
    TooManySessions,
    /// Far more sends than the rate allows.
    Flood,
    /// Nothing from the client for the idle timeout.
    Idle,
    /// The directory could not register the session.
    Unavailable,
    /// A newer login of the same user replaced this session (login policy).
    Kicked,
}

impl Close {
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Close::Shutdown => "shutdown",
            Close::SlowConsumer => "slow_consumer",
            Close::LoginTimeout => "login_timeout",
            Close::Unauthorized => "unauthorized",
            Close::TooManySessions => "too_many_sessions",
            Close::Flood => "flood",
            Close::Idle => "idle",
            Close::Unavailable => "unavailable",
            Close::Kicked => crate::protocol::nats::REPLACED,
        }
    }

    /// The WebSocket close code.
    pub(crate) fn code(self) -> u16 {
        match self {
            Close::Shutdown => 1001,
            Close::Unavailable => 1011,
            _ => 1008,
        }
    }
}

/// What every client connection of a gateway shares.
pub(crate) struct Context {
    pub(crate) id: GatewayId,
    pub(crate) ops: Arc<Ops>,
    pub(crate) auth: Arc<Auth>,
    pub(crate) sessions: Arc<Sessions>,
    pub(crate) registrar: Arc<Registrar>,
    /// Presence subscriptions of this gateway's sessions.
    pub(crate) presence: Arc<Hub>,
    /// One permit per client send being routed, all connections together.
    pub(crate) routing: Arc<Semaphore>,
    /// Cancelled when the gateway starts to stop.
    pub(crate) shutdown: CancellationToken,
    /// Sessions close spread over this window after `shutdown` (`--drain-window-ms`).
    pub(crate) drain_window: std::time::Duration,
    /// Every connection and in-flight send; the stop waits for them.
    pub(crate) tracker: TaskTracker,
}

/// Counts an open connection for as long as it lives.
struct Open;

impl Open {
    fn new() -> Self {
        metrics::gauge!(telemetry::GATEWAY_CONNECTIONS).increment(1.0);
        Open
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        metrics::gauge!(telemetry::GATEWAY_CONNECTIONS).decrement(1.0);
    }
}

/// A client connection, as a door hands it over.
pub(crate) struct Conn<T> {
    /// The transport: read from and written to by the connection's one task.
    pub(crate) io: T,
    pub(crate) peer: SocketAddr,
    pub(crate) door: Door,
    /// The connection's place under `--max-connections`, held until it ends.
    #[allow(dead_code, reason = "held for its drop, which frees the place")]
    pub(crate) permit: OwnedSemaphorePermit,
    /// Its place under `--max-pending-logins` until it has logged in (`None`: the
    /// transport authenticated it).
    pub(crate) pending: Option<OwnedSemaphorePermit>,
}

/// Serves one connection to the end. `identity` is set when the transport already
/// authenticated the client (an `Authorization` header on the WebSocket upgrade).
///
/// Doors spawn this future as the connection's task, and a task keeps the size of its
/// future's largest state for its whole life: idle connections are most of a gateway's
/// memory. So what only logging in, registering, handling a frame or ending needs is
/// boxed (allocated while it runs) and an idle session keeps just [`Conn`],
/// [`Live`](live::Live) and its wait (docs/PERFORMANCE.md, idle memory; the size is tested in `listener::ws`).
// Not an `async fn`: its arguments would be kept twice, as arguments and as locals.
#[allow(clippy::manual_async_fn)]
pub(crate) fn serve<T: Reader + Writer>(
    cx: Arc<Context>,
    mut conn: Conn<T>,
    identity: Option<Identity>,
) -> impl Future<Output = ()> + Send {
    async move {
        let _open = Open::new();
        let identity = match identity {
            Some(identity) => identity,
            None => match Box::pin(login::log_in(&cx, &mut conn)).await {
                Some(identity) => identity,
                None => return,
            },
        };
        conn.pending = None;
        let start = login::start(cx, identity, &mut conn);
        let Some(mut live) = Box::pin(start).await else {
            return;
        };
        let ended = match conn.io.send(live.welcome()).await {
            Ok(()) => live.serve(&mut conn).await,
            Err(_) => None,
        };
        Box::pin(live.end(ended, &mut conn)).await;
    }
}

fn too_large(size: usize, limit: usize) -> FrameError {
    FrameError::new(
        ErrorCode::TooLarge,
        format!("frame of {size} bytes, limit {limit}"),
    )
}

async fn send_error<W: Writer>(writer: &mut W, error: &FrameError) {
    telemetry::error(error.code);
    let _ = writer.send(Frame::from(error).encode()).await;
}

/// Completes a close the client started, bounded in time.
async fn finish<W: Writer>(writer: &mut W) {
    let _ = tokio::time::timeout(Duration::from_secs(1), writer.finish()).await;
}

async fn say_bye<W: Writer>(writer: &mut W, reason: Close) {
    let bye = match reason {
        Close::Kicked => Frame::Kicked {
            reason: reason.reason(),
        }
        .encode(),
        _ => Frame::Bye {
            reason: reason.reason(),
        }
        .encode(),
    };
    // Best effort, bounded: the client may not be reading at all.
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        if writer.send(bye).await.is_ok() {
            writer.close(reason).await;
        }
    })
    .await;
}
