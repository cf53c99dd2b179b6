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

use axum::routing::{delete, get, post};
use axum::Json;
use bytes::Bytes;

use super::http::{caller, sender, Caller, DOOR};
use crate::gateway::{groups, ops, Gateway};
use crate::protocol::client::{FrameError, Report};
use crate::protocol::code::ErrorCode;
use crate::protocol::group::{GroupRequest, GroupSendRequest, ListRequest};
use crate::subject::{
    GRP_ADD, GRP_CREATE, GRP_DELETE, GRP_JOIN, GRP_LEAVE, GRP_MEMBERS, GRP_REMOVE,
};

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

/// What the group endpoints answer: the center's result as it came, or a refusal.
type Answer = Result<Json<serde_json::Value>, FrameError>;

async fn forward(gw: &Gateway, endpoint: &str, request: GroupRequest) -> Answer {
    Ok(Json(groups::call(gw, endpoint, &request).await?))
}

/// Runs one group endpoint for the caller, with the group from the path (or the body).
async fn op(
    gw: &Gateway,
    headers: &HeaderMap,
    endpoint: &str,
    group: Option<String>,
    bytes: &Bytes,
) -> Answer {
    let by = acting(gw, headers)?;
    let mut request = body(bytes)?;
    if let Some(group) = group {
        request.group = group;
    }
    if by.is_some()
        && request
            .user
            .as_ref()
            .is_some_and(|u| Some(u) != by.as_ref())
    {
        let message = "a token acts only as its subject";
        return Err(FrameError::new(ErrorCode::Forbidden, message));
    }
    request.by = by;
    forward(gw, endpoint, request).await
}

async fn create(State(gw): State<Arc<Gateway>>, headers: HeaderMap, bytes: Bytes) -> Answer {
    op(&gw, &headers, GRP_CREATE, None, &bytes).await
}

async fn remove_group(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    Path(group): Path<String>,
) -> Answer {
    op(&gw, &headers, GRP_DELETE, Some(group), &Bytes::new()).await
}

async fn members(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    Path(group): Path<String>,
) -> Answer {
    op(&gw, &headers, GRP_MEMBERS, Some(group), &Bytes::new()).await
}

async fn add(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    Path(group): Path<String>,
    bytes: Bytes,
) -> Answer {
    op(&gw, &headers, GRP_ADD, Some(group), &bytes).await
}

async fn join(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    Path(group): Path<String>,
    bytes: Bytes,
) -> Answer {
    op(&gw, &headers, GRP_JOIN, Some(group), &bytes).await
}

/// Removing yourself is leaving; removing others needs the right to manage.
async fn remove_member(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    Path((group, user)): Path<(String, String)>,
) -> Answer {
    let by = acting(&gw, &headers)?;
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
) -> Answer {
    let by = acting(&gw, &headers)?;
    Ok(Json(groups::list(&gw, &ListRequest { user, by }).await?))
}

/// `POST /v1/groups/{group}/messages`: a token sends as its subject (the group's send
/// policy applies); the API key sends as any `from`, unchecked.
async fn send(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    Path(group): Path<String>,
    bytes: Bytes,
) -> Result<Json<Report>, FrameError> {
    let caller = caller(&gw, &headers)?;
    let request: GroupSendRequest<'_> = crate::protocol::decode(&bytes)?;
    let (from, by) = sender(caller, request.from)?;
    let send = ops::GroupSend::check(&gw.limits, DOOR, from, &group, request.id, request.body)?;
    Ok(Json(send.run(&gw.router, by.as_ref()).await?))
}
