//! One client connection, whatever the transport: log in, then read frames, route sends,
//! and write queued frames until the client leaves, is too slow, or the gateway stops.
//!
//! A transport gives a [`Reader`] of inbound text frames and a [`Writer`]; everything else
//! (the protocol, limits, registration) lives here once.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Semaphore;
use tracing::Instrument as _;

use super::route::Message;
use super::session;
use super::Gateway;
use crate::ident::{MessageId, SessionId, UserId};
use crate::protocol::client::{parse, Frame, FrameError, Request};
use crate::protocol::code::ErrorCode;

/// What a transport read.
#[derive(Debug)]
pub enum Inbound {
    /// One text frame (a JSON object).
    Text(String),
    /// A frame larger than the transport accepts.
    TooLarge(usize),
    /// Anything else (binary, ping/pong): not a protocol frame.
    Other,
    /// The client closed or the transport failed.
    Closed,
}

pub trait Reader: Send {
    fn next(&mut self) -> impl Future<Output = Inbound> + Send;
}

pub trait Writer: Send {
    /// Writes one frame; an error means the connection is gone.
    fn send(&mut self, frame: Bytes) -> impl Future<Output = anyhow::Result<()>> + Send;
    /// Ends the connection with a reason (a WebSocket close frame, or just EOF).
    fn close(&mut self, reason: Close) -> impl Future<Output = ()> + Send;
}

/// Why the gateway closes a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// The gateway is stopping (WebSocket 1001 "going away").
    Shutdown,
    /// The client did not read its frames fast enough (1008).
    SlowConsumer,
    /// No login in time, or login refused (1008).
    Login,
    /// The directory could not register the session (1011).
    Unavailable,
}

impl Close {
    pub fn reason(self) -> &'static str {
        match self {
            Close::Shutdown => "shutdown",
            Close::SlowConsumer => "slow_consumer",
            Close::Login => "login",
            Close::Unavailable => "unavailable",
        }
    }
}

/// Serves one connection to the end.
pub async fn serve<R: Reader, W: Writer>(
    gw: Arc<Gateway>,
    mut reader: R,
    mut writer: W,
    peer: SocketAddr,
) {
    let login = tokio::select! {
        () = gw.shutdown.cancelled() => None,
        login = tokio::time::timeout(gw.limits.login_timeout, login(&mut reader, &mut writer)) => match login {
            Ok(user) => user,
            Err(_) => {
                send_error(&mut writer, &FrameError::new(ErrorCode::NotLoggedIn, "no login in time")).await;
                None
            }
        },
    };
    let Some(user) = login else {
        writer.close(Close::Login).await;
        return;
    };
    let session = SessionId::generate();
    let span = tracing::info_span!("session", user = %user, session = %session, %peer);
    run_session(gw, user, session, reader, writer)
        .instrument(span)
        .await;
}

/// Reads frames until a valid login; None if the client left.
async fn login<R: Reader, W: Writer>(reader: &mut R, writer: &mut W) -> Option<UserId> {
    loop {
        let text = match reader.next().await {
            Inbound::Text(text) => text,
            Inbound::TooLarge(n) => {
                send_error(
                    writer,
                    &FrameError::new(ErrorCode::TooLarge, format!("frame of {n} bytes")),
                )
                .await;
                continue;
            }
            Inbound::Other => continue,
            Inbound::Closed => return None,
        };
        match parse(&text) {
            Ok(Request::Login { user }) => match UserId::new(&user) {
                Ok(user) => return Some(user),
                Err(e) => {
                    send_error(
                        writer,
                        &FrameError::new(ErrorCode::BadId, format!("user: {e}")),
                    )
                    .await
                }
            },
            Ok(Request::Ping { id }) => {
                let _ = writer
                    .send(Frame::Pong { id: id.as_deref() }.encode())
                    .await;
            }
            Ok(Request::Send { id, .. }) => {
                let mut e = FrameError::new(ErrorCode::NotLoggedIn, "log in first");
                e.id = id;
                send_error(writer, &e).await;
            }
            Err(e) => send_error(writer, &e).await,
        }
    }
}

async fn send_error<W: Writer>(writer: &mut W, error: &FrameError) {
    let _ = writer.send(Frame::from(error).encode()).await;
}

