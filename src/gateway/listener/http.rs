//! The HTTP API, on the same listener as the WebSocket door:
//!
//! | route | auth | what |
//! |---|---|---|
//! | `POST /v1/messages` | API key, or a token with scope `mrc:send` (sends as its subject) | send; the per-receiver report |
//! | `GET /v1/users/{id}` | API key or any valid token | online? sessions per gateway |
//! | `POST /v1/broadcast` `{"body","id"?,"from"?,"gateways"?}` | API key | to everyone online |
//! | `POST /v1/presence` `{"users":[...]}` | API key, or a token (presence policy applies) | online, sessions, since, per user |
//! | `GET /v1/users/{id}/inbox?since=&limit=` | API key, or a token (its own) | stored messages |
//! | `POST /v1/users/{id}/inbox/ack` `{"seq":N}` | API key, or a token (its own) | remove stored messages up to `seq` |
//! | `/v1/groups/...` | API key or token | groups: see `listener::http_groups` |
//!
//! Errors are JSON `{"error":{"code","message"}}` with the HTTP status that fits the code.
//! `/healthz`, `/readyz` and `/metrics`, and the gate in front of these routes while the
//! gateway is not ready, are `listener::front`'s.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use bytes::Bytes;

use crate::gateway::auth::{Auth, SEND_SCOPE};
use crate::gateway::ops::{self, Caller, Ops};
use crate::protocol::client::{FrameError, PresenceBody, Report, UserStatus};
use crate::protocol::code::ErrorCode;
use crate::protocol::inbox::{AckReply, AckRequest};
use crate::protocol::nats::{
    BroadcastReport, BroadcastRequest, ErrorReply, PresenceReply, SendRequest,
};
use crate::telemetry;

/// The API's own routes; [`super::routes`] mounts them with the group routes.
pub(crate) fn routes() -> axum::Router<Arc<Api>> {
    axum::Router::new()
        .route("/v1/messages", post(send))
        .route("/v1/users/{id}", get(user))
        .route("/v1/presence", post(presence))
        .route("/v1/broadcast", post(broadcast))
        .route("/v1/users/{id}/inbox", get(inbox))
        .route("/v1/users/{id}/inbox/ack", post(inbox_ack))
}

/// The status that fits an error code.
pub(crate) fn status_of(code: ErrorCode) -> StatusCode {
    StatusCode::from_u16(code.status()).expect("ErrorCode::status gives valid HTTP statuses")
}

/// The door messages from the HTTP API are counted under.
pub(super) const DOOR: &str = "http";

/// A JSON error response with the status that fits `code`.
pub(crate) fn error_response(code: ErrorCode, message: &str) -> Response {
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
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// What the API's handlers use.
pub(crate) struct Api {
    pub(crate) ops: Arc<Ops>,
    pub(crate) auth: Arc<Auth>,
}

/// Who is calling: the API key is a backend; a token is its subject, which may send
/// only with the `mrc:send` scope (`sending`).
pub(super) fn caller(api: &Api, headers: &HeaderMap, sending: bool) -> Result<Caller, FrameError> {
    let Some(token) = bearer(headers) else {
        let message = "send `Authorization: Bearer <api key or token>`";
        return Err(FrameError::new(ErrorCode::Unauthorized, message));
    };
    if api.auth.is_api_key(token) {
        return Ok(Caller::Backend);
    }
    let identity = api.auth.verify(token)?;
    if sending && !identity.may_send_http {
        let message = format!("the token lacks the `{SEND_SCOPE}` scope");
        return Err(FrameError::new(ErrorCode::Forbidden, message));
    }
    Ok(Caller::User(identity.user))
}

/// `POST /v1/messages` with the `mrc.send` body.
async fn send(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Report>, FrameError> {
    let caller = caller(&api, &headers, true)?;
    let limit = api.ops.limits.max_frame_bytes;
    if body.len() > limit {
        let message = format!("request of {} bytes, limit {limit}", body.len());
        return Err(FrameError::new(ErrorCode::TooLarge, message));
    }
    let request: SendRequest<'_> = crate::protocol::decode(&body)?;
    let send = ops::Send::check(&api.ops, DOOR, &caller, request)?;
    Ok(Json(send.run(&api.ops).await))
}

/// `GET /v1/users/{id}`: asks the directory (never the cache).
async fn user(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<UserStatus>, FrameError> {
    caller(&api, &headers, false)?;
    let user = api.auth.user(&id)?;
    Ok(Json(ops::user_status(&api.ops, &user).await?))
}

/// `POST /v1/broadcast`: backends only (the API key).
async fn broadcast(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<BroadcastReport>, FrameError> {
    let caller = caller(&api, &headers, false)?;
    let request: BroadcastRequest<'_> = crate::protocol::decode(&body)?;
    let (from, id, gateways) = (request.from, request.id, request.gateways);
    let body = request.body;
    let broadcast = ops::Broadcast::check(&api.ops, DOOR, &caller, from, id, body, gateways)?;
    Ok(Json(broadcast.run(&api.ops).await?))
}

/// `POST /v1/presence`: the status of many users at once.
async fn presence(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<PresenceReply>, FrameError> {
    let caller = caller(&api, &headers, false)?;
    let users = crate::protocol::decode::<PresenceBody>(&body)?.users;
    Ok(Json(ops::presence(&api.ops, &caller, users).await?))
}

/// Query of `GET /v1/users/{id}/inbox`.
#[derive(serde::Deserialize)]
struct InboxQuery {
    #[serde(default)]
    since: u64,
    limit: Option<usize>,
}

/// `GET /v1/users/{id}/inbox?since=&limit=`: stored messages (a token: its own only).
async fn inbox(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<InboxQuery>,
) -> Result<Json<serde_json::Value>, FrameError> {
    let caller = caller(&api, &headers, false)?;
    let fetched = api.ops.inbox.fetch(&caller, &id, query.since, query.limit);
    Ok(Json(fetched.await?))
}

/// `POST /v1/users/{id}/inbox/ack` `{"seq":N}`: removes stored messages up to `seq`.
async fn inbox_ack(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<AckReply>, FrameError> {
    let caller = caller(&api, &headers, false)?;
    let request: AckRequest = crate::protocol::decode(&body)?;
    Ok(Json(api.ops.inbox.ack(&caller, &id, request.seq).await?))
}
