//! One client connection, whatever the transport: log in, then read frames, route sends,
//! and write queued frames until the client leaves, misbehaves, or the gateway stops.
//!
//! A transport gives a [`Reader`] of inbound text frames and a [`Writer`]; everything else
//! (the protocol, authentication, limits, registration) lives here once.

use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::auth::Identity;
use super::groups;
use super::presence;
use super::session::{self, End};
use super::{ops, Gateway};
use crate::config;
use crate::ident::{DeviceClass, SessionId, UserId};
use crate::protocol::client::{parse, Frame, FrameError, Request};
use crate::protocol::code::ErrorCode;
use crate::protocol::group::ListRequest;
use crate::protocol::nats::PresenceRequest;
use crate::telemetry;

/// What a transport read.
#[derive(Debug)]
pub enum Inbound {
    /// One text frame (a JSON object).
    Text(String),
    /// A frame larger than the transport accepts (its size, as far as known).
    TooLarge(usize),
    /// Anything else (binary, ping, pong): not a protocol frame, but a sign of life.
    Other,
    /// The client closed or the transport failed.
    Closed,
}

pub trait Reader: Send {
    /// The next inbound frame. Must be cancel-safe: it is raced against other events.
    fn next(&mut self) -> impl Future<Output = Inbound> + Send;
}