async fn run_session<R: Reader, W: Writer>(
    gw: Arc<Gateway>,
    user: UserId,
    session: SessionId,
    mut reader: R,
    mut writer: W,
) {
    let (handle, mut outbox) = session::channel(session.clone(), gw.limits.outbound_queue);
    let reports = handle.clone();
    // Insert before registering: a message routed here right after the registration
    // must find the session.
    gw.sessions.insert(user.clone(), handle);
    if let Err(e) = gw.registrar.register(&user, &session).await {
        tracing::warn!(error = %e, "registration failed");
        gw.sessions.remove(&user, &session);
        send_error(
            &mut writer,
            &FrameError::new(ErrorCode::Unavailable, format!("directory: {e}")),
        )
        .await;
        writer.close(Close::Unavailable).await;
        return;
    }
    tracing::debug!("logged in");
    let welcome = Frame::Welcome {
        user: user.as_str(),
        session: session.as_str(),
        gateway: gw.id.as_str(),
    };
    let mut ended = writer.send(welcome.encode()).await.err().map(|_| None);
    let sends = Arc::new(Semaphore::new(gw.limits.sends_in_flight));

    while ended.is_none() {
        tokio::select! {
            biased;
            () = gw.shutdown.cancelled() => ended = Some(Some(Close::Shutdown)),
            () = outbox.slow.cancelled() => ended = Some(Some(Close::SlowConsumer)),
            frame = outbox.rx.recv() => match frame {
                Some(frame) => {
                    if writer.send(frame).await.is_err() {
                        ended = Some(None);
                    }
                }
                None => ended = Some(None),
            },
            inbound = reader.next() => match inbound {
                Inbound::Text(text) => {
                    if let Err(e) = on_frame(&gw, &user, &text, &reports, &sends).await {
                        send_error(&mut writer, &e).await;
                    }
                }
                Inbound::TooLarge(n) => {
                    let e = FrameError::new(ErrorCode::TooLarge, format!("frame of {n} bytes, limit {}", gw.limits.max_frame_bytes));
                    send_error(&mut writer, &e).await;
                }
                Inbound::Other => {}
                Inbound::Closed => ended = Some(None),
            },
        }
    }
    gw.sessions.remove(&user, &session);
    if let Some(Some(reason)) = ended {
        let bye = Frame::Bye {
            reason: reason.reason(),
        }
        .encode();
        let _ = tokio::time::timeout(Duration::from_secs(1), writer.send(bye)).await;
        writer.close(reason).await;
    }
    // On shutdown the gateway purges all its sessions in one request instead.
    if !gw.shutdown.is_cancelled() {
        if let Err(e) = gw.registrar.unregister(&user, &session).await {
            tracing::warn!(error = %e, "unregister failed; the center will purge on eviction");
        }
    }
    tracing::debug!("session ended");
}

/// Handles one frame of a logged-in session. Sends are routed in their own task (at most
/// `sends_in_flight` at once; more wait, which slows reading this connection only).
async fn on_frame(
    gw: &Arc<Gateway>,
    user: &UserId,
    text: &str,
    reports: &session::Handle,
    sends: &Arc<Semaphore>,
) -> Result<(), FrameError> {
    if text.len() > gw.limits.max_frame_bytes {
        let message = format!(
            "frame of {} bytes, limit {}",
            text.len(),
            gw.limits.max_frame_bytes
        );
        return Err(FrameError::new(ErrorCode::TooLarge, message));
    }
    match parse(text)? {
        Request::Login { .. } => Err(FrameError::new(
            ErrorCode::AlreadyLoggedIn,
            "this connection is logged in",
        )),
        Request::Ping { id } => {
            reports.push(Frame::Pong { id: id.as_deref() }.encode());
            Ok(())
        }
        Request::Send { to, id, body } => {
            let message = gw.limits.message(Some(user.to_string()), to, id, body)?;
            let permit = sends
                .clone()
                .acquire_owned()
                .await
                .expect("the send semaphore is never closed");
            let (gw, reports) = (gw.clone(), reports.clone());
            gw.tracker.clone().spawn(async move {
                let report = gw.router.route(&message).await;
                reports.push(Frame::Report { report: &report }.encode());
                drop(permit);
            });
            Ok(())
        }
    }
}

/// Limits every door enforces.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_receivers: usize,
    pub max_frame_bytes: usize,
    pub outbound_queue: usize,
    pub login_timeout: Duration,
    pub sends_in_flight: usize,
}

impl Limits {
    /// Checks a send from any door and turns it into a routable message.
    pub fn message(
        &self,
        from: Option<String>,
        to: Vec<String>,
        id: Option<String>,
        body: &serde_json::value::RawValue,
    ) -> Result<Message, FrameError> {
        let with_id = |code, message: String| FrameError {
            code,
            message,
            id: id.clone(),
        };
        if to.is_empty() {
            return Err(with_id(
                ErrorCode::BadFrame,
                "`to` lists no receiver".into(),
            ));
        }
        if to.len() > self.max_receivers {
            return Err(with_id(
                ErrorCode::TooManyReceivers,
                format!("{} receivers, limit {}", to.len(), self.max_receivers),
            ));
        }
        if body.get().len() > self.max_frame_bytes {
            return Err(with_id(
                ErrorCode::TooLarge,
                format!(
                    "body of {} bytes, limit {}",
                    body.get().len(),
                    self.max_frame_bytes
                ),
            ));
        }
        let message_id = match &id {
            Some(raw) => {
                MessageId::new(raw).map_err(|e| with_id(ErrorCode::BadId, format!("id: {e}")))?
            }
            None => MessageId::generate(),
        };
        Ok(Message {
            id: message_id,
            from,
            to,
            body: body.to_owned(),
        })
    }
}
