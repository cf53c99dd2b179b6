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

use super::http::{caller, Api, DOOR};
use crate::gateway::ops::{self, Caller};
use crate::protocol::client::{FrameError, Report};
use crate::protocol::group::{GroupRequest, GroupSendRequest};
use crate::subject::{
    GRP_ADD, GRP_CREATE, GRP_DELETE, GRP_JOIN, GRP_LEAVE, GRP_MEMBERS, GRP_REMOVE,
};

pub(crate) fn routes() -> axum::Router<Arc<Api>> {
    axum::Router::new()
        .route("/v1/groups", post(create))
        .route("/v1/groups/{group}", delete(remove_group).get(members))
        .route("/v1/groups/{group}/members", post(add))
        .route("/v1/groups/{group}/members/{user}", delete(remove_member))
        .route("/v1/groups/{group}/join", post(join))
        .route("/v1/groups/{group}/messages", post(send))
        .route("/v1/users/{id}/groups", get(list))
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

/// Runs one group endpoint for the caller, with the group from the path (or the body).
async fn op(
    api: &Api,
    headers: &HeaderMap,
    endpoint: &str,
    group: Option<String>,
    bytes: &Bytes,
) -> Answer {
    let caller = caller(api, headers, false)?;
    let mut request = body(bytes)?;
    if let Some(group) = group {
        request.group = group;
    }
    Ok(Json(
        ops::manage_group(&api.ops, &caller, endpoint, request).await?,
    ))
}

async fn create(State(api): State<Arc<Api>>, headers: HeaderMap, bytes: Bytes) -> Answer {
    op(&api, &headers, GRP_CREATE, None, &bytes).await
}

async fn remove_group(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    Path(group): Path<String>,
) -> Answer {
    op(&api, &headers, GRP_DELETE, Some(group), &Bytes::new()).await
}

async fn members(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    Path(group): Path<String>,
) -> Answer {
    op(&api, &headers, GRP_MEMBERS, Some(group), &Bytes::new()).await
}

async fn add(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    Path(group): Path<String>,
    bytes: Bytes,
) -> Answer {
    op(&api, &headers, GRP_ADD, Some(group), &bytes).await
}

async fn join(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    Path(group): Path<String>,
    bytes: Bytes,
) -> Answer {
    op(&api, &headers, GRP_JOIN, Some(group), &bytes).await
}

/// Removing yourself is leaving; removing others needs the right to manage.
async fn remove_member(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    Path((group, user)): Path<(String, String)>,
) -> Answer {
    let caller = caller(&api, &headers, false)?;
    let leaving = caller.user().is_some_and(|me| me.as_str() == user);
    let (endpoint, request) = if leaving {
        let user = Some(user);
        (
            GRP_LEAVE,
            GroupRequest {
                group,
                user,
                ..Default::default()
            },
        )
    } else {
        let members = vec![user];
        (
            GRP_REMOVE,
            GroupRequest {
                group,
                members,
                ..Default::default()
            },
        )
    };
    Ok(Json(
        ops::manage_group(&api.ops, &caller, endpoint, request).await?,
    ))
}

async fn list(State(api): State<Arc<Api>>, headers: HeaderMap, Path(user): Path<String>) -> Answer {
    let caller = caller(&api, &headers, false)?;
    Ok(Json(ops::list_groups(&api.ops, &caller, user).await?))
}

/// `POST /v1/groups/{group}/messages`: a token (with the `mrc:send` scope) sends as its
/// subject, and the group's send policy applies; the API key sends as any `from`.
async fn send(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    Path(group): Path<String>,
    bytes: Bytes,
) -> Result<Json<Report>, FrameError> {
    let caller: Caller = caller(&api, &headers, true)?;
    let request: GroupSendRequest<'_> = crate::protocol::decode(&bytes)?;
    let (from, id, body) = (request.from, request.id, request.body);
    let send = ops::GroupSend::check(&api.ops, DOOR, &caller, from, &group, id, body)?;
    Ok(Json(send.run(&api.ops).await?))
}
