//! The HTTP API of groups. With the API key the caller is a trusted backend (it names the
//! `user` where one is needed); with a token the caller acts as its subject.
//!
//! | route | what |
//! |---|---|
//! | `POST /v1/groups` `{"group","members"?,"policy"?,"user"?}` | create (owner: the token's subject, or `user`) |
//! | `DELETE /v1/groups/{group}` | delete |
//! | `GET /v1/groups/{group}` | settings and member list |
//! | `POST /v1/groups/{group}/members` `{"members":[...]}` | add members |
//! | `DELETE /v1/groups/{group}/members/{user}` | remove a member (yourself: leave) |
//! | `POST /v1/groups/{group}/join` `{"user"?}` | join an open group |
//! | `POST /v1/groups/{group}/messages` `{"id"?,"from"?,"body"}` | send to the group; the report |
//! | `GET /v1/users/{id}/groups` | a user's groups |

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Json;
use bytes::Bytes;

use super::http::{caller, error_response, sender, Caller};
use crate::gateway::{groups, Gateway};
use crate::ident::GroupId;
use crate::protocol::client::FrameError;
use crate::protocol::code::ErrorCode;
use crate::protocol::group::{GroupRequest, GroupSendRequest, ListRequest};
use crate::subject::{
    GRP_ADD, GRP_CREATE, GRP_DELETE, GRP_JOIN, GRP_LEAVE, GRP_MEMBERS, GRP_REMOVE,
};
use crate::telemetry;

pub fn routes() -> axum::Router<Arc<Gateway>> {
    axum::Router::new()
        .route("/v1/groups", post(create))
        .route("/v1/groups/{group}", delete(remove_group).get(members))
        .route("/v1/groups/{group}/members", post(add))
        .route("/v1/groups/{group}/members/{user}", delete(remove_member))
        .route("/v1/groups/{group}/join", post(join))
        .route("/v1/groups/{group}/messages", post(send))
        .route("/v1/users/{id}/groups", get(list))
}

fn refused(e: FrameError) -> Response {
    error_response(e.code, &e.message)
}

/// The caller as the acting user of a group request (`None`: the API key).
fn acting(gw: &Gateway, headers: &HeaderMap) -> Result<Option<String>, FrameError> {
    match caller(gw, headers)? {
        Caller::Backend => Ok(None),
        Caller::User(identity) => Ok(Some(identity.user.to_string())),
    }
}

/// A request body, or an empty one.
fn body(bytes: &Bytes) -> Result<GroupRequest, FrameError> {
    if bytes.is_empty() {
        return Ok(GroupRequest::default());
    }
    crate::protocol::decode(bytes)
}

async fn forward(gw: &Gateway, endpoint: &str, request: GroupRequest) -> Response {
    match groups::call(gw, endpoint, &request).await {
        Ok(result) => Json(result).into_response(),
        Err(e) => refused(e),
    }
}

/// Runs one group endpoint for the caller, with the group from the path (or the body).
async fn op(
    gw: &Gateway,
    headers: &HeaderMap,
    endpoint: &str,
    group: Option<String>,
    bytes: &Bytes,
) -> Response {
    let (by, mut request) = match acting(gw, headers).and_then(|by| Ok((by, body(bytes)?))) {
        Ok(checked) => checked,
        Err(e) => return refused(e),
    };
    if let Some(group) = group {
        request.group = group;
    }
    if by.is_some()
        && request
            .user
            .as_ref()
            .is_some_and(|u| Some(u) != by.as_ref())
    {
        return error_response(ErrorCode::Forbidden, "a token acts only as its subject");
    }
    request.by = by;
    forward(gw, endpoint, request).await
}

async fn create(State(gw): State<Arc<Gateway>>, headers: HeaderMap, bytes: Bytes) -> Response {
    op(&gw, &headers, GRP_CREATE, None, &bytes).await
}

async fn remove_group(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    Path(group): Path<String>,
) -> Response {
    op(&gw, &headers, GRP_DELETE, Some(group), &Bytes::new()).await
}

async fn members(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    Path(group): Path<String>,
) -> Response {
    op(&gw, &headers, GRP_MEMBERS, Some(group), &Bytes::new()).await
}

async fn add(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    Path(group): Path<String>,
    bytes: Bytes,
) -> Response {
    op(&gw, &headers, GRP_ADD, Some(group), &bytes).await
}

async fn join(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    Path(group): Path<String>,
    bytes: Bytes,
) -> Response {
    op(&gw, &headers, GRP_JOIN, Some(group), &bytes).await
}

/// Removing yourself is leaving; removing others needs the right to manage.
async fn remove_member(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    Path((group, user)): Path<(String, String)>,
) -> Response {
    let by = match acting(&gw, &headers) {
        Ok(by) => by,
        Err(e) => return refused(e),
    };
    let (endpoint, request) = if by.as_deref() == Some(user.as_str()) {
        (
            GRP_LEAVE,
            GroupRequest {
                group,
                by,
                user: Some(user),
                ..Default::default()
            },
        )
    } else {
        (
            GRP_REMOVE,
            GroupRequest {
                group,
                by,
                members: vec![user],
                ..Default::default()
            },
        )
    };
    forward(&gw, endpoint, request).await
}

async fn list(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    Path(user): Path<String>,
) -> Response {
    let by = match acting(&gw, &headers) {
        Ok(by) => by,
        Err(e) => return refused(e),
    };
    match groups::list(&gw, &ListRequest { user, by }).await {
        Ok(result) => Json(result).into_response(),
        Err(e) => refused(e),
    }
}

/// `POST /v1/groups/{group}/messages`: a token sends as its subject (the group's send
/// policy applies); the API key sends as any `from`, unchecked.
async fn send(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    Path(group): Path<String>,
    bytes: Bytes,
) -> Response {
    let caller = match caller(&gw, &headers) {
        Ok(caller) => caller,
        Err(e) => return refused(e),
    };
    let request: GroupSendRequest<'_> = match crate::protocol::decode(&bytes) {
        Ok(request) => request,
        Err(e) => return error_response(e.code, &e.message),
    };
    let group = match GroupId::new(&group) {
        Ok(group) => group,
        Err(e) => return error_response(ErrorCode::BadId, &format!("group: {e}")),
    };
    let (from, by) = match sender(caller, request.from) {
        Ok(sender) => sender,
        Err(e) => return refused(e),
    };
    let message = match gw.limits.group_message(from, request.id, request.body) {
        Ok(message) => message,
        Err(e) => return refused(e),
    };
    telemetry::message_in("http");
    match gw.router.route_group(&message, &group, by.as_ref()).await {
        Ok(report) => Json(report).into_response(),
        Err(e) => refused(e),
    }
}
