//! Getting a connection in: a valid login within the login timeout (unless the transport
//! authenticated the client already), then the session registered in the directory, or
//! refused and the connection closed.

use std::sync::Arc;

use super::live::Live;
use super::Context;
use super::{finish, say_bye, send_error, too_large, Close, Conn, Inbound, Reader, Writer};
use crate::gateway::auth::Identity;
use crate::gateway::session;
use crate::ident::{DeviceClass, SessionId};
use crate::protocol::client::{parse, Frame, FrameError, Request};
use crate::protocol::code::ErrorCode;

/// Waits for a valid login within the login timeout; when there is none, tells the client
/// why (or completes its close) and gives `None`.
pub(super) async fn log_in<T: Reader + Writer>(
    cx: &Context,
    conn: &mut Conn<T>,
) -> Option<Identity> {
    let io = &mut conn.io;
    let login = tokio::select! {
        () = cx.shutdown.cancelled() => Err(Some(Close::Shutdown)),
        login = tokio::time::timeout(cx.ops.limits.login_timeout, login(cx, io)) => match login {
            Ok(result) => result,
            Err(_) => {
                send_error(io, &FrameError::new(ErrorCode::NotLoggedIn, "no login in time")).await;
                Err(Some(Close::LoginTimeout))
            }
        },
    };
    match login {
        Ok(identity) => Some(identity),
        Err(Some(reason)) => {
            say_bye(io, reason).await;
            None
        }
        Err(None) => {
            finish(io).await;
            None
        }
    }
}

/// Reads frames until a valid login. `Err(Some(reason))`: close with that reason;
/// `Err(None)`: the client left.
async fn login<T: Reader + Writer>(cx: &Context, io: &mut T) -> Result<Identity, Option<Close>> {
    loop {
        let text = match io.next().await {
            Inbound::Text(text) => text,
            Inbound::TooLarge(n) => {
                send_error(io, &too_large(n, cx.ops.limits.max_frame_bytes)).await;
                continue;
            }
            Inbound::Other => continue,
            Inbound::Ping => match io.flush().await {
                Ok(()) => continue,
                Err(_) => return Err(None),
            },
            Inbound::Closed => return Err(None),
        };
        match parse(&text) {
            Ok(Request::Login {
                user,
                token,
                device,
            }) => {
                match cx
                    .auth
                    .login(user.as_deref(), token.as_deref(), device.as_deref())
                {
                    Ok(identity) => return Ok(identity),
                    Err(e) if e.code == ErrorCode::Unauthorized => {
                        tracing::info!(error = %e.message, "login refused");
                        send_error(io, &e).await;
                        return Err(Some(Close::Unauthorized));
                    }
                    Err(e) => send_error(io, &e).await,
                }
            }
            Ok(Request::Ping { id }) => {
                let _ = io.send(Frame::Pong { id: id.as_deref() }.encode()).await;
            }
            Ok(other) => {
                let e = FrameError::new(ErrorCode::NotLoggedIn, "log in first");
                send_error(io, &e.with_id(other.id().map(str::to_string))).await;
            }
            Err(e) => send_error(io, &e).await,
        }
    }
}

/// Registers a new session of `identity`. `None` when the directory refused it (the
/// client was told why and the connection closed).
pub(super) async fn start<T: Reader + Writer>(
    cx: Arc<Context>,
    identity: Identity,
    conn: &mut Conn<T>,
) -> Option<Live> {
    let (peer, door) = (conn.peer, conn.door);
    let user = identity.user;
    let id = SessionId::generate();
    let device = identity.device.as_ref().map(DeviceClass::as_str);
    let (handle, outbox) = session::channel(id.clone(), device, cx.ops.limits.outbound_queue);
    if let Some(direct) = conn.io.direct() {
        outbox.share_writes(direct);
    }
    // Insert before registering: a message routed here right after the registration
    // must find the session.
    cx.sessions.insert(user.clone(), handle.clone());
    let refused = match cx
        .registrar
        .register(&user, &id, device, false)
        .await
        .map(|r| r.sessions)
    {
        Ok(n)
            if cx.ops.limits.max_sessions_per_user > 0
                && n > cx.ops.limits.max_sessions_per_user =>
        {
            let message = format!(
                "{n} sessions, limit {}",
                cx.ops.limits.max_sessions_per_user
            );
            Some((
                FrameError::new(ErrorCode::TooManySessions, message),
                Close::TooManySessions,
            ))
        }
        Ok(_) => {
            handle.set_registered();
            // Stored messages follow the welcome (the loop writes queued frames after it).
            let inbox = cx.ops.inbox.clone();
            cx.tracker.spawn(inbox.drain(user.clone(), handle.clone()));
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
        cx.sessions.remove(&user, &id);
        // Even a failed registration may have been applied (its reply lost).
        cx.registrar.forget(&user, &id);
        send_error(&mut conn.io, &error).await;
        say_bye(&mut conn.io, reason).await;
        return None;
    }
    tracing::debug!(%user, session = %id, %peer, door = door.label(), "logged in");
    Some(Live::new(cx, user, door, handle, outbox))
}
