//! The HTTP API, on the same listener as the WebSocket door:
//!
//! | route | auth | what |
//! |---|---|---|
//! | `POST /v1/messages` | API key, or a token with scope `mrc:send` (sends as its subject) | send; the per-receiver report |
//! | `GET /v1/users/{id}` | API key or any valid token | online? sessions per gateway |
//! | `POST /v1/broadcast` `{"body","id"?,"from"?,"gateways"?}` | API key | to everyone online |
//! | `POST /v1/presence` `{"users":[...]}` | API key, or a token (presence policy applies) | online, sessions, since, per user |
//! | `/v1/groups/...` | API key or token | groups: see `listener::groups` |
//!
//! Errors are JSON `{"error":{"code","message"}}` with the HTTP status that fits the code.
//! `/healthz`, `/readyz` and `/metrics`, and the gate in front of these routes while the
//! gateway is not ready, are `listener::front`'s.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use bytes::Bytes;

use crate::connection::{request, RequestFailure};
use crate::gateway::auth::Identity;
use crate::gateway::Gateway;
use crate::ident::UserId;
use crate::protocol::client::{FrameError, PresenceBody, UserStatus};
use crate::protocol::code::ErrorCode;
use crate::protocol::nats::{
    BroadcastRequest, ErrorReply, LookupReply, LookupRequest, PresenceRequest, SendRequest,
};
use crate::subject::DIR_LOOKUP;
use crate::telemetry;

pub fn routes(gw: &Gateway) -> axum::Router<Arc<Gateway>> {
    axum::Router::new()
        .route("/v1/messages", post(send))
        .route("/v1/users/{id}", get(user))
        .route("/v1/presence", post(presence))
        .route("/v1/broadcast", post(broadcast))
        .merge(super::groups::routes())
        // Bodies a little over the limit still get a JSON `too_large`; far over, axum's 413.
        .layer(DefaultBodyLimit::max(
            gw.limits.max_frame_bytes.saturating_mul(2),
        ))
}

/// The status that fits an error code.
pub fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::Unauthorized | ErrorCode::NotLoggedIn => StatusCode::UNAUTHORIZED,
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::AlreadyLoggedIn | ErrorCode::TooManySessions | ErrorCode::GroupExists => {
            StatusCode::CONFLICT
        }
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::Unavailable | ErrorCode::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::BadJson
        | ErrorCode::BadFrame
        | ErrorCode::UnknownOp
        | ErrorCode::BadId
        | ErrorCode::BadBody
        | ErrorCode::TooManyReceivers => StatusCode::BAD_REQUEST,
    }
}

