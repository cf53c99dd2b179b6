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

use axum::extract::{Path, State};
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use bytes::Bytes;

use crate::connection::{request, RequestFailure};
use crate::gateway::auth::Identity;
use crate::gateway::{ops, Gateway};
use crate::ident::UserId;
use crate::protocol::client::{FrameError, PresenceBody, Report, UserStatus};
use crate::protocol::code::ErrorCode;
use crate::protocol::nats::{
    BroadcastReport, BroadcastRequest, ErrorReply, LookupReply, LookupRequest, PresenceReply,
    PresenceRequest, SendRequest,
};
use crate::subject::DIR_LOOKUP;
use crate::telemetry;

/// The API's own routes; [`super::api`] mounts them with the group routes.
pub fn routes() -> axum::Router<Arc<Gateway>> {
    axum::Router::new()
        .route("/v1/messages", post(send))
        .route("/v1/users/{id}", get(user))
        .route("/v1/presence", post(presence))
        .route("/v1/broadcast", post(broadcast))
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

/// The door messages from the HTTP API are counted under.
pub(super) const DOOR: &str = "http";

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

/// A refusal, as the HTTP API answers it: handlers return `Result<_, FrameError>` and
/// use `?`.
impl IntoResponse for FrameError {
    fn into_response(self) -> Response {
        error_response(self.code, &self.message)
    }
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
async fn send(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Report>, FrameError> {
    let caller = caller(&gw, &headers)?;
    if body.len() > gw.limits.max_frame_bytes {
        let limit = gw.limits.max_frame_bytes;
        let message = format!("request of {} bytes, limit {limit}", body.len());
        return Err(FrameError::new(ErrorCode::TooLarge, message));
    }
    let request: SendRequest<'_> = crate::protocol::decode(&body)?;
    let (from, _) = sender(caller, request.from)?;
    let (to, id) = (request.to, request.id);
    let send = ops::Send::check(&gw.limits, DOOR, from, to, id, request.body)?;
    Ok(Json(send.run(&gw.router).await))
}

/// `GET /v1/users/{id}`: asks the directory (never the cache).
async fn user(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<UserStatus>, FrameError> {
    caller(&gw, &headers)?;
    let user = gw.auth.user(&id)?;
    let reply: LookupReply = lookup(&gw, vec![user.to_string()])
        .await
        .map_err(|e| FrameError::new(ErrorCode::Unavailable, format!("directory: {e}")))?;
    let locations = reply.users.get(user.as_str()).cloned().unwrap_or_default();
    let mut gateways = std::collections::BTreeMap::new();
    for location in &locations {
        *gateways.entry(location.gateway.clone()).or_insert(0) += 1;
    }
    Ok(Json(UserStatus {
        user: user.to_string(),
        online: !locations.is_empty(),
        sessions: locations.len(),
        gateways,
    }))
}

/// `POST /v1/broadcast`: backends only (the API key).
async fn broadcast(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<BroadcastReport>, FrameError> {
    if let Caller::User(_) = caller(&gw, &headers)? {
        let message = "broadcasts need the API key";
        return Err(FrameError::new(ErrorCode::Forbidden, message));
    }
    let request: BroadcastRequest<'_> = crate::protocol::decode(&body)?;
    let (from, id, gateways) = (request.from, request.id, request.gateways);
    let broadcast = ops::Broadcast::check(&gw.limits, DOOR, from, id, request.body, gateways)?;
    Ok(Json(broadcast.run(&gw).await?))
}

/// `POST /v1/presence`: the status of many users at once.
async fn presence(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<PresenceReply>, FrameError> {
    let by = match caller(&gw, &headers)? {
        Caller::Backend => None,
        Caller::User(identity) => Some(identity.user.to_string()),
    };
    let users = crate::protocol::decode::<PresenceBody>(&body)?.users;
    let request = PresenceRequest { users, by };
    let (client, subjects, timeout) = (&gw.client, &gw.subjects, gw.request_timeout);
    Ok(Json(
        crate::gateway::presence::query(client, subjects, timeout, &request).await?,
    ))
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
