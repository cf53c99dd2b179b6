//! The WebSocket door: `GET /ws` upgrades to a session speaking the JSON protocol in text
//! messages. A client may authenticate on the upgrade (`Authorization: Bearer <jwt>`) or
//! with a `login` frame.
//! - this module: the opening handshake (RFC 6455 §4.2) on the HTTP listener;
//! - [`socket`]: the upgraded connection as `conn::{Reader, Writer}`;
//! - [`frame`]: frames read and written.

mod frame;
mod socket;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{CONNECTION, ORIGIN, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY};
use axum::http::header::{SEC_WEBSOCKET_VERSION, UPGRADE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use hyper::upgrade::OnUpgrade;

use super::http::{bearer, error_response};
use super::{Doors, TOO_MANY_PENDING};
use crate::gateway::auth::Identity;
use crate::gateway::conn::{self, Conn, Door};
use crate::protocol::code::ErrorCode;
use socket::{Socket, Stream};

/// The header that declares the device class when the token comes with the upgrade.
pub(crate) const DEVICE_HEADER: &str = "x-mrc-device";

pub(crate) fn routes() -> axum::Router<Arc<Doors>> {
    axum::Router::new().route("/ws", get(upgrade))
}

async fn upgrade(
    State(doors): State<Arc<Doors>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut request: Request,
) -> Response {
    if doors.conn.shutdown.is_cancelled() {
        return error_response(ErrorCode::ShuttingDown, "the gateway is stopping");
    }
    let headers = request.headers();
    let accept = match accept_key(headers) {
        Ok(accept) => accept,
        Err(why) => return error_response(ErrorCode::BadFrame, why),
    };
    if !doors.origins.allows(headers.get(ORIGIN)) {
        let message = "pages of this origin may not connect (--allowed-origins)";
        return error_response(ErrorCode::Forbidden, message);
    }
    let identity = match bearer(headers) {
        Some(token) => {
            let device = headers.get(DEVICE_HEADER).and_then(|d| d.to_str().ok());
            match doors.conn.auth.login(None, Some(token), device) {
                Ok(identity) => Some(identity),
                Err(e) => return error_response(e.code, &e.message),
            }
        }
        None => None,
    };
    let Some(upgrading) = request.extensions_mut().remove::<OnUpgrade>() else {
        return error_response(ErrorCode::BadFrame, "this connection cannot be upgraded");
    };
    let Ok(permit) = doors.connections.clone().try_acquire_owned() else {
        return error_response(ErrorCode::Unavailable, "connection limit reached");
    };
    let pending = match &identity {
        Some(_) => None,
        None => match doors.logging_in.clone().try_acquire_owned() {
            Ok(pending) => Some(pending),
            Err(_) => return error_response(ErrorCode::Unavailable, TOO_MANY_PENDING),
        },
    };
    let admitted = Admitted {
        peer,
        permit,
        pending,
        identity,
    };
    doors
        .conn
        .tracker
        .spawn(upgraded(doors.clone(), upgrading, admitted));
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let headers = response.headers_mut();
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(SEC_WEBSOCKET_ACCEPT, accept);
    response
}

/// What the upgrade request won: the connection's places and who it is, if known.
struct Admitted {
    peer: SocketAddr,
    permit: tokio::sync::OwnedSemaphorePermit,
    pending: Option<tokio::sync::OwnedSemaphorePermit>,
    identity: Option<Identity>,
}

/// Waits for hyper to hand the connection over, then serves it in a task of its own, the
/// size of `conn::serve`'s future: this one keeps the upgrade's state (docs/PERFORMANCE.md).
async fn upgraded(doors: Arc<Doors>, upgrading: OnUpgrade, admitted: Admitted) {
    let upgraded = match upgrading.await {
        Ok(upgraded) => upgraded,
        Err(e) => {
            tracing::debug!(peer = %admitted.peer, error = %e, "websocket upgrade failed");
            return;
        }
    };
    // The transport refuses messages far beyond the protocol limit; those between the two
    // get a `too_large` error and the connection lives on.
    let limit = doors
        .conn
        .ops
        .limits
        .max_frame_bytes
        .saturating_mul(4)
        .max(4096);
    let (stream, early) = Stream::of(upgraded);
    let conn = Conn {
        io: Socket::new(stream, early, limit),
        peer: admitted.peer,
        door: Door::Ws,
        permit: admitted.permit,
        pending: admitted.pending,
    };
    let cx = doors.conn.clone();
    doors
        .conn
        .tracker
        .spawn(conn::serve(cx, conn, admitted.identity));
}

/// The `Sec-WebSocket-Accept` answering a valid upgrade request, or why it is not one.
fn accept_key(headers: &HeaderMap) -> Result<HeaderValue, &'static str> {
    let has = |name, token: &str| {
        headers.get_all(name).iter().any(|value| {
            value.to_str().is_ok_and(|v| {
                v.split(',')
                    .any(|part| part.trim().eq_ignore_ascii_case(token))
            })
        })
    };
    if !has(CONNECTION, "upgrade") || !has(UPGRADE, "websocket") {
        return Err("not a WebSocket upgrade (Connection: upgrade, Upgrade: websocket)");
    }
    if headers
        .get(SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        return Err("Sec-WebSocket-Version must be 13");
    }
    let key = headers
        .get(SEC_WEBSOCKET_KEY)
        .ok_or("Sec-WebSocket-Key is missing")?;
    let mut sha1 = sha1_smol::Sha1::new();
    sha1.update(key.as_bytes());
    sha1.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let accept = base64::engine::general_purpose::STANDARD.encode(sha1.digest().bytes());
    Ok(HeaderValue::from_str(&accept).expect("base64 is a valid header value"))
}

#[cfg(test)]
mod tests;