/// A JSON error response with the status that fits `code`.
pub fn error_response(code: ErrorCode, message: &str) -> Response {
    telemetry::error(code);
    let mut response = (status_of(code), Json(ErrorReply::new(code, message))).into_response();
    if code == ErrorCode::Unauthorized {
        response
            .headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// Who is calling the API.
pub(super) enum Caller {
    /// Holder of the API key: a backend, may send as anyone.
    Backend,
    User(Identity),
}

pub(super) fn caller(gw: &Gateway, headers: &HeaderMap) -> Result<Caller, FrameError> {
    let Some(token) = bearer(headers) else {
        let message = "send `Authorization: Bearer <api key or token>`";
        return Err(FrameError::new(ErrorCode::Unauthorized, message));
    };
    if gw.auth.is_api_key(token) {
        return Ok(Caller::Backend);
    }
    gw.auth.verify(token).map(Caller::User)
}

/// Who a message from `caller` is from, and the user whose rights apply (`None`: the
/// API key, which sends as any `from`). A token needs the `mrc:send` scope and sends only
/// as its subject.
pub(super) fn sender(
    caller: Caller,
    from: Option<String>,
) -> Result<(Option<String>, Option<UserId>), FrameError> {
    match caller {
        Caller::Backend => Ok((from, None)),
        Caller::User(identity) => {
            if !identity.may_send_http {
                return Err(FrameError::new(
                    ErrorCode::Forbidden,
                    "the token lacks the `mrc:send` scope",
                ));
            }
            if from.is_some_and(|from| from != identity.user.as_str()) {
                return Err(FrameError::new(
                    ErrorCode::Forbidden,
                    "a client can only send as itself",
                ));
            }
            Ok((Some(identity.user.to_string()), Some(identity.user)))
        }
    }
}

/// `POST /v1/messages` with the `mrc.send` body.
async fn send(State(gw): State<Arc<Gateway>>, headers: HeaderMap, body: Bytes) -> Response {
    let caller = match caller(&gw, &headers) {
        Ok(caller) => caller,
        Err(e) => return error_response(e.code, &e.message),
    };
    if body.len() > gw.limits.max_frame_bytes {
        let message = format!(
            "request of {} bytes, limit {}",
            body.len(),
            gw.limits.max_frame_bytes
        );
        return error_response(ErrorCode::TooLarge, &message);
    }
    let request: SendRequest<'_> = match crate::protocol::decode(&body) {
        Ok(request) => request,
        Err(e) => return error_response(e.code, &e.message),
    };
    let from = match sender(caller, request.from) {
        Ok((from, _)) => from,
        Err(e) => return error_response(e.code, &e.message),
    };
    let message = match gw
        .limits
        .message(from, request.to, request.id, request.body)
    {
        Ok(message) => message,
        Err(e) => return error_response(e.code, &e.message),
    };
    telemetry::message_in("http");
    Json(gw.router.route(&message).await).into_response()
}

/// `GET /v1/users/{id}`: asks the directory (never the cache).
async fn user(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(e) = caller(&gw, &headers) {
        return error_response(e.code, &e.message);
    }
    let user = match gw.auth.user(&id) {
        Ok(user) => user,
        Err(e) => return error_response(e.code, &e.message),
    };
    let reply: LookupReply = match lookup(&gw, vec![user.to_string()]).await {
        Ok(reply) => reply,
        Err(e) => return error_response(ErrorCode::Unavailable, &format!("directory: {e}")),
    };
    let locations = reply.users.get(user.as_str()).cloned().unwrap_or_default();
    let mut gateways = std::collections::BTreeMap::new();
    for location in &locations {
        *gateways.entry(location.gateway.clone()).or_insert(0) += 1;
    }
    Json(UserStatus {
        user: user.to_string(),
        online: !locations.is_empty(),
        sessions: locations.len(),
        gateways,
    })
    .into_response()
}

/// `POST /v1/broadcast`: backends only (the API key).
async fn broadcast(State(gw): State<Arc<Gateway>>, headers: HeaderMap, body: Bytes) -> Response {
    match caller(&gw, &headers) {
        Ok(Caller::Backend) => {}
        Ok(Caller::User(_)) => {
            return error_response(ErrorCode::Forbidden, "broadcasts need the API key")
        }
        Err(e) => return error_response(e.code, &e.message),
    }
    let request: BroadcastRequest<'_> = match crate::protocol::decode(&body) {
        Ok(request) => request,
        Err(e) => return error_response(e.code, &e.message),
    };
    let message = match gw
        .limits
        .group_message(request.from, request.id, request.body)
    {
        Ok(message) => message,
        Err(e) => return error_response(e.code, &e.message),
    };
    telemetry::message_in("http");
    match crate::gateway::broadcast::fan_out(&gw, &message, request.gateways.as_deref()).await {
        Ok(report) => Json(report).into_response(),
        Err(e) => error_response(e.code, &e.message),
    }
}

/// `POST /v1/presence`: the status of many users at once.
async fn presence(State(gw): State<Arc<Gateway>>, headers: HeaderMap, body: Bytes) -> Response {
    let by = match caller(&gw, &headers) {
        Ok(Caller::Backend) => None,
        Ok(Caller::User(identity)) => Some(identity.user.to_string()),
        Err(e) => return error_response(e.code, &e.message),
    };
    let users = match crate::protocol::decode::<PresenceBody>(&body) {
        Ok(body) => body.users,
        Err(e) => return error_response(e.code, &e.message),
    };
    let request = PresenceRequest { users, by };
    match crate::gateway::presence::query(&gw.client, &gw.subjects, gw.request_timeout, &request)
        .await
    {
        Ok(reply) => Json(reply).into_response(),
        Err(e) => error_response(e.code, &e.message),
    }
}

pub(super) async fn lookup(
    gw: &Gateway,
    users: Vec<String>,
) -> Result<LookupReply, RequestFailure> {
    let payload = crate::protocol::nats::encode(&LookupRequest { users });
    request(
        &gw.client,
        gw.subjects.dir(DIR_LOOKUP),
        payload,
        gw.request_timeout,
    )
    .await
}