pub trait Writer: Send {
    /// Writes one frame, or buffers it until [`Writer::flush`]; an error means the
    /// connection is gone.
    fn feed(&mut self, frame: Bytes) -> impl Future<Output = anyhow::Result<()>> + Send;
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
pub enum Door {
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
pub enum Close {
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
    pub fn reason(self) -> &'static str {
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
    pub fn code(self) -> u16 {
        match self {
            Close::Shutdown => 1001,
            Close::Unavailable => 1011,
            _ => 1008,
        }
    }
}

/// Limits every door enforces.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_frame_bytes: usize,
    pub max_body_bytes: usize,
    pub max_receivers: usize,
    pub max_id_bytes: usize,
    pub rate: Quota,
    /// Rate-limited sends in a row after which the connection is closed as a flood.
    pub flood_after: u32,
    pub max_sessions_per_user: usize,
    pub outbound_queue: usize,
    pub login_timeout: Duration,
    pub idle_timeout: Duration,
    pub sends_in_flight: usize,
}

impl Limits {
    pub fn from_config(l: &config::Limits) -> Self {
        let nonzero = |n: u32| NonZeroU32::new(n).expect("validated to be > 0");
        Limits {
            max_frame_bytes: l.max_frame_bytes,
            max_body_bytes: l.max_body_bytes,
            max_receivers: l.max_receivers,
            max_id_bytes: l.max_id_bytes,
            rate: Quota::per_second(nonzero(l.rate_per_sec)).allow_burst(nonzero(l.rate_burst)),
            flood_after: l.rate_burst,
            max_sessions_per_user: l.max_sessions_per_user,
            outbound_queue: l.outbound_queue,
            login_timeout: Duration::from_millis(l.login_timeout_ms),
            idle_timeout: Duration::from_millis(l.idle_timeout_ms),
            sends_in_flight: l.sends_in_flight,
        }
    }
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

/// Frames written before one flush: what queued while earlier frames were being written
/// leaves together (one write for a burst), bounded so the client is read meanwhile.
const WRITE_BATCH: usize = 64;

/// A client connection, as a door hands it over.
pub struct Conn<R, W> {
    pub reader: R,
    pub writer: W,
    pub peer: SocketAddr,
    pub door: Door,
    /// The connection's place under `--max-connections`, held until it ends.
    pub permit: OwnedSemaphorePermit,
}

/// Serves one connection to the end. `identity` is set when the transport already
/// authenticated the client (an `Authorization` header on the WebSocket upgrade).
///
/// Doors spawn this future as the connection's task, and a task keeps the size of its
/// future's largest state for its whole life: idle connections are most of a gateway's
/// memory. So what only logging in, registering, handling a frame or ending needs is
/// boxed (allocated while it runs) and an idle session keeps just [`Conn`], [`Session`]
/// and its wait (docs/PERFORMANCE.md, idle memory; the size is tested in `listener::ws`).
// Not an `async fn`: its arguments would be kept twice, as arguments and as locals.
#[allow(clippy::manual_async_fn)]
pub fn serve<R: Reader, W: Writer>(
    gw: Arc<Gateway>,
    mut conn: Conn<R, W>,
    identity: Option<Identity>,
) -> impl Future<Output = ()> + Send {
    async move {
        let _open = Open::new();
        let identity = match identity {
            Some(identity) => identity,
            None => match Box::pin(log_in(&gw, &mut conn)).await {
                Some(identity) => identity,
                None => return,
            },
        };
        let start = Session::start(gw, identity, &mut conn);
        let Some(mut session) = Box::pin(start).await else {
            return;
        };
        let ended = match conn.writer.send(session.welcome()).await {
            Ok(()) => session.serve(&mut conn).await,
            Err(_) => None,
        };
        Box::pin(session.end(ended, &mut conn)).await;
    }
}

/// Waits for a valid login within the login timeout; when there is none, tells the client
/// why (or completes its close) and gives `None`.
async fn log_in<R: Reader, W: Writer>(gw: &Gateway, conn: &mut Conn<R, W>) -> Option<Identity> {
    let (reader, writer) = (&mut conn.reader, &mut conn.writer);
    let login = tokio::select! {
        () = gw.shutdown.cancelled() => Err(Some(Close::Shutdown)),
        login = tokio::time::timeout(gw.limits.login_timeout, login(gw, reader, writer)) => match login {
            Ok(result) => result,
            Err(_) => {
                send_error(writer, &FrameError::new(ErrorCode::NotLoggedIn, "no login in time")).await;
                Err(Some(Close::LoginTimeout))
            }
        },
    };
    match login {
        Ok(identity) => Some(identity),
        Err(Some(reason)) => {
            say_bye(writer, reason).await;
            None
        }
        Err(None) => {
            finish(writer).await;
            None
        }
    }
}

/// Reads frames until a valid login. `Err(Some(reason))`: close with that reason;
/// `Err(None)`: the client left.
async fn login<R: Reader, W: Writer>(
    gw: &Gateway,
    reader: &mut R,
    writer: &mut W,
) -> Result<Identity, Option<Close>> {
    loop {
        let text = match reader.next().await {
            Inbound::Text(text) => text,
            Inbound::TooLarge(n) => {
                send_error(writer, &too_large(n, gw.limits.max_frame_bytes)).await;
                continue;
            }
            Inbound::Other => continue,
            Inbound::Closed => return Err(None),
        };
        match parse(&text) {
            Ok(Request::Login {
                user,
                token,
                device,
            }) => {
                match gw
                    .auth
                    .login(user.as_deref(), token.as_deref(), device.as_deref())
                {
                    Ok(identity) => return Ok(identity),
                    Err(e) if e.code == ErrorCode::Unauthorized => {
                        tracing::info!(error = %e.message, "login refused");
                        send_error(writer, &e).await;
                        return Err(Some(Close::Unauthorized));
                    }
                    Err(e) => send_error(writer, &e).await,
                }
            }
            Ok(Request::Ping { id }) => {
                let _ = writer
                    .send(Frame::Pong { id: id.as_deref() }.encode())
                    .await;
            }
            Ok(other) => {
                let e = FrameError::new(ErrorCode::NotLoggedIn, "log in first");
                send_error(writer, &e.with_id(other.id().map(str::to_string))).await;
            }
            Err(e) => send_error(writer, &e).await,
        }
    }
}

fn too_large(size: usize, limit: usize) -> FrameError {
    FrameError::new(
        ErrorCode::TooLarge,
        format!("frame of {size} bytes, limit {limit}"),
    )
}

/// The `result` frame answering the frame `id`, or the error for it.
fn answer(
    id: Option<String>,
    result: Result<serde_json::Value, FrameError>,
) -> Result<Bytes, FrameError> {
    let result = result.map_err(|e| e.with_id(id.clone()))?;
    Ok(Frame::Result {
        id: id.as_deref(),
        result: &result,
    }
    .encode())
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

/// Writes the frames queued (at most [`WRITE_BATCH`]), then flushes once: a burst of
/// frames to one client is one write, not one per frame.
async fn write_queued<W: Writer>(writer: &mut W, outbox: &session::Outbox) -> anyhow::Result<()> {
    for _ in 0..WRITE_BATCH {
        let Some(frame) = outbox.try_next() else {
            break;
        };
        writer.feed(frame).await?;
    }
    writer.flush().await
}

/// One clock for every session's rate limiter: `RateLimiter::direct` creates a quanta
/// clock per session, which probes the CPU (CPUID) each time: ~10% of a gateway's CPU in a
/// login storm.
fn shared_clock() -> governor::clock::QuantaClock {
    static CLOCK: std::sync::OnceLock<governor::clock::QuantaClock> = std::sync::OnceLock::new();
    CLOCK.get_or_init(Default::default).clone()
}

/// A logged-in session: what its connection keeps while it is served.
struct Session {
    gw: Arc<Gateway>,
    user: UserId,
    door: Door,
    /// This session's own queue, for reports, pongs and errors of routed sends.
    reports: session::Handle,
    outbox: session::Outbox,
    /// Bounds this connection's sends being routed; made at its first send.
    sends: Option<Arc<Semaphore>>,
    rate: DefaultDirectRateLimiter,
    limited_in_a_row: u32,
    /// Users whose presence events this session receives.
    watching: HashSet<UserId>,
}

impl Session {
    /// Registers a new session of `identity`. `None` when the directory refused it (the
    /// client was told why and the connection closed).
    async fn start<R: Reader, W: Writer>(
        gw: Arc<Gateway>,
        identity: Identity,
        conn: &mut Conn<R, W>,
    ) -> Option<Self> {
        let (peer, door) = (conn.peer, conn.door);
        let user = identity.user;
        let id = SessionId::generate();
        let device = identity.device.as_ref().map(DeviceClass::as_str);
        let (handle, outbox) = session::channel(id.clone(), device, gw.limits.outbound_queue);
        // Insert before registering: a message routed here right after the registration
        // must find the session.
        gw.sessions.insert(user.clone(), handle.clone());
        let refused = match gw
            .registrar
            .register(&user, &id, device, false)
            .await
            .map(|r| r.sessions)
        {
            Ok(n) if gw.limits.max_sessions_per_user > 0 && n > gw.limits.max_sessions_per_user => {
                let message = format!("{n} sessions, limit {}", gw.limits.max_sessions_per_user);
                Some((
                    FrameError::new(ErrorCode::TooManySessions, message),
                    Close::TooManySessions,
                ))
            }
            Ok(_) => {
                handle.set_registered();
                None
            }
            Err(e) => {
                tracing::warn!(%user, session = %id, %peer, error = %e, "registration failed");
                Some((
                    FrameError::new(ErrorCode::Unavailable, format!("directory: {e}")),
                    Close::Unavailable,
                ))
            }
        };
        if let Some((error, reason)) = refused {
            gw.sessions.remove(&user, &id);
            // Even a failed registration may have been applied (its reply lost).
            gw.registrar.forget(&user, &id);
            send_error(&mut conn.writer, &error).await;
            say_bye(&mut conn.writer, reason).await;
            return None;
        }
        tracing::debug!(%user, session = %id, %peer, door = door.label(), "logged in");
        let rate = RateLimiter::direct_with_clock(gw.limits.rate, shared_clock());
        Some(Session {
            gw,
            user,
            door,
            reports: handle,
            outbox,
            sends: None,
            rate,
            limited_in_a_row: 0,
            watching: HashSet::new(),
        })
    }

    fn welcome(&self) -> Bytes {
        Frame::Welcome {
            user: self.user.as_str(),
            session: self.reports.id.as_str(),
            gateway: self.gw.id.as_str(),
        }
        .encode()
    }

    /// Ends the session: out of presence and the directory, then a goodbye to the client
    /// (the reason, or the end of the close the client started when `ended` is `None`).
    async fn end<R: Reader, W: Writer>(mut self, ended: Option<Close>, conn: &mut Conn<R, W>) {
        let gw = &self.gw;
        let id = &self.reports.id;
        for target in std::mem::take(&mut self.watching) {
            gw.presence.unwatch(&target, id);
        }
        gw.sessions.remove(&self.user, id);
        // The directory first: saying goodbye to a slow client can take a while. On
        // shutdown the gateway purges all its sessions in one request instead.
        if !gw.shutdown.is_cancelled() {
            gw.registrar.forget(&self.user, id);
        }
        if let Some(reason) = ended {
            if reason == Close::SlowConsumer {
                metrics::counter!(telemetry::GATEWAY_SLOW_CONSUMERS).increment(1);
            }
            tracing::info!(user = %self.user, session = %id, peer = %conn.peer,
                door = self.door.label(), reason = reason.reason(), "closing session");
            say_bye(&mut conn.writer, reason).await;
        } else {
            finish(&mut conn.writer).await;
        }
        tracing::debug!(user = %self.user, session = %id, "session ended");
    }

    /// Runs the session until the client leaves (`None`) or must be closed (`Some`).
    async fn serve<R: Reader, W: Writer>(&mut self, conn: &mut Conn<R, W>) -> Option<Close> {
        let (reader, writer) = (&mut conn.reader, &mut conn.writer);
        let tick_every = |idle: Duration| (idle / 3).max(Duration::from_millis(10));
        // A bare `Sleep` in this future, not an `Interval` (which boxes one).
        let tick = tokio::time::sleep(tick_every(self.gw.limits.idle_timeout));
        tokio::pin!(tick);
        let mut last_heard = Instant::now();
        loop {
            tokio::select! {
                biased;
                () = self.gw.shutdown.cancelled() => return Some(Close::Shutdown),
                ready = self.outbox.ready() => {
                    match ready {
                        Ok(()) => {}
                        Err(End::SlowConsumer) => return Some(Close::SlowConsumer),
                        Err(End::Kicked) => return Some(Close::Kicked),
                    }
                    // A client that stops reading blocks this write; its queue then fills
                    // and the session must still end.
                    tokio::select! {
                        written = write_queued(writer, &self.outbox) => written.ok()?,
                        () = self.outbox.slow() => return Some(Close::SlowConsumer),
                        () = self.gw.shutdown.cancelled() => return Some(Close::Shutdown),
                    }
                }
                inbound = reader.next() => {
                    last_heard = Instant::now();
                    match inbound {
                        // Boxed: handling a frame needs far more room than waiting.
                        Inbound::Text(text) => match Box::pin(self.on_frame(&text)).await {
                            Ok(()) => {}
                            Err(Some(reason)) => return Some(reason),
                            Err(None) => {}
                        },
                        Inbound::TooLarge(n) => self.error(too_large(n, self.gw.limits.max_frame_bytes)),
                        Inbound::Other => {}
                        Inbound::Closed => return None,
                    }
                }
                () = &mut tick => {
                    let idle = self.gw.limits.idle_timeout;
                    tick.as_mut().reset(tokio::time::Instant::now() + tick_every(idle));
                    let silent = last_heard.elapsed();
                    if silent >= idle {
                        return Some(Close::Idle);
                    }
                    if silent >= idle / 3 {
                        writer.ping().await.ok()?;
                    }
                }
            }
        }
    }

    /// Queues an error frame on this session.
    fn error(&self, error: FrameError) {
        telemetry::error(error.code);
        self.reports.push(Frame::from(&error).encode());
    }

    /// Handles one frame. Sends and group operations run in their own task (at most
    /// `sends_in_flight` at once; more wait, which slows reading this connection only).
    /// `Err(Some(reason))` closes the connection; errors for the client are queued here.
    async fn on_frame(&mut self, text: &str) -> Result<(), Option<Close>> {
        let gw = Arc::clone(&self.gw);
        let limits = &gw.limits;
        if text.len() > limits.max_frame_bytes {
            self.error(too_large(text.len(), limits.max_frame_bytes));
            return Ok(());
        }
        let request = match parse(text) {
            Ok(request) => request,
            Err(e) => {
                self.error(e);
                return Ok(());
            }
        };
        let user = self.user.to_string();
        match request {
            Request::Login { .. } => {
                self.error(FrameError::new(
                    ErrorCode::AlreadyLoggedIn,
                    "this connection is logged in",
                ));
            }
            Request::Ping { id } => {
                self.reports
                    .push(Frame::Pong { id: id.as_deref() }.encode());
            }
            Request::Send { to, id, body } => {
                self.rate_limit(&id)?;
                let door = self.door.label();
                match ops::Send::check(limits, door, Some(user), to, id, body) {
                    Ok(send) => {
                        self.spawn(move |gw| async move {
                            let report = send.run(&gw.router).await;
                            Ok(Frame::Report { report: &report }.encode())
                        })
                        .await
                    }
                    Err(e) => self.error(e),
                }
            }
            Request::GroupSend { group, id, body } => {
                self.rate_limit(&id)?;
                let door = self.door.label();
                match ops::GroupSend::check(limits, door, Some(user), &group, id, body) {
                    Ok(send) => {
                        let by = self.user.clone();
                        self.spawn(move |gw| async move {
                            let report = send.run(&gw.router, Some(&by)).await?;
                            Ok(Frame::Report { report: &report }.encode())
                        })
                        .await
                    }
                    Err(e) => self.error(e),
                }
            }
            Request::Group {
                endpoint,
                id,
                mut request,
            } => {
                self.rate_limit(&id)?;
                request.by = Some(user);
                self.spawn(move |gw| async move {
                    answer(id, groups::call(&gw, endpoint, &request).await)
                })
                .await;
            }
            Request::Presence { id, users } => {
                let request = PresenceRequest {
                    users,
                    by: Some(user),
                };
                self.spawn(move |gw| async move {
                    let reply =
                        presence::query(&gw.client, &gw.subjects, gw.request_timeout, &request)
                            .await;
                    answer(
                        id,
                        reply.map(|r| serde_json::to_value(&r).expect("replies are serializable")),
                    )
                })
                .await;
            }
            Request::PresenceSubscribe {
                id,
                users,
                subscribe,
            } => {
                self.rate_limit(&id)?;
                // Boxed: rare, and four times the room of the rest of this future, which
                // is allocated for every frame.
                let subscribing = Box::pin(self.presence_subscribe(users, subscribe, &id));
                if let Err(e) = subscribing.await {
                    self.error(e.with_id(id));
                }
            }
            Request::GroupList { id } => {
                let request = ListRequest {
                    user: user.clone(),
                    by: Some(user),
                };
                self.spawn(move |gw| async move { answer(id, groups::list(&gw, &request).await) })
                    .await;
            }
        }
        Ok(())
    }

    /// Starts or stops this session's presence subscriptions; answers with a `result`:
    /// the current presence of the users now watched, and those the policy refused.
    async fn presence_subscribe(
        &mut self,
        users: Vec<String>,
        subscribe: bool,
        id: &Option<String>,
    ) -> Result<(), FrameError> {
        let mut targets = Vec::with_capacity(users.len());
        for raw in &users {
            targets.push(
                UserId::new(raw)
                    .map_err(|e| FrameError::new(ErrorCode::BadId, format!("user: {e}")))?,
            );
        }
        let me = &self.reports.id;
        if !subscribe {
            for target in &targets {
                self.gw.presence.unwatch(target, me);
                self.watching.remove(target);
            }
            let result = serde_json::json!({ "unsubscribed": users });
            self.reports.push(
                Frame::Result {
                    id: id.as_deref(),
                    result: &result,
                }
                .encode(),
            );
            return Ok(());
        }
        let new: HashSet<&UserId> = targets
            .iter()
            .filter(|t| !self.watching.contains(*t))
            .collect();
        if self.watching.len() + new.len() > presence::MAX_WATCHED {
            let message = format!("a session watches at most {} users", presence::MAX_WATCHED);
            return Err(FrameError::new(ErrorCode::TooManyReceivers, message));
        }
        let request = PresenceRequest {
            users,
            by: Some(self.user.to_string()),
        };
        let gw = &self.gw;
        let reply = presence::query(&gw.client, &gw.subjects, gw.request_timeout, &request).await?;
        for target in targets
            .iter()
            .filter(|t| reply.users.contains_key(t.as_str()))
        {
            gw.presence
                .watch(target, self.reports.clone())
                .await
                .map_err(|e| {
                    FrameError::new(ErrorCode::Unavailable, format!("subscribing: {e:#}"))
                })?;
            self.watching.insert(target.clone());
        }
        let result = serde_json::to_value(&reply).expect("replies are serializable");
        self.reports.push(
            Frame::Result {
                id: id.as_deref(),
                result: &result,
            }
            .encode(),
        );
        Ok(())
    }

    /// Takes a token from the connection's bucket; refuses (and at last closes a flood).
    fn rate_limit(&mut self, id: &Option<String>) -> Result<(), Option<Close>> {
        if self.rate.check().is_ok() {
            self.limited_in_a_row = 0;
            return Ok(());
        }
        self.limited_in_a_row += 1;
        if self.limited_in_a_row >= self.gw.limits.flood_after {
            return Err(Some(Close::Flood));
        }
        let mut e = FrameError::new(
            ErrorCode::RateLimited,
            "too many requests; this one was dropped",
        );
        e.id = id.clone();
        self.error(e);
        Err(None)
    }

    /// Runs `work` in its own task (bounded by `sends_in_flight`) and queues the frame it
    /// makes, or its error, on this session.
    async fn spawn<F, Fut>(&mut self, work: F)
    where
        F: FnOnce(Arc<Gateway>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Bytes, FrameError>> + Send + 'static,
    {
        // This connection's share, then the gateway's: when the gateway is saturated it
        // stops reading its clients (TCP pushes back) instead of piling up routes that
        // would time out and be retried (docs/PERFORMANCE.md, overload).
        let in_flight = self.gw.limits.sends_in_flight;
        let permit = self
            .sends
            .get_or_insert_with(|| Arc::new(Semaphore::new(in_flight)))
            .clone()
            .acquire_owned()
            .await
            .expect("the send semaphore is never closed");
        let routing = self
            .gw
            .routing
            .clone()
            .acquire_owned()
            .await
            .expect("the routing semaphore is never closed");
        let reports = self.reports.clone();
        // Boxed: a routing future is several KiB, and spawning moves a task's future more
        // than once (3% of a gateway's instructions were those copies).
        let work = Box::pin(work(self.gw.clone()));
        self.gw.tracker.spawn(async move {
            let frame = match work.await {
                Ok(frame) => frame,
                Err(e) => {
                    telemetry::error(e.code);
                    Frame::from(&e).encode()
                }
            };
            reports.push(frame);
            drop((permit, routing));
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records what the session loop asks of a transport.
    #[derive(Default)]
    struct Recorder {
        fed: Vec<Bytes>,
        flushes: usize,
    }

    impl Writer for Recorder {
        async fn feed(&mut self, frame: Bytes) -> anyhow::Result<()> {
            self.fed.push(frame);
            Ok(())
        }
        async fn flush(&mut self) -> anyhow::Result<()> {
            self.flushes += 1;
            Ok(())
        }
        async fn ping(&mut self) -> anyhow::Result<()> {
            Ok(())
        }
        async fn close(&mut self, _reason: Close) {}
        async fn finish(&mut self) {}
    }

    #[tokio::test]
    async fn queued_frames_leave_together_with_one_flush_per_batch() {
        let (handle, outbox) = session::channel(SessionId::generate(), None, 1024);
        for i in 0..3 {
            assert!(handle.push(Bytes::from(format!("f{i}"))));
        }
        let mut writer = Recorder::default();
        write_queued(&mut writer, &outbox).await.unwrap();
        assert_eq!(writer.fed, ["f0", "f1", "f2"]);
        assert_eq!(writer.flushes, 1);

        // A long burst is cut into batches, so reading the client goes on meanwhile.
        for i in 0..WRITE_BATCH + 1 {
            assert!(handle.push(Bytes::from(format!("g{i}"))));
        }
        let mut writer = Recorder::default();
        write_queued(&mut writer, &outbox).await.unwrap();
        assert_eq!((writer.fed.len(), writer.flushes), (WRITE_BATCH, 1));
        write_queued(&mut writer, &outbox).await.unwrap();
        assert_eq!((writer.fed.len(), writer.flushes), (WRITE_BATCH + 1, 2));
        assert_eq!(writer.fed.last().unwrap(), &format!("g{WRITE_BATCH}"));
    }
}
